//! gRPC calls as spans, following the RPC semantic conventions
//! (<https://opentelemetry.io/docs/specs/semconv/rpc/grpc/>, v1.44): span name
//! `{rpc.method}` (`package.Service/Method`) or `grpc` when the method is not
//! known, `rpc.system.name`, `rpc.method`, `rpc.response.status_code` (the
//! code's name), `server.address`/`server.port`, `error.type`.

use std::{borrow::Cow, net::SocketAddr, sync::Arc};

use super::{Span, SpanContext, SpanKind, Status, Value};
use crate::discovery::Resource;

/// gRPC status codes by number (`grpc/doc/statuscodes.md`).
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A gRPC status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code(pub u32);

impl Code {
    pub const OK: Code = Code(0);
    pub const CANCELLED: Code = Code(1);
    pub const UNKNOWN: Code = Code(2);
    pub const DEADLINE_EXCEEDED: Code = Code(4);
    pub const PERMISSION_DENIED: Code = Code(7);
    pub const RESOURCE_EXHAUSTED: Code = Code(8);
    pub const UNIMPLEMENTED: Code = Code(12);
    pub const INTERNAL: Code = Code(13);
    pub const UNAVAILABLE: Code = Code(14);
    pub const UNAUTHENTICATED: Code = Code(16);

    /// The code's name; codes gRPC does not define are `UNKNOWN` (as gRPC
    /// libraries treat them).
    pub fn name(self) -> &'static str {
        usize::try_from(self.0)
            .ok()
            .and_then(|i| CODES.get(i))
            .copied()
            .unwrap_or("UNKNOWN")
    }

    /// The status a client sees for a response without `grpc-status`
    /// (`grpc/doc/http-grpc-status-mapping.md`): a 200 without it is UNKNOWN,
    /// never OK.
    pub fn from_http(status: u16) -> Code {
        match status {
            400 => Code::INTERNAL,
            401 => Code::UNAUTHENTICATED,
            403 => Code::PERMISSION_DENIED,
            404 => Code::UNIMPLEMENTED,
            429 | 502..=504 => Code::UNAVAILABLE,
            _ => Code::UNKNOWN,
        }
    }

    /// The status of a stream reset with an HTTP/2 error code
    /// (`grpc/doc/PROTOCOL-HTTP2.md`, "Errors").
    pub fn from_reset(error_code: u32) -> Code {
        match error_code {
            0x7 => Code::UNAVAILABLE,        // REFUSED_STREAM
            0x8 => Code::CANCELLED,          // CANCEL
            0xb => Code::RESOURCE_EXHAUSTED, // ENHANCE_YOUR_CALM
            0xc => Code::PERMISSION_DENIED,  // INADEQUATE_SECURITY
            _ => Code::INTERNAL,
        }
    }

    /// Whether the span is an error: on clients every code but OK; on
    /// servers only the codes that mean the server failed.
    pub fn is_error(self, kind: SpanKind) -> bool {
        match kind {
            SpanKind::Client => self != Code::OK,
            SpanKind::Server => matches!(self.0, 2 | 4 | 12 | 13 | 14 | 15),
        }
    }
}

/// `rpc.method` of a gRPC `:path` (`/package.Service/Method`): the path
/// without its leading `/` when it has that shape, else `None` (the span then
/// says `_OTHER` with the original).
pub fn method_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    };
    (ok(service) && ok(method)).then_some(rest)
}

/// One finished gRPC call with what the agent knows around it.
pub struct RpcCall<'a> {
    pub kind: SpanKind,
    /// `rpc.method`: a method name, `_OTHER`, or `None` when the request's
    /// `:path` is not known (joined mid-connection).
    pub method: Option<&'a str>,
    /// The `:path`'s method when `method` is `_OTHER`.
    pub method_original: Option<&'a str>,
    /// `None`: the call's status is not known (its trailers were not seen).
    pub code: Option<Code>,
    /// `server.address`/`server.port` (`:authority`, else the server socket).
    pub server_address: Option<&'a str>,
    pub server_port: Option<u16>,
    pub peer: Option<SocketAddr>,
    pub resource: &'a Arc<Resource>,
    pub context: SpanContext,
    /// Unix ns.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Messages each way (`None`: some were not captured).
    pub request_messages: Option<u64>,
    pub response_messages: Option<u64>,
}

impl RpcCall<'_> {
    pub fn error(&self) -> bool {
        self.code.is_some_and(|c| c.is_error(self.kind))
    }

    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// The metric labels, sorted by name; `port` holds the port's text.
    pub fn label_pairs<'b>(
        &'b self,
        port: &'b mut super::measure::PortText,
    ) -> super::measure::Pairs<'b> {
        let mut pairs = super::measure::Pairs::default();
        if self.error()
            && let Some(code) = self.code
        {
            pairs.push("error.type", code.name());
        }
        if let Some(method) = self.method {
            pairs.push("rpc.method", method);
        }
        if let Some(code) = self.code {
            pairs.push("rpc.response.status_code", code.name());
        }
        pairs.push("rpc.system.name", "grpc");
        if self.kind == SpanKind::Client {
            if let Some(address) = self.server_address {
                pairs.push("server.address", address);
            }
            if let Some(p) = self.server_port {
                pairs.push("server.port", port.set(p));
            }
        }
        pairs.push_resource(self.resource);
        pairs
    }
}

