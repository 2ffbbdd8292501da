//! The fast path: one program on `sys_exit` (`tp_btf`, or a raw tracepoint
//! where the kernel refuses that), arguments read from the saved user
//! registers, no enter program and no enter/exit map.
//!
//! Why this works: on x86_64 `sys_exit` runs with `struct pt_regs *regs` of the
//! calling thread (`TP_PROTO(struct pt_regs *regs, long ret)`,
//! <https://github.com/torvalds/linux/blob/v6.18/include/trace/events/syscalls.h>).
//! The syscall entry saved the user registers there, and a syscall reads its
//! arguments from them without writing them back, so at exit they still hold
//! `di, si, dx, r10, r8, r9` = arguments 0–5 and `orig_ax` the syscall number
//! (<https://github.com/torvalds/linux/blob/v6.18/arch/x86/include/asm/syscall.h>).
//! Reads are complete at exit and write buffers are still in place, so nothing
//! needs the enter half: the `ACTIVE` insert, lookup and delete and half of the
//! program runs are gone. (Exceptions that do not concern us: `execve`, whose
//! registers are replaced, and `rt_sigreturn`.)
//!
//! One program runs on every syscall exit of every thread, so its early exits
//! are ordered by cost: the syscall number (one load in `tp_btf`, one 88-byte
//! probe read in the raw tracepoint), the return value, the agent's own tgid,
//! and for fd-generic calls (`read`, `write`, `readv`, `writev`, `close`) one
//! socket-table lookup, which also stops sockets userspace ignores or marked
//! opaque. What survives
//! is handed to the syscall's own handler through a tail call, so each handler
//! is the same specialised code the tracepoint path runs.
//!
//! 32-bit tasks: `sys_exit` also fires for ia32 syscalls, whose numbers and
//! registers differ. The `syscalls:*` tracepoints skip them
//! (`trace_get_syscall_nr`), and so does this program, by the user code
//! segment (`cs == __USER32_CS`). A 64-bit process issuing `int 0x80` keeps
//! `__USER_CS` and is not told apart; such code is vanishingly rare.

use agent_common::{PendingCall, SockInfo, SockKey, Syscall};
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{PerCpuArray, ProgramArray},
    programs::{BtfTracePointContext, RawTracePointContext},
};

use crate::{AGENT_TGID, SOCKETS, capture, count_loss};

/// The user registers from `r10` to `cs` (`struct pt_regs` on x86_64,
/// `arch/x86/include/asm/ptrace.h`), read with one probe read.
#[repr(C)]
#[derive(Clone, Copy)]
struct ArgRegs {
    r10: u64,
    _r9: u64,
    r8: u64,
    _ax: u64,
    _cx: u64,
    dx: u64,
    si: u64,
    di: u64,
    orig_ax: u64,
    _ip: u64,
    cs: u64,
}
/// Offset of `r10` in `struct pt_regs`.
const PT_REGS_R10: usize = 7 * 8;
/// `__USER32_CS` (`arch/x86/include/asm/segment.h`): a 32-bit task.
const USER32_CS: u64 = 0x23;

/// What the dispatcher hands its tail-called handler, on the same CPU.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExitCall {
    pub call: PendingCall,
    pub ret: i64,
    pub pid_tgid: u64,
    /// The socket-table entry, when `has_info` (fd-generic calls look it up).
    pub info: SockInfo,
    pub has_info: u32,
    pub _pad: u32,
}

#[map(name = "EXIT_CALL")]
static EXIT_CALL: PerCpuArray<ExitCall> = PerCpuArray::with_max_entries(1, 0);

/// Handler per [`Syscall`] code, filled by userspace with the `exit_*` programs
/// (raw tracepoint dispatcher) or the `btf_exit_*` ones (`tp_btf` dispatcher):
/// a tail call only reaches programs of its caller's type.
#[map(name = "EXIT_PROGS")]
static EXIT_PROGS: ProgramArray = ProgramArray::with_max_entries(16, 0);
#[map(name = "BTF_EXIT_PROGS")]
static BTF_EXIT_PROGS: ProgramArray = ProgramArray::with_max_entries(16, 0);

/// Dispatcher as a `tp_btf` program: `regs` is a BTF-typed pointer, so the
/// registers are plain loads the verifier checks against `struct pt_regs`
/// (measured here: the 88-byte probe read of the raw tracepoint costs ~40 ns
/// on every syscall of the host, these loads nothing measurable).
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_btf(ctx: BtfTracePointContext) -> i32 {
    let regs: *const u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    // SAFETY: a BTF-typed pointer to this task's `struct pt_regs`; each load
    // is at a field offset the verifier checks.
    let nr = unsafe { core::ptr::read_volatile(regs.add(PT_REGS_ORIG_AX)) };
    // The common case, any syscall we do not trace, leaves after one load.
    let Some(syscall) = Syscall::from_x86_64_nr(nr) else {
        return 0;
    };
    // SAFETY: as above.
    let r = unsafe {
        ArgRegs {
            r10: core::ptr::read_volatile(regs.add(PT_REGS_R10 / 8)),
            _r9: 0,
            r8: core::ptr::read_volatile(regs.add(PT_REGS_R8)),
            _ax: 0,
            _cx: 0,
            dx: core::ptr::read_volatile(regs.add(PT_REGS_DX)),
            si: core::ptr::read_volatile(regs.add(PT_REGS_SI)),
            di: core::ptr::read_volatile(regs.add(PT_REGS_DI)),
            orig_ax: nr,
            _ip: 0,
            cs: core::ptr::read_volatile(regs.add(PT_REGS_CS)),
        }
    };
    dispatch(&ctx, syscall, r, ret, &BTF_EXIT_PROGS);
    0
}

