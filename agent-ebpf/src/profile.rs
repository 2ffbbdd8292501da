//! CPU sampling: a `perf_event` program on the software `cpu-clock` event, one
//! per online CPU, counts (process, thread name, user stack, kernel stack) in
//! the kernel, so userspace reads one entry per distinct stack instead of one
//! record per sample.
//!
//! Two map sets (counts + stacks) alternate: userspace flips [`PROFILE_SET`],
//! waits for samples already running to finish, then drains and clears the set
//! the sampler left. A sample lands in exactly one set, so nothing is lost or
//! counted twice at the boundary. Stack ids are only meaningful within their
//! set's stack map, which is why stacks are double-buffered too.
//!
//! The first sample of a process announces it on [`PROFILE_PROCS`] so userspace
//! reads its memory map while it is alive: a short-lived process may be gone by
//! the time its samples are drained.

use agent_common::{Loss, NewProcess, ProfileKey};
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{map, perf_event, tracepoint},
    maps::{Array, LruHashMap, PerCpuHashMap, RingBuf, StackTrace},
    programs::{PerfEventContext, TracePointContext, tracing::StackIdContext as _},
};

use crate::count_loss;

/// Which set (0 or 1) samples go to; written by userspace.
#[map(name = "PROFILE_SET")]
static PROFILE_SET: Array<u32> = Array::with_max_entries(1, 0);

// Sizes are set by userspace from CPUs × frequency × interval.
#[map(name = "PROFILE_COUNTS_0")]
static COUNTS_0: PerCpuHashMap<ProfileKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);
#[map(name = "PROFILE_COUNTS_1")]
static COUNTS_1: PerCpuHashMap<ProfileKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);
#[map(name = "PROFILE_STACKS_0")]
static STACKS_0: StackTrace = StackTrace::with_max_entries(4096, 0);
#[map(name = "PROFILE_STACKS_1")]
static STACKS_1: StackTrace = StackTrace::with_max_entries(4096, 0);

/// Processes already announced. Cleared for a tgid when it execs, so the new
/// program image is announced again. Not cleared at exit: an exiting task is
/// still sampled after `sched_process_exit`, with its memory map already gone,
/// and would be announced as an empty process. A reused pid is rare and not
/// announced; userspace reads it at the next drain instead.
#[map(name = "PROFILE_SEEN")]
static SEEN: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16384, 0);

#[map(name = "PROFILE_PROCS")]
static PROCS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

const BPF_F_USER_STACK: u64 = 1 << 8;
const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;

#[perf_event]
pub fn profile_cpu(ctx: PerfEventContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // tgid 0 is the idle task: time nobody spent.
    if tgid == 0 {
        return 0;
    }
    let set = PROFILE_SET.get(0).copied().unwrap_or(0);
    let result = if set == 0 {
        record(&ctx, tgid, &STACKS_0, &COUNTS_0)
    } else {
        record(&ctx, tgid, &STACKS_1, &COUNTS_1)
    };
    if let Err(reason) = result {
        count_loss(reason);
    }
    announce(tgid);
    0
}

#[inline(always)]
fn record(
    ctx: &PerfEventContext,
    tgid: u32,
    stacks: &StackTrace,
    counts: &PerCpuHashMap<ProfileKey, u64>,
) -> Result<(), Loss> {
    let key = ProfileKey {
        tgid,
        user_stack: stack_id(ctx, stacks, BPF_F_USER_STACK),
        kernel_stack: stack_id(ctx, stacks, 0),
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        span_id: crate::trace_ctx::sampled(bpf_get_current_pid_tgid()),
    };
    if let Some(count) = counts.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a per-CPU value; only this CPU writes it,
        // and a perf event does not nest on its own CPU.
        unsafe { *count += 1 };
        return Ok(());
    }
    // An update from a program writes only this CPU's slot (others start at
    // 0), so this is right even if another CPU added the key in between: our
    // slot was 0 either way.
    counts
        .insert(key, 1u64, 0)
        .map_err(|_| Loss::ProfileCountsFull)
}

/// The stack id, or the negative errno: `-EFAULT` when there is no such stack
/// (a kernel thread's user stack), `-EEXIST` when its bucket holds another
/// stack (counted: the sample keeps its other stack and its count).
#[inline(always)]
fn stack_id(ctx: &PerfEventContext, stacks: &StackTrace, flags: u64) -> i32 {
    match ctx.get_stackid(stacks, flags) {
        Ok(id) => id as i32,
        Err(e) => {
            if e == -EEXIST {
                count_loss(Loss::ProfileStackCollision);
            }
            e
        }
    }
}

/// Tells userspace about a process on its first sample.
#[inline(always)]
fn announce(tgid: u32) {
    // SAFETY: read-only lookup of a plain value.
    if unsafe { SEEN.get(tgid) }.is_some() {
        return;
    }
    if SEEN.insert(tgid, 0u32, BPF_NOEXIST).is_err() {
        // Another CPU announced it first.
        return;
    }
    let notice = NewProcess { tgid, _pad: 0 };
    if PROCS.output::<NewProcess>(&notice, 0).is_err() {
        // Forget it, so the next sample tries again.
        let _ = SEEN.remove(tgid);
        count_loss(Loss::ProfileProcessNotice);
    }
}

/// `sched:sched_process_exec`: the process now runs another program.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let _ = SEEN.remove(tgid);
    0
}
