//! `cargo xtask bench syscalls`: kernel-side overhead of the capture path,
//! measured as ns per traced syscall with the agent off and then on — once per
//! kernel path (`AGENT_CAPTURE_PATH=fast`, `=tracepoints`) — in the same run,
//! with the agent's own counters (events received, kernel drops) for each "on"
//! run. A second "off" run at the end shows how much the machine drifted. The
//! agent runs with `--profiling off`: the capture path alone.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{
    bench_report::{self, Table, j, num, percent_delta},
    sh, target_dir,
};

fn run_bench(iterations: u64) -> anyhow::Result<Value> {
    run_json("syscall_bench", iterations)
}

/// Runs one of the release bench binaries with `iterations`; its JSON output.
fn run_json(binary: &str, iterations: u64) -> anyhow::Result<Value> {
    let exe = release_binary(binary);
    let out = Command::new(&exe)
        .arg(iterations.to_string())
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    if !out.status.success() {
        bail!("{binary} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// A release binary built by [`prepare`].
pub(crate) fn release_binary(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
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

/// The release agent, started by [`start_agent`]; killed when dropped.
pub struct Agent {
    pub child: Child,
    /// Its log lines (JSON) after the start line.
    pub logs: mpsc::Receiver<String>,
    /// The `path` field of its "capturing socket I/O" line, when it has one.
    pub capture_path: Option<String>,
}

impl Agent {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait, and the `stats` of its "stopped" log line.
    pub fn stop(mut self) -> anyhow::Result<Option<Value>> {
        // SAFETY: signalling our own child.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let status = self.child.wait()?;
        let stats = self
            .logs
            .iter()
            .find(|l| l.contains("\"stopped\""))
            .and_then(|l| serde_json::from_str::<Value>(&l).ok())
            .and_then(|v| {
                v["stats"]
                    .as_str()
                    .and_then(|s| serde_json::from_str::<Value>(s).ok())
            });
        if !status.success() {
            bail!("agent exited with {status}");
        }
        Ok(stats)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `path` field of a JSON log line.
fn capture_path(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).ok()?;
    let path = v.get("path").or_else(|| v.get("fields")?.get("path"))?;
    path.as_str().map(str::to_string)
}

/// Starts the release agent with JSON logs, `args` and the environment `env`
/// added to this process's, and waits until it captures.
pub fn start_agent(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Agent> {
    let agent = release_binary("agent");
    let mut child = Command::new(&agent)
        .args(["--log-format", "json"])
        .args(args)
        .envs(env.iter().copied())
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
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains("capturing socket I/O") => {
                return Ok(Agent {
                    child,
                    logs: rx,
                    capture_path: capture_path(&line),
                });
            }
            Ok(line) => {
                seen.push(line);
                if seen.len() > 20 {
                    seen.remove(0);
                }
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "agent {args:?} {env:?} did not start capturing ({e}); its last lines:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
}

/// The counters that matter here from the agent's exit stats: events and bytes
/// received, and every non-zero loss.
fn summary(stats: &Value) -> String {
    let mut parts = vec![format!(
        "{} events received, {} bytes captured",
        stats["events_received"], stats["bytes_captured"]
    )];
    for key in [
        "dropped_queue_full",
        "decode_errors",
        "events_filtered",
        "stream_bytes_dropped",
    ] {
        if stats[key].as_u64().is_some_and(|n| n > 0) {
            parts.push(format!("{key} {}", stats[key]));
        }
    }
    for loss in stats["kernel_losses"].as_array().into_iter().flatten() {
        if loss[1].as_u64().is_some_and(|n| n > 0) {
            let name = loss[0].as_str().unwrap_or("?");
            // Skips by design (agent_common::Loss::is_skip), not losses.
            let what =
                if agent_common::Loss::from_name(name).is_some_and(agent_common::Loss::is_skip) {
                    "kernel skipped"
                } else {
                    "kernel lost"
                };
            parts.push(format!("{what} {name} {}", loss[1]));
        }
    }
    parts.join(", ")
}

/// The cases of one `syscall_bench` run: (label, JSON key).
const CASES: [(&str, &str); 6] = [
    ("traced socket (HTTP), CPU", "socket_write_cpu_ns"),
    ("traced socket (HTTP), wall", "socket_write_wall_ns"),
    ("opaque socket, CPU", "opaque_socket_write_cpu_ns"),
    ("opaque socket, wall", "opaque_socket_write_wall_ns"),
    ("/dev/null (untraced), CPU", "devnull_write_cpu_ns"),
    ("/dev/null (untraced), wall", "devnull_write_wall_ns"),
];

/// One column: the agent off, or on with one capture path.
struct Column {
    name: String,
    capture_path: Option<String>,
    figures: Option<Value>,
    stats: Option<Value>,
    error: Option<String>,
}

fn with_agent(iterations: u64, path: &str) -> Column {
    let name = format!("on {path}");
    let result = (|| {
        let agent = start_agent(
            &[
                "--stdout",
                "off",
                "--prometheus-listen",
                "off",
                "--profiling",
                "off",
            ],
            &[("AGENT_CAPTURE_PATH", path)],
        )?;
        let reported = agent.capture_path.clone();
        let figures = run_bench(iterations);
        let stats = agent.stop()?;
        anyhow::Ok((reported, figures?, stats))
    })();
    match result {
        Ok((capture_path, figures, stats)) => Column {
            name,
            capture_path,
            figures: Some(figures),
            stats,
            error: None,
        },
        Err(e) => Column {
            name,
            capture_path: None,
            figures: None,
            stats: None,
            error: Some(format!("{e:#}")),
        },
    }
}

pub fn run(iterations: u64) -> anyhow::Result<()> {
    let off = run_bench(iterations)?;
    let mut columns = vec![Column {
        name: "off".into(),
        capture_path: None,
        figures: Some(off.clone()),
        stats: None,
        error: None,
    }];
    for path in ["fast", "tracepoints"] {
        columns.push(with_agent(iterations, path));
    }
    columns.push(Column {
        name: "off again".into(),
        capture_path: None,
        figures: Some(run_bench(iterations)?),
        stats: None,
        error: None,
    });

    let get =
        |v: &Option<Value>, k: &str| v.as_ref().and_then(|v| v[k].as_f64()).unwrap_or(f64::NAN);
    println!(
        "kernel-side overhead, {iterations} writes of 64 bytes x 7 rounds (median ns per write),"
    );
    println!("agent off, then on with AGENT_CAPTURE_PATH=fast and =tracepoints, then off again.");
    println!("CPU = the writing thread's user+system time, which includes the BPF programs;");
    println!("wall also includes time the writer waited for a core (the agent runs beside it).");
    let mut header = vec!["case".to_string()];
    for c in &columns {
        header.push(format!("{} ns", c.name));
    }
    for c in columns.iter().filter(|c| c.name.starts_with("on ")) {
        header.push(format!("{} delta", c.name));
    }
    let mut table = Table::new(&header);
    let mut cases_json = serde_json::Map::new();
    for (label, key) in CASES {
        let base = get(&Some(off.clone()), key);
        let mut row = vec![label.to_string()];
        let mut case = serde_json::Map::new();
        for c in &columns {
            let v = get(&c.figures, key);
            row.push(num(v, 0));
            case.insert(format!("{}_ns", c.name.replace(' ', "_")), j(v));
        }
        for c in columns.iter().filter(|c| c.name.starts_with("on ")) {
            let v = get(&c.figures, key);
            row.push(format!("{} ({})", num(v - base, 0), percent_delta(v, base)));
            case.insert(
                format!("{}_delta_ns", c.name.replace(' ', "_")),
                j(v - base),
            );
        }
        table.row(&row);
        cases_json.insert(key.to_string(), Value::Object(case));
    }
    table.print();
    let mut runs = Vec::new();
    for c in &columns {
        if let Some(e) = &c.error {
            println!("{}: did not run: {e}", c.name);
        }
        if c.name.starts_with("on ") {
            println!(
                "{}: path reported by the agent: {}",
                c.name,
                c.capture_path
                    .as_deref()
                    .unwrap_or("(none in its start line)")
            );
            match &c.stats {
                Some(stats) => println!("{}: agent at exit: {}", c.name, summary(stats)),
                None if c.error.is_none() => {
                    println!("{}: agent self-metrics: not found in its log", c.name)
                }
                None => {}
            }
        }
        runs.push(json!({
            "name": c.name,
            "capture_path_reported": c.capture_path,
            "syscall_bench": c.figures,
            "agent_stats": c.stats,
            "error": c.error,
        }));
    }
    let breakdown = breakdown(iterations)?;
    bench_report::write_json(
        "syscalls",
        json!({
            "iterations": iterations,
            "rounds": 7,
            "payload_bytes": 64,
            "cases": cases_json,
            "runs": runs,
            "breakdown": breakdown,
        }),
    )?;
    Ok(())
}

/// Where each 100 ns goes: `kernel_breakdown` attaches one `bench_*` program
/// of the agent's object at a time to `sys_exit` (no agent running) and
/// measures a `/dev/null` write under it.
fn breakdown(iterations: u64) -> anyhow::Result<Value> {
    let cases = run_json("kernel_breakdown", iterations)?;
    println!();
    println!(
        "breakdown: CPU ns per 64-byte /dev/null write with one program on sys_exit \
         (each row adds one piece to the empty raw tracepoint; tp_btf reads registers with plain loads)"
    );
    let mut table = Table::new(&["program on sys_exit", "ns", "vs nothing"]);
    let rows = cases.as_array().cloned().unwrap_or_default();
    let base = rows.first().and_then(|r| r[1].as_f64()).unwrap_or(f64::NAN);
    for r in &rows {
        let ns = r[1].as_f64().unwrap_or(f64::NAN);
        table.row(&[
            r[0].as_str().unwrap_or("?").to_string(),
            num(ns, 0),
            format!("{:+.0}", ns - base),
        ]);
    }
    table.print();
    Ok(cases)
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_exit_stats() {
        let stats = json!({
            "events_received": 10, "bytes_captured": 640, "decode_errors": 0,
            "dropped_queue_full": 3,
            "kernel_losses": [["ringbuf_full", 2], ["copy_failed", 0], ["opaque_skipped", 5]],
        });
        assert_eq!(
            summary(&stats),
            "10 events received, 640 bytes captured, dropped_queue_full 3, kernel lost ringbuf_full 2, \
             kernel skipped opaque_skipped 5"
        );
    }

    #[test]
    fn capture_path_from_the_start_line() {
        let flat = r#"{"timestamp":"x","level":"INFO","attached":1,"total":1,"path":"fast","message":"capturing socket I/O"}"#;
        assert_eq!(capture_path(flat).as_deref(), Some("fast"));
        let nested = r#"{"fields":{"message":"capturing socket I/O","path":"tracepoints"}}"#;
        assert_eq!(capture_path(nested).as_deref(), Some("tracepoints"));
        assert_eq!(capture_path("capturing socket I/O"), None);
    }
}
