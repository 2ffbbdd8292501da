//! One HTTP/1 connection: pairs requests with responses (in order, so pipelining
//! works) and reports each finished exchange with its timings.
//!
//! A `101 Switching Protocols` to the protocol its request asked for (RFC 9110
//! §7.8; `h2c` is RFC 7540 §3.2) ends HTTP/1 on the connection: it is reported
//! as an [`Upgrade`], with where the new protocol's bytes start in each
//! direction, and nothing after it is parsed. The client's HTTP/2 preface
//! after an `Upgrade: h2c` request is taken as the upgraded connection even
//! when it is read before the 101.

use std::collections::VecDeque;

use super::{
    Capture,
    body::{Framing, request_framing, response_framing},
    head::{Request, Response},
    reader::{Found, Head, Kind, Reader},
};
use crate::{capture::Direction, conn::Chunk};

/// Requests in flight per connection before the oldest is given up (pipelining
/// depth; bounds memory on a connection whose responses we never see).
const MAX_PENDING: usize = 64;
/// Request-direction bytes kept for the new protocol when they arrive before
/// the `101` ([`Upgrade::early`]): an h2c client's preface, SETTINGS and
/// first requests fit many times over.
const MAX_EARLY_BYTES: usize = 16 * 1024;

/// A request and its response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub request: Request,
    pub response: Response,
    /// First byte of the request.
    pub request_start_ns: u64,
    /// Last byte of the request (its body included).
    pub request_end_ns: u64,
    pub response_start_ns: u64,
    pub response_end_ns: u64,
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
    /// Leading body bytes, when the user opted in to body capture.
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
}

/// A request whose head was just read (spans get their ids here, before the
/// exchange ends, so requests made while serving it can name it as parent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// When the chunk holding the head's first byte arrived.
    pub start_ns: u64,
}

/// The connection switched protocols: the `101` exchange that did it, and
/// where the new protocol starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// The protocol token both the request and the `101` named, lower case
    /// (`h2c`, `websocket`).
    pub protocol: String,
    /// The upgrade request and its `101` response (a caller that does not
    /// take the connection over reports it as any other exchange).
    pub exchange: Exchange,
    /// Offset of the new protocol's first byte in each direction, by
    /// [`Direction::index`]: right after the `101` head in the response
    /// direction, right after the upgrade request (its body included) in the
    /// request direction.
    pub at: [u64; 2],
    /// Request-direction chunks this session was given after the request
    /// direction had switched but before the `101` was read (an h2c client's
    /// preface read first), in order, at most 16 KiB of data:
    /// the new protocol's parser needs them (from `at` on) before any later
    /// chunk of that direction.
    pub early: Vec<Chunk>,
}

/// What feeding a chunk produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Requests started, in order (one per exchange that will follow).
    pub started: Vec<Started>,
    pub exchanges: Vec<Exchange>,
    /// The connection switched protocols (reported instead of its `101`
    /// exchange in `exchanges`); the session parses nothing after it.
    pub upgrade: Option<Upgrade>,
    /// Oldest started requests given up without a response (the pipelining bound,
    /// or the connection closed first), in start order.
    pub abandoned: usize,
    /// Parse errors by reason (bytes that could not be read as HTTP/1).
    pub errors: Vec<&'static str>,
}

#[derive(Debug)]
struct Pending {
    request: Request,
    start_ns: u64,
    end_ns: Option<u64>,
    /// Offset right after the request, once it ended.
    end_at: Option<u64>,
    body_bytes: u64,
    body: Vec<u8>,
    response: Option<(Response, u64)>,
}

#[derive(Debug)]
pub struct Session {
    /// Direction that carries requests: ingress on servers, egress on clients.
    requests_from: Option<Direction>,
    requests: Reader,
    responses: Reader,
    pending: VecDeque<Pending>,
    /// The response being read is an interim (1xx) one.
    interim: bool,
    /// A response switched protocols (an upgrade or a tunnel): request
    /// bytes are no longer kept for an upgrade to come.
    switched: bool,
    /// See [`Upgrade::early`].
    early: Vec<Chunk>,
    early_bytes: usize,
}

