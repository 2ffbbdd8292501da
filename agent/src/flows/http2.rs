//! HTTP/2 connections (h2c): the [`Session`] follows streams; each stream that
//! ends becomes a gRPC call (`content-type: application/grpc*` on its
//! request, response or trailers) or an HTTP exchange, with the same spans
//! and metrics as HTTP/1 (`network.protocol.version="2"`).
//!
//! What the agent cannot know it leaves out: a stream whose `:path` referenced
//! an HPACK entry inserted before the agent attached has no method, route or
//! `rpc.method` (its span is named `HTTP` or `grpc`) and is counted in
//! `agent_parse_errors_total{protocol="http2",reason="nameless_stream"}`; a call
//! whose trailers were not seen has no status code, never a defaulted OK.
//!
//! Parents: many streams share one connection and one thread (an event loop,
//! gRPC's polling threads), so the thread → server span map is neither set nor
//! read here; only a `traceparent` in the headers links spans.

use std::{collections::HashMap, sync::Arc};

use super::{
    ConnInfo, Context, Flow, Module, Upgrade,
    context::{Incoming, locked},
    http1::{PeerText, record, route_of},
    span_kind,
};
use crate::{
    capture::Direction,
    conn::Chunk,
    discovery::Resource,
    protocols::http2::session::{End, Exchange, Head, Known, Output, Session},
    self_metrics::SelfMetrics,
    spans::{
        Span, SpanContext, SpanKind,
        http::{HttpExchange, HttpFlow},
        measure::{PortText, split_host},
        rpc::{Code, RpcCall, method_of, span},
    },
};

/// HTTP/2 with prior knowledge: the client preface, or frames that can only
/// be HTTP/2 on a connection joined midway.
pub struct Http2;

impl Module for Http2 {
    fn detects(&self, _conn: &ConnInfo, _direction: Direction, chunk: &Chunk) -> bool {
        Session::detect(&chunk.data)
    }

    fn open(&self, conn: &ConnInfo, first: &Chunk, cx: &mut Context) -> Box<dyn Flow> {
        let from_start = !conn.preexisting && first.offset == 0;
        Box::new(Http2Conn {
            session: Session::new(conn.requests_from(), from_start, cx.capture.clone()),
            resource: cx.discovery.resource(conn.key.tgid, &conn.comm),
            peer_ip: PeerText::default(),
            contexts: HashMap::new(),
        })
    }

    /// HTTP/1.1 `Upgrade: h2c`: the upgrade request is stream 1, answered
    /// over HTTP/2 with the context the HTTP/1 flow gave it.
    fn upgrade(&self, up: &Upgrade, conn: &ConnInfo, cx: &mut Context) -> Option<Box<dyn Flow>> {
        if up.protocol != "h2c" {
            return None;
        }
        let request = &up.exchange;
        let session = Session::upgraded(
            up.requests_from,
            up.at,
            Head::from_http1(&request.request),
            request.request_start_ns,
            request.request_end_ns,
            cx.capture.clone(),
        );
        Some(Box::new(Http2Conn {
            session,
            resource: cx.discovery.resource(conn.key.tgid, &conn.comm),
            peer_ip: PeerText::default(),
            contexts: HashMap::from([(1, up.context.clone())]),
        }))
    }
}

#[derive(Debug)]
struct Http2Conn {
    session: Session,
    resource: Arc<Resource>,
    peer_ip: PeerText,
    /// Span contexts of started streams (bounded by the session's stream
    /// bound: every started stream ends, evicted ones included).
    contexts: HashMap<u32, (SpanContext, Option<bool>)>,
}

impl Flow for Http2Conn {
    fn data(
        &mut self,
        conn: &ConnInfo,
        direction: Direction,
        chunk: Chunk,
        _tid: u32,
        cx: &mut Context,
        out: &mut Vec<Span>,
    ) -> Option<Upgrade> {
        let output = self.session.push(direction, &chunk);
        self.handle(conn, output, cx, out);
        None
    }

