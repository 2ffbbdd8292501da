//! Continuous CPU profiling: the kernel samples every CPU (`agent-ebpf`'s
//! `profile` programs); a dedicated thread here reads process announcements as
//! they come, and every interval drains the counts, symbolizes them into one
//! profile per service (`profiles` crate) and hands them to the outputs: local
//! files on the thread itself, Pyroscope and OTLP on an async exporter task.
//!
//! A thread rather than a task: symbolization reads and parses binaries, which
//! would stall the tokio workers that carry the request pipeline.

pub mod sampler;
mod target;

use std::{
    os::fd::AsRawFd as _,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use profiles::{
    Collector, CollectorLimits, Profile, Window,
    export::{
        local,
        otlp::{OtlpConfig, OtlpExporter, Protocol},
        pyroscope::PyroscopeClient,
    },
    pprof,
};
use tokio::{sync::mpsc, task::JoinHandle};

pub use sampler::Sampler;

use crate::{config::ProfilingSettings, discovery::Discovery, self_metrics::SelfMetrics};

/// Called on the profiler thread after each interval (the binary returns the
/// allocator's freed memory to the system there).
static AFTER_INTERVAL: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what runs on the profiler thread after each interval; first call wins.
pub fn set_after_interval(hook: fn()) {
    let _ = AFTER_INTERVAL.set(hook);
}

/// Intervals waiting for the exporter; more are dropped (and counted) while a
/// backend is slow.
const EXPORT_QUEUE: usize = 4;
/// Longest wait for the final interval's profiles at stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for process announcements between checks for stop.
const POLL: Duration = Duration::from_millis(100);

/// One interval's profiles with their gzipped pprof.
type Batch = Vec<(Profile, Vec<u8>)>;

/// The running profiler.
pub struct Profiling {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    exporter: Option<JoinHandle<()>>,
}

impl Profiling {
    /// Starts the profiling thread and, when a backend is configured, the exporter.
    pub fn start(
        settings: &ProfilingSettings,
        sampler: Sampler,
        metrics: Arc<SelfMetrics>,
        k8s: Option<Arc<crate::discovery::k8s::K8s>>,
        links: crate::spans::links::SpanLinks,
    ) -> anyhow::Result<Profiling> {
        let (tx, exporter) = match Exporter::new(settings)? {
            Some(exporter) => {
                let (tx, rx) = mpsc::channel(EXPORT_QUEUE);
                let task = tokio::spawn(exporter.run(rx, Arc::clone(&metrics)));
                (Some(tx), Some(task))
            }
            None => (None, None),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (period_ns, interval, dir) = (
            1_000_000_000 / settings.frequency,
            settings.interval,
            settings.dir.clone(),
        );
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("profiler".into())
            .spawn(move || {
                // Built on the thread: blazesym's caches are not `Send`.
                let worker = Worker {
                    sampler,
                    collector: Collector::new("/proc", CollectorLimits::default()),
                    discovery: Discovery::new(k8s),
                    period_ns,
                    interval,
                    dir,
                    tx,
                    metrics,
                    links,
                };
                worker.run(&flag)
            })
            .context("starting the profiler thread")?;
        tracing::info!(
            frequency_hz = settings.frequency,
            interval = ?settings.interval,
            pyroscope = settings.pyroscope_url.as_deref().unwrap_or("off"),
            otlp = settings.otlp.as_ref().map_or("off", |o| o.endpoint.as_str()),
            dir = %settings.dir.as_ref().map_or("off".into(), |d| d.display().to_string()),
            "CPU profiling on"
        );
        Ok(Profiling {
            stop,
            thread: Some(thread),
            exporter,
        })
    }

    /// Drains and exports what was sampled so far, then stops. Bounded by
    /// [`STOP_TIMEOUT`]: past it the last partial interval is given up (and
    /// said so) rather than holding up the agent's exit.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let flushed = async {
            if let Some(thread) = self.thread.take() {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
            if let Some(exporter) = self.exporter.take() {
                let _ = exporter.await;
            }
        };
        if tokio::time::timeout(STOP_TIMEOUT, flushed).await.is_err() {
            tracing::warn!(
                "the last profiles were not written or sent within {STOP_TIMEOUT:?}; stopping without them"
            );
        }
    }
}

impl Drop for Profiling {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Worker {
    sampler: Sampler,
    collector: Collector,
    discovery: Discovery,
    period_ns: u64,
    interval: Duration,
    dir: Option<PathBuf>,
    tx: Option<mpsc::Sender<Batch>>,
    metrics: Arc<SelfMetrics>,
    links: crate::spans::links::SpanLinks,
}

impl Worker {
    fn run(mut self, stop: &AtomicBool) {
        let mut window_start = SystemTime::now();
        let mut next = Instant::now() + self.interval;
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            let wait = next.saturating_duration_since(Instant::now()).min(POLL);
            if !stopping && !wait.is_zero() {
                wait_readable(self.sampler.procs.as_raw_fd(), wait);
            }
            for tgid in self.sampler.new_processes() {
                let target = target::announced(&mut self.discovery, tgid);
                self.collector.announce(tgid, target);
            }
            if stopping || Instant::now() >= next {
                let now = SystemTime::now();
                self.interval_done(window_start, now);
                if let Some(hook) = AFTER_INTERVAL.get() {
                    hook();
                }
                window_start = now;
                next += self.interval;
                if next < Instant::now() {
                    next = Instant::now() + self.interval;
                }
            }
            if stopping {
                break;
            }
        }
    }

    fn interval_done(&mut self, start: SystemTime, end: SystemTime) {
        let mut raw = match self.sampler.drain() {
            Ok(raw) => raw,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "draining profile counts");
                return;
            }
        };
        let ns = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        };
        let window = Window {
            start_unix_ns: ns(start),
            duration_ns: ns(end).saturating_sub(ns(start)),
            period_ns: self.period_ns,
        };
        // Samples taken while a thread served a request: that span's trace.
        for link in raw.iter_mut().filter_map(|s| s.link.as_mut()) {
            link.trace_id = self.links.trace_of(&link.span_id);
        }
        let samples: u64 = raw.iter().map(|s| s.count).sum();
        SelfMetrics::add(&self.metrics.profile_samples, samples);
        let discovery = &mut self.discovery;
        let profiles = self
            .collector
            .collect(raw, window, |tgid, comm| target::of(discovery, tgid, comm));
        let stats = self.collector.stats();
        SelfMetrics::set(&self.metrics.profile_frames, stats.frames);
        SelfMetrics::set(
            &self.metrics.profile_frames_unsymbolized,
            stats.unsymbolized,
        );
        let (processes, modules) = self.collector.cached();
        SelfMetrics::set(&self.metrics.profile_processes_cached, processes as u64);
        SelfMetrics::set(&self.metrics.profile_modules_cached, modules as u64);

        let mut batch = Batch::with_capacity(profiles.len());
        for profile in profiles {
            let (bytes, _, folded) = pprof::encode_within_limits(&profile);
            SelfMetrics::add(&self.metrics.profile_samples_folded, folded as u64);
            if let Some(dir) = &self.dir {
                let outcome = match local::write(dir, &profile, &bytes) {
                    Ok(_) => "ok",
                    Err(error) => {
                        tracing::warn!(dir = %dir.display(), %error, "writing profile files");
                        "failed"
                    }
                };
                self.metrics.profile_export("local", outcome);
            }
            batch.push((profile, bytes));
        }
        tracing::debug!(samples, services = batch.len(), "profiles collected");
        if let Some(tx) = &self.tx
            && !batch.is_empty()
            && tx.try_send(batch).is_err()
        {
            self.metrics.profile_export("queue", "dropped");
        }
    }
}

