//! Capture logic shared by both kernel paths (see the crate docs): the
//! tracepoint pair's enter half, and the exit half both paths finish with.
//!
//! Every function here is `#[inline(always)]` and takes the syscall as a constant,
//! so each program only contains the path of its own syscall.

use agent_common::{
    EventHeader, Loss, MAX_CAPTURE_BYTES, MAX_IOV, MAX_MMSG, MAX_MMSG_IOV, MSG_PEEK, PendingCall,
    SOCKADDR_BYTES, SockInfo, SockKey, Syscall, direction, flags, kind,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated,
    },
    programs::TracePointContext,
};

use crate::{
    ACTIVE, AGENT_TGID, CAPTURE_BYTES, EVENTS, SCRATCH, SOCKETS, Scratch, count_loss, count_losses,
    output_flags, tp,
};

const EINPROGRESS: i64 = 115;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Offsets in the C structs we read from user memory (LP64).
pub const IOVEC_SIZE: u64 = 16;
const MSGHDR_NAME: u64 = 0;
const MSGHDR_NAMELEN: u64 = 8;
const MSGHDR_IOV: u64 = 16;
const MSGHDR_IOVLEN: u64 = 24;
const MMSGHDR_LEN: u64 = 56;
const MMSGHDR_SIZE: u64 = 64;

/// Offsets are masked with this (< cap ≤ MAX); lengths with `LEN_MASK` (< 2 × MAX).
pub const OFF_MASK: u32 = MAX_CAPTURE_BYTES as u32 - 1;
pub const LEN_MASK: u32 = 2 * MAX_CAPTURE_BYTES as u32 - 1;

/// CLOCK_MONOTONIC in nanoseconds; also used as connection id (see `SockInfo`).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn is_connection_syscall(syscall: Syscall) -> bool {
    matches!(
        syscall,
        Syscall::Accept | Syscall::Accept4 | Syscall::Connect
    )
}

#[inline(always)]
pub fn on_enter(ctx: &TracePointContext, syscall: Syscall) -> Result<(), Loss> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == AGENT_TGID.load() || crate::excluded(tgid, true) {
        return Ok(());
    }
    let fd = tp::arg(ctx, 0) as i32;
    // read/write/readv/writev/close work on any fd: keep state only for known
    // sockets, so file and pipe I/O costs one hash lookup and nothing more.
    if !syscall.is_socket_only() && !is_connection_syscall(syscall) {
        // SAFETY: the value is copied out immediately.
        match unsafe { SOCKETS.get(SockKey { tgid, fd }) } {
            Some(info) if reported(syscall, info) => {}
            Some(info) => {
                crate::tls::note_fd(pid_tgid, fd, info);
                return Ok(());
            }
            None if crate::logs::logged(tgid, fd, syscall) => {}
            None => return Ok(()),
        }
    }
    let call = PendingCall {
        syscall: syscall as u32,
        fd,
        arg1: if syscall == Syscall::Close {
            0
        } else {
            tp::arg(ctx, 1)
        },
        arg2: if syscall == Syscall::Close {
            0
        } else {
            tp::arg(ctx, 2)
        },
        arg3: if syscall == Syscall::Recvfrom {
            tp::arg(ctx, 3)
        } else {
            0
        },
        arg4: if matches!(syscall, Syscall::Sendto | Syscall::Recvfrom) {
            tp::arg(ctx, 4)
        } else {
            0
        },
    };
    ACTIVE
        .insert(pid_tgid, call, 0)
        .map_err(|_| Loss::EnterStateInsert)
}

/// Tracepoint path: the arguments saved by [`on_enter`], then [`finish`].
#[inline(always)]
pub fn on_exit(ctx: &TracePointContext, syscall: Syscall) -> Result<(), Loss> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let call = match ACTIVE.get_ptr(pid_tgid) {
        // Copied with a volatile read *before* the entry is removed: through a
        // shared reference the compiler may sink the loads past the delete and
        // read a freed element (seen: dig's sendmmsg was lost that way).
        // SAFETY: the pointer comes from a successful lookup.
        Some(call) => unsafe { core::ptr::read_volatile(call) },
        None => {
            // Enter always stores state for these; for the others a miss just
            // means the fd was not a socket.
            let tgid = (pid_tgid >> 32) as u32;
            if tgid != AGENT_TGID.load()
                && !crate::excluded(tgid, false)
                && (syscall.is_socket_only() || is_connection_syscall(syscall))
            {
                return Err(Loss::NoEnterState);
            }
            return Ok(());
        }
    };
    let _ = ACTIVE.remove(pid_tgid);
    if call.syscall != syscall as u32 {
        // Left behind by a thread that never exited its previous syscall.
        return Ok(());
    }
    let ret = tp::ret(ctx);
    if !worth_finishing(syscall, ret) {
        return Ok(());
    }
    finish(pid_tgid, ret, &call, syscall, None)
}

