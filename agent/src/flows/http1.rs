//! HTTP/1.x connections: the [`Session`] pairs requests with responses, and
//! each exchange becomes RED metrics and (when something consumes spans and the
//! sampler keeps it) a span.

use std::{collections::VecDeque, sync::Arc};

use super::{
    ConnInfo, Context, Flow, Module, Upgrade, context::Incoming, context::locked, span_kind,
};
use crate::{
    capture::Direction,
    conn::Chunk,
    discovery::Resource,
    protocols::http1::{Exchange, Output, Session},
    self_metrics::SelfMetrics,
    spans::{
        Span, SpanContext, SpanKind, Value,
        http::{HttpExchange, HttpFlow, span},
        measure::{Measure, PortText},
        route::{OVERFLOW_ROUTE, path_of},
    },
};

/// HTTP/1.0 and 1.1, detected by a request or status line.
pub struct Http1;

impl Module for Http1 {
    fn detects(&self, _conn: &ConnInfo, _direction: Direction, chunk: &Chunk) -> bool {
        Session::detect(&chunk.data)
    }

    fn open(&self, conn: &ConnInfo, _first: &Chunk, cx: &mut Context) -> Box<dyn Flow> {
        Box::new(Http1Conn {
            resource: cx.discovery.resource(conn.key.tgid, &conn.comm),
            peer_ip: PeerText::default(),
            session: Session::new(conn.requests_from(), cx.capture.clone()),
            contexts: VecDeque::new(),
        })
    }
}

#[derive(Debug)]
pub struct Http1Conn {
    session: Session,
    peer_ip: PeerText,
    /// Who the connection belongs to, looked up once when HTTP was detected
    /// (procfs reads per request would cost more than the parsing).
    resource: Arc<Resource>,
    /// Span contexts of started requests, oldest first, with the sampled flag of
    /// an incoming `traceparent`.
    contexts: VecDeque<(SpanContext, Option<bool>)>,
}

impl Flow for Http1Conn {
    fn data(
        &mut self,
        conn: &ConnInfo,
        direction: Direction,
        chunk: Chunk,
        tid: u32,
        cx: &mut Context,
        out: &mut Vec<Span>,
    ) -> Option<Upgrade> {
        let mut output = self.session.push(direction, &chunk);
        let upgrade = output.upgrade.take();
        self.handle(conn, tid, output, cx, out);
        let upgrade = upgrade?;
        // The request that asked for the switch is the oldest one started.
        let context = match self.contexts.pop_front() {
            Some(started) => started,
            None => (cx.new_root(), None),
        };
        if self.kind() == SpanKind::Server {
            cx.served(tid, conn.key, &context.0);
        }
        Some(Upgrade {
            protocol: upgrade.protocol,
            at: upgrade.at,
            exchange: Box::new(upgrade.exchange),
            context,
            chunk,
            direction,
            requests_from: self.session.requests_from().unwrap_or(direction),
            early: upgrade.early,
        })
    }

    fn close(&mut self, conn: &ConnInfo, tid: u32, cx: &mut Context, out: &mut Vec<Span>) {
        let output = self.session.close();
        self.handle(conn, tid, output, cx, out);
    }

    /// A protocol no module follows (WebSocket): the `101` exchange is the
    /// request's span, and nothing after it is parsed.
    fn upgrade_refused(
        &mut self,
        upgrade: Upgrade,
        conn: &ConnInfo,
        _tid: u32,
        cx: &mut Context,
        out: &mut Vec<Span>,
    ) {
        self.finish(conn, &upgrade.exchange, upgrade.context, cx, out);
    }
}

impl Http1Conn {
    fn kind(&self) -> SpanKind {
        span_kind(self.session.requests_from())
    }

