//! From connection bytes to flows. The tracker knows no protocol by name: each
//! protocol is a [`Module`] in [`registry`] that recognises its connections
//! (by address or by their first bytes) and opens a per-connection [`Flow`],
//! which parses the bytes (with a pure parser from `crate::protocols`) and turns
//! exchanges into spans and RED metrics through the shared [`Context`].
//!
//! Adding a protocol: a parser under `protocols/`, its flow module here, and
//! one line in [`registry`].

pub mod context;
pub mod dns;
pub mod http1;
pub mod http2;
pub mod kernel_ids;
pub mod tls;

use std::{fmt, net::SocketAddr, sync::Arc};

use crate::{
    capture::{Comm, Direction},
    conn::{Chunk, Conn, ConnKey, Role, Transport},
    export::otlp::OtlpMetrics,
    self_metrics::SelfMetrics,
    spans::{Span, SpanKind, sampler::Sampler},
};
pub use context::{Context, Recorders};

/// Chunks looked at for a known protocol before a connection is given up on.
const DETECT_CHUNKS: u8 = 16;

/// The protocols the tracker follows, in the order they are asked. Modules
/// that claim connections by address come first.
fn registry(settings: &TrackerSettings) -> Vec<Box<dyn Module>> {
    vec![
        Box::new(dns::Dns::new(settings)),
        // Before HTTP/1: the HTTP/2 preface starts like a request line.
        Box::new(http2::Http2),
        Box::new(http1::Http1),
        Box::new(tls::Tls),
    ]
}

/// What a parser needs to know about its connection, copied out of [`Conn`] so
/// the flow can be borrowed mutably beside it.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub key: ConnKey,
    pub role: Role,
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub transport: Option<Transport>,
    pub comm: Comm,
    /// Opened before the agent started: its first bytes were not seen.
    pub preexisting: bool,
    /// CLOCK_MONOTONIC ns of its latest event (its close, once closed).
    pub last_ns: u64,
    /// Its bytes are a TLS library's plaintext (`https`).
    pub tls: bool,
}

impl ConnInfo {
    pub fn of(conn: &Conn) -> ConnInfo {
        ConnInfo {
            key: conn.key,
            role: conn.role,
            peer: conn.peer,
            local: conn.local,
            transport: conn.transport,
            comm: conn.comm,
            preexisting: conn.preexisting,
            last_ns: conn.last_ns,
            tls: conn.tls,
        }
    }

    /// The direction requests travel in, when the role is known.
    pub fn requests_from(&self) -> Option<Direction> {
        match self.role {
            Role::Server => Some(Direction::Ingress),
            Role::Client => Some(Direction::Egress),
            Role::Unknown => None,
        }
    }
}

/// The kind of the spans of a connection whose requests travel in
/// `requests_from` (server when not known).
pub fn span_kind(requests_from: Option<Direction>) -> SpanKind {
    match requests_from {
        Some(Direction::Egress) => SpanKind::Client,
        _ => SpanKind::Server,
    }
}

/// One protocol, host-wide (state shared by its connections lives here).
pub trait Module: Send {
    /// Takes a connection by its addresses, before looking at bytes.
    fn claims(&self, _conn: &ConnInfo) -> bool {
        false
    }

    /// Whether the first bytes seen in one direction are this protocol.
    fn detects(&self, conn: &ConnInfo, direction: Direction, chunk: &Chunk) -> bool;

    /// The parser of a connection this module claimed or detected; `first`
    /// is the chunk it was detected on (fed to the flow next).
    fn open(&self, conn: &ConnInfo, first: &Chunk, cx: &mut Context) -> Box<dyn Flow>;

    /// Called every second: finish what timed out by `now_ns` (monotonic).
    fn expire(&mut self, _now_ns: u64, _cx: &mut Context, _out: &mut Vec<Span>) {}

    /// The parser of a connection that switched to this module's protocol
    /// (an HTTP/1.1 `Upgrade`), if it speaks `upgrade.protocol`.
    fn upgrade(
        &self,
        _upgrade: &Upgrade,
        _conn: &ConnInfo,
        _cx: &mut Context,
    ) -> Option<Box<dyn Flow>> {
        None
    }
}

