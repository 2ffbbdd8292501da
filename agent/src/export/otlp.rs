//! OTLP export with `opentelemetry-otlp`: spans and RED metrics, over gRPC (the
//! default) or HTTP/protobuf (`OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`).
//!
//! The exporter crate resolves the standard variables itself: the endpoints
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `_TRACES_ENDPOINT`, `_METRICS_ENDPOINT`),
//! `_HEADERS`, `_TIMEOUT` and `_COMPRESSION=gzip`. This module adds what an agent
//! needs around it:
//!
//! * **One resource per traced process.** The SDK's exporters carry one resource,
//!   so spans are grouped by process and `set_resource` is called before each
//!   group's export (one connection for all services). Metrics use one SDK
//!   `MeterProvider` per service with a manual reader, collected by one task and
//!   exported through one shared exporter.
//! * **Never blocking capture.** Spans reach the exporter through a bounded
//!   queue; when the backend is slow or down the oldest spans are dropped and
//!   counted, failed batches are retried with exponential backoff, and the
//!   outage is logged once, with its recovery.
//! * `OTEL_BSP_*` (queue size, delay, batch size, timeout), `OTEL_METRIC_EXPORT_INTERVAL`
//!   and `OTEL_RESOURCE_ATTRIBUTES` (added to every resource; `service.name` there
//!   is ignored: each process names itself).

use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError, Weak},
    time::{Duration, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use opentelemetry::{
    InstrumentationScope, KeyValue,
    metrics::{Counter, Histogram, MeterProvider as _},
    trace::{
        SpanContext as OtelContext, SpanId, SpanKind as OtelKind, Status as OtelStatus, TraceFlags,
        TraceId, TraceState,
    },
};
use opentelemetry_otlp::{MetricExporter, WithExportConfig as _};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{
        InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
        data::ResourceMetrics, exporter::PushMetricExporter as _, reader::MetricReader,
    },
    trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks},
};
use tokio::sync::{mpsc, watch};

use crate::{
    discovery::Resource,
    metrics::{DURATION_BUCKETS, SIZE_BUCKETS},
    self_metrics::SelfMetrics,
    spans::{Span, SpanKind, Status, Value, measure::Measure},
};

/// Transport, per signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Batch span processor settings (`OTEL_BSP_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    pub max_queue: usize,
    pub delay: Duration,
    pub max_batch: usize,
    pub timeout: Duration,
}

/// What to export where; `None` fields are disabled signals.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpSettings {
    pub traces: Option<Protocol>,
    pub metrics: Option<Protocol>,
    /// Used only when `--logs` names processes.
    pub logs: Option<Protocol>,
    /// Explicit endpoints (full URLs for HTTP); `None`: the exporter resolves
    /// `OTEL_EXPORTER_OTLP_[SIGNAL_]ENDPOINT` itself.
    pub traces_endpoint: Option<String>,
    pub metrics_endpoint: Option<String>,
    pub logs_endpoint: Option<String>,
    pub batching: Batching,
    pub metric_interval: Duration,
    /// From `OTEL_RESOURCE_ATTRIBUTES`, minus `service.name`.
    pub resource_attributes: Vec<(String, String)>,
}

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn millis(env: Env<'_>, key: &str, default: u64) -> anyhow::Result<Duration> {
    match env(key) {
        None => Ok(Duration::from_millis(default)),
        Some(v) => v
            .trim()
            .parse()
            .map(Duration::from_millis)
            .with_context(|| format!("{key}={v:?} is not a number of milliseconds")),
    }
}

fn count(env: Env<'_>, key: &str, default: usize) -> anyhow::Result<usize> {
    match env(key) {
        None => Ok(default),
        Some(v) => match v.trim().parse() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("{key}={v:?} is not a positive number"),
        },
    }
}

/// `OTEL_EXPORTER_OTLP_{signal}_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`, else gRPC.
pub(crate) fn protocol(env: Env<'_>, signal: &str) -> anyhow::Result<Protocol> {
    let key = format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL");
    match env(&key)
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .as_deref()
        .map(str::trim)
    {
        None | Some("grpc") => Ok(Protocol::Grpc),
        Some("http/protobuf") => Ok(Protocol::HttpProtobuf),
        Some(other) => {
            bail!("OTLP protocol {other:?} is not supported (use grpc or http/protobuf)")
        }
    }
}

