//! Log lines with their trace, no SDK (`--logs`): what a server writes to
//! stdout and stderr while serving a request becomes an OTLP log record with
//! that request's trace and span ids; what it writes outside a request has
//! none; secrets are redacted; the application's own output is untouched.

use std::{collections::HashMap, time::Duration};

use agent::{
    config::{LogSettings, Settings},
    export::otlp::Protocol,
    spans::{Span, SpanKind},
};
use e2e::{Running, otlp_receiver, peers, privileged, settings_for_ports};
use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{AnyValue, any_value},
    logs::v1::LogRecord,
};

const DEADLINE: Duration = Duration::from_secs(20);
/// The names the test programs give themselves (`prctl(PR_SET_NAME)`),
/// which `--logs` matches: one per test, as tests run side by side.
const SERVER_NAME: &str = "logsrv";
const WRITER_NAME: &str = "logwriter";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// Every log record received, with its resource's `service.name`.
fn records(requests: &[ExportLogsServiceRequest]) -> Vec<(String, LogRecord)> {
    let mut out = Vec::new();
    for request in requests {
        for rl in &request.resource_logs {
            let service = rl
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .map(|kv| text(&kv.value))
                .unwrap_or_default();
            for sl in &rl.scope_logs {
                for record in &sl.log_records {
                    out.push((service.clone(), record.clone()));
                }
            }
        }
    }
    out
}

fn attribute(record: &LogRecord, key: &str) -> Option<String> {
    record
        .attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(&kv.value))
}

async fn agent_logging(otlp: std::net::SocketAddr, port: u16, name: &str) -> Running {
    let logs = LogSettings {
        exes: vec![name.to_string()],
        ..LogSettings::default()
    };
    let settings = logging_settings(Protocol::Grpc, format!("http://{otlp}"), port, logs);
    Running::start(settings).await.expect("agent starts")
}

/// Agent settings exporting only logs, over `protocol` to `endpoint`.
fn logging_settings(
    protocol: Protocol,
    endpoint: String,
    port: u16,
    logs: LogSettings,
) -> Settings {
    let mut otlp = otlp_receiver::settings(protocol, String::new(), String::new(), Vec::new());
    otlp.traces = None;
    otlp.metrics = None;
    otlp.logs = Some(protocol);
    otlp.logs_endpoint = Some(endpoint);
    Settings {
        otlp: Some(otlp),
        logs,
        ..settings_for_ports(&[port])
    }
}

/// Waits until the agent logs a process (its scan runs each second).
async fn listed(agent: &Running) {
    e2e::metric_line(agent, "agent_log_processes ").await;
}

