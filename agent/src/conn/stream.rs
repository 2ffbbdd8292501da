//! One direction of a connection: the captured bytes in order, as chunks (one per
//! syscall or datagram) with their kernel timestamps, ready for protocol parsers.
//!
//! Bounded: when the buffered bytes would exceed the cap, the oldest chunks are
//! dropped (and counted) — a parser that has fallen that far behind resynchronises.
//! Bytes the kernel did not capture (beyond the capture cap) are recorded as a gap
//! after the chunk, never invented.

use std::collections::VecDeque;

/// Bytes moved by one syscall (or one datagram of `sendmmsg`/`recvmmsg`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// CLOCK_MONOTONIC ns at syscall exit.
    pub ts_ns: u64,
    /// Position of the first byte in this direction's byte sequence.
    pub offset: u64,
    /// The captured prefix.
    pub data: Vec<u8>,
    /// Bytes the syscall moved after `data` that were not captured.
    pub missing: u64,
}

#[derive(Debug)]
pub struct Stream {
    chunks: VecDeque<Chunk>,
    buffered: usize,
    cap: usize,
    /// Bytes the application moved in this direction so far.
    total: u64,
}

impl Stream {
    pub fn new(cap: usize) -> Stream {
        Stream {
            chunks: VecDeque::new(),
            buffered: 0,
            cap,
            total: 0,
        }
    }

    /// Appends one syscall's capture (`data`, a prefix of the `moved` bytes),
    /// taking the buffer as it is (no copy). Returns how many buffered bytes
    /// were dropped to stay under the cap.
    pub fn push(&mut self, ts_ns: u64, mut data: Vec<u8>, moved: u64) -> u64 {
        let moved = moved.max(data.len() as u64);
        data.truncate(self.cap);
        let mut dropped = 0u64;
        while self.buffered + data.len() > self.cap {
            let Some(old) = self.chunks.pop_front() else {
                break;
            };
            self.buffered -= old.data.len();
            dropped += old.data.len() as u64;
        }
        self.buffered += data.len();
        self.chunks.push_back(Chunk {
            ts_ns,
            offset: self.total,
            missing: moved - data.len() as u64,
            data,
        });
        self.total += moved;
        dropped
    }

    /// Takes the oldest chunk (parsers consume in order).
    pub fn pop(&mut self) -> Option<Chunk> {
        let chunk = self.chunks.pop_front()?;
        self.buffered -= chunk.data.len();
        Some(chunk)
    }

    pub fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.chunks.iter()
    }

    /// Captured bytes currently held.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Bytes the application moved in this direction since tracking started.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_chunks_in_order_with_offsets_and_gaps() {
        let mut s = Stream::new(1024);
        assert_eq!(s.push(1, b"GET / HTTP/1.1\r\n".to_vec(), 16), 0);
        assert_eq!(s.push(2, b"abcd".to_vec(), 10), 0); // truncated: 6 bytes missing
        assert_eq!(s.push(3, b"z".to_vec(), 1), 0);
        let chunks: Vec<_> = s.chunks().cloned().collect();
        assert_eq!(chunks[1].offset, 16);
        assert_eq!(chunks[1].missing, 6);
        assert_eq!(chunks[2].offset, 26);
        assert_eq!(s.total(), 27);
        assert_eq!(s.buffered(), 21);
        assert_eq!(s.pop().unwrap().ts_ns, 1);
        assert_eq!(s.buffered(), 5);
    }

    #[test]
    fn drops_oldest_chunks_beyond_the_cap() {
        let mut s = Stream::new(10);
        s.push(1, b"aaaa".to_vec(), 4);
        s.push(2, b"bbbb".to_vec(), 4);
        assert_eq!(s.push(3, b"cccc".to_vec(), 4), 4);
        assert_eq!(s.buffered(), 8);
        assert_eq!(s.chunks().next().unwrap().data, b"bbbb");
        // A single chunk larger than the cap keeps its first `cap` bytes.
        assert_eq!(s.push(4, vec![b'x'; 30], 30), 8);
        assert_eq!(s.buffered(), 10);
        assert_eq!(s.chunks().next().unwrap().missing, 20);
        assert_eq!(s.total(), 42);
    }
}
