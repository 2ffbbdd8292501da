//! Writes to stdout and stderr (fd 1 and 2: pipes, ttys, files) of the
//! processes userspace listed (`--logs`), as `kind::LOG` records with the
//! ids of the request the writing thread serves (`trace_ctx`). The bytes are
//! copied, never changed: the application's output stays as it wrote it.

use agent_common::{EventHeader, Loss, MAX_CAPTURE_BYTES, PendingCall, Syscall, flags, kind};
use aya_ebpf::{Global, macros::map, maps::HashMap};

use crate::{
    Scratch,
    capture::{copy_iov_prefix, copy_user, scratch, submit_record},
};

/// 1 when any process is logged: otherwise no lookup on any write.
#[unsafe(no_mangle)]
static LOGGING: Global<u32> = Global::new(0);

/// Processes whose output is reported; filled and emptied by userspace.
#[map(name = "LOG_PROCS")]
static LOG_PROCS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Whether this call writes a listed process's output (checked by both
/// capture paths before anything else is done for a non-socket fd).
#[inline(always)]
pub fn logged(tgid: u32, fd: i32, syscall: Syscall) -> bool {
    matches!(syscall, Syscall::Write | Syscall::Writev)
        && (fd == 1 || fd == 2)
        && LOGGING.load() != 0
        // SAFETY: only presence is checked.
        && unsafe { LOG_PROCS.get(tgid) }.is_some()
}

/// The record of one write of `ret` bytes.
#[inline(always)]
pub fn on_write(pid_tgid: u64, ret: i64, call: &PendingCall, syscall: Syscall) -> Result<(), Loss> {
    let buf: &mut Scratch = scratch()?;
    let header: &mut EventHeader = &mut buf.header;
    header.kind = kind::LOG;
    header.flags = 0;
    header.ts_ns = crate::capture::now();
    header.tgid = (pid_tgid >> 32) as u32;
    header.tid = pid_tgid as u32;
    header.fd = call.fd;
    header.syscall = syscall as u32;
    header.conn_id = 0;
    header.bytes = ret;
    header.captured = 0;
    header.direction = 0;
    header.addr_len = 0;
    header.comm = [0; 16];
    if let Some(ctx) = crate::trace_ctx::current(pid_tgid) {
        header.trace_id = ctx.trace_id;
        header.span_id = ctx.span_id;
        header.flags |= flags::TRACE_CTX;
    }
    let want = if (ret as u64) < MAX_CAPTURE_BYTES as u64 {
        ret as u32
    } else {
        MAX_CAPTURE_BYTES as u32
    };
    let captured = if syscall == Syscall::Write {
        if copy_user(&mut buf.data, 0, call.arg1, want) {
            want
        } else {
            0
        }
    } else {
        copy_iov_prefix(buf, call.arg1, call.arg2, want).unwrap_or(0)
    };
    if captured == 0 && want > 0 {
        count_copy_failed(buf);
    }
    submit_record(buf, captured)
}

#[inline(always)]
fn count_copy_failed(buf: &mut Scratch) {
    crate::count_loss(Loss::CopyFailed);
    buf.header.flags |= flags::COPY_FAILED;
}
