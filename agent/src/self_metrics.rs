//! The agent's own counters: what it received, what it dropped and why, how full
//! its queues and tables are. Kept from the first event on, so that any gap in the
//! data has a number next to it.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::Serialize;

/// Counters shared by the pipeline tasks (relaxed atomics: each is independent).
#[derive(Debug, Default)]
pub struct SelfMetrics {
    /// Records read from the ring buffer.
    pub events_received: AtomicU64,
    /// Payload bytes received from the kernel.
    pub bytes_captured: AtomicU64,
    /// Records that did not decode.
    pub decode_errors: AtomicU64,
    /// Events dropped because the queue to the connection table was full.
    pub dropped_queue_full: AtomicU64,
    /// Events dropped because a tap (library consumer) was not keeping up.
    pub dropped_tap_full: AtomicU64,
    /// Socket lookups dropped because the resolver queue was full.
    pub dropped_resolver_full: AtomicU64,
    /// Events of processes or connections excluded by the filters.
    pub events_filtered: AtomicU64,
    /// Connections evicted from the (full) connection table.
    pub connections_evicted: AtomicU64,
    /// Connections the kernel was told to skip (no parser wants them, or the
    /// port filter excludes them).
    pub connections_opaque: AtomicU64,
    /// Bytes dropped from per-connection stream buffers that were full.
    pub stream_bytes_dropped: AtomicU64,
    /// Bytes the kernel saw but did not capture (cap or copy limits).
    pub bytes_not_captured: AtomicU64,
    /// Gauge: connections in the table.
    pub connections_tracked: AtomicU64,
    /// Gauge: bytes held by all connections' streams.
    pub stream_bytes_buffered: AtomicU64,
    /// Gauge: events waiting in the queue to the connection table.
    pub queue_len: AtomicU64,
    /// Gauge: capacity of that queue.
    pub queue_capacity: AtomicU64,
    /// Spans dropped because an output queue was full.
    pub dropped_span_queue_full: AtomicU64,
    /// Spans kept by the sampler.
    pub spans_kept: AtomicU64,
    /// Spans dropped by the sampler.
    pub spans_sampled_out: AtomicU64,
    /// Requests given the overflow route.
    pub routes_overflowed: AtomicU64,
    /// Spans accepted by the OTLP backend.
    pub spans_exported: AtomicU64,
    /// Spans dropped by the OTLP exporter (queue full while the backend is down,
    /// or a final export failed).
    pub spans_export_dropped: AtomicU64,
    /// Measurements of services beyond the OTLP metrics service cap.
    pub metrics_services_overflowed: AtomicU64,
    /// DNS queries pushed out of the full pending-query table.
    pub dns_pending_evicted: AtomicU64,
    /// CPU samples drained from the kernel.
    pub profile_samples: AtomicU64,
    /// Stack frames symbolized, and those left without a name.
    pub profile_frames: AtomicU64,
    pub profile_frames_unsymbolized: AtomicU64,
    /// Light samples folded into `[other stacks]` to meet backend limits.
    pub profile_samples_folded: AtomicU64,
    /// Gauges: process snapshots and open modules held by the symbolizer.
    pub profile_processes_cached: AtomicU64,
    pub profile_modules_cached: AtomicU64,
    /// Gauges: pods of this node in the Kubernetes store, and their containers.
    pub k8s_pods: AtomicU64,
    pub k8s_containers: AtomicU64,
    /// Pods not stored because the store was full.
    pub k8s_pods_dropped: AtomicU64,
    /// Complete pod lists received (the first, then one per expired watch or
    /// API server restart).
    pub k8s_lists: AtomicU64,
    /// Failed list or watch requests (each retried with backoff).
    pub k8s_watch_errors: AtomicU64,
    /// Parse errors by (protocol, reason).
    parse_errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Profile exports by (destination, outcome).
    profile_exports: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// TLS connections whose plaintext the agent cannot see, by executable
    /// name (bounded: past 64 names, `_other`).
    tls_not_visible: Mutex<BTreeMap<String, u64>>,
    /// Gauge: TLS library files with probes attached.
    pub tls_libraries: AtomicU64,
    /// Plaintext records from TLS library calls.
    pub tls_records: AtomicU64,
    /// Executables that speak TLS through code the agent cannot probe
    /// (stripped or pre-1.17 Go programs).
    pub tls_unprobeable_executables: AtomicU64,
    /// Gauge: processes whose stdout/stderr is logged (`--logs`).
    pub log_processes: AtomicU64,
    /// Log records made from lines.
    pub log_lines: AtomicU64,
    pub log_lines_exported: AtomicU64,
    /// Lines lost: over the per-process byte budget, or the export queue.
    pub log_lines_over_budget: AtomicU64,
    pub log_lines_export_dropped: AtomicU64,
    /// Lines that had secrets replaced.
    pub log_lines_redacted: AtomicU64,
}

