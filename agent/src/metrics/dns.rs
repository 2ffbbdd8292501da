//! DNS metrics: lookup duration (`dns.lookup.duration`, seconds) by query type,
//! resolver and error, and responses by response code. Question names are
//! unbounded and never become labels.

use super::{CounterFamily, DURATION_BUCKETS, HistogramFamily, Labels, resource_labels};
use crate::spans::{Span, Value};

pub struct DnsMetrics {
    pub duration: HistogramFamily,
    pub responses: CounterFamily,
}

/// Span attributes that become metric labels.
const LABELS: &[&str] = &["dns.question.type", "server.address", "error.type"];

impl DnsMetrics {
    pub fn new(max_series: usize) -> DnsMetrics {
        DnsMetrics {
            duration: HistogramFamily::new(
                "dns.lookup.duration",
                "s",
                "Duration of DNS lookups.",
                DURATION_BUCKETS,
                max_series,
            ),
            responses: CounterFamily::new(
                "dns.responses",
                "DNS responses by response code.",
                max_series,
            ),
        }
    }

    /// Records a DNS lookup span.
    pub fn record(&mut self, span: &Span) {
        let mut labels: Labels = LABELS
            .iter()
            .filter_map(|&k| match span.attribute(k) {
                Some(Value::Str(s)) => Some((k, s.clone())),
                Some(Value::Int(i)) => Some((k, i.to_string())),
                _ => None,
            })
            .collect();
        labels.extend(resource_labels(&span.resource));
        labels.sort();
        self.duration
            .record_sorted(&labels, span.duration_ns() as f64 / 1e9);
        if let Some(Value::Str(code)) = span.attribute("dns.response.code") {
            let mut labels = vec![("dns.response.code", code.clone())];
            labels.extend(resource_labels(&span.resource));
            self.responses.add(labels, 1);
        }
    }
}