/// Whether a syscall that returned `ret` can have done anything we report.
/// Both paths check it before any map work.
#[inline(always)]
pub fn worth_finishing(syscall: Syscall, ret: i64) -> bool {
    match syscall {
        Syscall::Accept | Syscall::Accept4 => ret >= 0,
        Syscall::Connect => ret == 0 || ret == -EINPROGRESS,
        Syscall::Close => ret == 0,
        _ => ret > 0,
    }
}

/// The exit half shared by both paths, for a call that was
/// [`worth_finishing`]: `call` holds the syscall's arguments, `known` the
/// socket-table entry when the caller already looked it up and found it
/// [`wanted`].
#[inline(always)]
pub fn finish(
    pid_tgid: u64,
    ret: i64,
    call: &PendingCall,
    syscall: Syscall,
    known: Option<SockInfo>,
) -> Result<(), Loss> {
    match syscall {
        Syscall::Accept | Syscall::Accept4 => on_accept(pid_tgid, ret, call),
        Syscall::Connect => on_connect(pid_tgid, ret, call),
        Syscall::Close => on_close(pid_tgid, call),
        Syscall::Recvmmsg | Syscall::Sendmmsg => on_mmsg(pid_tgid, ret, call, syscall, known),
        _ => on_data(pid_tgid, ret, call, syscall, known),
    }
}

#[inline(always)]
fn on_accept(pid_tgid: u64, ret: i64, call: &PendingCall) -> Result<(), Loss> {
    // Unix-domain listeners are not ours. Without a peer buffer the family is
    // unknown here; userspace resolves it and marks the socket ignored.
    if call.arg1 != 0 {
        // SAFETY: bounded read of a user pointer; failure is handled.
        let family = unsafe { bpf_probe_read_user(call.arg1 as *const u16) }.unwrap_or(0);
        if family != AF_INET && family != AF_INET6 {
            return Ok(());
        }
    }
    let fd = ret as i32;
    let info = SockInfo {
        conn_id: now(),
        flags: flags::ROLE_SERVER,
        _pad: 0,
    };
    track(pid_tgid, fd, &info)?;
    // `bytes` carries the listening fd: userspace knows the local address from it
    // even when the connection is gone before procfs can be read.
    emit_conn(
        kind::ACCEPT,
        pid_tgid,
        fd,
        &info,
        call.syscall,
        i64::from(call.fd),
        call.arg1,
    )
}

#[inline(always)]
fn on_connect(pid_tgid: u64, ret: i64, call: &PendingCall) -> Result<(), Loss> {
    // Only IP sockets: Unix-domain and AF_UNSPEC (UDP "disconnect") are not ours.
    // SAFETY: bounded read of a user pointer; failure is handled.
    let family = unsafe { bpf_probe_read_user(call.arg1 as *const u16) }.unwrap_or(0);
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    let info = SockInfo {
        conn_id: now(),
        flags: flags::ROLE_CLIENT,
        _pad: 0,
    };
    track(pid_tgid, call.fd, &info)?;
    emit_conn(
        kind::CONNECT,
        pid_tgid,
        call.fd,
        &info,
        call.syscall,
        ret,
        call.arg1,
    )
}

#[inline(always)]
fn on_close(pid_tgid: u64, call: &PendingCall) -> Result<(), Loss> {
    let key = SockKey {
        tgid: (pid_tgid >> 32) as u32,
        fd: call.fd,
    };
    // Volatile copy before removal (see `on_exit`).
    let Some(ptr) = SOCKETS.get_ptr(key) else {
        return Ok(());
    };
    // SAFETY: the pointer comes from a successful lookup.
    let info = unsafe { core::ptr::read_volatile(ptr) };
    let _ = SOCKETS.remove(key);
    if info.flags & flags::IGNORED != 0 {
        return Ok(());
    }
    emit_conn(kind::CLOSE, pid_tgid, call.fd, &info, call.syscall, 0, 0)
}

