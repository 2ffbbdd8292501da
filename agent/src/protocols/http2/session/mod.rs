//! One HTTP/2 connection, both directions, for an observer: frames
//! ([`FrameReader`]) and header blocks ([`Decoder`]) of each direction become
//! streams, and each stream that ends becomes an [`Exchange`] (request head,
//! response head, trailers, timings, body sizes, gRPC message counts).
//!
//! # Stream life
//!
//! Only client-initiated (odd) streams are tracked. A stream starts at its
//! request HEADERS and ends, exactly once, when both directions sent
//! END_STREAM ([`End::Complete`]), at a RST_STREAM from either side, at a
//! server GOAWAY whose last stream id is below it, when the connection closes,
//! or when [`MAX_STREAMS`] are open and it is the oldest (lowest id). Ended
//! ids are remembered ([`ENDED_MEMORY`] of them) so late frames of a stream
//! never report it twice. Server push is not reported: PUSH_PROMISE blocks
//! are decoded (they update the table) and counted as `push_ignored`, frames
//! of even streams are ignored.
//!
//! A stream whose request the agent did not see (joined mid-connection, or
//! its HEADERS fell in bytes whose framing was lost) still becomes an
//! exchange when a later frame of it shows up, with
//! [`Exchange::request_seen`] false and an all-`Unknown` request head.
//!
//! Every stream the session begins to track gives one [`Started`], so each
//! [`Exchange`] follows exactly one `Started` with the same stream id.
//!
//! # Losses
//!
//! - A lost header block (capture gap) starts a new HPACK epoch for that
//!   direction; the head it was is all `Unknown`. A lost block after a known
//!   final response head (or after the request head) can only be the trailers,
//!   which carry END_STREAM (RFC 9113 §8.1), so that side ends there — unless
//!   the server has pushed on this connection (the block may have been a
//!   PUSH_PROMISE). A lost first block's END_STREAM flag is not known: a
//!   lost Trailers-Only response leaves the stream open until a later frame,
//!   RST_STREAM, GOAWAY, eviction or close ends it.
//! - Lost framing on a direction marks every open stream: its message counts
//!   for that direction become unknown, its byte counts are lower bounds, and
//!   [`Exchange::framing_lost`] is set. If the request side lost framing, the
//!   response's END_STREAM completes the stream (the request's END_STREAM may
//!   have been in the gap, so its `request_end_ns` is the last request frame
//!   seen). If the response side lost framing, the stream waits for a later
//!   END_STREAM, a reset or the close: it is never completed at a guessed time.
//!
//! # Upgrade from HTTP/1.1
//!
//! A connection that switched with `Upgrade: h2c` ([`Session::upgraded`],
//! RFC 7540 §3.2) starts at the offsets where HTTP/1 ended: the client's
//! preface, the server's SETTINGS. The upgrade request is stream 1, already
//! open and half-closed by the client, answered by HTTP/2 HEADERS and DATA
//! on stream 1; its [`Started`] is not reported (the HTTP/1 request had its
//! own), its [`Exchange`] is.
//!
//! Timestamps are those of the chunks that moved a frame's first and last
//! bytes. A lost block has none of its own: the chunk where the loss was
//! found stands in.

mod detect;
mod head;
mod stream;
mod walk;

pub use head::{Head, Known, MAX_CAPTURED, MAX_VALUE};

use std::collections::{BTreeMap, VecDeque};

use super::{
    frame::{Body, Event, Frame, FrameError, FrameReader, PREFACE, kind},
    hpack::{Decoded, Decoder, HpackError},
};
use crate::{capture::Direction, conn::Chunk, protocols::http1::Capture};
use stream::{REQUEST, RESPONSE, Side, Stream};

/// Streams open per connection before the oldest is given up (RFC 9113
/// recommends allowing at least 100 concurrent streams; gRPC servers default
/// to 100 or unlimited).
pub const MAX_STREAMS: usize = 1024;
/// Ended stream ids remembered, so late frames do not open them again.
pub const ENDED_MEMORY: usize = 1024;

