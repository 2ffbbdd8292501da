//! `cargo xtask bench grpc`: unary gRPC over h2c on loopback at a fixed rate,
//! agent off then on, in the same run. `h2load` (nghttp2) sends
//! `demo.Echo/Unary` with a 4-byte message to `tonic_peer server`
//! (tests/src/bin/tonic_peer.rs) at 5,000 RPC/s over 4 connections, one stream
//! at a time on each. Reported: achieved RPC/s, latency (h2load's mean and max,
//! p50/p99 from its per-request log), agent CPU per RPC, RPC server and client
//! spans against RPCs (from `rpc_{server,client}_call_duration_seconds_count`),
//! drops by reason, agent RSS.
//!
//! The agent runs as in `bench http`: its defaults plus `--stdout off
//! --prometheus-listen … --profiling off` and whatever `--agent-arg` /
//! `--agent-env` add; it traces both the server and h2load.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::Context as _;
use serde_json::json;

use crate::{
    bench::release_binary,
    bench_http::{
        Killed, Measured, RunTable, Setup, Spans, Variant, agent_cell, measure, millis,
        print_losses, spans_verdict,
    },
    bench_report::{self, j, num, ratio},
};

/// RPCs per second over all connections.
const RATE: u64 = 5_000;
const CONNECTIONS: u64 = 4;
const METHOD: &str = "demo.Echo/Unary";
/// The server's `service.name` (set through `OTEL_SERVICE_NAME`).
const SERVICE: &str = "tonic_peer";

/// What one h2load run measured.
#[derive(Debug, Default, Clone)]
pub(crate) struct H2load {
    pub(crate) started: u64,
    pub(crate) done: u64,
    /// 2xx responses (a gRPC error would still be a 200: echo does not fail).
    pub(crate) succeeded: u64,
    /// Failed requests (errored and timed-out ones included).
    pub(crate) failed: u64,
    pub(crate) per_second: f64,
    pub(crate) mean_us: f64,
    pub(crate) max_us: f64,
    /// From `--log-file`.
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
}

/// Parses h2load's summary.
pub(crate) fn parse_h2load(out: &str) -> Option<H2load> {
    let mut load = H2load::default();
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in") {
            // "finished in 10.00s, 4999.90 req/s, 209.53KB/s"
            let rate = rest.split(',').nth(1)?.split_whitespace().next()?;
            load.per_second = rate.parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("requests:") {
            // "N total, N started, N done, N succeeded, N failed, N errored, N timeout"
            for part in rest.split(',') {
                let mut words = part.split_whitespace();
                let n: u64 = words.next()?.parse().ok()?;
                match words.next()? {
                    "started" => load.started = n,
                    "done" => load.done = n,
                    "succeeded" => load.succeeded = n,
                    "failed" => load.failed = n,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("time for request:") {
            // min, max, mean, sd, +/- sd
            let cells: Vec<&str> = rest.split_whitespace().collect();
            load.max_us = millis(cells.get(1)?)? * 1000.0;
            load.mean_us = millis(cells.get(2)?)? * 1000.0;
        }
    }
    (load.done > 0).then_some(load)
}

/// p50 and p99 (µs) of the 2xx requests of an h2load `--log-file` (start in µs
/// since the epoch, status, µs until the end of the response).
pub(crate) fn percentiles(log: &str) -> (f64, f64) {
    let mut us: Vec<f64> = log
        .lines()
        .filter_map(|l| {
            let mut cells = l.split('\t').skip(1);
            let status: i32 = cells.next()?.parse().ok()?;
            let us: f64 = cells.next()?.trim().parse().ok()?;
            (200..300).contains(&status).then_some(us)
        })
        .collect();
    us.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((us.len() as f64 - 1.0) * q).round() as usize;
        us.get(i).copied().unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.99))
}

/// The request body: `Msg { payload: "ping" }`, length-prefixed, uncompressed.
fn request_body() -> Vec<u8> {
    let payload = b"ping";
    // Field 1, wire type 2 (length-delimited).
    let message = [&[0x0a, payload.len() as u8][..], payload].concat();
    let mut body = vec![0];
    body.extend((message.len() as u32).to_be_bytes());
    body.extend(message);
    body
}

