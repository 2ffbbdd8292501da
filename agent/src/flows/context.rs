//! What every protocol module shares: span ids, the thread → server span map
//! that parents outgoing calls, routes, resources, the sampler and the metric
//! recorders. A module turns its exchanges into spans and metrics through this,
//! so sampling, parenting and the self-metrics work the same for every protocol.

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex, PoisonError},
};

use lru::LruCache;

use super::kernel_ids::KernelRequests;
use crate::{
    capture::event::KernelIds,
    clock::WallClock,
    conn::ConnKey,
    discovery::Discovery,
    export::otlp::OtlpMetrics,
    metrics::{dns::DnsMetrics, http::HttpMetrics, rpc::RpcMetrics},
    protocols::http1::Capture,
    self_metrics::SelfMetrics,
    spans::{
        Span, SpanContext, SpanKind,
        context::{IdGenerator, parse_traceparent},
        route::Routes,
        sampler::Sampler,
    },
};

use super::TrackerSettings;

/// Threads and connections remembered for parenting calls (each table).
const ACTIVE_THREADS: usize = 16384;

/// Trace context a request arrived with (HTTP headers, gRPC metadata).
#[derive(Clone, Copy, Debug, Default)]
pub struct Incoming<'a> {
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
    /// The ids the kernel drew for this server request (see `kernel_ids`).
    pub kernel: Option<KernelIds>,
}

impl<'a> Incoming<'a> {
    pub fn of(traceparent: &'a Option<String>, tracestate: &'a Option<String>) -> Incoming<'a> {
        Incoming {
            traceparent: traceparent.as_deref(),
            tracestate: tracestate.as_deref(),
            kernel: None,
        }
    }
}

/// Metric recorders, shared with the Prometheus endpoint (behind their locks)
/// and OTLP (when on).
#[derive(Clone)]
pub struct Recorders {
    pub http: Arc<Mutex<HttpMetrics>>,
    pub rpc: Arc<Mutex<RpcMetrics>>,
    pub dns: Arc<Mutex<DnsMetrics>>,
    pub otlp: Option<Arc<OtlpMetrics>>,
}

/// Takes a lock whose holders cannot leave the value inconsistent (a
/// recorder: at worst one histogram update half done; the capture: every
/// operation on it is one map syscall), so poisoning is ignored.
pub fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct Context {
    pub ids: IdGenerator,
    pub routes: Routes,
    pub discovery: Discovery,
    /// Who parents an outgoing call (see [`Context::call_context`]).
    threads: ThreadWork,
    sampler: Sampler,
    /// Some output takes spans: without one, exchanges only feed the metrics.
    pub spans_consumed: bool,
    /// Query strings in spans (opt-in).
    pub capture_query: bool,
    /// Headers and body bytes the user opted in to.
    pub capture: Capture,
    pub clock: WallClock,
    pub metrics: Recorders,
    pub self_metrics: Arc<SelfMetrics>,
    /// See [`super::TrackerSettings::tls`].
    pub tls: Option<crate::tls::probes::TlsProbes>,
    /// Ids the kernel drew for requests, and which spans have CPU samples.
    pub kernel: KernelRequests,
}

impl Context {
    pub fn new(
        settings: &TrackerSettings,
        self_metrics: Arc<SelfMetrics>,
        otlp: Option<Arc<OtlpMetrics>>,
    ) -> Context {
        let max_series = settings.max_series;
        Context {
            ids: IdGenerator::default(),
            routes: Routes::new(&settings.route_patterns, settings.max_routes),
            discovery: Discovery::new(settings.k8s.clone()),
            tls: settings.tls.clone(),
            kernel: KernelRequests::new(settings.span_links.clone()),
            threads: ThreadWork::new(),
            sampler: settings.sampler.clone(),
            spans_consumed: settings.spans_consumed,
            capture_query: settings.capture_query,
            capture: Capture {
                headers: settings
                    .capture_headers
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                body_bytes: settings.capture_body_bytes,
            },
            clock: WallClock::new(),
            metrics: Recorders {
                http: Arc::new(Mutex::new(HttpMetrics::new(max_series))),
                rpc: Arc::new(Mutex::new(RpcMetrics::new(max_series))),
                dns: Arc::new(Mutex::new(DnsMetrics::new(max_series))),
                otlp,
            },
            self_metrics,
        }
    }

    /// The root of a new trace.
    pub fn new_root(&mut self) -> SpanContext {
        child_of(None, &mut self.ids)
    }

