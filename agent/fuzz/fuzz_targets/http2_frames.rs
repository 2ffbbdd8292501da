//! Arbitrary bytes, split into syscall-sized chunks with arbitrary gaps and
//! offset jumps, through the HTTP/2 frame reader of both directions and their
//! HPACK decoders, wired the way the agent will wire them: SETTINGS of one
//! direction bound the other direction's decoder, lost blocks and lost framing
//! start a new epoch. Nothing may panic, and the outputs keep their bounds.
#![no_main]

use agent::{
    protocols::http2::{
        frame::{Body, Event, FrameReader, MAX_HEADER_BLOCK},
        hpack::Decoder,
    },
};
use libfuzzer_sys::fuzz_target;

mod steps;
use steps::Steps;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    let mut readers = match control % 3 {
        0 => [FrameReader::client(), FrameReader::server()],
        1 => [FrameReader::midstream(), FrameReader::midstream()],
        _ => [FrameReader::client(), FrameReader::midstream()],
    };
    let mut decoders = if control % 3 == 0 {
        [Decoder::new(), Decoder::new()]
    } else {
        [Decoder::new_midstream(), Decoder::new_midstream()]
    };
    let mut events = Vec::new();
    let mut steps = Steps::new(rest);
    while let Some((direction, chunk)) = steps.next() {
        let (dir, ts) = (direction.index(), steps.ts);
        events.clear();
        readers[dir].push(&chunk, &mut events);
        for e in &events {
            if e.loses_hpack_state() {
                decoders[dir].reset_epoch();
            }
            let Event::Frame(f) = e else { continue };
            assert!(f.start_ns <= f.end_ns);
            assert!(f.end_ns <= ts);
            match &f.body {
                Body::Headers { block, .. } | Body::PushPromise { block, .. } => {
                    assert!(block.len() <= MAX_HEADER_BLOCK);
                    let out = decoders[dir].decode(block);
                    assert!(out.fields.len() <= agent::protocols::http2::hpack::MAX_FIELDS);
                }
                Body::Settings(s) => {
                    if let Some(size) = s.header_table_size {
                        decoders[1 - dir].set_max_table_size(size);
                    }
                    if let Some(size) = s.max_frame_size {
                        readers[1 - dir].set_max_frame_size(size);
                    }
                }
                _ => {}
            }
        }
        for d in &decoders {
            assert!(d.table_size() <= d.table_limit());
        }
    }
});
