//! The `agent` binary as an operator runs it: `--check`, `--events` JSON lines,
//! JSON logs, and a clean SIGTERM shutdown. Needs root; skips with a message
//! otherwise.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

const AGENT: &str = env!("CARGO_BIN_EXE_agent");

/// The agent binary with profiling off: profiling has its own tests (and one
/// below); elsewhere it would write `./agent-profiles` and add its final
/// flush to the stop time these tests measure.
fn agent() -> Command {
    let mut cmd = Command::new(AGENT);
    cmd.env("AGENT_PROFILING", "off");
    cmd
}

fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    // Straight to stderr, past libtest's capture: `cargo xtask test` counts these.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("SKIPPED {test}: needs root (loads eBPF programs)\n").as_bytes(),
    );
    false
}

/// Lines of a child's pipe, readable with a deadline.
fn lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line matching `pred`; panics with what was seen at the deadline.
fn wait_line(rx: &mpsc::Receiver<String>, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line with {what}; saw:\n{}", seen.join("\n"));
}

/// The agent with `--events` on one port and JSON logs, `env` set, and its
/// stdout and stderr lines.
fn events_agent(
    port: u16,
    env: &[(&str, &str)],
) -> (Child, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    let mut cmd = agent();
    cmd.args([
        "--events",
        "--log-format",
        "json",
        "--port",
        &port.to_string(),
    ])
    .envs(env.iter().copied())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn agent");
    let stdout = lines(child.stdout.take().expect("stdout"));
    let stderr = lines(child.stderr.take().expect("stderr"));
    (child, stdout, stderr)
}

fn terminate(child: &mut Child) -> (std::process::ExitStatus, Duration) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return (status, start.elapsed());
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "agent did not exit"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn check_reports_every_capability_and_says_it_can_run() {
    if !privileged("check_reports_every_capability_and_says_it_can_run") {
        return;
    }
    let out = agent().arg("--check").output().expect("run agent --check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for name in [
        "tracefs",
        "bpffs",
        "btf",
        "syscall tracepoints",
        "ring buffer",
        "uprobes",
        "perf events",
        "kprobes",
        "fentry",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "no {name} line in:\n{text}"
        );
    }
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("syscall tracepoints").contains(" ok "), "{text}");
    assert!(line("ring buffer").contains(" ok "), "{text}");
    // The path is found by loading it: on this kernel, the fast one.
    assert!(
        line("capture path").contains(" ok ")
            && line("capture path").contains("fast: tp_btf sys_exit"),
        "{text}"
    );
    assert!(text.contains("agent can run"));
}

