//! One direction of an HTTP/2 connection as frames (RFC 9113 §4, §6), read
//! from captured chunks: a prefix of what each syscall moved, then a count of
//! bytes that were not captured ([`Chunk`]).
//!
//! The reader keeps only what the caller needs: frame headers, the assembled
//! header block of HEADERS/PUSH_PROMISE + CONTINUATION (padding and priority
//! stripped), the small control frames parsed, and for DATA only the length.
//! Bodies are not kept: a caller that needs to look inside DATA (gRPC message
//! prefixes) opts in with [`FrameReader::set_data_bytes`] and receives the
//! captured data bytes as they pass ([`Event::DataBytes`]).
//!
//! # Uncaptured bytes
//!
//! The frame length makes most gaps harmless; the rules, from the most to the
//! least recoverable:
//!
//! - **A gap inside a frame payload** other than a header block (DATA, or
//!   padding anywhere): the length says where the frame ends, so the reader
//!   skips exactly and reads the next frame header in sync. A DATA frame
//!   still reports its length; a control frame whose bytes fell in the gap is
//!   reported as [`Body::Truncated`].
//! - **A gap inside a header block** (the fragment of a HEADERS, PUSH_PROMISE
//!   or CONTINUATION, or the pad length / priority / promised id in front of
//!   it): the block is lost, the reader emits [`Event::HeaderBlockLost`] and
//!   skips to the end of the block (its remaining CONTINUATION frames) in sync.
//!   The peer's HPACK decoder did process the block, so its insertions are
//!   unknown: the caller must start a new HPACK epoch.
//! - **A gap inside a frame header** (or one that reaches past the end of a
//!   payload into the next header): the next frame's length is unknown, so
//!   framing is lost. The reader emits [`Event::FramingLost`] (new HPACK epoch
//!   too: blocks may have been in the gap) and hunts: it resynchronises only
//!   at the start of a later chunk whose first 9 bytes are a plausible frame
//!   header (reserved bit zero, a known type other than CONTINUATION, flags
//!   that type defines, the length and stream id rules of that type, length
//!   within the maximum frame size), and, when that frame ends inside the
//!   chunk, whose following frame header is plausible too. Syscalls almost
//!   always start at frame boundaries on the sending side. A chunk starting
//!   with the client preface also resynchronises.
//!
//! A chunk whose offset is past the end of the previous one (the stream buffer
//! dropped chunks) is a gap of that many bytes before it, timed at that chunk
//! (the bytes' own timestamps are gone); bytes already seen (an offset before
//! the end) are skipped.
//!
//! # Bounds
//!
//! A header block is at most [`MAX_HEADER_BLOCK`] bytes and
//! [`MAX_CONTINUATIONS`] CONTINUATION frames; beyond, it is dropped with an
//! error and [`Event::HeaderBlockLost`]. A partial frame header (9 bytes) and
//! the fixed fields of a control frame (at most 8 bytes) are all that is
//! carried between chunks besides the block. Nothing here panics.

use super::hpack::MAX_BLOCK;
use crate::conn::Chunk;
use thiserror::Error;

pub use agent_common::http2::{HEADER_LEN, PREFACE, flag, kind};
/// Largest length the 24-bit field can hold (SETTINGS_MAX_FRAME_SIZE maximum).
pub const MAX_FRAME_LEN: u32 = (1 << 24) - 1;
/// Largest header block assembled; the HPACK decoder's bound.
pub const MAX_HEADER_BLOCK: usize = MAX_BLOCK;
/// CONTINUATION frames per header block before it counts as a flood (one
/// block in 256 frames is already far past anything a peer sends).
pub const MAX_CONTINUATIONS: u32 = 256;

/// The 9-byte frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub frame_type: u8,
    pub flags: u8,
    pub stream_id: u32,
    /// The reserved bit (ignored in sync, must be 0 to resynchronise).
    pub reserved: bool,
}

