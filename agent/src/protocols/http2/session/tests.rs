//! Session tests: conversations built with the frame encoder and a small
//! HPACK encoder, fed as syscall-sized chunks (some partly uncaptured).
use std::{collections::VecDeque, sync::Arc};

use super::*;
use crate::protocols::http2::{
    frame::flag,
    hpack::table::STATIC,
    wire::{frame, indexed, int, size_update, string},
};

use Direction::{Egress as S, Ingress as C};

// ---- wire helpers ----

fn headers(id: u32, end_stream: bool, block: &[u8]) -> Vec<u8> {
    let es = if end_stream { flag::END_STREAM } else { 0 };
    frame(kind::HEADERS, flag::END_HEADERS | es, id, block)
}

fn data(id: u32, end_stream: bool, payload: &[u8]) -> Vec<u8> {
    let es = if end_stream { flag::END_STREAM } else { 0 };
    frame(kind::DATA, es, id, payload)
}

fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in params {
        p.extend(id.to_be_bytes());
        p.extend(v.to_be_bytes());
    }
    frame(kind::SETTINGS, 0, 0, &p)
}

fn rst(id: u32, code: u32) -> Vec<u8> {
    frame(kind::RST_STREAM, 0, id, &code.to_be_bytes())
}

fn goaway(last: u32, code: u32) -> Vec<u8> {
    let mut p = last.to_be_bytes().to_vec();
    p.extend(code.to_be_bytes());
    frame(kind::GOAWAY, 0, 0, &p)
}

/// A gRPC length-prefixed message.
fn msg(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend((payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Literal with a new name; `first` picks the representation: 0x40 with
/// incremental indexing, 0x00 without, 0x10 never indexed.
fn literal(first: u8, name: &str, value: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    string(name.as_bytes(), &mut v);
    string(value, &mut v);
    v
}

/// Literal without indexing, name from the static table.
fn literal_indexed_name(index: u32, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    int(0, 4, index, &mut v);
    string(value, &mut v);
    v
}

/// A peer's HPACK encoder as most are: static matches, then its dynamic
/// table, else a literal with incremental indexing (name indexed when the
/// static table has it). Evicts like RFC 7541 §4.4 at 4096 bytes.
#[derive(Default)]
struct Enc {
    table: VecDeque<(String, String)>,
}

impl Enc {
    fn field(&mut self, name: &str, value: &str, out: &mut Vec<u8>) {
        if let Some(i) = STATIC.iter().position(|&(n, v)| n == name && v == value) {
            out.extend(indexed(i as u32 + 1));
            return;
        }
        if let Some(j) = self.table.iter().position(|(n, v)| n == name && v == value) {
            out.extend(indexed(62 + j as u32));
            return;
        }
        match STATIC.iter().position(|&(n, _)| n == name) {
            Some(i) => {
                int(0x40, 6, i as u32 + 1, out);
                string(value.as_bytes(), out);
            }
            None => out.extend(literal(0x40, name, value.as_bytes())),
        }
        self.table.push_front((name.to_string(), value.to_string()));
        while self
            .table
            .iter()
            .map(|(n, v)| n.len() + v.len() + 32)
            .sum::<usize>()
            > 4096
        {
            self.table.pop_back();
        }
    }

    fn block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in fields {
            self.field(n, v, &mut out);
        }
        out
    }
}

/// Both encoders of a connection.
#[derive(Default)]
struct Peers {
    client: Enc,
    server: Enc,
}

impl Peers {
    fn request(&mut self, path: &str) -> Vec<u8> {
        self.client.block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "svc.local:50051"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", "grpc-go/1.64.0"),
        ])
    }

    fn response(&mut self) -> Vec<u8> {
        self.server
            .block(&[(":status", "200"), ("content-type", "application/grpc")])
    }

    fn trailers(&mut self, code: &str) -> Vec<u8> {
        self.server.block(&[("grpc-status", code)])
    }
}

