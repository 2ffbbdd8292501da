//! Harness for the privileged end-to-end tests: starts a real agent (the library,
//! with the real kernel programs), runs real peers, and waits for the events they
//! must produce — with a deadline, never a fixed sleep.

pub mod fake_pod;
pub mod http_receiver;
pub mod kube_api;
pub mod otlp_receiver;
pub mod peers;
pub mod profile_receivers;
pub mod profiling;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdout, Command, Stdio},
    time::Duration,
};

use agent::{AgentHandle, Observed, Settings, Taps, spans::Span};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Payloads the traffic helper sends, known to the tests.
pub mod payloads {
    pub const REQUEST: &[u8] = b"GET /e2e/request HTTP/1.1\r\nHost: test\r\n\r\n";
    pub const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    pub const MSG_PARTS: &[&[u8]] = &[b"part-one|", b"part-two|", b"part-three"];
    pub const DATAGRAMS: &[&[u8]] = &[b"datagram-one", b"datagram-two", b"datagram-three"];
    pub const BIG_LEN: usize = 100 * 1024;
    /// Writes of the `opaque` scenario (512 bytes each).
    pub const OPAQUE_WRITES: usize = 64;

    /// 100 KiB that differ at every position mod 251 (a prime), so a misplaced
    /// chunk cannot match.
    pub fn big() -> Vec<u8> {
        (0..BIG_LEN).map(|i| (i % 251) as u8).collect()
    }
}

/// What the traffic helper prints when done.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Report {
    pub client_fd: i32,
    pub server_fd: i32,
    pub client_port: u16,
    pub server_port: u16,
}

/// True when running as root; otherwise prints why the test is skipped.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    // Straight to stderr, past libtest's capture: `cargo xtask test` counts these.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "SKIPPED {test}: needs root (loads eBPF programs); run `sudo -E cargo xtask test`\n"
        )
        .as_bytes(),
    );
    false
}

/// A running agent and the events and spans it reports.
pub struct Running {
    pub handle: AgentHandle,
    rx: mpsc::Receiver<Observed>,
    seen: Vec<Observed>,
    spans_rx: mpsc::Receiver<Span>,
    spans: Vec<Span>,
}

const TAP_CAPACITY: usize = 1 << 16;

impl Running {
    pub async fn start(settings: Settings) -> anyhow::Result<Running> {
        let (tx, rx) = mpsc::channel(TAP_CAPACITY);
        let (spans_tx, spans_rx) = mpsc::channel(TAP_CAPACITY);
        let taps = Taps {
            events: Some(tx),
            spans: Some(spans_tx),
        };
        let handle = agent::start(&settings, taps).await?;
        anyhow::ensure!(
            handle.capture_path.path == settings.capture_path,
            "asked for the {:?} capture path, runs {}",
            settings.capture_path,
            handle.capture_path
        );
        // Every program must load and attach: a gap here is a test failure.
        for result in &handle.attached {
            anyhow::ensure!(
                result.error.is_none(),
                "{} did not attach: {:?}",
                result.attachment.program,
                result.error
            );
        }
        Ok(Running {
            handle,
            rx,
            seen: Vec::new(),
            spans_rx,
            spans: Vec::new(),
        })
    }

    /// Gathers spans of processes `pids` until `done` holds for them or the
    /// deadline passes; returns them either way.
    pub async fn spans_until(
        &mut self,
        pids: &[u32],
        deadline: Duration,
        done: impl Fn(&[Span]) -> bool,
    ) -> Vec<Span> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let mine: Vec<Span> = self
                .spans
                .iter()
                .filter(|s| pids.contains(&s.resource.pid))
                .cloned()
                .collect();
            if done(&mine) {
                return mine;
            }
            match tokio::time::timeout_at(until, self.spans_rx.recv()).await {
                Ok(Some(span)) => self.spans.push(span),
                Ok(None) | Err(_) => return mine,
            }
        }
    }

    /// Gathers the events of process `pid` until `done` holds for them or the
    /// deadline passes; returns them either way (assertions say what is missing).
    pub async fn collect_until(
        &mut self,
        pid: u32,
        deadline: Duration,
        done: impl Fn(&[Observed]) -> bool,
    ) -> Vec<Observed> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let mine: Vec<Observed> = self.seen.iter().filter(|o| o.pid == pid).cloned().collect();
            if done(&mine) {
                return mine;
            }
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Some(observed)) => self.seen.push(observed),
                Ok(None) | Err(_) => return mine,
            }
        }
    }
}