    /// A call made by thread `tid` on connection `conn`: the child of the
    /// request it works for (see [`ThreadWork::parent`]), else a new root.
    pub fn call_context(&mut self, tid: u32, conn: ConnKey) -> SpanContext {
        let parent = self.threads.parent(tid, conn);
        let context = child_of(parent.as_ref(), &mut self.ids);
        if let Some(parent) = parent {
            self.threads.client_parent.put(conn, parent);
        }
        context
    }

    /// Thread `tid` read from `conn`: what it does next is for that
    /// connection's request.
    pub fn read_by(&mut self, tid: u32, conn: ConnKey) {
        self.threads.last_read.put(tid, conn);
    }

    /// Thread `tid` opened `conn`: its first call is for the request the
    /// thread works for now (a proxy connects while handling the request;
    /// it may write only after reading others).
    pub fn connected(&mut self, tid: u32, conn: ConnKey) {
        if let Some(parent) = self.threads.current(tid) {
            self.threads.bound.put(conn, parent);
        }
    }

    /// The span context of a request that just started on thread `tid`, and
    /// the sampled flag of its incoming `traceparent`. `by_thread`: the
    /// thread → server span map may be used (set for a server request, read
    /// for a client call); protocols that multiplex many requests over one
    /// thread pass false, because there the latest request on a thread is
    /// not the one a call belongs to.
    pub fn context_for(
        &mut self,
        kind: SpanKind,
        tid: u32,
        conn: ConnKey,
        incoming: Incoming<'_>,
        by_thread: bool,
    ) -> (SpanContext, Option<bool>) {
        let parsed = incoming.traceparent.and_then(parse_traceparent);
        let trace_state = || incoming.tracestate.map(str::to_string);
        let (context, sampled) = match (kind, parsed, incoming.kernel) {
            // The caller's span is our parent.
            (SpanKind::Server, Some(tp), kernel) => (
                SpanContext {
                    trace_id: tp.trace_id,
                    span_id: kernel.map_or_else(|| self.ids.span_id(), |k| k.span_id),
                    parent_span_id: Some(tp.parent_id),
                    trace_flags: tp.flags,
                    trace_state: trace_state(),
                },
                Some(tp.flags & 1 == 1),
            ),
            // The application propagated its own context: the header's parent id
            // is the id of this call, so the callee's server span nests under it.
            (SpanKind::Client, Some(tp), _) => (
                SpanContext {
                    trace_id: tp.trace_id,
                    span_id: tp.parent_id,
                    parent_span_id: None,
                    trace_flags: tp.flags,
                    trace_state: trace_state(),
                },
                Some(tp.flags & 1 == 1),
            ),
            // A new trace, with the ids the CPU samples were labelled with.
            (SpanKind::Server, None, Some(kernel)) => (
                SpanContext {
                    trace_id: kernel.trace_id,
                    span_id: kernel.span_id,
                    parent_span_id: None,
                    trace_flags: 1,
                    trace_state: None,
                },
                None,
            ),
            (SpanKind::Client, None, _) if by_thread => (self.call_context(tid, conn), None),
            (SpanKind::Client, None, _) | (SpanKind::Server, None, None) => (self.new_root(), None),
        };
        if kind == SpanKind::Server && by_thread {
            self.threads.active.put(tid, context.clone());
            self.threads.serving.put(conn, context.clone());
        }
        (context, sampled)
    }

    /// A server span ended: its thread and connection no longer serve it.
    pub fn served(&mut self, tid: u32, conn: ConnKey, context: &SpanContext) {
        let same = |a: &SpanContext| a.span_id == context.span_id;
        if self.threads.active.peek(&tid).is_some_and(same) {
            self.threads.active.pop(&tid);
        }
        if self.threads.serving.peek(&conn).is_some_and(same) {
            self.threads.serving.pop(&conn);
        }
    }

    /// Whether the sampler keeps a finished span (counted either way).
    pub fn keeps(
        &self,
        error: bool,
        duration_ns: u64,
        context: &SpanContext,
        parent_sampled: Option<bool>,
    ) -> bool {
        let keep = self
            .sampler
            .keeps(error, duration_ns, &context.trace_id, parent_sampled);
        self.count_kept(keep);
        keep
    }

    /// The sampler's verdict on a span already built.
    pub fn keep_span(&self, span: &Span, parent_sampled: Option<bool>) -> bool {
        let keep = self.sampler.keep(span, parent_sampled);
        self.count_kept(keep);
        keep
    }