impl FrameHeader {
    pub fn parse(b: &[u8; HEADER_LEN]) -> FrameHeader {
        let [l0, l1, l2, frame_type, flags, s0, s1, s2, s3] = *b;
        FrameHeader {
            len: u32::from_be_bytes([0, l0, l1, l2]),
            frame_type,
            flags,
            stream_id: u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]),
            reserved: s0 & 0x80 != 0,
        }
    }

    /// The wire form (tests and fuzzing build frames with it).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let [_, l0, l1, l2] = self.len.min(MAX_FRAME_LEN).to_be_bytes();
        let [s0, s1, s2, s3] = self.stream_id.to_be_bytes();
        let s0 = (s0 & 0x7f) | if self.reserved { 0x80 } else { 0 };
        [l0, l1, l2, self.frame_type, self.flags, s0, s1, s2, s3]
    }

    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    /// Bytes in front of the header block fragment or data (pad length,
    /// priority, promised stream id) or the fixed fields of a control frame.
    fn prefix_len(&self) -> u32 {
        let padded = u32::from(self.has(flag::PADDED));
        match self.frame_type {
            kind::DATA => padded,
            kind::HEADERS => padded + if self.has(flag::PRIORITY) { 5 } else { 0 },
            kind::PUSH_PROMISE => padded + 4,
            kind::PRIORITY => 5,
            kind::RST_STREAM | kind::WINDOW_UPDATE => 4,
            kind::PING | kind::GOAWAY => 8,
            _ => 0,
        }
    }

    /// The length and stream rules of RFC 9113 §6 for known types; a frame
    /// that breaks them is still skipped by its length.
    fn check(&self) -> Result<(), FrameError> {
        let t = self.frame_type;
        let stream_zero = matches!(t, kind::SETTINGS | kind::PING | kind::GOAWAY);
        let any_stream = t == kind::WINDOW_UPDATE || t > kind::CONTINUATION;
        if !any_stream && stream_zero != (self.stream_id == 0) {
            return Err(FrameError::BadStreamId {
                frame_type: t,
                stream_id: self.stream_id,
            });
        }
        let len_ok = match t {
            kind::DATA | kind::HEADERS | kind::PUSH_PROMISE | kind::GOAWAY => {
                self.len >= self.prefix_len()
            }
            kind::PRIORITY | kind::RST_STREAM | kind::WINDOW_UPDATE | kind::PING => {
                self.len == self.prefix_len()
            }
            kind::SETTINGS => self.len.is_multiple_of(6) && (!self.has(flag::ACK) || self.len == 0),
            _ => true,
        };
        if len_ok {
            Ok(())
        } else {
            Err(FrameError::BadLength {
                frame_type: t,
                len: self.len,
            })
        }
    }

    /// Flags a type defines (RFC 9113 §6); unknown flags are legal but make
    /// a header implausible as a resynchronisation point.
    fn defined_flags(&self) -> u8 {
        agent_common::http2::defined_flags(self.frame_type)
    }

    /// Whether these bytes can be taken as the start of a frame after framing
    /// was lost (see the module doc).
    pub fn plausible(&self, max_len: u32) -> bool {
        !self.reserved
            && self.len <= max_len
            && self.frame_type < kind::CONTINUATION
            && self.flags & !self.defined_flags() == 0
            && self.check().is_ok()
    }
}

/// PRIORITY fields (RFC 9113 §6.3), also carried by HEADERS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priority {
    pub exclusive: bool,
    pub dependency: u32,
    /// As on the wire: the weight minus one.
    pub weight: u8,
}

impl Priority {
    fn parse(b: [u8; 5]) -> Priority {
        let [d0, d1, d2, d3, weight] = b;
        Priority {
            exclusive: d0 & 0x80 != 0,
            dependency: u32::from_be_bytes([d0 & 0x7f, d1, d2, d3]),
            weight,
        }
    }
}

/// SETTINGS parameters (RFC 9113 §6.5.2) the agent may use; the last value
/// of each wins, others are ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub header_table_size: Option<u32>,
    pub enable_push: Option<u32>,
    pub max_concurrent_streams: Option<u32>,
    pub initial_window_size: Option<u32>,
    pub max_frame_size: Option<u32>,
    pub max_header_list_size: Option<u32>,
}

impl Settings {
    fn apply(&mut self, b: [u8; 6]) {
        let [i0, i1, v0, v1, v2, v3] = b;
        let value = Some(u32::from_be_bytes([v0, v1, v2, v3]));
        match u16::from_be_bytes([i0, i1]) {
            0x1 => self.header_table_size = value,
            0x2 => self.enable_push = value,
            0x3 => self.max_concurrent_streams = value,
            0x4 => self.initial_window_size = value,
            0x5 => self.max_frame_size = value,
            0x6 => self.max_header_list_size = value,
            _ => {}
        }
    }
}

/// What a frame carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// `len` is the data length (padding excluded); `exact` is false when the
    /// pad length byte was not captured (then `len` includes the padding).
    Data {
        len: u32,
        exact: bool,
    },
    /// A complete header block (HEADERS and its CONTINUATION frames).
    Headers {
        block: Vec<u8>,
        priority: Option<Priority>,
    },
    PushPromise {
        promised_stream_id: u32,
        block: Vec<u8>,
    },
    Priority(Priority),
    RstStream {
        error_code: u32,
    },
    Settings(Settings),
    Ping {
        data: [u8; 8],
    },
    GoAway {
        last_stream_id: u32,
        error_code: u32,
    },
    WindowUpdate {
        increment: u32,
    },
    /// A type RFC 9113 does not define (ignored, §4.1).
    Unknown {
        frame_type: u8,
        len: u32,
    },
    /// A control frame some of whose bytes were not captured.
    Truncated {
        frame_type: u8,
        len: u32,
    },
}

