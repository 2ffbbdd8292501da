//! HTTP RED metrics from spans: request duration and body sizes, server and
//! client, with the semantic-conventions attributes
//! (<https://opentelemetry.io/docs/specs/semconv/http/http-metrics/>).

use super::{DURATION_BUCKETS, HistogramFamily, Labels, SIZE_BUCKETS};
use crate::spans::{Span, SpanKind, Value, measure::Measure};

pub struct HttpMetrics {
    pub server_duration: HistogramFamily,
    pub server_request_size: HistogramFamily,
    pub server_response_size: HistogramFamily,
    pub client_duration: HistogramFamily,
    pub client_request_size: HistogramFamily,
    pub client_response_size: HistogramFamily,
}

/// Attributes copied from spans to metrics (never url.path, url.full or peers:
/// unbounded).
const SERVER_LABELS: &[&str] = &[
    "http.request.method",
    "http.response.status_code",
    "http.route",
    "url.scheme",
    "network.protocol.version",
    "error.type",
];
const CLIENT_LABELS: &[&str] = &[
    "http.request.method",
    "http.response.status_code",
    "url.scheme",
    "network.protocol.version",
    "error.type",
    "server.address",
    "server.port",
];

/// Metric attributes of an HTTP span: the bounded ones, and `service.name`.
/// Requests are recorded from a [`Measure`] without building the span; this is
/// the definition its labels are tested against.
pub fn labels(span: &Span) -> Labels {
    let names = match span.kind {
        SpanKind::Server => SERVER_LABELS,
        SpanKind::Client => CLIENT_LABELS,
    };
    let mut labels: Labels = names
        .iter()
        .filter_map(|&name| {
            span.attribute(name).map(|v| {
                (
                    name,
                    match v {
                        Value::Str(s) => s.clone(),
                        Value::Int(i) => i.to_string(),
                        Value::StrArray(a) => a.join(","),
                    },
                )
            })
        })
        .collect();
    labels.extend(super::resource_labels(&span.resource));
    labels.sort();
    labels
}

impl HttpMetrics {
    pub fn new(max_series: usize) -> HttpMetrics {
        let h =
            |name, unit, help, bounds| HistogramFamily::new(name, unit, help, bounds, max_series);
        HttpMetrics {
            server_duration: h(
                "http.server.request.duration",
                "s",
                "Duration of HTTP server requests.",
                DURATION_BUCKETS,
            ),
            server_request_size: h(
                "http.server.request.body.size",
                "By",
                "Size of HTTP server request bodies.",
                SIZE_BUCKETS,
            ),
            server_response_size: h(
                "http.server.response.body.size",
                "By",
                "Size of HTTP server response bodies.",
                SIZE_BUCKETS,
            ),
            client_duration: h(
                "http.client.request.duration",
                "s",
                "Duration of HTTP client requests.",
                DURATION_BUCKETS,
            ),
            client_request_size: h(
                "http.client.request.body.size",
                "By",
                "Size of HTTP client request bodies.",
                SIZE_BUCKETS,
            ),
            client_response_size: h(
                "http.client.response.body.size",
                "By",
                "Size of HTTP client response bodies.",
                SIZE_BUCKETS,
            ),
        }
    }

    pub fn families(&self) -> [&HistogramFamily; 6] {
        [
            &self.server_duration,
            &self.server_request_size,
            &self.server_response_size,
            &self.client_duration,
            &self.client_request_size,
            &self.client_response_size,
        ]
    }

    /// Records one exchange (every exchange, sampled or not) under its
    /// [`Measure::label_pairs`].
    pub fn record_measure(&mut self, m: &Measure<'_>, labels: &[(&'static str, &str)]) {
        let (duration, req, resp) = match m.kind {
            SpanKind::Server => (
                &mut self.server_duration,
                &mut self.server_request_size,
                &mut self.server_response_size,
            ),
            SpanKind::Client => (
                &mut self.client_duration,
                &mut self.client_request_size,
                &mut self.client_response_size,
            ),
        };
        let hash = super::hash_pairs(labels);
        duration.record_hashed(labels, hash, m.duration_ns as f64 / 1e9);
        req.record_hashed(labels, hash, m.request_body_bytes as f64);
        resp.record_hashed(labels, hash, m.response_body_bytes as f64);
    }
}