/// The server: `/work` logs while serving, `/quiet` does not; a background
/// thread logs on its own; it names itself `logsrv` first and waits for
/// `go` on stdin (the agent lists it meanwhile).
const SERVER: &str = r#"
import ctypes, http.server, os, sys, threading, time
ctypes.CDLL(None).prctl(15, b"logsrv", 0, 0, 0)
sys.stdin.readline()
def background():
    while True:
        os.write(1, b"INFO background tick\n")
        time.sleep(0.05)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/work":
            os.write(1, b'{"level":"error","msg":"payment failed for alice@example.com"}\n')
            os.write(1, b"WARN retrying login password=hunter2 now\n")
            os.write(1, b"Traceback (most recent call last):\n  File \"app.py\", line 1\nValueError: boom\n")
            os.write(1, b"x" * 5000 + b"\n")
            os.write(2, b"ERROR upstream said Authorization: Bearer abc.def.ghi\n")
            os.write(1, b"card 4111 1111 1111 1111 and order 1234567812345678\n")
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
threading.Thread(target=background, daemon=True).start()
server.serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_written_while_serving_carry_the_request_and_secrets_are_redacted() {
    let test = "lines_written_while_serving_carry_the_request_and_secrets_are_redacted";
    if !privileged(test) {
        return;
    }
    let (otlp, mut received) = otlp_receiver::grpc().await.expect("receiver");
    let port = peers::free_port();
    let mut agent = agent_logging(otlp, port, SERVER_NAME).await;
    let mut server = std::process::Command::new("python3")
        .arg("-c")
        .arg(SERVER)
        .arg(port.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    listed(&agent).await;
    {
        use std::io::Write as _;
        let mut stdin = server.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("go");
    }
    peers::wait_listening(port, "the server");
    let client = peers::python(format!(
        r#"
import http.client
c = http.client.HTTPConnection("127.0.0.1", {port})
for p in ("/quiet", "/work", "/quiet"):
    c.request("GET", p); c.getresponse().read()
"#
    ))
    .await;
    let _ = client;
    let spans = agent
        .spans_until(&[server.id()], DEADLINE, |s| s.len() >= 3)
        .await;
    let work: &Span = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server && s.name.contains("/work"))
        .unwrap_or_else(|| panic!("the /work span: {spans:#?}"));
    let until = std::time::Instant::now() + DEADLINE;
    let mut requests = Vec::new();
    while std::time::Instant::now() < until {
        if let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(500), received.logs.recv()).await
        {
            requests.push(r);
        }
        let got = records(&requests);
        if got.iter().any(|(_, r)| text(&r.body).starts_with("card"))
            && got
                .iter()
                .filter(|(_, r)| text(&r.body).contains("background"))
                .count()
                > 3
        {
            break;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    agent.handle.stop().await;

    let got = records(&requests);
    let (request_lines, other): (Vec<_>, Vec<_>) =
        got.iter().partition(|(_, r)| !r.span_id.is_empty());
    // Every line written while serving /work, in order, with its ids.
    let bodies: Vec<String> = request_lines.iter().map(|(_, r)| text(&r.body)).collect();
    let long = "x".repeat(4096);
    let expected = [
        r#"{"level":"error","msg":"payment failed for [REDACTED]"}"#,
        "WARN retrying login password=[REDACTED] now",
        "Traceback (most recent call last):",
        "  File \"app.py\", line 1",
        "ValueError: boom",
        long.as_str(),
        "ERROR upstream said Authorization: [REDACTED]",
        "card [REDACTED] and order 1234567812345678",
    ];
    assert_eq!(bodies, expected, "{request_lines:#?}");
    for (service, record) in &request_lines {
        assert_eq!(hex(&record.trace_id), hex(&work.trace_id));
        assert_eq!(hex(&record.span_id), hex(&work.span_id));
        assert_eq!(service, &work.resource.service_name, "the spans' resource");
    }
    let by_body: HashMap<String, &LogRecord> = request_lines
        .iter()
        .map(|(_, r)| (text(&r.body), r))
        .collect();
    let severity = |body: &str| by_body[body].severity_number;
    assert_eq!(severity(expected[0]), 17, "JSON level");
    assert_eq!(severity(expected[1]), 13, "leading word");
    assert_eq!(by_body[expected[0]].severity_text, "ERROR");
    let stderr = by_body[expected[6]];
    assert_eq!(attribute(stderr, "log.iostream").as_deref(), Some("stderr"));
    assert_eq!(
        attribute(by_body[expected[1]], "log.iostream").as_deref(),
        Some("stdout")
    );
    assert_eq!(
        attribute(by_body[&long], "log.record.truncated").as_deref(),
        Some("true"),
        "over the cap: cut and flagged"
    );
    // The background thread's lines: recorded, never linked.
    assert!(other.len() > 3, "background lines: {other:#?}");
    assert!(
        other
            .iter()
            .all(|(_, r)| text(&r.body) == "INFO background tick" && r.trace_id.is_empty()),
        "{other:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_output_is_byte_identical_with_and_without_the_agent() {
    let test = "the_application_output_is_byte_identical_with_and_without_the_agent";
    if !privileged(test) {
        return;
    }
    let dir = e2e::profiling::temp_dir("logs-identical");
    // Names itself, waits for `go`, then writes lines with secrets in them.
    let writer = r#"
import ctypes, os, sys
ctypes.CDLL(None).prctl(15, b"logwriter", 0, 0, 0)
sys.stdin.readline()
for i in range(200):
    os.write(1, b"line %d token=secret%d mail bob@example.com\n" % (i, i))
os.write(2, b"done\n")
"#;
    let run = |out: std::path::PathBuf| {
        let file = std::fs::File::create(&out).expect("output file");
        std::process::Command::new("python3")
            .arg("-c")
            .arg(writer)
            .stdin(std::process::Stdio::piped())
            .stdout(file)
            .spawn()
            .expect("python3")
    };
    let go = |child: &mut std::process::Child| {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"go\n")
            .expect("go");
        assert!(child.wait().expect("wait").success());
    };
    let mut alone = run(dir.join("alone.txt"));
    go(&mut alone);

    let (otlp, mut received) = otlp_receiver::grpc().await.expect("receiver");
    let agent = agent_logging(otlp, 1, WRITER_NAME).await;
    let mut watched = run(dir.join("watched.txt"));
    listed(&agent).await;
    go(&mut watched);
    let until = std::time::Instant::now() + DEADLINE;
    let mut requests = Vec::new();
    while std::time::Instant::now() < until && records(&requests).len() < 201 {
        if let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(500), received.logs.recv()).await
        {
            requests.push(r);
        }
    }
    let metrics = e2e::scrape(agent.handle.prometheus.expect("Prometheus endpoint"));
    let log_metrics: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("log") && !l.starts_with('#'))
        .collect();
    agent.handle.stop().await;
    let got = records(&requests);
    assert_eq!(got.len(), 201, "every line recorded: {log_metrics:#?}");
    assert!(
        got.iter()
            .filter(|(_, r)| text(&r.body).starts_with("line"))
            .all(|(_, r)| text(&r.body).ends_with("token=[REDACTED] mail [REDACTED]")),
        "redacted in the records"
    );
    let alone = std::fs::read(dir.join("alone.txt")).expect("alone");
    let watched = std::fs::read(dir.join("watched.txt")).expect("watched");
    assert!(alone.starts_with(b"line 0 token=secret0 mail bob@example.com\n"));
    assert!(
        String::from_utf8_lossy(&watched).contains("token=secret7 mail bob@example.com"),
        "the application's own output keeps its text"
    );
    assert_eq!(alone, watched, "byte-identical");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_protobuf_within_a_byte_budget() {
    let test = "over_http_protobuf_within_a_byte_budget";
    if !privileged(test) {
        return;
    }
    let (otlp, mut received) = otlp_receiver::http().await.expect("receiver");
    let logs = LogSettings {
        exes: vec!["logbudget".into()],
        bytes_per_second: 1000,
        ..LogSettings::default()
    };
    let endpoint = format!("http://{otlp}/v1/logs");
    let agent = Running::start(logging_settings(Protocol::HttpProtobuf, endpoint, 1, logs))
        .await
        .expect("agent starts");
    // 200 lines of 40 bytes at once: about 25 fit in the second's budget.
    let mut writer = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import ctypes, os, sys
ctypes.CDLL(None).prctl(15, b"logbudget", 0, 0, 0)
sys.stdin.readline()
for i in range(200):
    os.write(1, b"INFO budgeted line number %05d......\n" % i)
"#,
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    listed(&agent).await;
    {
        use std::io::Write as _;
        let mut stdin = writer.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("go");
    }
    assert!(writer.wait().expect("wait").success());
    e2e::metric_line(&agent, "agent_events_dropped_total{reason=\"log_budget\"}").await;
    let mut requests = Vec::new();
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(2), received.logs.recv()).await
    {
        requests.push(r);
    }
    let metrics = e2e::scrape(agent.handle.prometheus.expect("Prometheus endpoint"));
    agent.handle.stop().await;
    let got = records(&requests);
    let dropped: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("agent_events_dropped_total{reason=\"log_budget\"} "))
        .and_then(|n| n.trim().parse().ok())
        .expect("a count");
    // One second's budget, or two when the burst straddles a second.
    assert!(
        (10..=60).contains(&got.len()),
        "{} lines within 1,000 bytes/s",
        got.len()
    );
    assert_eq!(got.len() + dropped, 200, "every line recorded or counted");
    assert!(got.iter().all(|(_, r)| r.severity_number == 9));
}
