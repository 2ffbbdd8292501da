//! The connection table: bounded (LRU), keyed by (tgid, fd, connection id) so a
//! reused fd number is a new connection, with an index by (tgid, fd) so that a
//! connection whose close was missed is replaced rather than resurrected.
//!
//! Memory is bounded twice: each stream holds at most `stream_cap` bytes, and all
//! streams together at most `budget` bytes. Over the budget, a new chunk first
//! pushes out its own stream's oldest bytes and is otherwise not kept (counted as
//! dropped): O(1), and a busy connection cannot grow the total.

use std::{collections::HashMap, net::SocketAddr, num::NonZeroUsize};

use agent_common::flags;
use lru::LruCache;
use serde::Serialize;

use super::{Stream, Transport};
use crate::capture::{Direction, Event, EventKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ConnKey {
    pub tgid: u32,
    pub fd: i32,
    pub conn_id: u64,
}

/// Which end of the connection the traced process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// It accepted the connection.
    Server,
    /// It connected.
    Client,
    /// Not known yet (socket discovered through a data syscall).
    Unknown,
}

impl Role {
    pub fn from_flags(bits: u32) -> Role {
        if bits & flags::ROLE_SERVER != 0 {
            Role::Server
        } else if bits & flags::ROLE_CLIENT != 0 {
            Role::Client
        } else {
            Role::Unknown
        }
    }
}

#[derive(Debug)]
pub struct Conn {
    pub key: ConnKey,
    pub role: Role,
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub transport: Option<Transport>,
    pub comm: crate::capture::Comm,
    /// Opened before the agent started.
    pub preexisting: bool,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Indexed by [`Direction::index`].
    pub streams: [Stream; 2],
    /// What the connection carries and its parser state.
    pub protocol: crate::flows::Protocol,
    /// The kernel was told to skip this connection's data (flag `OPAQUE`).
    pub kernel_opaque: bool,
    /// The kernel was told to walk this connection's HTTP/2 frames (flag `FRAMES`).
    pub kernel_frames: bool,
    /// Its streams hold a TLS library's plaintext (`flags::TLS` records), not
    /// the socket's bytes.
    pub tls: bool,
}

impl Conn {
    pub fn stream(&self, direction: Direction) -> &Stream {
        &self.streams[direction.index()]
    }

    pub fn stream_mut(&mut self, direction: Direction) -> &mut Stream {
        &mut self.streams[direction.index()]
    }
}

/// A frame skeleton (`flags::SPARSE`: segments `[u32 offset][u32 len]` +
/// bytes) as consecutive pieces of the syscall's `moved` bytes: each piece's
/// captured bytes and how many bytes it spans (up to the next segment), a
/// leading piece with no bytes when the first segment starts later. A
/// malformed record ends the pieces with one gap to the end.
fn segments(payload: &[u8], moved: u64) -> Vec<(Vec<u8>, u64)> {
    let mut parsed: Vec<(u64, &[u8])> = Vec::new();
    let mut rest = payload;
    while let Some((head, tail)) = rest.split_first_chunk::<8>() {
        let [o0, o1, o2, o3, l0, l1, l2, l3] = *head;
        let offset = u64::from(u32::from_le_bytes([o0, o1, o2, o3]));
        let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
        let Some(bytes) = tail.get(..len) else { break };
        if parsed
            .last()
            .is_some_and(|(at, b)| at + b.len() as u64 > offset)
            || offset > moved
        {
            break;
        }
        parsed.push((offset, bytes));
        rest = &tail[len..];
    }
    let mut pieces = Vec::with_capacity(parsed.len() + 1);
    match parsed.first() {
        Some((first, _)) if *first > 0 => pieces.push((Vec::new(), *first)),
        None => pieces.push((Vec::new(), moved)),
        Some(_) => {}
    }
    for (i, (offset, bytes)) in parsed.iter().enumerate() {
        let end = parsed.get(i + 1).map_or(moved, |(next, _)| *next);
        pieces.push((
            bytes.to_vec(),
            end.saturating_sub(*offset).max(bytes.len() as u64),
        ));
    }
    pieces
}

/// What applying an event did.
#[derive(Debug, Default)]
pub struct Applied {
    /// A connection was created (its addresses may need resolving).
    pub created: bool,
    /// A connection was pushed out because the table was full.
    pub evicted: bool,
    /// Stream bytes dropped to stay within the per-stream bound.
    pub stream_bytes_dropped: u64,
    /// The connection was closed and removed.
    pub closed: Option<Conn>,
}

