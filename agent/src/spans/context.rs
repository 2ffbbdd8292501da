//! W3C Trace Context (`traceparent`, <https://www.w3.org/TR/trace-context/>) and
//! span id generation.

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

/// A parsed `traceparent` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub flags: u8,
}

fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Parses `version-traceid-parentid-flags`; rejects the invalid forms the spec
/// lists (version ff, all-zero ids, uppercase hex, wrong lengths).
pub fn parse_traceparent(value: &str) -> Option<TraceParent> {
    let mut parts = value.trim().split('-');
    let version = hex::<1>(parts.next()?)?[0];
    let trace_id = hex::<16>(parts.next()?)?;
    let parent_id = hex::<8>(parts.next()?)?;
    let flags = hex::<1>(parts.next()?)?[0];
    let extra = parts.next();
    if version == 0xff || (version == 0 && extra.is_some()) {
        return None;
    }
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        flags,
    })
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Random ids from a per-agent xorshift generator seeded from the kernel's RNG:
/// ids need to be unique, not unpredictable.
#[derive(Debug)]
pub struct IdGenerator {
    state: u64,
}

impl Default for IdGenerator {
    fn default() -> Self {
        let mut seed = [0u8; 8];
        let ok = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
            .is_ok();
        let seed = if ok {
            u64::from_ne_bytes(seed)
        } else {
            crate::clock::monotonic_ns()
        };
        IdGenerator { state: seed | 1 }
    }
}

impl IdGenerator {
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn span_id(&mut self) -> SpanId {
        loop {
            let id = self.next().to_be_bytes();
            if id != [0; 8] {
                return id;
            }
        }
    }

    pub fn trace_id(&mut self) -> TraceId {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.span_id());
        id[8..].copy_from_slice(&self.span_id());
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_traceparents_and_rejects_invalid_ones() {
        let tp =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(to_hex(&tp.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(to_hex(&tp.parent_id), "00f067aa0ba902b7");
        assert_eq!(tp.flags, 1);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        // Future versions may carry more fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
    }

    #[test]
    fn ids_are_non_zero_and_distinct() {
        let mut g = IdGenerator::default();
        let ids: std::collections::HashSet<SpanId> = (0..10_000).map(|_| g.span_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert_ne!(g.trace_id(), [0; 16]);
    }
}
