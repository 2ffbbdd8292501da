//! `cargo xtask bench`: kernel-side overhead of the capture path, measured as ns
//! per traced syscall with the agent off and then on, in the same run, with the
//! agent's own counters (events received, kernel drops) for the "on" run.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{sh, workspace_root};

fn run_bench(iterations: u64) -> anyhow::Result<serde_json::Value> {
    let exe = workspace_root().join("target/release/syscall_bench");
    let out = Command::new(&exe)
        .arg(iterations.to_string())
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    if !out.status.success() {
        bail!(
            "syscall_bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Set up and build everything the benchmarks run, in release mode.
pub fn prepare() -> anyhow::Result<()> {
    crate::setup::run()?;
    sh(Command::new("cargo").args([
        "build",
        "--release",
        "--package",
        "agent",
        "--package",
        "e2e",
    ]))
}

/// Starts the release agent with JSON logs and `args`, and waits until it
/// captures; returns it and its log lines.
pub fn start_agent(args: &[&str]) -> anyhow::Result<(std::process::Child, mpsc::Receiver<String>)> {
    let agent = workspace_root().join("target/release/agent");
    let mut child = Command::new(&agent)
        .args(["--log-format", "json"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} (as root?)", agent.display()))?;
    let stderr = child.stderr.take().context("agent stderr")?;
    let (tx, rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .context("agent did not start capturing")?;
        if line.contains("capturing socket I/O") {
            return Ok((child, rx));
        }
    }
}

pub fn run(iterations: u64) -> anyhow::Result<()> {
    let off = run_bench(iterations)?;

    let (mut child, rx) = start_agent(&["--stdout", "off", "--prometheus-listen", "off"])?;
    let on = run_bench(iterations);
    // SAFETY: signalling our own child.
    unsafe { libc_kill(child.id() as i32, 15) };
    let status = child.wait()?;
    let stats = rx
        .iter()
        .find(|l| l.contains("\"stopped\""))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .and_then(|v| {
            v["stats"]
                .as_str()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        });
    let on = on?;
    if !status.success() {
        bail!("agent exited with {status}");
    }

    let get = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "kernel-side overhead, {iterations} writes of 64 bytes x 7 rounds (median per write):"
    );
    println!("CPU = the writing thread's user+system time, which includes the BPF programs;");
    println!("wall also includes time the writer waited for a core (the agent runs beside it).");
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>8}",
        "case", "off ns", "on ns", "delta ns", "ratio"
    );
    for (name, key) in [
        ("traced UDP socket, CPU", "socket_write_cpu_ns"),
        ("traced UDP socket, wall", "socket_write_wall_ns"),
        ("/dev/null (untraced), CPU", "devnull_write_cpu_ns"),
        ("/dev/null (untraced), wall", "devnull_write_wall_ns"),
    ] {
        let (a, b) = (get(&off, key), get(&on, key));
        println!(
            "{name:<28} {a:>10.0} {b:>10.0} {:>10.0} {:>8.2}",
            b - a,
            b / a
        );
    }
    match stats {
        Some(stats) => println!("agent self-metrics during the run: {stats}"),
        None => println!("agent self-metrics: not found in its log"),
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
