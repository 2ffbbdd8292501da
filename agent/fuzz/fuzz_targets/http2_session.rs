//! Arbitrary bytes, split into syscall-sized chunks with arbitrary gaps and
//! offset jumps (the same input format as `http2_frames`), through an HTTP/2
//! session of either role, from the start or joined midway. Nothing may
//! panic; every stream that starts ends exactly once (at the latest at the
//! close); heads keep their bounds and capture only what was opted in;
//! timestamps stay in order.
#![no_main]

use std::{collections::HashSet, sync::Arc};

use agent::{
    protocols::{
        http1::Capture,
        http2::session::{Head, Known, MAX_CAPTURED, MAX_STREAMS, MAX_VALUE, Output, Session},
    },
};
use libfuzzer_sys::fuzz_target;

mod steps;
use steps::Steps;

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
    let Some((&control, rest)) = data.split_first() else { return };
    let role = steps::role(control);
    let from_start = (control / 3) % 2 == 1;
    let capture = Capture {
        headers: Arc::from(CAPTURE.map(String::from).to_vec()),
        body_bytes: 0,
    };
    let mut session = Session::new(role, from_start, capture);
    let mut open = HashSet::new();
    let mut steps = Steps::new(rest);
    while let Some((dir, chunk)) = steps.next() {
        let ts = steps.ts;
        check(session.push(dir, &chunk), &mut open, ts);
        if let Some(r) = role {
            assert_eq!(session.requests_from(), Some(r));
        }
    }
    let ts = steps.ts + 1;
    check(session.close(ts), &mut open, ts);
    assert!(open.is_empty(), "streams never ended: {open:?}");
});