/// Scratch files of one run, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn h2load(url: &str, dir: &Path, seconds: u64) -> anyhow::Result<H2load> {
    let log = dir.join("h2load.log");
    let out = Command::new("h2load")
        .args(["--clients", &CONNECTIONS.to_string()])
        .args(["--max-concurrent-streams", "1"])
        .args(["--rps", &(RATE / CONNECTIONS).to_string()])
        .args(["--duration", &seconds.to_string()])
        .args(["--header", "content-type: application/grpc"])
        .args(["--header", "te: trailers"])
        .arg("--data")
        .arg(dir.join("request.bin"))
        .arg("--log-file")
        .arg(&log)
        .arg(url)
        .output()
        .context("running h2load (Debian package nghttp2-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut load = parse_h2load(&text)
        .with_context(|| format!("unexpected h2load output ({}):\n{text}", out.status))?;
    let log = std::fs::read_to_string(&log).context("h2load --log-file")?;
    (load.p50_us, load.p99_us) = percentiles(&log);
    Ok(load)
}

/// `tonic_peer server`, and the port it listens on.
fn start_server() -> anyhow::Result<(Killed, u16)> {
    let exe = release_binary("tonic_peer");
    let mut child = Command::new(&exe)
        .arg("server")
        .env("OTEL_SERVICE_NAME", SERVICE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let stdout = child.stdout.take().context("tonic_peer stdout")?;
    let server = Killed(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("tonic_peer server printed {line:?}"))?;
    Ok((server, port))
}

/// Spans match RPCs: at least every one h2load saw answered, at most every one
/// it started (some are in flight when it stops).
pub(crate) fn spans_match(spans: f64, load: &H2load) -> bool {
    (load.succeeded as f64..=load.started as f64).contains(&spans)
}

pub fn run(seconds: u64, agent_args: &[String], agent_env: &[String]) -> anyhow::Result<()> {
    let (server, port) = start_server()?;
    let setup = Setup::new(
        server.0.id(),
        Spans {
            metric: "rpc_server_call_duration_seconds_count",
            filter: format!("service_name=\"{SERVICE}\""),
        },
        Spans {
            metric: "rpc_client_call_duration_seconds_count",
            filter: format!("server_port=\"{port}\""),
        },
        agent_args,
        agent_env,
    )?;
    let scratch =
        Scratch(std::env::temp_dir().join(format!("agent-bench-grpc-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0)?;
    std::fs::write(scratch.0.join("request.bin"), request_body())?;
    let url = format!("http://127.0.0.1:{port}/{METHOD}");
    println!(
        "unary gRPC over h2c on loopback against tonic_peer, agent off then on, same run; agent: {}",
        setup.agent_settings()
    );
    h2load(&url, &scratch.0, 1)?; // warm-up
    let variants = [Variant::OFF, Variant::on("on", &[])];
    let mut columns = Vec::new();
    for v in &variants {
        columns.push((v, measure(&setup, v, || h2load(&url, &scratch.0, seconds))?));
    }
    let (off, on) = (&columns[0].1, &columns[1].1);
    println!();
    println!(
        "fixed rate: h2load --clients {CONNECTIONS} --max-concurrent-streams 1 --rps {} \
         --duration {seconds} POST /{METHOD} (latency from each request's send: a late \
         response delays the next request on its connection)",
        RATE / CONNECTIONS
    );
    let rpcs = |m: &Measured<H2load>| m.load.succeeded as f64;
    let mut t = RunTable::new(&columns);
    t.load_rows(0, &[("achieved RPC/s", |l| l.per_second)]);
    t.row(
        "succeeded / done / started",
        |m| format!("{}/{}/{}", m.load.succeeded, m.load.done, m.load.started),
        String::new(),
    );
    t.row("failed", |m| m.load.failed.to_string(), String::new());
    t.load_rows(
        1,
        &[
            ("mean latency (µs)", |l| l.mean_us),
            ("p50 latency (µs)", |l| l.p50_us),
            ("p99 latency (µs)", |l| l.p99_us),
            ("max latency (µs)", |l| l.max_us),
        ],
    );
    let server_us = |m: &Measured<H2load>| m.server_cpu_s / rpcs(m) * 1e6;
    t.row(
        "tonic_peer CPU µs/RPC",
        |m| num(server_us(m), 2),
        ratio(server_us(on), server_us(off)),
    );
    t.row(
        "agent CPU (s)",
        |m| agent_cell(m, |a| num(a.cpu_s, 3)),
        String::new(),
    );
    t.row(
        "agent CPU ms/10k RPCs",
        |m| agent_cell(m, |a| num(a.cpu_s / rpcs(m) * 1e7, 1)),
        String::new(),
    );
    t.agent_rows("RPC", |l| l.succeeded);
    t.print();
    let exact = spans_verdict(
        on.agent.as_ref(),
        "RPCs (server and client; succeeded <= spans <= started)",
        |spans| spans_match(spans, &on.load),
    );
    for (v, m) in &columns {
        if m.load.per_second < RATE as f64 * 0.98 || m.load.failed > 0 {
            println!(
                "warning: agent {}: {:.0} RPC/s of {RATE} scheduled, {} failed: h2load or the \
                 server did not keep up, latencies are not comparable",
                v.name, m.load.per_second, m.load.failed
            );
        }
    }
    println!("drops and losses during each run:");
    print_losses(&columns);
    bench_report::write_json(
        "grpc",
        json!({
            "seconds": seconds,
            "rate": RATE,
            "connections": CONNECTIONS,
            "method": METHOD,
            "server": "tonic_peer (tonic 0.14, current-thread runtime)",
            "agent_args": agent_args,
            "agent_env": setup.agent_env(),
            "inherited_agent_env": setup.inherited_env,
            "spans_equal_rpcs": exact.map(|e| e.0),
            "no_drops": exact.map(|e| e.1),
            "runs": columns.iter().map(|(v, m)| json!({
                "agent": v.name,
                "h2load": {
                    "started": m.load.started,
                    "done": m.load.done,
                    "succeeded": m.load.succeeded,
                    "failed": m.load.failed,
                    "rpc_per_second": j(m.load.per_second),
                    "mean_us": j(m.load.mean_us),
                    "p50_us": j(m.load.p50_us),
                    "p99_us": j(m.load.p99_us),
                    "max_us": j(m.load.max_us),
                },
                "seconds": j(m.seconds),
                "server_cpu_us_per_rpc": j(server_us(m)),
                "agent_figures": m.agent.as_ref().map(|a| a.json(m.seconds, rpcs(m))),
            })).collect::<Vec<_>>(),
        }),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_h2load_output() {
        let out = "finished in 3.00s, 4984.67 req/s, 209.53KB/s\n\
                   requests: 14954 total, 14955 started, 14954 done, 14950 succeeded, 4 failed, 4 errored, 0 timeout\n\
                   status codes: 14950 2xx, 0 3xx, 0 4xx, 0 5xx\n\
                   \x20                    min         max         mean         sd        +/- sd\n\
                   time for request:      155us     47.78ms       517us       934us    98.45%\n";
        let load = parse_h2load(out).unwrap();
        assert_eq!(
            (load.started, load.done, load.succeeded, load.failed),
            (14_955, 14_954, 14_950, 4)
        );
        assert!((load.per_second - 4984.67).abs() < 1e-9);
        assert!((load.max_us - 47_780.0).abs() < 1e-6);
        assert!((load.mean_us - 517.0).abs() < 1e-6);
        assert!(parse_h2load("connect to 127.0.0.1 failed").is_none());
    }

    #[test]
    fn percentiles_of_the_log() {
        let mut log = String::new();
        for us in 1..=100 {
            log.push_str(&format!("1796126999993544\t200\t{us}\n"));
        }
        log.push_str("1796126999993544\t-1\t100000\n");
        assert_eq!(percentiles(&log), (51.0, 99.0));
        assert!(percentiles("").0.is_nan());
    }

    #[test]
    fn request_body_is_one_length_prefixed_message() {
        assert_eq!(request_body(), b"\0\0\0\0\x06\x0a\x04ping");
    }

    #[test]
    fn spans_between_answered_and_started() {
        let load = H2load {
            started: 10,
            succeeded: 8,
            ..H2load::default()
        };
        assert!(spans_match(8.0, &load) && spans_match(10.0, &load));
        assert!(!spans_match(0.0, &load) && !spans_match(11.0, &load));
    }
}