impl OtlpSettings {
    /// From the process environment; `None` when no OTLP endpoint is configured.
    pub fn from_env() -> anyhow::Result<Option<OtlpSettings>> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        OtlpSettings::from(&env)
    }

    pub fn from(env: Env<'_>) -> anyhow::Result<Option<OtlpSettings>> {
        let any = env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        let enabled = |signal: &str, exporter: &str| {
            (any || env(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")).is_some())
                && env(exporter).as_deref().map(str::trim) != Some("none")
        };
        let traces = enabled("TRACES", "OTEL_TRACES_EXPORTER");
        let metrics = enabled("METRICS", "OTEL_METRICS_EXPORTER");
        let logs = enabled("LOGS", "OTEL_LOGS_EXPORTER");
        if !traces && !metrics && !logs {
            return Ok(None);
        }
        let resource_attributes = env("OTEL_RESOURCE_ATTRIBUTES")
            .map(|v| {
                v.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .filter(|(k, _)| !k.is_empty() && k != "service.name")
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(OtlpSettings {
            traces: if traces {
                Some(protocol(env, "TRACES")?)
            } else {
                None
            },
            metrics: if metrics {
                Some(protocol(env, "METRICS")?)
            } else {
                None
            },
            logs: if logs {
                Some(protocol(env, "LOGS")?)
            } else {
                None
            },
            traces_endpoint: None,
            metrics_endpoint: None,
            logs_endpoint: None,
            batching: Batching {
                max_queue: count(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)?,
                delay: millis(env, "OTEL_BSP_SCHEDULE_DELAY", 5000)?,
                max_batch: count(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?,
                timeout: millis(env, "OTEL_BSP_EXPORT_TIMEOUT", 30_000)?,
            },
            metric_interval: millis(env, "OTEL_METRIC_EXPORT_INTERVAL", 60_000)?,
            resource_attributes,
        }))
    }
}

/// The SDK resource of a traced process.
pub(crate) fn sdk_resource(
    r: &Resource,
    extra: &[(String, String)],
) -> opentelemetry_sdk::Resource {
    let mut attrs: Vec<KeyValue> = extra
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    for (k, v) in r.attributes() {
        attrs.push(match k {
            "process.pid" => KeyValue::new(k, i64::from(r.pid)),
            _ => KeyValue::new(k, v),
        });
    }
    for (k, v) in r.pod_attributes() {
        attrs.push(KeyValue::new(k.to_string(), v.to_string()));
    }
    opentelemetry_sdk::Resource::builder_empty()
        .with_attributes(attrs)
        .build()
}

pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("agent")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

fn span_data(span: &Span) -> SpanData {
    let time = |ns: u64| UNIX_EPOCH + Duration::from_nanos(ns);
    SpanData {
        span_context: OtelContext::new(
            TraceId::from_bytes(span.trace_id),
            SpanId::from_bytes(span.span_id),
            TraceFlags::new(span.trace_flags),
            false,
            span.trace_state
                .as_deref()
                .and_then(|s| s.parse::<TraceState>().ok())
                .unwrap_or_default(),
        ),
        parent_span_id: span
            .parent_span_id
            .map_or(SpanId::INVALID, SpanId::from_bytes),
        // A server's parent came over the wire.
        parent_span_is_remote: span.kind == SpanKind::Server && span.parent_span_id.is_some(),
        span_kind: match span.kind {
            SpanKind::Server => OtelKind::Server,
            SpanKind::Client => OtelKind::Client,
        },
        name: Cow::Owned(span.name.clone()),
        start_time: time(span.start_time_unix_nano),
        end_time: time(span.end_time_unix_nano),
        attributes: span
            .attributes
            .iter()
            .map(|(k, v)| match v {
                Value::Str(s) => KeyValue::new(k.to_string(), s.clone()),
                Value::Int(i) => KeyValue::new(k.to_string(), *i),
                Value::StrArray(a) => KeyValue::new(
                    k.to_string(),
                    opentelemetry::Value::Array(
                        a.iter()
                            .map(|s| s.clone().into())
                            .collect::<Vec<opentelemetry::StringValue>>()
                            .into(),
                    ),
                ),
            })
            .collect(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match span.status {
            Status::Error => OtelStatus::error(""),
            Status::Unset => OtelStatus::Unset,
        },
        instrumentation_scope: scope(),
    }
}

/// Logs an outage once and its recovery once.
#[derive(Debug, Default)]
pub(crate) struct Health {
    failing: bool,
    backoff: Duration,
    retry_at: Option<tokio::time::Instant>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Health {
    pub(crate) fn ready(&self) -> bool {
        self.retry_at
            .is_none_or(|at| tokio::time::Instant::now() >= at)
    }

    pub(crate) fn failed(&mut self, signal: &str, error: &str) {
        self.backoff = (self.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
        self.retry_at = Some(tokio::time::Instant::now() + self.backoff);
        if !self.failing {
            self.failing = true;
            tracing::warn!(signal, %error, "OTLP export failing; retrying with backoff, dropping the oldest data when queues fill");
        }
    }

    pub(crate) fn succeeded(&mut self, signal: &str) {
        if self.failing {
            tracing::info!(signal, "OTLP export recovered");
        }
        *self = Health::default();
    }
}

/// Sends spans to the OTLP exporter task without ever waiting.
#[derive(Clone)]
pub struct SpanSink {
    tx: mpsc::Sender<Span>,
    metrics: Arc<SelfMetrics>,
}

impl SpanSink {
    pub fn send(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            SelfMetrics::add(&self.metrics.dropped_span_queue_full, 1);
        }
    }
}

/// Builds an opentelemetry-otlp exporter (span or metric: their builders share
/// these methods but no trait) for a protocol, with an explicit endpoint or the
/// one the crate resolves from the environment. Nothing else is set in code:
/// programmatic settings would override `OTEL_EXPORTER_OTLP_TIMEOUT`,
/// `_HEADERS` and `_COMPRESSION`, which the crate reads itself.
macro_rules! build_exporter {
    ($builder:expr, $protocol:expr, $endpoint:expr) => {
        match ($protocol, $endpoint) {
            (Protocol::Grpc, None) => $builder.with_tonic().build(),
            (Protocol::Grpc, Some(e)) => $builder.with_tonic().with_endpoint(e).build(),
            (Protocol::HttpProtobuf, None) => $builder.with_http().build(),
            (Protocol::HttpProtobuf, Some(e)) => $builder.with_http().with_endpoint(e).build(),
        }
    };
}

/// How long the last flush at shutdown may take (stop must finish within 2 s).
const FINAL_FLUSH: Duration = Duration::from_millis(800);

/// Starts the span exporter task; it ends, after a last flush, when every
/// [`SpanSink`] is dropped.
pub fn spawn_spans(
    protocol: Protocol,
    settings: &OtlpSettings,
    metrics: Arc<SelfMetrics>,
) -> anyhow::Result<(SpanSink, tokio::task::JoinHandle<()>)> {
    let exporter = build_exporter!(
        opentelemetry_otlp::SpanExporter::builder(),
        protocol,
        settings.traces_endpoint.clone()
    )
    .context("building the OTLP span exporter")?;
    let (tx, rx) = mpsc::channel(settings.batching.max_queue);
    let task = BatchExport::new(Spans(exporter), settings, Arc::clone(&metrics));
    let handle = tokio::spawn(task.run(rx));
    Ok((SpanSink { tx, metrics }, handle))
}

/// One OTLP signal as the batching task sees it: items that name their
/// resource, exported one resource at a time.
pub(crate) trait Signal: Send + 'static {
    type Item: Send + 'static;
    /// For the outage log lines.
    const NAME: &'static str;
    fn resource(item: &Self::Item) -> &Arc<Resource>;
    /// Exports one resource's items.
    fn export(
        &mut self,
        resource: opentelemetry_sdk::Resource,
        items: &[&Self::Item],
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
    fn counted(metrics: &SelfMetrics, exported: bool, n: u64);
    fn shutdown(&mut self);
}

struct Spans(opentelemetry_otlp::SpanExporter);

impl Signal for Spans {
    type Item = Span;
    const NAME: &'static str = "traces";

    fn resource(span: &Span) -> &Arc<Resource> {
        &span.resource
    }

    async fn export(
        &mut self,
        resource: opentelemetry_sdk::Resource,
        spans: &[&Span],
    ) -> Result<(), String> {
        self.0.set_resource(&resource);
        let data = spans.iter().map(|s| span_data(s)).collect();
        self.0.export(data).await.map_err(|e| e.to_string())
    }

    fn counted(metrics: &SelfMetrics, exported: bool, n: u64) {
        if exported {
            SelfMetrics::add(&metrics.spans_exported, n);
        } else {
            SelfMetrics::add(&metrics.spans_export_dropped, n);
        }
    }

    fn shutdown(&mut self) {
        let _ = self.0.shutdown();
    }
}

/// Batches a signal's items from a bounded queue: never blocks the
/// producer, drops the oldest when the backend is slow (counted), retries
/// failed batches with backoff.
pub(crate) struct BatchExport<S: Signal> {
    signal: S,
    batching: Batching,
    extra: Vec<(String, String)>,
    queue: VecDeque<S::Item>,
    health: Health,
    metrics: Arc<SelfMetrics>,
}

impl<S: Signal> BatchExport<S> {
    pub(crate) fn new(signal: S, settings: &OtlpSettings, metrics: Arc<SelfMetrics>) -> Self {
        BatchExport {
            signal,
            batching: settings.batching,
            extra: settings.resource_attributes.clone(),
            queue: VecDeque::new(),
            health: Health::default(),
            metrics,
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<S::Item>) {
        let mut tick = tokio::time::interval(self.batching.delay);
        loop {
            tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => {
                        self.enqueue(item);
                        if self.queue.len() >= self.batching.max_batch {
                            self.flush(false).await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => self.flush(false).await,
            }
        }
        self.batching.timeout = self.batching.timeout.min(FINAL_FLUSH);
        self.flush(true).await;
        self.signal.shutdown();
    }

    /// Bounded: the oldest item makes room.
    fn enqueue(&mut self, item: S::Item) {
        if self.queue.len() >= self.batching.max_queue {
            self.queue.pop_front();
            S::counted(&self.metrics, false, 1);
        }
        self.queue.push_back(item);
    }

    /// Exports queued items batch by batch; on `last`, one attempt regardless
    /// of backoff and whatever fails is dropped (counted).
    async fn flush(&mut self, last: bool) {
        while !self.queue.is_empty() && (last || self.health.ready()) {
            let n = self.queue.len().min(self.batching.max_batch);
            let batch: Vec<S::Item> = self.queue.drain(..n).collect();
            match self.export(&batch).await {
                Ok(()) => {
                    S::counted(&self.metrics, true, n as u64);
                    self.health.succeeded(S::NAME);
                }
                Err(error) => {
                    self.health.failed(S::NAME, &error);
                    if last {
                        S::counted(&self.metrics, false, n as u64);
                        return;
                    }
                    // Retried after the backoff; the queue bound drops the oldest.
                    for item in batch.into_iter().rev() {
                        self.queue.push_front(item);
                    }
                    while self.queue.len() > self.batching.max_queue {
                        self.queue.pop_front();
                        S::counted(&self.metrics, false, 1);
                    }
                    return;
                }
            }
        }
    }

    /// One export call per resource in the batch.
    async fn export(&mut self, batch: &[S::Item]) -> Result<(), String> {
        let mut groups: Vec<(&Arc<Resource>, Vec<&S::Item>)> = Vec::new();
        for item in batch {
            let resource = S::resource(item);
            match groups
                .iter_mut()
                .find(|(r, _)| Arc::ptr_eq(r, resource) || ***r == **resource)
            {
                Some((_, items)) => items.push(item),
                None => groups.push((resource, vec![item])),
            }
        }
        for (resource, items) in groups {
            let export = self
                .signal
                .export(sdk_resource(resource, &self.extra), &items);
            match tokio::time::timeout(self.batching.timeout, export).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(format!("timed out after {:?}", self.batching.timeout)),
            }
        }
        Ok(())
    }
}

/// A `ManualReader` shared between its meter provider and the collecting task.
#[derive(Clone, Debug)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// The instruments of one service.
struct ServiceMeters {
    _provider: SdkMeterProvider,
    reader: SharedReader,
    duration: [Histogram<f64>; 2],
    request_size: [Histogram<u64>; 2],
    response_size: [Histogram<u64>; 2],
    rpc_duration: [Histogram<f64>; 2],
    dns_duration: Histogram<f64>,
    dns_responses: Counter<u64>,
}

/// Services with their own meter provider; more share no metrics (counted).
const MAX_SERVICES: usize = 512;

/// RED metrics over OTLP.
pub struct OtlpMetrics {
    services: Mutex<HashMap<String, ServiceMeters>>,
    extra: Vec<(String, String)>,
    metrics: Arc<SelfMetrics>,
}

fn index(kind: SpanKind) -> usize {
    match kind {
        SpanKind::Server => 0,
        SpanKind::Client => 1,
    }
}

impl OtlpMetrics {
    fn meters(resource: &Resource, extra: &[(String, String)]) -> ServiceMeters {
        let reader = SharedReader(Arc::new(ManualReader::builder().build()));
        let provider = SdkMeterProvider::builder()
            .with_resource(sdk_resource(resource, extra))
            .with_reader(reader.clone())
            .build();
        let meter = provider.meter_with_scope(scope());
        let duration = |name: &'static str, help: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(help)
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build()
        };
        let size = |name: &'static str, help: &'static str| {
            meter
                .u64_histogram(name)
                .with_unit("By")
                .with_description(help)
                .with_boundaries(SIZE_BUCKETS.to_vec())
                .build()
        };
        ServiceMeters {
            duration: [
                duration(
                    "http.server.request.duration",
                    "Duration of HTTP server requests.",
                ),
                duration(
                    "http.client.request.duration",
                    "Duration of HTTP client requests.",
                ),
            ],
            request_size: [
                size(
                    "http.server.request.body.size",
                    "Size of HTTP server request bodies.",
                ),
                size(
                    "http.client.request.body.size",
                    "Size of HTTP client request bodies.",
                ),
            ],
            response_size: [
                size(
                    "http.server.response.body.size",
                    "Size of HTTP server response bodies.",
                ),
                size(
                    "http.client.response.body.size",
                    "Size of HTTP client response bodies.",
                ),
            ],
            rpc_duration: [
                duration("rpc.server.call.duration", "Duration of RPCs served."),
                duration("rpc.client.call.duration", "Duration of RPCs made."),
            ],
            dns_duration: duration("dns.lookup.duration", "Duration of DNS lookups."),
            dns_responses: meter
                .u64_counter("dns.responses")
                .with_description("DNS responses by response code.")
                .build(),
            _provider: provider,
            reader,
        }
    }

    /// Runs `f` with the meters of the span's service (created on first use,
    /// up to `MAX_SERVICES`).
    fn with_meters(&self, resource: &Resource, f: impl FnOnce(&ServiceMeters)) {
        let mut services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        let key = &resource.service_instance_id;
        if !services.contains_key(key) {
            if services.len() >= MAX_SERVICES {
                SelfMetrics::add(&self.metrics.metrics_services_overflowed, 1);
                return;
            }
            services.insert(key.clone(), OtlpMetrics::meters(resource, &self.extra));
        }
        if let Some(meters) = services.get(key) {
            f(meters);
        }
    }

    /// Records one HTTP exchange (every exchange, sampled or not) under its
    /// [`Measure::label_pairs`].
    pub fn record_measure(&self, m: &Measure<'_>, labels: &[(&'static str, &str)]) {
        let attrs: Vec<KeyValue> = labels
            .iter()
            .filter(|(k, _)| !Resource::is_resource_label(k))
            .map(|&(k, v)| match k {
                "http.response.status_code" | "server.port" => {
                    KeyValue::new(k, v.parse::<i64>().unwrap_or(0))
                }
                _ => KeyValue::new(k, v.to_string()),
            })
            .collect();
        let i = index(m.kind);
        self.with_meters(m.resource, |meters| {
            meters.duration[i].record(m.duration_ns as f64 / 1e9, &attrs);
            meters.request_size[i].record(m.request_body_bytes, &attrs);
            meters.response_size[i].record(m.response_body_bytes, &attrs);
        });
    }

    /// Records one RPC under its label pairs (`service.name` is the resource's).
    pub fn record_rpc(
        &self,
        resource: &Resource,
        kind: SpanKind,
        labels: &[(&'static str, &str)],
        duration_ns: u64,
    ) {
        let attrs: Vec<KeyValue> = labels
            .iter()
            .filter(|(k, _)| !Resource::is_resource_label(k))
            .map(|&(k, v)| match k {
                "server.port" => KeyValue::new(k, v.parse::<i64>().unwrap_or(0)),
                _ => KeyValue::new(k, v.to_string()),
            })
            .collect();
        self.with_meters(resource, |meters| {
            meters.rpc_duration[index(kind)].record(duration_ns as f64 / 1e9, &attrs);
        });
    }

    /// Records a DNS lookup span.
    pub fn record_dns(&self, span: &Span) {
        let text = |k: &'static str| match span.attribute(k) {
            Some(Value::Str(s)) => Some(KeyValue::new(k, s.clone())),
            _ => None,
        };
        let attrs: Vec<KeyValue> = ["dns.question.type", "server.address", "error.type"]
            .into_iter()
            .filter_map(text)
            .collect();
        let code: Vec<KeyValue> = text("dns.response.code").into_iter().collect();
        self.with_meters(&span.resource, |meters| {
            meters
                .dns_duration
                .record(span.duration_ns() as f64 / 1e9, &attrs);
            if !code.is_empty() {
                meters.dns_responses.add(1, &code);
            }
        });
    }

    fn readers(&self) -> Vec<SharedReader> {
        self.services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|m| m.reader.clone())
            .collect()
    }
}

/// Starts metric collection and export every `metric_interval`.
pub fn spawn_metrics(
    protocol: Protocol,
    settings: &OtlpSettings,
    metrics: Arc<SelfMetrics>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(Arc<OtlpMetrics>, tokio::task::JoinHandle<()>)> {
    let exporter = build_exporter!(
        MetricExporter::builder(),
        protocol,
        settings.metrics_endpoint.clone()
    )
    .context("building the OTLP metric exporter")?;
    let otlp = Arc::new(OtlpMetrics {
        services: Mutex::new(HashMap::new()),
        extra: settings.resource_attributes.clone(),
        metrics,
    });
    let collected = Arc::clone(&otlp);
    let interval = settings.metric_interval;
    let timeout = settings.batching.timeout;
    let handle = tokio::spawn(async move {
        let mut health = Health::default();
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = shutdown.changed() => true,
            };
            if last || health.ready() {
                for reader in collected.readers() {
                    let mut rm = ResourceMetrics::default();
                    if reader.collect(&mut rm).is_err() {
                        continue;
                    }
                    let limit = if last {
                        timeout.min(FINAL_FLUSH)
                    } else {
                        timeout
                    };
                    match tokio::time::timeout(limit, exporter.export(&rm)).await {
                        Ok(Ok(())) => health.succeeded("metrics"),
                        Ok(Err(e)) => health.failed("metrics", &e.to_string()),
                        Err(_) => health.failed("metrics", "timed out"),
                    }
                }
            }
            if last {
                break;
            }
        }
        let _ = exporter.shutdown();
    });
    Ok((otlp, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        assert_eq!(OtlpSettings::from(&env(&[])).unwrap(), None);
    }

    #[test]
    fn endpoints_protocols_and_batching_come_from_the_standard_variables() {
        let s = OtlpSettings::from(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_SCHEDULE_DELAY", "250"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod, service.name=ignored",
            ),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.traces, Some(Protocol::Grpc));
        assert_eq!(s.metrics, Some(Protocol::HttpProtobuf));
        assert_eq!(s.batching.max_queue, 100);
        assert_eq!(s.batching.delay, Duration::from_millis(250));
        assert_eq!(s.batching.max_batch, 512);
        assert_eq!(s.metric_interval, Duration::from_secs(1));
        assert_eq!(
            s.resource_attributes,
            vec![("deployment.environment".to_string(), "prod".to_string())]
        );
    }

    #[test]
    fn per_signal_endpoints_and_opt_outs() {
        let s = OtlpSettings::from(&env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://t:4318/v1/traces",
        )]))
        .unwrap()
        .unwrap();
        assert_eq!((s.traces, s.metrics), (Some(Protocol::Grpc), None));
        let s = OtlpSettings::from(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.traces, None);
        assert!(
            OtlpSettings::from(&env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "x"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            ]))
            .is_err()
        );
        assert!(
            OtlpSettings::from(&env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "x"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "0")
            ]))
            .is_err()
        );
    }
}