/// One frame (for a header block: the whole HEADERS + CONTINUATION sequence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub stream_id: u32,
    /// The frame's flags (for a header block, the first frame's, plus
    /// END_HEADERS).
    pub flags: u8,
    /// Timestamp of the chunk the (first) frame header began in.
    pub start_ns: u64,
    /// Timestamp of the chunk that moved the (last) frame's last byte.
    pub end_ns: u64,
    pub body: Body,
}

impl Frame {
    /// END_STREAM on DATA or HEADERS.
    pub fn end_stream(&self) -> bool {
        matches!(self.body, Body::Data { .. } | Body::Headers { .. })
            && self.flags & flag::END_STREAM != 0
    }

    /// ACK on SETTINGS or PING.
    pub fn ack(&self) -> bool {
        matches!(self.body, Body::Settings(_) | Body::Ping { .. }) && self.flags & flag::ACK != 0
    }
}

/// Why a header block was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// Bytes of it were not captured.
    Gap,
    /// Larger than [`MAX_HEADER_BLOCK`].
    TooLarge,
    /// More than [`MAX_CONTINUATIONS`] CONTINUATION frames.
    Flood,
    /// The frame sequence broke the rules (the peer will likely fail the
    /// connection, but may have decoded part of the block).
    Protocol,
}

/// What the reader found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The client connection preface.
    Preface {
        ts_ns: u64,
    },
    Frame(Frame),
    /// Captured bytes of a DATA frame's data (padding excluded), only when
    /// enabled with [`FrameReader::set_data_bytes`]. `at` is the position of
    /// the first byte within the frame's data. Emitted as the bytes arrive,
    /// so before that frame's [`Event::Frame`], in increasing `at`, possibly
    /// in several pieces; bytes that were not captured are not reported (the
    /// holes are where `at` jumps, or the frame's data length is not reached).
    /// Never emitted for a frame whose pad length was lost (its data length is
    /// not known: [`Body::Data`] `exact` false).
    DataBytes {
        stream_id: u32,
        at: u32,
        bytes: Vec<u8>,
    },
    /// A header block of this stream is lost: start a new HPACK epoch.
    HeaderBlockLost {
        stream_id: u32,
        reason: LossReason,
    },
    /// Frame boundaries are lost until [`Event::Resynced`]: start a new HPACK
    /// epoch.
    FramingLost {
        ts_ns: u64,
    },
    /// Framing found again at the start of the chunk with this timestamp.
    Resynced {
        ts_ns: u64,
    },
    /// A protocol error, counted by the caller (framing is kept).
    Error(FrameError),
}

impl Event {
    /// Whether the caller's HPACK decoder for this direction must start a
    /// new epoch.
    pub fn loses_hpack_state(&self) -> bool {
        matches!(
            self,
            Event::HeaderBlockLost { .. } | Event::FramingLost { .. }
        )
    }
}

/// Protocol errors in the frame sequence.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("client direction does not start with the connection preface")]
    BadPreface,
    #[error("frame type {frame_type:#x} with bad length {len}")]
    BadLength { frame_type: u8, len: u32 },
    #[error("frame type {frame_type:#x} on bad stream {stream_id}")]
    BadStreamId { frame_type: u8, stream_id: u32 },
    #[error("frame type {frame_type:#x} with padding longer than its payload")]
    BadPadding { frame_type: u8 },
    #[error("CONTINUATION on stream {stream_id} without an open header block")]
    UnexpectedContinuation { stream_id: u32 },
    #[error("CONTINUATION on stream {got} while stream {expected}'s header block is open")]
    ContinuationWrongStream { expected: u32, got: u32 },
    #[error("frame type {frame_type:#x} inside stream {stream_id}'s header block")]
    Interleaved { stream_id: u32, frame_type: u8 },
    #[error("header block on stream {stream_id} larger than the limit")]
    HeaderBlockTooLarge { stream_id: u32 },
    #[error("too many CONTINUATION frames on stream {stream_id}")]
    ContinuationFlood { stream_id: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// DATA: only the length is reported.
    Data,
    /// HEADERS, PUSH_PROMISE, CONTINUATION: the fragment joins the block.
    Block,
    /// PRIORITY, RST_STREAM, PING, GOAWAY, WINDOW_UPDATE: fixed fields.
    Fixed,
    Settings,
    /// Unknown type or a frame that broke the rules: skipped by length.
    Skip,
}