    fn handle(
        &mut self,
        conn: &ConnInfo,
        tid: u32,
        output: Output,
        cx: &mut Context,
        out: &mut Vec<Span>,
    ) {
        let kind = self.kind();
        for reason in &output.errors {
            cx.self_metrics.parse_error("http1", reason);
        }
        for started in &output.started {
            let mut incoming = Incoming::of(&started.traceparent, &started.tracestate);
            if kind == SpanKind::Server {
                incoming.kernel = cx.kernel.take(conn.key, started.start_ns);
            }
            self.contexts
                .push_back(cx.context_for(kind, tid, conn.key, incoming, true));
        }
        for _ in 0..output.abandoned {
            self.contexts.pop_front();
        }
        for exchange in &output.exchanges {
            let started = match self.contexts.pop_front() {
                Some(started) => started,
                None => (cx.new_root(), None),
            };
            if kind == SpanKind::Server {
                cx.served(tid, conn.key, &started.0);
            }
            self.finish(conn, exchange, started, cx, out);
        }
    }

    /// Metrics for one exchange, and its span if kept; `started`: its span
    /// context and the sampled flag of its incoming `traceparent`.
    fn finish(
        &mut self,
        conn: &ConnInfo,
        exchange: &Exchange,
        (context, parent_sampled): (SpanContext, Option<bool>),
        cx: &mut Context,
        out: &mut Vec<Span>,
    ) {
        let kind = self.kind();
        cx.discovery.renew(&mut self.resource);
        let route = route_of(cx, &self.resource.service_name, &exchange.request.target);
        let flow = HttpFlow {
            exchange: HttpExchange::http1(exchange),
            kind,
            peer: conn.peer,
            local: conn.local,
            route: Some(&route),
            resource: Arc::clone(&self.resource),
            context,
            start_ns: cx.clock.unix_ns(exchange.request_start_ns),
            end_ns: cx.clock.unix_ns(exchange.response_end_ns),
            capture_query: cx.capture_query,
            tls: conn.tls,
        };
        let (span_id, trace_id) = (flow.context.span_id, flow.context.trace_id);
        let kept = out.len();
        record(flow, &mut self.peer_ip, parent_sampled, cx, out);
        // Samples were taken while it was served: the profiler's links need
        // its trace (only sampled spans are remembered: one LRU update per
        // request cost 8 % of the agent at saturation), and Grafana's
        // "profiles for this span" looks them up by this id (Pyroscope's
        // `span_id` label).
        if kind == SpanKind::Server && cx.kernel.profiled(&span_id) {
            cx.kernel.links.remember(span_id, trace_id);
            if let Some(span) = out.get_mut(kept) {
                span.attributes.push((
                    "pyroscope.profile.id".into(),
                    Value::Str(span_id.iter().map(|b| format!("{b:02x}")).collect()),
                ));
            }
        }
    }
}

/// The route of a request target in `service`'s bounded route set (overflow
/// counted).
pub fn route_of(cx: &mut Context, service: &str, target: &str) -> String {
    let route = cx.routes.route(service, path_of(target));
    if route == OVERFLOW_ROUTE {
        SelfMetrics::add(&cx.self_metrics.routes_overflowed, 1);
    }
    route
}

/// A connection's peer IP as text, for client metrics without a `Host`
/// header: formatted once per connection, not per request.
#[derive(Debug, Default)]
pub struct PeerText(Option<Box<str>>);

impl PeerText {
    fn of(&mut self, peer: Option<std::net::SocketAddr>) -> Option<&str> {
        if self.0.is_none()
            && let Some(peer) = peer
        {
            self.0 = Some(peer.ip().to_string().into_boxed_str());
        }
        self.0.as_deref()
    }
}

/// RED metrics for one HTTP exchange of any version, and its span when
/// something consumes spans and the sampler keeps it.
pub fn record(
    flow: HttpFlow<'_>,
    peer_ip: &mut PeerText,
    parent_sampled: Option<bool>,
    cx: &mut Context,
    out: &mut Vec<Span>,
) {
    let measure = Measure::new(&flow, peer_ip.of(flow.peer));
    let mut port = PortText::default();
    let labels = measure.label_pairs(&mut port);
    locked(&cx.metrics.http).record_measure(&measure, labels.as_slice());
    if let Some(otlp) = &cx.metrics.otlp {
        otlp.record_measure(&measure, labels.as_slice());
    }
    if cx.spans_consumed
        && cx.keeps(
            measure.error(),
            measure.duration_ns,
            &flow.context,
            parent_sampled,
        )
    {
        out.push(span(flow));
    }
}
