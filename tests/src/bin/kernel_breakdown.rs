//! `cargo xtask bench syscalls`' breakdown: ns of CPU per `write` of 64 bytes
//! to `/dev/null` with, in turn, nothing attached to `sys_exit`, an empty
//! program, the register read (probe read, or plain loads in `tp_btf`), + a
//! hash lookup, + an LRU update and delete, + a ring buffer record (the
//! `bench_*` programs of the agent's own object, one at a time). Prints one
//! JSON array of `[case, ns]`, medians over several rounds of thread CPU time.

use std::{
    fs::File,
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::RingBuf,
    programs::{BtfTracePoint, RawTracePoint},
};

const ROUNDS: usize = 7;

/// The programs; `true`: a `tp_btf` one. Every `+` row is the register read
/// plus one piece of what a traced syscall costs.
const CASES: [(&str, Option<(&str, bool)>); 12] = [
    ("nothing attached", None),
    ("empty raw_tracepoint program", Some(("bench_empty", false))),
    (
        "+ register read (probe read, 88 B)",
        Some(("bench_regs", false)),
    ),
    ("tp_btf: register loads", Some(("bench_btf_regs", true))),
    (
        "+ hash lookup (socket table miss)",
        Some(("bench_lookup", false)),
    ),
    ("+ tail call", Some(("bench_tail", false))),
    ("+ bpf_ktime_get_ns", Some(("bench_ktime", false))),
    ("+ bpf_get_current_comm", Some(("bench_comm", false))),
    ("+ 64 B bpf_probe_read_user", Some(("bench_copy", false))),
    (
        "+ ring buffer output (168 B)",
        Some(("bench_output", false)),
    ),
    (
        "+ ring buffer output (128 B, stack)",
        Some(("bench_ringbuf", false)),
    ),
    (
        "+ LRU update and delete (the old enter/exit state)",
        Some(("bench_lru", false)),
    ),
];

/// CPU time of the calling thread (ns resolution; BPF programs run inside
/// its syscalls, so their cost is part of it).
fn thread_cpu_ns() -> u64 {
    // SAFETY: zeroed timespec is a valid out-parameter.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn per_write_cpu_ns(fd: i32, iterations: usize) -> f64 {
    let payload = [b'x'; 64];
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = thread_cpu_ns();
            for _ in 0..iterations {
                // SAFETY: valid fd and buffer.
                unsafe { libc::write(fd, payload.as_ptr().cast(), payload.len()) };
            }
            (thread_cpu_ns() - start) as f64 / iterations as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn main() -> anyhow::Result<()> {
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let mut ebpf = Ebpf::load(agent::capture::loader::object()).context("loading the object")?;
    // Records are drained as they come, so the ring never fills (a full ring
    // makes the output cheaper than it is).
    let mut ring = RingBuf::try_from(ebpf.take_map("BENCH_RING").context("BENCH_RING")?)?;
    let stop = Arc::new(AtomicBool::new(false));
    let drainer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                while ring.next().is_some() {}
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let devnull = File::options().write(true).open("/dev/null")?;
    let btf = aya::Btf::from_sys_fs()?;
    {
        let target: &mut RawTracePoint = ebpf
            .program_mut("bench_tail_target")
            .context("bench_tail_target")?
            .try_into()?;
        target.load()?;
        let fd = target.fd()?.try_clone()?;
        let mut progs =
            aya::maps::ProgramArray::try_from(ebpf.map_mut("BENCH_PROGS").context("BENCH_PROGS")?)?;
        progs.set(0, &fd, 0)?;
    }
    let mut out = Vec::new();
    for (name, program) in CASES {
        let ns = match program {
            None => per_write_cpu_ns(devnull.as_raw_fd(), iterations),
            Some((program, btf_program)) => {
                let p = ebpf
                    .program_mut(program)
                    .with_context(|| format!("{program} not in the object"))?;
                if btf_program {
                    let p: &mut BtfTracePoint = p.try_into()?;
                    p.load("sys_exit", &btf)
                        .with_context(|| format!("verifier: {program}"))?;
                    let id = p.attach()?;
                    let ns = per_write_cpu_ns(devnull.as_raw_fd(), iterations);
                    p.detach(id)?;
                    ns
                } else {
                    let p: &mut RawTracePoint = p.try_into()?;
                    p.load().with_context(|| format!("verifier: {program}"))?;
                    let id = p.attach("sys_exit")?;
                    let ns = per_write_cpu_ns(devnull.as_raw_fd(), iterations);
                    p.detach(id)?;
                    ns
                }
            }
        };
        out.push(serde_json::json!([name, ns]));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = drainer.join();
    println!("{}", serde_json::Value::Array(out));
    Ok(())
}