/// A stream the session began to track (at its request HEADERS, or at the
/// first frame seen of a stream joined midway): spans get their ids here,
/// before the exchange ends, so requests made while serving it can name it
/// as parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub stream_id: u32,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// Why a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// END_STREAM both ways (see the module doc for damaged request sides).
    Complete,
    /// RST_STREAM from either side; `None` when its code was not captured.
    RstStream { error_code: Option<u32> },
    /// The server's GOAWAY did not include this stream.
    GoAway { error_code: u32 },
    /// The connection closed first.
    Closed,
    /// [`MAX_STREAMS`] were open and this was the oldest.
    Evicted,
}

/// One stream, from its request to its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub stream_id: u32,
    /// The request HEADERS frame was seen. False for a stream joined midway:
    /// `request` is all `Unknown` and `request_start_ns` is its first frame
    /// seen. (True with an all-`Unknown` request when the block was lost.)
    pub request_seen: bool,
    pub request: Head,
    /// The first final (non-1xx) response head, if seen.
    pub response: Option<Head>,
    /// The response trailers, if seen.
    pub trailers: Option<Head>,
    pub request_start_ns: u64,
    /// END_STREAM from the client, else the last request frame seen.
    pub request_end_ns: u64,
    /// The final response head, else the first response frame seen after it
    /// would have been.
    pub response_start_ns: Option<u64>,
    /// END_STREAM from the server, else the last response frame seen.
    pub response_end_ns: Option<u64>,
    /// When the stream ended: the frame that ended it, or the close.
    pub end_ns: u64,
    /// DATA lengths, padding excluded (lower bounds when `framing_lost` or
    /// not `request_seen`; a frame whose pad length was not captured counts
    /// its padding).
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
    /// gRPC messages per direction; `None` for a stream that is not gRPC (by
    /// its request or response content type) or when a message prefix was
    /// not captured.
    pub request_messages: Option<u64>,
    pub response_messages: Option<u64>,
    pub end: End,
    /// Framing was lost on a direction while the stream was open: frames of
    /// it may be missing.
    pub framing_lost: bool,
}

/// What feeding a chunk produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Streams whose tracking just began, in order.
    pub started: Vec<Started>,
    /// Streams that ended, in the order they ended.
    pub exchanges: Vec<Exchange>,
    /// Counted problems, one per occurrence, as snake_case reasons:
    /// - frames: `bad_preface`, `frame_bad_length`, `frame_bad_stream_id`,
    ///   `frame_bad_padding`, `unexpected_continuation`,
    ///   `continuation_wrong_stream`, `frame_inside_header_block`,
    ///   `header_block_too_large`, `continuation_flood`, `frame_truncated`
    ///   (a control frame partly uncaptured);
    /// - losses: `header_block_lost`, `framing_lost`, `resynced` (framing
    ///   found again), `table_epochs` (an HPACK decoder started a new epoch);
    /// - HPACK: `hpack_block_too_large`, `hpack_truncated`,
    ///   `hpack_integer_overflow`, `hpack_invalid_index`, `hpack_huffman`,
    ///   `hpack_size_update_too_large`, `hpack_size_update_not_at_start`,
    ///   `hpack_too_many_fields`;
    /// - heads: `unknown_fields` (once per block with fields of unknown name),
    ///   `value_too_long`, `value_not_utf8`, `bad_status`, `bad_grpc_status`;
    /// - streams: `streams_evicted`, `role_unknown` (a header block before
    ///   the role was known), `headers_on_closed_stream`, `extra_headers`
    ///   (a response block after the trailers), `push_ignored`.
    pub errors: Vec<&'static str>,
}

/// One direction of the connection.
#[derive(Debug)]
struct OneWay {
    /// `None` until the first chunk when the session must look at it to
    /// pick the reader (from the start, role unknown).
    reader: Option<FrameReader>,
    decoder: Decoder,
    /// The decoder holds nothing that a loss could invalidate (a new epoch
    /// with no block decoded since): a second loss event is the same loss.
    fresh: bool,
}

impl OneWay {
    fn new(reader: Option<FrameReader>, from_start: bool) -> OneWay {
        let reader = reader.map(|mut r| {
            r.set_data_bytes(true);
            r
        });
        OneWay {
            reader,
            decoder: if from_start {
                Decoder::new()
            } else {
                Decoder::new_midstream()
            },
            fresh: !from_start,
        }
    }
}

