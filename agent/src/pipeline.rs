//! Wiring of the running agent: kernel capture → ring buffer reader → bounded
//! queue → processor (filters, connection table, address resolution, outputs).
//!
//! Nothing downstream can block the reader: every hand-off is a bounded queue with
//! `try_send`, and what does not fit is dropped and counted in [`SelfMetrics`].

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use agent_common::{SockInfo, Syscall, flags};
use anyhow::Context as _;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use crate::{
    capture::{
        Capture, Event, EventKind, Record,
        loader::{AttachResult, PathReport},
        reader,
    },
    clock::{WallClock, monotonic_ns},
    config::Settings,
    conn::{
        ConnKey, ConnTable, Transport,
        procnet::{self, ExistingSocket},
        resolver::{self, Resolution, Resolver},
        tcp_tuples::TcpTuples,
    },
    export::{otlp, prometheus_server, stdout::JsonLines},
    filter::Filter,
    flows::{Tracker, TrackerSettings, context::locked},
    observed::Observed,
    profiling::Profiling,
    self_metrics::{SelfMetrics, Snapshot},
    spans::Span,
};

/// How long [`AgentHandle::stop`] waits for the tasks to flush.
const STOP_TIMEOUT: Duration = Duration::from_millis(1500);
const RESOLVER_QUEUE: usize = 4096;
const PROCESSES_SEEN: usize = 4096;

/// A running agent. Dropping it without [`stop`](AgentHandle::stop) detaches too,
/// but without flushing.
pub struct AgentHandle {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Stopped after `tasks`, so they export what the pipeline flushed last.
    exporters_shutdown: watch::Sender<bool>,
    exporters: Vec<JoinHandle<()>>,
    capture: Arc<Mutex<Capture>>,
    metrics: Arc<SelfMetrics>,
    /// The attach result of every program of the capture path in use.
    pub attached: Vec<AttachResult>,
    /// Which capture path runs, and why.
    pub capture_path: PathReport,
    /// Where the Prometheus endpoint listens, if enabled.
    pub prometheus: Option<std::net::SocketAddr>,
    /// The CPU profiler, when on.
    profiling: Option<Profiling>,
}

impl AgentHandle {
    pub fn snapshot(&self) -> Snapshot {
        self.metrics.snapshot(locked(&self.capture).losses())
    }

