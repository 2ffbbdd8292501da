//! The input format the HTTP/2 targets share: a control byte, then steps
//! `[direction|len][gap][len bytes of payload]` that become one direction's
//! next syscall chunk. Gap byte: top bit = bytes missing after the chunk,
//! next bit = a jump in the offset before it (the stream buffer dropped
//! chunks), low six bits × 7 = how many.

#![allow(dead_code, reason = "each target uses the part it needs")]

use agent::{capture::Direction, conn::Chunk};

/// The session role a control byte picks: unknown, server or client.
pub fn role(control: u8) -> Option<Direction> {
    match control % 3 {
        0 => None,
        1 => Some(Direction::Ingress),
        _ => Some(Direction::Egress),
    }
}

/// The chunks of the steps, with increasing timestamps from 1.
pub struct Steps<'a> {
    rest: &'a [u8],
    offsets: [u64; 2],
    /// Timestamp of the last chunk.
    pub ts: u64,
}

impl<'a> Steps<'a> {
    pub fn new(rest: &'a [u8]) -> Steps<'a> {
        Steps { rest, offsets: [0; 2], ts: 0 }
    }
}

impl Iterator for Steps<'_> {
    type Item = (Direction, Chunk);

    fn next(&mut self) -> Option<(Direction, Chunk)> {
        let [header, gap, tail @ ..] = self.rest else { return None };
        let dir = if header & 0x80 != 0 { Direction::Egress } else { Direction::Ingress };
        let len = usize::from(header & 0x7f).min(tail.len());
        let (payload, next) = tail.split_at(len);
        self.rest = next;
        let amount = u64::from(gap & 0x3f) * 7;
        let missing = if gap & 0x80 != 0 { amount } else { 0 };
        let offset = &mut self.offsets[dir.index()];
        if gap & 0x40 != 0 {
            *offset += amount;
        }
        self.ts += 1;
        let chunk = Chunk { ts_ns: self.ts, offset: *offset, data: payload.to_vec(), missing };
        *offset += len as u64 + missing;
        Some((dir, chunk))
    }
}
