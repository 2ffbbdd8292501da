//! What RED metrics and the sampler need from an HTTP exchange, borrowed.
//!
//! Every request is measured, but a span (a dozen owned strings, formatted
//! addresses, a URL) is only worth building when something consumes it and the
//! sampler keeps it. A [`Measure`] is built from the same inputs as
//! [`super::http::span`] without allocating, and gives exactly the metric labels
//! that [`crate::metrics::http::labels`] reads off the span (a test holds the
//! two together).

use std::sync::{Arc, OnceLock};

use super::{
    SpanKind,
    http::{HttpFlow, error_type},
};
use crate::discovery::Resource;

/// One finished exchange as the metrics see it.
pub struct Measure<'a> {
    pub kind: SpanKind,
    /// `http.request.method` (a known method or `_OTHER`), if known.
    pub method: Option<&'static str>,
    pub status: Option<u16>,
    /// `error.type` without a status (a reset HTTP/2 stream).
    pub failure: Option<&'static str>,
    pub route: Option<&'a str>,
    pub version: &'static str,
    /// Clients: `server.address` (the `Host` header's host, else the peer's IP).
    pub server_address: Option<&'a str>,
    /// Clients: `server.port`.
    pub server_port: Option<u16>,
    pub resource: &'a Arc<Resource>,
    pub duration_ns: u64,
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
    /// `url.scheme`.
    pub scheme: &'static str,
}

/// Metric label pairs, sorted by name, borrowed from a [`Measure`] or an RPC
/// call: on the stack, no allocation per exchange.
#[derive(Default)]
pub struct Pairs<'a> {
    items: [(&'static str, &'a str); 16],
    len: usize,
}

impl<'a> Pairs<'a> {
    /// Appends a pair (callers push in name order, or [`Self::sort`] after);
    /// past the 16th, dropped.
    pub fn push(&mut self, name: &'static str, value: &'a str) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = (name, value);
            self.len += 1;
        }
    }

    /// Inserts the resource's labels (`service.name`, and in Kubernetes its
    /// pod's) at their places by name, among pairs already in order.
    pub fn push_resource(&mut self, resource: &'a Resource) {
        for (name, value) in resource.metric_labels() {
            if self.len == self.items.len() {
                return;
            }
            let at = self.items[..self.len].partition_point(|(n, _)| *n < name);
            self.items.copy_within(at..self.len, at + 1);
            self.items[at] = (name, value);
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[(&'static str, &'a str)] {
        &self.items[..self.len]
    }
}

/// A port's decimal text, on the stack (labels borrow it).
#[derive(Default)]
pub struct PortText([u8; 5]);

impl PortText {
    pub fn set(&mut self, port: u16) -> &str {
        use std::io::Write as _;
        let mut cursor = std::io::Cursor::new(&mut self.0[..]);
        // At most 5 digits: fits.
        let _ = write!(cursor, "{port}");
        let len = cursor.position() as usize;
        std::str::from_utf8(&self.0[..len]).unwrap_or("")
    }
}

/// Decimal text of 0..=999 (HTTP status codes have three digits), made once.
fn three_digits(n: u16) -> &'static str {
    static TABLE: OnceLock<Box<[String]>> = OnceLock::new();
    let table = TABLE.get_or_init(|| (0..1000).map(|i: u16| i.to_string()).collect());
    table.get(usize::from(n)).map_or("", String::as_str)
}

/// Host and port of a `Host` header, borrowed (see `http::split_host`).
pub fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (ip, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, p.parse().ok()),
        _ => (host, None),
    }
}

