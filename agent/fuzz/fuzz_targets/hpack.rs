//! Arbitrary bytes as a sequence of header blocks, each decoded by a decoder
//! that saw the connection start and by one attached mid-stream, with SETTINGS
//! changes, size limits and capture gaps (epochs) in between. Neither may
//! panic, both keep their tables within bounds, and the mid-stream decoder may
//! know less than the other but never something different.
#![no_main]

use agent::protocols::http2::hpack::{Decoder, Field};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut full = Decoder::new();
    let mut mid = Decoder::new_midstream();
    let mut rest = data;
    // Each step: [control][len][len bytes of block].
    while let [control, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (block, next) = tail.split_at(len);
        rest = next;
        match control % 8 {
            0 => {
                let limit = u32::from(control / 8) * 512;
                full.set_max_table_size(limit);
                mid.set_max_table_size(limit);
            }
            1 => mid.reset_epoch(),
            _ => {}
        }
        let a = full.decode(block);
        let b = mid.decode(block);
        for d in [&full, &mid] {
            assert!(d.table_size() <= d.table_limit());
        }
        assert!(a.fields.len() <= agent::protocols::http2::hpack::MAX_FIELDS);
        // While the full decoder is in its first epoch (it saw everything),
        // whatever the mid-stream one claims to know must agree with it.
        if full.epoch() == 0 && a.fields.len() == b.fields.len() && a.error.is_none() {
            for (x, y) in a.fields.iter().zip(&b.fields) {
                agrees(x, y);
            }
        }
    }
});

fn agrees(full: &Field, mid: &Field) {
    if let (Some(x), Some(y)) = (&full.name, &mid.name) {
        assert_eq!(x, y);
    }
    if let (Some(x), Some(y)) = (&full.value, &mid.value) {
        assert_eq!(x, y);
    }
}
