//! HTTP/2 frame skeletons: on connections userspace flagged `FRAMES`, the
//! kernel walks the frame headers through each syscall's bytes and copies the
//! headers and the payloads parsers need (header blocks, control frames, the
//! first bytes of DATA), skipping the rest of DATA. A 1 MiB message then costs
//! a few hundred bytes of capture instead of losing every frame header after
//! the cap (and with them the HPACK table of that direction).
//!
//! The record is sparse (`flags::SPARSE`): segments `[u32 offset][u32 len]
//! bytes`, offsets within the syscall's data, in order. Bytes between
//! segments were not copied; userspace turns each segment into a chunk at its
//! place in the stream.
//!
//! A connection is flagged by userspace once it detected HTTP/2, or by the
//! kernel itself when a socket's first bytes are the client preface (so the
//! first writes, often the largest, are walked too).
//!
//! Where frames are is kept per socket and direction (`FRAME_WALKS`): bytes
//! of the current payload left to skip or copy, a frame header split across
//! syscalls. A socket without that state hunts: a syscall whose first 9 bytes
//! are a plausible frame header starts a walk (senders write whole frames; a
//! reader that keeps up reads them whole), anything else is captured as a
//! plain prefix. A walk that meets an implausible header, or runs out of
//! steps, forgets its state and hunts again.
//!
//! The walk's registers live in a per-CPU map value, read and written
//! volatile at every step: values loaded from a map have no tracked range, so
//! the verifier's states at the top of every step are the same and are pruned
//! (see `capture::copy_iov`).

use agent_common::{
    Loss, MAX_CAPTURE_BYTES, MAX_IOV,
    http2::{HEADER_LEN, defined_flags, kind},
};
use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated},
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};

use crate::{
    capture::{IOVEC_SIZE, OFF_MASK, copy_user, mask},
    count_loss,
};

/// Bytes of a frame header.
const HEADER: u32 = HEADER_LEN as u32;
/// DATA bytes copied at the start of each DATA frame (a gRPC message prefix
/// is 5).
const DATA_PEEK: u32 = 16;
/// Steps of one walk; each moves through one header, one payload piece or
/// one iovec. A 1 MiB write of 16 KiB frames, header and payload in
/// separate slices, takes about 320.
const MAX_STEPS: u32 = 512;
/// iovecs of a syscall the walk takes on (each costs it a step or two).
const MAX_WALK_IOV: u64 = 48;
/// A segment's `[offset][len]`.
const SEG_HEADER: u32 = 8;
const NO_SEGMENT: u32 = u32::MAX;

const MODE_HEADER: u32 = 0;
const MODE_COPY: u32 = 1;
const MODE_SKIP: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct FrameKey {
    pub tgid: u32,
    pub fd: i32,
    /// `agent_common::direction`.
    pub direction: u32,
    pub _pad: u32,
}

/// Where the frames of one direction are, between syscalls.
#[repr(C)]
#[derive(Clone, Copy)]
struct FrameState {
    /// The connection this belongs to (fd numbers are reused).
    conn_id: u64,
    mode: u32,
    /// Payload bytes left to skip / to copy, then the next header.
    skip: u32,
    copy: u32,
    /// Bytes of the next header already seen (in `header`).
    partial: u32,
    header: [u8; 32],
}

impl FrameState {
    fn new(conn_id: u64, mode: u32, copy: u32) -> FrameState {
        FrameState {
            conn_id,
            mode,
            skip: 0,
            copy,
            partial: 0,
            header: [0; 32],
        }
    }
}

#[map(name = "FRAME_WALKS")]
static FRAME_WALKS: LruHashMap<FrameKey, FrameState> = LruHashMap::with_max_entries(16384, 0);

