//! Arbitrary bytes, split into syscall-sized chunks in both directions with
//! arbitrary gaps, through the HTTP/1 session: it must never panic, and every
//! exchange it reports must be internally consistent.
#![no_main]

use agent::{
    capture::Direction,
    conn::Chunk,
    protocols::http1::Session,
};
use libfuzzer_sys::fuzz_target;

// The role byte is shared; HTTP/1 keeps its own step format.
mod steps;

fuzz_target!(|data: &[u8]| {
    let Some((&control, mut rest)) = data.split_first() else { return };
    let role = steps::role(control);
    let capture = agent::protocols::http1::Capture {
        headers: std::sync::Arc::from(vec!["x-request-id".to_string()]),
        body_bytes: 64,
    };
    let mut session = Session::new(role, capture);
    let mut ts = 0u64;
    let mut offsets = [0u64; 2];
    // Each step: [direction|len byte][gap byte][len bytes of payload].
    while let [header, gap, tail @ ..] = rest {
        let direction = if header & 0x80 == 0 { Direction::Ingress } else { Direction::Egress };
        let len = usize::from(header & 0x7f).min(tail.len());
        let missing = if gap & 0x80 == 0 { 0 } else { u64::from(gap & 0x7f) * 97 };
        let (payload, next) = tail.split_at(len);
        rest = next;
        ts += 1;
        let chunk = Chunk {
            ts_ns: ts,
            offset: offsets[direction.index()],
            data: payload.to_vec(),
            missing,
        };
        offsets[direction.index()] += len as u64 + missing;
        check(session.push(direction, &chunk));
    }
    check(session.close());
});

fn check(out: agent::protocols::http1::Output) {
    for e in out.exchanges {
        assert!(e.request_start_ns <= e.request_end_ns || e.request_end_ns == e.response_start_ns);
        assert!(e.response_start_ns <= e.response_end_ns);
        assert!(e.request_start_ns <= e.response_end_ns);
    }
}