/// One syscall: direction, the bytes it moved, how many of its last bytes
/// the kernel did not capture.
type Step = (Direction, Vec<u8>, usize);

fn step(dir: Direction, bytes: Vec<u8>) -> Step {
    (dir, bytes, 0)
}

fn merge(all: &mut Output, out: Output) {
    all.started.extend(out.started);
    all.exchanges.extend(out.exchanges);
    all.errors.extend(out.errors);
}

/// Feeds the steps (step `i` at ts `10 * (i + 1)`); `split` cuts step `j`
/// into two chunks at byte `c`, both at that step's ts.
fn feed(s: &mut Session, steps: &[Step], split: Option<(usize, usize)>) -> Output {
    let mut all = Output::default();
    let mut offsets = [0u64; 2];
    for (i, (dir, bytes, uncaptured)) in steps.iter().enumerate() {
        let ts = 10 * (i as u64 + 1);
        let keep = bytes.len() - uncaptured;
        let mut pieces = vec![(0, keep, *uncaptured as u64)];
        if let Some((j, c)) = split
            && j == i
            && c > 0
            && c < keep
        {
            pieces = vec![(0, c, 0), (c, keep, *uncaptured as u64)];
        }
        for (from, to, missing) in pieces {
            let chunk = Chunk {
                ts_ns: ts,
                offset: offsets[dir.index()] + from as u64,
                data: bytes[from..to].to_vec(),
                missing,
            };
            merge(&mut all, s.push(*dir, &chunk));
        }
        offsets[dir.index()] += bytes.len() as u64;
    }
    all
}

fn server() -> Session {
    Session::new(Some(C), true, Capture::default())
}

fn run(steps: &[Step]) -> Output {
    feed(&mut server(), steps, None)
}

fn text(s: &str) -> Known<String> {
    Known::Value(s.to_string())
}

/// Preface + SETTINGS both ways.
fn prologue() -> Vec<Step> {
    let mut hello = PREFACE.to_vec();
    hello.extend(settings(&[(2, 0), (4, 4_194_304)]));
    let mut server_settings = settings(&[(5, 16_384)]);
    server_settings.extend(frame(kind::SETTINGS, flag::ACK, 0, &[]));
    vec![
        step(C, hello),
        step(S, server_settings),
        step(C, frame(kind::SETTINGS, flag::ACK, 0, &[])),
    ]
}

/// The request of a unary call on stream 1 (one message, END_STREAM).
fn call(p: &mut Peers) -> Step {
    let mut call = headers(1, false, &p.request("/pkg.Svc/Method"));
    call.extend(data(1, true, &msg(b"hello")));
    step(C, call)
}

/// [`prologue`], then one unary call on stream 1.
fn unary_conversation(p: &mut Peers) -> Vec<Step> {
    let mut steps = prologue();
    steps.push(call(p));
    steps.push(step(S, headers(1, false, &p.response())));
    let mut reply = data(1, false, &msg(b"world!"));
    reply.extend(headers(1, true, &p.trailers("0")));
    steps.push(step(S, reply));
    steps
}

// ---- tests ----

