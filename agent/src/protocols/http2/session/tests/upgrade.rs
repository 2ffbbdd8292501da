//! A connection upgraded from HTTP/1.1 (`Upgrade: h2c`): the HTTP/1 request
//! as stream 1's head, the readers starting at the upgrade offsets, stream 1
//! answered over HTTP/2 and the next streams as usual.
use super::*;
use crate::protocols::http1::{
    self,
    head::{Parsed, Request, parse_request},
};

const REQUEST: &[u8] = b"GET /hello?x=1 HTTP/1.1\r\nHost: svc:8080\r\nUser-Agent: curl/8.5.0\r\n\
    Accept: */*\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
    HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
    traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n";
const SWITCHING: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";

fn http1_request(raw: &[u8], capture: &[String]) -> Request {
    match parse_request(raw, capture) {
        Ok(Parsed::Complete(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

#[test]
fn head_from_an_http1_request() {
    let capture = ["x-request-id".to_string()];
    let mut raw = REQUEST.to_vec();
    raw.truncate(raw.len() - 2);
    raw.extend(b"X-Request-Id: 42\r\n\r\n");
    let h = Head::from_http1(&http1_request(&raw, &capture));
    assert_eq!(h.method, text("GET"));
    assert_eq!(h.path, text("/hello?x=1"));
    assert_eq!(h.authority, text("svc:8080"));
    assert_eq!(h.scheme, text("http"));
    assert_eq!(h.user_agent, text("curl/8.5.0"));
    assert_eq!(h.content_type, Known::Absent, "the HTTP/1 head keeps it");
    assert_eq!(h.status, Known::Absent);
    assert_eq!(h.grpc_status, Known::Unknown, "not kept by HTTP/1");
    assert_eq!(h.grpc_timeout_ns, None);
    assert_eq!(
        h.traceparent.as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(h.captured, [("x-request-id".to_string(), "42".to_string())]);
    assert!(!h.is_grpc());

    // A gRPC-looking POST without Host; values the HTTP/1 parser may have
    // cut, or too long for HTTP/2, are not named.
    let long_host = "h".repeat(600);
    let long_path = format!("/{}", "p".repeat(600));
    let raw = format!(
        "POST {long_path} HTTP/1.1\r\nContent-Type: application/grpc\r\nUser-Agent: {}\r\n\r\n",
        "u".repeat(600)
    );
    let h = Head::from_http1(&http1_request(raw.as_bytes(), &[]));
    assert_eq!(h.method, text("POST"));
    assert_eq!(h.path, Known::Unknown);
    assert_eq!(h.authority, Known::Absent);
    assert_eq!(h.content_type, text("application/grpc"));
    assert!(h.is_grpc());
    assert_eq!(
        h.user_agent.value().map(String::len),
        Some(MAX_VALUE),
        "cut"
    );
    let raw = format!("GET / HTTP/1.1\r\nHost: {long_host}\r\n\r\n");
    let h = Head::from_http1(&http1_request(raw.as_bytes(), &[]));
    assert_eq!(h.authority, Known::Unknown);
}

/// Stream 1's response and a second stream, after an upgrade whose HTTP/1
/// bytes end at `at` (by direction index; the client is `C`). Each
/// direction's first chunk starts at 0, with the HTTP/1 bytes in front of
/// the HTTP/2 ones.
fn after_upgrade(at: [u64; 2]) -> Vec<(Direction, Chunk)> {
    let mut client = vec![b'q'; at[C.index()] as usize];
    client.extend(PREFACE);
    client.extend(settings(&[(2, 0)]));
    let mut server = vec![b'r'; at[S.index()] as usize];
    server.extend(settings(&[(3, 100)]));
    let mut enc = Enc::default();
    server.extend(headers(1, false, &enc.block(&[(":status", "200")])));
    server.extend(data(1, true, b"hello, h2c"));
    let mut client_enc = Enc::default();
    let mut second = frame(kind::SETTINGS, flag::ACK, 0, &[]);
    second.extend(headers(
        3,
        true,
        &client_enc.block(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/second"),
            (":authority", "svc:8080"),
        ]),
    ));
    let mut reply = headers(3, false, &enc.block(&[(":status", "404")]));
    reply.extend(data(3, true, b"no"));
    let mut offsets = [0u64; 2];
    let mut chunk = |dir: Direction, ts_ns: u64, data: Vec<u8>| {
        let offset = offsets[dir.index()];
        offsets[dir.index()] += data.len() as u64;
        (
            dir,
            Chunk {
                ts_ns,
                offset,
                data,
                missing: 0,
            },
        )
    };
    vec![
        chunk(S, 30, server),
        chunk(C, 40, client),
        chunk(C, 50, second),
        chunk(S, 60, reply),
    ]
}

/// `request_ns`: the HTTP/1 request's first and last byte.
fn check_after_upgrade(s: &mut Session, chunks: &[(Direction, Chunk)], request_ns: (u64, u64)) {
    let mut all = Output::default();
    for (dir, chunk) in chunks {
        merge(&mut all, s.push(*dir, chunk));
    }
    merge(&mut all, s.close(70));
    assert_eq!(all.errors, Vec::<&str>::new());
    assert_eq!(
        all.started,
        [Started {
            stream_id: 3,
            traceparent: None,
            tracestate: None
        }],
        "stream 1 started as the HTTP/1 request"
    );
    assert_eq!(all.exchanges.len(), 2);
    let e = &all.exchanges[0];
    assert_eq!(e.stream_id, 1);
    assert!(e.request_seen && !e.framing_lost);
    assert_eq!(e.request.method, text("GET"));
    assert_eq!(e.request.path, text("/hello?x=1"));
    assert_eq!(e.request.authority, text("svc:8080"));
    assert_eq!(
        e.response.as_ref().map(|h| h.status.clone()),
        Some(Known::Value(200))
    );
    assert_eq!((e.request_start_ns, e.request_end_ns), request_ns);
    assert_eq!(
        (e.response_start_ns, e.response_end_ns),
        (Some(30), Some(30))
    );
    assert_eq!((e.request_body_bytes, e.response_body_bytes), (0, 10));
    assert_eq!((e.end, e.end_ns), (End::Complete, 30));
    let e = &all.exchanges[1];
    assert_eq!(e.stream_id, 3);
    assert_eq!(e.request.path, text("/second"));
    assert_eq!(
        e.response.as_ref().map(|h| h.status.clone()),
        Some(Known::Value(404))
    );
    assert_eq!((e.request_start_ns, e.response_end_ns), (50, Some(60)));
    assert_eq!(e.end, End::Complete);
}

#[test]
fn upgraded_session_answers_stream_1_then_reads_new_streams() {
    let mut at = [0; 2];
    at[C.index()] = 120;
    at[S.index()] = 70;
    let request = Head::from_http1(&http1_request(REQUEST, &[]));
    let mut s = Session::upgraded(C, at, request, 10, 11, Capture::default());
    assert_eq!(s.requests_from(), Some(C));
    check_after_upgrade(&mut s, &after_upgrade(at), (10, 11));

    // Stream 1 is taken: a HEADERS on it is not a new request, and the
    // client's next stream must be above it.
    let request = Head::from_http1(&http1_request(REQUEST, &[]));
    let mut s = Session::upgraded(C, at, request, 10, 11, Capture::default());
    let mut client = vec![b'q'; 120];
    client.extend(PREFACE);
    client.extend(headers(
        1,
        true,
        &Enc::default().block(&[(":method", "GET")]),
    ));
    let out = s.push(
        C,
        &Chunk {
            ts_ns: 40,
            offset: 0,
            data: client,
            missing: 0,
        },
    );
    assert!(out.started.is_empty() && out.exchanges.is_empty());
    let out = s.close(50);
    assert_eq!(out.exchanges.len(), 1);
    assert_eq!(out.exchanges[0].request.path, text("/hello?x=1"));
    assert_eq!(out.exchanges[0].end, End::Closed);
}

/// The HTTP/1 session finds the upgrade, the HTTP/2 session takes over from
/// its offsets with the chunk that completed it and what follows; when the
/// client's preface was read before the `101`, with the chunks the HTTP/1
/// session kept for it.
#[test]
fn http1_upgrade_then_http2_session_end_to_end() {
    for preface_first in [false, true] {
        let mut h1 = http1::Session::new(Some(C), Capture::default());
        let request = Chunk {
            ts_ns: 10,
            offset: 0,
            data: REQUEST.to_vec(),
            missing: 0,
        };
        let out = h1.push(C, &request);
        assert_eq!(out.started.len(), 1);
        let mut at = [0; 2];
        at[C.index()] = REQUEST.len() as u64;
        at[S.index()] = SWITCHING.len() as u64;
        let mut chunks = after_upgrade(at);
        // The 101 and the server's first frames in one write.
        let (dir, first) = chunks.remove(0);
        assert_eq!(dir, S);
        let mut switching = SWITCHING.to_vec();
        switching.extend(first.data.get(SWITCHING.len()..).unwrap_or_default());
        let switching = Chunk {
            ts_ns: 30,
            offset: 0,
            data: switching,
            missing: 0,
        };
        // The client's preface carries on from the end of its request.
        let (dir, mut client) = chunks.remove(0);
        assert_eq!(dir, C);
        client.data.drain(..REQUEST.len());
        client.offset = REQUEST.len() as u64;
        if preface_first {
            let out = h1.push(C, &client);
            assert_eq!(out, http1::Output::default(), "no PRI request, no error");
        }
        let out = h1.push(S, &switching);
        assert!(out.exchanges.is_empty() && out.errors.is_empty());
        let up = out.upgrade.expect("upgrade");
        assert_eq!((up.protocol.as_str(), up.at), ("h2c", at));
        let mut all = vec![(S, switching)];
        if preface_first {
            assert_eq!(up.early, [client.clone()]);
            all.extend(up.early.iter().map(|c| (C, c.clone())));
        } else {
            assert!(up.early.is_empty());
            all.push((C, client));
        }
        all.extend(chunks);
        let e = &up.exchange;
        let mut s = Session::upgraded(
            C,
            up.at,
            Head::from_http1(&e.request),
            e.request_start_ns,
            e.request_end_ns,
            Capture::default(),
        );
        check_after_upgrade(&mut s, &all, (10, 10));
    }
}