    /// Frame headers and header blocks are what HTTP/2 needs: with them
    /// copied, DATA larger than the capture cap no longer hides the next
    /// frame (and the HPACK table with it).
    fn kernel_frames(&self) -> bool {
        true
    }

    fn close(&mut self, conn: &ConnInfo, _tid: u32, cx: &mut Context, out: &mut Vec<Span>) {
        let output = self.session.close(conn.last_ns);
        self.handle(conn, output, cx, out);
    }
}

impl Http2Conn {
    fn kind(&self) -> SpanKind {
        span_kind(self.session.requests_from())
    }

    fn handle(&mut self, conn: &ConnInfo, output: Output, cx: &mut Context, out: &mut Vec<Span>) {
        let kind = self.kind();
        for reason in &output.errors {
            cx.self_metrics.parse_error("http2", reason);
        }
        for started in &output.started {
            let incoming = Incoming::of(&started.traceparent, &started.tracestate);
            let context = cx.context_for(kind, 0, conn.key, incoming, false);
            self.contexts.insert(started.stream_id, context);
        }
        if !output.exchanges.is_empty() {
            cx.discovery.renew(&mut self.resource);
        }
        for exchange in &output.exchanges {
            let started = match self.contexts.remove(&exchange.stream_id) {
                Some(started) => started,
                None => (cx.new_root(), None),
            };
            if exchange.request.path.value().is_none() {
                cx.self_metrics.parse_error("http2", "nameless_stream");
            }
            if is_grpc(exchange) {
                self.grpc(conn, kind, exchange, started, cx, out);
            } else {
                self.http(conn, kind, exchange, started, cx, out);
            }
        }
    }

    fn http(
        &mut self,
        conn: &ConnInfo,
        kind: SpanKind,
        e: &Exchange,
        (context, parent_sampled): (SpanContext, Option<bool>),
        cx: &mut Context,
        out: &mut Vec<Span>,
    ) {
        let response = e.response.as_ref();
        let target = e.request.path.value().map(String::as_str);
        let route = target.map(|t| route_of(cx, &self.resource.service_name, t));
        let exchange = HttpExchange {
            method: e.request.method.value().map(String::as_str),
            target,
            version: "2",
            host: e.request.authority.value().map(String::as_str),
            user_agent: e.request.user_agent.value().map(String::as_str),
            status: response.and_then(|r| r.status.value().copied()),
            failure: failure(e),
            request_body_bytes: e.request_body_bytes,
            response_body_bytes: e.response_body_bytes,
            request_headers: &e.request.captured,
            response_headers: response.map_or(&[], |r| r.captured.as_slice()),
            request_body: &[],
            response_body: &[],
        };
        let flow = HttpFlow {
            exchange,
            kind,
            peer: conn.peer,
            local: conn.local,
            route: route.as_deref(),
            resource: Arc::clone(&self.resource),
            context,
            start_ns: cx.clock.unix_ns(e.request_start_ns),
            end_ns: cx.clock.unix_ns(end_ns(e)),
            capture_query: cx.capture_query,
            tls: conn.tls,
        };
        record(flow, &mut self.peer_ip, parent_sampled, cx, out);
    }