#[derive(Clone, Debug)]
struct Payload {
    hdr: FrameHeader,
    start_ns: u64,
    mode: Mode,
    /// Payload bytes consumed (captured or not).
    done: u32,
    prefix: [u8; 8],
    prefix_len: u32,
    /// End of the fragment or data (before padding), once the prefix is read.
    body_end: Option<u32>,
    /// Bytes of the prefix were not captured.
    prefix_lost: bool,
    /// Bytes of the prefix or body were not captured.
    lost: bool,
    settings: Settings,
    group: [u8; 6],
    group_len: usize,
}

#[derive(Clone, Debug)]
enum State {
    Preface {
        matched: usize,
    },
    Header {
        buf: [u8; HEADER_LEN],
        have: usize,
        start_ns: u64,
    },
    Payload(Box<Payload>),
    /// Framing lost: waiting for a plausible chunk start.
    Hunting,
}

impl State {
    fn header() -> State {
        State::Header {
            buf: [0; HEADER_LEN],
            have: 0,
            start_ns: 0,
        }
    }
}

#[derive(Clone, Debug)]
struct OpenBlock {
    stream_id: u32,
    frame_type: u8,
    flags: u8,
    start_ns: u64,
    priority: Option<Priority>,
    promised_stream_id: u32,
    buf: Vec<u8>,
    continuations: u32,
}

#[derive(Clone, Debug)]
enum Block {
    Idle,
    Open(Box<OpenBlock>),
    /// Lost: its remaining CONTINUATION frames are skipped.
    Lost {
        stream_id: u32,
    },
}

/// Reads one direction's frames (see the module doc).
#[derive(Clone, Debug)]
pub struct FrameReader {
    state: State,
    block: Block,
    /// Where the next chunk should start in the direction's byte sequence.
    pos: Option<u64>,
    max_frame_len: u32,
    /// Report DATA bytes ([`Event::DataBytes`]).
    data_bytes: bool,
}

impl FrameReader {
    /// The client direction from the connection start (chunk offset 0): the
    /// preface first.
    pub fn client() -> FrameReader {
        FrameReader::with_state(State::Preface { matched: 0 }, Some(0))
    }

    /// The server direction from the connection start (chunk offset 0).
    pub fn server() -> FrameReader {
        FrameReader::with_state(State::header(), Some(0))
    }

    /// The client direction of a connection upgraded from HTTP/1.1 (`Upgrade:
    /// h2c`, RFC 9113 §3.1 / RFC 7540 §3.2): the preface starts at `offset`;
    /// bytes before it are skipped (a chunk that begins earlier is read from
    /// `offset`).
    pub fn client_at(offset: u64) -> FrameReader {
        FrameReader::with_state(State::Preface { matched: 0 }, Some(offset))
    }

    /// The server direction of an upgraded connection: its first frame (its
    /// SETTINGS) starts at `offset`, after the `101` head.
    pub fn server_at(offset: u64) -> FrameReader {
        FrameReader::with_state(State::header(), Some(offset))
    }

    /// Either direction joined mid-connection: hunts for a frame start from
    /// whatever offset the first chunk has.
    pub fn midstream() -> FrameReader {
        FrameReader::with_state(State::Hunting, None)
    }

    fn with_state(state: State, pos: Option<u64>) -> FrameReader {
        FrameReader {
            state,
            block: Block::Idle,
            pos,
            max_frame_len: MAX_FRAME_LEN,
            data_bytes: false,
        }
    }

    /// The receiver's SETTINGS_MAX_FRAME_SIZE, used only to judge
    /// resynchronisation points (a larger frame is still read in sync).
    pub fn set_max_frame_size(&mut self, len: u32) {
        self.max_frame_len = len.min(MAX_FRAME_LEN);
    }

    /// Whether to report the captured bytes of DATA frames
    /// ([`Event::DataBytes`]; off by default). They cost a copy of the
    /// captured data, so at most the chunk's own size per push.
    pub fn set_data_bytes(&mut self, on: bool) {
        self.data_bytes = on;
    }

    /// Framing is currently lost.
    pub fn is_hunting(&self) -> bool {
        matches!(self.state, State::Hunting)
    }