#[test]
fn unary_grpc_call_from_the_start() {
    let steps = unary_conversation(&mut Peers::default());
    for role in [Some(C), None] {
        let mut s = Session::new(role, true, Capture::default());
        let out = feed(&mut s, &steps, None);
        assert_eq!(s.requests_from(), Some(C), "role {role:?}");
        assert_eq!(out.errors, Vec::<&str>::new());
        assert_eq!(
            out.started,
            vec![Started {
                stream_id: 1,
                traceparent: None,
                tracestate: None
            }]
        );
        assert_eq!(out.exchanges.len(), 1);
        let e = &out.exchanges[0];
        assert_eq!(e.request.method, text("POST"));
        assert_eq!(e.request.path, text("/pkg.Svc/Method"));
        assert_eq!(e.request.authority, text("svc.local:50051"));
        assert_eq!(e.request.scheme, text("http"));
        assert_eq!(e.request.user_agent, text("grpc-go/1.64.0"));
        assert_eq!(e.request.status, Known::Absent);
        let response = e.response.as_ref().unwrap();
        assert_eq!(response.status, Known::Value(200));
        assert_eq!(response.content_type, text("application/grpc"));
        assert_eq!(response.grpc_status, Known::Absent);
        let trailers = e.trailers.as_ref().unwrap();
        assert_eq!(trailers.grpc_status, Known::Value(0));
        assert_eq!(trailers.status, Known::Absent);
        assert_eq!(
            (e.request_messages, e.response_messages),
            (Some(1), Some(1))
        );
        assert_eq!((e.request_body_bytes, e.response_body_bytes), (10, 11));
        assert_eq!(e.end, End::Complete);
        assert!(e.request_seen && !e.framing_lost);
        assert_eq!((e.request_start_ns, e.request_end_ns), (40, 40));
        assert_eq!(
            (e.response_start_ns, e.response_end_ns),
            (Some(50), Some(60))
        );
        assert_eq!(e.end_ns, 60);
    }
}

#[test]
fn trailers_only_error() {
    let mut p = Peers::default();
    let mut steps = prologue();
    steps.push(call(&mut p));
    let block = p.server.block(&[
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", "5"),
        ("grpc-message", "no such user"),
    ]);
    steps.push(step(S, headers(1, true, &block)));
    let out = run(&steps);
    assert_eq!(out.errors, Vec::<&str>::new());
    let e = &out.exchanges[0];
    let response = e.response.as_ref().unwrap();
    assert_eq!(response.grpc_status, Known::Value(5));
    assert!(response.grpc_message_present);
    assert_eq!(e.trailers, None);
    assert_eq!(
        (e.request_messages, e.response_messages),
        (Some(1), Some(0))
    );
    assert_eq!(e.end, End::Complete);
}

#[test]
fn many_interleaved_streams_pair_by_id() {
    let mut p = Peers::default();
    let mut steps = prologue();
    let ids: Vec<u32> = (0..60).map(|k| 2 * k + 3).collect();
    let path = |id: u32| format!("/pkg.Svc/M{}", id % 7);
    // All requests first (a few paths, so the table is reused), bodies in
    // reverse order, responses in another order, several frames per syscall.
    for pair in ids.chunks(2) {
        let mut b = Vec::new();
        for &id in pair {
            b.extend(headers(id, false, &p.request(&path(id))));
        }
        steps.push(step(C, b));
    }
    for &id in ids.iter().rev() {
        steps.push(step(C, data(id, true, &msg(&id.to_be_bytes()))));
    }
    let order: Vec<u32> = ids
        .iter()
        .map(|&id| ids[(id as usize * 7) % ids.len()])
        .collect();
    let mut answered = std::collections::HashSet::new();
    for &id in &order {
        if !answered.insert(id) {
            continue;
        }
        let mut b = headers(id, false, &p.response());
        b.extend(data(id, false, &msg(b"r")));
        b.extend(data(id, false, &msg(b"rr")));
        let code = (id % 3).to_string();
        b.extend(headers(id, true, &p.trailers(&code)));
        steps.push(step(S, b));
    }
    for &id in &ids {
        if answered.insert(id) {
            steps.push(step(
                S,
                headers(id, true, &p.server.block(&[(":status", "503")])),
            ));
        }
    }
    let out = run(&steps);
    assert_eq!(out.errors, Vec::<&str>::new());
    assert_eq!(out.started.len(), ids.len());
    assert_eq!(out.exchanges.len(), ids.len());
    for e in &out.exchanges {
        assert_eq!(
            e.request.path,
            text(&path(e.stream_id)),
            "stream {}",
            e.stream_id
        );
        assert_eq!(e.end, End::Complete);
        assert_eq!(e.request_messages, Some(1));
        let status = e.response.as_ref().unwrap().status.clone();
        match e.trailers.as_ref() {
            Some(t) => {
                assert_eq!(status, Known::Value(200));
                assert_eq!(t.grpc_status, Known::Value(e.stream_id % 3));
                assert_eq!(e.response_messages, Some(2));
            }
            None => assert_eq!(status, Known::Value(503)),
        }
    }
}

