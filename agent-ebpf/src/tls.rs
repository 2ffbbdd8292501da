//! TLS plaintext from uprobes on OpenSSL's `SSL_read`, `SSL_write` and their
//! `_ex` forms: the bytes the application handed to, or got from, the library.
//!
//! No struct offsets: a call is tied to its socket by the socket syscall the
//! same thread makes during the call ([`claim`], called from the data path),
//! and the `SSL*` remembers that socket for calls served from OpenSSL's own
//! buffer (no syscall). "Returns" are uprobes at each RET instruction of the
//! function (userspace decodes them), never uretprobes: those break
//! seccomp-filtered programs on recent kernels (systemd#34615).
//!
//! The plaintext record is a data record of that socket with `flags::TLS`;
//! the socket is marked TLS so its ciphertext is skipped from then on.

use agent_common::{Loss, SockInfo, SockKey, Syscall, flags};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};

use crate::{AGENT_TGID, SOCKETS, capture, count_loss};

/// What the call does with its buffer.
const READ: u32 = 1;
const WRITE: u32 = 2;
/// `SSL_{read,write}_ex`: returns 1 on success, the byte count is in `*len_ptr`.
const EX: u32 = 4;

/// One TLS call in progress on a thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsCall {
    ssl: u64,
    buf: u64,
    /// `_ex` only: where the library writes the byte count.
    len_ptr: u64,
    /// The socket a syscall during the call used; -1 until then.
    fd: i32,
    op: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslKey {
    tgid: u32,
    _pad: u32,
    ssl: u64,
}

#[map(name = "TLS_CALLS")]
static TLS_CALLS: LruHashMap<u64, TlsCall> = LruHashMap::with_max_entries(16384, 0);

#[map(name = "TLS_FDS")]
static TLS_FDS: LruHashMap<SslKey, i32> = LruHashMap::with_max_entries(65536, 0);

#[inline(always)]
fn enter(ctx: &ProbeContext, op: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == AGENT_TGID.load() {
        return 0;
    }
    let call = TlsCall {
        ssl: ctx.arg(0).unwrap_or(0),
        buf: ctx.arg(1).unwrap_or(0),
        len_ptr: if op & EX != 0 {
            ctx.arg(3).unwrap_or(0)
        } else {
            0
        },
        fd: -1,
        op,
    };
    if TLS_CALLS.insert(pid_tgid, call, 0).is_err() {
        count_loss(Loss::TlsCallInsert);
    }
    0
}

#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, READ)
}

#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, READ | EX)
}

#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, WRITE)
}

#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, WRITE | EX)
}

/// `SSL_free(ssl)`: the pointer may be reused for another connection.
#[uprobe]
pub fn ssl_free(ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = SslKey {
        tgid,
        _pad: 0,
        ssl: ctx.arg(0).unwrap_or(0),
    };
    let _ = TLS_FDS.remove(key);
    0
}

/// Called by the data path for a syscall on a socket: when the thread is
/// inside a TLS call, this socket is that call's (the first one wins), the
/// socket is marked TLS, and the syscall's ciphertext is not reported (true).
#[inline(always)]
pub fn claim(pid_tgid: u64, fd: i32) -> bool {
    let Some(call) = TLS_CALLS.get_ptr_mut(pid_tgid) else {
        return false;
    };
    // SAFETY: the pointer comes from a successful lookup; one field is written.
    unsafe {
        if (*call).fd < 0 {
            (*call).fd = fd;
        }
    }
    let key = SockKey {
        tgid: (pid_tgid >> 32) as u32,
        fd,
    };
    if let Some(info) = SOCKETS.get_ptr_mut(key) {
        // SAFETY: as above.
        unsafe { mark_tls(&mut *info) };
    }
    count_loss(Loss::TlsCiphertext);
    true
}

