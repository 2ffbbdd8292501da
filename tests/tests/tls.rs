//! HTTPS seen in plaintext through uprobes on OpenSSL: real clients (curl,
//! Python's `ssl`) and a real server (nginx `listen … ssl`) on loopback, with
//! a self-signed certificate made by the test.

use std::time::Duration;

use agent::spans::{Span, SpanKind, Value};
use e2e::{Running, peers, privileged, settings_for_ports};

const DEADLINE: Duration = Duration::from_secs(20);

fn text(span: &Span, key: &str) -> Option<String> {
    match span.attribute(key)? {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::StrArray(a) => Some(a.join(",")),
    }
}

/// nginx over HTTPS and an agent watching it that has probed the host's
/// OpenSSL; `None` (SKIPPED) when not root.
async fn https_setup(test: &str) -> Option<(peers::Server, Running)> {
    if !privileged(test) {
        return None;
    }
    let nginx = peers::Server::tls_nginx();
    let agent = Running::start(settings_for_ports(&[nginx.port]))
        .await
        .expect("agent starts");
    tls_ready(&agent).await;
    Some((nginx, agent))
}

/// Waits until the agent has probed the host's OpenSSL (it does so at start).
async fn tls_ready(agent: &Running) {
    let addr = agent.handle.prometheus.expect("Prometheus endpoint");
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let metrics = tokio::task::spawn_blocking(move || e2e::scrape(addr))
            .await
            .expect("scrape");
        let attached = metrics
            .lines()
            .find_map(|l| l.strip_prefix("agent_tls_libraries "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if attached > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no OpenSSL probed:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_to_nginx_over_https_in_plaintext() {
    let Some((nginx, mut agent)) = https_setup("curl_to_nginx_over_https_in_plaintext").await
    else {
        return;
    };
    let base = format!("https://127.0.0.1:{}", nginx.port);
    // One keep-alive connection, four requests, one response over 16 KiB.
    let paths = ["/users/1", "/big", "/status/503", "/users/2"];
    let curl = peers::curl_tls(&base, "--http1.1", &paths).await;
    let spans = agent
        .spans_until(&[curl, nginx.pid()], DEADLINE, |s| s.len() >= 8)
        .await;
    let of = |pid: u32, kind: SpanKind| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| s.resource.pid == pid && s.kind == kind)
            .collect()
    };
    let (clients, servers) = (
        of(curl, SpanKind::Client),
        of(nginx.pid(), SpanKind::Server),
    );
    let metrics = e2e::scrape(agent.handle.prometheus.expect("Prometheus endpoint"));
    let tls_lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("tls") && !l.starts_with('#'))
        .collect();
    assert_eq!(clients.len(), 4, "curl's spans: {spans:#?}\n{tls_lines:#?}");
    assert_eq!(servers.len(), 4, "nginx's spans: {spans:#?}");
    for (span, (path, status)) in servers.iter().zip([
        ("/users/1", "200"),
        ("/big", "200"),
        ("/status/503", "503"),
        ("/users/2", "200"),
    ]) {
        assert_eq!(text(span, "url.scheme").as_deref(), Some("https"));
        assert_eq!(text(span, "url.path").as_deref(), Some(path));
        assert_eq!(text(span, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(
            text(span, "http.response.status_code").as_deref(),
            Some(status)
        );
        assert!(span.end_time_unix_nano > span.start_time_unix_nano);
    }
    let big = servers[1];
    assert_eq!(
        text(big, "http.response.body.size").as_deref(),
        Some("40960")
    );
    for span in &clients {
        assert_eq!(text(span, "url.scheme").as_deref(), Some("https"));
        let full = text(span, "url.full").unwrap_or_default();
        assert!(full.starts_with("https://127.0.0.1:"), "{full}");
    }
    assert_eq!(
        text(clients[2], "http.response.status_code").as_deref(),
        Some("503")
    );
    // The ciphertext was never parsed as HTTP.
    let snapshot = agent.handle.snapshot();
    assert!(snapshot.kernel_loss(agent_common::Loss::TlsCiphertext) > 0);
    assert_eq!(snapshot.kernel_loss(agent_common::Loss::TlsNoSocket), 0);
    assert!(
        snapshot.tls_records >= 8,
        "calls seen: {}",
        snapshot.tls_records
    );
    agent.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_imports_ssl_late_and_is_seen() {
    let Some((nginx, mut agent)) = https_setup("python_imports_ssl_late_and_is_seen").await else {
        return;
    };
    // Started after the agent; `ssl` (and libssl) loaded only after a
    // plain-TCP connection was made.
    let python = peers::python(format!(
        r#"
import socket, time
socket.create_connection(("127.0.0.1", {port})).close()
time.sleep(0.5)
import ssl, http.client
ctx = ssl._create_unverified_context()
c = http.client.HTTPSConnection("127.0.0.1", {port}, context=ctx)
for p in ("/a", "/b", "/big"):
    c.request("GET", p); c.getresponse().read()
"#,
        port = nginx.port
    ))
    .await;
    let spans = agent
        .spans_until(&[python], DEADLINE, |s| s.len() >= 3)
        .await;
    let paths: Vec<String> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client)
        .filter_map(|s| text(s, "url.full"))
        .collect();
    assert_eq!(paths.len(), 3, "{spans:#?}");
    for (full, path) in paths.iter().zip(["/a", "/b", "/big"]) {
        assert_eq!(full, &format!("https://127.0.0.1:{}{path}", nginx.port));
    }
    agent.handle.stop().await;
}

/// Builds `peers/tls_client.c` (dynamically, or statically from
/// `libssl-dev`'s archives) into `dir`.
fn build_tls_client(dir: &std::path::Path, static_link: bool) -> std::path::PathBuf {
    let out = dir.join(if static_link {
        "tls_client_static"
    } else {
        "tls_client"
    });
    let mut cc = std::process::Command::new("cc");
    cc.args(["-O1", "-o"]).arg(&out);
    cc.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/peers/tls_client.c"));
    if static_link {
        cc.arg("-static");
    }
    let built = cc
        .args(["-lssl", "-lcrypto"])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("cc (gcc, libssl-dev)");
    assert!(built.success(), "building {}", out.display());
    out
}

/// Runs the C client to completion: its pid and the `status length` lines it printed.
async fn run_client(program: std::path::PathBuf, args: Vec<String>) -> (u32, Vec<String>) {
    tokio::task::spawn_blocking(move || {
        let child = std::process::Command::new(&program)
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("tls_client");
        let pid = child.id();
        let out = child.wait_with_output().expect("tls_client output");
        assert!(
            out.status.success(),
            "{} {args:?}: {}",
            program.display(),
            out.status
        );
        let lines = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        (pid, lines)
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seccomp_filtered_client_survives_and_a_static_one_is_seen() {
    if !privileged("a_seccomp_filtered_client_survives_and_a_static_one_is_seen") {
        return;
    }
    let dir = e2e::profiling::temp_dir("tls-clients");
    let dynamic = build_tls_client(&dir, false);
    let static_client = build_tls_client(&dir, true);
    let nginx = peers::Server::tls_nginx();
    let mut agent = Running::start(settings_for_ports(&[nginx.port]))
        .await
        .expect("agent starts");
    tls_ready(&agent).await;
    let port = nginx.port.to_string();

    // A filter that kills on the uretprobe syscall: a uretprobe would kill it.
    let args = ["--seccomp", &port, "/users/1", "/big", "/users/2"]
        .map(String::from)
        .to_vec();
    let (pid, lines) = run_client(dynamic, args).await;
    assert_eq!(
        lines,
        ["200 3", "200 40960", "200 3"],
        "the client got its answers"
    );
    let spans = agent.spans_until(&[pid], DEADLINE, |s| s.len() >= 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    assert!(
        spans
            .iter()
            .all(|s| text(s, "url.scheme").as_deref() == Some("https"))
    );

    // Its own OpenSSL, linked in: probed once the agent saw its TLS records.
    let args = ["--pause", "1000", &port, "/a", "/status/503"]
        .map(String::from)
        .to_vec();
    let (pid, lines) = run_client(static_client, args).await;
    assert_eq!(lines, ["200 3", "503 12"]);
    let spans = agent.spans_until(&[pid], DEADLINE, |s| s.len() >= 2).await;
    let statuses: Vec<Option<String>> = spans
        .iter()
        .map(|s| text(s, "http.response.status_code"))
        .collect();
    assert_eq!(
        statuses,
        [Some("200".into()), Some("503".into())],
        "{spans:#?}"
    );
    agent.handle.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_https_is_counted_as_not_visible_never_parsed() {
    let test = "node_https_is_counted_as_not_visible_never_parsed";
    if !privileged(test) {
        return;
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED {test}: node not installed");
        return;
    }
    let nginx = peers::Server::tls_nginx();
    let mut agent = Running::start(settings_for_ports(&[nginx.port]))
        .await
        .expect("agent starts");
    tls_ready(&agent).await;
    // Ten requests on one keep-alive connection: more records than a handshake.
    let script = format!(
        "const https = require('https'); \
         const agent = new https.Agent({{ keepAlive: true, maxSockets: 1 }}); \
         let n = 0; \
         const go = () => https.get({{ host: '127.0.0.1', port: {port}, path: '/n' + n, \
             rejectUnauthorized: false, agent }}, (r) => {{ r.resume(); \
             r.on('end', () => {{ if (++n < 10) go(); else process.exit(0); }}); }}); \
         go();",
        port = nginx.port
    );
    let node = tokio::task::spawn_blocking(move || {
        let child = std::process::Command::new("node")
            .args(["-e", &script])
            .spawn()
            .expect("node");
        let pid = child.id();
        let out = child.wait_with_output().expect("node output");
        assert!(out.status.success(), "node: {}", out.status);
        pid
    })
    .await
    .expect("join");
    let addr = agent.handle.prometheus.expect("Prometheus endpoint");
    let until = tokio::time::Instant::now() + DEADLINE;
    let counted = loop {
        let metrics = tokio::task::spawn_blocking(move || e2e::scrape(addr))
            .await
            .expect("scrape");
        if let Some(line) = metrics
            .lines()
            .find(|l| l.starts_with("agent_tls_not_visible_connections_total{executable=\"node\"}"))
        {
            break line.to_string();
        }
        assert!(
            tokio::time::Instant::now() < until,
            "node not counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(counted.ends_with(" 1"), "{counted}");
    // nginx answered through OpenSSL (server spans), node's side has none.
    let spans = agent
        .spans_until(&[node, nginx.pid()], Duration::from_secs(3), |s| {
            s.len() >= 10
        })
        .await;
    assert!(
        spans.iter().all(|s| s.resource.pid != node),
        "no span from ciphertext: {spans:#?}"
    );
    assert_eq!(spans.len(), 10, "nginx's own side is plaintext: {spans:#?}");
    agent.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_is_parsed_as_http2() {
    let test = "http2_over_tls_is_parsed_as_http2";
    if !privileged(test) {
        return;
    }
    let nginx = peers::Server::tls_h2_nginx();
    let mut agent = Running::start(settings_for_ports(&[nginx.port]))
        .await
        .expect("agent starts");
    tls_ready(&agent).await;
    let base = format!("https://127.0.0.1:{}", nginx.port);
    // ALPN h2; three streams on one connection.
    let curl = peers::curl_tls(&base, "--http2", &["/h2/a", "/big", "/status/503"]).await;
    let spans = agent
        .spans_until(&[nginx.pid(), curl], DEADLINE, |s| s.len() >= 6)
        .await;
    let servers: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .collect();
    assert_eq!(servers.len(), 3, "{spans:#?}");
    for (span, status) in servers.iter().zip(["200", "200", "503"]) {
        assert_eq!(text(span, "network.protocol.version").as_deref(), Some("2"));
        assert_eq!(text(span, "url.scheme").as_deref(), Some("https"));
        assert_eq!(
            text(span, "http.response.status_code").as_deref(),
            Some(status)
        );
    }
    agent.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_typed_through_openssl_s_client_and_s_server() {
    use std::io::{BufRead as _, Read as _, Write as _};
    let test = "an_exchange_typed_through_openssl_s_client_and_s_server";
    if !privileged(test) {
        return;
    }
    let dir = e2e::profiling::temp_dir("tls-s-server");
    peers::self_signed_certificate(&dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut agent = Running::start(settings_for_ports(&[port]))
        .await
        .expect("agent starts");
    tls_ready(&agent).await;
    let piped = std::process::Stdio::piped;
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-accept", &port.to_string(), "-cert"])
        .arg(dir.join("cert.pem"))
        .arg("-key")
        .arg(dir.join("key.pem"))
        .stdin(piped())
        .stdout(piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let deadline = std::time::Instant::now() + DEADLINE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "s_server did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // That probe connection made s_server print nothing; the real one follows.
    let mut client = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(piped())
        .stdout(piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let (server_pid, client_pid) = (server.id(), client.id());
    let exchange = tokio::task::spawn_blocking(move || {
        let mut to_server = server.stdin.take().expect("stdin");
        let mut from_server = std::io::BufReader::new(server.stdout.take().expect("stdout"));
        let mut to_client = client.stdin.take().expect("stdin");
        let mut from_client = client.stdout.take().expect("stdout");
        to_client
            .write_all(b"GET /typed HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("request");
        let mut line = String::new();
        while !line.starts_with("Host:") {
            line.clear();
            from_server
                .read_line(&mut line)
                .expect("request at the server");
        }
        to_server
            .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\ntyped")
            .expect("response");
        // s_client prints the whole response; its body ends it.
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"typed") {
            from_client
                .read_exact(&mut byte)
                .expect("response at the client");
            answer.push(byte[0]);
        }
        let _ = client.kill();
        let _ = server.kill();
        let _ = client.wait();
        let _ = server.wait();
        answer
    })
    .await
    .expect("join");
    assert!(
        exchange.starts_with(b"HTTP/1.1 201 Created\r\n"),
        "{exchange:?}"
    );
    let spans = agent
        .spans_until(&[server_pid, client_pid], DEADLINE, |s| !s.is_empty())
        .await;
    // s_server's side. s_client's side is not seen yet (its calls do not
    // yield a client span here; an open question, see the session note).
    let span = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server)
        .unwrap_or_else(|| panic!("s_server's span: {spans:#?}"));
    assert_eq!(span.name, "GET /typed");
    assert_eq!(span.resource.pid, server_pid);
    assert_eq!(text(span, "url.scheme").as_deref(), Some("https"));
    assert_eq!(
        text(span, "http.response.status_code").as_deref(),
        Some("201")
    );
    agent.handle.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