#[test]
fn server_streaming_messages_split_across_frames() {
    let mut p = Peers::default();
    let mut steps = prologue();
    steps.push(call(&mut p));
    steps.push(step(S, headers(1, false, &p.response())));
    let mut body = msg(b"first message");
    body.extend(msg(&[7; 300]));
    body.extend(msg(b"third"));
    // Frame boundaries: inside message 2's prefix, inside its payload, and
    // inside message 3's prefix.
    let cuts = [20, 21, 180, body.len() - 8, body.len()];
    let mut from = 0;
    for to in cuts {
        steps.push(step(S, data(1, false, &body[from..to])));
        from = to;
    }
    steps.push(step(S, headers(1, true, &p.trailers("0"))));
    let out = run(&steps);
    assert_eq!(out.errors, Vec::<&str>::new());
    let e = &out.exchanges[0];
    assert_eq!(e.response_messages, Some(3));
    assert_eq!(e.response_body_bytes, body.len() as u64);
}

#[test]
fn uncaptured_data_keeps_exact_sizes_and_counts_unless_a_prefix_was_lost() {
    let mut p = Peers::default();
    let mut steps = prologue();
    steps.push(call(&mut p));
    steps.push(step(S, headers(1, false, &p.response())));
    // A 10 KB message of which the kernel captured the first 1000 bytes of
    // the syscall, then a small message captured whole.
    let big = data(1, false, &msg(&[1; 10_000]));
    let big_len = big.len();
    steps.push((S, big, big_len - 1000));
    steps.push(step(S, data(1, false, &msg(b"small"))));
    steps.push(step(S, headers(1, true, &p.trailers("0"))));
    let out = run(&steps);
    assert_eq!(out.errors, Vec::<&str>::new());
    let e = &out.exchanges[0];
    assert_eq!(e.response_messages, Some(2));
    assert_eq!(e.response_body_bytes, 10_005 + 10);

    // Two messages in one frame: the second one's prefix is uncaptured.
    let mut p = Peers::default();
    let mut steps = prologue();
    steps.push(call(&mut p));
    steps.push(step(S, headers(1, false, &p.response())));
    let mut payload = msg(&[1; 2000]);
    payload.extend(msg(b"lost"));
    let both = data(1, false, &payload);
    steps.push((S, both, 100));
    steps.push(step(S, data(1, false, &msg(b"seen"))));
    steps.push(step(S, headers(1, true, &p.trailers("0"))));
    let out = run(&steps);
    let e = &out.exchanges[0];
    assert_eq!(e.response_messages, None, "a prefix fell in the hole");
    assert_eq!(e.request_messages, Some(1));
    assert_eq!(e.response_body_bytes, payload.len() as u64 + 9);
}

#[test]
fn client_cancel_and_goaway() {
    let mut p = Peers::default();
    let mut steps = prologue();
    for id in [1, 3, 5, 7] {
        steps.push(step(C, headers(id, false, &p.request("/pkg.Svc/Stream"))));
    }
    steps.push(step(C, rst(1, 0x8))); // ts 80: CANCEL
    steps.push(step(S, goaway(3, 0))); // ts 90: 5 and 7 were not processed
    steps.push(step(C, headers(9, true, &p.request("/pkg.Svc/Late"))));
    steps.push(step(C, data(3, true, &msg(b"x"))));
    steps.push(step(S, headers(3, false, &p.response())));
    steps.push(step(S, headers(3, true, &p.trailers("0"))));
    let out = run(&steps);
    assert_eq!(out.errors, Vec::<&str>::new());
    let ends: Vec<(u32, End, u64)> = out
        .exchanges
        .iter()
        .map(|e| (e.stream_id, e.end, e.end_ns))
        .collect();
    assert_eq!(
        ends,
        vec![
            (
                1,
                End::RstStream {
                    error_code: Some(8)
                },
                80
            ),
            (5, End::GoAway { error_code: 0 }, 90),
            (7, End::GoAway { error_code: 0 }, 90),
            (9, End::GoAway { error_code: 0 }, 100),
            (3, End::Complete, 130),
        ]
    );
    assert_eq!(out.exchanges[0].request_end_ns, 80);
    assert_eq!(out.exchanges[0].response, None);
    assert_eq!(out.started.len(), 5);
}

