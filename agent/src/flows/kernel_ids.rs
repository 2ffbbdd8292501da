//! Ids the kernel drew for server requests (its `trace_ctx`): the CPU
//! sampler labels samples with them, so the server span must carry exactly
//! these. A record that starts a request brings them; the parser that later
//! reads that request's head (at the same timestamp, on the same
//! connection) takes them. A response record flagged `PROFILED` says the
//! span has samples (`pyroscope.profile.id`).

use std::num::NonZeroUsize;

use lru::LruCache;

use crate::{
    capture::event::KernelIds, conn::ConnKey, spans::context::SpanId, spans::links::SpanLinks,
};

/// Request starts waiting for their parser; in practice a handful (the
/// parser reads a head as soon as its bytes arrive).
const PENDING: usize = 4096;
/// Spans known to have samples, until they end.
const PROFILED: usize = 4096;

pub struct KernelRequests {
    pending: LruCache<(ConnKey, u64), KernelIds>,
    profiled: LruCache<SpanId, ()>,
    /// Span → trace of the spans that took kernel ids, for the profiler.
    pub links: SpanLinks,
}

impl KernelRequests {
    pub fn new(links: SpanLinks) -> KernelRequests {
        let bound = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        KernelRequests {
            pending: LruCache::new(bound(PENDING)),
            profiled: LruCache::new(bound(PROFILED)),
            links,
        }
    }

    /// A record of `conn` at `ts_ns` carried kernel ids.
    pub fn note(&mut self, conn: ConnKey, ts_ns: u64, ids: KernelIds, profiled: bool) {
        if profiled {
            self.profiled.put(ids.span_id, ());
        } else {
            self.pending.put((conn, ts_ns), ids);
        }
    }

    /// The ids of the request whose head starts in `conn`'s chunk at `ts_ns`.
    pub fn take(&mut self, conn: ConnKey, ts_ns: u64) -> Option<KernelIds> {
        self.pending.pop(&(conn, ts_ns))
    }

    /// Whether samples were taken while the span was served (asked once, at
    /// its end).
    pub fn profiled(&mut self, span_id: &SpanId) -> bool {
        self.profiled.pop(span_id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ConnKey {
        ConnKey {
            tgid: 1,
            fd: 5,
            conn_id: 9,
        }
    }

    #[test]
    fn ids_go_to_the_request_that_starts_at_their_record() {
        let mut k = KernelRequests::new(SpanLinks::default());
        let ids = KernelIds {
            trace_id: [1; 16],
            span_id: [2; 8],
        };
        k.note(conn(), 100, ids, false);
        assert_eq!(k.take(conn(), 99), None, "another chunk");
        assert_eq!(k.take(conn(), 100), Some(ids));
        assert_eq!(k.take(conn(), 100), None, "taken once");
        assert!(!k.profiled(&[2; 8]));
        k.note(conn(), 200, ids, true);
        assert!(k.profiled(&[2; 8]));
        assert!(!k.profiled(&[2; 8]));
    }
}