pub fn span(call: &RpcCall<'_>) -> Span {
    let mut attrs: Vec<(&'static str, Value)> =
        vec![("rpc.system.name", Value::Str("grpc".into()))];
    if let Some(method) = call.method {
        attrs.push(("rpc.method", Value::Str(method.into())));
    }
    if let Some(original) = call.method_original {
        attrs.push(("rpc.method_original", Value::Str(original.into())));
    }
    if let Some(code) = call.code {
        attrs.push(("rpc.response.status_code", Value::Str(code.name().into())));
    }
    if let Some(address) = call.server_address {
        attrs.push(("server.address", Value::Str(address.into())));
    }
    if let Some(port) = call.server_port {
        attrs.push(("server.port", Value::Int(i64::from(port))));
    }
    if let Some(peer) = call.peer {
        attrs.push(("network.peer.address", Value::Str(peer.ip().to_string())));
        attrs.push(("network.peer.port", Value::Int(i64::from(peer.port()))));
    }
    if let Some(n) = call.request_messages {
        attrs.push(("rpc.request.messages", Value::Int(n as i64)));
    }
    if let Some(n) = call.response_messages {
        attrs.push(("rpc.response.messages", Value::Int(n as i64)));
    }
    let error = call.error();
    if error && let Some(code) = call.code {
        attrs.push(("error.type", Value::Str(code.name().into())));
    }
    let name = match call.method {
        Some(m) if m != "_OTHER" => m.to_string(),
        _ => "grpc".to_string(),
    };
    Span {
        trace_id: call.context.trace_id,
        span_id: call.context.span_id,
        parent_span_id: call.context.parent_span_id,
        trace_state: call.context.trace_state.clone(),
        trace_flags: call.context.trace_flags,
        name,
        kind: call.kind,
        start_time_unix_nano: call.start_ns,
        end_time_unix_nano: call.end_ns,
        attributes: attrs
            .into_iter()
            .map(|(k, v)| (Cow::Borrowed(k), v))
            .collect(),
        status: if error { Status::Error } else { Status::Unset },
        resource: Arc::clone(call.resource),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(kind: SpanKind, method: Option<&'static str>, code: Option<Code>) -> Span {
        let resource = crate::spans::http::tests::resource();
        span(&RpcCall {
            kind,
            method,
            method_original: None,
            code,
            server_address: Some("greeter"),
            server_port: Some(50051),
            peer: Some("127.0.0.1:50051".parse().unwrap()),
            resource: &resource,
            context: crate::spans::http::tests::context(),
            start_ns: 10,
            end_ns: 20,
            request_messages: Some(1),
            response_messages: None,
        })
    }

    #[test]
    fn methods_come_from_well_formed_paths_only() {
        assert_eq!(
            method_of("/helloworld.Greeter/SayHello"),
            Some("helloworld.Greeter/SayHello")
        );
        assert_eq!(method_of("/Svc/M"), Some("Svc/M"));
        for bad in [
            "", "/", "/a", "/a/", "//m", "/a/b/c", "a/b", "/a b/c", "/a/b?x",
        ] {
            assert_eq!(method_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn status_names_and_error_rules_follow_semconv() {
        assert_eq!(Code(5).name(), "NOT_FOUND");
        assert_eq!(Code(99).name(), "UNKNOWN");
        let s = call(SpanKind::Client, Some("pkg.S/M"), Some(Code(5)));
        assert_eq!(s.name, "pkg.S/M");
        assert_eq!(s.status, Status::Error);
        assert_eq!(
            s.attribute("error.type"),
            Some(&Value::Str("NOT_FOUND".into()))
        );
        assert_eq!(
            s.attribute("rpc.response.status_code"),
            Some(&Value::Str("NOT_FOUND".into()))
        );
        // NOT_FOUND is the caller's problem, not the server's.
        let s = call(SpanKind::Server, Some("pkg.S/M"), Some(Code(5)));
        assert_eq!(s.status, Status::Unset);
        assert_eq!(s.attribute("error.type"), None);
        let s = call(SpanKind::Server, Some("pkg.S/M"), Some(Code::INTERNAL));
        assert_eq!(s.status, Status::Error);
    }

    #[test]
    fn unknown_method_or_status_is_said_not_guessed() {
        let s = call(SpanKind::Client, None, None);
        assert_eq!(s.name, "grpc");
        assert_eq!(s.attribute("rpc.method"), None);
        assert_eq!(s.attribute("rpc.response.status_code"), None);
        assert_eq!(s.status, Status::Unset);
        assert_eq!(
            call(SpanKind::Client, Some("_OTHER"), Some(Code(12))).name,
            "grpc"
        );
    }

    #[test]
    fn missing_grpc_status_maps_from_http_and_resets() {
        assert_eq!(Code::from_http(200), Code::UNKNOWN);
        assert_eq!(Code::from_http(404), Code::UNIMPLEMENTED);
        assert_eq!(Code::from_http(503), Code::UNAVAILABLE);
        assert_eq!(Code::from_reset(0x8), Code::CANCELLED);
        assert_eq!(Code::from_reset(0x2), Code::INTERNAL);
    }
}
