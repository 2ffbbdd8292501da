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

fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root (loads eBPF programs)");
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
    let out = Command::new(AGENT)
        .arg("--check")
        .output()
        .expect("run agent --check");
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
    assert!(text.contains("agent can run"));
}

#[test]
fn events_as_json_lines_then_clean_exit_on_sigterm() {
    if !privileged("events_as_json_lines_then_clean_exit_on_sigterm") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut child = Command::new(AGENT)
        .args([
            "--events",
            "--log-format",
            "json",
            "--port",
            &port.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let stdout = lines(child.stdout.take().expect("stdout"));
    let stderr = lines(child.stderr.take().expect("stderr"));

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
    let out = Command::new(AGENT)
        .args(["--capture-bytes", "999999"])
        .output()
        .expect("run agent");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("capture_bytes must be between"));

    let dir = std::env::temp_dir().join(format!("agent-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("agent.toml");
    std::fs::write(&file, "capture_bytes = 1024\nunknown_key = true\n").expect("write");
    let out = Command::new(AGENT)
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