/// One walk's registers (see the module doc).
#[repr(C)]
struct Walk {
    state: FrameState,
    /// The iovec array (0 for a single buffer) and its length.
    iov: u64,
    iovcnt: u64,
    idx: u64,
    /// The current piece of user memory and the bytes of the syscall left in it.
    base: u64,
    left: u32,
    /// Position in the syscall's data, and its length.
    pos: u32,
    total: u32,
    /// Record bytes written, and the cap.
    rec: u32,
    cap: u32,
    /// Record offset of the open segment's `[offset][len]`, and the data
    /// position it reaches (`NO_SEGMENT`: none open).
    seg_at: u32,
    seg_end: u32,
    /// The walk lost the frames.
    lost: u32,
}

#[map(name = "FRAME_WALK")]
static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

macro_rules! ld {
    ($w:ident . $($f:ident).+) => {
        // SAFETY: `$w` points at the per-CPU walk value.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*$w).$($f).+)) }
    };
}
macro_rules! st {
    ($w:ident . $($f:ident).+, $v:expr) => {{
        let v = $v;
        // SAFETY: as for `ld`.
        unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*$w).$($f).+), v) }
    }};
}

#[inline(always)]
fn min(a: u32, b: u32) -> u32 {
    if a < b { a } else { b }
}

/// A frame header that can start a walk: what a sender writes first.
#[inline(always)]
fn plausible_start(h: &[u8; 9]) -> bool {
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
    let (ty, flags) = (h[3], h[4]);
    let reserved = h[5] & 0x80 != 0;
    let stream = u32::from_be_bytes([h[5] & 0x7f, h[6], h[7], h[8]]);
    if reserved || ty > kind::CONTINUATION || len > 16_384 {
        return false;
    }
    let connection_level = matches!(ty, kind::SETTINGS | kind::PING | kind::GOAWAY);
    if ty != kind::WINDOW_UPDATE && connection_level != (stream == 0) {
        return false;
    }
    flags & !defined_flags(ty) == 0
}

/// Walks the frames of one syscall's data into `data` (the record area);
/// returns the record's length, or `None` when this direction is not in a
/// walk and these bytes cannot start one (the caller copies a prefix).
/// `iov`/`iovcnt`: the iovec array, or `iov = 0` and `single` the buffer.
#[inline(always)]
pub fn walk(
    data: &mut [u8; 3 * MAX_CAPTURE_BYTES],
    key: FrameKey,
    conn_id: u64,
    (iov, iovcnt, single): (u64, u64, u64),
    total: u32,
    cap: u32,
    preface: bool,
) -> Option<u32> {
    let w: *mut Walk = WALK.get_ptr_mut(0)?;
    if iovcnt > MAX_WALK_IOV && total <= cap {
        // Many small slices (the frames of many calls batched in one write):
        // more steps than a walk has, and a plain copy holds them all. Where
        // frames end is unknown after it: the next syscall hunts.
        let _ = FRAME_WALKS.remove(key);
        count_loss(Loss::FramesHunt);
        return None;
    }
    let (first, first_len) = if iov == 0 {
        (single, total)
    } else {
        // SAFETY: bounded read of one iovec from user memory.
        let seg = unsafe { bpf_probe_read_user(iov as *const [u64; 2]) }.ok()?;
        (
            seg[0],
            if seg[1] < total as u64 {
                seg[1] as u32
            } else {
                total
            },
        )
    };
    // SAFETY: a map value pointer, read here.
    let slot = FRAME_WALKS
        .get_ptr_mut(key)
        .filter(|s| unsafe { (**s).conn_id } == conn_id);
    let state = match slot {
        // SAFETY: as above.
        Some(s) => unsafe { *s },
        // The client preface (24 bytes) is copied, frames follow.
        None if preface => FrameState::new(conn_id, MODE_COPY, 24),
        None => {
            // SAFETY: bounded read of user memory.
            let h = (first_len >= HEADER)
                .then(|| unsafe { bpf_probe_read_user(first as *const [u8; 9]) }.ok())
                .flatten();
            if !h.is_some_and(|h| plausible_start(&h)) {
                count_loss(Loss::FramesHunt);
                return None;
            }
            FrameState::new(conn_id, MODE_HEADER, 0)
        }
    };
    st!(w.state, state);
    st!(w.iov, iov);
    st!(w.iovcnt, if iov == 0 { 1 } else { iovcnt });
    st!(w.idx, 0);
    st!(w.base, first);
    st!(w.left, first_len);
    st!(w.pos, 0);
    st!(w.total, total);
    st!(w.rec, 0);
    st!(w.cap, cap);
    st!(w.seg_at, 0);
    st!(w.seg_end, NO_SEGMENT);
    st!(w.lost, 0);
    let mut done = false;
    for _ in 0..MAX_STEPS {
        if !step(w, data) {
            done = true;
            break;
        }
    }
    let walked = done && ld!(w.lost) == 0 && ld!(w.pos) >= ld!(w.total);
    if !done {
        count_loss(Loss::FramesSteps);
    } else if !walked {
        count_loss(Loss::FramesLost);
    }
    // Looked up again rather than kept from the start: a pointer live across
    // the steps doubles the verifier's states at each one.
    let slot = FRAME_WALKS.get_ptr_mut(key);
    if walked {
        let state: FrameState = ld!(w.state);
        match slot {
            // SAFETY: the socket's map value; updated in place, which costs
            // less than an LRU insert on every syscall.
            Some(s) => unsafe { *s = state },
            None => {
                let _ = FRAME_WALKS.insert(key, state, 0);
            }
        }
    } else if slot.is_some() {
        let _ = FRAME_WALKS.remove(key);
    }
    Some(ld!(w.rec))
}