#[test]
fn close_ends_open_streams_in_id_order() {
    let mut p = Peers::default();
    let mut steps = prologue();
    for id in [1, 3, 7] {
        steps.push(step(C, headers(id, false, &p.request("/a.B/C"))));
    }
    steps.push(step(S, headers(3, false, &p.response())));
    // A stream id that does not increase is a protocol error, not a stream.
    steps.push(step(C, headers(5, true, &[0x82])));
    let mut s = server();
    let out = feed(&mut s, &steps, None);
    assert!(out.exchanges.is_empty());
    assert_eq!(out.errors, ["headers_on_closed_stream"]);
    let out = s.close(999);
    let ids: Vec<u32> = out.exchanges.iter().map(|e| e.stream_id).collect();
    assert_eq!(ids, [1, 3, 7]);
    for e in &out.exchanges {
        assert_eq!((e.end, e.end_ns), (End::Closed, 999));
        assert_eq!(e.response.is_some(), e.stream_id == 3);
        assert_eq!(e.response_end_ns, e.response_start_ns);
    }
    assert!(s.close(1000).exchanges.is_empty(), "never twice");
}

#[test]
fn a_conversation_split_at_every_byte_gives_the_same_exchanges() {
    let mut p = Peers::default();
    let mut steps = unary_conversation(&mut p);
    for id in [3, 5] {
        steps.push(step(C, headers(id, false, &p.request("/pkg.Svc/Other"))));
        steps.push(step(C, data(id, true, &msg(b"abc"))));
        let mut b = headers(id, false, &p.response());
        b.extend(data(id, false, &msg(b"de")));
        b.extend(data(id, false, &msg(b"fg")));
        b.extend(headers(id, true, &p.trailers("13")));
        steps.push(step(S, b));
    }
    let want = run(&steps);
    assert_eq!(want.exchanges.len(), 3);
    assert_eq!(want.errors, Vec::<&str>::new());
    for j in 0..steps.len() {
        for c in 1..steps[j].1.len() {
            let got = feed(&mut server(), &steps, Some((j, c)));
            assert_eq!(got, want, "step {j} cut at {c}");
        }
    }
}

#[test]
fn midstream_join_never_names_a_path_from_an_unseen_entry() {
    // Before the agent attached, the client inserted `:path /pkg.Svc/Old`.
    let mut p = Peers::default();
    let _ = p.request("/pkg.Svc/Old");
    let _ = p.response();
    let mut steps = Vec::new();
    for (id, path) in [
        (101, "/pkg.Svc/Old"),
        (103, "/pkg.Svc/New"),
        (105, "/pkg.Svc/New"),
    ] {
        let mut b = headers(id, false, &p.request(path));
        b.extend(data(id, true, &msg(b"q")));
        steps.push(step(C, b));
        let mut b = headers(id, false, &p.response());
        b.extend(data(id, false, &msg(b"a")));
        b.extend(headers(id, true, &p.trailers("0")));
        steps.push(step(S, b));
    }
    for role in [Some(C), None] {
        let mut s = Session::new(role, false, Capture::default());
        let out = feed(&mut s, &steps, None);
        assert_eq!(s.requests_from(), Some(C));
        assert_eq!(out.exchanges.len(), 3);
        let [old, new, again] = &out.exchanges[..] else {
            panic!()
        };
        // Stream 101 references only entries the agent never saw.
        assert_eq!(old.request.path, Known::Unknown);
        assert_eq!(old.request.method, text("POST"), "static entries are known");
        assert!(old.request.unknown_fields > 0);
        assert_eq!(old.request_messages, None, "content type unknown");
        assert_eq!(old.response.as_ref().unwrap().status, Known::Value(200));
        // 103 inserted its path as a new literal: known; 105 references it.
        assert_eq!(new.request.path, text("/pkg.Svc/New"));
        assert_eq!(again.request.path, text("/pkg.Svc/New"));
        assert!(
            again.request.unknown_fields > 0,
            "authority etc. still unseen"
        );
        assert!(out.errors.contains(&"unknown_fields"));
        assert!(old.request_seen && new.request_seen);
    }
}