    /// Detaches the programs, then drains what they already emitted and flushes it.
    pub async fn stop(mut self) -> Snapshot {
        let capture = Arc::clone(&self.capture);
        // The TLS uprobes stay until the end (their plaintext has no socket
        // events left to join once the data path is detached).
        let uprobes = locked(&capture).take_uprobes();
        let detached = tokio::task::spawn_blocking(move || locked(&capture).detach());
        if let Err(error) = detached.await {
            tracing::warn!(%error, "detaching");
        }
        if let Some(profiling) = self.profiling.take() {
            // Last partial interval: drained, symbolized and exported.
            profiling.stop().await;
        }
        let _ = self.shutdown.send(true);
        let all = futures_join(std::mem::take(&mut self.tasks));
        if tokio::time::timeout(STOP_TIMEOUT, all).await.is_err() {
            tracing::warn!("pipeline did not flush within {STOP_TIMEOUT:?}");
        }
        let _ = self.exporters_shutdown.send(true);
        let exporters = futures_join(std::mem::take(&mut self.exporters));
        if tokio::time::timeout(STOP_TIMEOUT, exporters).await.is_err() {
            tracing::warn!("exporters did not flush within {STOP_TIMEOUT:?}");
        }
        // Then they go on a thread of their own, not waited for: each removal
        // waits for a kernel grace period (about 45 ms here, serialised by
        // the kernel), and run beside the other links' detach they slowed
        // it from 0.1 to 0.7 s.
        if !uprobes.is_empty() {
            let spawned = std::thread::Builder::new()
                .name("uprobe-detach".into())
                .spawn(move || crate::capture::loader::detach_all(uprobes));
            if let Err(error) = spawned {
                tracing::warn!(%error, "detaching the TLS uprobes");
            }
        }
        self.snapshot()
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

/// Library consumers' copies of what the pipeline produces (tests, embedding).
/// Bounded: a consumer that falls behind loses items, counted.
#[derive(Default)]
pub struct Taps {
    pub events: Option<mpsc::Sender<Observed>>,
    pub spans: Option<mpsc::Sender<Span>>,
}

/// Loads and attaches the kernel programs, registers the sockets already open and
/// starts the pipeline and the outputs the settings ask for.
pub async fn start(settings: &Settings, taps: Taps) -> anyhow::Result<AgentHandle> {
    let own_tgid = std::process::id();
    let crate::capture::Started {
        capture,
        ring,
        attached,
        path: capture_path,
        sampler,
    } = Capture::start(settings, own_tgid)?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (exporters_shutdown, exporters_rx) = watch::channel(false);
    let capture = Arc::new(Mutex::new(capture));
    let metrics = Arc::new(SelfMetrics::default());
    // TLS plaintext: uprobes on OpenSSL files as processes map them.
    let tls = settings
        .tls
        .then(|| crate::tls::probes::TlsProbes::spawn(Arc::clone(&capture), Arc::clone(&metrics)));
    SelfMetrics::set(&metrics.queue_capacity, settings.event_queue as u64);
    // `/readyz`: true once the programs are attached and the reader runs, and
    // the first pod list arrived (or did not within its timeout).
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    let k8s =
        match crate::discovery::k8s::watch::start(&settings.k8s, &metrics, shutdown_rx.clone())
            .await?
        {
            Some((k8s, task)) => {
                tasks.push(task);
                Some(k8s)
            }
            None => None,
        };

    // OTLP: spans through a bounded queue to their exporter task; metrics
    // recorded per service and collected by theirs.
    let mut exporters = Vec::new();
    let (mut otlp_spans, mut otlp_metrics, mut otlp_logs) = (None, None, None);
    if let Some(otlp) = &settings.otlp {
        if let Some(protocol) = otlp.logs
            && !settings.logs.exes.is_empty()
        {
            let (sink, task) = crate::logs::export::spawn(protocol, otlp, Arc::clone(&metrics))?;
            otlp_logs = Some(sink);
            exporters.push(task);
        }
        if let Some(protocol) = otlp.traces {
            let (sink, task) = otlp::spawn_spans(protocol, otlp, Arc::clone(&metrics))?;
            otlp_spans = Some(sink);
            exporters.push(task);
        }
        if let Some(protocol) = otlp.metrics {
            let (recorder, task) =
                otlp::spawn_metrics(protocol, otlp, Arc::clone(&metrics), exporters_rx.clone())?;
            otlp_metrics = Some(recorder);
            exporters.push(task);
        }
        tracing::info!(traces = ?otlp.traces, metrics = ?otlp.metrics, "OTLP export on");
    }
    // Server spans whose ids the kernel drew, for the profiler's links.
    let span_links = crate::spans::links::SpanLinks::default();
    let tracker = Tracker::new(
        &TrackerSettings {
            span_links: span_links.clone(),
            sampler: settings.sampler.clone(),
            capture_query: settings.capture_query,
            capture_headers: settings.capture_headers.clone(),
            capture_body_bytes: settings.capture_body_bytes,
            dns_ports: settings.dns_ports.clone(),
            dns_timeout_ns: settings.dns_timeout_ms * 1_000_000,
            route_patterns: settings.routes.clone(),
            max_routes: settings.max_routes,
            max_series: settings.max_series,
            spans_consumed: otlp_spans.is_some() || settings.stdout_spans || taps.spans.is_some(),
            k8s: k8s.clone(),
            tls: tls.clone(),
        },
        Arc::clone(&metrics),
        otlp_metrics,
    );
    let prometheus = match settings.prometheus_listen {
        Some(addr) => {
            let (recorders, self_metrics, capture) = (
                tracker.recorders(),
                Arc::clone(&metrics),
                Arc::clone(&capture),
            );
            let render: prometheus_server::Render = Arc::new(move || {
                let snapshot = self_metrics.snapshot(locked(&capture).losses());
                let http = locked(&recorders.http);
                let rpc = locked(&recorders.rpc);
                let dns = locked(&recorders.dns);
                crate::metrics::prometheus::render(&http, &rpc, &dns, &snapshot)
            });
            let bound =
                prometheus_server::serve(addr, render, Arc::clone(&ready), shutdown_rx.clone())
                    .await?;
            tracing::info!(address = %bound, "Prometheus metrics at http://{bound}/metrics");
            Some(bound)
        }
        None => None,
    };

    let (resolved_tx, resolved_rx) = mpsc::channel(RESOLVER_QUEUE);
    let mut processor = Processor {
        table: ConnTable::new(
            settings.max_connections,
            settings.stream_buffer_bytes,
            settings.stream_budget_mib * 1024 * 1024,
        ),
        filter: Filter::new(&settings.pids, &settings.exes, &settings.ports)?,
        resolver: Resolver::spawn(RESOLVER_QUEUE, resolved_tx)
            .context("starting resolver thread")?,
        capture: Arc::clone(&capture),
        metrics: Arc::clone(&metrics),
        clock: WallClock::new(),
        taps,
        stdout_events: settings.events,
        stdout_spans: settings.stdout_spans,
        stdout: (settings.events || settings.stdout_spans || settings.stdout_logs)
            .then(JsonLines::default),
        tcp: TcpTuples::default(),
        tracker,
        otlp_spans,
        logs: if settings.logs.exes.is_empty() {
            None
        } else {
            Some(crate::logs::LogPipeline::new(
                &settings.logs,
                otlp_logs,
                Arc::clone(&metrics),
            )?)
        },
        stdout_logs: settings.stdout_logs,
        tls,
        processes_seen: lru::LruCache::new(
            std::num::NonZeroUsize::new(PROCESSES_SEEN).unwrap_or(std::num::NonZeroUsize::MIN),
        ),
    };

    // Attached first, scanned second: a connection opened in between is seen by
    // both, and the kernel's own entry wins (the scan inserts with BPF_NOEXIST).
    let existing = tokio::task::spawn_blocking(move || procnet::scan_existing(own_tgid)).await?;
    let registered = processor.register_existing(existing);
    tracing::info!(
        sockets = registered,
        "registered connections open before start"
    );
    processor.flush();

    let (tx, rx) = mpsc::channel(reader::queue_batches(settings.event_queue));
    let reader_metrics = Arc::clone(&metrics);
    let poll = Duration::from_millis(settings.ring_buffer_poll_ms);
    let reader = tokio::spawn(async move {
        if let Err(error) = reader::run(ring, poll, tx, reader_metrics, shutdown_rx).await {
            tracing::error!(error = %format!("{error:#}"), "ring buffer reader failed");
        }
    });
    let processor = tokio::spawn(processor.run(rx, resolved_rx));
    tasks.extend([reader, processor]);
    match &k8s {
        None => ready.store(true, std::sync::atomic::Ordering::Relaxed),
        Some(k8s) => {
            let (k8s, ready, timeout) = (
                Arc::clone(k8s),
                Arc::clone(&ready),
                settings.k8s.ready_timeout,
            );
            tokio::spawn(async move {
                if !k8s.store.wait_listed(timeout).await {
                    tracing::warn!(
                        ?timeout,
                        "no Kubernetes pod list yet; ready anyway (pods are named once it arrives)"
                    );
                }
                ready.store(true, std::sync::atomic::Ordering::Relaxed);
            });
        }
    }
    let profiling = match sampler {
        Some(sampler) => Some(Profiling::start(
            &settings.profiling,
            sampler,
            Arc::clone(&metrics),
            k8s,
            span_links,
        )?),
        None => None,
    };
    Ok(AgentHandle {
        profiling,
        shutdown,
        tasks,
        exporters_shutdown,
        exporters,
        capture,
        metrics,
        attached,
        capture_path,
        prometheus,
    })
}

struct Processor {
    table: ConnTable,
    filter: Filter,
    resolver: Resolver,
    capture: Arc<Mutex<Capture>>,
    metrics: Arc<SelfMetrics>,
    clock: WallClock,
    taps: Taps,
    stdout_events: bool,
    stdout_spans: bool,
    stdout: Option<JsonLines>,
    tracker: Tracker,
    otlp_spans: Option<otlp::SpanSink>,
    /// `--logs`: which processes, their lines, where the records go.
    logs: Option<crate::logs::LogPipeline>,
    stdout_logs: bool,
    /// Joins TCP state changes to connections (local addresses).
    tcp: TcpTuples,
    tls: Option<crate::tls::probes::TlsProbes>,
    /// Processes whose first connection was seen: the TLS thread looks at
    /// each one's libraries once (again if it falls out of this LRU).
    processes_seen: lru::LruCache<u32, ()>,
}

impl Processor {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<Vec<Record>>,
        mut resolved: mpsc::Receiver<Resolution>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                batch = events.recv() => match batch {
                    Some(batch) => {
                        self.handle_batch(batch);
                        // Take whatever else is queued before flushing output.
                        while let Ok(batch) = events.try_recv() {
                            self.handle_batch(batch);
                        }
                        self.flush();
                    }
                    None => break,
                },
                Some(resolution) = resolved.recv() => self.apply_resolution(resolution),
                _ = tick.tick() => {
                    let mut spans = Vec::new();
                    self.tracker.expire(monotonic_ns(), &mut spans);
                    for span in spans {
                        self.emit_span(span);
                    }
                    self.flush();
                    if let Some(logs) = &mut self.logs {
                        let records = logs.tick(&self.capture, monotonic_ns(), |ns| self.clock.unix_ns(ns));
                        self.emit_logs(records);
                    }
                    SelfMetrics::set(&self.metrics.connections_tracked, self.table.len() as u64);
                    SelfMetrics::set(&self.metrics.stream_bytes_buffered, self.table.buffered() as u64);
                }
            }
        }
        self.flush();
    }

    fn handle_batch(&mut self, batch: Vec<Record>) {
        // The reader counted these in when it queued them.
        self.metrics
            .queue_len
            .fetch_sub(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for record in batch {
            self.handle_record(record);
        }
    }

    fn handle_record(&mut self, record: Record) {
        match record {
            Record::Socket(event) => self.handle(event),
            Record::TcpState(state) => {
                if let Some((key, local)) = self.tcp.on_state(&state) {
                    self.set_tcp_local(key, local);
                }
            }
            Record::Log(write) => {
                let Some(logs) = &mut self.logs else {
                    return;
                };
                let (clock, tracker) = (&self.clock, &mut self.tracker);
                let tgid = write.tgid;
                let records = logs.write(write, |ns| clock.unix_ns(ns), || tracker.resource(tgid));
                self.emit_logs(records);
            }
        }
    }

    fn emit_logs(&mut self, records: Vec<crate::logs::record::LogRecord>) {
        for record in records {
            if self.stdout_logs
                && let Some(out) = &mut self.stdout
            {
                out.write(&record);
            }
            if let Some(logs) = &self.logs {
                logs.send(record);
            }
        }
    }

    fn handle(&mut self, mut event: Event) {
        let key = ConnKey {
            tgid: event.tgid,
            fd: event.fd,
            conn_id: event.conn_id,
        };
        // The kernel names the thread once per connection; only an --exe
        // filter needs the name before the connection is looked up anyway.
        if event.comm.is_empty()
            && self.filter.judges_by_name()
            && let Some(conn) = self.table.get(&key)
        {
            event.comm = conn.comm;
        }
        if !self.filter.process_allowed(event.tgid, event.comm) {
            SelfMetrics::add(&self.metrics.events_filtered, 1);
            // The kernel skips it from now on (until it execs); only events
            // already in flight, or after the verdict aged out, get here.
            locked(&self.capture).deny(event.tgid);
            return;
        }
        if event.flags & agent_common::flags::TLS != 0 {
            SelfMetrics::add(&self.metrics.tls_records, 1);
        }
        if let Some(ids) = event.trace {
            let profiled = event.flags & agent_common::flags::PROFILED != 0;
            self.tracker.kernel_ids(key, event.ts_ns, ids, profiled);
        }
        if event.direction.is_some() {
            let missed = u64::try_from(event.bytes)
                .unwrap_or(0)
                .saturating_sub(event.payload.len() as u64);
            SelfMetrics::add(&self.metrics.bytes_not_captured, missed);
        }
        // The payload moves into the connection's stream; a copy is kept only
        // when someone watches raw events.
        let observing = self.stdout_events || self.taps.events.is_some();
        let observed_payload = observing.then(|| event.payload.clone());
        let applied = self.table.apply(&mut event);
        if applied.evicted {
            SelfMetrics::add(&self.metrics.connections_evicted, 1);
        }
        SelfMetrics::add(
            &self.metrics.stream_bytes_dropped,
            applied.stream_bytes_dropped,
        );
        if applied.created {
            if let Some(tls) = &self.tls
                && self.processes_seen.put(event.tgid, ()).is_none()
            {
                tls.look_at(event.tgid);
            }
            let local = match event.kind {
                EventKind::Accept => event.addr.and_then(|peer| self.tcp.on_accept(peer)),
                EventKind::Connect => {
                    self.tracker.on_connect(key, event.tid);
                    self.tcp.on_connect(event.tid, key)
                }
                _ => None,
            };
            if let Some(local) = local {
                self.set_tcp_local(key, local);
            }
            let known = self.table.get(&key).is_some_and(|c| c.local.is_some());
            if known {
                // Nothing left to resolve.
            } else if self.filter.has_port_filter()
                && !self
                    .filter
                    .ports_allowed(self.table.get(&key).and_then(|c| c.peer), None)
            {
                // The port filter needs the local port before deciding.
                for resolution in resolver::resolve_batch(&[key]) {
                    self.apply_resolution(resolution);
                }
            } else if !self.resolver.request(key) {
                SelfMetrics::add(&self.metrics.dropped_resolver_full, 1);
            }
        }
        let mut closed = applied.closed;
        let conn = closed.as_ref().or_else(|| self.table.get(&key));
        let allowed = self
            .filter
            .ports_allowed(conn.and_then(|c| c.peer), conn.and_then(|c| c.local));
        if !allowed {
            SelfMetrics::add(&self.metrics.events_filtered, 1);
            if let Some(direction) = event.direction {
                // Not ours: the bytes are not kept for parsers either.
                drop(self.table.take_chunks(&key, direction));
                // Both ends known: the verdict is final, the kernel can skip it.
                if let Some(conn) = self.table.get_mut(&key)
                    && conn.peer.is_some()
                    && conn.local.is_some()
                {
                    self.mark_opaque(key);
                }
            }
            return;
        }
        // Protocol parsing: spans come out of here.
        let mut spans = Vec::new();
        if let Some(direction) = event.direction {
            let chunks = self.table.take_chunks(&key, direction);
            if let Some(conn) = self.table.get_mut(&key) {
                self.tracker
                    .on_data(conn, direction, chunks, event.tid, &mut spans);
                // No parser wants it: the kernel stops copying its bytes.
                if matches!(conn.protocol, crate::flows::Protocol::Ciphertext) {
                    self.mark_ciphertext(key);
                } else if matches!(conn.protocol, crate::flows::Protocol::Other) {
                    self.mark_opaque(key);
                } else if !conn.kernel_frames && conn.protocol.kernel_frames() {
                    conn.kernel_frames = true;
                    locked(&self.capture).mark_frames(key.tgid, key.fd, key.conn_id);
                }
            }
        } else if let Some(conn) = &mut closed {
            self.tracker.on_close(conn, event.tid, &mut spans);
        }
        if let Some(payload) = observed_payload {
            event.payload = payload;
            let conn = closed.as_ref().or_else(|| self.table.get(&key));
            let observed = Observed::new(event, conn, &self.clock);
            self.emit(observed);
        }
        for span in spans {
            self.emit_span(span);
        }
    }

    /// Tells the kernel to skip a connection's ciphertext (not the plaintext
    /// its TLS library may still give), once.
    fn mark_ciphertext(&mut self, key: ConnKey) {
        if let Some(conn) = self.table.get_mut(&key)
            && !conn.kernel_opaque
        {
            conn.kernel_opaque = true;
            locked(&self.capture).mark_ciphertext(key.tgid, key.fd, key.conn_id);
        }
    }

    /// Tells the kernel to skip a connection's data, once.
    fn mark_opaque(&mut self, key: ConnKey) {
        if let Some(conn) = self.table.get_mut(&key)
            && !conn.kernel_opaque
        {
            conn.kernel_opaque = true;
            SelfMetrics::add(&self.metrics.connections_opaque, 1);
            locked(&self.capture).mark_opaque(key.tgid, key.fd, key.conn_id);
        }
    }

    fn emit_span(&mut self, span: Span) {
        if let Some(sink) = &self.otlp_spans {
            sink.send(span.clone());
        }
        if self.stdout_spans
            && let Some(out) = &mut self.stdout
        {
            out.write(&span);
        }
        if let Some(tap) = &self.taps.spans
            && tap.try_send(span).is_err()
        {
            SelfMetrics::add(&self.metrics.dropped_span_queue_full, 1);
        }
    }

    fn set_tcp_local(&mut self, key: ConnKey, local: std::net::SocketAddr) {
        if let Some(conn) = self.table.get_mut(&key) {
            conn.local = Some(local);
            conn.transport = Some(Transport::Tcp);
        }
    }

    fn emit(&mut self, observed: Observed) {
        if self.stdout_events
            && let Some(out) = &mut self.stdout
        {
            out.write(&observed);
        }
        if let Some(tap) = &self.taps.events
            && tap.try_send(observed).is_err()
        {
            SelfMetrics::add(&self.metrics.dropped_tap_full, 1);
        }
    }

    fn flush(&mut self) {
        if let Some(out) = &mut self.stdout {
            out.flush();
        }
    }

    fn apply_resolution(&mut self, resolution: Resolution) {
        match resolution {
            Resolution::Inet {
                key,
                transport,
                local,
                remote,
            } => {
                if let Some(conn) = self.table.get_mut(&key) {
                    conn.transport = Some(transport);
                    conn.local = Some(local);
                    if conn.peer.is_none() && remote.port() != 0 {
                        conn.peer = Some(remote);
                    }
                }
            }
            Resolution::NotInet { key } => {
                // procfs answers after the fact: the fd may already be closed and
                // reused. A connection whose IP peer the kernel reported is an IP
                // socket whatever the fd is now; only discovered sockets without
                // an address (Unix, netlink…) are dropped and ignored.
                if self.table.get(&key).is_some_and(|c| c.peer.is_none()) {
                    self.table.remove(&key);
                    locked(&self.capture).ignore(key.tgid, key.fd, key.conn_id);
                }
            }
            Resolution::Gone { .. } => {}
        }
    }

    /// Registers sockets found open at start in the kernel and the table; returns
    /// how many were registered.
    fn register_existing(&mut self, sockets: Vec<ExistingSocket>) -> usize {
        let mut registered = 0;
        for (i, s) in sockets.into_iter().enumerate() {
            let role = match (s.socket.transport, s.accepted) {
                (Transport::Tcp, true) => flags::ROLE_SERVER,
                (Transport::Tcp, false) => flags::ROLE_CLIENT,
                (Transport::Udp, _) => 0,
            };
            // Distinct ids even within one clock tick.
            let conn_id = monotonic_ns() + i as u64;
            let info = SockInfo {
                conn_id,
                flags: flags::PREEXISTING | role,
                _pad: 0,
            };
            let inserted = locked(&self.capture).track_existing(s.tgid, s.fd, info);
            if let Err(error) = inserted {
                tracing::debug!(tgid = s.tgid, fd = s.fd, error = %format!("{error:#}"), "existing socket not registered");
                continue;
            }
            registered += 1;
            let remote = (s.socket.remote.port() != 0).then_some(s.socket.remote);
            let mut event = Event {
                kind: EventKind::Existing,
                ts_ns: monotonic_ns(),
                tgid: s.tgid,
                tid: s.tgid,
                fd: s.fd,
                conn_id,
                syscall: Syscall::Connect,
                direction: None,
                bytes: 0,
                payload: Vec::new(),
                flags: info.flags,
                addr: remote,
                comm: comm_of(s.tgid).as_str().into(),
                trace: None,
            };
            let key = ConnKey {
                tgid: s.tgid,
                fd: s.fd,
                conn_id,
            };
            if !self.filter.process_allowed(event.tgid, event.comm) {
                continue;
            }
            // No payload to move: the event stays whole for `Observed`.
            self.table.apply(&mut event);
            self.apply_resolution(Resolution::Inet {
                key,
                transport: s.socket.transport,
                local: s.socket.local,
                remote: s.socket.remote,
            });
            let conn = self.table.get(&key);
            if self
                .filter
                .ports_allowed(conn.and_then(|c| c.peer), conn.and_then(|c| c.local))
            {
                let observed = Observed::new(event, conn, &self.clock);
                self.emit(observed);
            }
        }
        registered
    }
}

fn comm_of(tgid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{tgid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}
