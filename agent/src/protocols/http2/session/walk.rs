//! Counting gRPC messages in one direction of a stream.

/// Counts gRPC Length-Prefixed-Messages (gRPC `doc/PROTOCOL-HTTP2.md`: a
/// compressed-flag byte, a 4-byte big-endian length, the message) through
/// one direction's DATA, by position: the walk jumps from
/// prefix to prefix and only needs the bytes of the prefixes. A prefix byte
/// that was not captured makes the count unknown for the rest of the stream.
#[derive(Clone, Debug)]
pub(super) struct Walk {
    /// `None`: a prefix byte was not seen.
    count: Option<u64>,
    /// Position (in this direction's data of the stream) of the current DATA
    /// frame's first data byte.
    base: u64,
    /// Bytes before this position were seen or are known holes.
    seen: u64,
    /// Position of the next message prefix.
    next: u64,
    /// Prefix bytes of the next message read so far (0 to 4).
    have: u8,
    /// The length bytes read so far.
    len: [u8; 4],
}

impl Walk {
    /// A walk from the first data byte of the direction.
    pub(super) fn new() -> Walk {
        Walk {
            count: Some(0),
            base: 0,
            seen: 0,
            next: 0,
            have: 0,
            len: [0; 4],
        }
    }

    /// A walk that cannot count (data of this direction was missed).
    pub(super) fn lost() -> Walk {
        Walk {
            count: None,
            ..Walk::new()
        }
    }

    pub(super) fn lose(&mut self) {
        self.count = None;
    }

    pub(super) fn count(&self) -> Option<u64> {
        self.count
    }

    /// Position of the next prefix byte wanted.
    fn want(&self) -> u64 {
        self.next.saturating_add(u64::from(self.have))
    }

    /// Captured bytes at `at` in the current DATA frame's data.
    pub(super) fn bytes(&mut self, at: u32, bytes: &[u8]) {
        let Some(mut count) = self.count else {
            return;
        };
        let start = self.base.saturating_add(u64::from(at));
        let end = start.saturating_add(bytes.len() as u64);
        if (self.seen..start).contains(&self.want()) {
            self.count = None;
            return;
        }
        loop {
            let q = self.want();
            if q >= end || q < start {
                break;
            }
            let Some(&byte) = usize::try_from(q - start).ok().and_then(|i| bytes.get(i)) else {
                break;
            };
            if let Some(slot) = usize::from(self.have)
                .checked_sub(1)
                .and_then(|i| self.len.get_mut(i))
            {
                *slot = byte;
            }
            self.have += 1;
            if self.have == 5 {
                count = count.saturating_add(1);
                let len = u64::from(u32::from_be_bytes(self.len));
                self.next = q.saturating_add(1).saturating_add(len);
                self.have = 0;
            }
        }
        self.count = Some(count);
        self.seen = self.seen.max(end);
    }

    /// The current DATA frame ended with `len` data bytes (`exact`: the
    /// length is known, see [`crate::protocols::http2::frame::Body::Data`]).
    pub(super) fn frame(&mut self, len: u32, exact: bool) {
        let end = self.base.saturating_add(u64::from(len));
        if !exact || (self.seen..end).contains(&self.want()) {
            self.count = None;
        }
        self.base = end;
        self.seen = end;
    }
}
