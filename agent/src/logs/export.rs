//! Log records over OTLP logs (gRPC or HTTP/protobuf, the standard
//! `OTEL_EXPORTER_OTLP_[LOGS_]*` variables), which Loki ingests natively
//! (`/otlp/v1/logs`). Batched, bounded and retried like spans (see
//! `export::otlp::BatchExport`); one resource per process, the same as its
//! spans'.

use std::{
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use anyhow::Context as _;
use opentelemetry::{
    logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity},
    trace::{SpanId, TraceFlags, TraceId},
};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::logs::{LogBatch, LogExporter as _, SdkLogger, SdkLoggerProvider};
use tokio::sync::mpsc;

use super::record::LogRecord;
use crate::{
    discovery::Resource,
    export::otlp::{BatchExport, OtlpSettings, Protocol, Signal, scope},
    self_metrics::SelfMetrics,
};

/// Sends log records to the exporter task without ever waiting.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<LogRecord>,
    metrics: Arc<SelfMetrics>,
}

impl LogSink {
    pub fn send(&self, record: LogRecord) {
        if self.tx.try_send(record).is_err() {
            SelfMetrics::add(&self.metrics.log_lines_export_dropped, 1);
        }
    }
}

/// Starts the log exporter task; it ends, after a last flush, when every
/// [`LogSink`] is dropped.
pub fn spawn(
    protocol: Protocol,
    settings: &OtlpSettings,
    metrics: Arc<SelfMetrics>,
) -> anyhow::Result<(LogSink, tokio::task::JoinHandle<()>)> {
    let builder = opentelemetry_otlp::LogExporter::builder();
    let exporter = match (protocol, settings.logs_endpoint.clone()) {
        (Protocol::Grpc, None) => builder.with_tonic().build(),
        (Protocol::Grpc, Some(e)) => builder.with_tonic().with_endpoint(e).build(),
        (Protocol::HttpProtobuf, None) => builder.with_http().build(),
        (Protocol::HttpProtobuf, Some(e)) => builder.with_http().with_endpoint(e).build(),
    }
    .context("building the OTLP log exporter")?;
    // Records are made by a logger with no processor: the batching task
    // exports them itself, per resource.
    let logger = SdkLoggerProvider::builder().build().logger("agent");
    let (tx, rx) = mpsc::channel(settings.batching.max_queue);
    let task = BatchExport::new(
        Logs {
            exporter,
            logger,
            scope: scope(),
        },
        settings,
        Arc::clone(&metrics),
    );
    Ok((LogSink { tx, metrics }, tokio::spawn(task.run(rx))))
}

struct Logs {
    exporter: opentelemetry_otlp::LogExporter,
    logger: SdkLogger,
    scope: opentelemetry::InstrumentationScope,
}

impl Signal for Logs {
    type Item = LogRecord;
    const NAME: &'static str = "logs";

    fn resource(record: &LogRecord) -> &Arc<Resource> {
        &record.resource
    }

    async fn export(
        &mut self,
        resource: opentelemetry_sdk::Resource,
        records: &[&LogRecord],
    ) -> Result<(), String> {
        self.exporter.set_resource(&resource);
        let sdk: Vec<_> = records.iter().map(|r| self.sdk_record(r)).collect();
        let pairs: Vec<_> = sdk.iter().map(|r| (r, &self.scope)).collect();
        self.exporter
            .export(LogBatch::new(&pairs))
            .await
            .map_err(|e| e.to_string())
    }

    fn counted(metrics: &SelfMetrics, exported: bool, n: u64) {
        if exported {
            SelfMetrics::add(&metrics.log_lines_exported, n);
        } else {
            SelfMetrics::add(&metrics.log_lines_export_dropped, n);
        }
    }

    fn shutdown(&mut self) {
        let _ = self.exporter.shutdown();
    }
}

impl Logs {
    fn sdk_record(&self, record: &LogRecord) -> opentelemetry_sdk::logs::SdkLogRecord {
        let time = |ns: u64| UNIX_EPOCH + Duration::from_nanos(ns);
        let mut sdk = self.logger.create_log_record();
        sdk.set_timestamp(time(record.time_unix_nano));
        sdk.set_observed_timestamp(time(record.observed_time_unix_nano));
        if let (Some(number), Some(text)) = (record.severity_number, record.severity_text) {
            sdk.set_severity_number(severity(number));
            sdk.set_severity_text(text);
        }
        sdk.set_body(AnyValue::String(record.body.clone().into()));
        sdk.add_attribute("log.iostream", record.iostream.as_str());
        if record.truncated {
            sdk.add_attribute("log.record.truncated", true);
        }
        if let (Some(trace_id), Some(span_id)) = (record.trace_id, record.span_id) {
            sdk.set_trace_context(
                TraceId::from_bytes(trace_id),
                SpanId::from_bytes(span_id),
                Some(TraceFlags::SAMPLED),
            );
        }
        sdk
    }
}

/// The SDK's enum for an OpenTelemetry severity number.
fn severity(number: i32) -> Severity {
    match number {
        ..=4 => Severity::Trace,
        5..=8 => Severity::Debug,
        9..=12 => Severity::Info,
        13..=16 => Severity::Warn,
        17..=20 => Severity::Error,
        _ => Severity::Fatal,
    }
}