/// One HTTP/2 connection (see the module doc).
#[derive(Debug)]
pub struct Session {
    requests_from: Option<Direction>,
    capture: Capture,
    dirs: [OneWay; 2],
    /// Boxed: a stream with its heads is large, and B-tree nodes move their values.
    streams: BTreeMap<u32, Box<Stream>>,
    ended: VecDeque<u32>,
    /// Highest stream id opened by a request head.
    max_opened: u32,
    /// Every request head was seen (from the start, no framing lost on the
    /// request side): an unknown stream id below `max_opened` is closed, and
    /// only a request head opens a stream.
    ids_exact: bool,
    /// The server sent PUSH_PROMISE on this connection.
    pushes: bool,
    /// The server's GOAWAY: (last stream id, error code).
    goaway: Option<(u32, u32)>,
    events: Vec<Event>,
}

impl Session {
    /// `requests_from`: the direction carrying requests (client → server) if
    /// the role is known (Ingress on servers, Egress on clients); otherwise it
    /// is inferred from the preface or the first header block with `:method`
    /// or `:status`. `from_start`: the agent saw the connection from its first
    /// byte (the client direction starts with the preface, HPACK tables are
    /// fully known); otherwise both directions hunt for a frame start and
    /// the tables start unknown. `capture`: opted-in headers (its
    /// `body_bytes` is not used for HTTP/2).
    pub fn new(requests_from: Option<Direction>, from_start: bool, capture: Capture) -> Session {
        let reader = |d: Direction| match (from_start, requests_from) {
            (false, _) => Some(FrameReader::midstream()),
            (true, Some(r)) if r == d => Some(FrameReader::client()),
            (true, Some(_)) => Some(FrameReader::server()),
            (true, None) => None,
        };
        Session {
            requests_from,
            capture,
            dirs: [
                OneWay::new(reader(Direction::Ingress), from_start),
                OneWay::new(reader(Direction::Egress), from_start),
            ],
            streams: BTreeMap::new(),
            ended: VecDeque::new(),
            max_opened: 0,
            ids_exact: from_start,
            pushes: false,
            goaway: None,
            events: Vec::new(),
        }
    }

    /// The connection after an HTTP/1.1 `Upgrade: h2c` (see the module
    /// doc): `requests_from` carried the upgrade `request` (its first and
    /// last bytes at `request_start_ns` and `request_end_ns`); the new
    /// protocol's bytes start at `at` in each direction (by
    /// [`Direction::index`]): the client's preface, the server's first
    /// frame. Bytes before those offsets are skipped.
    pub fn upgraded(
        requests_from: Direction,
        at: [u64; 2],
        request: Head,
        request_start_ns: u64,
        request_end_ns: u64,
        capture: Capture,
    ) -> Session {
        let reader = |d: Direction| {
            let offset = at.get(d.index()).copied().unwrap_or(0);
            Some(if d == requests_from {
                FrameReader::client_at(offset)
            } else {
                FrameReader::server_at(offset)
            })
        };
        let mut session = Session {
            requests_from: Some(requests_from),
            capture,
            dirs: [
                OneWay::new(reader(Direction::Ingress), true),
                OneWay::new(reader(Direction::Egress), true),
            ],
            streams: BTreeMap::new(),
            ended: VecDeque::new(),
            max_opened: 1,
            ids_exact: true,
            pushes: false,
            goaway: None,
            events: Vec::new(),
        };
        // Stream 1 is half-closed (local) for the client: its request ended
        // with the HTTP/1 request.
        let mut sent = Side::new(true);
        sent.last_ns = Some(request_end_ns);
        sent.end_ns = Some(request_end_ns);
        session.streams.insert(
            1,
            Box::new(Stream {
                request: Some(request),
                request_seen: true,
                response: None,
                trailers: None,
                start_ns: request_start_ns,
                sides: [sent, Side::new(true)],
                framing_lost: false,
            }),
        );
        session
    }

    /// The direction carrying requests, once known.
    pub fn requests_from(&self) -> Option<Direction> {
        self.requests_from
    }