fn track(pid_tgid: u64, fd: i32, info: &SockInfo) -> Result<(), Loss> {
    let key = SockKey {
        tgid: (pid_tgid >> 32) as u32,
        fd,
    };
    SOCKETS
        .insert(key, info, 0)
        .map_err(|_| Loss::SocketTableInsert)
}

/// The socket behind a data syscall, registering it when the syscall itself proves
/// it is one. `None` when it is not (or no longer) tracked, or userspace ignores it.
#[inline(always)]
fn socket_for_data(
    pid_tgid: u64,
    fd: i32,
    syscall: Syscall,
    known: Option<SockInfo>,
) -> Option<SockInfo> {
    let key = SockKey {
        tgid: (pid_tgid >> 32) as u32,
        fd,
    };
    if known.is_some() {
        return known;
    }
    // SAFETY: copied out immediately.
    let info = match unsafe { SOCKETS.get(key) }.copied() {
        Some(info) => info,
        None if syscall.is_socket_only() => {
            let info = SockInfo {
                conn_id: now(),
                flags: flags::DISCOVERED,
                _pad: 0,
            };
            if SOCKETS.insert(key, info, 0).is_err() {
                count_loss(Loss::SocketTableInsert);
            }
            // The first event of this socket names its thread (not stored).
            return Some(named(&info));
        }
        None => return None,
    };
    wanted(&info).then_some(info)
}

/// Whether a tracked socket's data is reported: not when userspace ignores it
/// (not an IP socket) or marked it opaque (counted: a skip, not a loss).
#[inline(always)]
pub fn wanted(info: &SockInfo) -> bool {
    if info.flags & flags::IGNORED != 0 {
        return false;
    }
    if info.flags & flags::TLS != 0 {
        count_loss(Loss::TlsCiphertext);
        return false;
    }
    if info.flags & flags::OPAQUE != 0 {
        count_loss(Loss::OpaqueSkipped);
        return false;
    }
    true
}

/// Whether `syscall` on a tracked socket goes on to its exit handler: its
/// close unless userspace ignores the socket, its data only if [`wanted`].
#[inline(always)]
pub fn reported(syscall: Syscall, info: &SockInfo) -> bool {
    if syscall == Syscall::Close {
        info.flags & flags::IGNORED == 0
    } else {
        wanted(info)
    }
}

/// `info` for an event that carries the thread's name.
#[inline(always)]
fn named(info: &SockInfo) -> SockInfo {
    SockInfo {
        flags: info.flags | flags::HAS_COMM,
        ..*info
    }
}

#[inline(always)]
pub fn scratch() -> Result<&'static mut Scratch, Loss> {
    match SCRATCH.get_ptr_mut(0) {
        // SAFETY: per-CPU value, used by one program at a time on this CPU.
        Some(ptr) => Ok(unsafe { &mut *ptr }),
        None => Err(Loss::Scratch),
    }
}

/// The thread's name when this event carries it (`info.flags & HAS_COMM`),
/// else zeros.
#[inline(always)]
fn comm_for(info: &SockInfo) -> [u8; 16] {
    if info.flags & flags::HAS_COMM != 0 {
        bpf_get_current_comm().unwrap_or([0; 16])
    } else {
        [0; 16]
    }
}

#[inline(always)]
fn fill_header(
    header: &mut EventHeader,
    event_kind: u32,
    pid_tgid: u64,
    fd: i32,
    info: &SockInfo,
    syscall: u32,
    comm: [u8; 16],
) {
    header.kind = event_kind;
    header.flags = info.flags;
    header.ts_ns = now();
    header.tgid = (pid_tgid >> 32) as u32;
    header.tid = pid_tgid as u32;
    header.fd = fd;
    header.syscall = syscall;
    header.conn_id = info.conn_id;
    header.bytes = 0;
    header.captured = 0;
    header.direction = 0;
    header.comm = comm;
    header.addr_len = 0;
}

/// Copies the sockaddr at `ptr` (if any) into the header.
#[inline(always)]
fn read_addr(header: &mut EventHeader, ptr: u64) {
    if ptr == 0 {
        return;
    }
    // SAFETY: bounded read into a fixed-size array; failure leaves HAS_ADDR unset.
    if let Ok(addr) = unsafe { bpf_probe_read_user(ptr as *const [u8; SOCKADDR_BYTES]) } {
        header.addr = addr;
        header.addr_len = SOCKADDR_BYTES as u32;
        header.flags |= flags::HAS_ADDR;
    }
}

