//! Arbitrary bytes through the DNS path: as one datagram (the UDP case) and as a
//! TCP stream cut into arbitrary chunks with arbitrary gaps. It must never panic,
//! and what parses must respect the agent's bounds.
#![no_main]

use agent::protocols::dns::{MAX_ANSWERS, TcpFramer, parse};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    if let Ok(m) = parse(bytes) {
        assert!(m.answers.len() <= MAX_ANSWERS);
        assert!(m.answers.len() <= m.answer_count);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut framer = TcpFramer::default();
    let mut rest = data;
    // Each step: [len byte][gap byte][len bytes].
    while let [len, gap, tail @ ..] = rest {
        let (chunk, next) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = next;
        let missing = if gap & 0x80 == 0 { 0 } else { u64::from(gap & 0x7f) };
        for message in framer.push(chunk, missing) {
            check(&message);
        }
    }
});