/// Waits until `fd` is readable or `timeout` passes.
fn wait_readable(fd: i32, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis())
        .unwrap_or(i32::MAX)
        .max(1);
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// The remote outputs.
struct Exporter {
    pyroscope: Option<PyroscopeClient>,
    otlp: Option<OtlpExporter>,
}

impl Exporter {
    fn new(settings: &ProfilingSettings) -> anyhow::Result<Option<Exporter>> {
        let pyroscope = match &settings.pyroscope_url {
            Some(url) => Some(PyroscopeClient::new(
                url,
                settings.pyroscope_tenant.clone(),
                Duration::from_secs(10),
            )?),
            None => None,
        };
        let otlp = match &settings.otlp {
            Some(config) => Some(OtlpExporter::new(config.clone())?),
            None => None,
        };
        Ok((pyroscope.is_some() || otlp.is_some()).then_some(Exporter { pyroscope, otlp }))
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Batch>, metrics: Arc<SelfMetrics>) {
        while let Some(batch) = rx.recv().await {
            if let Some(client) = &self.pyroscope {
                let items: Vec<(&Profile, &[u8])> =
                    batch.iter().map(|(p, b)| (p, b.as_slice())).collect();
                let outcome = match client.push(&items).await {
                    Ok(()) => "ok",
                    Err(error) => {
                        tracing::warn!(%error, "Pyroscope push");
                        "failed"
                    }
                };
                metrics.profile_export("pyroscope", outcome);
            }
            if let Some(otlp) = &mut self.otlp {
                let profiles: Vec<Profile> = batch.iter().map(|(p, _)| p.clone()).collect();
                let request = profiles::export::otlp::request(&profiles);
                let outcome = match otlp.export(request).await {
                    Ok(()) => "ok",
                    Err(error) => {
                        tracing::warn!(%error, "OTLP profiles export");
                        "failed"
                    }
                };
                metrics.profile_export("otlp", outcome);
            }
        }
    }
}