#[inline(always)]
fn emit_conn(
    event_kind: u32,
    pid_tgid: u64,
    fd: i32,
    info: &SockInfo,
    syscall: u32,
    ret: i64,
    addr_ptr: u64,
) -> Result<(), Loss> {
    let buf = scratch()?;
    // Connection events always name the thread.
    let info = named(info);
    let comm = comm_for(&info);
    fill_header(
        &mut buf.header,
        event_kind,
        pid_tgid,
        fd,
        &info,
        syscall,
        comm,
    );
    buf.header.bytes = ret;
    read_addr(&mut buf.header, addr_ptr);
    EVENTS
        .output::<EventHeader>(&buf.header, output_flags())
        .map_err(|_| Loss::RingbufFull)
}

/// Runtime capture cap, bounded for the verifier.
#[inline(always)]
fn cap() -> u32 {
    let cap = CAPTURE_BYTES.load();
    if cap > MAX_CAPTURE_BYTES as u32 {
        MAX_CAPTURE_BYTES as u32
    } else {
        cap
    }
}

/// `value & MASK`, in a form the optimiser cannot drop. LLVM removes masks it can
/// prove redundant from the source's own bounds, but the verifier tracks bounds
/// differently and needs to see the mask applied to the very register it checks.
#[inline(always)]
pub fn mask<const MASK: u32>(value: u32) -> u64 {
    u64::from(core::hint::black_box(value) & MASK)
}

/// Copies `len` bytes from user `src` to `data[off..]`. `off < cap` and
/// `len ≤ cap - off` hold by construction; the masks make that visible to the
/// verifier.
#[inline(always)]
pub fn copy_user(data: &mut [u8; 3 * MAX_CAPTURE_BYTES], off: u32, src: u64, len: u32) -> bool {
    let dst = data
        .as_mut_ptr()
        .wrapping_add(mask::<OFF_MASK>(off) as usize);
    // SAFETY: dst + len stays inside `data` (see the masks); the helper checks src.
    let ret = unsafe {
        generated::bpf_probe_read_user(dst.cast(), mask::<LEN_MASK>(len) as u32, src as *const _)
    };
    ret == 0
}

/// Copies up to `want` bytes of the first `N` entries of the iovec array into
/// `buf.data`; returns bytes copied.
///
/// The running offset lives in `buf.header.captured` (map memory), read and
/// written volatile each iteration: a value loaded from a map has no tracked
/// range, so every path through one iteration reaches the next in the same
/// verifier state and is pruned there. Kept in a register, the offset's range
/// differs per path and the paths double with each iovec (32 iovecs took the
/// verifier past its 1M-instruction limit; 256 fit now).
#[inline(always)]
fn copy_iov<const N: usize>(
    buf: &mut Scratch,
    iov: u64,
    iovcnt: u64,
    want: u32,
) -> Result<u32, Loss> {
    let off_slot: *mut u32 = &mut buf.header.captured;
    // SAFETY: `off_slot` points into the per-CPU scratch value, valid and ours.
    unsafe { core::ptr::write_volatile(off_slot, 0) };
    for i in 0..N as u64 {
        if i >= iovcnt {
            break;
        }
        // SAFETY: as above.
        let off = unsafe { core::ptr::read_volatile(off_slot) };
        if off >= want {
            break;
        }
        // SAFETY: bounded read of one iovec from user memory.
        let seg = unsafe { bpf_probe_read_user((iov + i * IOVEC_SIZE) as *const [u64; 2]) }
            .map_err(|_| Loss::CopyFailed)?;
        let room = (want - off) as u64;
        let len = if seg[1] < room { seg[1] } else { room } as u32;
        if len > 0 && !copy_user(&mut buf.data, off, seg[0], len) {
            return Err(Loss::CopyFailed);
        }
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(off_slot, off + len) };
    }
    // SAFETY: as above.
    let off = unsafe { core::ptr::read_volatile(off_slot) };
    if iovcnt > N as u64 && off < want {
        count_loss(Loss::IovLimit);
    }
    Ok(off)
}