/// One step; false when the walk is over (the data walked, or lost).
#[inline(always)]
fn step(w: *mut Walk, data: &mut [u8; 3 * MAX_CAPTURE_BYTES]) -> bool {
    let pos: u32 = ld!(w.pos);
    let total: u32 = ld!(w.total);
    if pos >= total {
        return false;
    }
    let left: u32 = ld!(w.left);
    if left == 0 {
        let idx: u64 = ld!(w.idx) + 1;
        let iov: u64 = ld!(w.iov);
        if idx >= ld!(w.iovcnt) || idx >= MAX_IOV as u64 || iov == 0 {
            st!(w.lost, 1);
            return false;
        }
        // SAFETY: bounded read of one iovec from user memory.
        let Ok(seg) = (unsafe { bpf_probe_read_user((iov + idx * IOVEC_SIZE) as *const [u64; 2]) })
        else {
            st!(w.lost, 1);
            return false;
        };
        let rest = (total - pos) as u64;
        st!(w.idx, idx);
        st!(w.base, seg[0]);
        st!(
            w.left,
            if seg[1] < rest {
                seg[1] as u32
            } else {
                rest as u32
            }
        );
        return true;
    }
    let base: u64 = ld!(w.base);
    match ld!(w.state.mode) {
        MODE_SKIP => {
            let skip: u32 = ld!(w.state.skip);
            let n = min(skip, left);
            st!(w.state.skip, skip - n);
            if skip == n {
                st!(w.state.mode, MODE_HEADER);
            }
            advance(w, base, left, pos, n);
        }
        MODE_COPY => {
            let copy: u32 = ld!(w.state.copy);
            let n = min(min(copy, left), room(w, pos));
            if n == 0 {
                // The record is full: the rest of this payload is skipped.
                st!(w.state.skip, ld!(w.state.skip) + copy);
                st!(w.state.copy, 0);
                st!(w.state.mode, MODE_SKIP);
                return true;
            }
            if !emit(w, data, base, n, pos) {
                st!(w.lost, 1);
                return false;
            }
            st!(w.state.copy, copy - n);
            if copy == n {
                let mode = if ld!(w.state.skip) > 0 {
                    MODE_SKIP
                } else {
                    MODE_HEADER
                };
                st!(w.state.mode, mode);
            }
            advance(w, base, left, pos, n);
        }
        _ => return header(w, data, base, left, pos),
    }
    true
}