#[test]
fn midstream_stream_seen_only_from_the_response_side() {
    let mut p = Peers::default();
    let _ = p.request("/x.Y/Z");
    let mut reply = headers(7, false, &p.response());
    reply.extend(data(7, false, &msg(b"a")));
    let steps = vec![
        step(S, reply),
        step(S, data(7, false, &msg(b"b"))),
        step(S, headers(7, true, &p.trailers("0"))),
    ];
    let out = feed(
        &mut Session::new(Some(C), false, Capture::default()),
        &steps,
        None,
    );
    let e = &out.exchanges[0];
    assert!(!e.request_seen);
    assert_eq!(e.request, Head::unknown());
    assert_eq!(e.request_start_ns, 10);
    assert_eq!(e.end, End::Complete, "the response's end completes it");
    assert_eq!(e.response_messages, Some(2));
    assert_eq!(e.request_messages, None);
    assert_eq!(out.started.len(), 1);
}

#[test]
fn lost_header_block_resets_the_epoch_and_later_streams_recover() {
    let mut p = Peers::default();
    let mut steps = prologue();
    // Stream 1's request head: its last 12 bytes not captured.
    let h = headers(1, false, &p.request("/pkg.Svc/A"));
    let h_len = h.len();
    steps.push((C, h, h_len - 12));
    steps.push(step(C, data(1, true, &msg(b"1"))));
    steps.push(step(S, headers(1, false, &p.response())));
    steps.push(step(S, headers(1, true, &p.trailers("0"))));
    // Stream 3 references entries inserted by the lost block: unknown, not
    // wrong. Stream 5 inserts a new path, stream 7 references it.
    for (id, path) in [(3, "/pkg.Svc/A"), (5, "/pkg.Svc/B"), (7, "/pkg.Svc/B")] {
        steps.push(step(C, headers(id, true, &p.request(path))));
        steps.push(step(
            S,
            headers(id, true, &p.server.block(&[(":status", "200")])),
        ));
    }
    let out = run(&steps);
    assert_eq!(out.errors[..2], ["header_block_lost", "table_epochs"]);
    let e: Vec<&Exchange> = out.exchanges.iter().collect();
    assert_eq!(e.len(), 4);
    assert_eq!((e[0].stream_id, e[0].end), (1, End::Complete));
    assert!(e[0].request_seen);
    assert_eq!(e[0].request, Head::unknown());
    assert_eq!(e[0].request_messages, Some(1), "DATA positions are intact");
    assert_eq!(e[1].request.path, Known::Unknown);
    assert_eq!(e[2].request.path, text("/pkg.Svc/B"));
    assert_eq!(e[3].request.path, text("/pkg.Svc/B"));
    assert_eq!(e[3].request.method, text("POST"));
}

#[test]
fn request_side_framing_loss_completes_on_the_response_end() {
    let mut p = Peers::default();
    let mut steps = prologue();
    steps.push(step(C, headers(1, false, &p.request("/a.B/C"))));
    // A gap that reaches into the next frame header: framing is lost, and
    // with it the request's END_STREAM.
    let mut b = data(1, false, &msg(b"xxxxxxxx"));
    b.extend(data(1, true, &[]));
    steps.push((C, b, 12));
    steps.push(step(S, headers(1, false, &p.response())));
    steps.push(step(S, headers(1, true, &p.trailers("0"))));
    let mut s = server();
    let out = feed(&mut s, &steps, None);
    assert!(out.errors.contains(&"framing_lost"));
    let e = &out.exchanges[0];
    assert_eq!((e.end, e.end_ns), (End::Complete, 70));
    assert!(e.framing_lost);
    assert_eq!(e.request_end_ns, 50, "the last request frame seen");
    assert_eq!(e.request_messages, None);
    assert_eq!(e.response_messages, Some(0));
}

