//! `cargo xtask bench http`: HTTP/1.1 keep-alive load on loopback against nginx
//! (`return 200 "ok\n"`, one worker, our own instance), agent off then on, in the
//! same run:
//!
//! * saturation: `wrk -t1 -c16` as fast as it goes: throughput ratio, agent CPU
//!   per request and per span, spans vs requests, drops by reason, peak RSS;
//!   also with `--exe nomatch` (the kernel captures, userspace drops every
//!   event), which separates the kernel's cost from userspace's.
//! * fixed rate: `rate_client` (open loop, latency from the scheduled send
//!   time) at 10k requests/s over 16 connections: p50/p99 ratios, agent CPU,
//!   spans == requests exactly, drops == 0, peak RSS.
//!
//! The agent runs with its defaults plus `--stdout off --prometheus-listen …
//! --profiling off` and whatever `--agent-arg` / `--agent-env` add.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{
    bench::{Agent, release_binary, start_agent},
    bench_report::{self, Table, j, num, ratio},
};

/// Fixed-rate load.
const RATE: u64 = 10_000;
const CONNECTIONS: u64 = 16;
/// Targets the lead judges the fixed-rate run by (on/off).
const P50_TARGET: f64 = 1.05;
const P99_TARGET: f64 = 1.10;

/// What one wrk run measured.
#[derive(Debug, Default, Clone)]
struct Wrk {
    requests: u64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Socket errors (connect, read, write, timeout) and non-2xx/3xx responses.
    errors: u64,
}

