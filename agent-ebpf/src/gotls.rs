//! TLS plaintext from Go's `crypto/tls.(*Conn).Read` and `Write`: uprobes at
//! both entries and at each RET instruction of `Read` (userspace decodes
//! them). Never
//! uretprobes: they rewrite the return address on the stack, and Go moves
//! goroutine stacks ("unexpected return pc", golang/go#22008).
//!
//! Go ≥ 1.17's register ABI (amd64): at entry RAX = `c *Conn`, RBX and RCX
//! = `b`'s data pointer and length; at a RET RAX = `n`. R14 always holds the
//! goroutine (`g`), which is the key from entry to return: goroutines move
//! between threads, so the thread id would not do.
//!
//! `Write` is reported at its entry, where its bytes already are: reported
//! at its return it could come after the response to it, which another
//! goroutine (Go's HTTP client reads on its own) read on another CPU while
//! this one was still on its way out. `Write` writes everything or fails
//! the connection, so its length is known up front; only `Read` has RET
//! probes.
//!
//! The socket comes from the connection itself: `c.conn` is a `net.Conn`
//! interface whose data word (`c+8`) points at a `*net.TCPConn`, whose first
//! word is its `*netFD`, whose `pfd.Sysfd` is at +16 (stable since Go 1.9;
//! the same chain Coroot and eCapture read). A value that is not a socket
//! this process has in the socket table is ignored (`tls_no_socket`), so a
//! connection over something else than TCP yields nothing rather than
//! garbage. Marking that socket TLS at entry keeps the call's own syscalls
//! (ciphertext) out of the data path.
//!
//! A return with no entry is a call that was in flight when the probes were
//! attached (or whose entry the bounded table dropped): its bytes are lost.
//! The goroutine's next record carries `flags::TLS_RESYNC` so that userspace
//! parses that connection afresh from there instead of pairing a request
//! with the wrong response.

use agent_common::{Loss, SockKey, flags};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};

use crate::{AGENT_TGID, SOCKETS, count_loss, tls};

/// One goroutine of one process.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoroutineKey {
    tgid: u32,
    _pad: u32,
    g: u64,
}

/// A `Read` in progress on a goroutine.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoCall {
    buf: u64,
    fd: i32,
    /// `flags::TLS_RESYNC` when a call of this goroutine was missed before.
    extra: u32,
}

#[map(name = "GO_TLS_CALLS")]
static GO_TLS_CALLS: LruHashMap<GoroutineKey, GoCall> = LruHashMap::with_max_entries(16384, 0);

/// Goroutines whose last `Read` returned without a seen entry.
#[map(name = "GO_TLS_MISSED")]
static GO_TLS_MISSED: LruHashMap<GoroutineKey, u32> = LruHashMap::with_max_entries(4096, 0);

/// Offsets of the chain from `*tls.Conn` to the file descriptor.
const CONN_DATA: u64 = 8;
const NETFD_SYSFD: u64 = 16;

#[inline(always)]
fn key(ctx: &ProbeContext) -> Option<GoroutineKey> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == AGENT_TGID.load() {
        return None;
    }
    // SAFETY: `regs` is the probe's register file.
    let g = unsafe { (*ctx.regs).r14 };
    Some(GoroutineKey { tgid, _pad: 0, g })
}

/// The file descriptor behind `c`, read through the chain above.
#[inline(always)]
fn conn_fd(c: u64) -> Option<i32> {
    // SAFETY: bounded reads of user pointers; failures are handled.
    unsafe {
        let tcp_conn: u64 = bpf_probe_read_user((c + CONN_DATA) as *const u64).ok()?;
        let net_fd: u64 = bpf_probe_read_user(tcp_conn as *const u64).ok()?;
        let sysfd: i64 = bpf_probe_read_user((net_fd + NETFD_SYSFD) as *const i64).ok()?;
        i32::try_from(sysfd).ok()
    }
}

/// A call's socket (marked TLS, so the call's own syscalls, ciphertext, are
/// skipped) and whether a call of this goroutine was missed before it.
#[inline(always)]
fn enter(ctx: &ProbeContext, key: GoroutineKey) -> Result<(i32, u32), Loss> {
    // SAFETY: `regs` is the probe's register file.
    let c = unsafe { (*ctx.regs).rax };
    let fd = conn_fd(c).ok_or(Loss::TlsNoSocket)?;
    let Some(info) = SOCKETS.get_ptr_mut(SockKey { tgid: key.tgid, fd }) else {
        return Err(Loss::TlsNoSocket);
    };
    // SAFETY: the pointer comes from a successful lookup; one field is written.
    unsafe { tls::mark_tls(&mut *info) };
    let extra = if GO_TLS_MISSED.remove(key).is_ok() {
        flags::TLS_RESYNC
    } else {
        0
    };
    Ok((fd, extra))
}

#[uprobe]
pub fn go_tls_read(ctx: ProbeContext) -> u32 {
    let Some(key) = key(&ctx) else {
        return 0;
    };
    let entered = enter(&ctx, key).and_then(|(fd, extra)| {
        let call = GoCall {
            // SAFETY: as above.
            buf: unsafe { (*ctx.regs).rbx },
            fd,
            extra,
        };
        GO_TLS_CALLS
            .insert(key, call, 0)
            .map_err(|_| Loss::TlsCallInsert)
    });
    if let Err(reason) = entered {
        count_loss(reason);
    }
    0
}

#[uprobe]
pub fn go_tls_write(ctx: ProbeContext) -> u32 {
    let Some(key) = key(&ctx) else {
        return 0;
    };
    let written = enter(&ctx, key).and_then(|(fd, extra)| {
        // SAFETY: as above.
        let (buf, len) = unsafe { ((*ctx.regs).rbx, (*ctx.regs).rcx as i64) };
        if len <= 0 {
            return Ok(());
        }
        tls::plaintext(bpf_get_current_pid_tgid(), fd, true, len, buf, extra)
    });
    if let Err(reason) = written {
        count_loss(reason);
    }
    0
}

/// A RET instruction of `Read`.
#[uprobe]
pub fn go_tls_return(ctx: ProbeContext) -> u32 {
    if let Err(reason) = on_return(&ctx) {
        count_loss(reason);
    }
    0
}

#[inline(always)]
fn on_return(ctx: &ProbeContext) -> Result<(), Loss> {
    let Some(key) = key(ctx) else {
        return Ok(());
    };
    let Some(ptr) = GO_TLS_CALLS.get_ptr(key) else {
        let _ = GO_TLS_MISSED.insert(key, 1, 0);
        return Err(Loss::TlsCallMissed);
    };
    // Copied before the entry is removed (see `capture::on_exit`).
    // SAFETY: the pointer comes from a successful lookup.
    let call = unsafe { core::ptr::read_volatile(ptr) };
    let _ = GO_TLS_CALLS.remove(key);
    // SAFETY: as above.
    let n = unsafe { (*ctx.regs).rax } as i64;
    if n <= 0 {
        if call.extra != 0 {
            // Nothing to carry the mark: keep it for the next call.
            let _ = GO_TLS_MISSED.insert(key, 1, 0);
        }
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    tls::plaintext(pid_tgid, call.fd, false, n, call.buf, call.extra)
}