/// Reads (the rest of) a frame header; at its end, decides what of the
/// payload is copied.
#[inline(always)]
fn header(
    w: *mut Walk,
    data: &mut [u8; 3 * MAX_CAPTURE_BYTES],
    base: u64,
    left: u32,
    pos: u32,
) -> bool {
    let partial: u32 = ld!(w.state.partial);
    let n = min(HEADER - min(partial, HEADER - 1), left);
    // SAFETY: `w` is the per-CPU walk value; `header` has room for 15 + 15 bytes.
    let dst = unsafe { core::ptr::addr_of_mut!((*w).state.header) }
        .cast::<u8>()
        .wrapping_add((partial & 15) as usize);
    // SAFETY: dst + (n & 15) stays inside `header`; the helper checks base.
    let ok = unsafe { generated::bpf_probe_read_user(dst.cast(), n & 15, base as *const _) } == 0;
    if !ok {
        st!(w.lost, 1);
        return false;
    }
    // The header bytes go into the record too, while it has room.
    if room(w, pos) >= n {
        let _ = emit(w, data, base, n, pos);
    }
    advance(w, base, left, pos, n);
    let have = partial + n;
    if have < HEADER {
        st!(w.state.partial, have);
        return true;
    }
    let h: [u8; 32] = ld!(w.state.header);
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
    let ty = h[3];
    if h[5] & 0x80 != 0 || ty > 0x20 {
        // Not a frame header: the frames are lost.
        st!(w.lost, 1);
        return false;
    }
    let copy = if ty == kind::DATA {
        min(len, DATA_PEEK)
    } else {
        len
    };
    st!(w.state.partial, 0);
    st!(w.state.copy, copy);
    st!(w.state.skip, len - copy);
    let mode = if copy > 0 {
        MODE_COPY
    } else if len > copy {
        MODE_SKIP
    } else {
        MODE_HEADER
    };
    st!(w.state.mode, mode);
    true
}

#[inline(always)]
fn advance(w: *mut Walk, base: u64, left: u32, pos: u32, n: u32) {
    st!(w.base, base + n as u64);
    st!(w.left, left - n);
    st!(w.pos, pos + n);
}

/// Record bytes a copy at `pos` may still take (a new segment costs its
/// `[offset][len]`).
#[inline(always)]
fn room(w: *mut Walk, pos: u32) -> u32 {
    let rec: u32 = ld!(w.rec);
    let cap: u32 = ld!(w.cap);
    let need = if ld!(w.seg_end) == pos { 0 } else { SEG_HEADER };
    if rec + need >= cap {
        0
    } else {
        cap - rec - need
    }
}

/// Copies `n` bytes of user memory at `src`, which are the syscall's bytes
/// at `pos`, into the record: appended to the open segment when it ends at
/// `pos`, else in a new one. The caller checked [`room`].
#[inline(always)]
fn emit(w: *mut Walk, data: &mut [u8; 3 * MAX_CAPTURE_BYTES], src: u64, n: u32, pos: u32) -> bool {
    let mut rec: u32 = ld!(w.rec);
    let seg_at: u32 = if ld!(w.seg_end) == pos {
        ld!(w.seg_at)
    } else {
        let at = rec;
        let p = data
            .as_mut_ptr()
            .wrapping_add(mask::<OFF_MASK>(at) as usize)
            .cast::<[u8; 8]>();
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&pos.to_le_bytes());
        // SAFETY: `at` masked below the cap, + 8 stays inside `data`.
        unsafe { core::ptr::write_unaligned(p, head) };
        rec += SEG_HEADER;
        st!(w.seg_at, at);
        at
    };
    if !copy_user(data, rec, src, n) {
        return false;
    }
    rec += n;
    let len_at = data
        .as_mut_ptr()
        .wrapping_add(mask::<OFF_MASK>(seg_at) as usize + 4)
        .cast::<[u8; 4]>();
    // SAFETY: as for the segment head.
    let len = u32::from_le_bytes(unsafe { core::ptr::read_unaligned(len_at) }) + n;
    // SAFETY: as above.
    unsafe { core::ptr::write_unaligned(len_at, len.to_le_bytes()) };
    st!(w.rec, rec);
    st!(w.seg_end, pos + n);
    true
}
