//! Programs for `cargo xtask bench syscalls`' breakdown only: each attaches
//! alone to `sys_exit` and adds one piece of what the capture path does, so
//! the bench can show where each 100 ns goes (an empty program, the register
//! read, a hash lookup, a tail call, the helpers a record needs, the LRU update
//! and delete the enter/exit state cost the tracepoint path, a ring buffer
//! record). The agent never loads them.

use agent_common::SockKey;
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{map, raw_tracepoint},
    maps::{LruHashMap, RingBuf},
    programs::RawTracePointContext,
};

use crate::SOCKETS;

#[map(name = "BENCH_LRU")]
static BENCH_LRU: LruHashMap<u64, [u64; 4]> = LruHashMap::with_max_entries(1024, 0);

#[map(name = "BENCH_RING")]
static BENCH_RING: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// 88 bytes of `struct pt_regs` from `r10`, as the raw dispatcher reads them
/// (word 8 is `orig_ax`, word 6 `si`: `write`'s buffer).
#[inline(always)]
fn regs(ctx: &RawTracePointContext) -> [u64; 11] {
    let regs: u64 = ctx.arg(0);
    // SAFETY: the kernel's pointer to this task's saved registers.
    unsafe { bpf_probe_read_kernel((regs + 56) as *const [u64; 11]) }.unwrap_or([0; 11])
}

/// The syscall number, through [`regs`].
#[inline(always)]
fn read_regs(ctx: &RawTracePointContext) -> u64 {
    regs(ctx)[8]
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn bench_empty(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn bench_regs(ctx: RawTracePointContext) -> i32 {
    core::hint::black_box(read_regs(&ctx));
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn bench_lookup(ctx: RawTracePointContext) -> i32 {
    let nr = read_regs(&ctx);
    let key = SockKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        fd: -1 - nr as i32,
    };
    // SAFETY: read at once.
    core::hint::black_box(unsafe { SOCKETS.get(key) }.is_some());
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn bench_lru(ctx: RawTracePointContext) -> i32 {
    let nr = read_regs(&ctx);
    let pid_tgid = bpf_get_current_pid_tgid();
    let _ = BENCH_LRU.insert(pid_tgid, [nr; 4], 0);
    let _ = BENCH_LRU.remove(pid_tgid);
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn bench_ringbuf(ctx: RawTracePointContext) -> i32 {
    let nr = read_regs(&ctx);
    const BPF_RB_NO_WAKEUP: u64 = 1;
    let _ = BENCH_RING.output::<[u64; 16]>(&[nr; 16], BPF_RB_NO_WAKEUP);
    0
}

/// The register read as direct loads through the BTF-typed `regs` argument
/// of a `tp_btf` program (no probe-read helper).
#[aya_ebpf::macros::btf_tracepoint(function = "sys_exit")]
pub fn bench_btf_regs(ctx: aya_ebpf::programs::BtfTracePointContext) -> i32 {
    let regs: *const u64 = ctx.arg(0);
    // SAFETY: a BTF-typed pointer to `struct pt_regs`; the verifier checks the
    // offset against its fields (orig_ax at 120).
    let nr = unsafe { core::ptr::read_volatile(regs.add(15)) };
    core::hint::black_box(nr);
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn bench_ktime(ctx: RawTracePointContext) -> i32 {
    core::hint::black_box(read_regs(&ctx));
    // SAFETY: helper without preconditions.
    core::hint::black_box(unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() });
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn bench_comm(ctx: RawTracePointContext) -> i32 {
    core::hint::black_box(read_regs(&ctx));
    core::hint::black_box(aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; 16]));
    0
}

#[map(name = "BENCH_SCRATCH")]
static BENCH_SCRATCH: aya_ebpf::maps::PerCpuArray<[u8; 256]> =
    aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn bench_copy(ctx: RawTracePointContext) -> i32 {
    let buf = regs(&ctx)[6];
    if let Some(dst) = BENCH_SCRATCH.get_ptr_mut(0) {
        // SAFETY: 64 bytes into a 256-byte per-CPU buffer; the helper checks
        // the user pointer.
        unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_user(dst.cast(), 64, buf as *const _);
        }
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn bench_output(ctx: RawTracePointContext) -> i32 {
    core::hint::black_box(read_regs(&ctx));
    const BPF_RB_NO_WAKEUP: u64 = 1;
    if let Some(src) = BENCH_SCRATCH.get_ptr(0) {
        // SAFETY: 168 bytes (an event header and 64 payload bytes) of a
        // 256-byte per-CPU buffer.
        unsafe {
            aya_ebpf::helpers::generated::bpf_ringbuf_output(
                core::ptr::from_ref(&BENCH_RING).cast_mut().cast(),
                src.cast_mut().cast(),
                168,
                BPF_RB_NO_WAKEUP,
            );
        }
    }
    0
}

#[map(name = "BENCH_PROGS")]
static BENCH_PROGS: aya_ebpf::maps::ProgramArray =
    aya_ebpf::maps::ProgramArray::with_max_entries(1, 0);

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn bench_tail(ctx: RawTracePointContext) -> i32 {
    core::hint::black_box(read_regs(&ctx));
    // SAFETY: jumps to `bench_tail_target` (slot 0), which returns at once.
    unsafe { BENCH_PROGS.tail_call(&ctx, 0) };
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn bench_tail_target(_ctx: RawTracePointContext) -> i32 {
    0
}