    /// Feeds the next chunk of this direction.
    pub fn push(&mut self, chunk: &Chunk, out: &mut Vec<Event>) {
        let ts = chunk.ts_ns;
        let mut data = chunk.data.as_slice();
        let mut missing = chunk.missing;
        let mut at_start = true;
        let end = chunk
            .offset
            .saturating_add(data.len() as u64)
            .saturating_add(missing);
        if let Some(pos) = self.pos {
            if chunk.offset > pos {
                self.gap(chunk.offset - pos, ts, out);
            } else if chunk.offset < pos {
                // Already seen: skip the overlap, from the data then the gap.
                let seen = pos - chunk.offset;
                let from_data = usize::try_from(seen).unwrap_or(usize::MAX).min(data.len());
                data = data.get(from_data..).unwrap_or_default();
                missing = missing.saturating_sub(seen - from_data as u64);
                at_start = false;
            }
        }
        self.pos = Some(self.pos.map_or(end, |pos| pos.max(end)));
        if at_start && matches!(self.state, State::Hunting) {
            self.resync(data, ts, out);
        }
        self.feed(data, ts, out);
        if missing > 0 {
            self.gap(missing, ts, out);
        }
    }

    /// At a chunk start while hunting: is this a frame boundary?
    fn resync(&mut self, data: &[u8], ts: u64, out: &mut Vec<Event>) {
        if data.starts_with(PREFACE) {
            out.push(Event::Resynced { ts_ns: ts });
            self.state = State::Preface { matched: 0 };
            return;
        }
        let Some(first) = header_at(data, 0) else {
            return;
        };
        if !first.plausible(self.max_frame_len) {
            return;
        }
        let next = HEADER_LEN + first.len as usize;
        if let Some(second) = header_at(data, next) {
            let continues = second.frame_type == kind::CONTINUATION
                && matches!(first.frame_type, kind::HEADERS | kind::PUSH_PROMISE)
                && first.flags & flag::END_HEADERS == 0
                && second.stream_id == first.stream_id
                && !second.reserved
                && second.flags & !flag::END_HEADERS == 0;
            let known = second.frame_type <= kind::CONTINUATION;
            let plausible = if known {
                continues || second.plausible(self.max_frame_len)
            } else {
                !second.reserved
            };
            if !plausible {
                return;
            }
        }
        out.push(Event::Resynced { ts_ns: ts });
        self.state = State::header();
    }

    /// Captured bytes, in order.
    fn feed(&mut self, mut data: &[u8], ts: u64, out: &mut Vec<Event>) {
        while !data.is_empty() {
            let state = std::mem::replace(&mut self.state, State::Hunting);
            self.state = match state {
                State::Hunting => return,
                State::Preface { matched } => {
                    let want = PREFACE.get(matched..).unwrap_or_default();
                    let n = want.len().min(data.len());
                    let (head, rest) = data.split_at(n);
                    data = rest;
                    if want.get(..n) != Some(head) {
                        out.push(Event::Error(FrameError::BadPreface));
                        self.lose_framing(ts, out);
                        return;
                    }
                    if matched + n == PREFACE.len() {
                        out.push(Event::Preface { ts_ns: ts });
                        State::header()
                    } else {
                        State::Preface {
                            matched: matched + n,
                        }
                    }
                }
                State::Header {
                    mut buf,
                    have,
                    start_ns,
                } => {
                    let start_ns = if have == 0 { ts } else { start_ns };
                    let n = (HEADER_LEN - have).min(data.len());
                    let (head, rest) = data.split_at(n);
                    data = rest;
                    if let Some(dst) = buf.get_mut(have..have + n) {
                        dst.copy_from_slice(head);
                    }
                    if have + n < HEADER_LEN {
                        State::Header {
                            buf,
                            have: have + n,
                            start_ns,
                        }
                    } else {
                        self.start_frame(FrameHeader::parse(&buf), start_ns, ts, out)
                    }
                }
                State::Payload(mut p) => {
                    let n = ((p.hdr.len - p.done) as usize).min(data.len());
                    let (head, rest) = data.split_at(n);
                    data = rest;
                    self.payload(&mut p, Some(head), n as u32, out);
                    if p.done == p.hdr.len {
                        self.finish(*p, ts, out);
                        State::header()
                    } else {
                        State::Payload(p)
                    }
                }
            };
        }
    }

    /// `n` bytes the kernel did not capture, moved by the syscall at `ts`.
    fn gap(&mut self, mut n: u64, ts: u64, out: &mut Vec<Event>) {
        while n > 0 {
            let state = std::mem::replace(&mut self.state, State::Hunting);
            self.state = match state {
                State::Hunting => return,
                State::Preface { matched } => {
                    // Not verified, but its length is fixed.
                    let k = ((PREFACE.len() - matched) as u64).min(n);
                    n -= k;
                    let matched = matched + k as usize;
                    if matched == PREFACE.len() {
                        State::header()
                    } else {
                        State::Preface { matched }
                    }
                }
                State::Header { .. } => {
                    self.lose_framing(ts, out);
                    return;
                }
                State::Payload(mut p) => {
                    let k = u64::from(p.hdr.len - p.done).min(n) as u32;
                    n -= u64::from(k);
                    self.payload(&mut p, None, k, out);
                    if p.done == p.hdr.len {
                        self.finish(*p, ts, out);
                        State::header()
                    } else {
                        State::Payload(p)
                    }
                }
            };
        }
    }