/// Whether `data` starts like a request (a method token and a space) or a response.
fn sniff(data: &[u8]) -> Option<Kind> {
    if data.starts_with(b"HTTP/1.") {
        return Some(Kind::Response);
    }
    let token = data.iter().take_while(|b| b.is_ascii_uppercase()).count();
    (token >= 3 && data.get(token) == Some(&b' ')).then_some(Kind::Request)
}

impl Session {
    /// `requests_from`: the direction carrying requests, if the role is known;
    /// `capture`: what the user opted in to capture.
    pub fn new(requests_from: Option<Direction>, capture: Capture) -> Session {
        Session {
            requests_from,
            requests: Reader::new(Kind::Request, capture.clone()),
            responses: Reader::new(Kind::Response, capture),
            pending: VecDeque::new(),
            interim: false,
            switched: false,
            early: Vec::new(),
            early_bytes: 0,
        }
    }

    /// The direction carrying requests, once known.
    pub fn requests_from(&self) -> Option<Direction> {
        self.requests_from
    }

    /// Whether bytes starting a connection look like HTTP/1 at all.
    pub fn detect(data: &[u8]) -> bool {
        sniff(data).is_some()
    }

    /// Feeds one chunk of one direction.
    pub fn push(&mut self, direction: Direction, chunk: &Chunk) -> Output {
        let mut out = Output::default();
        if self.requests_from.is_none() {
            self.requests_from = match sniff(&chunk.data) {
                Some(Kind::Request) => Some(direction),
                Some(Kind::Response) => Some(opposite(direction)),
                None => return out,
            };
        }
        let mut found = Vec::new();
        if Some(direction) == self.requests_from {
            self.requests.push(
                chunk,
                &mut |head| match head {
                    Head::Request(r) => request_framing(r),
                    Head::Response(_) => Framing::None,
                },
                &mut found,
            );
            self.on_requests(found, &mut out);
            self.keep_early(chunk);
        } else {
            let pending = &self.pending;
            // Heads found in this chunk are matched to requests in order, before
            // `on_responses` records them: count them here.
            let mut answered = 0;
            self.responses.push(
                chunk,
                &mut |head| match head {
                    Head::Response(r) => {
                        let method = pending
                            .iter()
                            .filter(|p| p.response.is_none())
                            .nth(answered)
                            .map_or("GET", |p| p.request.method.as_str());
                        if !(100..200).contains(&r.status) || r.status == 101 {
                            answered += 1;
                        }
                        response_framing(r, method)
                    }
                    Head::Request(_) => Framing::None,
                },
                &mut found,
            );
            self.on_responses(found, &mut out);
        }
        out
    }

    /// The connection closed.
    pub fn close(&mut self) -> Output {
        let mut out = Output::default();
        let mut found = Vec::new();
        self.responses.close(&mut found);
        self.on_responses(found, &mut out);
        let mut found = Vec::new();
        self.requests.close(&mut found);
        self.on_requests(found, &mut out);
        out.abandoned += self.pending.len();
        self.pending.clear();
        out
    }

    /// Keeps a request-direction chunk with bytes past the start of a tunnel
    /// that no response opened yet (see [`Upgrade::early`]).
    fn keep_early(&mut self, chunk: &Chunk) {
        let end = chunk.offset.saturating_add(chunk.data.len() as u64);
        let past = self.requests.tunnel_at().is_some_and(|at| end > at);
        if self.switched || !past || self.early_bytes == MAX_EARLY_BYTES {
            return;
        }
        if self.early_bytes + chunk.data.len() > MAX_EARLY_BYTES {
            // Not kept, nor anything after it: the new parser sees a gap.
            self.early_bytes = MAX_EARLY_BYTES;
            return;
        }
        self.early_bytes += chunk.data.len();
        self.early.push(chunk.clone());
    }