/// OTLP profiles settings from the standard variables: the `PROFILES` signal
/// variables first, then the generic ones (`OTEL_EXPORTER_OTLP_ENDPOINT`,
/// `_PROTOCOL`, `_HEADERS`, `_TIMEOUT`, `_COMPRESSION`).
pub fn otlp_config(env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<OtlpConfig> {
    let var = |name: &str| {
        env(&format!("OTEL_EXPORTER_OTLP_PROFILES_{name}"))
            .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{name}")))
    };
    let protocol = match crate::export::otlp::protocol(env, "PROFILES")? {
        crate::export::otlp::Protocol::Grpc => Protocol::Grpc,
        crate::export::otlp::Protocol::HttpProtobuf => Protocol::HttpProtobuf,
    };
    let endpoint = match (
        env("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT"),
        env("OTEL_EXPORTER_OTLP_ENDPOINT"),
        protocol,
    ) {
        (Some(signal), _, _) => signal.trim().to_string(),
        (None, Some(base), Protocol::HttpProtobuf) => {
            format!(
                "{}/v1development/profiles",
                base.trim().trim_end_matches('/')
            )
        }
        (None, Some(base), Protocol::Grpc) => base.trim().to_string(),
        (None, None, Protocol::Grpc) => "http://localhost:4317".into(),
        (None, None, Protocol::HttpProtobuf) => {
            "http://localhost:4318/v1development/profiles".into()
        }
    };
    let headers = var("HEADERS")
        .map(|h| {
            h.split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), percent_decode(v.trim())))
                .filter(|(k, _)| !k.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let timeout = match var("TIMEOUT") {
        Some(ms) => Duration::from_millis(
            ms.trim()
                .parse()
                .with_context(|| format!("OTLP timeout {ms:?} is not milliseconds"))?,
        ),
        None => Duration::from_secs(10),
    };
    let gzip = var("COMPRESSION").as_deref().map(str::trim) == Some("gzip");
    Ok(OtlpConfig {
        protocol,
        endpoint,
        headers,
        timeout,
        gzip,
    })
}

/// `%XX` escapes in header values (the variable's format is W3C baggage-like).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_profiles_endpoint_from_standard_variables() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = otlp_config(&vars(&[])).unwrap();
        assert_eq!(
            (c.protocol, c.endpoint.as_str()),
            (Protocol::Grpc, "http://localhost:4317")
        );
        let c = otlp_config(&vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Basic%20abc,x-tenant=t1",
            ),
            ("OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ]))
        .unwrap();
        assert_eq!(c.endpoint, "http://collector:4318/v1development/profiles");
        assert_eq!(c.headers[0], ("authorization".into(), "Basic abc".into()));
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert!(c.gzip);
        let c = otlp_config(&vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            (
                "OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT",
                "http://profiles:4317",
            ),
        ]))
        .unwrap();
        assert_eq!(c.endpoint, "http://profiles:4317");
        assert!(otlp_config(&vars(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")])).is_err());
    }
}
