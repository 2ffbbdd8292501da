//! Decoding of ring buffer records into typed events.
//!
//! The kernel writes an [`EventHeader`] followed by `captured` payload bytes. Every
//! numeric code is checked here; a record that does not decode is an error the
//! caller counts, never a panic.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use agent_common::{EventHeader, SOCKADDR_BYTES, Syscall, TcpStateEvent, direction, flags, kind};
use serde::Serialize;

/// What happened on a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Application data moved through a syscall.
    Data,
    /// A connection was accepted (server side).
    Accept,
    /// A connection was initiated (client side).
    Connect,
    /// A tracked socket was closed.
    Close,
    /// A socket found open when the agent started (synthesised in userspace).
    Existing,
}

/// Direction of a data event, from the traced application's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Received from the peer (read, recv*).
    Ingress,
    /// Sent to the peer (write, send*).
    Egress,
}

impl Direction {
    pub const fn index(self) -> usize {
        match self {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        }
    }
}

/// A thread's `comm` (at most 15 bytes), kept inline: decoding an event
/// allocates nothing for it. Bytes that are not UTF-8 become `?`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Comm {
    bytes: [u8; 16],
    len: u8,
}

impl Comm {
    pub fn new(raw: &[u8]) -> Comm {
        let raw = &raw[..raw
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(raw.len())
            .min(16)];
        let mut bytes = [0u8; 16];
        bytes[..raw.len()].copy_from_slice(raw);
        if std::str::from_utf8(raw).is_err() {
            for b in &mut bytes[..raw.len()] {
                if !b.is_ascii() {
                    *b = b'?';
                }
            }
        }
        Comm {
            bytes,
            len: raw.len() as u8,
        }
    }

    pub fn as_str(&self) -> &str {
        // Valid by construction (see `new`); never empty-on-error in practice.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("?")
    }
}

impl std::ops::Deref for Comm {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Comm {
    fn from(s: &str) -> Comm {
        Comm::new(s.as_bytes())
    }
}

impl PartialEq<&str> for Comm {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One decoded kernel event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// CLOCK_MONOTONIC nanoseconds (see [`crate::clock`]).
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    pub conn_id: u64,
    pub syscall: Syscall,
    /// Data events only.
    pub direction: Option<Direction>,
    /// Data: bytes the syscall moved. Connect: its return value.
    pub bytes: i64,
    /// The captured prefix (at most the capture cap).
    pub payload: Vec<u8>,
    /// Raw [`agent_common::flags`] bits.
    pub flags: u32,
    /// Address passed to or returned by the syscall (peer for accept/connect/UDP).
    pub addr: Option<SocketAddr>,
    pub comm: Comm,
    /// The ids the kernel drew for the request this record starts (or, with
    /// `flags::PROFILED`, whose response it writes): see the kernel's `trace_ctx`.
    pub trace: Option<KernelIds>,
}

/// A request's ids as the kernel drew them (`traces_ctx_v1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

impl Event {
    /// Fewer bytes were captured than moved.
    pub fn truncated(&self) -> bool {
        self.flags & flags::TRUNCATED != 0
    }
}

/// A TCP state change (see `agent_common::TcpStateEvent`), addresses decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpState {
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub skaddr: u64,
    pub oldstate: u32,
    pub newstate: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// Any record of the ring buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Socket(Event),
    TcpState(TcpState),
    Log(LogWrite),
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than the event header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    Kind(u32),
    #[error("unknown address family {0}")]
    Family(u32),
    #[error("unknown syscall code {0}")]
    Syscall(u32),
    #[error("unknown direction {0}")]
    Direction(u32),
    #[error("header says {captured} payload bytes, record has {available}")]
    Payload { captured: u32, available: usize },
}

const HEADER_LEN: usize = size_of::<EventHeader>();

/// Decodes one ring buffer record of any kind.
pub fn decode_record(record: &[u8]) -> Result<Record, DecodeError> {
    let kind = record
        .get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(DecodeError::Short(record.len()))?;
    match kind {
        kind::TCP_STATE => decode_tcp_state(record).map(Record::TcpState),
        kind::LOG => decode_log(record).map(Record::Log),
        _ => decode(record).map(Record::Socket),
    }
}

/// A write to a logged process's stdout or stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogWrite {
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    /// 1 (stdout) or 2 (stderr).
    pub fd: i32,
    /// Bytes the write moved; `payload` holds the first of them.
    pub bytes: u64,
    pub payload: Vec<u8>,
    /// The request the writing thread was serving.
    pub trace: Option<KernelIds>,
}