/// `GET path` on `addr`: the status code and the body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn health_and_readiness_probes() {
    if !privileged("health_and_readiness_probes") {
        return;
    }
    let mut child = agent()
        .args(["--log-format", "json", "--prometheus-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let stderr = lines(child.stderr.take().expect("stderr"));
    let line = wait_line(&stderr, "the metrics address", |l| {
        l.contains("Prometheus metrics at http://")
    });
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("address in the log line")
        .to_string();
    wait_line(&stderr, "capturing", |l| l.contains("capturing socket I/O"));
    assert_eq!(http_get(&addr, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(http_get(&addr, "/readyz"), (200, "ready\n".to_string()));
    assert_eq!(http_get(&addr, "/metrics").0, 200);
    let (status, _) = terminate(&mut child);
    assert!(status.success());
}

#[test]
fn fallback_path_is_taken_when_the_fast_one_is_unavailable() {
    let test = "fallback_path_is_taken_when_the_fast_one_is_unavailable";
    if !privileged(test) {
        return;
    }
    let check_line = |refused: &str| {
        let out = agent()
            .arg("--check")
            .env("AGENT_CAPTURE_PATH", "auto")
            .env("AGENT_FAIL_ATTACH", refused)
            .output()
            .expect("run agent --check");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{text}");
        text.lines()
            .find(|l| l.starts_with("capture path"))
            .unwrap_or_default()
            .to_string()
    };
    // tp_btf refused (its dispatcher, or one of its handlers): the raw
    // tracepoint build of the fast path runs, and says why.
    for refused in ["sys_exit_btf", "btf_exit_write"] {
        let line = check_line(refused);
        assert!(
            line.contains(" ok ")
                && line.contains("fast: raw_tracepoint sys_exit")
                && line.contains(&format!("tp_btf unavailable: tp_btf: {refused}: refused")),
            "{line}"
        );
    }
    // Both builds refused: the tracepoints run, and the report says why.
    for refused in ["sys_exit_btf,sys_exit", "btf_exit_write,exit_write"] {
        let line = check_line(refused);
        assert!(
            line.contains(" ok ")
                && line.contains("tracepoints: syscalls:sys_enter_*/sys_exit_* pairs")
                && line.contains("fast path unavailable: tp_btf: "),
            "{line}"
        );
    }
    // Asked for explicitly, the fast path fails loudly instead.
    let out = agent()
        .arg("--check")
        .env("AGENT_CAPTURE_PATH", "fast")
        .env("AGENT_FAIL_ATTACH", "sys_exit_btf,sys_exit")
        .output()
        .expect("run agent --check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("capture path") && text.contains("MISSING"),
        "{text}"
    );

    // And the fallback captures: a request on a fresh port becomes events.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (mut child, stdout, stderr) = events_agent(
        port,
        &[
            ("AGENT_CAPTURE_PATH", "auto"),
            ("AGENT_FAIL_ATTACH", "sys_exit_btf,sys_exit"),
        ],
    );
    let ready = wait_line(&stderr, "capturing", |l| l.contains("capturing socket I/O"));
    assert!(ready.contains("tracepoints: syscalls"), "{ready}");
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(b"fallback ping").expect("write");
    let mut buf = [0u8; 13];
    std::io::Read::read_exact(&mut server, &mut buf).expect("read");
    wait_line(&stdout, "the written payload", |l| {
        l.contains(r#""kind":"data""#)
            && l.contains("fallback ping")
            && l.contains(r#""direction":"egress""#)
    });
    let (status, _) = terminate(&mut child);
    assert!(status.success());
}

#[test]
fn events_as_json_lines_then_clean_exit_on_sigterm() {
    if !privileged("events_as_json_lines_then_clean_exit_on_sigterm") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (mut child, stdout, stderr) = events_agent(port, &[]);

    // Logs are JSON lines with timestamp, level and target.
    let ready = wait_line(&stderr, "capturing", |l| l.contains("capturing socket I/O"));
    let log: serde_json::Value = serde_json::from_str(&ready).expect("JSON log line");
    for key in ["timestamp", "level", "target"] {
        assert!(log.get(key).is_some(), "{key} missing in {ready}");
    }

    // This test process is not the agent, so its traffic is observed.
    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(b"hello-cli\r\n").expect("write");
    let mut buf = [0u8; 11];
    server.read_exact(&mut buf).expect("read");

    let me = std::process::id();
    let sent = wait_line(&stdout, "the client's data event", |l| {
        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
            v["pid"] == me
                && v["kind"] == "data"
                && v["direction"] == "egress"
                && v["payload"] == "hello-cli\\r\\n"
        })
    });
    let v: serde_json::Value = serde_json::from_str(&sent).expect("json");
    assert_eq!(v["peer"], format!("127.0.0.1:{port}"));
    assert_eq!(v["role"], "client");
    assert_eq!(v["bytes"], 11);

    let (status, took) = terminate(&mut child);
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(2), "took {took:?} to stop");
    wait_line(&stderr, "the final self-metrics", |l| l.contains("stopped"));
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let out = agent()
        .args(["--capture-bytes", "999999"])
        .output()
        .expect("run agent");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("capture_bytes must be between"));

    let dir = std::env::temp_dir().join(format!("agent-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("agent.toml");
    std::fs::write(&file, "capture_bytes = 1024\nunknown_key = true\n").expect("write");
    let out = agent()
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run agent");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_key"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `script` in a private mount namespace (so unmounting there leaves the host alone).
fn in_private_mount_ns(script: &str) -> std::process::Output {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .output()
        .expect("unshare (util-linux)")
}

#[test]
fn mounts_tracefs_when_it_is_not_mounted() {
    if !privileged("mounts_tracefs_when_it_is_not_mounted") {
        return;
    }
    let out = in_private_mount_ns(&format!(
        "umount /sys/kernel/tracing 2>/dev/null; test -d /sys/kernel/tracing/events && exit 3; exec {AGENT} --check"
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_ne!(
        out.status.code(),
        Some(3),
        "could not unmount tracefs for the test"
    );
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("tracefs"))
        .unwrap_or_default();
    assert!(line.contains("mounted by the agent"), "{text}");
}

#[test]
fn says_what_to_mount_when_tracefs_cannot_be_mounted() {
    if !privileged("says_what_to_mount_when_tracefs_cannot_be_mounted") {
        return;
    }
    // An empty tmpfs over /sys/kernel: no tracefs and no mount point for it.
    let out = in_private_mount_ns(&format!(
        "umount /sys/kernel/tracing 2>/dev/null; mount -t tmpfs tmpfs /sys/kernel || exit 3; exec {AGENT} --check"
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("tracefs"))
        .unwrap_or_default();
    assert!(line.contains("MISSING (required)"), "{text}");
    assert!(
        line.contains("mount -t tracefs tracefs /sys/kernel/tracing"),
        "{text}"
    );
    assert!(text.contains("agent cannot run"));
}

/// One request an OTLP/HTTP receiver got: path, headers, gunzipped body.
type Received = (String, Vec<(String, String)>, Vec<u8>);

/// A minimal OTLP/HTTP receiver.
fn otlp_http_receiver() -> (u16, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request_line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_string();
                    let mut headers = Vec::new();
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).expect("header");
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                        }
                    }
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    reader.read_exact(&mut body).expect("body");
                    if headers
                        .iter()
                        .any(|(k, v)| k == "content-encoding" && v == "gzip")
                    {
                        let mut plain = Vec::new();
                        flate2::read::GzDecoder::new(&body[..])
                            .read_to_end(&mut plain)
                            .expect("gunzip");
                        body = plain;
                    }
                    let _ = tx.send((path, headers, body));
                    let stream = reader.get_mut();
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n");
                }
            });
        }
    });
    (port, rx)
}

