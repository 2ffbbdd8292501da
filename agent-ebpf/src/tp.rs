//! Layout of the `syscalls:sys_enter_*` / `sys_exit_*` tracepoint records.
//!
//! Every syscall tracepoint has the 8-byte common header, then `int __syscall_nr`
//! (padded to 8), then either each argument widened to 8 bytes (enter) or `long ret`
//! (exit). Userspace tests check these offsets against the `format` files in
//! tracefs for every syscall we attach to (`agent/tests/tracepoint_format.rs`).
//!
//! Only the arguments a program actually uses may be read: the kernel rejects the
//! attachment if a program reads past the end of that tracepoint's record.

use aya_ebpf::{EbpfContext as _, programs::TracePointContext};

/// Offset of the first argument (enter) or of `ret` (exit).
pub const ARGS_OFFSET: usize = agent_common::layout::SYSCALL_ARGS;

/// Argument `index` of a `sys_enter_*` record, widened to 64 bits.
#[inline(always)]
pub fn arg(ctx: &TracePointContext, index: usize) -> u64 {
    // SAFETY: the tracepoint context is readable up to the end of its record and
    // callers only ask for arguments that syscall has.
    unsafe {
        *ctx.as_ptr()
            .cast::<u8>()
            .add(ARGS_OFFSET + 8 * index)
            .cast::<u64>()
    }
}

/// `ret` of a `sys_exit_*` record.
#[inline(always)]
pub fn ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: every exit record has `long ret` at `ARGS_OFFSET`.
    unsafe { *ctx.as_ptr().cast::<u8>().add(ARGS_OFFSET).cast::<i64>() }
}