fn decode_log(record: &[u8]) -> Result<LogWrite, DecodeError> {
    if record.len() < HEADER_LEN {
        return Err(DecodeError::Short(record.len()));
    }
    // SAFETY: as in `decode`.
    let header: EventHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let captured = header.captured as usize;
    let available = record.len() - HEADER_LEN;
    if captured > available {
        return Err(DecodeError::Payload {
            captured: header.captured,
            available,
        });
    }
    Ok(LogWrite {
        ts_ns: header.ts_ns,
        tgid: header.tgid,
        tid: header.tid,
        fd: header.fd,
        bytes: u64::try_from(header.bytes).unwrap_or(0),
        payload: record[HEADER_LEN..HEADER_LEN + captured].to_vec(),
        trace: (header.flags & flags::TRACE_CTX != 0).then_some(KernelIds {
            trace_id: header.trace_id,
            span_id: header.span_id,
        }),
    })
}

fn decode_tcp_state(record: &[u8]) -> Result<TcpState, DecodeError> {
    if record.len() < size_of::<TcpStateEvent>() {
        return Err(DecodeError::Short(record.len()));
    }
    // SAFETY: length checked; plain integers, unaligned read.
    let e: TcpStateEvent = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let addr = |bytes: [u8; 16], port: u16| -> Result<SocketAddr, DecodeError> {
        match i32::try_from(e.family).unwrap_or(-1) {
            libc::AF_INET => Ok(SocketAddr::new(
                Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into(),
                port,
            )),
            libc::AF_INET6 => Ok(crate::conn::procnet::normalize(SocketAddr::new(
                Ipv6Addr::from(bytes).into(),
                port,
            ))),
            _ => Err(DecodeError::Family(e.family)),
        }
    };
    Ok(TcpState {
        ts_ns: e.ts_ns,
        tgid: e.tgid,
        tid: e.tid,
        skaddr: e.skaddr,
        oldstate: e.oldstate,
        newstate: e.newstate,
        local: addr(e.saddr, e.sport)?,
        remote: addr(e.daddr, e.dport)?,
    })
}

/// Decodes one socket event record (header + payload).
pub fn decode(record: &[u8]) -> Result<Event, DecodeError> {
    if record.len() < HEADER_LEN {
        return Err(DecodeError::Short(record.len()));
    }
    // SAFETY: length checked above; EventHeader is plain integers (any bit pattern
    // is valid) and read_unaligned has no alignment requirement.
    let header: EventHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let kind = match header.kind {
        kind::DATA => EventKind::Data,
        kind::ACCEPT => EventKind::Accept,
        kind::CONNECT => EventKind::Connect,
        kind::CLOSE => EventKind::Close,
        other => return Err(DecodeError::Kind(other)),
    };
    let syscall = Syscall::try_from(header.syscall).map_err(DecodeError::Syscall)?;
    let direction = match (kind, header.direction) {
        (EventKind::Data, direction::INGRESS) => Some(Direction::Ingress),
        (EventKind::Data, direction::EGRESS) => Some(Direction::Egress),
        (EventKind::Data, other) => return Err(DecodeError::Direction(other)),
        _ => None,
    };
    let available = record.len() - HEADER_LEN;
    let captured = header.captured as usize;
    if captured > available {
        return Err(DecodeError::Payload {
            captured: header.captured,
            available,
        });
    }
    let addr = if header.flags & flags::HAS_ADDR != 0 {
        decode_sockaddr(&header.addr)
    } else {
        None
    };
    Ok(Event {
        kind,
        ts_ns: header.ts_ns,
        tgid: header.tgid,
        tid: header.tid,
        fd: header.fd,
        conn_id: header.conn_id,
        syscall,
        direction,
        bytes: header.bytes,
        payload: record[HEADER_LEN..HEADER_LEN + captured].to_vec(),
        flags: header.flags,
        addr,
        comm: Comm::new(&header.comm),
        trace: (header.flags & flags::TRACE_CTX != 0).then_some(KernelIds {
            trace_id: header.trace_id,
            span_id: header.span_id,
        }),
    })
}