    fn lose_framing(&mut self, ts: u64, out: &mut Vec<Event>) {
        if let Block::Open(b) = &self.block {
            out.push(Event::HeaderBlockLost {
                stream_id: b.stream_id,
                reason: LossReason::Gap,
            });
        }
        self.block = Block::Idle;
        self.state = State::Hunting;
        out.push(Event::FramingLost { ts_ns: ts });
    }

    /// Drops the open block (if any); its remaining CONTINUATIONs are skipped.
    fn lose_block(&mut self, reason: LossReason, out: &mut Vec<Event>) {
        if let Block::Open(b) = &self.block {
            let stream_id = b.stream_id;
            out.push(Event::HeaderBlockLost { stream_id, reason });
            self.block = Block::Lost { stream_id };
        }
    }

    /// A complete frame header: checks the sequence rules and picks a mode.
    fn start_frame(
        &mut self,
        hdr: FrameHeader,
        start_ns: u64,
        ts: u64,
        out: &mut Vec<Event>,
    ) -> State {
        let cont = hdr.frame_type == kind::CONTINUATION;
        let mut mode = match hdr.frame_type {
            kind::DATA => Mode::Data,
            kind::HEADERS | kind::PUSH_PROMISE | kind::CONTINUATION => Mode::Block,
            kind::PRIORITY | kind::RST_STREAM | kind::PING | kind::GOAWAY | kind::WINDOW_UPDATE => {
                Mode::Fixed
            }
            kind::SETTINGS => Mode::Settings,
            _ => Mode::Skip,
        };
        // RFC 9113 §6.10: a header block's frames are contiguous.
        match &mut self.block {
            Block::Open(b) if cont && hdr.stream_id == b.stream_id => {
                b.continuations += 1;
                if b.continuations > MAX_CONTINUATIONS {
                    out.push(Event::Error(FrameError::ContinuationFlood {
                        stream_id: b.stream_id,
                    }));
                    self.lose_block(LossReason::Flood, out);
                }
            }
            Block::Lost { stream_id } if cont && hdr.stream_id == *stream_id => {}
            Block::Open(_) | Block::Lost { .. } => {
                let (expected, open) = match &self.block {
                    Block::Open(b) => (b.stream_id, true),
                    Block::Lost { stream_id } => (*stream_id, false),
                    Block::Idle => (0, false),
                };
                out.push(Event::Error(if cont {
                    FrameError::ContinuationWrongStream {
                        expected,
                        got: hdr.stream_id,
                    }
                } else {
                    FrameError::Interleaved {
                        stream_id: expected,
                        frame_type: hdr.frame_type,
                    }
                }));
                if open {
                    self.lose_block(LossReason::Protocol, out);
                }
                self.block = Block::Idle;
                if cont {
                    mode = Mode::Skip;
                }
            }
            Block::Idle if cont => {
                // Its HEADERS was never seen in sync, so a block the peer
                // decoded may have passed us by: treated as lost.
                out.push(Event::Error(FrameError::UnexpectedContinuation {
                    stream_id: hdr.stream_id,
                }));
                out.push(Event::HeaderBlockLost {
                    stream_id: hdr.stream_id,
                    reason: LossReason::Protocol,
                });
                mode = Mode::Skip;
            }
            Block::Idle => {}
        }
        if mode != Mode::Skip
            && let Err(e) = hdr.check()
        {
            out.push(Event::Error(e));
            if mode == Mode::Block {
                self.open_block(&hdr, start_ns);
                self.lose_block(LossReason::Protocol, out);
            }
            mode = Mode::Skip;
        }
        if mode == Mode::Block && !cont {
            self.open_block(&hdr, start_ns);
        }
        let prefix_len = if mode == Mode::Skip || mode == Mode::Settings {
            0
        } else {
            hdr.prefix_len()
        };
        let mut p = Box::new(Payload {
            hdr,
            start_ns,
            mode,
            done: 0,
            prefix: [0; 8],
            prefix_len,
            body_end: None,
            prefix_lost: false,
            lost: false,
            settings: Settings::default(),
            group: [0; 6],
            group_len: 0,
        });
        if prefix_len == 0 {
            self.layout(&mut p, out);
        }
        if hdr.len == 0 {
            self.finish(*p, ts, out);
            State::header()
        } else {
            State::Payload(p)
        }
    }

