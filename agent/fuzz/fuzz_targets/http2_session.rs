//! Arbitrary bytes, split into syscall-sized chunks with arbitrary gaps and
//! offset jumps (the same input format as `http2_frames`), through an HTTP/2
//! session of either role, from the start or joined midway. Nothing may
//! panic; every stream that starts ends exactly once (at the latest at the
//! close); heads keep their bounds and capture only what was opted in;
//! timestamps stay in order.
#![no_main]

use std::{collections::HashSet, sync::Arc};

use agent::{
    capture::Direction,
    conn::Chunk,
    protocols::{
        http1::Capture,
        http2::session::{Head, Known, MAX_CAPTURED, MAX_STREAMS, MAX_VALUE, Output, Session},
    },
};
use libfuzzer_sys::fuzz_target;

const CAPTURE: [&str; 2] = ["x-request-id", "authorization"];

fn check_head(h: &Head) {
    for v in [&h.method, &h.path, &h.authority, &h.scheme, &h.content_type, &h.user_agent] {
        if let Known::Value(s) = v {
            assert!(s.len() <= MAX_VALUE);
        }
    }
    for v in [&h.traceparent, &h.tracestate].into_iter().flatten() {
        assert!(v.len() <= MAX_VALUE);
    }
    assert!(h.captured.len() <= MAX_CAPTURED);
    for (name, value) in &h.captured {
        assert!(CAPTURE.contains(&name.as_str()));
        assert!(value.len() <= MAX_VALUE);
    }
}

/// Checks one output; `now` is the latest timestamp fed.
fn check(out: Output, open: &mut HashSet<u32>, now: u64) {
    for s in &out.started {
        assert!(open.insert(s.stream_id), "stream {} started twice", s.stream_id);
    }
    for e in &out.exchanges {
        assert!(open.remove(&e.stream_id), "stream {} ended twice or never started", e.stream_id);
        assert!(e.request_start_ns <= e.request_end_ns);
        assert!(e.request_end_ns <= e.end_ns && e.end_ns <= now);
        if let (Some(start), Some(end)) = (e.response_start_ns, e.response_end_ns) {
            assert!(start <= end && end <= e.end_ns);
        }
        assert_eq!(e.response_start_ns.is_some(), e.response_end_ns.is_some());
        check_head(&e.request);
        e.response.iter().chain(&e.trailers).for_each(check_head);
    }
    assert!(open.len() <= MAX_STREAMS);
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, mut rest)) = data.split_first() else { return };
    let role = match control % 3 {
        0 => None,
        1 => Some(Direction::Ingress),
        _ => Some(Direction::Egress),
    };
    let from_start = (control / 3) % 2 == 1;
    let capture = Capture {
        headers: Arc::from(CAPTURE.map(String::from).to_vec()),
        body_bytes: 0,
    };
    let mut session = Session::new(role, from_start, capture);
    let mut open = HashSet::new();
    let mut offsets = [0u64; 2];
    let mut ts = 0u64;
    // Each step: [direction|len][gap][len bytes of payload].
    while let [header, gap, tail @ ..] = rest {
        let dir = if header & 0x80 != 0 { Direction::Egress } else { Direction::Ingress };
        let len = usize::from(header & 0x7f).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        // Gap byte: top bit = bytes missing after the chunk, next bit = a jump
        // in the offset before it (the stream buffer dropped chunks).
        let amount = u64::from(gap & 0x3f) * 7;
        let missing = if gap & 0x80 != 0 { amount } else { 0 };
        if gap & 0x40 != 0 {
            offsets[dir.index()] += amount;
        }
        ts += 1;
        let chunk = Chunk { ts_ns: ts, offset: offsets[dir.index()], data: payload.to_vec(), missing };
        offsets[dir.index()] += len as u64 + missing;
        check(session.push(dir, &chunk), &mut open, ts);
        if let Some(r) = role {
            assert_eq!(session.requests_from(), Some(r));
        }
    }
    ts += 1;
    check(session.close(ts), &mut open, ts);
    assert!(open.is_empty(), "streams never ended: {open:?}");
});
