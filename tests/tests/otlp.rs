//! OTLP export end to end: the agent's spans and RED metrics, decoded by a
//! receiver built on `opentelemetry-proto`, over gRPC and HTTP/protobuf; and an
//! unreachable backend that must not disturb capture. Needs root; skips with a
//! message otherwise.

use std::time::{Duration, Instant};

use agent::{
    Settings,
    export::otlp::{OtlpSettings, Protocol},
};
use e2e::{
    Running,
    otlp_receiver::{self, Received},
    peers::{Server, curl_urls},
    privileged, settings_for_ports,
};
use opentelemetry_proto::tonic::{
    collector::{metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{AnyValue, KeyValue, any_value},
    metrics::v1::metric::Data,
    trace::v1::span::SpanKind,
};

const DEADLINE: Duration = Duration::from_secs(30);

fn otlp_settings(protocol: Protocol, traces: String, metrics: String) -> OtlpSettings {
    let resource = vec![("deployment.environment".into(), "e2e".into())];
    otlp_receiver::settings(protocol, traces, metrics, resource)
}

fn agent_settings(port: u16, otlp: OtlpSettings) -> Settings {
    Settings {
        otlp: Some(otlp),
        ..settings_for_ports(&[port])
    }
}

/// The DNS test server, killed on drop.
struct DnsServer(std::process::Child, u16);

impl DnsServer {
    fn start() -> DnsServer {
        let (child, port) = e2e::peers::spawn_listening(
            std::process::Command::new(env!("CARGO_BIN_EXE_dns_peer")).arg("127.0.0.1:0"),
        );
        DnsServer(child, port)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spans named `name` in the received trace requests.
fn named(requests: &[ExportTraceServiceRequest], name: &str) -> usize {
    requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .filter(|s| s.name == name)
        .count()
}

fn has_metric(requests: &[ExportMetricsServiceRequest], name: &str) -> bool {
    requests
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .any(|m| m.name == name)
}

fn string(kv: &[KeyValue], key: &str) -> Option<String> {
    kv.iter()
        .find(|a| a.key == key)
        .and_then(|a| match &a.value {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(s)),
            }) => Some(s.clone()),
            _ => None,
        })
}

fn int(kv: &[KeyValue], key: &str) -> Option<i64> {
    kv.iter()
        .find(|a| a.key == key)
        .and_then(|a| match &a.value {
            Some(AnyValue {
                value: Some(any_value::Value::IntValue(i)),
            }) => Some(*i),
            _ => None,
        })
}

/// Server spans of `pid` in the received trace requests.
fn server_spans(
    requests: &[ExportTraceServiceRequest],
    pid: u32,
) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
    requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .filter(|rs| {
            rs.resource
                .as_ref()
                .and_then(|r| int(&r.attributes, "process.pid"))
                == Some(i64::from(pid))
        })
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| ss.spans.clone())
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect()
}

/// The count of the server duration histogram for `pid`'s service (latest export).
fn server_duration_count(requests: &[ExportMetricsServiceRequest], pid: u32) -> u64 {
    let mut latest = 0;
    for rm in requests.iter().flat_map(|r| &r.resource_metrics) {
        if rm
            .resource
            .as_ref()
            .and_then(|r| int(&r.attributes, "process.pid"))
            != Some(i64::from(pid))
        {
            continue;
        }
        for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            if metric.name != "http.server.request.duration" {
                continue;
            }
            assert_eq!(metric.unit, "s");
            if let Some(Data::Histogram(h)) = &metric.data {
                let count: u64 = h.data_points.iter().map(|p| p.count).sum();
                latest = latest.max(count);
                for p in &h.data_points {
                    assert_eq!(p.explicit_bounds, agent::metrics::DURATION_BUCKETS);
                    assert_eq!(
                        string(&p.attributes, "http.route").as_deref(),
                        Some("/users/{id}")
                    );
                }
            }
        }
    }
    latest
}