/// A connection switching protocols (RFC 9110 §7.8: `Upgrade` and `101`).
#[derive(Debug)]
pub struct Upgrade {
    /// The protocol switched to, lower case (`h2c`, `websocket`).
    pub protocol: String,
    /// Where the new protocol's bytes start in each direction (absolute
    /// stream offsets, by [`Direction::index`]).
    pub at: [u64; 2],
    /// The request that asked for the switch and its `101`: the new protocol
    /// may answer the request (h2c answers it on stream 1).
    pub exchange: Box<crate::protocols::http1::Exchange>,
    /// The request's span context and the sampled flag of its `traceparent`.
    pub context: (crate::spans::SpanContext, Option<bool>),
    /// The chunk that completed the switch; its bytes from `at` on are the
    /// new protocol's.
    pub chunk: Chunk,
    pub direction: Direction,
    /// The direction that carried the request (the client's).
    pub requests_from: Direction,
    /// Chunks of the request direction that the old protocol took before the
    /// switch was known but that belong to the new one (a client preface sent
    /// before the `101` arrived), oldest first.
    pub early: Vec<Chunk>,
}

/// One connection's parser and what it has open.
pub trait Flow: Send + fmt::Debug {
    /// Bytes one syscall moved in `direction`, by thread `tid`; kept spans go
    /// to `out`. `Some`: the connection switched protocols with this chunk.
    fn data(
        &mut self,
        conn: &ConnInfo,
        direction: Direction,
        chunk: Chunk,
        tid: u32,
        cx: &mut Context,
        out: &mut Vec<Span>,
    ) -> Option<Upgrade>;

    /// The kernel should walk this connection's HTTP/2 frames (flag
    /// `FRAMES`) rather than copy a prefix of each syscall.
    fn kernel_frames(&self) -> bool {
        false
    }

    /// No module speaks the protocol [`Flow::data`] switched to: finish the
    /// switch as this protocol sees it (the connection stays with this flow,
    /// which parses nothing more).
    fn upgrade_refused(
        &mut self,
        _upgrade: Upgrade,
        _conn: &ConnInfo,
        _tid: u32,
        _cx: &mut Context,
        _out: &mut Vec<Span>,
    ) {
    }

    /// Nothing more will be parsed: the connection becomes opaque (the
    /// kernel stops copying its bytes).
    fn gives_up(&self) -> bool {
        false
    }

    /// With [`Flow::gives_up`]: its bytes are ciphertext whose plaintext a
    /// TLS library's probes may still bring ([`Protocol::Ciphertext`]).
    fn ciphertext(&self) -> bool {
        false
    }

    /// The connection closed: finish what its close completes.
    fn close(&mut self, conn: &ConnInfo, tid: u32, cx: &mut Context, out: &mut Vec<Span>);
}

/// What a connection carries, as far as the agent can tell.
#[derive(Debug)]
pub enum Protocol {
    /// Not known yet; counts the chunks tried.
    Detecting(u8),
    /// A registered protocol's parser.
    Known(Box<dyn Flow>),
    /// Nothing the agent parses: its bytes are dropped unread.
    Other,
    /// TLS records whose plaintext has not come (the library is not, or not
    /// yet, probed): the kernel skips the ciphertext, and plaintext that
    /// comes later restarts the connection (`conn::table`).
    Ciphertext,
}

impl Protocol {
    /// See [`Flow::kernel_frames`].
    pub fn kernel_frames(&self) -> bool {
        matches!(self, Protocol::Known(flow) if flow.kernel_frames())
    }
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol::Detecting(0)
    }
}

/// Settings of the tracker.
#[derive(Clone, Debug)]
pub struct TrackerSettings {
    pub sampler: Sampler,
    /// Where server spans with kernel-drawn ids leave their trace for the profiler.
    pub span_links: crate::spans::links::SpanLinks,
    /// Pod metadata, when watching Kubernetes.
    pub k8s: Option<std::sync::Arc<crate::discovery::k8s::K8s>>,
    /// The TLS probes, told about processes whose connections carry TLS.
    pub tls: Option<crate::tls::probes::TlsProbes>,
    /// Query strings in spans (opt-in).
    pub capture_query: bool,
    /// Header names whose values go into spans (opt-in, lower case).
    pub capture_headers: Vec<String>,
    /// Leading body bytes that go into spans (opt-in; 0: none).
    pub capture_body_bytes: usize,
    pub route_patterns: Vec<String>,
    pub max_routes: usize,
    pub max_series: usize,
    /// Resolver ports (DNS lookups are traced on connections to them).
    pub dns_ports: Vec<u16>,
    /// A query without an answer for this long is a timed-out lookup.
    pub dns_timeout_ns: u64,
    /// Some output takes spans (OTLP, stdout, a tap): without one, requests
    /// only feed the metrics and no span is built.
    pub spans_consumed: bool,
}