    fn open_block(&mut self, hdr: &FrameHeader, start_ns: u64) {
        self.block = Block::Open(Box::new(OpenBlock {
            stream_id: hdr.stream_id,
            frame_type: hdr.frame_type,
            flags: hdr.flags,
            start_ns,
            priority: None,
            promised_stream_id: 0,
            buf: Vec::new(),
            continuations: 0,
        }));
    }

    /// The prefix is read: where the body ends, and the block's fixed fields.
    fn layout(&mut self, p: &mut Payload, out: &mut Vec<Event>) {
        let hdr = p.hdr;
        let padded = hdr.frame_type != kind::CONTINUATION && hdr.has(flag::PADDED);
        let pad = match p.mode {
            Mode::Data | Mode::Block if padded => u32::from(p.prefix[0]),
            _ => 0,
        };
        if p.prefix_len + pad > hdr.len {
            out.push(Event::Error(FrameError::BadPadding {
                frame_type: hdr.frame_type,
            }));
            if p.mode == Mode::Block {
                self.lose_block(LossReason::Protocol, out);
            }
            p.mode = Mode::Skip;
            p.body_end = Some(p.prefix_len);
            return;
        }
        // A control frame's fields are its prefix; what follows (GOAWAY debug
        // data) is skipped, so losing it loses nothing.
        let body_end = if p.mode == Mode::Fixed {
            p.prefix_len
        } else {
            hdr.len - pad
        };
        p.body_end = Some(body_end);
        if p.mode != Mode::Block {
            return;
        }
        let skip = usize::from(padded);
        if let Block::Open(b) = &mut self.block {
            if hdr.frame_type == kind::HEADERS && hdr.has(flag::PRIORITY) {
                let mut f = [0u8; 5];
                if let Some(src) = p.prefix.get(skip..skip + 5) {
                    f.copy_from_slice(src);
                }
                b.priority = Some(Priority::parse(f));
            }
            if hdr.frame_type == kind::PUSH_PROMISE {
                let mut f = [0u8; 4];
                if let Some(src) = p.prefix.get(skip..skip + 4) {
                    f.copy_from_slice(src);
                }
                b.promised_stream_id = u32::from_be_bytes(f) & 0x7fff_ffff;
            }
            let fragment = (body_end - p.prefix_len) as usize;
            if b.buf.len() + fragment > MAX_HEADER_BLOCK {
                out.push(Event::Error(FrameError::HeaderBlockTooLarge {
                    stream_id: b.stream_id,
                }));
                self.lose_block(LossReason::TooLarge, out);
            } else {
                b.buf.reserve(fragment);
            }
        }
    }

    /// `n` payload bytes: `bytes` when captured, `None` for a gap.
    fn payload(&mut self, p: &mut Payload, bytes: Option<&[u8]>, n: u32, out: &mut Vec<Event>) {
        let mut off = 0u32;
        while off < n {
            let avail = n - off;
            if p.done < p.prefix_len {
                let k = (p.prefix_len - p.done).min(avail);
                match bytes.and_then(|b| b.get(off as usize..(off + k) as usize)) {
                    Some(src) => {
                        if let Some(dst) = p.prefix.get_mut(p.done as usize..(p.done + k) as usize)
                        {
                            dst.copy_from_slice(src);
                        }
                    }
                    None => {
                        p.prefix_lost = true;
                        p.lost = true;
                    }
                }
                p.done += k;
                off += k;
                if p.done == p.prefix_len {
                    if p.prefix_lost {
                        if p.mode == Mode::Block {
                            self.lose_block(LossReason::Gap, out);
                        }
                    } else {
                        self.layout(p, out);
                    }
                }
                continue;
            }
            let body_end = p.body_end.unwrap_or(p.prefix_len);
            if p.done < body_end {
                let k = (body_end - p.done).min(avail);
                match bytes.and_then(|b| b.get(off as usize..(off + k) as usize)) {
                    Some(src) => {
                        if p.mode == Mode::Data && self.data_bytes {
                            out.push(Event::DataBytes {
                                stream_id: p.hdr.stream_id,
                                at: p.done.saturating_sub(p.prefix_len),
                                bytes: src.to_vec(),
                            });
                        }
                        self.body(p, src);
                    }
                    None => {
                        p.lost = true;
                        if p.mode == Mode::Block {
                            self.lose_block(LossReason::Gap, out);
                        }
                    }
                }
                p.done += k;
                off += k;
                continue;
            }
            // Padding, or the rest of a frame we skip.
            let k = (p.hdr.len - p.done).min(avail);
            if k == 0 {
                return;
            }
            p.done += k;
            off += k;
        }
    }

