//! HTTP/2 and gRPC end to end: a grpcio server and clients (unary, streaming,
//! errors, deadlines, large messages, many calls on one channel, a channel
//! that predates the agent), curl and h2load against nginx speaking h2c, the
//! real kernel programs, and the spans and metrics they must produce. Needs
//! root; skips with a message otherwise.

use std::{collections::HashMap, process::Command, time::Duration};

use agent::spans::{Span, SpanKind, Status, Value};
use e2e::{
    Running,
    peers::{GrpcCalls, LateClient, Server, curl, grpc_calls_of, grpc_client, h2load},
    privileged, scrape, settings_for_ports,
};

const DEADLINE: Duration = Duration::from_secs(30);

fn text<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match span.attribute(key) {
        Some(Value::Str(s)) => Some(s),
        _ => None,
    }
}

fn int(span: &Span, key: &str) -> Option<i64> {
    match span.attribute(key) {
        Some(Value::Int(i)) => Some(*i),
        _ => None,
    }
}

fn of(spans: &[Span], pid: u32, kind: SpanKind) -> Vec<Span> {
    spans
        .iter()
        .filter(|s| s.resource.pid == pid && s.kind == kind)
        .cloned()
        .collect()
}

/// (method, status code) of every gRPC span, sorted.
fn calls_of(spans: &[Span]) -> Vec<(String, String)> {
    let mut calls: Vec<(String, String)> = spans
        .iter()
        .map(|s| {
            assert_eq!(text(s, "rpc.system.name"), Some("grpc"), "{s:?}");
            (
                text(s, "rpc.method").unwrap_or("?").to_string(),
                text(s, "rpc.response.status_code")
                    .unwrap_or("?")
                    .to_string(),
            )
        })
        .collect();
    calls.sort();
    calls
}

fn sorted(mut calls: Vec<(String, String)>) -> Vec<(String, String)> {
    calls.sort();
    calls
}

/// Checks that a span of a call to `method` is exactly right or honestly
/// nameless, never wrong: a gRPC span named `method` (status as the client
/// saw, `code`, or absent), a nameless `grpc` span, or, when not even the
/// content type could be read, an HTTP/2 span with no path or route. Returns
/// whether it was named.
fn exact_or_nameless(s: &Span, method: &str, code: &str) -> bool {
    if let Some(system) = text(s, "rpc.system.name") {
        assert_eq!(system, "grpc");
        let status = text(s, "rpc.response.status_code");
        assert!(
            status.is_none_or(|c| c == code),
            "never a wrong status: {s:?}"
        );
        return match text(s, "rpc.method") {
            Some(m) => {
                assert_eq!(
                    (m, s.name.as_str()),
                    (method, method),
                    "never a wrong method: {s:?}"
                );
                true
            }
            None => {
                assert_eq!(s.name, "grpc", "nameless, honestly: {s:?}");
                false
            }
        };
    }
    assert_eq!(text(s, "network.protocol.version"), Some("2"), "{s:?}");
    for unknown in ["http.route", "url.path", "url.full"] {
        assert_eq!(text(s, unknown), None, "{unknown} would be a guess: {s:?}");
    }
    assert!(matches!(s.name.as_str(), "POST" | "HTTP"), "{s:?}");
    false
}

async fn agent_for(ports: &[u16], capture_bytes: Option<u32>) -> Running {
    let mut settings = settings_for_ports(ports);
    if let Some(bytes) = capture_bytes {
        settings.capture_bytes = bytes;
    }
    Running::start(settings).await.expect("agent starts")
}

