//! From connection bytes to flows: protocol detection per connection, the HTTP/1
//! session and DNS lookups, span contexts (W3C trace context, parent by serving
//! thread), spans, RED metrics and sampling.

pub mod dns;

use std::{
    collections::VecDeque,
    num::NonZeroUsize,
    sync::{Arc, Mutex, PoisonError},
};

use lru::LruCache;

use crate::{
    capture::Direction,
    clock::WallClock,
    conn::{Chunk, Conn, Role},
    discovery::{Discovery, Resource},
    export::otlp::OtlpMetrics,
    metrics::dns::DnsMetrics,
    metrics::http::HttpMetrics,
    protocols::http1::{Capture, Output, Session, Started},
    self_metrics::SelfMetrics,
    spans::{
        Span, SpanContext, SpanKind,
        context::{IdGenerator, parse_traceparent},
        http::{HttpFlow, span},
        measure::{Measure, PortText},
        route::{OVERFLOW_ROUTE, Routes, path_of},
        sampler::Sampler,
    },
};

/// Chunks looked at for a known protocol before a connection is given up on.
const DETECT_CHUNKS: u8 = 16;
/// Threads remembered as serving a request.
const ACTIVE_THREADS: usize = 16384;

/// What a connection carries, as far as the agent can tell.
#[derive(Debug)]
pub enum Protocol {
    /// Not known yet; counts the chunks tried.
    Detecting(u8),
    Http1(Box<Http1Conn>),
    /// A connection to a DNS resolver.
    Dns(Box<dns::DnsConn>),
    /// Nothing the agent parses: its bytes are dropped unread.
    Other,
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol::Detecting(0)
    }
}

#[derive(Debug)]
pub struct Http1Conn {
    session: Session,
    /// The peer's IP as text, for client metrics without a `Host` header:
    /// formatted once per connection, not per request.
    peer_ip: Option<Box<str>>,
    /// Who the connection belongs to, looked up once when HTTP was detected
    /// (procfs reads per request would cost more than the parsing).
    resource: Arc<Resource>,
    /// Span contexts of started requests, oldest first, with the sampled flag of
    /// an incoming `traceparent`.
    contexts: VecDeque<(SpanContext, Option<bool>)>,
}

/// Settings of the tracker.
#[derive(Clone, Debug)]
pub struct TrackerSettings {
    pub sampler: Sampler,
    /// Query strings in spans (opt-in).
    pub capture_query: bool,
    /// Header names whose values go into spans (opt-in, lower case).
    pub capture_headers: Vec<String>,
    /// Leading body bytes that go into spans (opt-in; 0: none).
    pub capture_body_bytes: usize,
    pub route_patterns: Vec<String>,
    pub max_routes: usize,
    pub max_series: usize,
    /// Resolver ports (DNS lookups are traced on connections to them).
    pub dns_ports: Vec<u16>,
    /// A query without an answer for this long is a timed-out lookup.
    pub dns_timeout_ns: u64,
    /// Some output takes spans (OTLP, stdout, a tap): without one, requests
    /// only feed the metrics and no span is built.
    pub spans_consumed: bool,
}

pub struct Tracker {
    ids: IdGenerator,
    routes: Routes,
    discovery: Discovery,
    /// tid → the server span that thread is serving.
    active: LruCache<u32, SpanContext>,
    sampler: Sampler,
    spans_consumed: bool,
    capture_query: bool,
    capture: Capture,
    clock: WallClock,
    pub metrics: Arc<Mutex<HttpMetrics>>,
    /// The same measurements for OTLP, when enabled.
    otlp_metrics: Option<Arc<OtlpMetrics>>,
    dns: dns::DnsLookups,
    pub dns_metrics: Arc<Mutex<DnsMetrics>>,
    self_metrics: Arc<SelfMetrics>,
}

impl Tracker {
    pub fn new(
        settings: &TrackerSettings,
        self_metrics: Arc<SelfMetrics>,
        otlp_metrics: Option<Arc<OtlpMetrics>>,
    ) -> Tracker {
        Tracker {
            ids: IdGenerator::default(),
            routes: Routes::new(&settings.route_patterns, settings.max_routes),
            discovery: Discovery::default(),
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
            metrics: Arc::new(Mutex::new(HttpMetrics::new(settings.max_series))),
            otlp_metrics,
            dns: dns::DnsLookups::new(settings.dns_ports.clone(), settings.dns_timeout_ns),
            dns_metrics: Arc::new(Mutex::new(DnsMetrics::new(settings.max_series))),
            self_metrics,
        }
    }