    /// Whether bytes at the start of one direction look like HTTP/2: the
    /// client preface (or at least its first 16 bytes), a server's first
    /// SETTINGS frame (stream 0, no ACK, at most 32 parameters, known
    /// parameters within their ranges), or, for a connection joined midway,
    /// at least two complete frame headers in a row with a non-empty first
    /// frame. Every header in the chunk (up to 16) must be plausible: reserved
    /// bit clear, a known type, only that type's flags, the type's stream and
    /// length rules, at most 16 KiB. Strict on purpose: random binary
    /// protocols must not pass.
    pub fn detect(data: &[u8]) -> bool {
        detect::detect(data)
    }

    /// Feeds one chunk of one direction.
    pub fn push(&mut self, direction: Direction, chunk: &Chunk) -> Output {
        let mut out = Output::default();
        let d = direction.index();
        if self.dirs.get(d).is_some_and(|s| s.reader.is_none()) {
            self.pick_reader(direction, chunk);
        }
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        if let Some(reader) = self.dirs.get_mut(d).and_then(|s| s.reader.as_mut()) {
            reader.push(chunk, &mut events);
        }
        for e in events.drain(..) {
            self.event(direction, e, chunk.ts_ns, &mut out);
        }
        self.events = events;
        out
    }

    /// The connection closed at `ts_ns`: every open stream ends
    /// ([`End::Closed`]), in stream id order.
    pub fn close(&mut self, ts_ns: u64) -> Output {
        let mut out = Output::default();
        while let Some((id, s)) = self.streams.pop_first() {
            self.finish(id, s, End::Closed, ts_ns, &mut out);
        }
        out
    }

    /// From the start with the role unknown: the first chunk of a direction
    /// says which side it is (the client's starts with the preface).
    fn pick_reader(&mut self, direction: Direction, chunk: &Chunk) {
        let data = chunk.data.get(..PREFACE.len()).unwrap_or(&chunk.data);
        let client = match self.requests_from {
            Some(r) => Some(r == direction),
            None if data.is_empty() => None,
            None => Some(PREFACE.starts_with(data)),
        };
        let Some(side) = self.dirs.get_mut(direction.index()) else {
            return;
        };
        match client {
            Some(client) => {
                let mut reader = if client {
                    FrameReader::client()
                } else {
                    FrameReader::server()
                };
                reader.set_data_bytes(true);
                side.reader = Some(reader);
                self.requests_from.get_or_insert(if client {
                    direction
                } else {
                    opposite(direction)
                });
            }
            None => {
                // Nothing captured to tell: hunt, as if joined midway (and
                // request heads may pass unseen until framing is found).
                *side = OneWay::new(Some(FrameReader::midstream()), false);
                self.ids_exact = false;
            }
        }
    }

    /// Which side of streams a direction carries, once the role is known.
    fn side(&self, direction: Direction) -> Option<usize> {
        self.requests_from
            .map(|r| if r == direction { REQUEST } else { RESPONSE })
    }

    fn event(&mut self, direction: Direction, e: Event, ts: u64, out: &mut Output) {
        match e {
            Event::Preface { .. } => {
                self.requests_from.get_or_insert(direction);
            }
            Event::Frame(f) => self.frame(direction, f, out),
            Event::DataBytes {
                stream_id,
                at,
                bytes,
            } => {
                if let Some(side) = self.side(direction)
                    && let Some(s) = self.streams.get_mut(&stream_id)
                    && let Some(side) = s.sides.get_mut(side)
                {
                    side.walk.bytes(at, &bytes);
                }
            }
            Event::HeaderBlockLost { stream_id, .. } => {
                out.errors.push("header_block_lost");
                self.lose_table(direction, out);
                self.block_lost(direction, stream_id, ts, out);
            }
            Event::FramingLost { .. } => {
                out.errors.push("framing_lost");
                self.lose_table(direction, out);
                self.framing_lost(direction);
            }
            Event::Resynced { .. } => out.errors.push("resynced"),
            Event::Error(e) => out.errors.push(frame_error(e)),
        }
    }

    /// Bytes of this direction were lost: its decoder starts a new epoch.
    fn lose_table(&mut self, direction: Direction, out: &mut Output) {
        if let Some(side) = self.dirs.get_mut(direction.index())
            && !side.fresh
        {
            side.decoder.reset_epoch();
            side.fresh = true;
            out.errors.push("table_epochs");
        }
    }

