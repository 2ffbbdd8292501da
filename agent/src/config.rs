//! Command line, configuration file and environment, merged into [`Settings`].
//!
//! Precedence, lowest first: built-in defaults, the TOML file given with
//! `--config`, environment variables (`AGENT_*`), command-line flags. clap merges
//! the last two; the file is layered underneath here.

use std::{fs, net::SocketAddr, path::PathBuf, time::Duration};

use agent_common::{DEFAULT_CAPTURE_BYTES, MAX_CAPTURE_BYTES};
use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::{
    export::{otlp::OtlpSettings, stdout::StdoutKind},
    spans::sampler::Sampler,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Which kernel path captures socket I/O (see `capture::loader`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CapturePath {
    /// The fast path when this kernel takes it, else the tracepoints.
    #[default]
    Auto,
    /// One raw tracepoint on `sys_exit`; fail if it cannot attach.
    Fast,
    /// The `syscalls:sys_{enter,exit}_*` tracepoint pairs.
    Tracepoints,
}

/// Kubernetes pod metadata (`--k8s`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum K8sMode {
    /// On in a pod (`KUBERNETES_SERVICE_HOST` set) or with `--kubeconfig`.
    #[default]
    Auto,
    /// On; the agent does not start without a usable configuration.
    On,
    Off,
}

/// Command line. Every option also reads an `AGENT_*` environment variable.
#[derive(Debug, Default, Parser)]
#[command(
    name = "agent",
    version,
    about = "Zero-instrumentation observability agent (eBPF)"
)]
pub struct Cli {
    /// TOML configuration file (same keys as the long options, with `_` for `-`).
    #[arg(long, env = "AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Probe the kernel, print what the agent can use and exit (0: can run, 1: cannot).
    #[arg(long)]
    pub check: bool,
    /// Log line format on stderr.
    #[arg(long, value_enum, env = "AGENT_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `agent=debug`.
    #[arg(long, env = "AGENT_LOG")]
    pub log: Option<String>,
    /// Only observe these process ids (repeat or comma-separate).
    #[arg(long = "pid", env = "AGENT_PIDS", value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Only observe processes whose executable name matches this glob (repeatable).
    #[arg(long = "exe", env = "AGENT_EXES", value_delimiter = ',')]
    pub exes: Vec<String>,
    /// Only observe connections with this local or peer port (repeatable).
    #[arg(long = "port", env = "AGENT_PORTS", value_delimiter = ',')]
    pub ports: Vec<u16>,
    /// Print one JSON line per connection and data event on stdout (debugging);
    /// same as adding `events` to `--stdout`.
    #[arg(long, env = "AGENT_EVENTS")]
    pub events: bool,
    /// What to print on stdout as JSON lines: `spans`, `events`, or `off`
    /// (default: spans when no OTLP endpoint is configured, else off).
    #[arg(long, env = "AGENT_STDOUT", value_delimiter = ',')]
    pub stdout: Vec<String>,
    /// Prometheus scrape endpoint address, or `off`.
    #[arg(long, env = "AGENT_PROMETHEUS_LISTEN")]
    pub prometheus_listen: Option<String>,
    /// Spans at least this slow are always kept by the sampler (ms).
    #[arg(long, env = "AGENT_SLOW_THRESHOLD_MS")]
    pub slow_threshold_ms: Option<u64>,
    /// Route patterns such as `/users/{id}/orders` (win over inferred routes).
    #[arg(long = "route", env = "AGENT_ROUTES", value_delimiter = ',')]
    pub routes: Vec<String>,
    /// Distinct routes per service before the overflow route is used.
    #[arg(long, env = "AGENT_MAX_ROUTES")]
    pub max_routes: Option<usize>,
    /// Series per metric before the overflow series is used.
    #[arg(long, env = "AGENT_MAX_SERIES")]
    pub max_series: Option<usize>,
    /// Put query strings in spans (`url.query`, `url.full`). Off: they may hold secrets.
    #[arg(long, env = "AGENT_CAPTURE_QUERY")]
    pub capture_query: bool,
    /// Put this request/response header's value in spans (repeatable). Only
    /// `User-Agent` is captured by default; name `authorization` or `cookie`
    /// here only if their values may leave the host.
    #[arg(
        long = "capture-header",
        env = "AGENT_CAPTURE_HEADERS",
        value_delimiter = ','
    )]
    pub capture_headers: Vec<String>,
    /// Put the first N bytes of request and response bodies in spans
    /// (`http.*.body.content`; at most 4096). Off: bodies hold personal data.
    #[arg(long, env = "AGENT_CAPTURE_BODY_BYTES")]
    pub capture_body_bytes: Option<usize>,
    /// Resolver ports: DNS lookups are traced on connections to them (repeatable).
    #[arg(long = "dns-port", env = "AGENT_DNS_PORTS", value_delimiter = ',')]
    pub dns_ports: Vec<u16>,
    /// A DNS query without an answer for this long is a timed-out lookup (ms).
    #[arg(long, env = "AGENT_DNS_TIMEOUT_MS")]
    pub dns_timeout_ms: Option<u64>,
    /// Payload bytes captured per syscall (at most 8192).
    #[arg(long, env = "AGENT_CAPTURE_BYTES")]
    pub capture_bytes: Option<u32>,
    /// Kernel capture path: `auto` (fast when available), `fast`, `tracepoints`.
    #[arg(long, value_enum, env = "AGENT_CAPTURE_PATH")]
    pub capture_path: Option<CapturePath>,
    /// Ring buffer size per CPU in KiB (the total is rounded to a power of two).
    #[arg(long, env = "AGENT_RING_BUFFER_PER_CPU_KIB")]
    pub ring_buffer_per_cpu_kib: Option<u32>,
    /// Upper bound of the ring buffer in MiB, whatever the number of CPUs.
    #[arg(long, env = "AGENT_RING_BUFFER_BUDGET_MIB")]
    pub ring_buffer_budget_mib: Option<u32>,
    /// How often the ring buffer is read when the kernel has not woken the reader (ms).
    #[arg(long, env = "AGENT_RING_BUFFER_POLL_MS")]
    pub ring_buffer_poll_ms: Option<u64>,
    /// Sockets the kernel tracks at once (LRU).
    #[arg(long, env = "AGENT_SOCKET_TABLE_SIZE")]
    pub socket_table_size: Option<u32>,
    /// Connections userspace tracks at once (LRU).
    #[arg(long, env = "AGENT_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Bytes buffered per connection and direction for protocol parsers.
    #[arg(long, env = "AGENT_STREAM_BUFFER_BYTES")]
    pub stream_buffer_bytes: Option<usize>,
    /// Bytes buffered by all connections' streams together, in MiB.
    #[arg(long, env = "AGENT_STREAM_BUDGET_MIB")]
    pub stream_budget_mib: Option<usize>,
    /// Events queued between the ring buffer reader and the connection table.
    #[arg(long, env = "AGENT_EVENT_QUEUE")]
    pub event_queue: Option<usize>,
    /// Continuous CPU profiling: `on` (default) or `off`.
    #[arg(long, env = "AGENT_PROFILING")]
    pub profiling: Option<String>,
    /// CPU samples per second on each CPU (1–1000).
    #[arg(long, env = "AGENT_PROFILE_FREQUENCY")]
    pub profile_frequency: Option<u64>,
    /// How often profiles are symbolized and exported: seconds, or with a unit
    /// (`15s`, `500ms`).
    #[arg(long, env = "AGENT_PROFILE_INTERVAL")]
    pub profile_interval: Option<String>,
    /// Pyroscope server to push profiles to, e.g. `http://pyroscope:4040`
    /// (`user:password@` in the URL is sent as basic auth).
    #[arg(long, env = "AGENT_PYROSCOPE_URL")]
    pub pyroscope_url: Option<String>,
    /// Tenant for a multi-tenant Pyroscope (`X-Scope-OrgID`).
    #[arg(long, env = "AGENT_PYROSCOPE_TENANT")]
    pub pyroscope_tenant: Option<String>,
    /// Send profiles as OTLP profiles to the OTLP endpoint
    /// (`OTEL_EXPORTER_OTLP_[PROFILES_]ENDPOINT`, default localhost).
    #[arg(long, env = "AGENT_OTLP_PROFILES")]
    pub otlp_profiles: bool,
    /// Write each interval's pprof (`.pb.gz`) and flamegraph (`.svg`) per service
    /// here (default when no profile backend is set: `./agent-profiles`).
    #[arg(long, env = "AGENT_PROFILES_DIR")]
    pub profiles_dir: Option<PathBuf>,
    /// Pod metadata from the Kubernetes API: `auto` (default: in a pod, or
    /// with --kubeconfig), `on` or `off`.
    #[arg(long, env = "AGENT_K8S")]
    pub k8s: Option<K8sMode>,
    /// Kubeconfig for the API server (default: the pod's service account).
    #[arg(long, env = "AGENT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name, whose pods are watched (the DaemonSet sets it from
    /// `spec.nodeName`; default: the host name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// `k8s.cluster.name` on every resource (the API does not know it).
    #[arg(long, env = "AGENT_K8S_CLUSTER_NAME")]
    pub k8s_cluster_name: Option<String>,
    /// Take `service.name` from the pod label `app.kubernetes.io/name`
    /// (after the `resource.opentelemetry.io/service.name` annotation).
    #[arg(long, env = "AGENT_K8S_WELL_KNOWN_LABELS")]
    pub k8s_well_known_labels: bool,
    /// TLS plaintext through uprobes on OpenSSL: `on` (default) or `off`.
    #[arg(long, env = "AGENT_TLS")]
    pub tls: Option<String>,
    /// Turn writes to stdout/stderr of processes whose executable name
    /// matches this glob into log records with the trace they belong to
    /// (repeatable; off by default: logs hold personal data).
    #[arg(long = "logs", env = "AGENT_LOGS", value_delimiter = ',')]
    pub logs: Vec<String>,
    /// Log bytes per second and process; more are dropped (counted).
    #[arg(long, env = "AGENT_LOG_BYTES_PER_SECOND")]
    pub log_bytes_per_second: Option<u64>,
    /// Longest log line kept; longer ones are cut and flagged (at most 8192).
    #[arg(long, env = "AGENT_LOG_LINE_BYTES")]
    pub log_line_bytes: Option<usize>,
    /// Redact e-mail addresses, tokens, passwords and card numbers in log
    /// lines before they leave the host: `on` (default) or `off`.
    #[arg(long, env = "AGENT_LOG_REDACTION")]
    pub log_redaction: Option<String>,
    /// The kernel's thread → request map (`traces_ctx_v1`), which links CPU
    /// samples and log lines to requests: `on` (default) or `off`.
    #[arg(long, env = "AGENT_TRACE_CONTEXT")]
    pub trace_context: Option<String>,
    /// Pin the thread → request map in the BPF filesystem so other eBPF
    /// profilers on the node read it (the OpenTelemetry eBPF profiler looks
    /// at `/sys/fs/bpf/otel/traces_ctx_v1`); removed when the agent stops.
    #[arg(long, env = "AGENT_PIN_TRACE_CONTEXT")]
    pub pin_trace_context: Option<PathBuf>,
}

