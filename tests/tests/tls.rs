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
    e2e::metric_line(agent, "agent_tls_libraries ").await;
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
    let counted = e2e::metric_line(
        &agent,
        "agent_tls_not_visible_connections_total{executable=\"node\"}",
    )
    .await;
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
    let port = peers::free_port();
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
    peers::wait_listening(port, "s_server");
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
    // Both sides: s_client's first SSL_read returns -1 (it read only
    // session tickets), and its socket must be remembered all the same.
    let spans = agent
        .spans_until(&[server_pid, client_pid], DEADLINE, |s| {
            [SpanKind::Server, SpanKind::Client]
                .iter()
                .all(|kind| s.iter().any(|span| span.kind == *kind))
        })
        .await;
    for (kind, pid) in [
        (SpanKind::Server, server_pid),
        (SpanKind::Client, client_pid),
    ] {
        let span = spans
            .iter()
            .find(|s| s.kind == kind)
            .unwrap_or_else(|| panic!("{kind:?} span: {spans:#?}"));
        assert_eq!(span.name, "GET /typed", "{span:#?}");
        assert_eq!(span.resource.pid, pid);
        assert_eq!(text(span, "url.scheme").as_deref(), Some("https"));
        assert_eq!(
            text(span, "http.response.status_code").as_deref(),
            Some("201")
        );
    }
    agent.handle.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Builds `peers/go_tls.go` with Debian's Go into `dir` (offline: standard
/// library only), with its symbol table or stripped (`-s -w`).
fn build_go_tls(dir: &std::path::Path, stripped: bool) -> std::path::PathBuf {
    let out = dir.join(if stripped {
        "go_tls_stripped"
    } else {
        "go_tls"
    });
    let mut go = std::process::Command::new("go");
    go.arg("build").arg("-o").arg(&out);
    if stripped {
        go.arg("-ldflags=-s -w");
    }
    let built = go
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/peers/go_tls.go"))
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GOPROXY", "off")
        .env("GO111MODULE", "off")
        .status()
        .expect("go (golang-go; `cargo xtask setup` installs it)");
    assert!(built.success(), "building {}", out.display());
    out
}

/// A Go HTTPS server (`go_tls server`) on a free port, killed on drop.
struct GoServer {
    child: std::process::Child,
    port: u16,
}