    fn decode(&mut self, direction: Direction, block: &[u8], out: &mut Output) -> Decoded {
        let Some(side) = self.dirs.get_mut(direction.index()) else {
            return Decoded::default();
        };
        let decoded = side.decoder.decode(block);
        side.fresh = decoded.new_epoch;
        if let Some(e) = decoded.error {
            out.errors.push(hpack_error(e));
        }
        if decoded.new_epoch {
            out.errors.push("table_epochs");
        }
        decoded
    }

    fn frame(&mut self, direction: Direction, f: Frame, out: &mut Output) {
        let other = opposite(direction).index();
        match &f.body {
            Body::Headers { block, .. } => {
                let decoded = self.decode(direction, block, out);
                let head = Head::from_block(&decoded, &self.capture.headers, &mut out.errors);
                if self.requests_from.is_none() {
                    let named = |n: &[u8]| {
                        decoded
                            .fields
                            .iter()
                            .any(|field| field.name.as_deref() == Some(n))
                    };
                    if named(b":method") {
                        self.requests_from = Some(direction);
                    } else if named(b":status") {
                        self.requests_from = Some(opposite(direction));
                    }
                }
                match self.side(direction) {
                    None => out.errors.push("role_unknown"),
                    Some(REQUEST) => self.request_head(&f, head, out),
                    Some(_) => self.response_head(&f, head, out),
                }
            }
            Body::PushPromise { block, .. } => {
                self.decode(direction, block, out);
                self.pushes = true;
                out.errors.push("push_ignored");
            }
            Body::Data { len, exact } => self.data(direction, &f, *len, *exact, out),
            Body::RstStream { error_code } => self.reset(direction, &f, Some(*error_code), out),
            Body::Truncated { frame_type, .. } => {
                out.errors.push("frame_truncated");
                if *frame_type == kind::RST_STREAM {
                    self.reset(direction, &f, None, out);
                }
            }
            Body::Settings(s) if !f.ack() => {
                // This direction's receiver limits: they bound what the peer
                // (the other direction) sends.
                if let Some(other) = self.dirs.get_mut(other) {
                    if let Some(size) = s.header_table_size {
                        other.decoder.set_max_table_size(size);
                    }
                    if let (Some(size), Some(reader)) = (s.max_frame_size, other.reader.as_mut()) {
                        reader.set_max_frame_size(size);
                    }
                }
            }
            Body::GoAway {
                last_stream_id,
                error_code,
            } => {
                // A client's GOAWAY only concerns pushes, which are not tracked.
                if self.side(direction) == Some(RESPONSE) {
                    self.goaway(*last_stream_id, *error_code, f.end_ns, out);
                }
            }
            Body::Settings(_)
            | Body::Priority(_)
            | Body::Ping { .. }
            | Body::WindowUpdate { .. }
            | Body::Unknown { .. } => {}
        }
    }
}

fn opposite(direction: Direction) -> Direction {
    match direction {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

fn frame_error(e: FrameError) -> &'static str {
    match e {
        FrameError::BadPreface => "bad_preface",
        FrameError::BadLength { .. } => "frame_bad_length",
        FrameError::BadStreamId { .. } => "frame_bad_stream_id",
        FrameError::BadPadding { .. } => "frame_bad_padding",
        FrameError::UnexpectedContinuation { .. } => "unexpected_continuation",
        FrameError::ContinuationWrongStream { .. } => "continuation_wrong_stream",
        FrameError::Interleaved { .. } => "frame_inside_header_block",
        FrameError::HeaderBlockTooLarge { .. } => "header_block_too_large",
        FrameError::ContinuationFlood { .. } => "continuation_flood",
    }
}

fn hpack_error(e: HpackError) -> &'static str {
    match e {
        HpackError::BlockTooLarge(_) => "hpack_block_too_large",
        HpackError::Truncated => "hpack_truncated",
        HpackError::IntegerOverflow => "hpack_integer_overflow",
        HpackError::InvalidIndex(_) => "hpack_invalid_index",
        HpackError::Huffman(_) => "hpack_huffman",
        HpackError::SizeUpdateTooLarge { .. } => "hpack_size_update_too_large",
        HpackError::SizeUpdateNotAtStart => "hpack_size_update_not_at_start",
        HpackError::TooManyFields => "hpack_too_many_fields",
    }
}

#[cfg(test)]
mod tests;