pub struct Tracker {
    modules: Vec<Box<dyn Module>>,
    cx: Context,
}

impl Tracker {
    pub fn new(
        settings: &TrackerSettings,
        self_metrics: Arc<SelfMetrics>,
        otlp_metrics: Option<Arc<OtlpMetrics>>,
    ) -> Tracker {
        Tracker {
            modules: registry(settings),
            cx: Context::new(settings, self_metrics, otlp_metrics),
        }
    }

    /// The metric recorders (the Prometheus endpoint renders them).
    pub fn recorders(&self) -> Recorders {
        self.cx.metrics.clone()
    }

    /// A record of `conn` at `ts_ns` carried the kernel's ids for a request
    /// (see [`kernel_ids`]).
    pub fn kernel_ids(
        &mut self,
        conn: crate::conn::ConnKey,
        ts_ns: u64,
        ids: crate::capture::event::KernelIds,
        profiled: bool,
    ) {
        self.cx.kernel.note(conn, ts_ns, ids, profiled);
    }

    /// Who a process is (its spans' resource), for its log records.
    pub fn resource(&mut self, tgid: u32) -> Arc<crate::discovery::Resource> {
        self.cx.discovery.resource(tgid, "")
    }

    /// Thread `tid` connected `conn` (a client connection).
    pub fn on_connect(&mut self, conn: crate::conn::ConnKey, tid: u32) {
        self.cx.connected(tid, conn);
    }

    /// Parses `chunks` that `conn` carried in `direction` (moved by thread `tid`);
    /// kept spans are appended to `out`.
    pub fn on_data(
        &mut self,
        conn: &mut Conn,
        direction: Direction,
        chunks: Vec<Chunk>,
        tid: u32,
        out: &mut Vec<Span>,
    ) {
        let info = ConnInfo::of(conn);
        if direction == Direction::Ingress {
            self.cx.read_by(tid, info.key);
        }
        for chunk in chunks {
            if let Protocol::Detecting(tries) = &mut conn.protocol {
                let found = self
                    .modules
                    .iter()
                    .find(|m| m.claims(&info) || m.detects(&info, direction, &chunk));
                match found {
                    Some(module) => {
                        conn.protocol = Protocol::Known(module.open(&info, &chunk, &mut self.cx))
                    }
                    None => {
                        *tries += 1;
                        if *tries >= DETECT_CHUNKS {
                            conn.protocol = Protocol::Other;
                        }
                        continue;
                    }
                }
            }
            let Protocol::Known(flow) = &mut conn.protocol else {
                continue;
            };
            let Some(upgrade) = flow.data(&info, direction, chunk, tid, &mut self.cx, out) else {
                if flow.gives_up() {
                    conn.protocol = if flow.ciphertext() {
                        Protocol::Ciphertext
                    } else {
                        Protocol::Other
                    };
                }
                continue;
            };
            let new = self
                .modules
                .iter()
                .find_map(|m| m.upgrade(&upgrade, &info, &mut self.cx));
            match new {
                Some(mut new) => {
                    let early = upgrade
                        .early
                        .into_iter()
                        .map(|c| (upgrade.requests_from, c));
                    // The switch's own chunk may already hold the new protocol.
                    for (direction, chunk) in early.chain([(upgrade.direction, upgrade.chunk)]) {
                        if let Some(again) =
                            new.data(&info, direction, chunk, tid, &mut self.cx, out)
                        {
                            // An upgrade out of an upgrade: not followed.
                            new.upgrade_refused(again, &info, tid, &mut self.cx, out);
                        }
                    }
                    conn.protocol = Protocol::Known(new);
                }
                None => flow.upgrade_refused(upgrade, &info, tid, &mut self.cx, out),
            }
        }
    }

    /// The connection closed: finish what its close completes.
    pub fn on_close(&mut self, conn: &mut Conn, tid: u32, out: &mut Vec<Span>) {
        let info = ConnInfo::of(conn);
        if let Protocol::Known(flow) = &mut conn.protocol {
            flow.close(&info, tid, &mut self.cx, out);
        }
    }

    /// What timed out by `now_ns` (monotonic), in every module.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Span>) {
        for module in &mut self.modules {
            module.expire(now_ns, &mut self.cx, out);
        }
    }
}