/// Decodes the raw bytes of a `sockaddr_in` / `sockaddr_in6`; other families give `None`.
pub fn decode_sockaddr(raw: &[u8; SOCKADDR_BYTES]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    let port = u16::from_be_bytes([raw[2], raw[3]]);
    match i32::from(family) {
        libc::AF_INET => {
            let ip = Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&raw[8..24]);
            let flowinfo = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
            let scope = u32::from_ne_bytes([raw[24], raw[25], raw[26], raw[27]]);
            let ip = Ipv6Addr::from(octets);
            // Show v4-mapped peers (dual-stack sockets) as plain IPv4.
            match ip.to_ipv4_mapped() {
                Some(v4) => Some(SocketAddr::V4(SocketAddrV4::new(v4, port))),
                None => Some(SocketAddr::V6(SocketAddrV6::new(ip, port, flowinfo, scope))),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u32) -> EventHeader {
        EventHeader {
            kind,
            flags: 0,
            ts_ns: 42,
            tgid: 100,
            tid: 101,
            fd: 7,
            syscall: Syscall::Write as u32,
            conn_id: 9,
            bytes: 5,
            captured: 5,
            direction: direction::EGRESS,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            addr: [0; SOCKADDR_BYTES],
            addr_len: 0,
            trace_id: [0; 16],
            span_id: [0; 8],
        }
    }

    fn record(header: &EventHeader, payload: &[u8]) -> Vec<u8> {
        // SAFETY: EventHeader is plain old data.
        let bytes = unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(header).cast::<u8>(), HEADER_LEN)
        };
        [bytes, payload].concat()
    }

    #[test]
    fn decodes_data_event_with_payload() {
        let event = decode(&record(&header(kind::DATA), b"hello")).unwrap();
        assert_eq!(event.kind, EventKind::Data);
        assert_eq!(event.direction, Some(Direction::Egress));
        assert_eq!(event.payload, b"hello");
        assert_eq!(
            (event.tgid, event.tid, event.fd, event.conn_id),
            (100, 101, 7, 9)
        );
        assert_eq!(event.comm, "curl");
        assert!(!event.truncated());
    }

    #[test]
    fn rejects_bad_codes_and_lengths() {
        assert_eq!(decode(&[0; 10]), Err(DecodeError::Short(10)));
        assert_eq!(
            decode(&record(&header(99), b"hello")),
            Err(DecodeError::Kind(99))
        );
        let mut h = header(kind::DATA);
        h.syscall = 1234;
        assert_eq!(
            decode(&record(&h, b"hello")),
            Err(DecodeError::Syscall(1234))
        );
        let mut h = header(kind::DATA);
        h.direction = 3;
        assert_eq!(
            decode(&record(&h, b"hello")),
            Err(DecodeError::Direction(3))
        );
        let h = header(kind::DATA);
        assert_eq!(
            decode(&record(&h, b"hel")),
            Err(DecodeError::Payload {
                captured: 5,
                available: 3
            })
        );
    }

    #[test]
    fn decodes_socket_addresses() {
        let mut raw = [0u8; SOCKADDR_BYTES];
        raw[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        raw[2..4].copy_from_slice(&8080u16.to_be_bytes());
        raw[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            decode_sockaddr(&raw),
            Some("127.0.0.1:8080".parse().unwrap())
        );

        let mut raw = [0u8; SOCKADDR_BYTES];
        raw[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        raw[2..4].copy_from_slice(&53u16.to_be_bytes());
        raw[8..24].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        assert_eq!(decode_sockaddr(&raw), Some("[::1]:53".parse().unwrap()));

        // v4-mapped v6 shows as v4.
        raw[8..24].copy_from_slice(&Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets());
        assert_eq!(decode_sockaddr(&raw), Some("10.1.2.3:53".parse().unwrap()));

        let mut raw = [0u8; SOCKADDR_BYTES];
        raw[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(decode_sockaddr(&raw), None);
    }

    #[test]
    fn decodes_tcp_state_records() {
        let mut e = TcpStateEvent {
            kind: kind::TCP_STATE,
            family: libc::AF_INET as u32,
            ts_ns: 1,
            tgid: 2,
            tid: 3,
            skaddr: 0xffff_8880_0000_1000,
            oldstate: agent_common::tcp_state::SYN_RECV,
            newstate: agent_common::tcp_state::ESTABLISHED,
            sport: 8080,
            dport: 40000,
            _pad: 0,
            saddr: [0; 16],
            daddr: [0; 16],
        };
        e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        // SAFETY: plain old data.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                std::ptr::from_ref(&e).cast::<u8>(),
                size_of::<TcpStateEvent>(),
            )
        };
        let Record::TcpState(s) = decode_record(bytes).unwrap() else {
            panic!("not tcp state")
        };
        assert_eq!(s.local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.remote, "127.0.0.2:40000".parse().unwrap());
        assert_eq!(decode_record(&bytes[..20]), Err(DecodeError::Short(20)));
        e.family = 99;
        // SAFETY: as above.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                std::ptr::from_ref(&e).cast::<u8>(),
                size_of::<TcpStateEvent>(),
            )
        };
        assert_eq!(decode_record(bytes), Err(DecodeError::Family(99)));
        assert!(matches!(
            decode_record(&record(&header(kind::DATA), b"hello")),
            Ok(Record::Socket(_))
        ));
    }

    #[test]
    fn missing_addr_flag_means_no_address() {
        let mut h = header(kind::CONNECT);
        h.captured = 0;
        h.addr[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        let event = decode(&record(&h, b"")).unwrap();
        assert_eq!(event.addr, None);
        h.flags = flags::HAS_ADDR;
        let event = decode(&record(&h, b"")).unwrap();
        assert!(event.addr.is_some());
    }
}
