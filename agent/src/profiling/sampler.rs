//! The kernel side of profiling, seen from userspace: attaching the sampler to
//! every online CPU, flipping and draining the double-buffered count maps, and
//! reading process announcements.

use std::{collections::HashMap, time::Duration};

use agent_common::{NewProcess, ProfileKey, maps};
use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuHashMap, RingBuf, StackTraceMap},
    programs::{
        PerfEvent, TracePoint,
        perf_event::{PerfEventConfig, PerfEventLink, PerfEventScope, SamplePolicy, SoftwareEvent},
        trace_point::TracePointLink,
    },
};
use profiles::RawSample;

/// How long samples already running on other CPUs may take to finish after the
/// set flips. A perf-event program runs with interrupts off for microseconds;
/// this leaves orders of magnitude of margin and is paid once per interval.
const FLIP_GRACE: Duration = Duration::from_millis(10);

/// `bpf_get_stackid` error when the stack's bucket held another stack.
const EEXIST: i32 = 17;

/// Entries of each stack and count map: room for every sample of an interval
/// (user and kernel stack each) with slack against hash-bucket collisions,
/// within 4096..=32768. A stack-map entry takes ~1 KiB of kernel memory.
pub fn map_entries(cpus: usize, frequency: u64, interval: Duration) -> u32 {
    let samples = cpus as u64 * frequency * interval.as_secs().max(1);
    (4 * samples).next_power_of_two().clamp(4096, 32768) as u32
}

/// The attached sampler and its maps.
pub struct Sampler {
    _perf_links: Vec<PerfEventLink>,
    _exec_link: TracePointLink,
    set: Array<MapData, u32>,
    active: u32,
    counts: [PerCpuHashMap<MapData, ProfileKey, u64>; 2],
    stacks: [StackTraceMap<MapData>; 2],
    /// Announcements of new processes.
    pub procs: RingBuf<MapData>,
    pub cpus: usize,
}

impl Sampler {
    /// Attaches `profile_cpu` to `cpu-clock` on every online CPU at `frequency`
    /// Hz, and the exec tracepoint that resets announcements.
    pub fn attach(ebpf: &mut Ebpf, frequency: u64) -> anyhow::Result<Sampler> {
        let cpus = aya::util::online_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        let program: &mut PerfEvent = ebpf
            .program_mut("profile_cpu")
            .context("program profile_cpu not in the object")?
            .try_into()?;
        program.load().context("verifier (profile_cpu)")?;
        let mut perf_links = Vec::new();
        for &cpu in &cpus {
            let id = program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(frequency),
                    false,
                )
                .with_context(|| format!("perf_event_open(cpu-clock) on CPU {cpu}"))?;
            perf_links.push(program.take_link(id)?);
        }
        let exec: &mut TracePoint = ebpf
            .program_mut("sched_process_exec")
            .context("program sched_process_exec not in the object")?
            .try_into()?;
        exec.load().context("verifier (sched_process_exec)")?;
        let id = exec
            .attach("sched", "sched_process_exec")
            .context("attaching to sched:sched_process_exec")?;
        let exec_link = exec.take_link(id)?;
        let mut take = |name: &str| ebpf.take_map(name).with_context(|| format!("{name} map"));
        let mut set = Array::try_from(take(maps::PROFILE_SET)?)?;
        set.set(0, 0, 0).context("resetting PROFILE_SET")?;
        let counts = [
            PerCpuHashMap::try_from(take(maps::PROFILE_COUNTS[0])?)?,
            PerCpuHashMap::try_from(take(maps::PROFILE_COUNTS[1])?)?,
        ];
        let stacks = [
            StackTraceMap::try_from(take(maps::PROFILE_STACKS[0])?)?,
            StackTraceMap::try_from(take(maps::PROFILE_STACKS[1])?)?,
        ];
        let procs = RingBuf::try_from(take(maps::PROFILE_PROCS)?)?;
        if perf_links.is_empty() {
            bail!("no online CPU to sample");
        }
        Ok(Sampler {
            _perf_links: perf_links,
            _exec_link: exec_link,
            set,
            active: 0,
            counts,
            stacks,
            procs,
            cpus: cpus.len(),
        })
    }

    /// Processes announced since the last call.
    pub fn new_processes(&mut self) -> Vec<u32> {
        let mut tgids = Vec::new();
        while let Some(item) = self.procs.next() {
            if item.len() >= size_of::<NewProcess>() {
                // SAFETY: the kernel writes whole `NewProcess` records; read unaligned.
                let notice: NewProcess = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                tgids.push(notice.tgid);
            }
        }
        tgids
    }

    /// Switches the sampler to the other set, then empties the one it left.
    pub fn drain(&mut self) -> anyhow::Result<Vec<RawSample>> {
        let old = self.active as usize;
        let new = 1 - self.active;
        self.set
            .set(0, new, 0)
            .context("flipping the profile map set")?;
        self.active = new;
        std::thread::sleep(FLIP_GRACE);

        let counts = &mut self.counts[old];
        let keys: Vec<ProfileKey> = counts.keys().filter_map(Result::ok).collect();
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            if let Ok(per_cpu) = counts.get(&key, 0) {
                entries.push((key, per_cpu.iter().sum::<u64>()));
            }
            let _ = counts.remove(&key);
        }

        let stacks = &mut self.stacks[old];
        let mut frames: HashMap<i32, Vec<u64>> = HashMap::new();
        let mut read = |id: i32| -> Vec<u64> {
            if id < 0 {
                return Vec::new();
            }
            frames
                .entry(id)
                .or_insert_with(|| {
                    stacks
                        .get(&(id as u32), 0)
                        .map(|s| s.frames().iter().map(|f| f.ip).collect())
                        .unwrap_or_default()
                })
                .clone()
        };
        let samples = entries
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|(key, count)| RawSample {
                tgid: key.tgid,
                comm: comm(&key.comm),
                user: read(key.user_stack),
                kernel: read(key.kernel_stack),
                user_lost: key.user_stack == -EEXIST,
                kernel_lost: key.kernel_stack == -EEXIST,
                count,
                // Its trace is filled in from the spans (`SpanLinks`).
                link: (key.span_id != 0).then(|| profiles::Link {
                    trace_id: None,
                    span_id: key.span_id.to_be_bytes(),
                }),
            })
            .collect();
        // Every id goes, referenced or not, so the next round starts empty.
        let ids: Vec<u32> = stacks.stack_ids().filter_map(Result::ok).collect();
        for id in ids {
            let _ = stacks.remove(&id);
        }
        Ok(samples)
    }
}

fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}
