//! Local addresses of TCP connections, from `sock:inet_sock_set_state` events
//! joined with connect/accept events.
//!
//! * Accepted: the child socket's SYN_RECV → ESTABLISHED event carries (local,
//!   remote) before `accept` returns; the accept event carries the remote address.
//!   Join on the remote address.
//! * Connected: the SYN_SENT event fires inside `connect`, in the connecting thread,
//!   carrying the `struct sock` address; the SYN_SENT → ESTABLISHED event carries the
//!   same address with the final 4-tuple, before `connect` returns when it blocks
//!   and after it when it does not. Join on the thread id, then the sock address.
//!
//! Every cache is bounded (LRU): unmatched entries age out.

use std::{net::SocketAddr, num::NonZeroUsize};

use agent_common::tcp_state;
use lru::LruCache;

use super::ConnKey;
use crate::capture::TcpState;

const CAPACITY: usize = 8192;

pub struct TcpTuples {
    /// tid → sock address, from SYN_SENT.
    syn_sent: LruCache<u32, u64>,
    /// sock address → local address, ESTABLISHED before the connect event arrived.
    established: LruCache<u64, SocketAddr>,
    /// remote → local address of accepted sockets.
    accepted: LruCache<SocketAddr, SocketAddr>,
    /// sock address → connection still waiting for its ESTABLISHED event.
    waiting: LruCache<u64, ConnKey>,
}

impl Default for TcpTuples {
    fn default() -> Self {
        let cap = NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN);
        TcpTuples {
            syn_sent: LruCache::new(cap),
            established: LruCache::new(cap),
            accepted: LruCache::new(cap),
            waiting: LruCache::new(cap),
        }
    }
}

impl TcpTuples {
    /// Records a state change; returns a connection whose local address is now known.
    pub fn on_state(&mut self, s: &TcpState) -> Option<(ConnKey, SocketAddr)> {
        match (s.oldstate, s.newstate) {
            (_, tcp_state::SYN_SENT) => {
                self.syn_sent.put(s.tid, s.skaddr);
                None
            }
            (tcp_state::SYN_RECV, tcp_state::ESTABLISHED) => {
                self.accepted.put(s.remote, s.local);
                None
            }
            (tcp_state::SYN_SENT, tcp_state::ESTABLISHED) => match self.waiting.pop(&s.skaddr) {
                Some(key) => Some((key, s.local)),
                None => {
                    self.established.put(s.skaddr, s.local);
                    None
                }
            },
            _ => None,
        }
    }

    /// A connect by `tid` created connection `key`: its local address if known yet.
    pub fn on_connect(&mut self, tid: u32, key: ConnKey) -> Option<SocketAddr> {
        let skaddr = self.syn_sent.pop(&tid)?;
        match self.established.pop(&skaddr) {
            Some(local) => Some(local),
            None => {
                self.waiting.put(skaddr, key);
                None
            }
        }
    }

    /// An accept returned a connection from `peer`: its local address.
    pub fn on_accept(&mut self, peer: SocketAddr) -> Option<SocketAddr> {
        self.accepted.pop(&peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(tid: u32, sk: u64, old: u32, new: u32, local: &str, remote: &str) -> TcpState {
        TcpState {
            ts_ns: 0,
            tgid: 1,
            tid,
            skaddr: sk,
            oldstate: old,
            newstate: new,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
        }
    }

    const KEY: ConnKey = ConnKey {
        tgid: 1,
        fd: 3,
        conn_id: 9,
    };

    #[test]
    fn blocking_connect_established_before_the_connect_event() {
        let mut t = TcpTuples::default();
        t.on_state(&state(
            7,
            0xa,
            7,
            tcp_state::SYN_SENT,
            "0.0.0.0:0",
            "10.0.0.1:80",
        ));
        t.on_state(&state(
            0,
            0xa,
            tcp_state::SYN_SENT,
            tcp_state::ESTABLISHED,
            "10.0.0.2:5555",
            "10.0.0.1:80",
        ));
        assert_eq!(t.on_connect(7, KEY), Some("10.0.0.2:5555".parse().unwrap()));
    }

    #[test]
    fn nonblocking_connect_established_after_the_connect_event() {
        let mut t = TcpTuples::default();
        t.on_state(&state(
            7,
            0xa,
            7,
            tcp_state::SYN_SENT,
            "0.0.0.0:0",
            "10.0.0.1:80",
        ));
        assert_eq!(t.on_connect(7, KEY), None);
        let done = t.on_state(&state(
            0,
            0xa,
            tcp_state::SYN_SENT,
            tcp_state::ESTABLISHED,
            "10.0.0.2:5555",
            "10.0.0.1:80",
        ));
        assert_eq!(done, Some((KEY, "10.0.0.2:5555".parse().unwrap())));
    }

    #[test]
    fn accepted_joined_on_the_peer_address() {
        let mut t = TcpTuples::default();
        t.on_state(&state(
            0,
            0xb,
            tcp_state::SYN_RECV,
            tcp_state::ESTABLISHED,
            "10.0.0.1:80",
            "10.0.0.2:5555",
        ));
        assert_eq!(t.on_accept("10.0.0.2:5556".parse().unwrap()), None);
        assert_eq!(
            t.on_accept("10.0.0.2:5555".parse().unwrap()),
            Some("10.0.0.1:80".parse().unwrap())
        );
        // Consumed.
        assert_eq!(t.on_accept("10.0.0.2:5555".parse().unwrap()), None);
    }

    #[test]
    fn connect_without_syn_sent_is_unknown() {
        let mut t = TcpTuples::default();
        assert_eq!(t.on_connect(7, KEY), None);
    }
}