async fn export_roundtrip(protocol: Protocol, addr: std::net::SocketAddr, mut received: Received) {
    let server = Server::start();
    let dns = DnsServer::start();
    let (traces, metrics) = match protocol {
        Protocol::Grpc => (format!("http://{addr}"), format!("http://{addr}")),
        Protocol::HttpProtobuf => (
            format!("http://{addr}/v1/traces"),
            format!("http://{addr}/v1/metrics"),
        ),
    };
    let mut settings = agent_settings(server.port, otlp_settings(protocol, traces, metrics));
    settings.ports.push(dns.1);
    settings.dns_ports = vec![dns.1];
    let agent = Running::start(settings).await.expect("agent starts");
    let urls: Vec<String> = (0..5).map(|i| server.url(&format!("/users/{i}"))).collect();
    let client = curl_urls(&urls).await;
    let dns_port = dns.1.to_string();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &dns_port,
                "a.test",
                "+tries=1",
                "+time=1",
                "+short",
            ])
            .output()
            .expect("dig");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10.1.0.1");
    })
    .await
    .expect("dig");

    let pid = server.pid();
    let got = received
        .traces_until(DEADLINE, |r| {
            server_spans(r, pid).len() >= 5 && named(r, "DNS A") >= 1
        })
        .await;
    assert_eq!(named(&got, "DNS A"), 1, "the DNS lookup over OTLP");
    let spans = server_spans(&got, pid);
    assert_eq!(spans.len(), 5, "server spans over OTLP");
    let span = &spans[0];
    assert_eq!(span.name, "GET /users/{id}");
    assert_eq!(span.trace_id.len(), 16);
    assert_eq!(span.span_id.len(), 8);
    assert!(span.end_time_unix_nano > span.start_time_unix_nano);
    assert_eq!(
        int(&span.attributes, "http.response.status_code"),
        Some(200)
    );
    assert_eq!(
        string(&span.attributes, "http.request.method").as_deref(),
        Some("GET")
    );
    let resource = got
        .iter()
        .flat_map(|r| &r.resource_spans)
        .find_map(|rs| {
            rs.resource
                .clone()
                .filter(|r| int(&r.attributes, "process.pid") == Some(i64::from(pid)))
        })
        .expect("resource");
    assert!(string(&resource.attributes, "service.name").is_some_and(|n| n.starts_with("python")));
    assert_eq!(
        string(&resource.attributes, "deployment.environment").as_deref(),
        Some("e2e")
    );
    assert_eq!(
        string(&resource.attributes, "os.type").as_deref(),
        Some("linux")
    );
    // The client's spans are a different resource (curl's process), grouped apart.
    assert!(got.iter().flat_map(|r| &r.resource_spans).any(|rs| {
        rs.resource
            .as_ref()
            .and_then(|r| int(&r.attributes, "process.pid"))
            == Some(i64::from(client))
    }));

    let metrics = received
        .metrics_until(DEADLINE, |r| {
            server_duration_count(r, pid) >= 5 && has_metric(r, "dns.lookup.duration")
        })
        .await;
    assert_eq!(
        server_duration_count(&metrics, pid),
        5,
        "histogram count over OTLP"
    );
    assert!(has_metric(&metrics, "dns.lookup.duration"));
    agent.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_over_grpc() {
    if !privileged("spans_and_metrics_over_grpc") {
        return;
    }
    let (addr, received) = otlp_receiver::grpc().await.expect("grpc receiver");
    export_roundtrip(Protocol::Grpc, addr, received).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_over_http_protobuf() {
    if !privileged("spans_and_metrics_over_http_protobuf") {
        return;
    }
    let (addr, received) = otlp_receiver::http().await.expect("http receiver");
    export_roundtrip(Protocol::HttpProtobuf, addr, received).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_never_blocks_capture() {
    if !privileged("an_unreachable_backend_never_blocks_capture") {
        return;
    }
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let server = Server::start();
    let mut otlp = otlp_settings(
        Protocol::Grpc,
        format!("http://{dead}"),
        format!("http://{dead}"),
    );
    otlp.batching.max_queue = 8;
    otlp.batching.timeout = Duration::from_millis(500);
    let mut agent = Running::start(agent_settings(server.port, otlp))
        .await
        .expect("agent starts");
    let urls: Vec<String> = (0..30)
        .map(|i| server.url(&format!("/users/{i}")))
        .collect();
    curl_urls(&urls).await;
    // Capture and the local outputs keep going.
    let spans = agent
        .spans_until(&[server.pid()], DEADLINE, |s| s.len() >= 30)
        .await;
    assert_eq!(spans.len(), 30);
    let started = Instant::now();
    let stats = agent.handle.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        started.elapsed()
    );
    assert_eq!(stats.spans_exported, 0);
    // 60 spans (server + client), none delivered: every one is counted as
    // dropped, either refused by the full queue or given up by the exporter.
    assert_eq!(
        stats.spans_export_dropped + stats.dropped_span_queue_full,
        60,
        "{stats:?}"
    );
}