pub(crate) fn millis(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// Parses `wrk --latency` output.
fn parse_wrk(out: &str) -> Option<Wrk> {
    let mut load = Wrk::default();
    for line in out.lines().map(str::trim) {
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            load.per_second = rate.trim().parse().ok()?;
        } else if line.contains("requests in") {
            load.requests = line.split_whitespace().next()?.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("50%") {
            load.p50_ms = millis(v)?;
        } else if let Some(v) = line.strip_prefix("99%") {
            load.p99_ms = millis(v)?;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            load.errors += v.trim().parse::<u64>().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            load.errors += v
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    (load.requests > 0).then_some(load)
}

fn wrk(url: &str, seconds: u64) -> anyhow::Result<Wrk> {
    let out = Command::new("wrk")
        .args(["-t1", "-c16", &format!("-d{seconds}s"), "--latency", url])
        .output()
        .context("running wrk (Debian package wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

/// What one `rate_client` run measured (its JSON line).
#[derive(Debug, Default, Clone)]
struct Rate {
    scheduled: u64,
    sent: u64,
    completed: u64,
    errors: u64,
    achieved_rate: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    cpu_s: f64,
    raw: Value,
}

fn parse_rate_client(line: &str) -> anyhow::Result<Rate> {
    let raw: Value = serde_json::from_str(line.trim())
        .with_context(|| format!("rate_client output {line:?}"))?;
    let f = |k: &str| {
        raw[k]
            .as_f64()
            .with_context(|| format!("{k} in rate_client output {line:?}"))
    };
    let n = |k: &str| {
        raw[k]
            .as_u64()
            .with_context(|| format!("{k} in rate_client output {line:?}"))
    };
    Ok(Rate {
        scheduled: n("scheduled")?,
        sent: n("sent")?,
        completed: n("completed")?,
        errors: n("errors")?,
        achieved_rate: f("achieved_rate")?,
        p50_us: f("p50_us")?,
        p90_us: f("p90_us")?,
        p99_us: f("p99_us")?,
        p999_us: f("p999_us").unwrap_or(f64::NAN),
        max_us: f("max_us")?,
        cpu_s: f("cpu_s").unwrap_or(f64::NAN),
        raw,
    })
}

fn rate_client(url: &str, seconds: u64) -> anyhow::Result<Rate> {
    let exe = release_binary("rate_client");
    let out = Command::new(&exe)
        .args(["--url", url])
        .args(["--rate", &RATE.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .args(["--connections", &CONNECTIONS.to_string()])
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    if !out.status.success() {
        bail!(
            "rate_client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_rate_client(&String::from_utf8_lossy(&out.stdout))
}

/// utime + stime of a process, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("stat")? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// A `kB` field of `/proc/PID/status` (`VmHWM`, `VmRSS`, …) in MiB.
pub(crate) fn status_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .with_context(|| format!("{field} in /proc/{pid}/status"))?
        .parse()?;
    Ok(kib / 1024.0)
}

pub(crate) fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    status_mib(pid, "VmHWM")
}

pub(crate) fn scrape(port: u16) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

/// Sum of the samples of `metric` whose line contains `filter`.
pub(crate) fn sum(metrics: &str, metric: &str, filter: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(metric) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Per series of `metric` (the whole `name{labels}`), `after - before`, the
/// non-zero ones.
fn deltas(before: &str, after: &str, metric: &str) -> Vec<(String, f64)> {
    after
        .lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let now: f64 = value.parse().ok()?;
            let was: f64 = before
                .lines()
                .find_map(|b| b.rsplit_once(' ').filter(|(s, _)| *s == series))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0.0);
            (now != was).then(|| (series.to_string(), now - was))
        })
        .collect()
}

pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The nginx configuration of the benchmark: one worker, no logs, one
/// constant response, every path under `dir`; with `tls`, HTTPS with the
/// certificate in `dir` (see [`start_nginx`]).
fn nginx_conf(dir: &Path, port: u16, tls: bool) -> String {
    let d = dir.display();
    let listen = if tls {
        format!(
            "{port} ssl;\n\
             \x20       ssl_certificate {d}/cert.pem;\n\
             \x20       ssl_certificate_key {d}/key.pem"
        )
    } else {
        port.to_string()
    };
    format!(
        "daemon off;\n\
         master_process off;\n\
         worker_processes 1;\n\
         error_log stderr;\n\
         pid {d}/nginx.pid;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   keepalive_requests 1000000;\n\
         \x20   client_body_temp_path {d}/client_body;\n\
         \x20   proxy_temp_path {d}/proxy;\n\
         \x20   fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n\
         \x20   scgi_temp_path {d}/scgi;\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{listen};\n\
         \x20       location / {{ return 200 \"ok\\n\"; }}\n\
         \x20   }}\n\
         }}\n"
    )
}

pub(crate) struct Nginx {
    process: Killed,
    pub(crate) port: u16,
    dir: PathBuf,
}

impl Nginx {
    pub(crate) fn pid(&self) -> u32 {
        self.process.0.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// nginx on a free loopback port; with `tls`, HTTPS with a self-signed
/// certificate made here.
pub(crate) fn start_nginx(tls: bool) -> anyhow::Result<Nginx> {
    let dir = std::env::temp_dir().join(format!("agent-bench-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    if tls {
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stderr(Stdio::null())
            .status()
            .context("openssl (Debian package openssl)")?;
        anyhow::ensure!(made.success(), "openssl req failed");
    }
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&dir, port, tls))?;
    let log = std::fs::File::create(dir.join("stderr.log"))?;
    let child = Command::new("nginx")
        .args(["-e", "stderr", "-c"])
        .arg(&conf)
        .arg("-p")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting nginx (Debian package nginx)")?;
    let mut nginx = Nginx {
        process: Killed(child),
        port,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(nginx);
        }
        let exited = nginx.process.0.try_wait()?;
        if exited.is_some() || Instant::now() > deadline {
            let log = std::fs::read_to_string(nginx.dir.join("stderr.log")).unwrap_or_default();
            bail!("nginx did not listen on {port} ({exited:?}):\n{log}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the agent's server and client spans both pass `matches` and it
/// dropped nothing, printed as `spans == {what}: yes|NO; drops == 0: yes|NO`;
/// `None` without an agent.
pub(crate) fn spans_verdict(
    agent: Option<&AgentFigures>,
    what: &str,
    matches: impl Fn(f64) -> bool,
) -> Option<(bool, bool)> {
    let a = agent?;
    let spans = matches(a.server_spans) && matches(a.client_spans);
    let no_drops = a.dropped_total() == 0.0;
    let word = |ok: bool| if ok { "yes" } else { "NO" };
    println!(
        "spans == {what}: {}; drops == 0: {}",
        word(spans),
        word(no_drops)
    );
    Some((spans, no_drops))
}

/// What the agent did during one load run.
#[derive(Debug, Default)]
pub(crate) struct AgentFigures {
    pub(crate) cpu_s: f64,
    pub(crate) peak_rss_mib: f64,
    /// RSS at the end of the load (the peak is usually start-up: BTF parsing).
    pub(crate) rss_mib: f64,
    pub(crate) server_spans: f64,
    pub(crate) client_spans: f64,
    events_received: f64,
    events_filtered: f64,
    /// `agent_events_dropped_total` by reason.
    dropped: Vec<(String, f64)>,
    /// `agent_kernel_skipped_total` by reason: skips by design, not losses.
    skipped: Vec<(String, f64)>,
    /// Other losses: stream bytes dropped, parse and decode errors, evictions.
    other_losses: Vec<(String, f64)>,
    capture_path: Option<String>,
}

impl AgentFigures {
    pub(crate) fn dropped_total(&self) -> f64 {
        // + 0.0: an empty f64 sum is -0.0.
        self.dropped.iter().map(|(_, n)| n).sum::<f64>() + 0.0
    }

    pub(crate) fn json(&self, seconds: f64, requests: f64) -> Value {
        let map = |v: &[(String, f64)]| -> Value {
            v.iter()
                .map(|(k, n)| (k.clone(), j(*n)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        json!({
            "capture_path_reported": self.capture_path,
            "cpu_seconds": j(self.cpu_s),
            "cpu_cores": j(self.cpu_s / seconds),
            "cpu_us_per_request": j(self.cpu_s / requests * 1e6),
            "cpu_us_per_span": j(self.cpu_s / (2.0 * requests) * 1e6),
            "peak_rss_mib": j(self.peak_rss_mib),
            "rss_mib": j(self.rss_mib),
            "server_spans": j(self.server_spans),
            "client_spans": j(self.client_spans),
            "events_received": j(self.events_received),
            "events_filtered": j(self.events_filtered),
            "events_dropped_total": j(self.dropped_total()),
            "events_dropped": map(&self.dropped),
            "kernel_skipped": map(&self.skipped),
            "other_losses": map(&self.other_losses),
        })
    }
}

/// How the agent runs in one column.
pub(crate) struct Variant {
    pub(crate) name: &'static str,
    /// `None`: agent off.
    extra: Option<Vec<String>>,
}

impl Variant {
    pub(crate) const OFF: Variant = Variant {
        name: "off",
        extra: None,
    };

    /// The agent on, with `args` beyond the bench's own.
    pub(crate) fn on(name: &'static str, args: &[&str]) -> Variant {
        Variant {
            name,
            extra: Some(args.iter().map(|a| a.to_string()).collect()),
        }
    }
}

/// A span counter in the agent's /metrics: the samples of `metric` whose line
/// contains `filter`.
pub(crate) struct Spans {
    pub(crate) metric: &'static str,
    pub(crate) filter: String,
}

/// What a benchmark runs the agent against, and how.
pub(crate) struct Setup<'a> {
    /// The server under load (its CPU is measured beside the agent's).
    server_pid: u32,
    server_spans: Spans,
    client_spans: Spans,
    pub(crate) agent_args: &'a [String],
    agent_env: Vec<(String, String)>,
    /// This process's `AGENT_*` variables, which the agent inherits.
    pub(crate) inherited_env: Vec<String>,
}

impl<'a> Setup<'a> {
    /// `agent_env`: `KEY=VALUE` pairs.
    pub(crate) fn new(
        server_pid: u32,
        server_spans: Spans,
        client_spans: Spans,
        agent_args: &'a [String],
        agent_env: &[String],
    ) -> anyhow::Result<Setup<'a>> {
        Ok(Setup {
            server_pid,
            server_spans,
            client_spans,
            agent_args,
            agent_env: parse_env(agent_env)?,
            inherited_env: std::env::vars()
                .filter(|(k, _)| k.starts_with("AGENT_"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        })
    }

    /// `--agent-env` as `KEY=VALUE`.
    pub(crate) fn agent_env(&self) -> Vec<String> {
        self.agent_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    /// How the agent runs, for the first line of a report.
    pub(crate) fn agent_settings(&self) -> String {
        format!(
            "defaults + --stdout off --prometheus-listen … --profiling off {} {}",
            self.agent_args.join(" "),
            [self.agent_env(), self.inherited_env.clone()]
                .concat()
                .join(" ")
        )
    }
}

/// One load run, agent off or on, with the agent's and the server's figures.
pub(crate) struct Measured<T> {
    pub(crate) load: T,
    pub(crate) seconds: f64,
    pub(crate) server_cpu_s: f64,
    pub(crate) agent: Option<AgentFigures>,
}

/// Runs `load` with the agent as `variant` says; the agent's figures count
/// what it did during the load (metrics deltas, CPU) and until it settled.
pub(crate) fn measure<T>(
    setup: &Setup<'_>,
    variant: &Variant,
    load: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<Measured<T>> {
    let server_pid = setup.server_pid;
    let Some(extra) = &variant.extra else {
        let cpu0 = cpu_seconds(server_pid)?;
        let t0 = Instant::now();
        let load = load()?;
        return Ok(Measured {
            load,
            seconds: t0.elapsed().as_secs_f64(),
            server_cpu_s: cpu_seconds(server_pid)? - cpu0,
            agent: None,
        });
    };
    let metrics_port = free_port()?;
    let listen = format!("127.0.0.1:{metrics_port}");
    let mut args: Vec<&str> = vec![
        "--stdout",
        "off",
        "--prometheus-listen",
        &listen,
        "--profiling",
        "off",
    ];
    args.extend(setup.agent_args.iter().map(String::as_str));
    args.extend(extra.iter().map(String::as_str));
    let env: Vec<(&str, &str)> = setup
        .agent_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let agent: Agent = start_agent(&args, &env)?;
    let pid = agent.pid();
    // Past start-up (procfs scan, first reads).
    thread::sleep(Duration::from_secs(1));
    let count = |m: &str, spans: &Spans| sum(m, spans.metric, &spans.filter);
    let counts = |m: &str| (count(m, &setup.server_spans), count(m, &setup.client_spans));
    let before = scrape(metrics_port)?;
    let (cpu0, server0, t0) = (cpu_seconds(pid)?, cpu_seconds(server_pid)?, Instant::now());
    let load = load()?;
    let seconds = t0.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds(pid)? - cpu0;
    let server_cpu_s = cpu_seconds(server_pid)? - server0;
    // Let the agent finish what is in flight: until its span counts stop moving.
    let mut after = scrape(metrics_port)?;
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(250));
        let again = scrape(metrics_port)?;
        let settled = counts(&again) == counts(&after);
        after = again;
        if settled {
            break;
        }
    }
    let peak_rss_mib = peak_rss_mib(pid)?;
    let rss_mib = status_mib(pid, "VmRSS")?;
    let capture_path = agent.capture_path.clone();
    agent.stop().context("stopping the agent")?;
    let (s0, c0) = counts(&before);
    let (s1, c1) = counts(&after);
    let delta = |metric: &str| sum(&after, metric, "") - sum(&before, metric, "");
    let mut other_losses = Vec::new();
    for metric in [
        "agent_stream_dropped_bytes_total",
        "agent_parse_errors_total",
        "agent_decode_errors_total",
        "agent_connections_evicted_total",
        "agent_routes_overflowed_total",
    ] {
        other_losses.extend(deltas(&before, &after, metric));
    }
    Ok(Measured {
        load,
        seconds,
        server_cpu_s,
        agent: Some(AgentFigures {
            cpu_s,
            peak_rss_mib,
            rss_mib,
            server_spans: s1 - s0,
            client_spans: c1 - c0,
            events_received: delta("agent_events_received_total"),
            events_filtered: delta("agent_events_filtered_total"),
            dropped: deltas(&before, &after, "agent_events_dropped_total"),
            skipped: deltas(&before, &after, "agent_kernel_skipped_total"),
            other_losses,
            capture_path,
        }),
    })
}

pub(crate) fn agent_cell(m: &Measured<impl Sized>, f: impl Fn(&AgentFigures) -> String) -> String {
    m.agent.as_ref().map_or_else(|| "-".into(), f)
}

pub(crate) fn print_losses<T>(columns: &[(&Variant, Measured<T>)]) {
    for (variant, m) in columns {
        let Some(a) = &m.agent else { continue };
        let path = a.capture_path.as_deref().unwrap_or("?");
        let mut parts: Vec<String> = a
            .dropped
            .iter()
            .chain(&a.other_losses)
            .map(|(series, n)| format!("{series} {n:+.0}"))
            .collect();
        if parts.is_empty() {
            parts.push("no drops, no losses".into());
        }
        parts.extend(
            a.skipped
                .iter()
                .map(|(series, n)| format!("(by design) {series} {n:+.0}")),
        );
        println!(
            "  {} (path {path}, {:.0} events received, {:.0} filtered): {}",
            variant.name,
            a.events_received,
            a.events_filtered,
            parts.join(", ")
        );
    }
}

fn saturation(setup: &Setup<'_>, url: &str, seconds: u64) -> anyhow::Result<Value> {
    let variants = [
        Variant::OFF,
        Variant::on("on", &[]),
        Variant::on("on --exe nomatch", &["--exe", "nomatch"]),
    ];
    let mut columns = Vec::new();
    for v in &variants {
        columns.push((v, measure(setup, v, || wrk(url, seconds))?));
    }
    let off = columns[0].1.load.clone();
    println!();
    println!(
        "saturation: wrk -t1 -c16 -d{seconds}s --latency against nginx (return 200, 1 worker)"
    );
    let mut header = vec!["".to_string()];
    header.extend(variants.iter().map(|v| format!("agent {}", v.name)));
    let mut t = Table::new(&header);
    let mut row = |label: &str, f: &dyn Fn(&Measured<Wrk>) -> String| {
        let mut r = vec![label.to_string()];
        r.extend(columns.iter().map(|(_, m)| f(m)));
        t.row(&r);
    };
    row("requests/s", &|m| num(m.load.per_second, 0));
    row("throughput on/off", &|m| {
        ratio(m.load.per_second, off.per_second)
    });
    row("p50 latency (ms)", &|m| num(m.load.p50_ms, 3));
    row("p99 latency (ms)", &|m| num(m.load.p99_ms, 3));
    row("wrk errors", &|m| m.load.errors.to_string());
    row("agent CPU (cores)", &|m| {
        agent_cell(m, |a| num(a.cpu_s / m.seconds, 3))
    });
    row("agent CPU µs/request", &|m| {
        agent_cell(m, |a| num(a.cpu_s / m.load.requests as f64 * 1e6, 2))
    });
    row("agent CPU µs/span", &|m| {
        agent_cell(m, |a| {
            num(a.cpu_s / (2.0 * m.load.requests as f64) * 1e6, 2)
        })
    });
    row("nginx CPU µs/request", &|m| {
        num(m.server_cpu_s / m.load.requests as f64 * 1e6, 2)
    });
    let per_request = |spans: f64, requests: u64| {
        format!("{spans:.0}/{requests} = {:.4}", spans / requests as f64)
    };
    row("server spans / requests", &|m| {
        agent_cell(m, |a| per_request(a.server_spans, m.load.requests))
    });
    row("client spans / requests", &|m| {
        agent_cell(m, |a| per_request(a.client_spans, m.load.requests))
    });
    row("events dropped", &|m| {
        agent_cell(m, |a| num(a.dropped_total(), 0))
    });
    row("agent RSS after the load (MiB)", &|m| {
        agent_cell(m, |a| num(a.rss_mib, 1))
    });
    row("agent peak RSS (MiB)", &|m| {
        agent_cell(m, |a| num(a.peak_rss_mib, 1))
    });
    t.print();
    println!(
        "(nginx CPU includes the kernel programs run in its syscalls; wrk counts only \
         completed requests, so spans may exceed them by the ≤16 in flight at the end)"
    );
    println!("drops and losses during each run:");
    print_losses(&columns);
    Ok(columns
        .iter()
        .map(|(v, m)| {
            json!({
                "agent": v.name,
                "requests": m.load.requests,
                "requests_per_second": j(m.load.per_second),
                "throughput_ratio": j(m.load.per_second / off.per_second),
                "p50_ms": j(m.load.p50_ms),
                "p99_ms": j(m.load.p99_ms),
                "errors": m.load.errors,
                "seconds": j(m.seconds),
                "nginx_cpu_us_per_request": j(m.server_cpu_s / m.load.requests as f64 * 1e6),
                "agent_figures": m.agent.as_ref().map(|a| a.json(m.seconds, m.load.requests as f64)),
            })
        })
        .collect())
}

/// One figure of a load run.
pub(crate) type Figure<T> = fn(&T) -> f64;

/// A table of fixed-rate runs: a row per figure, a column per run, then on/off.
pub(crate) struct RunTable<'a, T> {
    columns: &'a [(&'a Variant, Measured<T>)],
    table: Table,
}

impl<'a, T> RunTable<'a, T> {
    pub(crate) fn new(columns: &'a [(&'a Variant, Measured<T>)]) -> RunTable<'a, T> {
        let mut header = vec!["".to_string()];
        header.extend(columns.iter().map(|(v, _)| format!("agent {}", v.name)));
        header.push("on/off".into());
        RunTable {
            columns,
            table: Table::new(&header),
        }
    }

    pub(crate) fn row(&mut self, label: &str, f: impl Fn(&Measured<T>) -> String, on_off: String) {
        let mut cells = vec![label.to_string()];
        cells.extend(self.columns.iter().map(|(_, m)| f(m)));
        cells.push(on_off);
        self.table.row(&cells);
    }

    /// A row per figure of the load, with `decimals`, and on/off (the second
    /// run's figure over the first's).
    pub(crate) fn load_rows(&mut self, decimals: usize, figures: &[(&str, Figure<T>)]) {
        for &(label, get) in figures {
            let on_off = match self.columns {
                [(_, off), (_, on), ..] => ratio(get(&on.load), get(&off.load)),
                _ => String::new(),
            };
            self.row(label, |m| num(get(&m.load), decimals), on_off);
        }
    }

    /// The agent's rows: CPU, CPU per `unit` (`done` of them in a run), spans
    /// against them, drops, memory.
    pub(crate) fn agent_rows(&mut self, unit: &str, done: impl Fn(&T) -> u64) {
        let done = &done;
        self.row(
            "agent CPU (cores)",
            |m| agent_cell(m, |a| num(a.cpu_s / m.seconds, 3)),
            String::new(),
        );
        self.row(
            &format!("agent CPU µs/{unit}"),
            |m| agent_cell(m, |a| num(a.cpu_s / done(&m.load) as f64 * 1e6, 2)),
            String::new(),
        );
        for (kind, spans) in [
            (
                "server",
                (|a: &AgentFigures| a.server_spans) as fn(&AgentFigures) -> f64,
            ),
            ("client", |a| a.client_spans),
        ] {
            self.row(
                &format!("{kind} spans / {unit}s"),
                |m| agent_cell(m, |a| format!("{:.0}/{}", spans(a), done(&m.load))),
                String::new(),
            );
        }
        self.row(
            "events dropped",
            |m| agent_cell(m, |a| num(a.dropped_total(), 0)),
            String::new(),
        );
        self.row(
            "agent RSS after the load (MiB)",
            |m| agent_cell(m, |a| num(a.rss_mib, 1)),
            String::new(),
        );
        self.row(
            "agent peak RSS (MiB)",
            |m| agent_cell(m, |a| num(a.peak_rss_mib, 1)),
            String::new(),
        );
    }

    pub(crate) fn print(&self) {
        self.table.print();
    }
}

fn verdict(ratio: f64, target: f64) -> &'static str {
    if ratio <= target {
        "within target"
    } else {
        "OVER TARGET"
    }
}

fn fixed_rate(setup: &Setup<'_>, url: &str, seconds: u64) -> anyhow::Result<Value> {
    // The third run prices the thread → request map (span profiles, log links).
    let variants = [
        Variant::OFF,
        Variant::on("on", &[]),
        Variant::on("on, --trace-context off", &["--trace-context", "off"]),
    ];
    let mut columns = Vec::new();
    for v in &variants {
        columns.push((v, measure(setup, v, || rate_client(url, seconds))?));
    }
    let off = columns[0].1.load.clone();
    let on = columns[1].1.load.clone();
    println!();
    println!(
        "fixed rate: rate_client --rate {RATE} --connections {CONNECTIONS} --seconds {seconds} \
         (open loop; latency from the scheduled send time)"
    );
    let mut t = RunTable::new(&columns);
    t.load_rows(0, &[("achieved requests/s", |r| r.achieved_rate)]);
    t.row(
        "completed / sent / scheduled",
        |m| format!("{}/{}/{}", m.load.completed, m.load.sent, m.load.scheduled),
        String::new(),
    );
    t.row("errors", |m| m.load.errors.to_string(), String::new());
    t.load_rows(
        1,
        &[
            ("p50 latency (µs)", |r| r.p50_us),
            ("p90 latency (µs)", |r| r.p90_us),
            ("p99 latency (µs)", |r| r.p99_us),
            ("p99.9 latency (µs)", |r| r.p999_us),
            ("max latency (µs)", |r| r.max_us),
        ],
    );
    let per_request = |cpu: f64, m: &Measured<Rate>| cpu / m.load.completed as f64 * 1e6;
    t.row(
        "nginx CPU µs/request",
        |m| num(per_request(m.server_cpu_s, m), 2),
        ratio(
            per_request(columns[1].1.server_cpu_s, &columns[1].1),
            per_request(columns[0].1.server_cpu_s, &columns[0].1),
        ),
    );
    t.row(
        "rate_client CPU µs/request",
        |m| num(per_request(m.load.cpu_s, m), 2),
        ratio(
            per_request(on.cpu_s, &columns[1].1),
            per_request(off.cpu_s, &columns[0].1),
        ),
    );
    t.agent_rows("request", |r| r.completed);
    t.print();
    let trace_context = per_request(columns[1].1.server_cpu_s, &columns[1].1)
        - per_request(columns[2].1.server_cpu_s, &columns[2].1);
    println!(
        "thread → request map (traces_ctx_v1): {trace_context:+.2} µs of nginx CPU per request \
         (on vs on with --trace-context off)"
    );
    let p50 = on.p50_us / off.p50_us;
    let p99 = on.p99_us / off.p99_us;
    println!(
        "p50 on/off {p50:.3} (target <= {P50_TARGET}): {}; p99 on/off {p99:.3} (target <= {P99_TARGET}): {}",
        verdict(p50, P50_TARGET),
        verdict(p99, P99_TARGET)
    );
    let m_on = &columns[1].1;
    let done = m_on.load.completed as f64;
    let exact = spans_verdict(
        m_on.agent.as_ref(),
        "requests (server and client)",
        |spans| spans == done,
    );
    for (v, m) in &columns {
        if m.load.achieved_rate < RATE as f64 * 0.98 || m.load.errors > 0 {
            println!(
                "warning: agent {}: {:.0} requests/s of {RATE} scheduled, {} errors: the load \
                 generator or nginx did not keep up, latencies are not comparable",
                v.name, m.load.achieved_rate, m.load.errors
            );
        }
    }
    println!("drops and losses during each run:");
    print_losses(&columns);
    Ok(json!({
        "rate": RATE,
        "connections": CONNECTIONS,
        "p50_ratio": j(p50),
        "p99_ratio": j(p99),
        "p50_target": P50_TARGET,
        "p99_target": P99_TARGET,
        "trace_context_nginx_cpu_us_per_request": j(trace_context),
        "spans_equal_requests": exact.map(|e| e.0),
        "no_drops": exact.map(|e| e.1),
        "runs": columns.iter().map(|(v, m)| json!({
            "agent": v.name,
            "rate_client": m.load.raw,
            "seconds": j(m.seconds),
            "nginx_cpu_us_per_request": j(per_request(m.server_cpu_s, m)),
            "agent_figures": m.agent.as_ref().map(|a| a.json(m.seconds, m.load.completed as f64)),
        })).collect::<Vec<_>>(),
    }))
}

/// `KEY=VALUE` pairs.
fn parse_env(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--agent-env {p:?}: expected KEY=VALUE"))
        })
        .collect()
}

pub fn run(seconds: u64, agent_args: &[String], agent_env: &[String]) -> anyhow::Result<()> {
    let nginx = start_nginx(false)?;
    let url = format!("http://127.0.0.1:{}/", nginx.port);
    let setup = Setup::new(
        nginx.pid(),
        Spans {
            metric: "http_server_request_duration_seconds_count",
            filter: "service_name=\"nginx\"".into(),
        },
        Spans {
            metric: "http_client_request_duration_seconds_count",
            filter: format!("server_port=\"{}\"", nginx.port),
        },
        agent_args,
        agent_env,
    )?;
    println!(
        "HTTP/1.1 keep-alive load on loopback against nginx, agent off then on, same run; agent: {}",
        setup.agent_settings()
    );
    wrk(&url, 1)?; // warm-up
    let saturation = saturation(&setup, &url, seconds)?;
    let fixed = fixed_rate(&setup, &url, seconds)?;
    bench_report::write_json(
        "http",
        json!({
            "seconds": seconds,
            "server": "nginx return 200 \"ok\\n\", 1 worker",
            "agent_args": agent_args,
            "agent_env": setup.agent_env(),
            "inherited_agent_env": setup.inherited_env,
            "saturation": saturation,
            "fixed_rate": fixed,
        }),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 10s test @ http://127.0.0.1:1/users/1\n  1 threads and 16 connections\n\
                   Latency Distribution\n     50%  412.00us\n     75%  1.01ms\n     90%  2.00ms\n     99%    3.50ms\n\
                   252581 requests in 10.00s, 24.09MB read\n\
                   Socket errors: connect 0, read 2, write 0, timeout 1\n\
                   Non-2xx or 3xx responses: 4\nRequests/sec:  25256.29\n";
        let load = parse_wrk(out).unwrap();
        assert_eq!(load.requests, 252_581);
        assert!((load.per_second - 25256.29).abs() < 0.01);
        assert!((load.p50_ms - 0.412).abs() < 1e-9);
        assert!((load.p99_ms - 3.5).abs() < 1e-9);
        assert_eq!(load.errors, 7);
    }

    #[test]
    fn parses_rate_client_output() {
        let line = r#"{"scheduled":50000,"sent":50000,"completed":49990,"errors":10,"achieved_rate":9998.0,"elapsed_s":5.0,"p50_us":54.7,"p90_us":457.8,"p99_us":2576.4,"p999_us":4656.4,"max_us":5191.2,"cpu_s":1.463}"#;
        let r = parse_rate_client(&format!("{line}\n")).unwrap();
        assert_eq!(
            (r.scheduled, r.sent, r.completed, r.errors),
            (50_000, 50_000, 49_990, 10)
        );
        assert!((r.achieved_rate - 9998.0).abs() < 1e-9);
        assert!((r.p50_us - 54.7).abs() < 1e-9);
        assert!((r.p99_us - 2576.4).abs() < 1e-9);
        assert!((r.max_us - 5191.2).abs() < 1e-9);
        assert!((r.cpu_s - 1.463).abs() < 1e-9);
        assert!(parse_rate_client(r#"{"sent":1}"#).is_err());
        assert!(parse_rate_client("rate_client: --url is required").is_err());
    }

    #[test]
    fn renders_nginx_conf() {
        let conf = nginx_conf(Path::new("/tmp/b"), 8123, false);
        for line in [
            "daemon off;",
            "master_process off;",
            "worker_processes 1;",
            "error_log stderr;",
            "pid /tmp/b/nginx.pid;",
            "access_log off;",
            "listen 127.0.0.1:8123;",
            "location / { return 200 \"ok\\n\"; }",
            "client_body_temp_path /tmp/b/client_body;",
        ] {
            assert!(conf.contains(line), "{line:?} missing from\n{conf}");
        }
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    }

    #[test]
    fn metric_deltas_per_series() {
        let before = "agent_events_dropped_total{reason=\"kernel_ringbuf_full\"} 3\n\
                      agent_events_dropped_total{reason=\"queue_full\"} 0\n";
        let after = "# TYPE agent_events_dropped_total counter\n\
                     agent_events_dropped_total{reason=\"kernel_ringbuf_full\"} 10\n\
                     agent_events_dropped_total{reason=\"queue_full\"} 0\n\
                     agent_events_dropped_total{reason=\"tap_full\"} 2\n\
                     agent_events_dropped_totally 5\n";
        assert_eq!(
            deltas(before, after, "agent_events_dropped_total"),
            vec![
                (
                    "agent_events_dropped_total{reason=\"kernel_ringbuf_full\"}".to_string(),
                    7.0
                ),
                (
                    "agent_events_dropped_total{reason=\"tap_full\"}".to_string(),
                    2.0
                ),
            ]
        );
        assert_eq!(sum(after, "agent_events_dropped_total{", ""), 12.0);
    }

    #[test]
    fn env_pairs() {
        assert_eq!(
            parse_env(&["AGENT_CAPTURE_PATH=tracepoints".into()]).unwrap(),
            vec![("AGENT_CAPTURE_PATH".into(), "tracepoints".into())]
        );
        assert!(parse_env(&["nope".into()]).is_err());
    }
}