/// The file form of the same options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub log_format: Option<LogFormat>,
    pub log: Option<String>,
    #[serde(default)]
    pub pids: Vec<u32>,
    #[serde(default)]
    pub exes: Vec<String>,
    #[serde(default)]
    pub ports: Vec<u16>,
    pub events: Option<bool>,
    #[serde(default)]
    pub stdout: Vec<String>,
    pub prometheus_listen: Option<String>,
    pub slow_threshold_ms: Option<u64>,
    #[serde(default)]
    pub routes: Vec<String>,
    pub max_routes: Option<usize>,
    pub max_series: Option<usize>,
    pub capture_query: Option<bool>,
    #[serde(default)]
    pub capture_headers: Vec<String>,
    pub capture_body_bytes: Option<usize>,
    #[serde(default)]
    pub dns_ports: Vec<u16>,
    pub dns_timeout_ms: Option<u64>,
    pub capture_bytes: Option<u32>,
    pub capture_path: Option<CapturePath>,
    pub ring_buffer_per_cpu_kib: Option<u32>,
    pub ring_buffer_budget_mib: Option<u32>,
    pub ring_buffer_poll_ms: Option<u64>,
    pub socket_table_size: Option<u32>,
    pub max_connections: Option<usize>,
    pub stream_buffer_bytes: Option<usize>,
    pub stream_budget_mib: Option<usize>,
    pub event_queue: Option<usize>,
    pub profiling: Option<String>,
    pub profile_frequency: Option<u64>,
    pub profile_interval: Option<String>,
    pub pyroscope_url: Option<String>,
    pub pyroscope_tenant: Option<String>,
    pub otlp_profiles: Option<bool>,
    pub profiles_dir: Option<PathBuf>,
    pub k8s: Option<K8sMode>,
    pub kubeconfig: Option<PathBuf>,
    pub node_name: Option<String>,
    pub k8s_cluster_name: Option<String>,
    pub k8s_well_known_labels: Option<bool>,
    pub tls: Option<String>,
    #[serde(default)]
    pub logs: Vec<String>,
    pub log_bytes_per_second: Option<u64>,
    pub log_line_bytes: Option<usize>,
    pub log_redaction: Option<String>,
    pub trace_context: Option<String>,
    pub pin_trace_context: Option<PathBuf>,
}

