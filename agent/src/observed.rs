//! What the pipeline hands to its consumers: an event joined with what the
//! connection table knows about its connection. `--events` prints these as JSON
//! lines; tests and later stages receive them through a tap.

use std::{io::Write, net::SocketAddr};

use serde::{Serialize, Serializer};

use crate::{
    capture::{Direction, Event, EventKind},
    clock::WallClock,
    conn::{Conn, Role, Transport},
};

#[derive(Clone, Debug, Serialize)]
pub struct Observed {
    pub kind: EventKind,
    /// Wall clock, ns since the Unix epoch.
    pub time_unix_nano: u64,
    /// CLOCK_MONOTONIC ns as the kernel reported it.
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub conn_id: u64,
    pub syscall: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<SocketAddr>,
    /// Address the syscall itself carried (UDP datagrams), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
    /// Data: bytes moved by the syscall. Connect: its return value.
    pub bytes: i64,
    /// Accept: the listening socket's fd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_fd: Option<i64>,
    pub captured: usize,
    pub truncated: bool,
    /// The payload is an HTTP/2 frame skeleton (`[u32 offset][u32 len]`
    /// segments, see `agent_common::flags::SPARSE`), not a prefix.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sparse: bool,
    pub comm: String,
    /// The captured prefix, printed as escaped ASCII.
    #[serde(serialize_with = "escaped", skip_serializing_if = "Vec::is_empty")]
    pub payload: Vec<u8>,
}

fn escaped<S: Serializer>(payload: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&payload.escape_ascii().to_string())
}

impl Observed {
    pub fn new(event: Event, conn: Option<&Conn>, clock: &WallClock) -> Observed {
        Observed {
            kind: event.kind,
            time_unix_nano: clock.unix_ns(event.ts_ns),
            ts_ns: event.ts_ns,
            pid: event.tgid,
            tid: event.tid,
            fd: event.fd,
            conn_id: event.conn_id,
            syscall: event.syscall.name(),
            direction: event.direction,
            role: conn.map_or(Role::from_flags(event.flags), |c| c.role),
            transport: conn.and_then(|c| c.transport),
            peer: conn.and_then(|c| c.peer).or(event.addr),
            local: conn.and_then(|c| c.local),
            addr: event.addr,
            bytes: if event.kind == EventKind::Accept {
                0
            } else {
                event.bytes
            },
            listen_fd: (event.kind == EventKind::Accept).then_some(event.bytes),
            captured: event.payload.len(),
            truncated: event.truncated(),
            sparse: event.flags & agent_common::flags::SPARSE != 0,
            // Data events carry the name only on a connection's first event.
            comm: match conn {
                Some(c) if event.comm.is_empty() => c.comm.to_string(),
                _ => event.comm.to_string(),
            },
            payload: event.payload,
        }
    }

    /// Writes one JSON line.
    pub fn write_json_line(&self, out: &mut impl Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        out.write_all(b"\n")
    }
}

#[cfg(test)]
mod tests {
    use agent_common::Syscall;

    use super::*;

    #[test]
    fn json_line_escapes_payload() {
        let event = Event {
            kind: EventKind::Data,
            ts_ns: 5,
            tgid: 1,
            tid: 2,
            fd: 3,
            conn_id: 4,
            syscall: Syscall::Sendto,
            direction: Some(Direction::Egress),
            bytes: 9,
            payload: b"GET /\r\n\xff".to_vec(),
            flags: agent_common::flags::TRUNCATED,
            addr: Some("127.0.0.1:53".parse().unwrap()),
            comm: "dig".into(),
            trace: None,
        };
        let mut out = Vec::new();
        Observed::new(event, None, &WallClock::new())
            .write_json_line(&mut out)
            .unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["payload"], "GET /\\r\\n\\xff");
        assert_eq!(v["syscall"], "sendto");
        assert_eq!(v["direction"], "egress");
        assert_eq!(v["peer"], "127.0.0.1:53");
        assert_eq!(v["truncated"], true);
        assert_eq!(v["role"], "unknown");
    }
}