    /// Captured bytes of the fragment, data or SETTINGS parameters.
    fn body(&mut self, p: &mut Payload, src: &[u8]) {
        match p.mode {
            Mode::Block => {
                if let Block::Open(b) = &mut self.block {
                    b.buf.extend_from_slice(src);
                }
            }
            Mode::Settings => {
                for &byte in src {
                    if let Some(slot) = p.group.get_mut(p.group_len) {
                        *slot = byte;
                    }
                    p.group_len += 1;
                    if p.group_len == p.group.len() {
                        p.settings.apply(p.group);
                        p.group_len = 0;
                    }
                }
            }
            Mode::Data | Mode::Fixed | Mode::Skip => {}
        }
    }

    /// The frame's last byte was moved by the chunk at `ts`.
    fn finish(&mut self, p: Payload, ts: u64, out: &mut Vec<Event>) {
        let hdr = p.hdr;
        let frame = |body| {
            Event::Frame(Frame {
                stream_id: hdr.stream_id,
                flags: hdr.flags,
                start_ns: p.start_ns,
                end_ns: ts,
                body,
            })
        };
        let truncated = Body::Truncated {
            frame_type: hdr.frame_type,
            len: hdr.len,
        };
        let b4 = |at: usize| {
            let mut f = [0u8; 4];
            if let Some(src) = p.prefix.get(at..at + 4) {
                f.copy_from_slice(src);
            }
            u32::from_be_bytes(f)
        };
        match p.mode {
            Mode::Data => {
                let len = p.body_end.unwrap_or(hdr.len) - p.prefix_len.min(hdr.len);
                out.push(frame(Body::Data {
                    len,
                    exact: !p.prefix_lost,
                }));
            }
            Mode::Block => {
                if hdr.has(flag::END_HEADERS) {
                    match std::mem::replace(&mut self.block, Block::Idle) {
                        Block::Open(b) => out.push(block_event(*b, ts)),
                        Block::Lost { .. } | Block::Idle => {}
                    }
                }
            }
            Mode::Fixed if p.lost => out.push(frame(truncated)),
            Mode::Fixed => out.push(frame(match hdr.frame_type {
                kind::PRIORITY => {
                    let mut f = [0u8; 5];
                    if let Some(src) = p.prefix.get(..5) {
                        f.copy_from_slice(src);
                    }
                    Body::Priority(Priority::parse(f))
                }
                kind::RST_STREAM => Body::RstStream { error_code: b4(0) },
                kind::PING => Body::Ping { data: p.prefix },
                kind::GOAWAY => Body::GoAway {
                    last_stream_id: b4(0) & 0x7fff_ffff,
                    error_code: b4(4),
                },
                _ => Body::WindowUpdate {
                    increment: b4(0) & 0x7fff_ffff,
                },
            })),
            Mode::Settings if p.lost => out.push(frame(truncated)),
            Mode::Settings => out.push(frame(Body::Settings(p.settings))),
            Mode::Skip => {
                let ends_block = matches!(
                    hdr.frame_type,
                    kind::HEADERS | kind::PUSH_PROMISE | kind::CONTINUATION
                ) && hdr.has(flag::END_HEADERS);
                if ends_block
                    && matches!(self.block, Block::Lost { stream_id } if stream_id == hdr.stream_id)
                {
                    self.block = Block::Idle;
                }
                if hdr.frame_type > kind::CONTINUATION {
                    out.push(frame(Body::Unknown {
                        frame_type: hdr.frame_type,
                        len: hdr.len,
                    }));
                }
            }
        }
    }
}

fn block_event(b: OpenBlock, end_ns: u64) -> Event {
    let body = if b.frame_type == kind::PUSH_PROMISE {
        Body::PushPromise {
            promised_stream_id: b.promised_stream_id,
            block: b.buf,
        }
    } else {
        Body::Headers {
            block: b.buf,
            priority: b.priority,
        }
    };
    Event::Frame(Frame {
        stream_id: b.stream_id,
        flags: b.flags | flag::END_HEADERS,
        start_ns: b.start_ns,
        end_ns,
        body,
    })
}

/// The frame header at `at`, if 9 bytes are there.
fn header_at(data: &[u8], at: usize) -> Option<FrameHeader> {
    let bytes: &[u8; HEADER_LEN] = data.get(at..at.checked_add(HEADER_LEN)?)?.try_into().ok()?;
    Some(FrameHeader::parse(bytes))
}

#[cfg(test)]
mod tests;