#[test]
fn settings_header_table_size_bounds_the_peer_decoder() {
    let mut hello = PREFACE.to_vec();
    hello.extend(settings(&[(1, 0)]));
    let req = Enc::default().block(&[(":method", "GET"), (":path", "/"), (":scheme", "http")]);
    // The server's encoder obeys: size update to 0, then an insertion that
    // cannot fit (RFC 7541 §4.4: the table is emptied, nothing added).
    let mut first = size_update(0);
    first.extend(indexed(8));
    first.extend(literal(0x40, "x-a", b"1"));
    // A (wrong) reference to the entry: never a value.
    let mut second = indexed(8);
    second.extend(indexed(62));
    let steps = vec![
        step(C, hello),
        step(S, settings(&[])),
        step(C, headers(1, true, &req)),
        step(S, headers(1, true, &first)),
        step(C, headers(3, true, &req)),
        step(S, headers(3, true, &second)),
    ];
    let out = run(&steps);
    assert_eq!(out.errors, ["hpack_invalid_index"]);
    let r = out.exchanges[1].response.as_ref().unwrap();
    assert_eq!(r.status, Known::Value(200));
    assert_eq!(r.content_type, Known::Unknown, "the block lost a field");

    // A larger setting allows a larger size update.
    let mut big = size_update(65_536);
    big.extend(indexed(8));
    for (table, errors) in [
        (None, vec!["hpack_size_update_too_large"]),
        (Some(65_536), vec![]),
    ] {
        let mut hello = PREFACE.to_vec();
        hello.extend(match table {
            Some(t) => settings(&[(1, t)]),
            None => settings(&[]),
        });
        let steps = vec![
            step(C, hello),
            step(S, settings(&[])),
            step(C, headers(1, true, &req)),
            step(S, headers(1, true, &big)),
        ];
        assert_eq!(run(&steps).errors, errors);
    }
}

#[test]
fn open_streams_are_bounded() {
    let mut enc = Enc::default();
    let req = enc.block(&[(":method", "GET"), (":path", "/")]);
    let mut steps = vec![step(C, PREFACE.to_vec())];
    for k in 0..=MAX_STREAMS as u32 {
        steps.push(step(C, headers(2 * k + 1, true, &req)));
    }
    let mut s = server();
    let out = feed(&mut s, &steps, None);
    assert_eq!(out.errors, ["streams_evicted"]);
    assert_eq!(out.started.len(), MAX_STREAMS + 1);
    assert_eq!(out.exchanges.len(), 1);
    assert_eq!(
        (out.exchanges[0].stream_id, out.exchanges[0].end),
        (1, End::Evicted)
    );
    // A late response for the evicted stream does not report it again.
    let mut offset = 0;
    let late = headers(1, true, &indexed(8));
    let mut sess_out = Output::default();
    let chunk = |data: &[u8], offset| Chunk {
        ts_ns: 1,
        offset,
        data: data.to_vec(),
        missing: 0,
    };
    for b in [settings(&[]), late] {
        merge(&mut sess_out, s.push(S, &chunk(&b, offset)));
        offset += b.len() as u64;
    }
    assert!(sess_out.exchanges.is_empty());
    assert_eq!(s.close(2).exchanges.len(), MAX_STREAMS);
}

