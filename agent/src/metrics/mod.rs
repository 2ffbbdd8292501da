//! RED metrics: histograms keyed by label sets, bounded per metric, rendered as
//! Prometheus text and exported over OTLP.
//!
//! Names follow the OpenTelemetry semantic conventions
//! (`http.server.request.duration`, seconds); the Prometheus names are the
//! standard translation (`http_server_request_duration_seconds`, attributes with
//! `_` for `.`). When a metric reaches its series cap, new label sets go to one
//! series with only `otel.metric.overflow="true"`, as the OTel SDKs do.

pub mod dns;
pub mod http;
pub mod prometheus;

use std::collections::BTreeMap;

/// Labels of one series, sorted by name (OTel attribute names).
pub type Labels = Vec<(&'static str, String)>;

/// Semantic-conventions buckets for HTTP durations (seconds).
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Buckets for body sizes (bytes): powers of 4 from 64 B to 64 MiB.
pub const SIZE_BUCKETS: &[f64] = &[
    0.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Per bucket (not cumulative); one more than the bounds for +Inf.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn record(&mut self, bounds: &[f64], value: f64) {
        // Prometheus buckets are upper-inclusive (le).
        let i = bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(bounds.len());
        self.counts[i] += 1;
        self.sum += value;
        self.count += 1;
    }
}

/// One histogram metric and its series.
#[derive(Debug)]
pub struct HistogramFamily {
    /// OTel name, e.g. `http.server.request.duration`.
    pub name: &'static str,
    /// UCUM unit: `s` or `By`.
    pub unit: &'static str,
    pub help: &'static str,
    pub bounds: &'static [f64],
    pub series: BTreeMap<Labels, Histogram>,
    max_series: usize,
    /// Measurements that went to the overflow series.
    pub overflowed: u64,
}

impl HistogramFamily {
    pub fn new(
        name: &'static str,
        unit: &'static str,
        help: &'static str,
        bounds: &'static [f64],
        max_series: usize,
    ) -> HistogramFamily {
        HistogramFamily {
            name,
            unit,
            help,
            bounds,
            series: BTreeMap::new(),
            max_series,
            overflowed: 0,
        }
    }

    pub fn record(&mut self, mut labels: Labels, value: f64) {
        labels.sort();
        self.record_sorted(&labels, value);
    }

    /// Records with labels already sorted; allocates only for a new series (this
    /// runs for every request).
    pub fn record_sorted(&mut self, labels: &Labels, value: f64) {
        let bounds = self.bounds;
        if let Some(h) = self.series.get_mut(labels) {
            h.record(bounds, value);
            return;
        }
        let key = if self.series.len() + 1 >= self.max_series {
            self.overflowed += 1;
            vec![("otel.metric.overflow", "true".to_string())]
        } else {
            labels.clone()
        };
        self.series
            .entry(key)
            .or_insert_with(|| Histogram::new(bounds))
            .record(bounds, value);
    }

    /// Total measurements over all series.
    pub fn total(&self) -> u64 {
        self.series.values().map(|h| h.count).sum()
    }
}

/// One counter metric and its series.
#[derive(Debug)]
pub struct CounterFamily {
    /// OTel name, e.g. `dns.responses`.
    pub name: &'static str,
    pub help: &'static str,
    pub series: BTreeMap<Labels, u64>,
    max_series: usize,
}

impl CounterFamily {
    pub fn new(name: &'static str, help: &'static str, max_series: usize) -> CounterFamily {
        CounterFamily {
            name,
            help,
            series: BTreeMap::new(),
            max_series,
        }
    }

    pub fn add(&mut self, mut labels: Labels, n: u64) {
        labels.sort();
        if let Some(v) = self.series.get_mut(&labels) {
            *v += n;
            return;
        }
        if self.series.len() + 1 >= self.max_series {
            labels = vec![("otel.metric.overflow", "true".to_string())];
        }
        *self.series.entry(labels).or_default() += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_into_upper_inclusive_buckets() {
        let mut f = HistogramFamily::new("d", "s", "h", DURATION_BUCKETS, 10);
        f.record(vec![("a", "1".into())], 0.005);
        f.record(vec![("a", "1".into())], 0.006);
        f.record(vec![("a", "1".into())], 60.0);
        let h = f.series.values().next().unwrap();
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[DURATION_BUCKETS.len()], 1);
        assert_eq!(h.count, 3);
    }

    #[test]
    fn series_beyond_the_cap_go_to_the_overflow_series() {
        let mut f = HistogramFamily::new("d", "s", "h", DURATION_BUCKETS, 3);
        for i in 0..10 {
            f.record(vec![("route", format!("/{i}"))], 0.1);
        }
        assert_eq!(f.series.len(), 3);
        assert_eq!(f.total(), 10);
        assert_eq!(f.overflowed, 8);
        assert!(
            f.series
                .contains_key(&vec![("otel.metric.overflow", "true".to_string())])
        );
    }
}
