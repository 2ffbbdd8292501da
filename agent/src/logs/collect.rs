//! From the kernel's stdout/stderr writes to log records: lines per stream,
//! the writing thread's request, severity, redaction, a byte budget per
//! process. Bounded: streams and budgets are LRU tables, a stream carries at
//! most one partial line.

use std::{num::NonZeroUsize, sync::Arc};

use lru::LruCache;

use super::{
    lines::{Line, LineSplitter},
    record::{IoStream, LogRecord},
    redact::redact,
    severity::severity,
};
use crate::{
    capture::event::{KernelIds, LogWrite},
    config::LogSettings,
    discovery::Resource,
    self_metrics::SelfMetrics,
};

/// Streams (process × stdout/stderr) and processes remembered.
const STREAMS: usize = 1024;
/// A partial line is given out after this long without its newline.
const PARTIAL_LINE_NS: u64 = 1_000_000_000;
/// One write holding several lines and at least this much looks like a
/// stdio buffer flushed at some later moment: its lines are not linked to
/// the request the thread serves at flush time (it may be another one).
const BUFFER_FLUSH_BYTES: u64 = 4096;

struct Stream {
    splitter: LineSplitter,
    /// The latest write's time (monotonic ns) and ids, for its partial line.
    last_ns: u64,
    ids: Option<KernelIds>,
    resource: Arc<Resource>,
}

/// Bytes allowed per second and process.
struct Budget {
    second: u64,
    used: u64,
}

pub struct Collector {
    settings: LogSettings,
    streams: LruCache<(u32, i32), Stream>,
    budgets: LruCache<u32, Budget>,
    metrics: Arc<SelfMetrics>,
}

impl Collector {
    pub fn new(settings: LogSettings, metrics: Arc<SelfMetrics>) -> Collector {
        let bound = NonZeroUsize::new(STREAMS).unwrap_or(NonZeroUsize::MIN);
        Collector {
            settings,
            streams: LruCache::new(bound),
            budgets: LruCache::new(bound),
            metrics,
        }
    }

    /// The lines one write completed. `unix_ns` turns the kernel's
    /// monotonic time into wall time; `resource` names the process (asked
    /// only for its first write).
    pub fn write(
        &mut self,
        write: LogWrite,
        unix_ns: impl Fn(u64) -> u64,
        resource: impl FnOnce() -> Arc<Resource>,
    ) -> Vec<LogRecord> {
        let Some(iostream) = IoStream::of_fd(write.fd) else {
            return Vec::new();
        };
        let line_bytes = self.settings.line_bytes;
        let stream = self
            .streams
            .get_or_insert_mut((write.tgid, write.fd), || Stream {
                splitter: LineSplitter::new(line_bytes),
                last_ns: 0,
                ids: None,
                resource: resource(),
            });
        let missing = write.bytes.saturating_sub(write.payload.len() as u64);
        let lines = stream.splitter.push(&write.payload, missing);
        let buffered = lines.len() > 1 && write.bytes >= BUFFER_FLUSH_BYTES;
        stream.last_ns = write.ts_ns;
        stream.ids = if buffered { None } else { write.trace };
        let (ids, resource) = (stream.ids, Arc::clone(&stream.resource));
        let time = unix_ns(write.ts_ns);
        lines
            .into_iter()
            .filter_map(|line| self.record(write.tgid, line, iostream, ids, &resource, time))
            .collect()
    }

    /// Partial lines of streams idle for a second, and of processes that
    /// are no longer logged (`gone`), as records.
    pub fn expire(
        &mut self,
        now_ns: u64,
        gone: &[u32],
        unix_ns: impl Fn(u64) -> u64,
    ) -> Vec<LogRecord> {
        let stale: Vec<(u32, i32)> = self
            .streams
            .iter()
            .filter(|((tgid, _), s)| {
                gone.contains(tgid)
                    || (s.splitter.pending() > 0
                        && now_ns.saturating_sub(s.last_ns) > PARTIAL_LINE_NS)
            })
            .map(|(k, _)| *k)
            .collect();
        let mut flushed = Vec::new();
        for key in stale {
            let entry = if gone.contains(&key.0) {
                self.streams
                    .pop(&key)
                    .map(|mut s| (s.splitter.flush(), s.last_ns, s.ids, s.resource))
            } else {
                self.streams.get_mut(&key).map(|s| {
                    (
                        s.splitter.flush(),
                        s.last_ns,
                        s.ids,
                        Arc::clone(&s.resource),
                    )
                })
            };
            if let (Some((Some(line), last_ns, ids, resource)), Some(iostream)) =
                (entry, IoStream::of_fd(key.1))
            {
                flushed.push((key.0, line, iostream, ids, resource, unix_ns(last_ns)));
            }
        }
        let out = flushed
            .into_iter()
            .filter_map(|(tgid, line, iostream, ids, resource, time)| {
                self.record(tgid, line, iostream, ids, &resource, time)
            })
            .collect();
        for tgid in gone {
            self.budgets.pop(tgid);
        }
        out
    }

    fn record(
        &mut self,
        tgid: u32,
        line: Line,
        iostream: IoStream,
        ids: Option<KernelIds>,
        resource: &Arc<Resource>,
        time_unix_nano: u64,
    ) -> Option<LogRecord> {
        if !self.within_budget(tgid, time_unix_nano, line.text.len() as u64) {
            SelfMetrics::add(&self.metrics.log_lines_over_budget, 1);
            return None;
        }
        let severity = severity(&line.text);
        let body = if self.settings.redact {
            match redact(&line.text) {
                std::borrow::Cow::Borrowed(_) => line.text,
                std::borrow::Cow::Owned(redacted) => {
                    SelfMetrics::add(&self.metrics.log_lines_redacted, 1);
                    redacted
                }
            }
        } else {
            line.text
        };
        SelfMetrics::add(&self.metrics.log_lines, 1);
        Some(LogRecord {
            time_unix_nano,
            observed_time_unix_nano: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            severity_number: severity.map(|s| s.number),
            severity_text: severity.map(|s| s.text),
            body,
            truncated: line.truncated,
            iostream,
            trace_id: ids.map(|i| i.trace_id),
            span_id: ids.map(|i| i.span_id),
            resource: Arc::clone(resource),
        })
    }

    /// Takes `bytes` from the process's budget for the second `unix_ns` is in.
    fn within_budget(&mut self, tgid: u32, unix_ns: u64, bytes: u64) -> bool {
        let second = unix_ns / 1_000_000_000;
        let budget = self
            .budgets
            .get_or_insert_mut(tgid, || Budget { second, used: 0 });
        if budget.second != second {
            *budget = Budget { second, used: 0 };
        }
        if budget.used + bytes > self.settings.bytes_per_second {
            return false;
        }
        budget.used += bytes;
        true
    }
}
