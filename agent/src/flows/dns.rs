//! DNS lookups from connection bytes: queries written to and responses read
//! from a resolver port, paired by socket, transaction id and question. A query
//! without an answer within the timeout becomes a lookup with `error.type=timeout`.

use std::{
    net::SocketAddr,
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use lru::LruCache;

use super::{ConnInfo, Context, Flow, Module, TrackerSettings, Upgrade, context::locked};
use crate::{
    capture::Direction,
    conn::{Chunk, ConnKey, Transport},
    discovery::Resource,
    protocols::dns::{DnsMessage, TcpFramer, parse},
    self_metrics::SelfMetrics,
    spans::{Span, SpanContext},
};

/// DNS lookups: connections to a resolver port, claimed by address.
pub struct Dns {
    /// Queries awaiting their answer, host-wide (shared with the flows).
    lookups: Arc<Mutex<DnsLookups>>,
}

impl Dns {
    pub fn new(settings: &TrackerSettings) -> Dns {
        Dns {
            lookups: Arc::new(Mutex::new(DnsLookups::new(
                settings.dns_ports.clone(),
                settings.dns_timeout_ns,
            ))),
        }
    }
}

impl Module for Dns {
    fn claims(&self, conn: &ConnInfo) -> bool {
        locked(&self.lookups).is_resolver(conn.peer)
    }

    fn detects(&self, _conn: &ConnInfo, _direction: Direction, _chunk: &Chunk) -> bool {
        false
    }

    fn open(&self, conn: &ConnInfo, _first: &Chunk, cx: &mut Context) -> Box<dyn Flow> {
        let tcp = conn.transport == Some(Transport::Tcp);
        Box::new(DnsFlow {
            conn: DnsConn::new(tcp, cx.discovery.resource(conn.key.tgid, &conn.comm)),
            lookups: Arc::clone(&self.lookups),
        })
    }

    /// Lookups that timed out by `now_ns`; a timed-out lookup's span ends
    /// when the agent gave up on it.
    fn expire(&mut self, now_ns: u64, cx: &mut Context, out: &mut Vec<Span>) {
        let expired = locked(&self.lookups).expire(now_ns);
        for pending in expired {
            finish(pending, None, now_ns, cx, out);
        }
    }
}

/// One connection to a resolver.
struct DnsFlow {
    conn: DnsConn,
    lookups: Arc<Mutex<DnsLookups>>,
}

impl std::fmt::Debug for DnsFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsFlow").field("conn", &self.conn).finish()
    }
}

impl Flow for DnsFlow {
    fn data(
        &mut self,
        conn: &ConnInfo,
        direction: Direction,
        chunk: Chunk,
        tid: u32,
        cx: &mut Context,
        out: &mut Vec<Span>,
    ) -> Option<Upgrade> {
        cx.discovery.renew(&mut self.conn.resource);
        for message in self.conn.messages(direction, chunk) {
            let seen = Seen {
                conn: conn.key,
                direction,
                bytes: &message.0,
                ts_ns: message.1,
                server: conn.peer,
            };
            let mut lookups = locked(&self.lookups);
            let outcome = lookups.on_message(&seen, &self.conn, || cx.call_context(tid, conn.key));
            SelfMetrics::set(&cx.self_metrics.dns_pending_evicted, lookups.evicted);
            drop(lookups);
            match outcome {
                Outcome::Answered(answered) => {
                    let (pending, response, end_ns) = *answered;
                    finish(pending, Some(response), end_ns, cx, out);
                }
                Outcome::Malformed => cx.self_metrics.parse_error("dns", "malformed"),
                Outcome::Unmatched => cx.self_metrics.parse_error("dns", "unmatched_response"),
                Outcome::Query | Outcome::Ignored => {}
            }
        }
        None
    }

    fn close(&mut self, _conn: &ConnInfo, _tid: u32, _cx: &mut Context, _out: &mut Vec<Span>) {
        // Pending queries outlive the socket (a resolver may answer after a
        // client gave up): they end by answer or timeout.
    }
}

/// A lookup's span and metrics.
fn finish(
    p: Pending,
    response: Option<DnsMessage>,
    end_ns: u64,
    cx: &mut Context,
    out: &mut Vec<Span>,
) {
    let s = crate::spans::dns::span(crate::spans::dns::DnsLookup {
        question: p.question,
        start_ns: cx.clock.unix_ns(p.start_ns),
        end_ns: cx.clock.unix_ns(end_ns),
        response,
        server: p.server,
        transport: p.transport,
        resource: p.resource,
        context: p.context,
    });
    locked(&cx.metrics.dns).record(&s);
    if let Some(otlp) = &cx.metrics.otlp {
        otlp.record_dns(&s);
    }
    if cx.keep_span(&s, None) {
        out.push(s);
    }
}

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

    /// The DNS messages in a chunk with its time: the datagram itself over
    /// UDP, the complete length-prefixed messages over TCP.
    pub fn messages(&mut self, direction: Direction, chunk: Chunk) -> Vec<(Vec<u8>, u64)> {
        if self.tcp {
            let framer = &mut self.framers[direction.index()];
            framer
                .push(&chunk.data, chunk.missing)
                .into_iter()
                .map(|m| (m, chunk.ts_ns))
                .collect()
        } else {
            vec![(chunk.data, chunk.ts_ns)]
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
