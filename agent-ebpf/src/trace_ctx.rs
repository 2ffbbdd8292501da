//! Thread → the request it serves, for labelling CPU samples (and, later,
//! log lines) with the span they belong to.
//!
//! Set when a read on a server socket returns the start of an HTTP/1
//! request: the kernel draws the trace and span ids, writes them to
//! `traces_ctx_v1` (keyed by `pid_tgid`, the layout the OpenTelemetry eBPF
//! profiler and OBI read) and hands them to userspace in that data record,
//! so the server span uses exactly these ids. Cleared when the thread, after
//! writing to the request's socket, reads again without starting a request
//! (it went back to waiting), and replaced by the thread's next request.
//!
//! Never a guess: a thread that starts a second request while the first has
//! not been answered (an event loop, pipelining) is marked multiplexed, and
//! neither request nor any later one on that thread gets a link (counted).

use agent_common::{EventHeader, Loss, SockInfo, TraceCtx, flags};
use aya_ebpf::{Global, helpers::bpf_get_prandom_u32, macros::map, maps::LruHashMap};

use crate::count_loss;

/// 0 with `--trace-context off`: no map is read or written.
#[unsafe(no_mangle)]
static TRACE_CONTEXT: Global<u32> = Global::new(1);

#[map(name = "traces_ctx_v1")]
static TRACES_CTX: LruHashMap<u64, TraceCtx> = LruHashMap::with_max_entries(16384, 0);

/// What the kernel keeps about a thread's request besides its ids.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ThreadRequest {
    /// The connection the request came on.
    conn_id: u64,
    /// 1 once the thread wrote to that connection.
    responded: u32,
    /// 1 once a CPU sample was labelled with the request's span.
    sampled: u32,
}

#[map(name = "THREAD_REQUESTS")]
static THREAD_REQUESTS: LruHashMap<u64, ThreadRequest> = LruHashMap::with_max_entries(16384, 0);

/// Threads seen serving two requests at once.
#[map(name = "MULTIPLEXED")]
static MULTIPLEXED: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16384, 0);

/// HTTP/1 request methods (RFC 9110 §9), as their first four bytes.
const METHODS: [[u8; 4]; 9] = [
    *b"GET ", *b"POST", *b"PUT ", *b"HEAD", *b"DELE", *b"PATC", *b"OPTI", *b"CONN", *b"TRAC",
];

#[inline(always)]
fn forget(pid_tgid: u64) {
    let _ = TRACES_CTX.remove(pid_tgid);
    let _ = THREAD_REQUESTS.remove(pid_tgid);
}

/// Random bytes from the kernel's PRNG (ids need uniqueness, not secrecy).
#[inline(always)]
fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i + 4 <= N {
        // SAFETY: a helper without arguments or side effects on our memory.
        let word = unsafe { bpf_get_prandom_u32() };
        out[i..i + 4].copy_from_slice(&word.to_ne_bytes());
        i += 4;
    }
    out
}

/// A read on socket `info` returned data; `head` reads its first four bytes
/// from user memory, asked only on server sockets.
#[inline(always)]
pub fn on_ingress(
    pid_tgid: u64,
    info: &SockInfo,
    head: impl FnOnce() -> [u8; 4],
    header: &mut EventHeader,
) {
    if TRACE_CONTEXT.load() == 0 {
        return;
    }
    let starts = info.flags & flags::ROLE_SERVER != 0 && METHODS.contains(&head());
    // SAFETY: copied out at once.
    let current = unsafe { THREAD_REQUESTS.get(pid_tgid) }.copied();
    if !starts {
        if current.is_some_and(|r| r.responded != 0) {
            forget(pid_tgid);
        }
        return;
    }
    // SAFETY: as above.
    if unsafe { MULTIPLEXED.get(pid_tgid) }.is_some() {
        count_loss(Loss::CtxMultiplexed);
        return;
    }
    if current.is_some_and(|r| r.responded == 0) {
        let _ = MULTIPLEXED.insert(pid_tgid, 1, 0);
        count_loss(Loss::CtxMultiplexedThreads);
        count_loss(Loss::CtxMultiplexed);
        forget(pid_tgid);
        return;
    }
    let ctx = TraceCtx {
        trace_id: random(),
        span_id: random(),
    };
    let request = ThreadRequest {
        conn_id: info.conn_id,
        responded: 0,
        sampled: 0,
    };
    if TRACES_CTX.insert(pid_tgid, ctx, 0).is_err()
        || THREAD_REQUESTS.insert(pid_tgid, request, 0).is_err()
    {
        forget(pid_tgid);
        return;
    }
    header.trace_id = ctx.trace_id;
    header.span_id = ctx.span_id;
    header.flags |= flags::TRACE_CTX;
}

/// A write on socket `info`: the thread answers its request if it is that
/// socket's; the record says so with the ids once the request was sampled.
#[inline(always)]
pub fn on_egress(pid_tgid: u64, info: &SockInfo, header: &mut EventHeader) {
    if TRACE_CONTEXT.load() == 0 {
        return;
    }
    let Some(request) = THREAD_REQUESTS.get_ptr_mut(pid_tgid) else {
        return;
    };
    // SAFETY: the pointer comes from a successful lookup; fields are read
    // and written in place (the thread's own entry).
    unsafe {
        if (*request).conn_id != info.conn_id {
            return;
        }
        (*request).responded = 1;
        if (*request).sampled == 0 {
            return;
        }
    }
    // SAFETY: copied out at once.
    if let Some(ctx) = unsafe { TRACES_CTX.get(pid_tgid) } {
        header.trace_id = ctx.trace_id;
        header.span_id = ctx.span_id;
        header.flags |= flags::TRACE_CTX | flags::PROFILED;
    }
}

/// The trace and span the thread serves now, if any.
#[inline(always)]
pub fn current(pid_tgid: u64) -> Option<TraceCtx> {
    if TRACE_CONTEXT.load() == 0 {
        return None;
    }
    // SAFETY: copied out at once.
    unsafe { TRACES_CTX.get(pid_tgid) }.copied()
}

/// The span the sampled thread serves, as a number (0: none); marks its
/// request sampled.
#[inline(always)]
pub fn sampled(pid_tgid: u64) -> u64 {
    if TRACE_CONTEXT.load() == 0 {
        return 0;
    }
    // SAFETY: copied out at once.
    let Some(ctx) = (unsafe { TRACES_CTX.get(pid_tgid) }).copied() else {
        return 0;
    };
    if let Some(request) = THREAD_REQUESTS.get_ptr_mut(pid_tgid) {
        // SAFETY: as in `on_egress`.
        unsafe { (*request).sampled = 1 };
    }
    u64::from_be_bytes(ctx.span_id)
}