    fn grpc(
        &self,
        conn: &ConnInfo,
        kind: SpanKind,
        e: &Exchange,
        (context, parent_sampled): (SpanContext, Option<bool>),
        cx: &mut Context,
        out: &mut Vec<Span>,
    ) {
        let code = grpc_code(e);
        if code.is_none() {
            cx.self_metrics.parse_error("http2", "grpc_status_unknown");
        }
        let path = e.request.path.value().map(String::as_str);
        let (method, original) = match path.map(method_of) {
            None => (None, None),
            Some(None) => (Some("_OTHER"), path),
            // A method the server did not know is not one of its methods.
            Some(Some(_)) if code == Some(Code::UNIMPLEMENTED) => (Some("_OTHER"), path),
            Some(Some(m)) if cx.routes.admit(&self.resource.service_name, m) => (Some(m), None),
            Some(Some(_)) => {
                SelfMetrics::add(&cx.self_metrics.routes_overflowed, 1);
                (Some("_OTHER"), path)
            }
        };
        let authority = e.request.authority.value().map(|a| split_host(a));
        let server_socket = match kind {
            SpanKind::Client => conn.peer,
            SpanKind::Server => conn.local,
        };
        let server_address = match (authority, server_socket) {
            (Some((host, _)), _) => Some(host.to_string()),
            (None, Some(s)) => Some(s.ip().to_string()),
            (None, None) => None,
        };
        let server_port = authority
            .and_then(|(_, port)| port)
            .or(server_socket.map(|s| s.port()));
        let call = RpcCall {
            kind,
            method,
            method_original: original,
            code,
            server_address: server_address.as_deref(),
            server_port,
            peer: conn.peer,
            resource: &self.resource,
            context,
            start_ns: cx.clock.unix_ns(e.request_start_ns),
            end_ns: cx.clock.unix_ns(end_ns(e)),
            request_messages: e.request_messages,
            response_messages: e.response_messages,
        };
        let mut port = PortText::default();
        let labels = call.label_pairs(&mut port);
        locked(&cx.metrics.rpc).record(kind, labels.as_slice(), call.duration_ns());
        if let Some(otlp) = &cx.metrics.otlp {
            otlp.record_rpc(&self.resource, kind, labels.as_slice(), call.duration_ns());
        }
        if cx.spans_consumed
            && cx.keeps(
                call.error(),
                call.duration_ns(),
                &call.context,
                parent_sampled,
            )
        {
            out.push(span(&call));
        }
    }
}

/// A gRPC stream: its request, response or trailers say `application/grpc*`.
fn is_grpc(e: &Exchange) -> bool {
    e.request.is_grpc()
        || e.response.as_ref().is_some_and(Head::is_grpc)
        || e.trailers.as_ref().is_some_and(Head::is_grpc)
}

/// The call's status: `grpc-status` of the trailers (or of a Trailers-Only
/// response); without one, gRPC's mapping of the HTTP status or of the
/// stream's reset; `None` when what decides it was not seen.
fn grpc_code(e: &Exchange) -> Option<Code> {
    for head in [e.trailers.as_ref(), e.response.as_ref()]
        .into_iter()
        .flatten()
    {
        match head.grpc_status {
            Known::Value(code) => return Some(Code(code)),
            Known::Unknown => return None,
            Known::Absent => {}
        }
    }
    match e.end {
        // The caller's deadline passed: its library reports DEADLINE_EXCEEDED
        // and cancels the stream (RST_STREAM CANCEL on the wire).
        End::RstStream {
            error_code: Some(CANCEL),
        } if e.request.grpc_timeout_ns.is_some_and(|t| {
            let elapsed = e.end_ns.saturating_sub(e.request_start_ns);
            u128::from(elapsed) * 100 >= u128::from(t) * 99
        }) =>
        {
            Some(Code::DEADLINE_EXCEEDED)
        }
        End::RstStream { error_code } => error_code.map(Code::from_reset),
        End::Complete => match e.response.as_ref().map(|r| &r.status) {
            Some(Known::Value(status)) => Some(Code::from_http(*status)),
            _ => None,
        },
        End::GoAway { .. } | End::Closed | End::Evicted => None,
    }
}

/// RFC 9113 §7 CANCEL.
const CANCEL: u32 = 0x8;

/// `error.type` of an HTTP/2 exchange that ended without a response status.
fn failure(e: &Exchange) -> Option<&'static str> {
    if e.response
        .as_ref()
        .is_some_and(|r| r.status.value().is_some())
    {
        return None;
    }
    match e.end {
        End::RstStream { error_code } => Some(error_code.map_or("stream_reset", reset_name)),
        End::GoAway { .. } | End::Closed => Some("connection_closed"),
        // Evicted or complete without a readable status: not known.
        End::Evicted | End::Complete => None,
    }
}

/// RFC 9113 §7 error code names (`error.type` of a reset stream).
fn reset_name(code: u32) -> &'static str {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("_OTHER")
}

/// When the stream ended (its last frame, its reset, the close).
fn end_ns(e: &Exchange) -> u64 {
    e.end_ns.max(e.request_start_ns)
}
