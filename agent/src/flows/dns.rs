//! DNS lookups from connection bytes: queries written to and responses read
//! from a resolver port, paired by socket, transaction id and question. A query
//! without an answer within the timeout becomes a lookup with `error.type=timeout`.

use std::{net::SocketAddr, num::NonZeroUsize, sync::Arc};

use lru::LruCache;

use crate::{
    capture::Direction,
    conn::{Chunk, ConnKey},
    discovery::Resource,
    protocols::dns::{DnsMessage, TcpFramer, parse},
    spans::SpanContext,
};

/// Queries awaiting their answer, host-wide.
const MAX_PENDING: usize = 8192;

/// A connection to a resolver.
#[derive(Debug)]
pub struct DnsConn {
    pub tcp: bool,
    framers: [TcpFramer; 2],
    pub resource: Arc<Resource>,
}

impl DnsConn {
    pub fn new(tcp: bool, resource: Arc<Resource>) -> DnsConn {
        DnsConn {
            tcp,
            framers: [TcpFramer::default(), TcpFramer::default()],
            resource,
        }
    }

    /// The DNS messages in a chunk: the datagram itself over UDP, the complete
    /// length-prefixed messages over TCP.
    pub fn messages(&mut self, direction: Direction, chunk: &Chunk) -> Vec<Vec<u8>> {
        if self.tcp {
            self.framers[direction.index()].push(&chunk.data, chunk.missing)
        } else {
            vec![chunk.data.clone()]
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    conn: ConnKey,
    id: u16,
    question: Option<(String, String)>,
}

/// A query on its way.
pub struct Pending {
    pub question: Option<(String, String)>,
    /// CLOCK_MONOTONIC ns.
    pub start_ns: u64,
    pub server: Option<SocketAddr>,
    pub transport: &'static str,
    pub resource: Arc<Resource>,
    pub context: SpanContext,
}

/// One DNS message as the capture saw it.
#[derive(Clone, Copy)]
pub struct Seen<'a> {
    pub conn: ConnKey,
    pub direction: Direction,
    pub bytes: &'a [u8],
    /// CLOCK_MONOTONIC ns.
    pub ts_ns: u64,
    /// The resolver.
    pub server: Option<SocketAddr>,
}

/// What a message completed.
pub enum Outcome {
    /// A query was registered.
    Query,
    /// A response answered a query: the query, the response, its time.
    Answered(Box<(Pending, DnsMessage, u64)>),
    /// A response with no query we saw (sent before we started, or evicted).
    Unmatched,
    /// Not DNS: counted as a parse error.
    Malformed,
    /// Queries received or answers sent (the other side is a DNS server): not a lookup.
    Ignored,
}

pub struct DnsLookups {
    ports: Vec<u16>,
    pending: LruCache<Key, Pending>,
    timeout_ns: u64,
    /// Queries pushed out of the full pending table.
    pub evicted: u64,
}

impl DnsLookups {
    pub fn new(ports: Vec<u16>, timeout_ns: u64) -> DnsLookups {
        DnsLookups {
            ports,
            pending: LruCache::new(NonZeroUsize::new(MAX_PENDING).unwrap_or(NonZeroUsize::MIN)),
            timeout_ns,
            evicted: 0,
        }
    }

    /// Whether a connection with this peer talks to a resolver.
    pub fn is_resolver(&self, peer: Option<SocketAddr>) -> bool {
        peer.is_some_and(|p| self.ports.contains(&p.port()))
    }

    /// Handles one message; `context` is called only for a new query.
    pub fn on_message(
        &mut self,
        seen: &Seen<'_>,
        dns: &DnsConn,
        context: impl FnOnce() -> SpanContext,
    ) -> Outcome {
        let Seen {
            conn,
            direction,
            bytes,
            ts_ns,
            server,
        } = *seen;
        let Ok(message) = parse(bytes) else {
            return Outcome::Malformed;
        };
        let key = Key {
            conn,
            id: message.id,
            question: message.question.clone(),
        };
        match (direction, message.response) {
            (Direction::Egress, false) => {
                let pending = Pending {
                    question: message.question,
                    start_ns: ts_ns,
                    server,
                    transport: if dns.tcp { "tcp" } else { "udp" },
                    resource: Arc::clone(&dns.resource),
                    context: context(),
                };
                if let Some((old, _)) = self.pending.push(key.clone(), pending)
                    && old != key
                {
                    self.evicted += 1;
                }
                Outcome::Query
            }
            (Direction::Ingress, true) => match self.pending.pop(&key) {
                Some(p) => Outcome::Answered(Box::new((p, message, ts_ns))),
                None => Outcome::Unmatched,
            },
            _ => Outcome::Ignored,
        }
    }

    /// Queries older than the timeout at `now_ns` (monotonic), oldest first.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Pending> {
        let mut expired = Vec::new();
        while let Some((_, p)) = self.pending.peek_lru() {
            if p.start_ns + self.timeout_ns > now_ns {
                break;
            }
            if let Some((_, p)) = self.pending.pop_lru() {
                expired.push(p);
            }
        }
        expired
    }
}