/// Client and server spans of one scenario, once both sides have `n` spans.
async fn both_sides(
    agent: &mut Running,
    server: &Server,
    client: &GrpcCalls,
) -> (Vec<Span>, Vec<Span>) {
    let n = client.calls.len();
    let spans = agent
        .spans_until(&[server.pid(), client.pid], DEADLINE, |s| s.len() >= 2 * n)
        .await;
    (
        of(&spans, server.pid(), SpanKind::Server),
        of(&spans, client.pid, SpanKind::Client),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_calls_are_spans_with_method_status_and_messages() {
    if !privileged("grpcio_calls_are_spans_with_method_status_and_messages") {
        return;
    }
    let server = Server::grpc();
    let mut agent = agent_for(&[server.port], None).await;
    let client = grpc_client(server.port, "mix").await;
    let (served, made) = both_sides(&mut agent, &server, &client).await;

    // The client side says exactly what the client library said.
    assert_eq!(made.len(), client.calls.len(), "client spans: {made:#?}");
    assert_eq!(calls_of(&made), sorted(client.calls.clone()));
    assert_eq!(
        served.len(),
        client.calls.len(),
        "server spans: {served:#?}"
    );

    let by_method = |spans: &[Span], m: &str| -> Vec<Span> {
        spans
            .iter()
            .filter(|s| text(s, "rpc.method") == Some(m))
            .cloned()
            .collect()
    };
    for side in [&served, &made] {
        for s in side {
            assert_eq!(s.name, text(s, "rpc.method").unwrap(), "span name");
            assert_eq!(text(s, "server.address"), Some("127.0.0.1"));
            assert_eq!(int(s, "server.port"), Some(i64::from(server.port)));
        }
        let unary = by_method(side, "demo.Echo/Unary");
        assert_eq!(unary.len(), 3);
        for s in &unary {
            assert_eq!(text(s, "rpc.response.status_code"), Some("OK"));
            assert_eq!(s.status, Status::Unset);
            assert_eq!(int(s, "rpc.request.messages"), Some(1));
            assert_eq!(int(s, "rpc.response.messages"), Some(1));
        }
        let stream = &by_method(side, "demo.Echo/ServerStream")[0];
        assert_eq!(int(stream, "rpc.response.messages"), Some(3));
        let client_stream = &by_method(side, "demo.Echo/ClientStream")[0];
        assert_eq!(int(client_stream, "rpc.request.messages"), Some(4));
        let bidi = &by_method(side, "demo.Echo/Bidi")[0];
        assert_eq!(int(bidi, "rpc.request.messages"), Some(5));
        assert_eq!(int(bidi, "rpc.response.messages"), Some(5));
    }
    // Error status by side: NOT_FOUND is only the client's error.
    let fails: HashMap<(SpanKind, &str), Status> = served
        .iter()
        .chain(&made)
        .filter(|s| text(s, "rpc.method") == Some("demo.Echo/Fail"))
        .map(|s| {
            (
                (s.kind, text(s, "rpc.response.status_code").unwrap()),
                s.status,
            )
        })
        .collect();
    assert_eq!(fails[&(SpanKind::Client, "NOT_FOUND")], Status::Error);
    assert_eq!(fails[&(SpanKind::Server, "NOT_FOUND")], Status::Unset);
    assert_eq!(fails[&(SpanKind::Server, "INTERNAL")], Status::Error);
    let slow = &by_method(&made, "demo.Echo/Slow")[0];
    assert_eq!(text(slow, "error.type"), Some("DEADLINE_EXCEEDED"));
    let slow_served = &by_method(&served, "demo.Echo/Slow")[0];
    assert!(
        slow_served.duration_ns() >= 150_000_000,
        "the deadline (200 ms) ends the served call: {slow_served:?}"
    );

    // RPC metrics: one series per method and status, server and client.
    let Some(addr) = agent.handle.prometheus else {
        panic!("metrics endpoint");
    };
    let text = scrape(addr);
    let count = |side: &str, method: &str, code: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("rpc_{side}_call_duration_seconds_count{{")))
            .filter(|l| l.contains(&format!("rpc_method=\"{method}\"")))
            .filter(|l| l.contains(&format!("rpc_response_status_code=\"{code}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(count("server", "demo.Echo/Unary", "OK"), 3, "{text}");
    assert_eq!(count("client", "demo.Echo/Fail", "NOT_FOUND"), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_at_both_capture_caps_keep_every_call_named() {
    if !privileged("large_messages_at_both_capture_caps_keep_every_call_named") {
        return;
    }
    for cap in [4096, 8192] {
        let server = Server::grpc();
        let mut agent = agent_for(&[server.port], Some(cap)).await;
        let client = grpc_client(server.port, "big").await;
        let (served, made) = both_sides(&mut agent, &server, &client).await;
        assert_eq!(
            (served.len(), made.len()),
            (7, 7),
            "cap {cap}: one span per call"
        );
        let named = served
            .iter()
            .chain(&made)
            .filter(|s| exact_or_nameless(s, "demo.Echo/Unary", "OK"))
            .count();
        // The kernel walks HTTP/2 frames (headers and blocks copied, DATA
        // skipped), so nothing past the cap hides a header block.
        let snapshot = agent.handle.snapshot();
        assert_eq!(
            named, 14,
            "cap {cap}: every call named; parse errors {:?}, kernel {:?}",
            snapshot.parse_errors, snapshot.kernel_losses
        );
        let big = made
            .iter()
            .map(|s| int(s, "rpc.response.messages"))
            .collect::<Vec<_>>();
        assert!(
            big.iter().all(|m| m.is_none_or(|m| m == 1)),
            "message counts are exact or absent: {big:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_on_one_channel_are_one_span_each() {
    if !privileged("concurrent_calls_on_one_channel_are_one_span_each") {
        return;
    }
    let server = Server::grpc();
    let mut agent = agent_for(&[server.port], None).await;
    let client = grpc_client(server.port, "concurrent").await;
    let (served, made) = both_sides(&mut agent, &server, &client).await;
    assert_eq!((served.len(), made.len()), (40, 40), "one span per call");
    let named = served
        .iter()
        .chain(&made)
        .filter(|s| exact_or_nameless(s, "demo.Echo/Unary", "OK"))
        .count();
    eprintln!("40 concurrent calls: {named} of 80 spans named");
    assert_eq!(calls_of(&made), sorted(client.calls.clone()), "{made:#?}");
    // No span parented by thread: calls that share threads are not nested.
    assert!(made.iter().all(|s| s.parent_span_id.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_older_than_the_agent_gives_exact_or_nameless_spans() {
    if !privileged("a_channel_older_than_the_agent_gives_exact_or_nameless_spans") {
        return;
    }
    let server = Server::grpc();
    let late = LateClient::start(server.port, 20, 30);
    let mut agent = agent_for(&[server.port], None).await;
    let pid = late.pid();
    let client = late.go();
    let spans = agent
        .spans_until(&[server.pid(), pid], DEADLINE, |s| s.len() >= 60)
        .await;
    let served = of(&spans, server.pid(), SpanKind::Server);
    let made = of(&spans, pid, SpanKind::Client);
    assert_eq!(
        made.len(),
        client.calls.len(),
        "every call after the start counts"
    );
    assert_eq!(served.len(), client.calls.len());
    let named = served
        .iter()
        .chain(&made)
        .filter(|s| exact_or_nameless(s, "demo.Echo/Unary", "OK"))
        .count();
    eprintln!(
        "late attach: {named} of {} spans named",
        served.len() + made.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_h2load_against_nginx_h2c() {
    if !privileged("curl_and_h2load_against_nginx_h2c") {
        return;
    }
    let nginx = Server::h2_nginx();
    let mut agent = agent_for(&[nginx.port], None).await;
    // One request per curl: curl 7.88 fails (exit 16) reusing an h2c
    // connection to nginx 1.22 for a second request.
    let get = |path: &str| {
        vec![
            "--http2-prior-knowledge".to_string(),
            "-o".into(),
            "/dev/null".into(),
            nginx.url(path),
        ]
    };
    let (ok_pid, _) = curl(get("/users/7?token=secret")).await;
    let (unavailable_pid, _) = curl(get("/status/503")).await;
    let pids = [nginx.pid(), ok_pid, unavailable_pid];
    let spans = agent.spans_until(&pids, DEADLINE, |s| s.len() >= 4).await;
    let served = of(&spans, nginx.pid(), SpanKind::Server);
    let mut made = of(&spans, ok_pid, SpanKind::Client);
    made.extend(of(&spans, unavailable_pid, SpanKind::Client));
    assert_eq!((served.len(), made.len()), (2, 2), "{spans:#?}");
    for s in served.iter().chain(&made) {
        assert_eq!(text(s, "network.protocol.version"), Some("2"));
        assert_eq!(text(s, "http.request.method"), Some("GET"));
        assert_eq!(text(s, "rpc.system.name"), None);
        let json = serde_json::to_string(s).unwrap();
        assert!(!json.contains("secret"), "no query strings: {json}");
    }
    let server_users = served
        .iter()
        .find(|s| int(s, "http.response.status_code") == Some(200))
        .expect("200");
    assert_eq!(server_users.name, "GET /users/{id}");
    let client_503 = made
        .iter()
        .find(|s| int(s, "http.response.status_code") == Some(503))
        .expect("503");
    assert_eq!(client_503.status, Status::Error);

    // A `traceparent` in the request HEADERS joins the spans: the client
    // span is the call the header names, the server span its child.
    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut args = get("/traced");
    args.extend([
        "-H".to_string(),
        format!("traceparent: 00-{trace}-{parent}-01"),
    ]);
    let (traced_pid, _) = curl(args).await;
    let spans = agent
        .spans_until(&[nginx.pid(), traced_pid], DEADLINE, |s| {
            s.iter().filter(|s| s.name == "GET /traced").count() >= 2
        })
        .await;
    let traced: Vec<&Span> = spans.iter().filter(|s| s.name == "GET /traced").collect();
    assert_eq!(traced.len(), 2, "{traced:#?}");
    for s in &traced {
        assert_eq!(agent::spans::context::to_hex(&s.trace_id), trace);
        match s.kind {
            SpanKind::Client => assert_eq!(agent::spans::context::to_hex(&s.span_id), parent),
            SpanKind::Server => assert_eq!(
                s.parent_span_id
                    .map(|p| agent::spans::context::to_hex(&p))
                    .as_deref(),
                Some(parent)
            ),
        }
    }

    // h2load: many streams per connection; every request is one span per side.
    let (h2load_pid, succeeded) = h2load(nginx.url("/load"), 300, 3, 10).await;
    assert_eq!(succeeded, 300);
    let spans = agent
        .spans_until(&[nginx.pid(), h2load_pid], DEADLINE, |s| s.len() >= 603)
        .await;
    let made = of(&spans, h2load_pid, SpanKind::Client);
    assert_eq!(made.len(), 300, "h2load client spans");
    // 300 for h2load, 3 for the curls before.
    assert_eq!(of(&spans, nginx.pid(), SpanKind::Server).len(), 303);
    assert!(made.iter().all(|s| s.name == "GET /load"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_answers_the_upgrade_request_over_http2() {
    if !privileged("an_h2c_upgrade_answers_the_upgrade_request_over_http2") {
        return;
    }
    let server = Server::h2c_upgrade();
    let mut agent = agent_for(&[server.port], None).await;
    // The server sits in a blocking accept() from before the agent: on the
    // tracepoint path that accept has no enter state and the connection it
    // returns no role. One throwaway connection lets the next accept start
    // under the agent.
    drop(std::net::TcpStream::connect(("127.0.0.1", server.port)));
    // curl --http2 on http:// asks for `Upgrade: h2c`; the first request is
    // answered on stream 1 after the 101, the second is stream 3.
    let args = ["/users/7", "/status/503"]
        .into_iter()
        .flat_map(|p| ["-o".to_string(), "/dev/null".into(), server.url(p)])
        .chain(["--http2".to_string()])
        .collect();
    let (curl_pid, _) = curl(args).await;
    let spans = agent
        .spans_until(&[server.pid(), curl_pid], DEADLINE, |s| s.len() >= 4)
        .await;
    for (pid, kind) in [
        (server.pid(), SpanKind::Server),
        (curl_pid, SpanKind::Client),
    ] {
        let mut side: Vec<(String, Option<i64>, Option<&str>)> = of(&spans, pid, kind)
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    int(s, "http.response.status_code"),
                    text(s, "network.protocol.version").map(|v| if v == "2" { "2" } else { "1" }),
                )
            })
            .collect();
        side.sort();
        assert_eq!(
            side,
            vec![
                ("GET /status/{id}".to_string(), Some(503), Some("2")),
                ("GET /users/{id}".to_string(), Some(200), Some("2")),
            ],
            "{kind:?}: {spans:#?}"
        );
    }
}

const TONIC_PEER: &str = env!("CARGO_BIN_EXE_tonic_peer");

/// The tonic client's calls against `port`.
async fn tonic_client(port: u16) -> GrpcCalls {
    let mut cmd = Command::new(TONIC_PEER);
    cmd.args(["client", &port.to_string(), "5"]);
    grpc_calls_of(cmd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_and_grpcio_in_every_pairing() {
    if !privileged("tonic_and_grpcio_in_every_pairing") {
        return;
    }
    let tonic = Server::spawn(Command::new(TONIC_PEER).arg("server"));
    let grpcio = Server::grpc();
    let mut agent = agent_for(&[tonic.port, grpcio.port], None).await;
    let pairs = [
        ("tonic -> tonic", &tonic, tonic_client(tonic.port).await),
        (
            "grpcio -> tonic",
            &tonic,
            grpc_client(tonic.port, "mix").await,
        ),
        ("tonic -> grpcio", &grpcio, tonic_client(grpcio.port).await),
    ];
    for (pair, server, client) in &pairs {
        let made: Vec<Span> = agent
            .spans_until(&[client.pid], DEADLINE, |s| s.len() >= client.calls.len())
            .await;
        // Calls the tonic server does not serve (grpc_peer's mix has more
        // methods) are UNIMPLEMENTED: the client span says `_OTHER`.
        let expected: Vec<(String, String)> = client
            .calls
            .iter()
            .map(|(m, c)| match c.as_str() {
                "UNIMPLEMENTED" => ("_OTHER".to_string(), c.clone()),
                _ => (m.clone(), c.clone()),
            })
            .collect();
        assert_eq!(calls_of(&made), sorted(expected), "{pair}: {made:#?}");
        let served = agent
            .spans_until(&[server.pid()], DEADLINE, |s| {
                s.iter().filter(|s| s.resource.pid == server.pid()).count() >= client.calls.len()
            })
            .await;
        assert!(
            served.len() >= client.calls.len(),
            "{pair}: {} server spans for {} calls",
            served.len(),
            client.calls.len()
        );
    }
    let served_by_tonic = of(
        &agent.spans_until(&[tonic.pid()], DEADLINE, |_| true).await,
        tonic.pid(),
        SpanKind::Server,
    );
    assert_eq!(
        served_by_tonic.len(),
        pairs[0].2.calls.len() + pairs[1].2.calls.len()
    );
    // tonic (h2) never indexes `:path`: every call is named, even late ones.
    for s in &served_by_tonic {
        let method = text(s, "rpc.method").expect("named");
        assert!(
            method.starts_with("demo.Echo/") || method == "_OTHER",
            "{s:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hyper_http2_server_and_curl() {
    if !privileged("a_hyper_http2_server_and_curl") {
        return;
    }
    let server = Server::spawn(Command::new(env!("CARGO_BIN_EXE_http_peer")).arg("h2server"));
    let mut agent = agent_for(&[server.port], None).await;
    let mut pids = vec![server.pid()];
    for path in ["/users/1", "/users/2", "/status/503", "/nothing"] {
        let args = vec![
            "--http2-prior-knowledge".to_string(),
            "-o".into(),
            "/dev/null".into(),
            server.url(path),
        ];
        pids.push(curl(args).await.0);
    }
    let spans = agent.spans_until(&pids, DEADLINE, |s| s.len() >= 8).await;
    let mut served: Vec<(String, Option<i64>)> = of(&spans, server.pid(), SpanKind::Server)
        .iter()
        .map(|s| {
            assert_eq!(text(s, "network.protocol.version"), Some("2"));
            (s.name.clone(), int(s, "http.response.status_code"))
        })
        .collect();
    served.sort();
    assert_eq!(
        served,
        vec![
            ("GET /nothing".to_string(), Some(404)),
            ("GET /status/{id}".to_string(), Some(503)),
            ("GET /users/{id}".to_string(), Some(200)),
            ("GET /users/{id}".to_string(), Some(200)),
        ]
    );
    assert_eq!(spans.len(), 8, "one client span per curl too");
}

/// Hostile HTTP/2, each on its own connection to nginx: a frame with a bad
/// length, a CONTINUATION flood, a header block larger than the capture, an
/// HPACK table size update past any limit, random bytes after the preface.
const HOSTILE: &str = r#"
import os, socket, struct, sys
port = int(sys.argv[1])
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload
SETTINGS = frame(4, 0, 0, b"")
def literal(name, value):
    # Literal without indexing, new name; lengths < 127 bytes or 3-byte form.
    def s(b):
        if len(b) < 127:
            return bytes([len(b)]) + b
        n = len(b) - 127
        out = bytes([127])
        while n >= 128:
            out += bytes([n % 128 + 128]); n //= 128
        return out + bytes([n]) + b
    return b"\x00" + s(name) + s(value)
REQUEST = b"\x82\x86\x84" + literal(b":authority", b"x")
cases = [
    frame(6, 0, 0, b"1234567"),                                   # PING of 7 bytes
    frame(1, 0, 1, REQUEST) + b"".join(frame(9, 0, 1, b"\x00") for _ in range(400)),
    frame(1, 0, 1, REQUEST) + frame(9, 4, 1, literal(b"x-big", b"v" * 20000)),
    frame(1, 5, 1, b"\x3f\xe1\xff\xff\xff\x0f" + REQUEST),        # size update 2^31
    os.urandom(6000),
]
for case in cases:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(PREFACE + SETTINGS + case)
    s.settimeout(0.5)
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass
    s.close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http2_is_counted_and_later_traffic_is_still_right() {
    if !privileged("hostile_http2_is_counted_and_later_traffic_is_still_right") {
        return;
    }
    let nginx = Server::h2_nginx();
    let mut agent = agent_for(&[nginx.port], None).await;
    let port = nginx.port.to_string();
    tokio::task::spawn_blocking(move || {
        let status = Command::new("python3")
            .args(["-c", HOSTILE, &port])
            .status()
            .expect("python3");
        assert!(status.success());
    })
    .await
    .expect("join");
    let args = vec![
        "--http2-prior-knowledge".to_string(),
        "-o".into(),
        "/dev/null".into(),
        nginx.url("/after"),
    ];
    let (curl_pid, _) = curl(args).await;
    let spans = agent
        .spans_until(&[curl_pid], DEADLINE, |s| !s.is_empty())
        .await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].name, "GET /after");
    assert_eq!(int(&spans[0], "http.response.status_code"), Some(200));
    let snapshot = agent.handle.snapshot();
    let errors: Vec<&str> = snapshot
        .parse_errors
        .iter()
        .filter(|((protocol, _), _)| *protocol == "http2")
        .map(|((_, reason), _)| *reason)
        .collect();
    for reason in ["frame_bad_length", "header_block_lost"] {
        assert!(errors.contains(&reason), "{reason} counted: {errors:?}");
    }
    // 400 one-byte CONTINUATION frames: the parser's flood bound, or, when
    // the kernel's frame walk runs out of steps first, lost framing.
    assert!(
        errors.contains(&"continuation_flood") || errors.contains(&"framing_lost"),
        "{errors:?}"
    );
    eprintln!("hostile HTTP/2 counted as: {errors:?}");
}