impl GoServer {
    fn start(program: &std::path::Path, dir: &std::path::Path, h2: bool) -> GoServer {
        let port = peers::free_port();
        let child = std::process::Command::new(program)
            .arg("server")
            .arg(dir.join("cert.pem"))
            .arg(dir.join("key.pem"))
            .arg(port.to_string())
            .arg(if h2 { "h2" } else { "h1" })
            .spawn()
            .expect("go_tls server");
        peers::wait_listening(port, "go_tls");
        GoServer { child, port }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for GoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status a `go_tls` server answers for `path`.
fn go_status(path: &str) -> String {
    path.strip_prefix("/status/").unwrap_or("200").to_string()
}

/// Runs the Go client over one keep-alive connection (`h2` or HTTP/1.1),
/// after a pause that lets the agent probe it; its pid and client spans.
async fn go_client_spans(
    agent: &mut Running,
    program: &std::path::Path,
    server: &GoServer,
    h2: bool,
    paths: &[&str],
) -> (u32, Vec<Span>) {
    let mut args = vec![
        "client".to_string(),
        if h2 { "h2" } else { "h1" }.to_string(),
        "1000".to_string(),
        format!("https://127.0.0.1:{}", server.port),
    ];
    args.extend(paths.iter().map(|p| p.to_string()));
    let (pid, lines) = run_client(program.to_path_buf(), args).await;
    let expected: Vec<String> = paths
        .iter()
        .map(|p| {
            let length = match *p {
                "/big" => 40960,
                p if p.starts_with("/status/") => 12,
                _ => 3,
            };
            format!("{} {length}", go_status(p))
        })
        .collect();
    assert_eq!(lines, expected, "the Go client got its answers");
    let spans = agent
        .spans_until(&[pid], DEADLINE, |s| s.len() >= paths.len())
        .await;
    (pid, spans)
}

/// Every server span pairs a path with the status the server gives it: a
/// request missed while the probes attached must never lend its response
/// to another. (An HTTP/2 stream whose request headers were in the missed
/// call is reported without method or path: unknown, not guessed.)
fn assert_server_spans_consistent(spans: &[Span]) {
    for span in spans {
        let Some(path) = text(span, "url.path") else {
            assert_eq!(text(span, "http.request.method"), None, "{span:#?}");
            continue;
        };
        assert_eq!(
            text(span, "http.response.status_code"),
            Some(go_status(&path)),
            "{span:#?}"
        );
        assert_eq!(text(span, "url.scheme").as_deref(), Some("https"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_crypto_tls_client_and_server_in_plaintext() {
    let test = "go_crypto_tls_client_and_server_in_plaintext";
    if !privileged(test) {
        return;
    }
    let dir = e2e::profiling::temp_dir("tls-go");
    peers::self_signed_certificate(&dir);
    let program = build_go_tls(&dir, false);
    let mut agent = Running::start(settings_for_ports(&[]))
        .await
        .expect("agent starts");
    tls_ready(&agent).await;
    for h2 in [false, true] {
        // Started after the agent. Its first connection's handshake is what
        // gets the program probed: the server is already inside its first
        // Read then, so that call is missed (counted) and the connection
        // resynchronised; the client's pause keeps its own calls after.
        let server = GoServer::start(&program, &dir, h2);
        let first = ["/users/1", "/big", "/status/503"];
        let (client, spans) = go_client_spans(&mut agent, &program, &server, h2, &first).await;
        let clients: Vec<&Span> = spans
            .iter()
            .filter(|s| s.resource.pid == client && s.kind == SpanKind::Client)
            .collect();
        assert_eq!(clients.len(), first.len(), "h2={h2}: {spans:#?}");
        for (span, path) in clients.iter().zip(first) {
            assert_eq!(
                text(span, "url.full"),
                Some(format!("https://127.0.0.1:{}{path}", server.port)),
                "h2={h2}"
            );
            assert_eq!(
                text(span, "http.response.status_code"),
                Some(go_status(path))
            );
            assert_eq!(text(span, "http.request.method").as_deref(), Some("GET"));
        }
        // A second client, on a program already probed: every server span.
        let second = ["/again/a", "/big", "/status/404"];
        let (client, spans) = go_client_spans(&mut agent, &program, &server, h2, &second).await;
        let clients = spans
            .iter()
            .filter(|s| s.resource.pid == client && s.kind == SpanKind::Client)
            .count();
        assert_eq!(clients, second.len(), "h2={h2}, second client: {spans:#?}");
        let spans = agent
            .spans_until(&[server.pid()], DEADLINE, |s| {
                second.iter().all(|p| {
                    s.iter()
                        .any(|span| text(span, "url.path").as_deref() == Some(*p))
                })
            })
            .await;
        let servers: Vec<Span> = spans
            .into_iter()
            .filter(|s| s.kind == SpanKind::Server)
            .collect();
        assert_server_spans_consistent(&servers);
        for path in second {
            assert!(
                servers
                    .iter()
                    .any(|s| text(s, "url.path").as_deref() == Some(path)),
                "h2={h2}: no server span for {path}: {servers:#?}"
            );
        }
        let big = servers
            .iter()
            .find(|s| text(s, "url.path").as_deref() == Some("/big"))
            .expect("/big");
        if !h2 {
            assert_eq!(
                text(big, "http.response.body.size").as_deref(),
                Some("40960")
            );
        }
    }
    let snapshot = agent.handle.snapshot();
    assert!(snapshot.kernel_loss(agent_common::Loss::TlsCiphertext) > 0);
    agent.handle.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripped_go_program_is_counted_not_guessed() {
    let Some((nginx, mut agent)) =
        https_setup("a_stripped_go_program_is_counted_not_guessed").await
    else {
        return;
    };
    let dir = e2e::profiling::temp_dir("tls-go-stripped");
    let program = build_go_tls(&dir, true);
    let paths: Vec<String> = (0..10).map(|n| format!("/n{n}")).collect();
    let mut args = vec![
        // The pause keeps it alive while the agent reads its executable.
        "client".to_string(),
        "h1".to_string(),
        "1000".to_string(),
        format!("https://127.0.0.1:{}", nginx.port),
    ];
    args.extend(paths.iter().cloned());
    let (pid, lines) = run_client(program, args).await;
    assert_eq!(lines.len(), paths.len(), "{lines:?}");
    let unprobeable = e2e::metric_line(&agent, "agent_tls_unprobeable_executables_total ").await;
    assert!(unprobeable.ends_with(" 1"), "{unprobeable}");
    let counted = e2e::metric_line(
        &agent,
        "agent_tls_not_visible_connections_total{executable=\"go_tls_stripped\"}",
    )
    .await;
    assert!(counted.ends_with(" 1"), "{counted}");
    // nginx's side is plaintext through OpenSSL; the Go side has nothing.
    let spans = agent
        .spans_until(&[pid, nginx.pid()], Duration::from_secs(3), |s| {
            s.len() >= paths.len()
        })
        .await;
    assert!(
        spans.iter().all(|s| s.resource.pid != pid),
        "no span from ciphertext: {spans:#?}"
    );
    assert_eq!(spans.len(), paths.len(), "nginx's spans: {spans:#?}");
    agent.handle.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
