//! `cargo xtask bench profile`: what continuous profiling costs the agent — its
//! CPU (share of one core) and memory at 19 Hz and 99 Hz, with the machine idle
//! and with every core busy — against the same agent with `--profiling off`,
//! measured in the same run under the same load.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    bench::start_agent,
    bench_http::{Killed, cpu_seconds, peak_rss_mib, status_mib},
};

const WARM_UP: u64 = 17;

struct Measure {
    cpu_share: f64,
    rss_mib: f64,
    peak_mib: f64,
    samples: f64,
}

fn measure(profiling: Option<u64>, seconds: u64, dir: &std::path::Path) -> anyhow::Result<Measure> {
    let dir = dir.to_string_lossy().to_string();
    let frequency = profiling.map(|f| f.to_string());
    let mut args = vec!["--stdout", "off", "--prometheus-listen", "127.0.0.1:9477"];
    match &frequency {
        Some(f) => args.extend(["--profile-frequency", f, "--profiles-dir", &dir]),
        None => args.extend(["--profiling", "off"]),
    }
    let agent = start_agent(&args, &[])?;
    let pid = agent.pid();
    // Past start-up (kernel object, procfs scan) and the first interval (the
    // default 15 s), where caches fill: the steady state is what runs for months.
    std::thread::sleep(Duration::from_secs(WARM_UP));
    let (cpu0, t0) = (cpu_seconds(pid)?, Instant::now());
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu = cpu_seconds(pid)? - cpu0;
    let elapsed = t0.elapsed().as_secs_f64();
    let metrics = crate::bench_http::scrape(9477).unwrap_or_default();
    Ok(Measure {
        cpu_share: cpu / elapsed,
        rss_mib: status_mib(pid, "VmRSS")?,
        peak_mib: peak_rss_mib(pid)?,
        samples: crate::bench_http::sum(&metrics, "agent_profile_samples_total", ""),
    })
}

pub fn run(seconds: u64) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join("agent-bench-profiles");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "profiler cost: agent CPU (share of one core) and RSS over {seconds} s after {WARM_UP} s of \
         warm-up, default 15 s interval, profiles written to a directory (the no-backend default);"
    );
    println!("baseline = the same agent with --profiling off, same load, same run.");
    println!(
        "{:<6} {:<10} {:>9} {:>11} {:>9} {:>9} {:>10}",
        "load", "profiling", "CPU %", "vs base pp", "RSS MiB", "peak MiB", "samples/s"
    );
    for busy in [false, true] {
        let _burners: Vec<Killed> = if busy {
            (0..cpus)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdout(Stdio::null())
                        .spawn()
                        .map(Killed)
                })
                .collect::<Result<_, _>>()
                .context("starting CPU burners")?
        } else {
            Vec::new()
        };
        let load = if busy { "busy" } else { "idle" };
        let base = measure(None, seconds, &dir)?;
        println!(
            "{load:<6} {:<10} {:>9.3} {:>11} {:>9.1} {:>9.1} {:>10}",
            "off",
            base.cpu_share * 100.0,
            "-",
            base.rss_mib,
            base.peak_mib,
            "-"
        );
        for hz in [19, 99] {
            let m = measure(Some(hz), seconds, &dir)?;
            println!(
                "{load:<6} {:<10} {:>9.3} {:>+11.3} {:>9.1} {:>9.1} {:>10.0}",
                format!("{hz} Hz"),
                m.cpu_share * 100.0,
                (m.cpu_share - base.cpu_share) * 100.0,
                m.rss_mib,
                m.peak_mib,
                m.samples / (seconds + WARM_UP) as f64
            );
        }
    }
    println!("targets: <= 0.5% of one core at 19 Hz; RSS <= 40 MiB");
    Ok(())
}