/// Up to `want` bytes of the first iovecs (a few: log writes) into `buf.data`.
#[inline(always)]
pub fn copy_iov_prefix(buf: &mut Scratch, iov: u64, iovcnt: u64, want: u32) -> Result<u32, Loss> {
    copy_iov::<8>(buf, iov, iovcnt, want)
}

/// [`submit`] for other modules' records.
#[inline(always)]
pub fn submit_record(buf: &mut Scratch, captured: u32) -> Result<(), Loss> {
    submit(buf, captured)
}

/// Sends the record in `buf` with `captured` payload bytes.
#[inline(always)]
fn submit(buf: &mut Scratch, captured: u32) -> Result<(), Loss> {
    buf.header.captured = captured;
    if (captured as i64) < buf.header.bytes {
        buf.header.flags |= flags::TRUNCATED;
    }
    let len = core::mem::size_of::<EventHeader>() as u64 + mask::<LEN_MASK>(captured);
    // SAFETY: `buf` is at least header + 2 × MAX bytes long; `len` is bounded by it.
    let ret = unsafe {
        generated::bpf_ringbuf_output(
            core::ptr::from_ref(&EVENTS).cast_mut().cast(),
            core::ptr::from_mut(buf).cast(),
            len,
            output_flags(),
        )
    };
    if ret < 0 {
        Err(Loss::RingbufFull)
    } else {
        Ok(())
    }
}

/// Starts a data record in the scratch buffer.
#[inline(always)]
fn begin_data(
    pid_tgid: u64,
    info: &SockInfo,
    call: &PendingCall,
    syscall: Syscall,
    bytes: i64,
    comm: [u8; 16],
) -> Result<&'static mut Scratch, Loss> {
    let buf = scratch()?;
    fill_header(
        &mut buf.header,
        kind::DATA,
        pid_tgid,
        call.fd,
        info,
        call.syscall,
        comm,
    );
    buf.header.bytes = bytes;
    buf.header.direction = if syscall.is_egress() {
        direction::EGRESS
    } else {
        direction::INGRESS
    };
    Ok(buf)
}

/// A TLS library's plaintext (`tls`): a data record of socket `fd`, as a
/// `read`/`write` of `bytes` at `src` would give, prefix copy only. Not
/// through [`on_data`]: its frame walk would make the uprobe program many
/// times larger, and it is verified while the TLS thread attaches (under
/// the capture lock the pipeline also takes).
#[inline(always)]
pub fn emit_plaintext(
    pid_tgid: u64,
    fd: i32,
    info: &SockInfo,
    syscall: Syscall,
    bytes: i64,
    src: u64,
) -> Result<(), Loss> {
    let call = PendingCall {
        syscall: syscall as u32,
        fd,
        arg1: src,
        arg2: bytes as u64,
        arg3: 0,
        arg4: 0,
    };
    let buf = begin_data(pid_tgid, info, &call, syscall, bytes, comm_for(info))?;
    let want = prefix_len(bytes);
    let captured = if copy_user(&mut buf.data, 0, src, want) {
        want
    } else {
        count_loss(Loss::CopyFailed);
        buf.header.flags |= flags::COPY_FAILED;
        0
    };
    submit(buf, captured)
}

/// Bytes of a `bytes`-long transfer copied: all, up to the cap.
#[inline(always)]
fn prefix_len(bytes: i64) -> u32 {
    if (bytes as u64) < cap() as u64 {
        bytes as u32
    } else {
        cap()
    }
}

