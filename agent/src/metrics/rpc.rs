//! RPC metrics: call duration, server and client, in seconds with the
//! semantic-conventions buckets and attributes
//! (<https://opentelemetry.io/docs/specs/semconv/rpc/rpc-metrics/>):
//! `rpc.system.name`, `rpc.method`, `rpc.response.status_code`, `error.type`,
//! and on clients `server.address`/`server.port`. Streaming calls are measured
//! over their whole life.

use super::{DURATION_BUCKETS, HistogramFamily};
use crate::spans::SpanKind;

pub struct RpcMetrics {
    pub server_duration: HistogramFamily,
    pub client_duration: HistogramFamily,
}

impl RpcMetrics {
    pub fn new(max_series: usize) -> RpcMetrics {
        let h = |name, help| HistogramFamily::new(name, "s", help, DURATION_BUCKETS, max_series);
        RpcMetrics {
            server_duration: h("rpc.server.call.duration", "Duration of RPCs served."),
            client_duration: h("rpc.client.call.duration", "Duration of RPCs made."),
        }
    }

    pub fn families(&self) -> [&HistogramFamily; 2] {
        [&self.server_duration, &self.client_duration]
    }

    /// Records one call under its label pairs (sorted by name).
    pub fn record(&mut self, kind: SpanKind, labels: &[(&'static str, &str)], duration_ns: u64) {
        let family = match kind {
            SpanKind::Server => &mut self.server_duration,
            SpanKind::Client => &mut self.client_duration,
        };
        family.record_pairs(labels, duration_ns as f64 / 1e9);
    }
}