/// A syscall on a socket already marked TLS (its ciphertext is not
/// reported): if the thread is inside a TLS call that has no socket yet,
/// this is it. Without this, a socket marked before its first probed call
/// (userspace gave up on its handshake, the library was probed late) would
/// never be tied to the call's `SSL*`.
#[inline(always)]
pub fn note_fd(pid_tgid: u64, fd: i32, info: &SockInfo) {
    if info.flags & flags::TLS == 0 {
        return;
    }
    if let Some(call) = TLS_CALLS.get_ptr_mut(pid_tgid) {
        // SAFETY: the pointer comes from a successful lookup; one field is written.
        unsafe {
            if (*call).fd < 0 {
                (*call).fd = fd;
            }
        }
    }
}

/// Marks a socket TLS at its first library call. An `OPAQUE` mark made
/// before that came from userspace giving up on its ciphertext (the library
/// was probed only after the handshake): the plaintext is parseable again.
#[inline(always)]
pub fn mark_tls(info: &mut SockInfo) {
    if info.flags & flags::TLS == 0 {
        info.flags &= !flags::OPAQUE;
    }
    info.flags |= flags::TLS;
}

/// A RET instruction of any of the four functions: the call's result, then
/// its plaintext as a data record of its socket.
#[uprobe]
pub fn ssl_return(ctx: ProbeContext) -> u32 {
    if let Err(reason) = on_return(&ctx) {
        count_loss(reason);
    }
    0
}

#[inline(always)]
fn on_return(ctx: &ProbeContext) -> Result<(), Loss> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(ptr) = TLS_CALLS.get_ptr(pid_tgid) else {
        return Ok(());
    };
    // Copied before the entry is removed (see `capture::on_exit`).
    // SAFETY: the pointer comes from a successful lookup.
    let call = unsafe { core::ptr::read_volatile(ptr) };
    let _ = TLS_CALLS.remove(pid_tgid);
    // SAFETY: `regs` is the probe's register file.
    let rax = unsafe { (*ctx.regs).rax } as i64;
    let bytes = if call.op & EX != 0 {
        if rax as i32 != 1 {
            return Ok(());
        }
        // SAFETY: bounded read of a user pointer; failure is handled.
        unsafe { bpf_probe_read_user(call.len_ptr as *const u64) }.map_err(|_| Loss::CopyFailed)?
            as i64
    } else {
        i64::from(rax as i32)
    };
    let tgid = (pid_tgid >> 32) as u32;
    let key = SslKey {
        tgid,
        _pad: 0,
        ssl: call.ssl,
    };
    // The socket is remembered even when the call yielded nothing: the
    // first call of a connection often reads only session tickets and
    // returns -1 (s_client does), yet it marked the socket TLS, so later
    // calls served without a syscall must still find it.
    if call.fd >= 0 {
        let _ = TLS_FDS.insert(key, call.fd, 0);
    }
    if bytes <= 0 {
        return Ok(());
    }
    let fd = if call.fd >= 0 {
        call.fd
    } else {
        // SAFETY: copied out at once.
        match unsafe { TLS_FDS.get(key) } {
            Some(fd) => *fd,
            None => return Err(Loss::TlsNoFd),
        }
    };
    plaintext(pid_tgid, fd, call.op & WRITE != 0, bytes, call.buf, 0)
}

/// `bytes` of plaintext at `buf` that a TLS call moved on socket `fd`, as a
/// data record of that socket with `flags::TLS` and `extra` flags.
#[inline(always)]
pub fn plaintext(
    pid_tgid: u64,
    fd: i32,
    write: bool,
    bytes: i64,
    buf: u64,
    extra: u32,
) -> Result<(), Loss> {
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: copied out at once.
    let Some(info) = (unsafe { SOCKETS.get(SockKey { tgid, fd }) }).copied() else {
        return Err(Loss::TlsNoSocket);
    };
    if info.flags & flags::IGNORED != 0 {
        return Ok(());
    }
    if info.flags & flags::OPAQUE != 0 {
        // Userspace parses nothing on it (plaintext of another protocol).
        count_loss(Loss::OpaqueSkipped);
        return Ok(());
    }
    let syscall = if write { Syscall::Write } else { Syscall::Read };
    let info = SockInfo {
        flags: info.flags | flags::TLS | extra,
        ..info
    };
    capture::emit_plaintext(pid_tgid, fd, &info, syscall, bytes, buf)
}