    /// Parses `chunks` that `conn` carried in `direction` (moved by thread `tid`);
    /// kept spans are appended to `out`.
    pub fn on_data(
        &mut self,
        conn: &mut Conn,
        direction: Direction,
        chunks: Vec<Chunk>,
        tid: u32,
        out: &mut Vec<Span>,
    ) {
        let (peer, local, pid) = (conn.peer, conn.local, conn.key.tgid);
        for chunk in chunks {
            if matches!(conn.protocol, Protocol::Detecting(_)) && self.dns.is_resolver(conn.peer) {
                let tcp = conn.transport == Some(crate::conn::Transport::Tcp);
                let resource = self.discovery.resource(pid, &conn.comm);
                conn.protocol = Protocol::Dns(Box::new(dns::DnsConn::new(tcp, resource)));
            }
            if let Protocol::Dns(d) = &mut conn.protocol {
                for message in d.messages(direction, &chunk) {
                    let seen = dns::Seen {
                        conn: conn.key,
                        direction,
                        bytes: &message,
                        ts_ns: chunk.ts_ns,
                        server: conn.peer,
                    };
                    self.on_dns(&seen, d, tid, out);
                }
                continue;
            }
            if let Protocol::Detecting(tries) = &mut conn.protocol {
                if !Session::detect(&chunk.data) {
                    *tries += 1;
                    if *tries >= DETECT_CHUNKS {
                        conn.protocol = Protocol::Other;
                    }
                    continue;
                }
                let requests_from = match conn.role {
                    Role::Server => Some(Direction::Ingress),
                    Role::Client => Some(Direction::Egress),
                    Role::Unknown => None,
                };
                let resource = self.discovery.resource(pid, &conn.comm);
                conn.protocol = Protocol::Http1(Box::new(Http1Conn {
                    resource,
                    peer_ip: None,
                    session: Session::new(requests_from, self.capture.clone()),
                    contexts: VecDeque::new(),
                }));
            }
            let Protocol::Http1(http) = &mut conn.protocol else {
                continue;
            };
            let output = http.session.push(direction, &chunk);
            let view = ConnView { http, peer, local };
            self.handle(view, tid, output, out);
        }
    }

    /// The connection closed: finish what its close completes.
    pub fn on_close(&mut self, conn: &mut Conn, tid: u32, out: &mut Vec<Span>) {
        let Protocol::Http1(http) = &mut conn.protocol else {
            return;
        };
        let output = http.session.close();
        let view = ConnView {
            http,
            peer: conn.peer,
            local: conn.local,
        };
        self.handle(view, tid, output, out);
    }

    fn handle(&mut self, conn: ConnView<'_>, tid: u32, output: Output, out: &mut Vec<Span>) {
        let ConnView { http, peer, local } = conn;
        let kind = match http.session.requests_from() {
            Some(Direction::Egress) => SpanKind::Client,
            _ => SpanKind::Server,
        };
        for reason in &output.errors {
            self.self_metrics.parse_error("http1", reason);
        }
        for started in &output.started {
            let context = self.context_for(kind, tid, started);
            http.contexts.push_back(context);
        }
        for _ in 0..output.abandoned {
            http.contexts.pop_front();
        }
        for exchange in &output.exchanges {
            let (context, parent_sampled) = http
                .contexts
                .pop_front()
                .unwrap_or_else(|| (self.new_root(), None));
            if kind == SpanKind::Server
                && self
                    .active
                    .peek(&tid)
                    .is_some_and(|a| a.span_id == context.span_id)
            {
                self.active.pop(&tid);
            }
            let route = self.routes.route(
                &http.resource.service_name,
                path_of(&exchange.request.target),
            );
            if route == OVERFLOW_ROUTE {
                SelfMetrics::add(&self.self_metrics.routes_overflowed, 1);
            }
            if http.peer_ip.is_none()
                && let Some(peer) = peer
            {
                http.peer_ip = Some(peer.ip().to_string().into_boxed_str());
            }
            let flow = HttpFlow {
                exchange,
                kind,
                peer,
                local,
                route: &route,
                resource: Arc::clone(&http.resource),
                context,
                start_ns: self.clock.unix_ns(exchange.request_start_ns),
                end_ns: self.clock.unix_ns(exchange.response_end_ns),
                capture_query: self.capture_query,
            };
            let measure = Measure::new(&flow, http.peer_ip.as_deref());
            let mut port = PortText::default();
            let labels = measure.label_pairs(&mut port);
            self.metrics
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record_measure(&measure, labels.as_slice());
            if let Some(otlp) = &self.otlp_metrics {
                otlp.record_measure(&measure, labels.as_slice());
            }
            if !self.spans_consumed {
                continue;
            }
            let keep = self.sampler.keeps(
                measure.error(),
                measure.duration_ns,
                &flow.context.trace_id,
                parent_sampled,
            );
            if keep {
                SelfMetrics::add(&self.self_metrics.spans_kept, 1);
                out.push(span(flow));
            } else {
                SelfMetrics::add(&self.self_metrics.spans_sampled_out, 1);
            }
        }
    }

