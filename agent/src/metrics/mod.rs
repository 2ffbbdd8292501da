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
pub mod rpc;

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasherDefault, Hasher},
};

/// The series index is keyed by [`hash_pairs`] already: hashing that u64 again
/// with SipHash would be wasted work.
#[derive(Default)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Labels of one series, sorted by name (OTel attribute names).
pub type Labels = Vec<(&'static str, String)>;

/// A process's resource labels (`service.name`, and its pod's in
/// Kubernetes), owned.
pub fn resource_labels(
    resource: &crate::discovery::Resource,
) -> impl Iterator<Item = (&'static str, String)> + '_ {
    resource
        .metric_labels()
        .map(|(name, value)| (name, value.to_string()))
}

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
///
/// Recording runs for every request, so a series is found from borrowed label
/// values through a hash index, without building an owned label set; owned
/// labels are made once per new series. Rendering walks them in label order.
#[derive(Debug)]
pub struct HistogramFamily {
    /// OTel name, e.g. `http.server.request.duration`.
    pub name: &'static str,
    /// UCUM unit: `s` or `By`.
    pub unit: &'static str,
    pub help: &'static str,
    pub bounds: &'static [f64],
    /// Every series, in creation order (sorted when rendered).
    series: Vec<(Labels, Histogram)>,
    /// Hash of the label pairs → slots in `series` with that hash.
    by_hash: HashMap<u64, Vec<usize>, BuildHasherDefault<IdentityHasher>>,
    max_series: usize,
    /// Measurements that went to the overflow series.
    pub overflowed: u64,
}

/// Hash of label pairs for the series index: a multiply-rotate hash over
/// 8-byte words (the `FxHash` scheme), several times cheaper than SipHash on
/// the short strings labels are. Not keyed: collisions only cost a compare,
/// and label values are bounded by the series cap.
pub fn hash_pairs(pairs: &[(&'static str, &str)]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = 0;
    let mut mix = |word: u64| h = (h.rotate_left(5) ^ word).wrapping_mul(K);
    for (k, v) in pairs {
        for s in [k.as_bytes(), v.as_bytes()] {
            let mut chunks = s.chunks_exact(8);
            for c in &mut chunks {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                mix(u64::from_le_bytes(w));
            }
            let mut w = [0u8; 8];
            let rest = chunks.remainder();
            w[..rest.len()].copy_from_slice(rest);
            // The length separates "ab","c" from "a","bc".
            mix(u64::from_le_bytes(w) ^ ((s.len() as u64) << 56));
        }
    }
    h
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
            series: Vec::new(),
            by_hash: HashMap::default(),
            max_series,
            overflowed: 0,
        }
    }

    pub fn record(&mut self, mut labels: Labels, value: f64) {
        labels.sort();
        self.record_sorted(&labels, value);
    }

    /// Records with labels already sorted.
    pub fn record_sorted(&mut self, labels: &Labels, value: f64) {
        let pairs: Vec<(&'static str, &str)> =
            labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.record_pairs(&pairs, value);
    }

    /// Records with borrowed label pairs sorted by name; allocates only for a
    /// new series.
    pub fn record_pairs(&mut self, pairs: &[(&'static str, &str)], value: f64) {
        self.record_hashed(pairs, hash_pairs(pairs), value);
    }

    /// [`record_pairs`](Self::record_pairs) with the pairs' [`hash_pairs`]
    /// already computed (families recorded together share it).
    pub fn record_hashed(&mut self, pairs: &[(&'static str, &str)], hash: u64, value: f64) {
        let slot = match self.find(pairs, hash) {
            Some(slot) => slot,
            None if self.series.len() + 1 >= self.max_series => {
                self.overflowed += 1;
                let overflow = [("otel.metric.overflow", "true")];
                let hash = hash_pairs(&overflow);
                self.find(&overflow, hash)
                    .unwrap_or_else(|| self.insert(&overflow, hash))
            }
            None => self.insert(pairs, hash),
        };
        self.series[slot].1.record(self.bounds, value);
    }

    fn find(&self, pairs: &[(&'static str, &str)], hash: u64) -> Option<usize> {
        let same = |key: &Labels| {
            key.len() == pairs.len()
                && key
                    .iter()
                    .zip(pairs)
                    .all(|((k, v), (pk, pv))| k == pk && v == pv)
        };
        self.by_hash
            .get(&hash)?
            .iter()
            .copied()
            .find(|&i| same(&self.series[i].0))
    }

    fn insert(&mut self, pairs: &[(&'static str, &str)], hash: u64) -> usize {
        let slot = self.series.len();
        let labels = pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
        self.series.push((labels, Histogram::new(self.bounds)));
        self.by_hash.entry(hash).or_default().push(slot);
        slot
    }

    /// Every series, in label order.
    pub fn series(&self) -> impl Iterator<Item = (&Labels, &Histogram)> {
        let mut sorted: Vec<(&Labels, &Histogram)> =
            self.series.iter().map(|(k, h)| (k, h)).collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        sorted.into_iter()
    }

    /// Series count.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Total measurements over all series.
    pub fn total(&self) -> u64 {
        self.series.iter().map(|(_, h)| h.count).sum()
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
        let (_, h) = f.series().next().unwrap();
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
        assert_eq!(f.len(), 3);
        assert_eq!(f.total(), 10);
        assert_eq!(f.overflowed, 8);
        assert!(
            f.series()
                .any(|(k, _)| *k == vec![("otel.metric.overflow", "true".to_string())])
        );
    }

    #[test]
    fn borrowed_and_owned_labels_reach_the_same_series() {
        let mut f = HistogramFamily::new("d", "s", "h", DURATION_BUCKETS, 10);
        f.record(vec![("b", "2".into()), ("a", "1".into())], 0.1);
        f.record_pairs(&[("a", "1"), ("b", "2")], 0.2);
        f.record_pairs(&[("a", "1"), ("b", "3")], 0.2);
        let series: Vec<_> = f.series().map(|(k, h)| (k.clone(), h.count)).collect();
        assert_eq!(
            series,
            vec![
                (vec![("a", "1".to_string()), ("b", "2".to_string())], 2),
                (vec![("a", "1".to_string()), ("b", "3".to_string())], 1),
            ]
        );
    }
}
