//! Connections whose bytes are TLS records: ciphertext, never parsed.
//!
//! Their plaintext arrives separately, from a TLS library's probes (records
//! flagged `TLS`, see `crate::tls`), and restarts the connection's parsing
//! (`conn::table`). Until then the ciphertext is held here, unread, rather
//! than declared opaque: an opaque socket's syscalls are skipped in the
//! kernel, and the first TLS call's syscall is what ties the library's
//! plaintext to this socket. A connection whose plaintext never comes (the
//! library is not one the agent probes: Node's built-in OpenSSL, BoringSSL,
//! rustls, Java, a stripped Go binary) is given up after a handshake's worth
//! of records and counted as "TLS not visible" for its executable. The
//! kernel then skips its ciphertext but not its plaintext, should the
//! library be probed after all (a program probed only after its handshake).

use super::{ConnInfo, Context, Flow, Module, Upgrade};
use crate::{capture::Direction, conn::Chunk, spans::Span};

/// Records seen without plaintext before the connection is given up on: a
/// full handshake takes four or five per side.
const MAX_CHUNKS: u32 = 16;

/// TLS 1.0–1.3 record header (RFC 8446 §5.1): handshake (22), change cipher
/// spec (20), alert (21) or application data (23), version 3.x, a length
/// within the record limit (2^14 plus expansion).
pub fn is_tls_record(bytes: &[u8]) -> bool {
    match bytes {
        [20..=23, 3, 0..=4, hi, lo, ..] => {
            let len = u16::from_be_bytes([*hi, *lo]);
            len > 0 && usize::from(len) <= (1 << 14) + 2048
        }
        _ => false,
    }
}

pub struct Tls;

impl Module for Tls {
    fn detects(&self, _conn: &ConnInfo, _direction: Direction, chunk: &Chunk) -> bool {
        // A connection starts with a handshake record (ClientHello or, seen
        // from a server joined late, anything): only 22 opens one.
        chunk.data.first() == Some(&22) && is_tls_record(&chunk.data)
    }

    fn open(&self, conn: &ConnInfo, _first: &Chunk, cx: &mut Context) -> Box<dyn Flow> {
        // Its plaintext may come from OpenSSL linked into the program itself.
        if let Some(tls) = &cx.tls {
            tls.look_at_executable(conn.key.tgid);
        }
        Box::new(Ciphertext::default())
    }
}

#[derive(Debug, Default)]
struct Ciphertext {
    chunks: u32,
    given_up: bool,
}

impl Flow for Ciphertext {
    fn data(
        &mut self,
        conn: &ConnInfo,
        _direction: Direction,
        _chunk: Chunk,
        _tid: u32,
        cx: &mut Context,
        _out: &mut Vec<Span>,
    ) -> Option<Upgrade> {
        self.chunks += 1;
        if self.chunks > MAX_CHUNKS && !self.given_up {
            self.given_up = true;
            let resource = cx.discovery.resource(conn.key.tgid, &conn.comm);
            cx.self_metrics.tls_not_visible(&resource.executable_name);
        }
        None
    }

    fn gives_up(&self) -> bool {
        self.given_up
    }

    fn ciphertext(&self) -> bool {
        true
    }

    fn close(&mut self, _conn: &ConnInfo, _tid: u32, _cx: &mut Context, _out: &mut Vec<Span>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_records_are_recognised_and_http_is_not() {
        // A ClientHello's record header.
        assert!(is_tls_record(&[22, 3, 1, 0x02, 0x00, 1, 0, 1, 0xfc]));
        assert!(is_tls_record(&[23, 3, 3, 0x40, 0x11]));
        assert!(!is_tls_record(b"GET / HTTP/1.1\r\n"));
        assert!(!is_tls_record(b"PRI * HTTP/2.0\r\n"));
        assert!(!is_tls_record(&[22, 3, 3, 0, 0]), "empty record");
        assert!(
            !is_tls_record(&[22, 3, 3, 0xff, 0xff]),
            "past the record limit"
        );
        assert!(!is_tls_record(&[22, 2, 0, 0, 5]), "SSL 2 style");
        assert!(!is_tls_record(&[22, 3]));
    }
}
