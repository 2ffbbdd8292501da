//! HTTP exchanges as spans, following the stable HTTP semantic conventions
//! (<https://opentelemetry.io/docs/specs/semconv/http/http-spans/>).

use std::{borrow::Cow, net::SocketAddr, sync::Arc};

use super::{Span, SpanContext, SpanKind, Status, Value, route::path_of};
use crate::{discovery::Resource, protocols::http1::Exchange};

const KNOWN_METHODS: [&str; 9] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

/// `http.request.method`: known methods as is, anything else `_OTHER`.
pub fn method(raw: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|m| **m == raw)
        .copied()
        .unwrap_or("_OTHER")
}

/// An HTTP request and its response as spans and metrics see them, whatever
/// the protocol version. `None` means not known (an HTTP/2 stream joined
/// midway whose header fields referenced table entries the agent never saw,
/// or a stream reset before its response): such fields are left out, never
/// guessed.
#[derive(Clone, Copy, Debug)]
pub struct HttpExchange<'a> {
    pub method: Option<&'a str>,
    /// The request target as sent (path and query; absolute form for proxies).
    pub target: Option<&'a str>,
    /// `network.protocol.version`: "1.0", "1.1", "2".
    pub version: &'static str,
    /// `Host` (HTTP/1) or `:authority` (HTTP/2).
    pub host: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub status: Option<u16>,
    /// `error.type` when there is no status to judge by (a reset stream).
    pub failure: Option<&'static str>,
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
    /// Opted-in headers and body prefixes.
    pub request_headers: &'a [(String, String)],
    pub response_headers: &'a [(String, String)],
    pub request_body: &'a [u8],
    pub response_body: &'a [u8],
}

impl<'a> HttpExchange<'a> {
    pub fn http1(e: &'a Exchange) -> HttpExchange<'a> {
        let req = &e.request;
        HttpExchange {
            method: Some(&req.method),
            target: Some(&req.target),
            version: if req.minor_version == 0 { "1.0" } else { "1.1" },
            host: req.headers.host.as_deref(),
            user_agent: req.headers.user_agent.as_deref(),
            status: Some(e.response.status),
            failure: None,
            request_body_bytes: e.request_body_bytes,
            response_body_bytes: e.response_body_bytes,
            request_headers: &req.headers.captured,
            response_headers: &e.response.headers.captured,
            request_body: &e.request_body,
            response_body: &e.response_body,
        }
    }

    /// `http.request.method`, when the method is known.
    pub fn method(&self) -> Option<&'static str> {
        self.method.map(method)
    }

    /// `error.type`, by the span kind's rule.
    pub fn error_type(&self, kind: SpanKind) -> Option<Cow<'static, str>> {
        match self.status {
            Some(status) => error_type(kind, status).map(Cow::Owned),
            None => self.failure.map(Cow::Borrowed),
        }
    }
}

/// One finished HTTP exchange with what the agent knows around it.
pub struct HttpFlow<'a> {
    pub exchange: HttpExchange<'a>,
    pub kind: SpanKind,
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    /// Templated route (see `route`); `None` when the path is not known.
    pub route: Option<&'a str>,
    pub resource: Arc<Resource>,
    pub context: SpanContext,
    /// Unix ns of the span's start and end.
    pub start_ns: u64,
    pub end_ns: u64,
    /// The user opted in to query strings (`--capture-query`).
    pub capture_query: bool,
    /// Seen as a TLS library's plaintext: `https`.
    pub tls: bool,
}

impl HttpFlow<'_> {
    /// `url.scheme`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// Opted-in headers as `<prefix>.<name>` attributes.