    fn on_requests(&mut self, found: Vec<Found>, out: &mut Output) {
        for f in found {
            match f {
                Found::Head {
                    head: Head::Request(request),
                    start_ns,
                } => {
                    if self.pending.len() == MAX_PENDING {
                        self.pending.pop_front();
                        out.abandoned += 1;
                        out.errors.push("too_many_pending");
                    }
                    out.started.push(Started {
                        traceparent: request.headers.traceparent.clone(),
                        tracestate: request.headers.tracestate.clone(),
                        start_ns,
                    });
                    self.pending.push_back(Pending {
                        request,
                        start_ns,
                        end_ns: None,
                        end_at: None,
                        body_bytes: 0,
                        body: Vec::new(),
                        response: None,
                    });
                }
                Found::End {
                    end_ns,
                    at,
                    body_bytes,
                    body,
                } => {
                    if let Some(p) = self.pending.iter_mut().find(|p| p.end_ns.is_none()) {
                        p.end_ns = Some(end_ns);
                        p.end_at = Some(at);
                        p.body_bytes = body_bytes;
                        p.body = body;
                    }
                }
                Found::Error { reason } => out.errors.push(reason),
                Found::Head { .. } => {}
            }
        }
    }

    fn on_responses(&mut self, found: Vec<Found>, out: &mut Output) {
        for f in found {
            match f {
                Found::Head {
                    head: Head::Response(response),
                    start_ns,
                } => {
                    // 1xx other than 101 are interim: the real response follows.
                    self.interim = (100..200).contains(&response.status) && response.status != 101;
                    if self.interim {
                        continue;
                    }
                    if response.status == 101 || response.headers.upgrade && response.status < 300 {
                        self.requests.tunnel();
                        self.switched = true;
                    }
                    match self.pending.iter_mut().find(|p| p.response.is_none()) {
                        Some(p) => p.response = Some((response, start_ns)),
                        None => out.errors.push("response_without_request"),
                    }
                }
                Found::End {
                    end_ns,
                    at: at_response,
                    body_bytes,
                    body,
                } => {
                    if std::mem::take(&mut self.interim) {
                        continue;
                    }
                    let answered = self.pending.front().is_some_and(|p| p.response.is_some());
                    if !answered {
                        continue;
                    }
                    let Some(p) = self.pending.pop_front() else {
                        continue;
                    };
                    let Some((response, response_start_ns)) = p.response else {
                        continue;
                    };
                    // The request direction switches where the request ended
                    // (the reader knows it when the request has not ended yet
                    // but its length is known).
                    let request_at = p.end_at.or_else(|| self.requests.tunnel_at());
                    let protocol = switched_to(&p.request, &response);
                    let exchange = Exchange {
                        request_end_ns: p.end_ns.unwrap_or(response_start_ns),
                        request: p.request,
                        response,
                        request_start_ns: p.start_ns,
                        response_start_ns,
                        response_end_ns: end_ns,
                        request_body_bytes: p.body_bytes,
                        response_body_bytes: body_bytes,
                        request_body: p.body,
                        response_body: body,
                    };
                    match (protocol, self.requests_from, request_at) {
                        (Some(protocol), Some(requests_from), Some(request_at))
                            if out.upgrade.is_none() =>
                        {
                            let mut at = [0; 2];
                            if let Some(slot) = at.get_mut(requests_from.index()) {
                                *slot = request_at;
                            }
                            if let Some(slot) = at.get_mut(opposite(requests_from).index()) {
                                *slot = at_response;
                            }
                            out.upgrade = Some(Upgrade {
                                protocol,
                                exchange,
                                at,
                                early: std::mem::take(&mut self.early),
                            });
                        }
                        _ => out.exchanges.push(exchange),
                    }
                    if self.switched {
                        self.early = Vec::new();
                        self.early_bytes = 0;
                    }
                }
                Found::Error { reason } => out.errors.push(reason),
                Found::Head { .. } => {}
            }
        }
    }
}

/// The protocol a `101` switched to, when it is the one its request asked for.
fn switched_to(request: &Request, response: &Response) -> Option<String> {
    let asked = request.headers.upgrade_to.as_ref()?;
    (response.status == 101 && response.headers.upgrade_to.as_ref() == Some(asked))
        .then(|| asked.clone())
}

