//! Span id → trace id of recent server spans whose ids the kernel drew, for
//! the profiler: a CPU sample knows only the span its thread served (the
//! kernel's `traces_ctx_v1`), an OTLP profile link needs the trace too, and
//! that trace may be the caller's (`traceparent`), which only userspace read.

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use lru::LruCache;

use super::context::{SpanId, TraceId};
use crate::flows::context::locked;

/// Spans remembered: more than an interval's worth of sampled requests on a
/// busy node (15 s at a few thousand requests per second would need more,
/// but only sampled spans matter, and those are few per interval).
const SPANS: usize = 65_536;

/// Shared between the pipeline (writes one entry per linked server span)
/// and the profiler (reads at each interval).
#[derive(Clone)]
pub struct SpanLinks(Arc<Mutex<LruCache<SpanId, TraceId>>>);

impl Default for SpanLinks {
    fn default() -> Self {
        SpanLinks(Arc::new(Mutex::new(LruCache::new(
            NonZeroUsize::new(SPANS).unwrap_or(NonZeroUsize::MIN),
        ))))
    }
}

impl std::fmt::Debug for SpanLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpanLinks")
    }
}

impl SpanLinks {
    pub fn remember(&self, span_id: SpanId, trace_id: TraceId) {
        locked(&self.0).put(span_id, trace_id);
    }

    pub fn trace_of(&self, span_id: &SpanId) -> Option<TraceId> {
        locked(&self.0).peek(span_id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_trace_of_a_span_and_forgets_the_oldest() {
        let links = SpanLinks::default();
        links.remember([1; 8], [2; 16]);
        assert_eq!(links.trace_of(&[1; 8]), Some([2; 16]));
        assert_eq!(links.trace_of(&[3; 8]), None);
        for i in 0..SPANS as u64 {
            links.remember(i.to_be_bytes(), [0; 16]);
        }
        assert_eq!(links.trace_of(&[1; 8]), None, "bounded");
    }
}