/// Resolved settings the agent runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub log_format: LogFormat,
    pub log: String,
    pub pids: Vec<u32>,
    pub exes: Vec<String>,
    pub ports: Vec<u16>,
    pub events: bool,
    /// Print spans as JSON lines on stdout.
    pub stdout_spans: bool,
    /// `None`: no Prometheus endpoint.
    pub prometheus_listen: Option<SocketAddr>,
    pub slow_threshold_ms: u64,
    pub routes: Vec<String>,
    pub max_routes: usize,
    pub max_series: usize,
    /// From `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler: Sampler,
    /// OTLP export, from the `OTEL_EXPORTER_OTLP_*` variables; `None`: off.
    pub otlp: Option<OtlpSettings>,
    pub capture_query: bool,
    pub capture_headers: Vec<String>,
    pub capture_body_bytes: usize,
    pub dns_ports: Vec<u16>,
    pub dns_timeout_ms: u64,
    pub capture_bytes: u32,
    pub capture_path: CapturePath,
    pub ring_buffer_per_cpu_kib: u32,
    pub ring_buffer_budget_mib: u32,
    pub ring_buffer_poll_ms: u64,
    pub socket_table_size: u32,
    pub max_connections: usize,
    pub stream_buffer_bytes: usize,
    pub stream_budget_mib: usize,
    pub event_queue: usize,
    pub profiling: ProfilingSettings,
    pub k8s: K8sSettings,
    /// TLS plaintext through uprobes on OpenSSL.
    pub tls: bool,
    /// Log records from processes' stdout/stderr.
    pub logs: LogSettings,
    /// Print log records as JSON lines on stdout.
    pub stdout_logs: bool,
    /// The kernel's thread → request map (span profiles, log links).
    pub trace_context: bool,
    /// Where to pin that map (`traces_ctx_v1`), if anywhere.
    pub pin_trace_context: Option<PathBuf>,
}