impl SelfMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(gauge: &AtomicU64, n: u64) {
        gauge.store(n, Ordering::Relaxed);
    }

    pub fn parse_error(&self, protocol: &'static str, reason: &'static str) {
        *self
            .parse_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((protocol, reason))
            .or_default() += 1;
    }

    pub fn profile_export(&self, destination: &'static str, outcome: &'static str) {
        *self
            .profile_exports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((destination, outcome))
            .or_default() += 1;
    }

    pub fn tls_not_visible(&self, executable: &str) {
        const MAX_NAMES: usize = 64;
        let mut names = self
            .tls_not_visible
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = if names.contains_key(executable) || names.len() < MAX_NAMES {
            executable
        } else {
            "_other"
        };
        *names.entry(key.to_string()).or_default() += 1;
    }

    pub fn snapshot(&self, kernel_losses: Vec<(&'static str, u64)>) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            events_received: get(&self.events_received),
            bytes_captured: get(&self.bytes_captured),
            decode_errors: get(&self.decode_errors),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_tap_full: get(&self.dropped_tap_full),
            dropped_resolver_full: get(&self.dropped_resolver_full),
            events_filtered: get(&self.events_filtered),
            connections_evicted: get(&self.connections_evicted),
            connections_opaque: get(&self.connections_opaque),
            stream_bytes_dropped: get(&self.stream_bytes_dropped),
            bytes_not_captured: get(&self.bytes_not_captured),
            connections_tracked: get(&self.connections_tracked),
            stream_bytes_buffered: get(&self.stream_bytes_buffered),
            queue_len: get(&self.queue_len),
            queue_capacity: get(&self.queue_capacity),
            dropped_span_queue_full: get(&self.dropped_span_queue_full),
            spans_kept: get(&self.spans_kept),
            spans_sampled_out: get(&self.spans_sampled_out),
            routes_overflowed: get(&self.routes_overflowed),
            spans_exported: get(&self.spans_exported),
            spans_export_dropped: get(&self.spans_export_dropped),
            metrics_services_overflowed: get(&self.metrics_services_overflowed),
            dns_pending_evicted: get(&self.dns_pending_evicted),
            profile_samples: get(&self.profile_samples),
            profile_frames: get(&self.profile_frames),
            profile_frames_unsymbolized: get(&self.profile_frames_unsymbolized),
            profile_samples_folded: get(&self.profile_samples_folded),
            profile_processes_cached: get(&self.profile_processes_cached),
            profile_modules_cached: get(&self.profile_modules_cached),
            k8s_pods: get(&self.k8s_pods),
            k8s_containers: get(&self.k8s_containers),
            k8s_pods_dropped: get(&self.k8s_pods_dropped),
            k8s_lists: get(&self.k8s_lists),
            k8s_watch_errors: get(&self.k8s_watch_errors),
            tls_libraries: get(&self.tls_libraries),
            tls_records: get(&self.tls_records),
            tls_unprobeable_executables: get(&self.tls_unprobeable_executables),
            log_processes: get(&self.log_processes),
            log_lines: get(&self.log_lines),
            log_lines_exported: get(&self.log_lines_exported),
            log_lines_over_budget: get(&self.log_lines_over_budget),
            log_lines_export_dropped: get(&self.log_lines_export_dropped),
            log_lines_redacted: get(&self.log_lines_redacted),
            tls_not_visible: self
                .tls_not_visible
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            profile_exports: self
                .profile_exports
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(k, v)| (*k, *v))
                .collect(),
            parse_errors: self
                .parse_errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(k, v)| (*k, *v))
                .collect(),
            kernel_losses,
        }
    }
}

/// A point-in-time copy of every self-metric, kernel loss counters included.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub events_received: u64,
    pub bytes_captured: u64,
    pub decode_errors: u64,
    pub dropped_queue_full: u64,
    pub dropped_tap_full: u64,
    pub dropped_resolver_full: u64,
    pub events_filtered: u64,
    pub connections_evicted: u64,
    pub connections_opaque: u64,
    pub stream_bytes_dropped: u64,
    pub bytes_not_captured: u64,
    pub connections_tracked: u64,
    pub stream_bytes_buffered: u64,
    pub queue_len: u64,
    pub queue_capacity: u64,
    pub dropped_span_queue_full: u64,
    pub spans_kept: u64,
    pub spans_sampled_out: u64,
    pub routes_overflowed: u64,
    pub spans_exported: u64,
    pub spans_export_dropped: u64,
    pub metrics_services_overflowed: u64,
    pub dns_pending_evicted: u64,
    pub profile_samples: u64,
    pub profile_frames: u64,
    pub profile_frames_unsymbolized: u64,
    pub profile_samples_folded: u64,
    pub profile_processes_cached: u64,
    pub profile_modules_cached: u64,
    pub k8s_pods: u64,
    pub k8s_containers: u64,
    pub k8s_pods_dropped: u64,
    pub k8s_lists: u64,
    pub k8s_watch_errors: u64,
    pub tls_libraries: u64,
    pub tls_records: u64,
    pub tls_unprobeable_executables: u64,
    pub log_processes: u64,
    pub log_lines: u64,
    pub log_lines_exported: u64,
    pub log_lines_over_budget: u64,
    pub log_lines_export_dropped: u64,
    pub log_lines_redacted: u64,
    /// TLS connections not visible, by executable name.
    pub tls_not_visible: Vec<(String, u64)>,
    /// Profile exports by (destination, outcome).
    pub profile_exports: Vec<((&'static str, &'static str), u64)>,
    /// Parse errors by (protocol, reason).
    pub parse_errors: Vec<((&'static str, &'static str), u64)>,
    /// Per-reason kernel counters (`agent_common::Loss`), summed over CPUs.
    pub kernel_losses: Vec<(&'static str, u64)>,
}

impl Snapshot {
    /// Kernel counter for one loss reason.
    pub fn kernel_loss(&self, reason: agent_common::Loss) -> u64 {
        self.kernel_losses
            .iter()
            .find(|(name, _)| *name == reason.name())
            .map_or(0, |(_, n)| *n)
    }
}
