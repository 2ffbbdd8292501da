//! What every protocol module shares: span ids, the thread → server span map
//! that parents outgoing calls, routes, resources, the sampler and the metric
//! recorders. A module turns its exchanges into spans and metrics through this,
//! so sampling, parenting and the self-metrics work the same for every protocol.

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex, PoisonError},
};

use lru::LruCache;

use crate::{
    clock::WallClock,
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

/// Threads remembered as serving a request.
const ACTIVE_THREADS: usize = 16384;

/// Trace context a request arrived with (HTTP headers, gRPC metadata).
#[derive(Clone, Copy, Debug, Default)]
pub struct Incoming<'a> {
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
}

impl<'a> Incoming<'a> {
    pub fn of(traceparent: &'a Option<String>, tracestate: &'a Option<String>) -> Incoming<'a> {
        Incoming {
            traceparent: traceparent.as_deref(),
            tracestate: tracestate.as_deref(),
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
    /// tid → the server span that thread is serving.
    active: LruCache<u32, SpanContext>,
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
            active: LruCache::new(NonZeroUsize::new(ACTIVE_THREADS).unwrap_or(NonZeroUsize::MIN)),
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

    /// A call made by thread `tid`: the child of the server span it serves, if
    /// any, else a new root.
    pub fn child_of_thread(&mut self, tid: u32) -> SpanContext {
        let parent = self.active.get(&tid).cloned();
        child_of(parent.as_ref(), &mut self.ids)
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
        incoming: Incoming<'_>,
        by_thread: bool,
    ) -> (SpanContext, Option<bool>) {
        let parsed = incoming.traceparent.and_then(parse_traceparent);
        let trace_state = || incoming.tracestate.map(str::to_string);
        let (context, sampled) = match (kind, parsed) {
            // The caller's span is our parent.
            (SpanKind::Server, Some(tp)) => (
                SpanContext {
                    trace_id: tp.trace_id,
                    span_id: self.ids.span_id(),
                    parent_span_id: Some(tp.parent_id),
                    trace_flags: tp.flags,
                    trace_state: trace_state(),
                },
                Some(tp.flags & 1 == 1),
            ),
            // The application propagated its own context: the header's parent id
            // is the id of this call, so the callee's server span nests under it.
            (SpanKind::Client, Some(tp)) => (
                SpanContext {
                    trace_id: tp.trace_id,
                    span_id: tp.parent_id,
                    parent_span_id: None,
                    trace_flags: tp.flags,
                    trace_state: trace_state(),
                },
                Some(tp.flags & 1 == 1),
            ),
            (SpanKind::Client, None) if by_thread => (self.child_of_thread(tid), None),
            (SpanKind::Client, None) | (SpanKind::Server, None) => (self.new_root(), None),
        };
        if kind == SpanKind::Server && by_thread {
            self.active.put(tid, context.clone());
        }
        (context, sampled)
    }

    /// A server span ended: its thread no longer serves it.
    pub fn served(&mut self, tid: u32, context: &SpanContext) {
        if self
            .active
            .peek(&tid)
            .is_some_and(|a| a.span_id == context.span_id)
        {
            self.active.pop(&tid);
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