/// `--logs` and its bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct LogSettings {
    /// Executable-name globs; empty: off.
    pub exes: Vec<String>,
    pub bytes_per_second: u64,
    pub line_bytes: usize,
    pub redact: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            exes: Vec::new(),
            bytes_per_second: 64 * 1024,
            line_bytes: 4096,
            redact: true,
        }
    }
}

/// Kubernetes pod metadata settings.
#[derive(Clone, Debug, PartialEq)]
pub struct K8sSettings {
    pub mode: K8sMode,
    pub kubeconfig: Option<PathBuf>,
    /// `None`: the host name.
    pub node_name: Option<String>,
    pub cluster_name: Option<String>,
    pub well_known_labels: bool,
    /// Pods held at most (a node runs up to a few hundred).
    pub max_pods: usize,
    /// `/readyz` waits this long for the first pod list.
    pub ready_timeout: Duration,
}

impl Default for K8sSettings {
    fn default() -> Self {
        K8sSettings {
            mode: K8sMode::Auto,
            kubeconfig: None,
            node_name: None,
            cluster_name: None,
            well_known_labels: false,
            max_pods: 2048,
            ready_timeout: Duration::from_secs(30),
        }
    }
}

impl K8sSettings {
    /// Whether to watch pods: `auto` means in a pod, or given a kubeconfig.
    pub fn enabled(&self) -> bool {
        match self.mode {
            K8sMode::On => true,
            K8sMode::Off => false,
            K8sMode::Auto => {
                self.kubeconfig.is_some() || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
            }
        }
    }
}