pub struct ConnTable {
    conns: LruCache<ConnKey, Conn>,
    by_fd: HashMap<(u32, i32), u64>,
    stream_cap: usize,
    budget: usize,
    /// Bytes held by all streams.
    buffered: usize,
}

impl ConnTable {
    pub fn new(max_connections: usize, stream_cap: usize, budget: usize) -> ConnTable {
        ConnTable {
            conns: LruCache::new(NonZeroUsize::new(max_connections).unwrap_or(NonZeroUsize::MIN)),
            by_fd: HashMap::new(),
            stream_cap,
            budget,
            buffered: 0,
        }
    }

    /// Bytes held by all streams.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn get(&self, key: &ConnKey) -> Option<&Conn> {
        self.conns.peek(key)
    }

    pub fn get_mut(&mut self, key: &ConnKey) -> Option<&mut Conn> {
        self.conns.peek_mut(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Conn> {
        self.conns.iter().map(|(_, c)| c)
    }

    /// Updates the table with one event.
    pub fn apply(&mut self, event: &mut Event) -> Applied {
        let key = ConnKey {
            tgid: event.tgid,
            fd: event.fd,
            conn_id: event.conn_id,
        };
        let mut applied = Applied::default();
        if event.kind == EventKind::Close {
            applied.closed = self.remove(&key);
            return applied;
        }
        if !self.conns.contains(&key) {
            self.insert(key, event, &mut applied);
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            return applied;
        };
        conn.last_ns = event.ts_ns;
        if event.direction.is_some() {
            let tls = event.flags & flags::TLS != 0;
            // The first plaintext: the ciphertext seen so far (the handshake)
            // and whatever parser looked at it are dropped, and the
            // connection is parsed again from the plaintext's start. The same
            // after plaintext the kernel knows it missed (`TLS_RESYNC`): what
            // was buffered may lack a request or a response, and parsing on
            // would pair the wrong ones.
            if tls && (!conn.tls || event.flags & flags::TLS_RESYNC != 0) {
                // The kernel dropped an opaque mark made on the ciphertext
                // (see its `tls::mark_tls`): the plaintext may need its own.
                if !conn.tls {
                    conn.kernel_opaque = false;
                }
                conn.tls = true;
                for stream in &mut conn.streams {
                    self.buffered -= stream.buffered();
                    *stream = Stream::new(self.stream_cap);
                }
                conn.protocol = crate::flows::Protocol::default();
            } else if !tls && conn.tls {
                // Ciphertext already in flight when the kernel marked the
                // socket: not part of the plaintext stream.
                return applied;
            }
        }
        if let Some(direction) = event.direction {
            let moved = u64::try_from(event.bytes).unwrap_or(0);
            let stream = &mut conn.streams[direction.index()];
            let len = event.payload.len();
            let mut dropped = 0;
            // Over the global budget: make room in this stream first.
            while self.buffered + len > self.budget {
                let Some(old) = stream.pop() else { break };
                self.buffered -= old.data.len();
                dropped += old.data.len() as u64;
            }
            let before = stream.buffered();
            if self.buffered + len <= self.budget {
                let payload = std::mem::take(&mut event.payload);
                if event.flags & agent_common::flags::SPARSE != 0 {
                    for (data, span) in segments(&payload, moved) {
                        dropped += stream.push(event.ts_ns, data, span);
                    }
                } else {
                    dropped += stream.push(event.ts_ns, payload, moved);
                }
            } else {
                // No room at all: keep the byte count, not the bytes.
                dropped += len as u64;
                stream.push(event.ts_ns, Vec::new(), moved);
            }
            self.buffered = self.buffered + stream.buffered() - before;
            applied.stream_bytes_dropped = dropped;
            // Unconnected UDP: each datagram names its peer.
            if event.addr.is_some() && conn.peer != event.addr {
                conn.peer = event.addr;
            }
        }
        applied
    }

    fn insert(&mut self, key: ConnKey, event: &Event, applied: &mut Applied) {
        // A different connection on the same fd: its close was missed.
        if let Some(old_id) = self.by_fd.get(&(key.tgid, key.fd)).copied()
            && old_id != key.conn_id
        {
            self.remove(&ConnKey {
                conn_id: old_id,
                ..key
            });
        }
        let conn = Conn {
            key,
            role: Role::from_flags(event.flags),
            peer: event.addr,
            local: None,
            transport: None,
            comm: event.comm,
            preexisting: event.flags & flags::PREEXISTING != 0,
            first_ns: event.ts_ns,
            last_ns: event.ts_ns,
            streams: [Stream::new(self.stream_cap), Stream::new(self.stream_cap)],
            protocol: crate::flows::Protocol::default(),
            kernel_opaque: false,
            kernel_frames: false,
            tls: false,
        };
        if let Some((old_key, old)) = self.conns.push(key, conn)
            && old_key != key
        {
            self.by_fd.remove(&(old_key.tgid, old_key.fd));
            self.buffered -= old.streams.iter().map(Stream::buffered).sum::<usize>();
            applied.evicted = true;
        }
        self.by_fd.insert((key.tgid, key.fd), key.conn_id);
        applied.created = true;
    }

    /// Takes the chunks buffered in one direction of a connection, for parsing.
    pub fn take_chunks(&mut self, key: &ConnKey, direction: Direction) -> Vec<super::Chunk> {
        let Some(conn) = self.conns.peek_mut(key) else {
            return Vec::new();
        };
        let stream = &mut conn.streams[direction.index()];
        self.buffered -= stream.buffered();
        std::iter::from_fn(|| stream.pop()).collect()
    }

    pub fn remove(&mut self, key: &ConnKey) -> Option<Conn> {
        let conn = self.conns.pop(key)?;
        self.buffered -= conn.streams.iter().map(Stream::buffered).sum::<usize>();
        if self.by_fd.get(&(key.tgid, key.fd)) == Some(&key.conn_id) {
            self.by_fd.remove(&(key.tgid, key.fd));
        }
        Some(conn)
    }
}

#[cfg(test)]
mod tests {
    fn segment(offset: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = offset.to_le_bytes().to_vec();
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn frame_skeletons_become_pieces_with_their_gaps() {
        let record = [segment(0, b"hdr"), segment(10, b"blk"), segment(40, b"x")].concat();
        assert_eq!(
            super::segments(&record, 100),
            vec![
                (b"hdr".to_vec(), 10),
                (b"blk".to_vec(), 30),
                (b"x".to_vec(), 60)
            ]
        );
        // A skeleton starting inside a payload: a leading gap.
        let record = segment(7, b"h");
        assert_eq!(
            super::segments(&record, 20),
            vec![(Vec::new(), 7), (b"h".to_vec(), 13)]
        );
        // Malformed: overlapping, past the end, or cut: what precedes is kept.
        let record = [segment(0, b"abcd"), segment(2, b"zz")].concat();
        assert_eq!(super::segments(&record, 10), vec![(b"abcd".to_vec(), 10)]);
        assert_eq!(
            super::segments(&segment(50, b"a"), 10),
            vec![(Vec::new(), 10)]
        );
        let mut cut = segment(0, b"abcdef");
        cut.truncate(10);
        assert_eq!(super::segments(&cut, 6), vec![(Vec::new(), 6)]);
        assert_eq!(super::segments(&[], 6), vec![(Vec::new(), 6)]);
    }

    use agent_common::Syscall;

    use super::*;

    fn event(kind: EventKind, fd: i32, conn_id: u64) -> Event {
        Event {
            kind,
            ts_ns: 1,
            tgid: 10,
            tid: 11,
            fd,
            conn_id,
            syscall: Syscall::Write,
            direction: (kind == EventKind::Data).then_some(Direction::Egress),
            bytes: 3,
            payload: b"abc".to_vec(),
            flags: if kind == EventKind::Accept {
                flags::ROLE_SERVER
            } else {
                0
            },
            addr: Some("127.0.0.1:80".parse().unwrap()),
            comm: "srv".into(),
            trace: None,
        }
    }

    fn key(fd: i32, conn_id: u64) -> ConnKey {
        ConnKey {
            tgid: 10,
            fd,
            conn_id,
        }
    }

    #[test]
    fn accept_data_close_lifecycle() {
        let mut t = ConnTable::new(8, 1024, 1 << 20);
        assert!(t.apply(&mut event(EventKind::Accept, 5, 100)).created);
        assert!(!t.apply(&mut event(EventKind::Data, 5, 100)).created);
        let conn = t.get(&key(5, 100)).unwrap();
        assert_eq!(conn.role, Role::Server);
        assert_eq!(conn.stream(Direction::Egress).total(), 3);
        assert_eq!(t.take_chunks(&key(5, 100), Direction::Egress).len(), 1);
        assert_eq!(t.buffered(), 0);
        let closed = t
            .apply(&mut event(EventKind::Close, 5, 100))
            .closed
            .unwrap();
        assert_eq!(closed.key, key(5, 100));
        assert!(t.is_empty());
    }

    #[test]
    fn plaintext_restarts_the_streams_and_so_does_a_resync() {
        let mut t = ConnTable::new(8, 1024, 1 << 20);
        t.apply(&mut event(EventKind::Accept, 5, 100));
        let data = |extra: u32| {
            let mut e = event(EventKind::Data, 5, 100);
            e.flags |= extra;
            e
        };
        // Handshake ciphertext, then the first plaintext replaces it.
        t.apply(&mut data(0));
        t.apply(&mut data(flags::TLS));
        let total = |t: &ConnTable| {
            t.get(&key(5, 100))
                .unwrap()
                .stream(Direction::Egress)
                .total()
        };
        assert_eq!(total(&t), 3);
        assert!(t.get(&key(5, 100)).unwrap().tls);
        // Ciphertext in flight after that is not part of the plaintext.
        t.apply(&mut data(0));
        t.apply(&mut data(flags::TLS));
        assert_eq!(total(&t), 6);
        // Bytes were missed before this record: parsing starts over at it.
        t.apply(&mut data(flags::TLS | flags::TLS_RESYNC));
        assert_eq!(total(&t), 3);
        assert_eq!(t.buffered(), 3);
    }

    #[test]
    fn reused_fd_is_a_new_connection_and_replaces_the_stale_one() {
        let mut t = ConnTable::new(8, 1024, 1 << 20);
        t.apply(&mut event(EventKind::Accept, 5, 100));
        // Close missed; the fd comes back with a new connection id.
        assert!(t.apply(&mut event(EventKind::Accept, 5, 200)).created);
        assert_eq!(t.len(), 1);
        assert!(t.get(&key(5, 100)).is_none());
        assert!(t.get(&key(5, 200)).is_some());
        // A late close of the old connection does not touch the new one.
        assert!(
            t.apply(&mut event(EventKind::Close, 5, 100))
                .closed
                .is_none()
        );
        assert!(t.get(&key(5, 200)).is_some());
    }

    #[test]
    fn bounded_with_lru_eviction() {
        let mut t = ConnTable::new(2, 1024, 1 << 20);
        t.apply(&mut event(EventKind::Accept, 1, 1));
        t.apply(&mut event(EventKind::Accept, 2, 2));
        t.apply(&mut event(EventKind::Data, 1, 1)); // 1 is now most recent
        let applied = t.apply(&mut event(EventKind::Accept, 3, 3));
        assert!(applied.evicted);
        assert_eq!(t.len(), 2);
        assert!(t.get(&key(2, 2)).is_none());
        assert!(t.get(&key(1, 1)).is_some());
        // The evicted fd's index entry is gone, so fd 2 can start fresh.
        assert!(t.apply(&mut event(EventKind::Data, 2, 9)).created);
    }

    #[test]
    fn all_streams_together_stay_within_the_budget() {
        let mut t = ConnTable::new(8, 1024, 8);
        // 3 bytes each; the table takes each event's payload.
        let data = |fd| event(EventKind::Data, fd, fd as u64);
        t.apply(&mut data(1));
        t.apply(&mut data(1));
        assert_eq!(t.buffered(), 6);
        // 6 + 3 > 8 and fd 2 has nothing to give: the payload is not kept.
        assert_eq!(t.apply(&mut data(2)).stream_bytes_dropped, 3);
        assert_eq!(t.buffered(), 6);
        let conn = t.get(&key(2, 2)).unwrap();
        assert_eq!(conn.stream(Direction::Egress).total(), 3, "byte count kept");
        // fd 1 makes room in its own stream.
        assert_eq!(t.apply(&mut data(1)).stream_bytes_dropped, 3);
        assert_eq!(t.buffered(), 6);
        // Removing a connection returns its bytes to the budget.
        t.apply(&mut event(EventKind::Close, 1, 1));
        assert_eq!(t.buffered(), 0);
    }

    #[test]
    fn stream_bound_is_reported() {
        let mut t = ConnTable::new(2, 4, 1 << 20);
        t.apply(&mut event(EventKind::Data, 1, 1));
        let applied = t.apply(&mut event(EventKind::Data, 1, 1));
        assert_eq!(applied.stream_bytes_dropped, 3);
    }
}
