//! `cargo xtask bench http`: HTTP/1 load (wrk, keep-alive) against a hyper server
//! on loopback, agent off then on, in the same run. Reports the throughput ratio,
//! p50/p99 latency deltas, agent CPU per 10k requests, agent peak RSS, events
//! dropped and spans per request.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::workspace_root;

/// What one wrk run measured.
#[derive(Debug, Default)]
struct Load {
    requests: u64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn millis(text: &str) -> Option<f64> {
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
fn parse_wrk(out: &str) -> Option<Load> {
    let mut load = Load::default();
    for line in out.lines().map(str::trim) {
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            load.per_second = rate.trim().parse().ok()?;
        } else if line.contains("requests in") {
            load.requests = line.split_whitespace().next()?.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("50%") {
            load.p50_ms = millis(v)?;
        } else if let Some(v) = line.strip_prefix("99%") {
            load.p99_ms = millis(v)?;
        }
    }
    (load.requests > 0).then_some(load)
}

fn wrk(url: &str, seconds: u64) -> anyhow::Result<Load> {
    let out = Command::new("wrk")
        .args(["-t1", "-c16", &format!("-d{seconds}s"), "--latency", url])
        .output()
        .context("running wrk (Debian package wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
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

pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(seconds: u64) -> anyhow::Result<()> {
    let root = workspace_root();
    let mut server = Command::new(root.join("target/release/http_peer"))
        .arg("server")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting http_peer server")?;
    let mut line = String::new();
    BufReader::new(server.stdout.take().context("stdout")?).read_line(&mut line)?;
    let _server = Killed(server);
    let port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .context("port")?
        .parse()?;
    let url = format!("http://127.0.0.1:{port}/users/1");
    wrk(&url, 1)?; // warm-up

    let off = wrk(&url, seconds)?;

    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let (agent, _logs) =
        crate::bench::start_agent(&["--stdout", "off", "--prometheus-listen", &metrics_addr])?;
    let agent_pid = agent.id();
    let agent = Killed(agent);
    let before = scrape(metrics_port)?;
    let cpu_before = cpu_seconds(agent_pid)?;
    let on = wrk(&url, seconds)?;
    let cpu = cpu_seconds(agent_pid)? - cpu_before;
    // Let the agent finish what is in flight before counting.
    thread::sleep(Duration::from_millis(500));
    let after = scrape(metrics_port)?;
    let rss = peak_rss_mib(agent_pid)?;
    drop(agent);

    let route = "http_route=\"/users/{id}\"";
    let spans = sum(&after, "http_server_request_duration_seconds_count", route)
        - sum(&before, "http_server_request_duration_seconds_count", route);
    let dropped = sum(&after, "agent_events_dropped_total", "")
        - sum(&before, "agent_events_dropped_total", "");
    if on.requests == 0 {
        bail!("no requests with the agent on");
    }
    println!(
        "HTTP/1.1 keep-alive load: wrk -t1 -c16 -d{seconds}s against a hyper server, agent off then on"
    );
    println!("{:<34} {:>12} {:>12}", "", "agent off", "agent on");
    println!(
        "{:<34} {:>12.0} {:>12.0}",
        "requests/s", off.per_second, on.per_second
    );
    println!(
        "{:<34} {:>12.3} {:>12.3}",
        "p50 latency (ms)", off.p50_ms, on.p50_ms
    );
    println!(
        "{:<34} {:>12.3} {:>12.3}",
        "p99 latency (ms)", off.p99_ms, on.p99_ms
    );
    println!(
        "throughput ratio (on/off)          {:.3}",
        on.per_second / off.per_second
    );
    println!(
        "p50 / p99 latency delta (ms)       {:+.3} / {:+.3}",
        on.p50_ms - off.p50_ms,
        on.p99_ms - off.p99_ms
    );
    println!(
        "agent CPU seconds per 10k requests {:.4}",
        cpu / on.requests as f64 * 10_000.0
    );
    println!(
        "agent CPU (cores) at this rate     {:.3}",
        cpu / seconds as f64
    );
    println!("agent peak RSS (MiB)               {rss:.1}");
    println!("events dropped                     {dropped:.0}");
    let reasons: Vec<String> = after
        .lines()
        .filter(|l| l.starts_with("agent_events_dropped_total{"))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let now: f64 = value.parse().ok()?;
            let was = sum(&before, series, "");
            (now - was > 0.0).then(|| format!("{series} +{:.0}", now - was))
        })
        .collect();
    if !reasons.is_empty() {
        println!("  by reason: {}", reasons.join(", "));
    }
    println!(
        "server spans / requests            {spans:.0} / {} = {:.4}",
        on.requests,
        spans / on.requests as f64
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 10s test @ http://127.0.0.1:1/users/1\n  1 threads and 16 connections\n\
                   Latency Distribution\n     50%  412.00us\n     75%  1.01ms\n     90%  2.00ms\n     99%    3.50ms\n\
                   252581 requests in 10.00s, 24.09MB read\nRequests/sec:  25256.29\n";
        let load = parse_wrk(out).unwrap();
        assert_eq!(load.requests, 252_581);
        assert!((load.per_second - 25256.29).abs() < 0.01);
        assert!((load.p50_ms - 0.412).abs() < 1e-9);
        assert!((load.p99_ms - 3.5).abs() < 1e-9);
    }
}