/// Continuous profiling settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfilingSettings {
    pub enabled: bool,
    /// Samples per second per CPU.
    pub frequency: u64,
    pub interval: Duration,
    pub pyroscope_url: Option<String>,
    pub pyroscope_tenant: Option<String>,
    /// OTLP profiles export; `None`: off.
    pub otlp: Option<profiles::export::otlp::OtlpConfig>,
    /// Local pprof + flamegraph files; `None`: off.
    pub dir: Option<PathBuf>,
}

impl Default for ProfilingSettings {
    fn default() -> Self {
        ProfilingSettings {
            enabled: true,
            frequency: 19,
            interval: Duration::from_secs(15),
            pyroscope_url: None,
            pyroscope_tenant: None,
            otlp: None,
            dir: Some(PathBuf::from(DEFAULT_PROFILES_DIR)),
        }
    }
}

/// Where profiles go when no backend is configured (relative to the working dir).
pub const DEFAULT_PROFILES_DIR: &str = "agent-profiles";

/// `15`, `15s`, `500ms`, `2m`.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = number
        .parse()
        .with_context(|| format!("{text:?}: expected a number with an optional unit"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        other => bail!("{text:?}: unknown unit {other:?} (use ms, s or m)"),
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            log_format: LogFormat::Text,
            log: "info".into(),
            pids: Vec::new(),
            exes: Vec::new(),
            ports: Vec::new(),
            events: false,
            stdout_spans: false,
            prometheus_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            slow_threshold_ms: 500,
            routes: Vec::new(),
            max_routes: 200,
            max_series: 2000,
            sampler: Sampler::default(),
            otlp: None,
            capture_query: false,
            capture_headers: Vec::new(),
            capture_body_bytes: 0,
            dns_ports: vec![53],
            dns_timeout_ms: 5000,
            capture_bytes: DEFAULT_CAPTURE_BYTES,
            capture_path: CapturePath::Auto,
            ring_buffer_per_cpu_kib: 1024,
            ring_buffer_budget_mib: 64,
            ring_buffer_poll_ms: 10,
            socket_table_size: 65536,
            max_connections: 16384,
            stream_buffer_bytes: 64 * 1024,
            stream_budget_mib: 64,
            event_queue: 16384,
            profiling: ProfilingSettings::default(),
            k8s: K8sSettings::default(),
            tls: true,
            logs: LogSettings::default(),
            stdout_logs: false,
            trace_context: true,
            pin_trace_context: None,
        }
    }
}