#[test]
fn otlp_is_configured_by_the_standard_environment_variables() {
    use prost::Message as _;
    if !privileged("otlp_is_configured_by_the_standard_environment_variables") {
        return;
    }
    let (otlp_port, received) = otlp_http_receiver();
    // A tiny HTTP server in this process (which is not the agent: it is traced).
    let app = TcpListener::bind("127.0.0.1:0").expect("bind");
    let app_port = app.local_addr().expect("addr").port();
    let mut child = agent()
        .args([
            "--log-format",
            "json",
            "--prometheus-listen",
            "off",
            "--port",
            &app_port.to_string(),
        ])
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{otlp_port}"),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=team-a")
        .env("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "2000")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRICS_EXPORTER", "none")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let stdout = lines(child.stdout.take().expect("stdout"));
    let stderr = lines(child.stderr.take().expect("stderr"));
    wait_line(&stderr, "capturing", |l| l.contains("capturing socket I/O"));

    let server = thread::spawn(move || {
        let (mut conn, _) = app.accept().expect("accept");
        let mut buf = [0u8; 1024];
        let n = conn.read(&mut buf).expect("read");
        assert!(buf[..n].starts_with(b"GET /cli/7 HTTP/1.1"));
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .expect("write");
    });
    let mut client = TcpStream::connect(("127.0.0.1", app_port)).expect("connect");
    client
        .write_all(b"GET /cli/7 HTTP/1.1\r\nHost: app\r\n\r\n")
        .expect("request");
    let mut response = [0u8; 64];
    let _ = client.read(&mut response).expect("response");
    server.join().expect("server");

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut names = Vec::new();
    while names.len() < 2 && Instant::now() < deadline {
        let Ok((path, headers, body)) = received.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        assert_eq!(path, "/v1/traces");
        assert!(
            headers.contains(&("x-tenant".into(), "team-a".into())),
            "{headers:?}"
        );
        assert!(
            headers.contains(&("content-encoding".into(), "gzip".into())),
            "{headers:?}"
        );
        let request =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                &body[..],
            )
            .expect("protobuf");
        for rs in &request.resource_spans {
            let resource = rs.resource.as_ref().expect("resource");
            assert!(
                resource
                    .attributes
                    .iter()
                    .any(|a| a.key == "deployment.environment")
            );
            names.extend(
                rs.scope_spans
                    .iter()
                    .flat_map(|s| s.spans.iter().map(|s| s.name.clone())),
            );
        }
    }
    names.sort();
    assert_eq!(
        names,
        ["GET /cli/{id}", "GET /cli/{id}"],
        "server and client span"
    );
    // With an OTLP traces endpoint, stdout carries no spans by default.
    assert!(stdout.try_recv().is_err());
    let (status, took) = terminate(&mut child);
    assert!(status.success());
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn profiles_of_the_last_interval_are_written_on_sigterm() {
    if !privileged("profiles_of_the_last_interval_are_written_on_sigterm") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("agent-cli-profiles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(AGENT)
        .args([
            "--log-format",
            "json",
            "--prometheus-listen",
            "off",
            "--stdout",
            "off",
        ])
        .args(["--profile-frequency", "99", "--profile-interval", "10m"])
        .arg("--profiles-dir")
        .arg(&dir)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agent");
    let stderr = lines(child.stderr.take().expect("stderr"));
    wait_line(&stderr, "profiling on", |l| l.contains("CPU profiling on"));
    // Something to sample: this test's own thread, busy for a moment.
    let until = Instant::now() + Duration::from_millis(700);
    let mut x = 0u64;
    while Instant::now() < until {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
    let (status, took) = terminate(&mut child);
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");
    let written: Vec<String> = std::fs::read_dir(&dir)
        .expect("profiles dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(
        written.iter().any(|f| f.ends_with(".pb.gz"))
            && written.iter().any(|f| f.ends_with(".svg")),
        "files: {written:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
