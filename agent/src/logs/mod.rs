//! Log lines from processes' stdout/stderr: the captured bytes of each write
//! cut into lines ([`lines`]), their severity when the line states one
//! ([`severity`]), and secrets masked before they leave the node ([`redact`]).

pub mod collect;
pub mod export;
pub mod lines;
pub mod record;
pub mod redact;
pub mod severity;
pub mod targets;

use std::sync::{Arc, Mutex};

use crate::{
    capture::{Capture, event::LogWrite},
    config::LogSettings,
    discovery::Resource,
    flows::context::locked,
    self_metrics::SelfMetrics,
};

/// `--logs` in the event pipeline: which processes the kernel reports, their
/// lines as records, and the OTLP sink (when an endpoint is set).
pub struct LogPipeline {
    targets: targets::Targets,
    collector: collect::Collector,
    sink: Option<export::LogSink>,
    metrics: Arc<SelfMetrics>,
}

impl LogPipeline {
    pub fn new(
        settings: &LogSettings,
        sink: Option<export::LogSink>,
        metrics: Arc<SelfMetrics>,
    ) -> anyhow::Result<LogPipeline> {
        Ok(LogPipeline {
            targets: targets::Targets::new(&settings.exes)?,
            collector: collect::Collector::new(settings.clone(), Arc::clone(&metrics)),
            sink,
            metrics,
        })
    }

    pub fn write(
        &mut self,
        write: LogWrite,
        unix_ns: impl Fn(u64) -> u64,
        resource: impl FnOnce() -> Arc<Resource>,
    ) -> Vec<record::LogRecord> {
        self.collector.write(write, unix_ns, resource)
    }

    /// Once a second: processes that started or ended, partial lines due.
    pub fn tick(
        &mut self,
        capture: &Mutex<Capture>,
        now_ns: u64,
        unix_ns: impl Fn(u64) -> u64,
    ) -> Vec<record::LogRecord> {
        let changes = self.targets.scan();
        if !changes.added.is_empty() || !changes.removed.is_empty() {
            let mut capture = locked(capture);
            for &tgid in &changes.added {
                if let Err(error) = capture.log_process(tgid, true) {
                    tracing::warn!(tgid, error = %format!("{error:#}"), "process not logged");
                }
            }
            for &tgid in &changes.removed {
                let _ = capture.log_process(tgid, false);
            }
        }
        SelfMetrics::set(&self.metrics.log_processes, self.targets.listed() as u64);
        self.collector.expire(now_ns, &changes.removed, unix_ns)
    }

    pub fn send(&self, record: record::LogRecord) {
        if let Some(sink) = &self.sink {
            sink.send(record);
        }
    }
}
