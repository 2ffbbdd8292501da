//! Prometheus text exposition (format 0.0.4) of the RED metrics and the agent's
//! self-metrics. Names follow the OpenTelemetry → Prometheus translation: dots
//! become underscores, the unit is appended (`_seconds`, `_bytes`), counters end
//! in `_total`. The output passes `promtool check metrics` (tested).

use std::fmt::Write as _;

use super::{CounterFamily, HistogramFamily, dns::DnsMetrics, http::HttpMetrics, rpc::RpcMetrics};
use crate::self_metrics::Snapshot;

/// A Prometheus metric or label name from an OTel name.
pub fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn unit_suffix(unit: &str) -> &'static str {
    match unit {
        "s" => "_seconds",
        "By" => "_bytes",
        _ => "",
    }
}

fn label_set(labels: &[(&'static str, String)], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}=\"{}\"", sanitize(k), escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{}\"", escape(v)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn format_bound(b: f64) -> String {
    // Prometheus clients print bounds like Go's strconv: 0.005, 1, 2.5.
    let s = format!("{b}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

fn histogram(out: &mut String, family: &HistogramFamily) {
    let name = format!("{}{}", sanitize(family.name), unit_suffix(family.unit));
    let _ = writeln!(out, "# HELP {name} {}", family.help);
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, h) in family.series() {
        let mut cumulative = 0;
        for (i, bound) in family.bounds.iter().enumerate() {
            cumulative += h.counts[i];
            let le = format_bound(*bound);
            let _ = writeln!(
                out,
                "{name}_bucket{} {cumulative}",
                label_set(labels, Some(("le", &le)))
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{} {}",
            label_set(labels, Some(("le", "+Inf"))),
            h.count
        );
        let _ = writeln!(out, "{name}_sum{} {}", label_set(labels, None), h.sum);
        let _ = writeln!(out, "{name}_count{} {}", label_set(labels, None), h.count);
    }
}

fn scalar(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn one(value: u64) -> Vec<(String, u64)> {
    vec![(String::new(), value)]
}

fn by(label: &str, values: impl IntoIterator<Item = (String, u64)>) -> Vec<(String, u64)> {
    values
        .into_iter()
        .map(|(v, n)| (format!("{{{label}=\"{}\"}}", escape(&v)), n))
        .collect()
}

/// Resident set size of the agent, from `/proc/self/statm`.
pub fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

fn counter(out: &mut String, family: &CounterFamily) {
    let name = format!("{}_total", sanitize(family.name));
    let _ = writeln!(out, "# HELP {name} {}", family.help);
    let _ = writeln!(out, "# TYPE {name} counter");
    for (labels, n) in &family.series {
        let _ = writeln!(out, "{name}{} {n}", label_set(labels, None));
    }
}

/// The whole exposition.
pub fn render(http: &HttpMetrics, rpc: &RpcMetrics, dns: &DnsMetrics, s: &Snapshot) -> String {
    let mut out = String::new();
    for family in http.families().into_iter().chain(rpc.families()) {
        histogram(&mut out, family);
    }
    histogram(&mut out, &dns.duration);
    counter(&mut out, &dns.responses);
    scalar(
        &mut out,
        "agent_events_received_total",
        "counter",
        "Records read from the kernel ring buffer.",
        &one(s.events_received),
    );
    scalar(
        &mut out,
        "agent_payload_captured_bytes_total",
        "counter",
        "Payload bytes captured by the kernel programs.",
        &one(s.bytes_captured),
    );
    scalar(
        &mut out,
        "agent_payload_not_captured_bytes_total",
        "counter",
        "Payload bytes moved by traced syscalls beyond the capture cap.",
        &one(s.bytes_not_captured),
    );
    let is_skip =
        |name: &str| agent_common::Loss::from_name(name).is_some_and(agent_common::Loss::is_skip);
    let mut dropped: Vec<(String, u64)> = s
        .kernel_losses
        .iter()
        .filter(|(r, _)| !is_skip(r))
        .map(|(r, n)| (format!("kernel_{r}"), *n))
        .collect();
    let skipped: Vec<(String, u64)> = s
        .kernel_losses
        .iter()
        .filter(|(r, _)| is_skip(r))
        .map(|(r, n)| (r.to_string(), *n))
        .collect();
    scalar(
        &mut out,
        "agent_kernel_skipped_total",
        "counter",
        "Syscalls the kernel skipped by design: data of opaque connections, excluded processes.",
        &by("reason", skipped),
    );
    dropped.push(("queue_full".into(), s.dropped_queue_full));
    dropped.push(("tap_full".into(), s.dropped_tap_full));
    dropped.push(("resolver_full".into(), s.dropped_resolver_full));
    dropped.push(("span_queue_full".into(), s.dropped_span_queue_full));
    dropped.push(("span_export".into(), s.spans_export_dropped));
    dropped.push(("log_budget".into(), s.log_lines_over_budget));
    dropped.push(("log_export".into(), s.log_lines_export_dropped));
    dropped.push(("dns_pending_full".into(), s.dns_pending_evicted));
    dropped.push((
        "metrics_services_overflow".into(),
        s.metrics_services_overflowed,
    ));
    scalar(
        &mut out,
        "agent_events_dropped_total",
        "counter",
        "Events or data lost, by reason.",
        &by("reason", dropped),
    );
    scalar(
        &mut out,
        "agent_decode_errors_total",
        "counter",
        "Kernel records that did not decode.",
        &one(s.decode_errors),
    );
    scalar(
        &mut out,
        "agent_events_filtered_total",
        "counter",
        "Events excluded by --pid/--exe/--port.",
        &one(s.events_filtered),
    );
    let parse: Vec<(String, u64)> = s
        .parse_errors
        .iter()
        .map(|((protocol, reason), n)| {
            (
                format!("{{protocol=\"{protocol}\",reason=\"{reason}\"}}"),
                *n,
            )
        })
        .collect();
    scalar(
        &mut out,
        "agent_parse_errors_total",
        "counter",
        "Bytes that could not be parsed, by protocol and reason.",
        &parse,
    );
    scalar(
        &mut out,
        "agent_spans_total",
        "counter",
        "Spans produced, by outcome.",
        &by(
            "outcome",
            [
                ("kept".to_string(), s.spans_kept),
                ("sampled_out".to_string(), s.spans_sampled_out),
                ("exported".to_string(), s.spans_exported),
            ],
        ),
    );
    scalar(
        &mut out,
        "agent_log_processes",
        "gauge",
        "Processes whose stdout/stderr lines become log records (--logs).",
        &one(s.log_processes),
    );
    scalar(
        &mut out,
        "agent_log_lines_total",
        "counter",
        "Log lines, by outcome (lost ones are in agent_events_dropped_total).",
        &by(
            "outcome",
            [
                ("recorded".to_string(), s.log_lines),
                ("redacted".to_string(), s.log_lines_redacted),
                ("exported".to_string(), s.log_lines_exported),
            ],
        ),
    );
    scalar(
        &mut out,
        "agent_profile_samples_total",
        "counter",
        "CPU samples drained from the kernel.",
        &one(s.profile_samples),
    );
    scalar(
        &mut out,
        "agent_profile_frames_total",
        "counter",
        "Stack frames symbolized, by whether a function name was found.",
        &by(
            "symbolized",
            [
                (
                    "true".to_string(),
                    s.profile_frames - s.profile_frames_unsymbolized.min(s.profile_frames),
                ),
                ("false".to_string(), s.profile_frames_unsymbolized),
            ],
        ),
    );
    scalar(
        &mut out,
        "agent_profile_samples_folded_total",
        "counter",
        "Distinct stacks folded into [other stacks] to meet backend limits.",
        &one(s.profile_samples_folded),
    );
    let exports: Vec<(String, u64)> = s
        .profile_exports
        .iter()
        .map(|((destination, outcome), n)| {
            (
                format!("{{destination=\"{destination}\",outcome=\"{outcome}\"}}"),
                *n,
            )
        })
        .collect();
    scalar(
        &mut out,
        "agent_profile_exports_total",
        "counter",
        "Profile batches written or sent, by destination and outcome.",
        &exports,
    );
    scalar(
        &mut out,
        "agent_profile_processes_cached",
        "gauge",
        "Process snapshots (memory maps) held for symbolization.",
        &one(s.profile_processes_cached),
    );
    scalar(
        &mut out,
        "agent_profile_modules_cached",
        "gauge",
        "Executable files held open for symbolization.",
        &one(s.profile_modules_cached),
    );
    scalar(
        &mut out,
        "agent_tls_libraries",
        "gauge",
        "Files with TLS uprobes attached (OpenSSL libraries, executables with OpenSSL or Go crypto/tls).",
        &one(s.tls_libraries),
    );
    scalar(
        &mut out,
        "agent_tls_plaintext_records_total",
        "counter",
        "Plaintext records from TLS library calls (each read or write that returned data).",
        &one(s.tls_records),
    );
    scalar(
        &mut out,
        "agent_tls_unprobeable_executables_total",
        "counter",
        "Executables found speaking TLS through code that cannot be probed (stripped or pre-1.17 Go programs); the log names each.",
        &one(s.tls_unprobeable_executables),
    );
    scalar(
        &mut out,
        "agent_tls_not_visible_connections_total",
        "counter",
        "TLS connections whose plaintext the agent cannot see (library not probed), by executable.",
        &by("executable", s.tls_not_visible.iter().cloned()),
    );
    scalar(
        &mut out,
        "agent_k8s_pods",
        "gauge",
        "Pods of this node held in the Kubernetes metadata store.",
        &one(s.k8s_pods),
    );
    scalar(
        &mut out,
        "agent_k8s_containers",
        "gauge",
        "Started containers of those pods, indexed by container id.",
        &one(s.k8s_containers),
    );
    scalar(
        &mut out,
        "agent_k8s_pods_dropped_total",
        "counter",
        "Pods not stored because the Kubernetes metadata store was full.",
        &one(s.k8s_pods_dropped),
    );
    scalar(
        &mut out,
        "agent_k8s_lists_total",
        "counter",
        "Complete lists of this node's pods (the first, then after an expired watch or an API server restart).",
        &one(s.k8s_lists),
    );
    scalar(
        &mut out,
        "agent_k8s_watch_errors_total",
        "counter",
        "Failed Kubernetes list or watch requests, each retried with backoff.",
        &one(s.k8s_watch_errors),
    );
    scalar(
        &mut out,
        "agent_connections_tracked",
        "gauge",
        "Connections in the connection table.",
        &one(s.connections_tracked),
    );
    scalar(
        &mut out,
        "agent_connections_evicted_total",
        "counter",
        "Connections evicted from the full table.",
        &one(s.connections_evicted),
    );
    scalar(
        &mut out,
        "agent_connections_opaque_total",
        "counter",
        "Connections whose data the kernel skips: no parser wants them, or --port excludes them.",
        &one(s.connections_opaque),
    );
    scalar(
        &mut out,
        "agent_stream_buffered_bytes",
        "gauge",
        "Bytes held for protocol parsers.",
        &one(s.stream_bytes_buffered),
    );
    scalar(
        &mut out,
        "agent_stream_dropped_bytes_total",
        "counter",
        "Bytes dropped from full stream buffers.",
        &one(s.stream_bytes_dropped),
    );
    scalar(
        &mut out,
        "agent_queue_length",
        "gauge",
        "Events waiting between the ring buffer reader and the processor.",
        &one(s.queue_len),
    );
    scalar(
        &mut out,
        "agent_queue_capacity",
        "gauge",
        "Capacity of that queue.",
        &one(s.queue_capacity),
    );
    scalar(
        &mut out,
        "agent_routes_overflowed_total",
        "counter",
        "Requests given the overflow route (per-service route budget).",
        &one(s.routes_overflowed),
    );
    scalar(
        &mut out,
        "agent_resident_memory_bytes",
        "gauge",
        "Resident set size of the agent.",
        &one(resident_bytes()),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_sanitized_and_escaped() {
        assert_eq!(
            sanitize("http.server.request.duration"),
            "http_server_request_duration"
        );
        assert_eq!(sanitize("9lives"), "_9lives");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(format_bound(1.0), "1.0");
        assert_eq!(format_bound(0.005), "0.005");
    }

    #[test]
    fn histograms_are_cumulative_with_inf_sum_and_count() {
        let mut http = HttpMetrics::new(100);
        http.server_duration
            .record(vec![("http.route", "/a".into())], 0.003);
        http.server_duration
            .record(vec![("http.route", "/a".into())], 0.2);
        let text = render(
            &http,
            &RpcMetrics::new(10),
            &DnsMetrics::new(10),
            &Snapshot::default(),
        );
        assert!(text.contains("# TYPE http_server_request_duration_seconds histogram"));
        assert!(text.contains(
            "http_server_request_duration_seconds_bucket{http_route=\"/a\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "http_server_request_duration_seconds_bucket{http_route=\"/a\",le=\"0.25\"} 2"
        ));
        assert!(text.contains(
            "http_server_request_duration_seconds_bucket{http_route=\"/a\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("http_server_request_duration_seconds_count{http_route=\"/a\"} 2"));
        assert!(text.contains("agent_events_dropped_total{reason=\"queue_full\"} 0"));
    }
}