fn opposite(direction: Direction) -> Direction {
    match direction {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds (direction, ts, bytes, missing) steps; returns everything produced.
    fn run(role: Option<Direction>, steps: &[(Direction, u64, &[u8], u64)], close: bool) -> Output {
        let mut s = Session::new(role, Capture::default());
        let mut all = Output::default();
        let mut offsets = [0u64; 2];
        for &(direction, ts, data, missing) in steps {
            let chunk = Chunk {
                ts_ns: ts,
                offset: offsets[direction.index()],
                data: data.to_vec(),
                missing,
            };
            offsets[direction.index()] += data.len() as u64 + missing;
            merge(&mut all, s.push(direction, &chunk));
        }
        if close {
            merge(&mut all, s.close());
        }
        all
    }

    fn merge(all: &mut Output, out: Output) {
        all.started.extend(out.started);
        all.exchanges.extend(out.exchanges);
        all.errors.extend(out.errors);
        all.abandoned += out.abandoned;
        if let Some(up) = out.upgrade {
            assert!(all.upgrade.is_none(), "one upgrade per connection");
            all.upgrade = Some(up);
        }
    }

    /// (direction, ts, bytes, missing)
    type Step<'a> = (Direction, u64, &'a [u8], u64);

    use Direction::{Egress as OUT, Ingress as IN};
    const SERVER: Option<Direction> = Some(IN);
    const CLIENT: Option<Direction> = Some(OUT);

    #[test]
    fn server_exchange_with_timings() {
        let out = run(
            SERVER,
            &[
                (IN, 10, b"GET /users/42 HTTP/1.1\r\nHost: a\r\n", 0),
                (IN, 11, b"\r\n", 0),
                (
                    OUT,
                    20,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab",
                    0,
                ),
                (OUT, 25, b"cd", 0),
            ],
            false,
        );
        assert_eq!(out.errors, Vec::<&str>::new());
        let e = &out.exchanges[0];
        assert_eq!(
            (e.request.method.as_str(), e.request.target.as_str()),
            ("GET", "/users/42")
        );
        assert_eq!(e.response.status, 200);
        assert_eq!((e.request_start_ns, e.request_end_ns), (10, 11));
        assert_eq!((e.response_start_ns, e.response_end_ns), (20, 25));
        assert_eq!(e.response_body_bytes, 4);
    }

    #[test]
    fn keep_alive_and_pipelining_pair_in_order() {
        let mut steps: Vec<(Direction, u64, &[u8], u64)> = Vec::new();
        // Three pipelined requests in one write, then three responses in one read.
        steps.push((
            OUT,
            1,
            b"GET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
            0,
        ));
        steps.push((
            IN,
            2,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nAHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            0,
        ));
        for _ in 0..100 {
            steps.push((OUT, 3, b"GET /ka HTTP/1.1\r\n\r\n", 0));
            steps.push((IN, 4, b"HTTP/1.1 204 No Content\r\n\r\n", 0));
        }
        let out = run(CLIENT, &steps, false);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.exchanges.len(), 103);
        let pairs: Vec<(&str, u16)> = out.exchanges[..3]
            .iter()
            .map(|e| (e.request.target.as_str(), e.response.status))
            .collect();
        assert_eq!(pairs, [("/a", 200), ("/b", 200), ("/c", 404)]);
    }

    #[test]
    fn chunked_bodies_and_100_continue() {
        let out = run(
            CLIENT,
            &[
                (OUT, 1, b"POST /upload HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n", 0),
                (IN, 2, b"HTTP/1.1 100 Continue\r\n\r\n", 0),
                (OUT, 3, b"5\r\nhello\r\n", 0),
                (OUT, 4, b"0\r\n\r\n", 0),
                (IN, 5, b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", 0),
                (IN, 6, b"0\r\n\r\n", 0),
            ],
            false,
        );
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let e = &out.exchanges[0];
        assert_eq!(e.response.status, 201);
        assert_eq!((e.request_body_bytes, e.response_body_bytes), (5, 3));
        assert_eq!(
            (e.request_end_ns, e.response_start_ns, e.response_end_ns),
            (4, 5, 6)
        );
    }

    #[test]
    fn connection_close_body_ends_at_close() {
        let out = run(
            SERVER,
            &[
                (IN, 1, b"GET / HTTP/1.0\r\n\r\n", 0),
                (OUT, 2, b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n<html>", 0),
                (OUT, 3, b"</html>", 0),
            ],
            true,
        );
        assert_eq!(out.exchanges.len(), 1);
        assert_eq!(out.exchanges[0].response_body_bytes, 13);
        assert_eq!(out.exchanges[0].response_end_ns, 3);
    }

    #[test]
    fn large_truncated_bodies_keep_exact_sizes() {
        // 1 MiB response captured as 4 KiB prefixes of each syscall.
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n";
        let mut first = head.to_vec();
        first.extend([b'x'; 4096 - 44]);
        let out = run(
            CLIENT,
            &[
                (OUT, 1, b"GET /big HTTP/1.1\r\n\r\n", 0),
                (IN, 2, &first, 65536 - 4096),
                (IN, 3, &[b'x'; 4096], 1_048_576 + 44 - 65536 - 4096),
            ],
            false,
        );
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.exchanges[0].response_body_bytes, 1_048_576);
        assert_eq!(out.exchanges[0].response_end_ns, 3);
    }

    /// What curl sends for `--http2` on an `http://` URL.
    const H2C_REQUEST: &[u8] =
        b"GET /hello HTTP/1.1\r\nHost: svc:8080\r\nUser-Agent: curl/8.5.0\r\n\
        Accept: */*\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
        HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    const H2C_101: &[u8] =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
    /// The server's first HTTP/2 bytes: SETTINGS (MAX_CONCURRENT_STREAMS
    /// 100), then HEADERS `:status 200` (static index 8) on stream 1.
    const H2_SERVER: &[u8] = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64\
        \x00\x00\x01\x01\x04\x00\x00\x00\x01\x88";
    /// The client preface and an empty SETTINGS.
    const H2_CLIENT: &[u8] =
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

    fn concat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// The upgrade with no exchange and no error; its offsets by direction.
    fn upgraded(out: &Output, protocol: &str) -> [u64; 2] {
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert!(out.exchanges.is_empty(), "{:?}", out.exchanges);
        let up = out.upgrade.as_ref().expect("upgrade");
        assert_eq!(up.protocol, protocol);
        assert_eq!(up.exchange.response.status, 101);
        up.at
    }

    #[test]
    fn h2c_upgrade_with_frames_in_the_101_chunk() {
        let response = concat(&[H2C_101, H2_SERVER]);
        let out = run(
            SERVER,
            &[
                (IN, 1, H2C_REQUEST, 0),
                (OUT, 2, &response, 0),
                (IN, 3, H2_CLIENT, 0),
                (OUT, 4, b"\x00\x00\x00\x04\x01\x00\x00\x00\x00", 0),
            ],
            true,
        );
        let mut at = [0; 2];
        at[IN.index()] = H2C_REQUEST.len() as u64;
        at[OUT.index()] = H2C_101.len() as u64;
        assert_eq!(upgraded(&out, "h2c"), at);
        assert_eq!(out.started.len(), 1, "the upgrade request started");
        assert_eq!(out.abandoned, 0);
        let up = out.upgrade.as_ref().expect("upgrade");
        assert_eq!(up.exchange.request.target, "/hello");
        assert_eq!(
            (up.exchange.request_start_ns, up.exchange.request_end_ns),
            (1, 1)
        );
        assert_eq!(
            (up.exchange.response_start_ns, up.exchange.response_end_ns),
            (2, 2)
        );
        assert!(up.early.is_empty());
    }

    #[test]
    fn h2c_upgrade_with_the_frames_in_a_later_chunk() {
        // A client this time (requests are egress), the request head split.
        let (head, tail) = H2C_REQUEST.split_at(30);
        let out = run(
            CLIENT,
            &[
                (OUT, 1, head, 0),
                (OUT, 2, tail, 0),
                (IN, 3, H2C_101, 0),
                (IN, 4, H2_SERVER, 0),
                (OUT, 5, H2_CLIENT, 0),
            ],
            true,
        );
        let mut at = [0; 2];
        at[OUT.index()] = H2C_REQUEST.len() as u64;
        at[IN.index()] = H2C_101.len() as u64;
        assert_eq!(upgraded(&out, "h2c"), at);
    }

    #[test]
    fn h2c_preface_read_before_the_101_is_the_tunnel_not_a_request() {
        // The upgrade request with a body; the preface is read before the
        // 101 (and in one case in the same chunk as the request).
        let post: &[u8] = b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
            Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 5\r\n\r\nhello";
        let together = concat(&[post, H2_CLIENT]);
        let settings_ack: &[u8] = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00";
        // (steps, the request-direction chunks kept for the new parser)
        let cases: [(Vec<Step>, Vec<&[u8]>); 2] = [
            (
                vec![
                    (IN, 1, post, 0),
                    (IN, 2, H2_CLIENT, 0),
                    (IN, 3, settings_ack, 0),
                    (OUT, 4, H2C_101, 0),
                ],
                vec![H2_CLIENT, settings_ack],
            ),
            (
                vec![(IN, 1, &together, 0), (OUT, 4, H2C_101, 0)],
                vec![&together],
            ),
        ];
        for (steps, kept) in cases {
            let out = run(SERVER, &steps, true);
            let mut at = [0; 2];
            at[IN.index()] = post.len() as u64;
            at[OUT.index()] = H2C_101.len() as u64;
            assert_eq!(upgraded(&out, "h2c"), at);
            assert_eq!(
                (out.started.len(), out.abandoned),
                (1, 0),
                "no bogus PRI request"
            );
            let up = out.upgrade.as_ref().expect("upgrade");
            assert_eq!(up.exchange.request_body_bytes, 5);
            let early: Vec<&[u8]> = up.early.iter().map(|c| c.data.as_slice()).collect();
            assert_eq!(early, kept);
        }
        // Without an h2c request before it, a preface is not HTTP/1.
        let out = run(SERVER, &[(IN, 1, H2_CLIENT, 0)], false);
        assert_eq!(out.errors, ["invalid_head"]);
    }

    #[test]
    fn h2c_101_before_the_request_body_ended() {
        // The server switched before the request's body was read: the tunnel
        // still starts after the body, whose length is known.
        let post = b"POST /up HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 10\r\n\r\n";
        let out = run(
            SERVER,
            &[(IN, 1, post, 0), (IN, 2, b"hell", 0), (OUT, 3, H2C_101, 0)],
            true,
        );
        let mut at = [0; 2];
        at[IN.index()] = post.len() as u64 + 10;
        at[OUT.index()] = H2C_101.len() as u64;
        assert_eq!(upgraded(&out, "h2c"), at);
    }

    #[test]
    fn websocket_upgrade_stops_parsing() {
        let request = b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let response = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let out = run(
            SERVER,
            &[
                (IN, 1, request, 0),
                (OUT, 2, response, 0),
                (IN, 3, b"\x81\x85binary websocket frame", 0),
                (OUT, 4, b"\x81\x05hello", 0),
            ],
            true,
        );
        let mut at = [0; 2];
        at[IN.index()] = request.len() as u64;
        at[OUT.index()] = response.len() as u64;
        assert_eq!(upgraded(&out, "websocket"), at);
        assert_eq!(
            out.upgrade
                .as_ref()
                .map(|u| u.exchange.request.target.as_str()),
            Some("/ws")
        );
    }

    #[test]
    fn a_101_that_was_not_asked_for_is_an_exchange_as_before() {
        // No `Upgrade` in the request; then a token the request did not ask
        // for.
        for request in [
            &b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
        ] {
            let out = run(
                SERVER,
                &[
                    (IN, 1, request, 0),
                    (OUT, 2, b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello", 0),
                    (IN, 3, b"\x81\x85binary websocket frame", 0),
                ],
                true,
            );
            assert_eq!(out.upgrade, None);
            assert_eq!(out.exchanges.len(), 1);
            assert_eq!(out.exchanges[0].response.status, 101);
            assert!(out.errors.is_empty(), "{:?}", out.errors);
        }
    }

    #[test]
    fn bad_input_is_counted_once_per_desync_and_recovers() {
        let out = run(
            SERVER,
            &[
                (IN, 1, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 0),
                (IN, 2, b"\xff\xfe random bytes \x00", 0),
                (IN, 3, b"GET /ok HTTP/1.1\r\n\r\n", 0),
                (OUT, 4, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0),
            ],
            false,
        );
        assert_eq!(out.errors, ["invalid_head"]);
        assert_eq!(out.exchanges.len(), 1);
    }

    #[test]
    fn heads_cut_by_the_capture_or_the_close_are_errors_not_guesses() {
        // A 64 KiB header line: only a 4 KiB prefix was captured.
        let mut prefix = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        prefix.extend([b'a'; 4000]);
        let out = run(SERVER, &[(IN, 1, &prefix, 60_000)], false);
        assert_eq!(out.errors, ["truncated_head"]);
        assert!(out.exchanges.is_empty());
        let out = run(SERVER, &[(IN, 1, b"GET / HTTP/1.1\r\nHost: a", 0)], true);
        assert_eq!(out.errors, ["incomplete_head"]);
    }

    #[test]
    fn body_prefixes_only_when_opted_in_and_bounded() {
        let steps: &[(Direction, u64, &[u8], u64)] = &[
            (OUT, 1, b"POST /x HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world", 0),
            (IN, 2, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n", 0),
        ];
        let out = run(CLIENT, steps, false);
        assert!(out.exchanges[0].request_body.is_empty());
        let mut s = Session::new(
            CLIENT,
            Capture {
                headers: std::sync::Arc::from(Vec::new()),
                body_bytes: 5,
            },
        );
        let mut exchanges = Vec::new();
        for &(direction, ts, data, missing) in steps {
            let chunk = Chunk {
                ts_ns: ts,
                offset: 0,
                data: data.to_vec(),
                missing,
            };
            exchanges.extend(s.push(direction, &chunk).exchanges);
        }
        assert_eq!(exchanges[0].request_body, b"hello");
        assert_eq!(exchanges[0].response_body, b"abcde", "de-chunked");
        assert_eq!(exchanges[0].response_body_bytes, 7);
    }

    #[test]
    fn a_gap_ends_one_body_prefix_not_the_next_ones() {
        let mut s = Session::new(
            SERVER,
            Capture {
                headers: std::sync::Arc::from(Vec::new()),
                body_bytes: 5,
            },
        );
        let steps: &[(Direction, u64, &[u8], u64)] = &[
            (
                IN,
                1,
                b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nab",
                6,
            ),
            (IN, 2, b"yz", 0),
            (OUT, 3, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0),
            (
                IN,
                4,
                b"POST /b HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world",
                0,
            ),
            (OUT, 5, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0),
        ];
        let mut exchanges = Vec::new();
        for &(direction, ts, data, missing) in steps {
            let chunk = Chunk {
                ts_ns: ts,
                offset: 0,
                data: data.to_vec(),
                missing,
            };
            exchanges.extend(s.push(direction, &chunk).exchanges);
        }
        assert_eq!(exchanges[0].request_body, b"ab", "stops at the gap");
        assert_eq!(exchanges[0].request_body_bytes, 10);
        assert_eq!(
            exchanges[1].request_body, b"hello",
            "the next message keeps its full prefix"
        );
    }

    #[test]
    fn role_is_sniffed_when_unknown() {
        let out = run(
            None,
            &[
                (IN, 1, b"PUT /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", 0),
                (
                    OUT,
                    2,
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
                    0,
                ),
            ],
            false,
        );
        assert_eq!(out.exchanges[0].response.status, 500);
        assert_eq!(out.exchanges[0].request_body_bytes, 2);
        assert!(Session::detect(b"GET / HTTP/1.1"));
        assert!(Session::detect(b"HTTP/1.1 200 OK"));
        assert!(!Session::detect(b"\x16\x03\x01"));
    }
}