/// A running traffic helper.
pub struct Traffic {
    pub child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Traffic {
    /// Starts `traffic SCENARIO` (`exe` is `env!("CARGO_BIN_EXE_traffic")`); with
    /// `wait`, returns once its connection is up and it waits for [`Traffic::go`].
    pub fn spawn(exe: &str, scenario: &str, wait: bool) -> anyhow::Result<Traffic> {
        let mut cmd = Command::new(exe);
        cmd.arg(scenario)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if wait {
            cmd.arg("--wait");
        }
        let mut child = cmd.spawn()?;
        let stdout = BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
        );
        let mut traffic = Traffic { child, stdout };
        if wait {
            let line = traffic.line()?;
            anyhow::ensure!(line == "ready", "helper said {line:?}");
        }
        Ok(traffic)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `traffic SCENARIO` to its end off the async runtime; its pid and
    /// report.
    pub async fn run(exe: &str, scenario: &str) -> (u32, Report) {
        let traffic = Traffic::spawn(exe, scenario, false).expect("helper starts");
        let pid = traffic.pid();
        let report = tokio::task::spawn_blocking(move || traffic.finish())
            .await
            .expect("join")
            .expect("helper succeeds");
        (pid, report)
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        Ok(line.trim().to_string())
    }

    /// Lets a `--wait` helper move its data.
    pub fn go(&mut self) -> anyhow::Result<()> {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for the helper to finish and returns its report.
    pub fn finish(mut self) -> anyhow::Result<Report> {
        let line = self.line()?;
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "traffic helper failed: {status}");
        Ok(serde_json::from_str(&line)?)
    }
}

/// Settings for tests: defaults, everything captured (tests pick their helper's
/// events by pid, so the helper can start after the agent).
pub fn settings() -> Settings {
    Settings {
        log: "warn".into(),
        // Tests run in parallel: each agent picks a free port.
        prometheus_listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        // Profiling has tests of its own (`profiling.rs`); elsewhere it would
        // only write files.
        profiling: agent::config::ProfilingSettings {
            enabled: false,
            ..Default::default()
        },
        capture_path: capture_path(),
        ..Settings::default()
    }
}

/// The kernel path the tests run on: `AGENT_CAPTURE_PATH=tracepoints` for the
/// fallback (`cargo xtask test` runs the capture tests on both), else the fast
/// path, required, so that a silent fallback fails the tests.
pub fn capture_path() -> agent::config::CapturePath {
    match std::env::var("AGENT_CAPTURE_PATH").as_deref() {
        Ok("tracepoints") => agent::config::CapturePath::Tracepoints,
        _ => agent::config::CapturePath::Fast,
    }
}

/// [`settings`] looking only at connections to or from `ports`: tests run in
/// parallel, and every agent sees the whole host.
pub fn settings_for_ports(ports: &[u16]) -> Settings {
    Settings {
        ports: ports.to_vec(),
        ..settings()
    }
}

/// `GET /metrics` from an agent's Prometheus endpoint (an agent running in this
/// process does not trace its own scrape).
pub fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4")
    );
    body.to_string()
}

/// The first line of the agent's `/metrics` that starts with `prefix`, waited
/// for until its value is not 0.
pub async fn metric_line(agent: &Running, prefix: &str) -> String {
    let addr = agent.handle.prometheus.expect("Prometheus endpoint");
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let metrics = tokio::task::spawn_blocking(move || scrape(addr))
            .await
            .expect("scrape");
        if let Some(line) = metrics
            .lines()
            .find(|l| l.starts_with(prefix) && !l.ends_with(" 0"))
        {
            return line.to_string();
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no {prefix}:\n{metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