/// read, write, readv, writev, recvfrom, sendto, recvmsg, sendmsg.
#[inline(always)]
fn on_data(
    pid_tgid: u64,
    ret: i64,
    call: &PendingCall,
    syscall: Syscall,
    known: Option<SockInfo>,
) -> Result<(), Loss> {
    let Some(info) = socket_for_data(pid_tgid, call.fd, syscall, known) else {
        // Not a socket: stdout or stderr of a process whose output is logged.
        if crate::logs::logged((pid_tgid >> 32) as u32, call.fd, syscall) {
            return crate::logs::on_write(pid_tgid, ret, call, syscall);
        }
        return Ok(());
    };
    // Inside a TLS library call: ciphertext, whose plaintext the library's
    // probes report.
    if crate::tls::claim(pid_tgid, call.fd) {
        return Ok(());
    }
    let peek = match syscall {
        Syscall::Recvfrom => call.arg3 & MSG_PEEK != 0,
        Syscall::Recvmsg => call.arg2 & MSG_PEEK != 0,
        _ => false,
    };
    if peek {
        count_loss(Loss::Peeked);
        return Ok(());
    }
    let buf = begin_data(pid_tgid, &info, call, syscall, ret, comm_for(&info))?;
    let seen = if syscall.is_egress() {
        flags::EGRESS_SEEN
    } else {
        flags::INGRESS_SEEN
    };
    let preface =
        info.flags & (flags::FRAMES | seen) == 0 && first_data(pid_tgid, call, syscall, ret, seen);
    if (preface || info.flags & flags::FRAMES != 0)
        && let Some(captured) = walk_frames(buf, pid_tgid, call, syscall, ret, &info, preface)
    {
        buf.header.flags |= flags::SPARSE;
        return submit(buf, captured);
    }
    // Before the copy, whose loops the verifier walks once per path here.
    if syscall.is_egress() {
        crate::trace_ctx::on_egress(pid_tgid, &info, &mut buf.header);
    } else {
        let head = || {
            if ret < 4 {
                return [0; 4];
            }
            first_buffer(call, syscall)
                // SAFETY: bounded read of user memory.
                .and_then(|b| unsafe { bpf_probe_read_user(b as *const [u8; 4]) }.ok())
                .unwrap_or([0; 4])
        };
        crate::trace_ctx::on_ingress(pid_tgid, &info, head, &mut buf.header);
    }
    let want = prefix_len(ret);
    let copied = match syscall {
        Syscall::Read | Syscall::Write | Syscall::Recvfrom | Syscall::Sendto => {
            if syscall == Syscall::Recvfrom || syscall == Syscall::Sendto {
                read_addr(&mut buf.header, call.arg4);
            }
            if copy_user(&mut buf.data, 0, call.arg1, want) {
                Ok(want)
            } else {
                Err(Loss::CopyFailed)
            }
        }
        Syscall::Readv | Syscall::Writev => copy_iov::<MAX_IOV>(buf, call.arg1, call.arg2, want),
        _ => copy_msghdr::<MAX_IOV>(buf, call.arg1, want),
    };
    let captured = match copied {
        Ok(n) => n,
        Err(reason) => {
            count_loss(reason);
            buf.header.flags |= flags::COPY_FAILED;
            0
        }
    };
    submit(buf, captured)
}

/// The frame skeleton of an HTTP/2 connection's syscall (see `frames`), or
/// `None` to copy a prefix.
#[inline(always)]
fn walk_frames(
    buf: &mut Scratch,
    pid_tgid: u64,
    call: &PendingCall,
    syscall: Syscall,
    ret: i64,
    info: &SockInfo,
    preface: bool,
) -> Option<u32> {
    let key = crate::frames::FrameKey {
        tgid: (pid_tgid >> 32) as u32,
        fd: call.fd,
        direction: buf.header.direction,
        _pad: 0,
    };
    let source = match syscall {
        Syscall::Read | Syscall::Write => (0, 0, call.arg1),
        Syscall::Recvfrom | Syscall::Sendto => {
            read_addr(&mut buf.header, call.arg4);
            (0, 0, call.arg1)
        }
        Syscall::Readv | Syscall::Writev => (call.arg1, call.arg2, 0),
        _ => {
            // SAFETY: bounded reads of user memory.
            let (iov, iovlen) = unsafe {
                (
                    bpf_probe_read_user((call.arg1 + MSGHDR_IOV) as *const u64).ok()?,
                    bpf_probe_read_user((call.arg1 + MSGHDR_IOVLEN) as *const u64).ok()?,
                )
            };
            (iov, iovlen, 0)
        }
    };
    crate::frames::walk(
        &mut buf.data,
        key,
        info.conn_id,
        source,
        ret as u32,
        cap(),
        preface,
    )
}

/// The socket's first data in one direction: marks it `seen`, and `FRAMES`
/// when it starts with the HTTP/2 client preface (true then).
#[inline(always)]
fn first_data(pid_tgid: u64, call: &PendingCall, syscall: Syscall, ret: i64, seen: u32) -> bool {
    let key = SockKey {
        tgid: (pid_tgid >> 32) as u32,
        fd: call.fd,
    };
    let buffer = first_buffer(call, syscall);
    let preface = ret >= 24
        && buffer.is_some_and(|b| {
            // SAFETY: bounded read of user memory.
            unsafe { bpf_probe_read_user(b as *const [u8; 8]) }
                .is_ok_and(|h| h[..] == agent_common::http2::PREFACE[..8])
        });
    if let Some(info) = SOCKETS.get_ptr_mut(key) {
        // SAFETY: the map value is ours to update; a racing update of the
        // same flags word only sets bits.
        unsafe {
            (*info).flags |= seen | if preface { flags::FRAMES } else { 0 };
        }
    }
    preface
}