/// Dispatcher as a raw tracepoint, for kernels that refuse the `tp_btf` one:
/// the registers come through one probe read.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let regs: u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    // SAFETY: `regs` is the kernel's pointer to this task's saved registers;
    // the helper checks the read.
    let Ok(r) = (unsafe { bpf_probe_read_kernel((regs + PT_REGS_R10 as u64) as *const ArgRegs) })
    else {
        return 0;
    };
    let Some(syscall) = Syscall::from_x86_64_nr(r.orig_ax) else {
        return 0;
    };
    dispatch(&ctx, syscall, r, ret, &EXIT_PROGS);
    0
}

/// Word offsets in `struct pt_regs` (x86_64).
const PT_REGS_R8: usize = 9;
const PT_REGS_DX: usize = 12;
const PT_REGS_SI: usize = 13;
const PT_REGS_DI: usize = 14;
const PT_REGS_ORIG_AX: usize = 15;
const PT_REGS_CS: usize = 17;

#[inline(always)]
fn dispatch<C: EbpfContext>(
    ctx: &C,
    syscall: Syscall,
    r: ArgRegs,
    ret: i64,
    handlers: &ProgramArray,
) {
    if !capture::worth_finishing(syscall, ret) {
        return;
    }
    // The selector is the low 16 bits (with FRED the word carries more).
    if r.cs & 0xffff == USER32_CS {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == AGENT_TGID.load() || crate::excluded(tgid, true) {
        return;
    }
    let fd = r.di as i32;
    // read/write/readv/writev/close work on any fd: only known sockets go on,
    // so file and pipe I/O costs this one lookup.
    let mut known = None;
    if !syscall.is_socket_only() && !capture::is_connection_syscall(syscall) {
        // SAFETY: copied out immediately.
        match unsafe { SOCKETS.get(SockKey { tgid, fd }) } {
            // Data of opaque sockets stops here too, before the tail call.
            Some(info) if capture::reported(syscall, info) => known = Some(*info),
            Some(info) => {
                crate::tls::note_fd(pid_tgid, fd, info);
                return;
            }
            None if crate::logs::logged(tgid, fd, syscall) => {}
            None => return,
        }
    }
    let Some(slot) = EXIT_CALL.get_ptr_mut(0) else {
        return;
    };
    let call = PendingCall {
        syscall: syscall as u32,
        fd,
        arg1: r.si,
        arg2: r.dx,
        // recvfrom's flags.
        arg3: r.r10,
        // sendto/recvfrom: the sockaddr is argument 4.
        arg4: r.r8,
    };
    // SAFETY: per-CPU slot; the handler reads it on this CPU before anything
    // else can run a BPF program here (tracing programs are not preempted).
    unsafe {
        *slot = ExitCall {
            call,
            ret,
            pid_tgid,
            info: known.unwrap_or(SockInfo {
                conn_id: 0,
                flags: 0,
                _pad: 0,
            }),
            has_info: u32::from(known.is_some()),
            _pad: 0,
        };
        handlers.tail_call(ctx, syscall as u32);
    }
    // Only reached when the slot was empty.
    count_loss(agent_common::Loss::TailCall);
}

/// The handler body: what the dispatcher left in `EXIT_CALL`, finished as
/// the syscall's own specialised code.
#[inline(always)]
fn handle(syscall: Syscall) {
    if let Some(slot) = EXIT_CALL.get_ptr(0) {
        // SAFETY: written by the dispatcher on this CPU just before.
        let e = unsafe { *slot };
        let known = (e.has_info != 0).then_some(e.info);
        if let Err(reason) = capture::finish(e.pid_tgid, e.ret, &e.call, syscall, known) {
            count_loss(reason);
        }
    }
}

/// The per-syscall handlers the dispatchers tail-call, one set per program type.
macro_rules! exit_handlers {
    ($($raw:ident, $btf:ident => $syscall:expr),* $(,)?) => {$(
        #[raw_tracepoint(tracepoint = "sys_exit")]
        pub fn $raw(_ctx: RawTracePointContext) -> i32 {
            handle($syscall);
            0
        }

        #[btf_tracepoint(function = "sys_exit")]
        pub fn $btf(_ctx: BtfTracePointContext) -> i32 {
            handle($syscall);
            0
        }
    )*};
}

exit_handlers! {
    exit_read, btf_exit_read => Syscall::Read,
    exit_write, btf_exit_write => Syscall::Write,
    exit_readv, btf_exit_readv => Syscall::Readv,
    exit_writev, btf_exit_writev => Syscall::Writev,
    exit_recvfrom, btf_exit_recvfrom => Syscall::Recvfrom,
    exit_sendto, btf_exit_sendto => Syscall::Sendto,
    exit_recvmsg, btf_exit_recvmsg => Syscall::Recvmsg,
    exit_sendmsg, btf_exit_sendmsg => Syscall::Sendmsg,
    exit_recvmmsg, btf_exit_recvmmsg => Syscall::Recvmmsg,
    exit_sendmmsg, btf_exit_sendmmsg => Syscall::Sendmmsg,
    exit_accept, btf_exit_accept => Syscall::Accept,
    exit_accept4, btf_exit_accept4 => Syscall::Accept4,
    exit_connect, btf_exit_connect => Syscall::Connect,
    exit_close, btf_exit_close => Syscall::Close,
}