    fn count_kept(&self, keep: bool) {
        if keep {
            SelfMetrics::add(&self.self_metrics.spans_kept, 1);
        } else {
            SelfMetrics::add(&self.self_metrics.spans_sampled_out, 1);
        }
    }
}

/// What each thread works for, from the order of its reads, connects and
/// requests: an event loop (nginx as a proxy) reads request A, connects to
/// its upstream, reads request B, and only then writes A's upstream request.
/// The latest request on the thread (B) would be the wrong parent; the
/// connection remembers A from its connect. All bounded (LRU).
struct ThreadWork {
    /// tid → the latest server span started on it.
    active: LruCache<u32, SpanContext>,
    /// Server connection → its request in flight.
    serving: LruCache<ConnKey, SpanContext>,
    /// tid → the connection it last read from.
    last_read: LruCache<u32, ConnKey>,
    /// Client connection → the request that opened it (for its first call).
    bound: LruCache<ConnKey, SpanContext>,
    /// Client connection → the parent of its latest call (reading its
    /// answer continues that request's work).
    client_parent: LruCache<ConnKey, SpanContext>,
}

impl ThreadWork {
    fn new() -> ThreadWork {
        let bound = NonZeroUsize::new(ACTIVE_THREADS).unwrap_or(NonZeroUsize::MIN);
        ThreadWork {
            active: LruCache::new(bound),
            serving: LruCache::new(bound),
            last_read: LruCache::new(bound),
            bound: LruCache::new(bound),
            client_parent: LruCache::new(bound),
        }
    }

    /// The request thread `tid` works for: the one of the connection it
    /// last read from (a server connection's request in flight, or the
    /// request a client connection's call was made for), else the latest
    /// request started on the thread.
    fn current(&mut self, tid: u32) -> Option<SpanContext> {
        if let Some(conn) = self.last_read.peek(&tid).copied() {
            if let Some(serving) = self.serving.peek(&conn) {
                return Some(serving.clone());
            }
            if let Some(parent) = self.client_parent.peek(&conn) {
                return Some(parent.clone());
            }
        }
        self.active.peek(&tid).cloned()
    }

    /// The parent of a call on `conn` by `tid`: the request that opened the
    /// connection for its first call, else what the thread works for.
    fn parent(&mut self, tid: u32, conn: ConnKey) -> Option<SpanContext> {
        self.bound.pop(&conn).or_else(|| self.current(tid))
    }
}

/// A call made while `parent` is served is its child; without a parent, the
/// root of a new trace.
fn child_of(parent: Option<&SpanContext>, ids: &mut IdGenerator) -> SpanContext {
    match parent {
        Some(parent) => SpanContext {
            trace_id: parent.trace_id,
            span_id: ids.span_id(),
            parent_span_id: Some(parent.span_id),
            trace_flags: parent.trace_flags,
            trace_state: parent.trace_state.clone(),
        },
        None => SpanContext {
            trace_id: ids.trace_id(),
            span_id: ids.span_id(),
            parent_span_id: None,
            trace_flags: 1,
            trace_state: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(fd: i32) -> ConnKey {
        ConnKey {
            tgid: 1,
            fd,
            conn_id: fd as u64,
        }
    }

    fn span(id: u8) -> SpanContext {
        SpanContext {
            trace_id: [id; 16],
            span_id: [id; 8],
            parent_span_id: None,
            trace_flags: 1,
            trace_state: None,
        }
    }

    /// nginx as a proxy on one thread: read A, connect for A, read B,
    /// connect for B, then write A's and B's upstream requests.
    #[test]
    fn a_connection_opened_for_a_request_parents_its_first_call() {
        let mut t = ThreadWork::new();
        let (a, b, up_a, up_b) = (conn(10), conn(11), conn(20), conn(21));
        for (server, upstream, request) in [(a, up_a, span(1)), (b, up_b, span(2))] {
            t.last_read.put(7, server);
            t.active.put(7, request.clone());
            t.serving.put(server, request.clone());
            let parent = t.current(7).expect("working for a request");
            t.bound.put(upstream, parent);
        }
        assert_eq!(t.parent(7, up_a).map(|p| p.span_id), Some([1; 8]));
        assert_eq!(t.parent(7, up_b).map(|p| p.span_id), Some([2; 8]));
        // The binding serves one call; a reused connection follows the thread.
        t.client_parent.put(up_a, span(1));
        t.last_read.put(7, up_a);
        assert_eq!(t.parent(7, conn(22)).map(|p| p.span_id), Some([1; 8]));
    }
}