/// Where the call's data starts in user memory (its first buffer of at
/// least 8 bytes).
#[inline(always)]
fn first_buffer(call: &PendingCall, syscall: Syscall) -> Option<u64> {
    match syscall {
        Syscall::Read | Syscall::Write | Syscall::Recvfrom | Syscall::Sendto => Some(call.arg1),
        Syscall::Readv | Syscall::Writev => first_iov(call.arg1),
        Syscall::Recvmsg | Syscall::Sendmsg => {
            // SAFETY: bounded read of user memory.
            unsafe { bpf_probe_read_user((call.arg1 + MSGHDR_IOV) as *const u64) }
                .ok()
                .and_then(first_iov)
        }
        _ => None,
    }
}

/// The base of the first iovec of the array at `iov`, if it has 8 bytes.
#[inline(always)]
fn first_iov(iov: u64) -> Option<u64> {
    // SAFETY: bounded read of user memory.
    let seg = unsafe { bpf_probe_read_user(iov as *const [u64; 2]) }.ok()?;
    (seg[1] >= 8).then_some(seg[0])
}

/// Copies the name and up to `want` bytes of the data (its first `N` iovecs)
/// of the msghdr at `msg`.
#[inline(always)]
fn copy_msghdr<const N: usize>(buf: &mut Scratch, msg: u64, want: u32) -> Result<u32, Loss> {
    // SAFETY: bounded reads of user memory; failures are handled.
    let (name, namelen, iov, iovlen) = unsafe {
        (
            bpf_probe_read_user((msg + MSGHDR_NAME) as *const u64).unwrap_or(0),
            bpf_probe_read_user((msg + MSGHDR_NAMELEN) as *const u32).unwrap_or(0),
            bpf_probe_read_user((msg + MSGHDR_IOV) as *const u64).map_err(|_| Loss::CopyFailed)?,
            bpf_probe_read_user((msg + MSGHDR_IOVLEN) as *const u64)
                .map_err(|_| Loss::CopyFailed)?,
        )
    };
    if namelen > 0 {
        read_addr(&mut buf.header, name);
    }
    copy_iov::<N>(buf, iov, iovlen, want)
}

/// sendmmsg/recvmmsg: one record per message, `ret` being the message count.
#[inline(always)]
fn on_mmsg(
    pid_tgid: u64,
    ret: i64,
    call: &PendingCall,
    syscall: Syscall,
    known: Option<SockInfo>,
) -> Result<(), Loss> {
    let Some(info) = socket_for_data(pid_tgid, call.fd, syscall, known) else {
        // Not a socket: stdout or stderr of a process whose output is logged.
        if crate::logs::logged((pid_tgid >> 32) as u32, call.fd, syscall) {
            return crate::logs::on_write(pid_tgid, ret, call, syscall);
        }
        return Ok(());
    };
    // Always named: these are rare (resolvers), and one branch on it kept
    // through the message loop doubles the verifier's states past its limit.
    let info = named(&info);
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    for i in 0..MAX_MMSG as u64 {
        if i >= ret as u64 {
            break;
        }
        let msg = call.arg1 + i * MMSGHDR_SIZE;
        // SAFETY: bounded read of user memory.
        let Ok(len) = (unsafe { bpf_probe_read_user((msg + MMSGHDR_LEN) as *const u32) }) else {
            count_loss(Loss::CopyFailed);
            continue;
        };
        let buf = begin_data(pid_tgid, &info, call, syscall, len as i64, comm)?;
        let want = if len < cap() { len } else { cap() };
        let captured = copy_msghdr::<MAX_MMSG_IOV>(buf, msg, want).unwrap_or_else(|reason| {
            count_loss(reason);
            buf.header.flags |= flags::COPY_FAILED;
            0
        });
        if let Err(reason) = submit(buf, captured) {
            count_loss(reason);
        }
    }
    if ret as u64 > MAX_MMSG as u64 {
        count_losses(Loss::MmsgLimit, ret as u64 - MAX_MMSG as u64);
    }
    Ok(())
}