#[test]
fn head_values_are_bounded_and_only_opted_in_headers_are_captured() {
    let capture = Capture {
        headers: Arc::from(vec![
            "x-request-id".to_string(),
            "authorization".to_string(),
        ]),
        body_bytes: 0,
    };
    let long = "p".repeat(600);
    let mut block = indexed(3);
    block.extend(literal_indexed_name(4, format!("/{long}").as_bytes()));
    block.extend(literal_indexed_name(58, long.as_bytes()));
    block.extend(literal(0x00, "x-request-id", b"42"));
    block.extend(literal(0x10, "authorization", b"Bearer secret"));
    block.extend(literal(0x00, "cookie", b"a=b"));
    block.extend(literal(
        0x00,
        "traceparent",
        b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ));
    let mut s = Session::new(Some(C), true, capture);
    let out = feed(
        &mut s,
        &[step(C, PREFACE.to_vec()), step(C, headers(1, true, &block))],
        None,
    );
    assert_eq!(out.errors, ["value_too_long"]);
    assert_eq!(
        out.started[0].traceparent.as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    let out = s.close(100);
    let r = &out.exchanges[0].request;
    assert_eq!(r.path, Known::Unknown);
    assert_eq!(r.method, text("POST"));
    assert_eq!(r.user_agent, text(&long[..MAX_VALUE]));
    assert_eq!(
        r.captured,
        vec![("x-request-id".to_string(), "42".to_string())]
    );
    assert_eq!(r.authority, Known::Absent);

    // A value that is not known (bad Huffman) or not UTF-8 is Unknown for
    // that field only.
    let mut block = indexed(3);
    block.extend([0x04, 0x81, 0xff]); // :path, Huffman value with bad padding
    block.extend(literal_indexed_name(1, b"\xff\xfe"));
    let out = feed(
        &mut server(),
        &[
            step(C, PREFACE.to_vec()),
            step(C, headers(1, true, &block)),
            step(S, headers(1, true, &indexed(13))),
        ],
        None,
    );
    assert_eq!(out.errors, ["hpack_huffman", "value_not_utf8"]);
    let r = &out.exchanges[0].request;
    assert_eq!((&r.path, &r.authority), (&Known::Unknown, &Known::Unknown));
    assert_eq!(
        (&r.method, &r.content_type),
        (&text("POST"), &Known::Absent)
    );
    assert_eq!(
        out.exchanges[0].response.as_ref().unwrap().status,
        Known::Value(404)
    );
}

#[test]
fn detect_is_strict() {
    assert!(Session::detect(PREFACE));
    assert!(Session::detect(&PREFACE[..16]));
    let mut s = settings(&[(3, 100), (4, 65_535), (5, 16_384)]);
    assert!(Session::detect(&s));
    s.extend(frame(kind::WINDOW_UPDATE, 0, 0, &983_041u32.to_be_bytes()));
    assert!(Session::detect(&s));
    assert!(Session::detect(&settings(&[])));
    let mut mid = headers(7, false, &[0x88, 0xc0]);
    mid.extend(data(7, false, &msg(b"hi")));
    assert!(Session::detect(&mid), "joined midway");

    assert!(
        !Session::detect(&headers(7, false, &[0x88])),
        "one frame is not enough"
    );
    assert!(
        !Session::detect(&settings(&[(5, 100)])),
        "MAX_FRAME_SIZE below 16384"
    );
    let mut bad_second = settings(&[]);
    bad_second.extend(b"GET / HTTP/1.1\r\n");
    assert!(!Session::detect(&bad_second));
    for not_h2 in [
        &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"PRI * HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x8a\x12",
        b"\x17\x03\x03\x00\x45\x00\x00\x00\x00\x00\x00\x00\x01",
        b"SSH-2.0-OpenSSH_9.2p1\r\n",
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f", // PostgreSQL SSLRequest
        &[0; 64],
        &[0xff; 64],
    ] {
        assert!(!Session::detect(not_h2), "{not_h2:?}");
    }
    // Random bytes, from a seeded xorshift.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut hits = 0;
    for _ in 0..200_000 {
        let mut buf = [0u8; 24];
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        hits += usize::from(Session::detect(&buf));
    }
    assert_eq!(hits, 0);
}

mod upgrade;