/// `--stdout` values; `None` when not given (the default depends on OTLP).
fn parse_stdout(values: &[String]) -> anyhow::Result<Option<Vec<StdoutKind>>> {
    if values.is_empty() {
        return Ok(None);
    }
    let mut kinds = Vec::new();
    for v in values {
        match v.trim() {
            "off" | "none" => {}
            "spans" => kinds.push(StdoutKind::Spans),
            "events" => kinds.push(StdoutKind::Events),
            "logs" => kinds.push(StdoutKind::Logs),
            other => bail!("--stdout {other:?}: expected spans, events, logs or off"),
        }
    }
    Ok(Some(kinds))
}

/// An `on`/`off` option, on when not given.
fn on_off(flag: &str, value: Option<&str>) -> anyhow::Result<bool> {
    match value.map(str::trim) {
        None | Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => bail!("{flag} {other:?}: expected on or off"),
    }
}

/// Lists given on the command line replace the file's; an empty one keeps it.
fn pick_list<T>(cli: Vec<T>, file: Vec<T>) -> Vec<T> {
    if cli.is_empty() { file } else { cli }
}

impl Settings {
    /// Reads the configuration file named by the CLI (if any) and merges.
    pub fn load(cli: Cli) -> anyhow::Result<Settings> {
        let file = match &cli.config {
            Some(path) => {
                let text = fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        Settings::merge(cli, file)
    }

    pub fn merge(cli: Cli, file: FileConfig) -> anyhow::Result<Settings> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let d = Settings::default();
        let stdout = parse_stdout(&pick_list(cli.stdout.clone(), file.stdout.clone()))?;
        let otlp = OtlpSettings::from_env()?;
        let stdout_spans = match &stdout {
            Some(kinds) => kinds.contains(&StdoutKind::Spans),
            None => otlp.as_ref().is_none_or(|o| o.traces.is_none()),
        };
        let stdout_events = stdout
            .as_ref()
            .is_some_and(|k| k.contains(&StdoutKind::Events));
        let prometheus_listen =
            match cli
                .prometheus_listen
                .clone()
                .or(file.prometheus_listen.clone())
            {
                None => d.prometheus_listen,
                Some(v) if v.trim() == "off" => None,
                Some(v) => Some(v.trim().parse().with_context(|| {
                    format!("--prometheus-listen {v:?}: not an address or `off`")
                })?),
            };
        let slow_threshold_ms = cli
            .slow_threshold_ms
            .or(file.slow_threshold_ms)
            .unwrap_or(d.slow_threshold_ms);
        let sampler = Sampler::from_env(
            env("OTEL_TRACES_SAMPLER").as_deref(),
            env("OTEL_TRACES_SAMPLER_ARG").as_deref(),
            slow_threshold_ms * 1_000_000,
        )?;
        // A flag or variable, else the file, else the default.
        macro_rules! pick {
            ($field:ident) => {
                cli.$field.or(file.$field).unwrap_or(d.$field)
            };
        }
        let settings = Settings {
            log_format: pick!(log_format),
            log: pick!(log),
            pids: pick_list(cli.pids, file.pids),
            exes: pick_list(cli.exes, file.exes),
            ports: pick_list(cli.ports, file.ports),
            events: cli.events || file.events.unwrap_or(d.events) || stdout_events,
            stdout_spans,
            prometheus_listen,
            slow_threshold_ms,
            routes: pick_list(cli.routes, file.routes),
            max_routes: pick!(max_routes),
            max_series: pick!(max_series),
            sampler,
            otlp,
            capture_query: cli.capture_query || file.capture_query.unwrap_or(false),
            capture_headers: pick_list(cli.capture_headers, file.capture_headers),
            capture_body_bytes: pick!(capture_body_bytes),
            dns_ports: {
                let ports = pick_list(cli.dns_ports, file.dns_ports);
                if ports.is_empty() {
                    d.dns_ports.clone()
                } else {
                    ports
                }
            },
            dns_timeout_ms: pick!(dns_timeout_ms),
            capture_bytes: pick!(capture_bytes),
            capture_path: pick!(capture_path),
            ring_buffer_per_cpu_kib: pick!(ring_buffer_per_cpu_kib),
            ring_buffer_budget_mib: pick!(ring_buffer_budget_mib),
            ring_buffer_poll_ms: pick!(ring_buffer_poll_ms),
            socket_table_size: pick!(socket_table_size),
            max_connections: pick!(max_connections),
            stream_buffer_bytes: pick!(stream_buffer_bytes),
            stream_budget_mib: pick!(stream_budget_mib),
            event_queue: pick!(event_queue),
            profiling: ProfilingSettings {
                enabled: on_off(
                    "--profiling",
                    cli.profiling.as_deref().or(file.profiling.as_deref()),
                )?,
                frequency: cli
                    .profile_frequency
                    .or(file.profile_frequency)
                    .unwrap_or(d.profiling.frequency),
                interval: match cli
                    .profile_interval
                    .as_deref()
                    .or(file.profile_interval.as_deref())
                {
                    Some(text) => parse_duration(text).context("--profile-interval")?,
                    None => d.profiling.interval,
                },
                pyroscope_url: cli.pyroscope_url.clone().or(file.pyroscope_url.clone()),
                pyroscope_tenant: cli
                    .pyroscope_tenant
                    .clone()
                    .or(file.pyroscope_tenant.clone()),
                otlp: if cli.otlp_profiles || file.otlp_profiles.unwrap_or(false) {
                    Some(crate::profiling::otlp_config(&env)?)
                } else {
                    None
                },
                dir: None,
            },
            k8s: K8sSettings {
                mode: cli.k8s.or(file.k8s).unwrap_or(d.k8s.mode),
                kubeconfig: cli.kubeconfig.or(file.kubeconfig),
                node_name: cli
                    .node_name
                    .or(file.node_name)
                    .filter(|n| !n.trim().is_empty()),
                cluster_name: cli
                    .k8s_cluster_name
                    .or(file.k8s_cluster_name)
                    .filter(|n| !n.trim().is_empty()),
                well_known_labels: cli.k8s_well_known_labels
                    || file.k8s_well_known_labels.unwrap_or(false),
                ..d.k8s.clone()
            },
            tls: on_off("--tls", cli.tls.as_deref().or(file.tls.as_deref()))?,
            logs: LogSettings {
                exes: pick_list(cli.logs, file.logs),
                bytes_per_second: cli
                    .log_bytes_per_second
                    .or(file.log_bytes_per_second)
                    .unwrap_or(d.logs.bytes_per_second),
                line_bytes: cli
                    .log_line_bytes
                    .or(file.log_line_bytes)
                    .unwrap_or(d.logs.line_bytes)
                    .clamp(64, agent_common::MAX_CAPTURE_BYTES),
                redact: on_off(
                    "--log-redaction",
                    cli.log_redaction
                        .as_deref()
                        .or(file.log_redaction.as_deref()),
                )?,
            },
            stdout_logs: stdout
                .as_ref()
                .is_some_and(|k| k.contains(&StdoutKind::Logs)),
            trace_context: on_off(
                "--trace-context",
                cli.trace_context
                    .as_deref()
                    .or(file.trace_context.as_deref()),
            )?,
            pin_trace_context: cli.pin_trace_context.or(file.pin_trace_context),
        };
        let mut settings = settings;
        let backend =
            settings.profiling.pyroscope_url.is_some() || settings.profiling.otlp.is_some();
        settings.profiling.dir = match cli.profiles_dir.or(file.profiles_dir) {
            Some(dir) => Some(dir),
            None if !backend => d.profiling.dir.clone(),
            None => None,
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.capture_bytes == 0 || self.capture_bytes as usize > MAX_CAPTURE_BYTES {
            bail!(
                "capture_bytes must be between 1 and {MAX_CAPTURE_BYTES}, got {}",
                self.capture_bytes
            );
        }
        if self.ring_buffer_per_cpu_kib < 4 || self.ring_buffer_budget_mib == 0 {
            bail!("ring buffer needs at least 4 KiB per CPU and a budget of at least 1 MiB");
        }
        if self.capture_body_bytes > 4096 {
            bail!("capture_body_bytes must be at most 4096");
        }
        if !(1..=1000).contains(&self.profiling.frequency) {
            bail!(
                "profile_frequency must be between 1 and 1000 Hz, got {}",
                self.profiling.frequency
            );
        }
        if self.profiling.interval < Duration::from_millis(100) {
            bail!("profile_interval must be at least 100ms");
        }
        if !(1..=1000).contains(&self.ring_buffer_poll_ms) {
            bail!("ring_buffer_poll_ms must be between 1 and 1000");
        }
        for (name, value) in [
            ("socket_table_size", self.socket_table_size as usize),
            ("max_connections", self.max_connections),
            ("stream_buffer_bytes", self.stream_buffer_bytes),
            ("stream_budget_mib", self.stream_budget_mib),
            ("event_queue", self.event_queue),
            ("max_routes", self.max_routes),
            ("max_series", self.max_series),
        ] {
            if value == 0 {
                bail!("{name} must be greater than 0");
            }
        }
        Ok(())
    }

    /// Ring buffer bytes: per-CPU share × CPUs, rounded up to a power of two (the
    /// kernel requires one), capped by the budget, at least one page.
    pub fn ring_buffer_bytes(&self, cpus: usize) -> u32 {
        let page = 4096u64;
        let wanted = u64::from(self.ring_buffer_per_cpu_kib) * 1024 * cpus.max(1) as u64;
        let budget = u64::from(self.ring_buffer_budget_mib) * 1024 * 1024;
        let size = wanted
            .next_power_of_two()
            .min(prev_power_of_two(budget))
            .max(page);
        u32::try_from(size).unwrap_or(1 << 31)
    }
}

fn prev_power_of_two(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        1 << (63 - n.leading_zeros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let file: FileConfig = toml::from_str(
            "capture_bytes = 1024\nports = [80, 443]\nlog_format = \"json\"\nmax_connections = 10",
        )
        .unwrap();
        let cli = Cli::parse_from(["agent", "--capture-bytes", "2048", "--pid", "1,2"]);
        let s = Settings::merge(cli, file).unwrap();
        assert_eq!(s.capture_bytes, 2048);
        assert_eq!(s.ports, vec![80, 443]);
        assert_eq!(s.pids, vec![1, 2]);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.max_connections, 10);
        assert_eq!(
            s.stream_buffer_bytes,
            Settings::default().stream_buffer_bytes
        );
    }

    #[test]
    fn rejects_out_of_range_values_and_unknown_keys() {
        let cli = Cli::parse_from(["agent", "--capture-bytes", "100000"]);
        assert!(Settings::merge(cli, FileConfig::default()).is_err());
        assert!(toml::from_str::<FileConfig>("no_such_key = 1").is_err());
    }

    #[test]
    fn ring_buffer_is_a_power_of_two_within_budget() {
        let mut s = Settings {
            ring_buffer_per_cpu_kib: 768,
            ring_buffer_budget_mib: 2,
            ..Settings::default()
        };
        assert_eq!(s.ring_buffer_bytes(2), 2 * 1024 * 1024);
        assert_eq!(s.ring_buffer_bytes(1), 1024 * 1024);
        assert_eq!(s.ring_buffer_bytes(64), 2 * 1024 * 1024);
        s.ring_buffer_budget_mib = 3;
        assert_eq!(s.ring_buffer_bytes(64), 2 * 1024 * 1024);
    }
}
