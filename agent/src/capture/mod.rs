//! Kernel capture: loading the programs, reading their events, reading their
//! loss counters, and the userspace view of the kernel's socket table.

pub mod event;
pub mod loader;
pub mod reader;

use agent_common::{Loss, SockInfo, SockKey, flags, maps, verdict};
use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        UProbe,
        uprobe::{UProbeLink, UProbeLinkId, UProbeScope},
    },
};

pub use event::{Comm, Direction, Event, EventKind, Record, TcpState};

/// What [`Capture::start`] hands over.
pub struct Started {
    pub capture: Capture,
    pub ring: RingBuf<MapData>,
    /// Every program of the path in use, attached or not.
    pub attached: Vec<loader::AttachResult>,
    /// Which capture path runs, and why.
    pub path: loader::PathReport,
    /// The CPU sampler, when profiling is on and could attach.
    pub sampler: Option<crate::profiling::Sampler>,
}

/// The loaded kernel side. Dropping it detaches every program.
pub struct Capture {
    /// Keeps the programs loaded (and holds the TLS uprobe programs).
    ebpf: Ebpf,
    /// Attached links; released in parallel on drop.
    links: Vec<loader::Link>,
    losses: PerCpuArray<MapData, u64>,
    sockets: HashMap<MapData, SockKey, SockInfo>,
    verdicts: HashMap<MapData, u32, u32>,
    /// Processes whose stdout/stderr is logged (`--logs`).
    log_procs: HashMap<MapData, u32, u32>,
    /// `--pin-trace-context`: the pin this agent made, removed on drop.
    pinned: Option<std::path::PathBuf>,
    /// Uprobes attached to TLS libraries (see `crate::tls`), by handle.
    uprobes: std::collections::HashMap<u64, (&'static str, UProbeLinkId)>,
    next_uprobe: u64,
}

impl Capture {
    /// Loads and attaches; returns the capture, its ring buffer, the attach
    /// report and, when profiling is on and could attach, the CPU sampler.
    pub fn start(settings: &crate::config::Settings, agent_tgid: u32) -> anyhow::Result<Started> {
        let loader::Loaded {
            mut ebpf,
            links,
            results,
            path,
        } = loader::load(settings, agent_tgid)?;
        let sampler = if settings.profiling.enabled {
            match crate::profiling::Sampler::attach(&mut ebpf, settings.profiling.frequency) {
                Ok(sampler) => Some(sampler),
                Err(error) => {
                    tracing::error!(
                        error = %format!("{error:#}"),
                        "CPU profiling unavailable; the agent runs without it"
                    );
                    None
                }
            }
        } else {
            None
        };
        let ring = RingBuf::try_from(ebpf.take_map(maps::EVENTS).context("EVENTS map")?)?;
        let losses = PerCpuArray::try_from(ebpf.take_map(maps::LOSSES).context("LOSSES map")?)?;
        let sockets = HashMap::try_from(ebpf.take_map(maps::SOCKETS).context("SOCKETS map")?)?;
        let verdicts = HashMap::try_from(ebpf.take_map(maps::VERDICTS).context("VERDICTS map")?)?;
        let log_procs =
            HashMap::try_from(ebpf.take_map(maps::LOG_PROCS).context("LOG_PROCS map")?)?;
        let pinned = settings
            .pin_trace_context
            .as_ref()
            .and_then(|path| match pin_trace_context(&ebpf, path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "thread → request map pinned");
                    Some(path.clone())
                }
                Err(error) => {
                    tracing::error!(path = %path.display(), error = %format!("{error:#}"), "thread → request map not pinned; other profilers cannot read it");
                    None
                }
            });
        Ok(Started {
            capture: Capture {
                ebpf,
                links,
                losses,
                sockets,
                verdicts,
                log_procs,
                pinned,
                uprobes: std::collections::HashMap::new(),
                next_uprobe: 0,
            },
            ring,
            attached: results,
            path,
            sampler,
        })
    }

    /// Detaches every program now (also done on drop).
    pub fn detach(&mut self) {
        loader::detach_all(std::mem::take(&mut self.links));
        loader::detach_all(self.take_uprobes());
    }

    /// The TLS uprobes, owned: dropping them detaches them. Each removal
    /// waits for a kernel grace period (40 probes took 1.8 s here), so the
    /// agent's stop lets that run beside its final flush.
    pub fn take_uprobes(&mut self) -> Vec<UProbeLink> {
        let mut owned = Vec::new();
        for (_, (program, link)) in std::mem::take(&mut self.uprobes) {
            if let Ok(p) = self.uprobe(program)
                && let Ok(link) = p.take_link(link)
            {
                owned.push(link);
            }
        }
        owned
    }

    /// A uprobe program of the object, loaded on first use.
    fn uprobe(&mut self, name: &str) -> anyhow::Result<&mut UProbe> {
        let program: &mut UProbe = self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("program {name}"))?
            .try_into()?;
        if program.fd().is_err() {
            program.load().with_context(|| format!("loading {name}"))?;
        }
        Ok(program)
    }

    /// Attaches uprobe `program` at byte `offset` of the file `target` (an
    /// absolute path), for every process that maps it; returns a handle for
    /// [`Capture::detach_uprobe`].
    pub fn attach_uprobe(
        &mut self,
        program: &'static str,
        target: &std::path::Path,
        offset: u64,
    ) -> anyhow::Result<u64> {
        let link = self
            .uprobe(program)?
            .attach(offset, target, UProbeScope::AllProcesses)
            .with_context(|| format!("uprobe {program} at {}+{offset:#x}", target.display()))?;
        self.next_uprobe += 1;
        self.uprobes.insert(self.next_uprobe, (program, link));
        Ok(self.next_uprobe)
    }

    pub fn detach_uprobe(&mut self, handle: u64) {
        if let Some((program, link)) = self.uprobes.remove(&handle)
            && let Ok(p) = self.uprobe(program)
        {
            let _ = p.detach(link);
        }
    }

    pub fn losses(&self) -> Vec<(&'static str, u64)> {
        Loss::ALL
            .iter()
            .map(|&reason| {
                let total = self
                    .losses
                    .get(&(reason as u32), 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (reason.name(), total)
            })
            .collect()
    }

    pub fn track_existing(&mut self, tgid: u32, fd: i32, info: SockInfo) -> anyhow::Result<()> {
        const BPF_NOEXIST: u64 = 1;
        self.sockets
            .insert(SockKey { tgid, fd }, info, BPF_NOEXIST)
            .context("inserting into the kernel socket table")
    }

    /// Tells the kernel to skip this socket from now on (not an IP socket), unless
    /// the fd has meanwhile been reused for another connection.
    pub fn ignore(&mut self, tgid: u32, fd: i32, conn_id: u64) {
        self.set_flag(tgid, fd, conn_id, flags::IGNORED);
    }

    /// Tells the kernel to stop copying this connection's data (no parser
    /// wants it, or the filters exclude it); its close is still reported.
    pub fn mark_opaque(&mut self, tgid: u32, fd: i32, conn_id: u64) {
        self.set_flag(tgid, fd, conn_id, flags::OPAQUE);
    }

    /// Tells the kernel this connection's bytes are TLS records it cannot
    /// read: its syscalls' data is skipped (counted), a TLS library's
    /// plaintext for it is still reported.
    pub fn mark_ciphertext(&mut self, tgid: u32, fd: i32, conn_id: u64) {
        self.set_flag(tgid, fd, conn_id, flags::TLS);
    }

    /// Tells the kernel this connection carries HTTP/2: it copies the frame
    /// headers and the payloads parsers need rather than a prefix.
    pub fn mark_frames(&mut self, tgid: u32, fd: i32, conn_id: u64) {
        self.set_flag(tgid, fd, conn_id, flags::FRAMES);
    }

    fn set_flag(&mut self, tgid: u32, fd: i32, conn_id: u64, flag: u32) {
        let key = SockKey { tgid, fd };
        if let Ok(mut info) = self.sockets.get(&key, 0)
            && info.conn_id == conn_id
        {
            info.flags |= flag;
            let _ = self.sockets.insert(key, info, 0);
        }
    }

    /// Tells the kernel to skip this process's syscalls until it execs
    /// (`--pid`/`--exe` exclude it).
    pub fn deny(&mut self, tgid: u32) {
        let _ = self.verdicts.insert(tgid, verdict::DENIED, 0);
    }

    /// Starts (or stops) reporting a process's writes to stdout and stderr.
    pub fn log_process(&mut self, tgid: u32, on: bool) -> anyhow::Result<()> {
        if on {
            self.log_procs
                .insert(tgid, 1, 0)
                .context("adding to LOG_PROCS (full?)")
        } else {
            let _ = self.log_procs.remove(&tgid);
            Ok(())
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.detach();
        if let Some(path) = self.pinned.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Pins `traces_ctx_v1` at `path`, replacing a pin a previous agent left
/// (killed before it could remove it).
fn pin_trace_context(ebpf: &Ebpf, path: &std::path::Path) -> anyhow::Result<()> {
    let map = ebpf
        .map(maps::TRACES_CTX)
        .context("no traces_ctx_v1 map in the kernel object")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {} (is bpffs mounted?)", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(path = %path.display(), "replaced a stale pin"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    map.pin(path).context("BPF_OBJ_PIN")?;
    Ok(())
}