fn headers<'a>(
    prefix: &'static str,
    captured: &'a [(String, String)],
) -> impl Iterator<Item = (Cow<'static, str>, Value)> + 'a {
    captured.iter().map(move |(name, value)| {
        (
            Cow::Owned(format!("{prefix}.{name}")),
            Value::Str(value.clone()),
        )
    })
}

/// An opted-in body prefix as text (invalid UTF-8 replaced).
fn body(key: &'static str, bytes: &[u8]) -> Option<(Cow<'static, str>, Value)> {
    (!bytes.is_empty()).then(|| {
        (
            Cow::Borrowed(key),
            Value::Str(String::from_utf8_lossy(bytes).into_owned()),
        )
    })
}

/// Host and port from a `Host` header.
fn split_host(host: &str) -> (String, Option<u16>) {
    let (host, port) = super::measure::split_host(host);
    (host.to_string(), port)
}

/// `error.type` and span status: 5xx on servers, 4xx and 5xx on clients.
pub fn error_type(kind: SpanKind, status: u16) -> Option<String> {
    let error = match kind {
        SpanKind::Server => status >= 500,
        SpanKind::Client => status >= 400,
    };
    error.then(|| status.to_string())
}

pub fn span(flow: HttpFlow<'_>) -> Span {
    let e = flow.exchange;
    let method = e.method();
    let path = e.target.map(path_of);
    let (host, host_port) = e.host.map(split_host).unzip();
    let host_port = host_port.flatten();
    let query = e
        .target
        .and_then(|t| t.split_once('?'))
        .map(|(_, q)| q.split('#').next().unwrap_or_default());
    let query = query.filter(|q| flow.capture_query && !q.is_empty());
    let mut attrs: Vec<(&'static str, Value)> = Vec::with_capacity(16);
    if let Some(method) = method {
        attrs.push(("http.request.method", Value::Str(method.to_string())));
    }
    if let Some(status) = e.status {
        attrs.push(("http.response.status_code", Value::Int(i64::from(status))));
    }
    attrs.push(("url.scheme", Value::Str(flow.scheme().into())));
    attrs.push(("network.protocol.version", Value::Str(e.version.into())));
    if let Some(route) = flow.route {
        attrs.push(("http.route", Value::Str(route.to_string())));
    }
    if method == Some("_OTHER")
        && let Some(original) = e.method
    {
        attrs.push(("http.request.method_original", Value::Str(original.into())));
    }
    if let Some(peer) = flow.peer {
        attrs.push(("network.peer.address", Value::Str(peer.ip().to_string())));
        attrs.push(("network.peer.port", Value::Int(i64::from(peer.port()))));
    }
    match flow.kind {
        SpanKind::Server => {
            if let Some(path) = path {
                attrs.push(("url.path", Value::Str(path.to_string())));
            }
            if let Some(q) = query {
                attrs.push(("url.query", Value::Str(q.to_string())));
            }
            let server_port = host_port.or(flow.local.map(|l| l.port()));
            if let Some(host) = &host {
                attrs.push(("server.address", Value::Str(host.clone())));
            } else if let Some(local) = flow.local {
                attrs.push(("server.address", Value::Str(local.ip().to_string())));
            }
            if let Some(port) = server_port {
                attrs.push(("server.port", Value::Int(i64::from(port))));
            }
            if let Some(peer) = flow.peer {
                attrs.push(("client.address", Value::Str(peer.ip().to_string())));
            }
        }
        SpanKind::Client => {
            let server = host
                .clone()
                .or(flow.peer.map(|p| p.ip().to_string()))
                .unwrap_or_default();
            let port = host_port.or(flow.peer.map(|p| p.port()));
            if let Some(path) = path {
                let default_port = if flow.tls { 443 } else { 80 };
                let authority = match port {
                    None => server.clone(),
                    Some(p) if p == default_port => server.clone(),
                    Some(p) if server.contains(':') => format!("[{server}]:{p}"),
                    Some(p) => format!("{server}:{p}"),
                };
                let query = query.map(|q| format!("?{q}")).unwrap_or_default();
                attrs.push((
                    "url.full",
                    Value::Str(format!("{}://{authority}{path}{query}", flow.scheme())),
                ));
            }
            attrs.push(("server.address", Value::Str(server)));
            if let Some(port) = port {
                attrs.push(("server.port", Value::Int(i64::from(port))));
            }
        }
    }
    if let Some(ua) = e.user_agent {
        attrs.push(("user_agent.original", Value::Str(ua.to_string())));
    }
    attrs.push((
        "http.request.body.size",
        Value::Int(e.request_body_bytes as i64),
    ));
    attrs.push((
        "http.response.body.size",
        Value::Int(e.response_body_bytes as i64),
    ));
    let error = e.error_type(flow.kind);
    if let Some(error) = &error {
        attrs.push(("error.type", Value::Str(error.to_string())));
    }
    let name = match (method, flow.route) {
        (None | Some("_OTHER"), _) => "HTTP".to_string(),
        (Some(method), Some(route)) if !route.is_empty() => format!("{method} {route}"),
        (Some(method), _) => method.to_string(),
    };
    Span {
        trace_id: flow.context.trace_id,
        span_id: flow.context.span_id,
        parent_span_id: flow.context.parent_span_id,
        trace_state: flow.context.trace_state,
        trace_flags: flow.context.trace_flags,
        name,
        kind: flow.kind,
        start_time_unix_nano: flow.start_ns,
        end_time_unix_nano: flow.end_ns,
        attributes: attrs
            .into_iter()
            .map(|(k, v)| (Cow::Borrowed(k), v))
            .chain(headers("http.request.header", e.request_headers))
            .chain(headers("http.response.header", e.response_headers))
            .chain(body("http.request.body.content", e.request_body))
            .chain(body("http.response.body.content", e.response_body))
            .collect(),
        status: if error.is_some() {
            Status::Error
        } else {
            Status::Unset
        },
        resource: flow.resource,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocols::http1::head::{Headers, Request, Response};

    /// An HTTP/1.1 exchange with a `curl/8` user agent (shared with the
    /// `measure` tests).
    pub(crate) fn exchange(
        method: &str,
        target: &str,
        status: u16,
        host: Option<&str>,
    ) -> Exchange {
        Exchange {
            request: Request {
                method: method.into(),
                target: target.into(),
                minor_version: 1,
                headers: Headers {
                    host: host.map(str::to_string),
                    user_agent: Some("curl/8".into()),
                    ..Headers::default()
                },
                head_len: 0,
            },
            response: Response {
                status,
                minor_version: 1,
                headers: Headers::default(),
                head_len: 0,
            },
            request_start_ns: 0,
            request_end_ns: 1,
            response_start_ns: 2,
            response_end_ns: 3,
            request_body_bytes: 5,
            response_body_bytes: 7,
            request_body: Vec::new(),
            response_body: Vec::new(),
        }
    }

    /// A root span context shared by the span tests.
    pub(crate) fn context() -> SpanContext {
        SpanContext {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            trace_flags: 1,
            trace_state: None,
        }
    }

    pub(crate) fn resource() -> Arc<Resource> {
        Arc::new(Resource {
            service_name: "svc".into(),
            service_instance_id: "h:1:2".into(),
            pid: 1,
            executable_name: "svc".into(),
            executable_path: "/bin/svc".into(),
            host_name: "h".into(),
            host_arch: "amd64",
            ..Resource::default()
        })
    }

    fn flow<'a>(e: &'a Exchange, kind: SpanKind, route: &'a str) -> HttpFlow<'a> {
        HttpFlow {
            exchange: HttpExchange::http1(e),
            kind,
            peer: Some("10.0.0.9:40000".parse().unwrap()),
            local: Some("10.0.0.1:8080".parse().unwrap()),
            route: Some(route),
            resource: resource(),
            context: context(),
            start_ns: 100,
            end_ns: 200,
            capture_query: false,
            tls: false,
        }
    }

    fn s(v: &str) -> Option<Value> {
        Some(Value::Str(v.into()))
    }

    #[test]
    fn server_span_attributes_follow_semconv() {
        let e = exchange(
            "GET",
            "/users/42?token=secret",
            503,
            Some("api.example.com:8080"),
        );
        let span = span(flow(&e, SpanKind::Server, "/users/{id}"));
        assert_eq!(span.name, "GET /users/{id}");
        assert_eq!(span.kind, SpanKind::Server);
        assert_eq!(span.status, Status::Error);
        assert_eq!(span.attribute("url.path").cloned(), s("/users/42"));
        assert_eq!(
            span.attribute("server.address").cloned(),
            s("api.example.com")
        );
        assert_eq!(
            span.attribute("server.port").cloned(),
            Some(Value::Int(8080))
        );
        assert_eq!(span.attribute("client.address").cloned(), s("10.0.0.9"));
        assert_eq!(span.attribute("error.type").cloned(), s("503"));
        assert_eq!(
            span.attribute("http.request.body.size").cloned(),
            Some(Value::Int(5))
        );
        assert_eq!(span.attribute("user_agent.original").cloned(), s("curl/8"));
        let json = serde_json::to_string(&span).unwrap();
        assert!(
            !json.contains("secret"),
            "query strings never leave the host: {json}"
        );
    }

    #[test]
    fn client_span_has_url_without_query_and_client_error_status() {
        let e = exchange("POST", "/v1/orders?debug=1", 404, None);
        let span = span(flow(&e, SpanKind::Client, "/v1/orders"));
        assert_eq!(
            span.attribute("url.full").cloned(),
            s("http://10.0.0.9:40000/v1/orders")
        );
        assert_eq!(span.attribute("server.address").cloned(), s("10.0.0.9"));
        assert_eq!(
            span.attribute("server.port").cloned(),
            Some(Value::Int(40000))
        );
        assert_eq!(span.status, Status::Error);
        // A 404 is not a server error.
        assert_eq!(
            super::span(flow(&e, SpanKind::Server, "/v1/orders")).status,
            Status::Unset
        );
    }

    #[test]
    fn query_strings_and_headers_only_when_opted_in() {
        let mut e = exchange("GET", "/search?q=shoes&page=2", 200, None);
        e.request.headers.captured = vec![("x-request-id".into(), "abc".into())];
        e.response.headers.captured = vec![("x-cache".into(), "HIT".into())];
        let mut f = flow(&e, SpanKind::Server, "/search");
        f.capture_query = true;
        let server = span(f);
        assert_eq!(server.attribute("url.query").cloned(), s("q=shoes&page=2"));
        assert_eq!(
            server
                .attribute("http.request.header.x-request-id")
                .cloned(),
            s("abc")
        );
        assert_eq!(
            server.attribute("http.response.header.x-cache").cloned(),
            s("HIT")
        );
        let mut f = flow(&e, SpanKind::Client, "/search");
        f.capture_query = true;
        assert_eq!(
            span(f).attribute("url.full").cloned(),
            s("http://10.0.0.9:40000/search?q=shoes&page=2")
        );
        assert_eq!(
            span(flow(&e, SpanKind::Server, "/search")).attribute("url.query"),
            None
        );
    }

    #[test]
    fn unknown_methods_are_other() {
        let e = exchange("PROPFIND", "/dav", 207, None);
        let span = span(flow(&e, SpanKind::Server, "/dav"));
        assert_eq!(span.name, "HTTP");
        assert_eq!(span.attribute("http.request.method").cloned(), s("_OTHER"));
        assert_eq!(
            span.attribute("http.request.method_original").cloned(),
            s("PROPFIND")
        );
    }

    #[test]
    fn host_headers_split_into_address_and_port() {
        assert_eq!(split_host("example.com"), ("example.com".into(), None));
        assert_eq!(
            split_host("example.com:81"),
            ("example.com".into(), Some(81))
        );
        assert_eq!(split_host("[::1]:8080"), ("::1".into(), Some(8080)));
    }
}
