//! HTTP/1.x end to end: real servers (a Python HTTP/1.1 server) and real clients
//! (curl, Python), the real kernel programs, and the spans and metrics they must
//! produce. Needs root; skips with a message otherwise.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use agent::spans::{Span, SpanKind, Status, Value, context::to_hex, sampler::Sampler};
use e2e::{
    Running,
    peers::{Server, curl, curl_urls, python},
    privileged, settings_for_ports,
};

const DEADLINE: Duration = Duration::from_secs(20);

fn attr<'a>(span: &'a Span, key: &str) -> &'a Value {
    span.attribute(key)
        .unwrap_or_else(|| panic!("{key} missing on {}", span.name))
}

fn s(v: &str) -> Value {
    Value::Str(v.into())
}

fn count(spans: &[Span], pid: u32, kind: SpanKind) -> usize {
    spans
        .iter()
        .filter(|s| s.resource.pid == pid && s.kind == kind)
        .count()
}

/// An agent that only looks at connections to or from `ports`: tests run in
/// parallel, and every agent sees the whole host.
async fn start_agent(ports: &[u16]) -> Running {
    Running::start(settings_for_ports(ports))
        .await
        .expect("agent starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_one_server_span_and_one_client_span() {
    if !privileged("every_request_is_one_server_span_and_one_client_span") {
        return;
    }
    let server = Server::start();
    let mut agent = start_agent(&[server.port]).await;
    // 100 requests on one keep-alive connection, then statuses on fresh ones.
    let urls: Vec<String> = (0..100)
        .map(|i| server.url(&format!("/users/{i}")))
        .collect();
    let keepalive = curl_urls(&urls).await;
    let notfound = curl_urls(&[server.url("/status/404")]).await;
    let error = curl_urls(&[server.url("/status/500?secret=1")]).await;
    let pids = [server.pid(), keepalive, notfound, error];
    let spans = agent.spans_until(&pids, DEADLINE, |s| s.len() >= 204).await;

    assert_eq!(
        count(&spans, server.pid(), SpanKind::Server),
        102,
        "server spans"
    );
    assert_eq!(count(&spans, keepalive, SpanKind::Client), 100);
    assert_eq!(count(&spans, notfound, SpanKind::Client), 1);
    assert_eq!(count(&spans, error, SpanKind::Client), 1);
    assert_eq!(spans.len(), 204, "no other spans");

    // One keep-alive connection: every client span has the same local port, as
    // seen by the server.
    let peer_ports: std::collections::HashSet<_> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server && s.name == "GET /users/{id}")
        .map(|s| attr(s, "network.peer.port").clone())
        .collect();
    assert_eq!(peer_ports.len(), 1);

    let server_500 = spans
        .iter()
        .find(|s| {
            s.kind == SpanKind::Server && *attr(s, "http.response.status_code") == Value::Int(500)
        })
        .expect("500 server span");
    assert_eq!(server_500.status, Status::Error);
    assert_eq!(*attr(server_500, "error.type"), s("500"));
    assert_eq!(*attr(server_500, "url.path"), s("/status/500"));
    assert_eq!(
        *attr(server_500, "server.port"),
        Value::Int(i64::from(server.port))
    );
    assert_eq!(
        server_500.name, "GET /status/{id}",
        "numeric segments are templated"
    );

    let client_404 = spans
        .iter()
        .find(|s| s.resource.pid == notfound)
        .expect("404 client span");
    assert_eq!(
        client_404.status,
        Status::Error,
        "4xx is an error on clients"
    );
    assert_eq!(*attr(client_404, "url.full"), s(&server.url("/status/404")));
    assert_eq!(
        *attr(client_404, "server.port"),
        Value::Int(i64::from(server.port))
    );
    assert!(
        matches!(attr(client_404, "user_agent.original"), Value::Str(ua) if ua.starts_with("curl/"))
    );
    let server_404 = spans
        .iter()
        .find(|s| {
            s.kind == SpanKind::Server && *attr(s, "http.response.status_code") == Value::Int(404)
        })
        .expect("404 server span");
    assert_eq!(
        server_404.status,
        Status::Unset,
        "4xx is not a server error"
    );
    // No OTEL_SERVICE_NAME in its environment: named after its executable.
    assert_eq!(
        server_404.resource.service_name,
        server_404.resource.executable_name
    );

    let json = serde_json::to_string(&spans).expect("json");
    assert!(!json.contains("secret"), "query strings stay on the host");
    agent.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_sizes_chunked_and_large_bodies() {
    if !privileged("body_sizes_chunked_and_large_bodies") {
        return;
    }
    let server = Server::start();
    let mut agent = start_agent(&[server.port]).await;
    let upload = std::env::temp_dir().join(format!("e2e-upload-{}", std::process::id()));
    std::fs::write(&upload, vec![b'u'; 100 * 1024]).expect("upload file");
    let (post, body) = curl(vec![
        "--data-binary".into(),
        format!("@{}", upload.display()),
        "-H".into(),
        "Content-Type: application/octet-stream".into(),
        server.url("/upload"),
    ])
    .await;
    assert_eq!(body, "102400");
    let big = curl_urls(&[server.url("/big")]).await;
    let (chunked, body) = curl(vec![server.url("/chunked")]).await;
    assert_eq!(body, "first,second,third");
    let _ = std::fs::remove_file(&upload);
    let spans = agent
        .spans_until(&[server.pid(), post, big, chunked], DEADLINE, |s| {
            s.len() >= 6
        })
        .await;
    let server_span = |path: &str| {
        spans
            .iter()
            .find(|s| s.kind == SpanKind::Server && *attr(s, "url.path") == s_(path))
            .unwrap_or_else(|| panic!("server span for {path}: {spans:#?}"))
            .clone()
    };
    fn s_(v: &str) -> Value {
        Value::Str(v.into())
    }
    let upload_span = server_span("/upload");
    assert_eq!(upload_span.name, "POST /upload");
    assert_eq!(
        *attr(&upload_span, "http.request.body.size"),
        Value::Int(102_400)
    );
    assert_eq!(
        *attr(&server_span("/big"), "http.response.body.size"),
        Value::Int(1 << 20)
    );
    assert_eq!(
        *attr(&server_span("/chunked"), "http.response.body.size"),
        Value::Int(18)
    );
    let big_client = spans
        .iter()
        .find(|s| s.resource.pid == big)
        .expect("big client span");
    assert_eq!(
        *attr(big_client, "http.response.body.size"),
        Value::Int(1 << 20)
    );
    agent.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_joins_client_and_server_spans() {
    if !privileged("traceparent_joins_client_and_server_spans") {
        return;
    }
    let server = Server::start();
    let mut agent = start_agent(&[server.port]).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let (client, _) = curl(vec![
        "-o".into(),
        "/dev/null".into(),
        "-H".into(),
        format!("traceparent: 00-{trace}-{parent}-01"),
        server.url("/users/5"),
    ])
    .await;
    let spans = agent
        .spans_until(&[server.pid(), client], DEADLINE, |s| s.len() >= 2)
        .await;
    let server_span = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server)
        .expect("server span");
    let client_span = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client)
        .expect("client span");
    assert_eq!(to_hex(&server_span.trace_id), trace);
    assert_eq!(
        server_span.parent_span_id.map(|p| to_hex(&p)).as_deref(),
        Some(parent)
    );
    assert_eq!(to_hex(&client_span.trace_id), trace);
    assert_eq!(
        to_hex(&client_span.span_id),
        parent,
        "the client span is the header's parent"
    );
    agent.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_while_serving_is_a_child_of_the_server_span() {
    if !privileged("a_call_made_while_serving_is_a_child_of_the_server_span") {
        return;
    }
    let front = Server::start();
    let back = Server::start();
    let mut agent = start_agent(&[front.port, back.port]).await;
    let client = curl_urls(&[front.url(&format!("/downstream?port={}", back.port))]).await;
    let pids = [front.pid(), back.pid(), client];
    let spans = agent.spans_until(&pids, DEADLINE, |s| s.len() >= 4).await;
    let served = spans
        .iter()
        .find(|s| s.resource.pid == front.pid() && s.kind == SpanKind::Server)
        .expect("front server span");
    let call = spans
        .iter()
        .find(|s| s.resource.pid == front.pid() && s.kind == SpanKind::Client)
        .expect("front's downstream client span");
    assert_eq!(call.trace_id, served.trace_id);
    assert_eq!(call.parent_span_id, Some(served.span_id));
    assert!(call.start_time_unix_nano >= served.start_time_unix_nano);
    assert!(call.end_time_unix_nano <= served.end_time_unix_nano);
    assert_eq!(*attr(call, "server.port"), Value::Int(i64::from(back.port)));
    assert_eq!(call.name, "GET /users/{id}");
    agent.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_keeps_slow_and_failing_requests_and_durations_are_consistent() {
    if !privileged("sampling_keeps_slow_and_failing_requests_and_durations_are_consistent") {
        return;
    }
    let server = Server::start();
    let mut settings = settings_for_ports(&[server.port]);
    settings.sampler = Sampler {
        ratio: 0.0,
        parent_based: false,
        slow_ns: 200_000_000,
    };
    let mut agent = Running::start(settings).await.expect("agent starts");
    let fast = curl_urls(&[server.url("/users/1")]).await;
    let (slow, timing) = curl(vec![
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{time_total}".into(),
        server.url("/slow/300"),
    ])
    .await;
    let failing = curl_urls(&[server.url("/status/503")]).await;
    let pids = [server.pid(), fast, slow, failing];
    let spans = agent.spans_until(&pids, DEADLINE, |s| s.len() >= 4).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    assert_eq!(count(&spans, fast, SpanKind::Client), 0, "sampled out");
    let slow_server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server && s.name == "GET /slow/{id}")
        .expect("slow server span");
    let slow_client = spans
        .iter()
        .find(|s| s.resource.pid == slow)
        .expect("slow client span");
    let curl_ns = (timing.trim().parse::<f64>().expect("curl time") * 1e9) as u64;
    assert!(slow_server.duration_ns() >= 300_000_000);
    assert!(
        slow_server.duration_ns() <= slow_client.duration_ns(),
        "server within client"
    );
    assert!(
        slow_client.duration_ns() <= curl_ns + 1_000_000,
        "client {} vs curl {curl_ns}",
        slow_client.duration_ns()
    );
    assert_eq!(count(&spans, failing, SpanKind::Client), 1);
    let stats = agent.handle.stop().await;
    assert_eq!(stats.spans_sampled_out, 2, "the fast pair");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_pair_in_order() {
    if !privileged("pipelined_requests_pair_in_order") {
        return;
    }
    let server = Server::start();
    let mut agent = start_agent(&[server.port]).await;
    // Three requests in one write; Python's server answers them in order.
    let client = python(format!(
        "import socket\n\
         s = socket.create_connection(('127.0.0.1', {port}))\n\
         s.sendall(b'GET /users/1 HTTP/1.1\\r\\nHost: a\\r\\n\\r\\nGET /status/404 HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n'\n\
                   b'GET /users/3 HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n')\n\
         data = b''\n\
         while True:\n\
         \x20   chunk = s.recv(65536)\n\
         \x20   if not chunk: break\n\
         \x20   data += chunk\n\
         assert data.count(b'HTTP/1.1 ') == 3, data\n",
        port = server.port
    ))
    .await;
    let spans = agent
        .spans_until(&[server.pid(), client], DEADLINE, |s| s.len() >= 6)
        .await;
    let mut server_spans: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .collect();
    server_spans.sort_by_key(|s| s.start_time_unix_nano);
    let got: Vec<(Value, Value)> = server_spans
        .iter()
        .map(|s| {
            (
                attr(s, "url.path").clone(),
                attr(s, "http.response.status_code").clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (s("/users/1"), Value::Int(200)),
            (s("/status/404"), Value::Int(404)),
            (s("/users/3"), Value::Int(200))
        ]
    );
    assert_eq!(count(&spans, client, SpanKind::Client), 3);
    agent.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_histograms_count_the_requests_and_pass_promtool() {
    if !privileged("prometheus_histograms_count_the_requests_and_pass_promtool") {
        return;
    }
    let server = Server::start();
    let mut agent = start_agent(&[server.port]).await;
    let urls: Vec<String> = (0..7).map(|i| server.url(&format!("/users/{i}"))).collect();
    let client = curl_urls(&urls).await;
    agent
        .spans_until(&[server.pid(), client], DEADLINE, |s| s.len() >= 14)
        .await;
    let addr = agent.handle.prometheus.expect("prometheus endpoint");
    let body = tokio::task::spawn_blocking(move || e2e::scrape(addr))
        .await
        .expect("scrape");

    let line = |prefix: &str| {
        body.lines()
            .find(|l| {
                l.starts_with(prefix)
                    && l.contains("http_route=\"/users/{id}\"")
                    && l.contains("le=\"+Inf\"").eq(&prefix.ends_with("_bucket"))
            })
            .unwrap_or_else(|| panic!("no {prefix} line in:\n{body}"))
            .to_string()
    };
    assert!(line("http_server_request_duration_seconds_count").ends_with(" 7"));
    assert!(line("http_server_request_duration_seconds_bucket").ends_with(" 7"));
    let client_count = body
        .lines()
        .find(|l| {
            l.starts_with("http_client_request_duration_seconds_count")
                && l.contains("service_name=\"curl\"")
        })
        .expect("client histogram");
    assert!(client_count.ends_with(" 7"), "{client_count}");
    assert!(body.contains("agent_events_dropped_total{reason=\"kernel_ringbuf_full\"}"));

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is required for this test");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    agent.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_counted_and_the_server_is_still_traced() {
    if !privileged("bad_input_is_counted_and_the_server_is_still_traced") {
        return;
    }
    let server = Server::start();
    let mut agent = start_agent(&[server.port]).await;
    let port = server.port;
    // Random bytes, a 64 KiB header line, a request cut mid-header, invalid UTF-8,
    // each on its own connection; then a good request.
    let client = python(format!(
        "import os, socket\n\
         def send(data, read=True):\n\
         \x20   s = socket.create_connection(('127.0.0.1', {port}))\n\
         \x20   s.sendall(data)\n\
         \x20   s.shutdown(socket.SHUT_WR)\n\
         \x20   s.settimeout(5)\n\
         \x20   try:\n\
         \x20       while s.recv(65536): pass\n\
         \x20   except Exception: pass\n\
         \x20   s.close()\n\
         send(os.urandom(4096))\n\
         send(b'GET / HTTP/1.1\\r\\nX-Long: ' + b'a' * 65536 + b'\\r\\n\\r\\n')\n\
         send(b'GET /cut HTTP/1.1\\r\\nHost: exa')\n\
         send(b'GET /\\xff\\xfe HTTP/1.1\\r\\nHost: \\xc3\\x28\\r\\n\\r\\n')\n\
         send(b'GET /users/9 HTTP/1.1\\r\\nHost: ok\\r\\nConnection: close\\r\\n\\r\\n')\n"
    ))
    .await;
    let spans = agent
        .spans_until(&[server.pid(), client], DEADLINE, |s| {
            s.iter()
                .any(|s| s.kind == SpanKind::Server && s.name == "GET /users/{id}")
        })
        .await;
    assert!(
        spans
            .iter()
            .any(|s| s.kind == SpanKind::Server && s.name == "GET /users/{id}")
    );
    let stats = agent.handle.stop().await;
    let http_errors: u64 = stats
        .parse_errors
        .iter()
        .filter(|((protocol, _), _)| *protocol == "http1")
        .map(|(_, n)| n)
        .sum();
    assert!(
        http_errors >= 2,
        "parse errors counted: {:?}",
        stats.parse_errors
    );
}

/// The Rust peers (`http_peer`): a hyper server, a reqwest client.
struct HyperServer {
    child: std::process::Child,
    port: u16,
}

impl HyperServer {
    fn start() -> HyperServer {
        let (child, port) = e2e::peers::spawn_listening(
            Command::new(env!("CARGO_BIN_EXE_http_peer")).arg("server"),
        );
        HyperServer { child, port }
    }
}

impl Drop for HyperServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_server_and_reqwest_client_with_trace_context() {
    if !privileged("hyper_server_and_reqwest_client_with_trace_context") {
        return;
    }
    let server = HyperServer::start();
    let mut agent = start_agent(&[server.port]).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let parent = "b7ad6b7169203331";
    let url = format!("http://127.0.0.1:{}/users/42", server.port);
    let client = tokio::task::spawn_blocking(move || {
        let child = Command::new(env!("CARGO_BIN_EXE_http_peer"))
            .args(["client", &url, "50", &format!("00-{trace}-{parent}-01")])
            .stdout(Stdio::piped())
            .spawn()
            .expect("http_peer client");
        let pid = child.id();
        let out = child.wait_with_output().expect("client");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "done 50");
        pid
    })
    .await
    .expect("join");
    let pids = [server.child.id(), client];
    let spans = agent.spans_until(&pids, DEADLINE, |s| s.len() >= 100).await;
    assert_eq!(count(&spans, server.child.id(), SpanKind::Server), 50);
    assert_eq!(count(&spans, client, SpanKind::Client), 50);
    for span in &spans {
        assert_eq!(to_hex(&span.trace_id), trace);
        assert_eq!(span.name, "GET /users/{id}");
        match span.kind {
            SpanKind::Server => assert_eq!(
                span.parent_span_id.map(|p| to_hex(&p)).as_deref(),
                Some(parent)
            ),
            SpanKind::Client => assert_eq!(to_hex(&span.span_id), parent),
        }
    }
    agent.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_headers_and_bodies_leave_the_host_only_when_opted_in() {
    if !privileged("query_headers_and_bodies_leave_the_host_only_when_opted_in") {
        return;
    }
    let server = Server::start();
    let mut settings = settings_for_ports(&[server.port]);
    settings.capture_query = true;
    settings.capture_headers = vec!["x-request-id".into()];
    settings.capture_body_bytes = 16;
    let mut agent = Running::start(settings).await.expect("agent starts");
    let (client, body) = curl(vec![
        "-H".into(),
        "X-Request-Id: req-77".into(),
        "-H".into(),
        "Authorization: Bearer never-captured".into(),
        "--data-binary".into(),
        "sixteen-bytes-and-more".into(),
        server.url("/upload?order=42"),
    ])
    .await;
    assert_eq!(body, "22");
    let spans = agent
        .spans_until(&[server.pid(), client], DEADLINE, |s| s.len() >= 2)
        .await;
    let server_span = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server)
        .expect("server span");
    assert_eq!(*attr(server_span, "url.query"), s("order=42"));
    assert_eq!(
        *attr(server_span, "http.request.header.x-request-id"),
        s("req-77")
    );
    assert_eq!(
        *attr(server_span, "http.request.body.content"),
        s("sixteen-bytes-an")
    );
    let client_span = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client)
        .expect("client span");
    assert_eq!(
        *attr(client_span, "url.full"),
        s(&server.url("/upload?order=42"))
    );
    assert_eq!(*attr(client_span, "http.response.body.content"), s("22"));
    let json = serde_json::to_string(&spans).expect("json");
    assert!(
        !json.contains("never-captured"),
        "headers not named stay on the host"
    );
    agent.handle.stop().await;
}