impl<'a> Measure<'a> {
    /// `peer_ip` is the peer's IP as text, formatted once per connection.
    pub fn new(flow: &'a HttpFlow<'a>, peer_ip: Option<&'a str>) -> Measure<'a> {
        let e = &flow.exchange;
        let (host, host_port) = e.host.map(split_host).unzip();
        let host_port = host_port.flatten();
        let (server_address, server_port) = match flow.kind {
            SpanKind::Server => (None, None),
            SpanKind::Client => (
                Some(host.or(peer_ip).unwrap_or_default()),
                host_port.or(flow.peer.map(|p| p.port())),
            ),
        };
        Measure {
            kind: flow.kind,
            method: e.method(),
            status: e.status,
            failure: e.failure,
            route: flow.route,
            version: e.version,
            server_address,
            server_port,
            resource: &flow.resource,
            duration_ns: flow.end_ns.saturating_sub(flow.start_ns),
            request_body_bytes: e.request_body_bytes,
            response_body_bytes: e.response_body_bytes,
            scheme: flow.scheme(),
        }
    }

    /// The span would have status ERROR (and `error.type`).
    pub fn error(&self) -> bool {
        match self.status {
            Some(status) => error_type(self.kind, status).is_some(),
            None => self.failure.is_some(),
        }
    }

    /// The metric labels, sorted by name; `port` holds the port's text.
    /// Computed once per exchange, for every metrics output.
    pub fn label_pairs<'b>(&'b self, port: &'b mut PortText) -> Pairs<'b> {
        let status = self.status.map(three_digits);
        let mut pairs = Pairs::default();
        if self.error()
            && let Some(error) = status.or(self.failure)
        {
            pairs.push("error.type", error);
        }
        if let Some(method) = self.method {
            pairs.push("http.request.method", method);
        }
        if let Some(status) = status {
            pairs.push("http.response.status_code", status);
        }
        if self.kind == SpanKind::Server
            && let Some(route) = self.route
        {
            pairs.push("http.route", route);
        }
        pairs.push("network.protocol.version", self.version);
        if let Some(address) = self.server_address {
            pairs.push("server.address", address);
        }
        if let Some(p) = self.server_port {
            pairs.push("server.port", port.set(p));
        }
        pairs.push("url.scheme", self.scheme);
        pairs.push_resource(self.resource);
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{metrics::http::labels, protocols::http1::Exchange, spans::http::span};

    fn exchange(method: &str, status: u16, host: Option<&str>, minor: u8) -> Exchange {
        let mut e = crate::spans::http::tests::exchange(method, "/users/7?x=1", status, host);
        e.request.minor_version = minor;
        e
    }

    #[test]
    fn labels_equal_those_read_off_the_span() {
        let resource = Arc::new(Resource {
            service_name: "svc".into(),
            ..Resource::default()
        });
        let peers = [
            None,
            Some("10.0.0.9:8080".parse().unwrap()),
            Some("[fd00::1]:443".parse().unwrap()),
        ];
        let hosts = [
            None,
            Some("example.com"),
            Some("example.com:8443"),
            Some("[::1]:81"),
        ];
        for kind in [SpanKind::Server, SpanKind::Client] {
            for peer in peers {
                for host in hosts {
                    for (method, status, minor) in
                        [("GET", 200, 1), ("BREW", 404, 0), ("POST", 503, 1)]
                    {
                        let e = exchange(method, status, host, minor);
                        let flow = HttpFlow {
                            exchange: crate::spans::http::HttpExchange::http1(&e),
                            kind,
                            peer,
                            local: Some("127.0.0.1:80".parse().unwrap()),
                            route: Some("/users/{id}"),
                            resource: Arc::clone(&resource),
                            context: crate::spans::http::tests::context(),
                            start_ns: 1_000,
                            end_ns: 5_000,
                            capture_query: false,
                            tls: false,
                        };
                        let peer_ip = peer.map(|p| p.ip().to_string());
                        let m = Measure::new(&flow, peer_ip.as_deref());
                        let mut port = PortText::default();
                        let borrowed: Vec<(&str, String)> = m
                            .label_pairs(&mut port)
                            .as_slice()
                            .iter()
                            .map(|(k, v)| (*k, (*v).to_string()))
                            .collect();
                        let error = m.error();
                        let duration = m.duration_ns;
                        let s = span(HttpFlow {
                            resource: Arc::clone(&resource),
                            context: flow.context.clone(),
                            ..flow
                        });
                        assert_eq!(borrowed, labels(&s), "{kind:?} {peer:?} {host:?} {method}");
                        assert_eq!(error, s.status == crate::spans::Status::Error);
                        assert_eq!(duration, s.duration_ns());
                    }
                }
            }
        }
    }
}