    fn on_dns(&mut self, seen: &dns::Seen<'_>, conn: &dns::DnsConn, tid: u32, out: &mut Vec<Span>) {
        let active = self.active.get(&tid).cloned();
        let ids = &mut self.ids;
        let outcome = self
            .dns
            .on_message(seen, conn, || child_of(active.as_ref(), ids));
        match outcome {
            dns::Outcome::Answered(answered) => {
                let (pending, response, end_ns) = *answered;
                self.finish_dns(pending, Some(response), end_ns, out);
            }
            dns::Outcome::Malformed => self.self_metrics.parse_error("dns", "malformed"),
            dns::Outcome::Unmatched => self.self_metrics.parse_error("dns", "unmatched_response"),
            dns::Outcome::Query | dns::Outcome::Ignored => {}
        }
        SelfMetrics::set(&self.self_metrics.dns_pending_evicted, self.dns.evicted);
    }

    /// Lookups that timed out by `now_ns` (monotonic); a timed-out lookup's span
    /// ends when the agent gave up on it.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Span>) {
        for pending in self.dns.expire(now_ns) {
            self.finish_dns(pending, None, now_ns, out);
        }
    }

    fn finish_dns(
        &mut self,
        p: dns::Pending,
        response: Option<crate::protocols::dns::DnsMessage>,
        end_ns: u64,
        out: &mut Vec<Span>,
    ) {
        let s = crate::spans::dns::span(crate::spans::dns::DnsLookup {
            question: p.question,
            start_ns: self.clock.unix_ns(p.start_ns),
            end_ns: self.clock.unix_ns(end_ns),
            response,
            server: p.server,
            transport: p.transport,
            resource: p.resource,
            context: p.context,
        });
        self.dns_metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(&s);
        if let Some(otlp) = &self.otlp_metrics {
            otlp.record_dns(&s);
        }
        if self.sampler.keep(&s, None) {
            SelfMetrics::add(&self.self_metrics.spans_kept, 1);
            out.push(s);
        } else {
            SelfMetrics::add(&self.self_metrics.spans_sampled_out, 1);
        }
    }

    fn new_root(&mut self) -> SpanContext {
        child_of(None, &mut self.ids)
    }

    /// The span context of a request that just started on thread `tid`.
    fn context_for(
        &mut self,
        kind: SpanKind,
        tid: u32,
        started: &Started,
    ) -> (SpanContext, Option<bool>) {
        let incoming = started.traceparent.as_deref().and_then(parse_traceparent);
        let (context, sampled) = match (kind, incoming) {
            // The caller's span is our parent.
            (SpanKind::Server, Some(tp)) => (
                SpanContext {
                    trace_id: tp.trace_id,
                    span_id: self.ids.span_id(),
                    parent_span_id: Some(tp.parent_id),
                    trace_flags: tp.flags,
                    trace_state: started.tracestate.clone(),
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
                    trace_state: started.tracestate.clone(),
                },
                Some(tp.flags & 1 == 1),
            ),
            // A call made by a thread while it serves a request is its child.
            (SpanKind::Client, None) => {
                let parent = self.active.get(&tid).cloned();
                (child_of(parent.as_ref(), &mut self.ids), None)
            }
            (SpanKind::Server, None) => (self.new_root(), None),
        };
        if kind == SpanKind::Server {
            self.active.put(tid, context.clone());
        }
        (context, sampled)
    }
}

/// A call made by a thread: the child of the server span it serves, if any, else
/// the root of a new trace.
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

/// The parts of a connection `handle` needs, borrowed apart from its streams.
struct ConnView<'a> {
    http: &'a mut Http1Conn,
    peer: Option<std::net::SocketAddr>,
    local: Option<std::net::SocketAddr>,
}
