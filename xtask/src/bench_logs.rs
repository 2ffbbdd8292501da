//! `cargo xtask bench logs`: the price of `--logs` per log line, in the same
//! run. A C writer (built here, `peers/logbench.c`) writes 200,000 short
//! lines to stdout (`/dev/null`), one `write` each, three times: with no
//! agent, with the agent not logging it, and with `--logs logbench`.
//! Reported: the writer's CPU ns per line, the agent's CPU ns per line, and
//! lines recorded against lines written.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::{
    bench::start_agent,
    bench_http::{cpu_seconds, scrape, sum},
    bench_report::{self, Table, j, num, ratio},
};

const LINES: u64 = 200_000;

fn build_writer(dir: &Path) -> anyhow::Result<PathBuf> {
    let out = dir.join("logbench");
    let status = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/peers/logbench.c"))
        .status()
        .context("cc (gcc)")?;
    if !status.success() {
        bail!("building logbench failed");
    }
    Ok(out)
}

/// Starts the writer, waits for `ready` (the agent lists it), lets it write:
/// its CPU seconds and the wall time it took.
fn write_lines(
    writer: &Path,
    ready: impl FnOnce(u32) -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64)> {
    let mut child = Command::new(writer)
        .arg(LINES.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("logbench")?;
    ready(child.id())?;
    let t0 = Instant::now();
    child.stdin.take().context("stdin")?.write_all(b"g")?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut cpu_us = None;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        cpu_us = line
            .strip_prefix("cpu_us ")
            .and_then(|v| v.trim().parse::<f64>().ok());
    }
    if !child.wait()?.success() {
        bail!("logbench failed");
    }
    let seconds = t0.elapsed().as_secs_f64();
    Ok((cpu_us.context("logbench printed no cpu_us")? / 1e6, seconds))
}

struct Run {
    name: &'static str,
    writer_cpu_s: f64,
    seconds: f64,
    agent_cpu_s: Option<f64>,
    recorded: Option<f64>,
}

fn with_agent(name: &'static str, writer: &Path, logs: bool) -> anyhow::Result<Run> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--stdout",
        "off",
        "--prometheus-listen",
        &listen,
        "--profiling",
        "off",
        "--log-bytes-per-second",
        "1000000000",
    ];
    if logs {
        args.extend(["--logs", "logbench"]);
    }
    let agent = start_agent(&args, &[])?;
    let pid = agent.pid();
    thread::sleep(Duration::from_secs(1));
    let mut cpu0 = 0.0;
    let mut before = String::new();
    let (writer_cpu_s, seconds) = write_lines(writer, |_| {
        if logs {
            let until = Instant::now() + Duration::from_secs(10);
            while sum(&scrape(port)?, "agent_log_processes", "") < 1.0 {
                if Instant::now() > until {
                    bail!("the agent did not list the writer");
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        before = scrape(port)?;
        cpu0 = cpu_seconds(pid)?;
        Ok(())
    })?;
    // Lines still in the ring or the pipeline.
    thread::sleep(Duration::from_secs(2));
    let agent_cpu_s = cpu_seconds(pid)? - cpu0;
    let after = scrape(port)?;
    let recorded = |m: &str| sum(m, "agent_log_lines_total", "recorded");
    let recorded = recorded(&after) - recorded(&before);
    agent.stop()?;
    Ok(Run {
        name,
        writer_cpu_s,
        seconds,
        agent_cpu_s: Some(agent_cpu_s),
        recorded: Some(recorded),
    })
}

pub fn run() -> anyhow::Result<()> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench"));
    std::fs::create_dir_all(&dir)?;
    let writer = build_writer(&dir)?;
    println!("{LINES} log lines written to stdout, one write each: agent off, on, on with --logs");
    let (cpu, seconds) = write_lines(&writer, |_| Ok(()))?;
    let runs = [
        Run {
            name: "off",
            writer_cpu_s: cpu,
            seconds,
            agent_cpu_s: None,
            recorded: None,
        },
        with_agent("on", &writer, false)?,
        with_agent("on, --logs", &writer, true)?,
    ];
    let per_line = |s: f64| s / LINES as f64 * 1e9;
    let mut t = Table::new(&["", "off", "on", "on, --logs", "--logs / on"]);
    let cells = |f: &dyn Fn(&Run) -> String| runs.iter().map(f).collect::<Vec<_>>();
    let mut row = |label: &str, values: Vec<String>, r: String| {
        let mut cells = vec![label.to_string()];
        cells.extend(values);
        cells.push(r);
        t.row(&cells);
    };
    row(
        "writer CPU ns/line",
        cells(&|r| num(per_line(r.writer_cpu_s), 0)),
        ratio(
            per_line(runs[2].writer_cpu_s),
            per_line(runs[1].writer_cpu_s),
        ),
    );
    row(
        "agent CPU ns/line",
        cells(&|r| r.agent_cpu_s.map_or("-".into(), |c| num(per_line(c), 0))),
        String::new(),
    );
    row(
        "lines recorded",
        cells(&|r| r.recorded.map_or("-".into(), |n| num(n, 0))),
        String::new(),
    );
    row("seconds", cells(&|r| num(r.seconds, 2)), String::new());
    t.print();
    bench_report::write_json(
        "logs",
        json!({
            "lines": LINES,
            "runs": runs.iter().map(|r| json!({
                "agent": r.name,
                "writer_cpu_ns_per_line": j(per_line(r.writer_cpu_s)),
                "agent_cpu_ns_per_line": r.agent_cpu_s.map(|c| j(per_line(c))),
                "lines_recorded": r.recorded,
                "seconds": j(r.seconds),
            })).collect::<Vec<_>>(),
        }),
    )?;
    Ok(())
}
