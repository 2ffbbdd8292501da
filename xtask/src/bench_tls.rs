//! `cargo xtask bench tls`: HTTPS/1.1 on loopback at a fixed rate, agent off
//! then on, in the same run. `h2load --h1` (links the host's libssl) sends
//! `GET /` to nginx `listen … ssl` (links it too) at 2,000 requests/s over 4
//! keep-alive connections, so both sides run through the agent's OpenSSL
//! uprobes. Reported: the CPU µs per request of the client and of the
//! server, agent CPU per 10k requests, server and client spans against
//! requests (`http_{server,client}_request_duration_seconds_count` with
//! `url_scheme="https"`), drops by reason, agent RSS.

use std::process::Command;

use anyhow::Context as _;
use serde_json::json;

use crate::{
    bench_grpc::{H2load, parse_h2load, percentiles, spans_match},
    bench_http::{
        Measured, RunTable, Setup, Spans, Variant, agent_cell, measure, print_losses,
        spans_verdict, start_nginx,
    },
    bench_report::{self, j, num, ratio},
};

const RATE: u64 = 2_000;
const CONNECTIONS: u64 = 4;

/// CPU seconds of this process's waited-for children (`cutime + cstime`).
fn children_cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let rest = &stat[stat.rfind(')').context("stat")? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[13].parse::<f64>()? + fields[14].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// One h2load run and the CPU it used.
#[derive(Debug, Default, Clone)]
struct Run {
    load: H2load,
    client_cpu_s: f64,
}

fn h2load(url: &str, dir: &std::path::Path, seconds: u64) -> anyhow::Result<Run> {
    let log = dir.join("h2load.log");
    let before = children_cpu_seconds()?;
    let out = Command::new("h2load")
        .arg("--h1")
        .args(["--clients", &CONNECTIONS.to_string()])
        .args(["--rps", &(RATE / CONNECTIONS).to_string()])
        .args(["--duration", &seconds.to_string()])
        .arg("--log-file")
        .arg(&log)
        .arg(url)
        .output()
        .context("running h2load (Debian package nghttp2-client)")?;
    let client_cpu_s = children_cpu_seconds()? - before;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut load = parse_h2load(&text)
        .with_context(|| format!("unexpected h2load output ({}):\n{text}", out.status))?;
    let log = std::fs::read_to_string(&log).context("h2load --log-file")?;
    (load.p50_us, load.p99_us) = percentiles(&log);
    Ok(Run { load, client_cpu_s })
}

pub fn run(seconds: u64, agent_args: &[String], agent_env: &[String]) -> anyhow::Result<()> {
    let nginx = start_nginx(true)?;
    let setup = Setup::new(
        nginx.pid(),
        Spans {
            metric: "http_server_request_duration_seconds_count",
            filter: "url_scheme=\"https\"".into(),
        },
        Spans {
            metric: "http_client_request_duration_seconds_count",
            filter: format!("server_port=\"{}\"", nginx.port),
        },
        agent_args,
        agent_env,
    )?;
    let dir = std::env::temp_dir().join(format!("agent-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("https://127.0.0.1:{}/", nginx.port);
    println!(
        "HTTPS/1.1 on loopback, h2load --h1 -> nginx ssl (both on the host's libssl), agent off \
         then on, same run; agent: {}",
        setup.agent_settings()
    );
    h2load(&url, &dir, 1)?; // warm-up
    let variants = [Variant::OFF, Variant::on("on", &[])];
    let mut columns = Vec::new();
    for v in &variants {
        columns.push((v, measure(&setup, v, || h2load(&url, &dir, seconds))?));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (off, on) = (&columns[0].1, &columns[1].1);
    println!();
    println!(
        "fixed rate: h2load --h1 --clients {CONNECTIONS} --rps {} --duration {seconds} GET /",
        RATE / CONNECTIONS
    );
    let requests = |m: &Measured<Run>| m.load.load.succeeded as f64;
    let mut t = RunTable::new(&columns);
    t.load_rows(0, &[("achieved req/s", |r| r.load.per_second)]);
    t.row(
        "succeeded / started",
        |m| format!("{}/{}", m.load.load.succeeded, m.load.load.started),
        String::new(),
    );
    t.load_rows(
        1,
        &[
            ("p50 latency (µs)", |r| r.load.p50_us),
            ("p99 latency (µs)", |r| r.load.p99_us),
        ],
    );
    let server_us = |m: &Measured<Run>| m.server_cpu_s / requests(m) * 1e6;
    let client_us = |m: &Measured<Run>| m.load.client_cpu_s / requests(m) * 1e6;
    t.row(
        "nginx CPU µs/request",
        |m| num(server_us(m), 2),
        ratio(server_us(on), server_us(off)),
    );
    t.row(
        "h2load CPU µs/request",
        |m| num(client_us(m), 2),
        ratio(client_us(on), client_us(off)),
    );
    t.row(
        "agent CPU ms/10k requests",
        |m| agent_cell(m, |a| num(a.cpu_s / requests(m) * 1e7, 1)),
        String::new(),
    );
    t.agent_rows("request", |r| r.load.succeeded);
    t.print();
    let added = |f: &dyn Fn(&Measured<Run>) -> f64| f(on) - f(off);
    println!(
        "CPU added per HTTPS request: nginx {:+.2} µs, h2load {:+.2} µs",
        added(&server_us),
        added(&client_us)
    );
    let exact = spans_verdict(
        on.agent.as_ref(),
        "requests (server and client, https)",
        |spans| spans_match(spans, &on.load.load),
    );
    println!("drops and losses during each run:");
    print_losses(&columns);
    bench_report::write_json(
        "tls",
        json!({
            "seconds": seconds,
            "rate": RATE,
            "connections": CONNECTIONS,
            "agent_args": agent_args,
            "agent_env": setup.agent_env(),
            "spans_equal_requests": exact.map(|e| e.0),
            "no_drops": exact.map(|e| e.1),
            "runs": columns.iter().map(|(v, m)| json!({
                "agent": v.name,
                "requests_per_second": j(m.load.load.per_second),
                "succeeded": m.load.load.succeeded,
                "p50_us": j(m.load.load.p50_us),
                "p99_us": j(m.load.load.p99_us),
                "server_cpu_us_per_request": j(server_us(m)),
                "client_cpu_us_per_request": j(client_us(m)),
                "agent_figures": m.agent.as_ref().map(|a| a.json(m.seconds, requests(m))),
            })).collect::<Vec<_>>(),
        }),
    )?;
    Ok(())
}
