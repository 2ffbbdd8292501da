//! Streams of a session: what is kept per open stream, how frames open,
//! update and end it (see the parent module doc for the rules).

use super::{
    ENDED_MEMORY, End, Exchange, Head, Known, MAX_STREAMS, Output, Session, Started, walk::Walk,
};
use crate::{capture::Direction, protocols::http2::frame::Frame};

/// Index of the request (client → server) side in [`Stream::sides`].
pub(super) const REQUEST: usize = 0;
/// Index of the response side.
pub(super) const RESPONSE: usize = 1;

/// One direction of a stream.
#[derive(Clone, Debug)]
pub(super) struct Side {
    /// First frame of the response (its final head, else whatever came
    /// first); unused on the request side.
    pub first_ns: Option<u64>,
    /// End of the last frame seen.
    pub last_ns: Option<u64>,
    /// End of the frame that carried END_STREAM.
    pub end_ns: Option<u64>,
    /// Frames of this side may have gone unseen (the stream was joined after
    /// this side began, its block was lost, or framing was lost while the
    /// stream was open), so its END_STREAM may have been missed.
    pub damaged: bool,
    pub body_bytes: u64,
    pub walk: Walk,
}

impl Side {
    pub(super) fn new(seen_from_start: bool) -> Side {
        Side {
            first_ns: None,
            last_ns: None,
            end_ns: None,
            damaged: !seen_from_start,
            body_bytes: 0,
            walk: if seen_from_start {
                Walk::new()
            } else {
                Walk::lost()
            },
        }
    }

    pub(super) fn ended(&self) -> bool {
        self.end_ns.is_some()
    }
}

#[derive(Clone, Debug)]
pub(super) struct Stream {
    /// `None` until the request head is read (never, for a stream joined
    /// midway).
    pub request: Option<Head>,
    /// The request HEADERS frame was seen (its block may still be lost).
    pub request_seen: bool,
    pub response: Option<Head>,
    pub trailers: Option<Head>,
    pub start_ns: u64,
    pub sides: [Side; 2],
    pub framing_lost: bool,
}

impl Stream {
    /// Both directions ended. A request side that may have lost its
    /// END_STREAM is taken as ended when the response ends: a server ends its
    /// response last (or resets the stream).
    pub(super) fn complete(&self) -> bool {
        let [request, response] = &self.sides;
        response.ended() && (request.ended() || request.damaged)
    }

    pub(super) fn into_exchange(self, stream_id: u32, end: End, end_ns: u64) -> Exchange {
        let grpc = self.request.as_ref().is_some_and(Head::is_grpc)
            || self.response.as_ref().is_some_and(Head::is_grpc);
        let [request, response] = self.sides;
        let messages = |side: &Side| if grpc { side.walk.count() } else { None };
        Exchange {
            stream_id,
            request_seen: self.request_seen,
            request: self.request.unwrap_or_else(Head::unknown),
            response: self.response,
            trailers: self.trailers,
            request_start_ns: self.start_ns,
            request_end_ns: request.end_ns.or(request.last_ns).unwrap_or(self.start_ns),
            response_start_ns: response.first_ns,
            response_end_ns: response.first_ns.and(response.end_ns.or(response.last_ns)),
            end_ns,
            request_body_bytes: request.body_bytes,
            response_body_bytes: response.body_bytes,
            request_messages: messages(&request),
            response_messages: messages(&response),
            end,
            framing_lost: self.framing_lost,
        }
    }
}

/// Stream life: opening, the frames of a stream, and ending.
impl Session {
    /// Whether a frame of an untracked stream may open it: when every
    /// request head was seen, only a new request head (ids increase, RFC 9113
    /// §5.1.1, so every ended id is below it); otherwise any frame of an odd
    /// stream that did not end recently.
    pub(super) fn may_open(&self, id: u32, request_head: bool) -> bool {
        id % 2 == 1
            && if self.ids_exact {
                request_head && id > self.max_opened
            } else {
                !self.ended.contains(&id)
            }
    }

    /// Begins tracking a stream (evicting the oldest when full).
    pub(super) fn open(&mut self, id: u32, s: Stream, started: Started, ts: u64, out: &mut Output) {
        if self.streams.len() >= MAX_STREAMS
            && let Some((old, evicted)) = self.streams.pop_first()
        {
            out.errors.push("streams_evicted");
            self.finish(old, evicted, End::Evicted, ts, out);
        }
        self.max_opened = self.max_opened.max(id);
        out.started.push(started);
        self.streams.insert(id, Box::new(s));
    }

    pub(super) fn finish(
        &mut self,
        id: u32,
        s: Box<Stream>,
        end: End,
        end_ns: u64,
        out: &mut Output,
    ) {
        if self.ended.len() >= ENDED_MEMORY {
            self.ended.pop_front();
        }
        self.ended.push_back(id);
        out.exchanges.push(s.into_exchange(id, end, end_ns));
    }

    /// Ends the stream if both sides are done.
    pub(super) fn check_complete(&mut self, id: u32, end_ns: u64, out: &mut Output) {
        if self.streams.get(&id).is_some_and(|s| s.complete())
            && let Some(s) = self.streams.remove(&id)
        {
            self.finish(id, s, End::Complete, end_ns, out);
        }
    }

    /// A stream joined midway (its request not seen), first seen in a frame
    /// that began at `start_ns` and was read at `now`.
    pub(super) fn joined(
        &mut self,
        id: u32,
        start_ns: u64,
        now: u64,
        response_from_start: bool,
        out: &mut Output,
    ) {
        let s = Stream {
            request: None,
            request_seen: false,
            response: None,
            trailers: None,
            start_ns,
            sides: [Side::new(false), Side::new(response_from_start)],
            framing_lost: false,
        };
        let started = Started {
            stream_id: id,
            traceparent: None,
            tracestate: None,
        };
        self.open(id, s, started, now, out);
    }

    pub(super) fn request_head(&mut self, f: &Frame, head: Head, out: &mut Output) {
        let id = f.stream_id;
        if let Some(s) = self.streams.get_mut(&id) {
            // A second request block: the client's trailers.
            let side = &mut s.sides[REQUEST];
            side.last_ns = Some(f.end_ns);
            if f.end_stream() {
                side.end_ns = Some(f.end_ns);
            }
            self.check_complete(id, f.end_ns, out);
            return;
        }
        if !self.may_open(id, true) {
            out.errors.push("headers_on_closed_stream");
            return;
        }
        let mut request = Side::new(true);
        request.last_ns = Some(f.end_ns);
        if f.end_stream() {
            request.end_ns = Some(f.end_ns);
        }
        let started = Started {
            stream_id: id,
            traceparent: head.traceparent.clone(),
            tracestate: head.tracestate.clone(),
        };
        let s = Stream {
            request: Some(head),
            request_seen: true,
            response: None,
            trailers: None,
            start_ns: f.start_ns,
            sides: [request, Side::new(true)],
            framing_lost: false,
        };
        self.open(id, s, started, f.end_ns, out);
        self.after_goaway(id, f.end_ns, out);
    }

    /// The server's GOAWAY: the streams above `last` will not be processed.
    pub(super) fn goaway(&mut self, last: u32, error_code: u32, ts: u64, out: &mut Output) {
        self.goaway = Some((last, error_code));
        while let Some((&id, _)) = self.streams.range(last.saturating_add(1)..).next() {
            if let Some(s) = self.streams.remove(&id) {
                self.finish(id, s, End::GoAway { error_code }, ts, out);
            }
        }
    }

    /// A stream opened after the server's GOAWAY excluded it: the server
    /// ignores it.
    pub(super) fn after_goaway(&mut self, id: u32, ts: u64, out: &mut Output) {
        if let Some((last, error_code)) = self.goaway
            && id > last
            && let Some(s) = self.streams.remove(&id)
        {
            self.finish(id, s, End::GoAway { error_code }, ts, out);
        }
    }

    pub(super) fn response_head(&mut self, f: &Frame, head: Head, out: &mut Output) {
        let id = f.stream_id;
        if !self.streams.contains_key(&id) {
            if !self.may_open(id, false) {
                return;
            }
            // Only a response head proves the response's data was not missed.
            let is_head = head.status.value().is_some();
            self.joined(id, f.start_ns, f.end_ns, is_head, out);
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let side = &mut s.sides[RESPONSE];
        side.last_ns = Some(f.end_ns);
        if s.response.is_none() && s.trailers.is_none() {
            match head.status {
                Known::Value(100..=199) => {}
                // A block without `:status` is not a response head: the
                // trailers, after a head that was missed.
                Known::Absent => {
                    side.first_ns.get_or_insert(f.start_ns);
                    s.trailers = Some(head);
                }
                Known::Value(_) | Known::Unknown => {
                    side.first_ns.get_or_insert(f.start_ns);
                    s.response = Some(head);
                }
            }
        } else if s.trailers.is_none() {
            s.trailers = Some(head);
        } else {
            out.errors.push("extra_headers");
        }
        if f.end_stream() {
            side.end_ns = Some(f.end_ns);
        }
        self.check_complete(id, f.end_ns, out);
    }

    pub(super) fn data(
        &mut self,
        direction: Direction,
        f: &Frame,
        len: u32,
        exact: bool,
        out: &mut Output,
    ) {
        let Some(role) = self.side(direction) else {
            return;
        };
        let id = f.stream_id;
        if !self.streams.contains_key(&id) {
            if !self.may_open(id, false) {
                return;
            }
            self.joined(id, f.start_ns, f.end_ns, false, out);
        }
        let Some(side) = self
            .streams
            .get_mut(&id)
            .and_then(|s| s.sides.get_mut(role))
        else {
            return;
        };
        side.body_bytes = side.body_bytes.saturating_add(u64::from(len));
        side.walk.frame(len, exact);
        side.last_ns = Some(f.end_ns);
        if role == RESPONSE {
            side.first_ns.get_or_insert(f.start_ns);
        }
        if f.end_stream() {
            side.end_ns = Some(f.end_ns);
        }
        self.check_complete(id, f.end_ns, out);
    }

    pub(super) fn reset(
        &mut self,
        direction: Direction,
        f: &Frame,
        error_code: Option<u32>,
        out: &mut Output,
    ) {
        let Some(mut s) = self.streams.remove(&f.stream_id) else {
            return;
        };
        if let Some(side) = self.side(direction).and_then(|i| s.sides.get_mut(i)) {
            side.last_ns = Some(f.end_ns);
        }
        self.finish(f.stream_id, s, End::RstStream { error_code }, f.end_ns, out);
    }

    /// A header block of `id` was lost (see the module doc).
    pub(super) fn block_lost(&mut self, direction: Direction, id: u32, ts: u64, out: &mut Output) {
        let Some(role) = self.side(direction) else {
            return;
        };
        if !self.streams.contains_key(&id) {
            if !self.may_open(id, role == REQUEST) {
                return;
            }
            if role == REQUEST {
                // Its END_STREAM flag is unknown: the request side is
                // damaged, but its DATA positions are intact.
                let mut request = Side::new(true);
                request.damaged = true;
                let s = Stream {
                    request: Some(Head::unknown()),
                    request_seen: true,
                    response: None,
                    trailers: None,
                    start_ns: ts,
                    sides: [request, Side::new(true)],
                    framing_lost: false,
                };
                let started = Started {
                    stream_id: id,
                    traceparent: None,
                    tracestate: None,
                };
                self.open(id, s, started, ts, out);
                self.after_goaway(id, ts, out);
                return;
            }
            self.joined(id, ts, ts, false, out);
        }
        let pushes = self.pushes;
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if role == REQUEST {
            // After the request head only the trailers, with END_STREAM.
            let side = &mut s.sides[REQUEST];
            side.last_ns = Some(ts);
            side.end_ns = Some(ts);
        } else {
            let side = &mut s.sides[RESPONSE];
            side.last_ns = Some(ts);
            let final_head = s
                .response
                .as_ref()
                .is_some_and(|h| h.status.value().is_some_and(|&st| st >= 200));
            if s.response.is_none() && s.trailers.is_none() {
                side.first_ns.get_or_insert(ts);
                side.damaged = true;
                s.response = Some(Head::unknown());
            } else if s.trailers.is_none() {
                s.trailers = Some(Head::unknown());
                if final_head && !pushes {
                    side.end_ns = Some(ts);
                }
            }
        }
        self.check_complete(id, ts, out);
    }

    /// Framing of this direction is lost: every open stream may miss frames.
    pub(super) fn framing_lost(&mut self, direction: Direction) {
        let role = self.side(direction);
        if role != Some(RESPONSE) {
            self.ids_exact = false;
        }
        let Some(role) = role else {
            return;
        };
        for s in self.streams.values_mut() {
            s.framing_lost = true;
            if let Some(side) = s.sides.get_mut(role) {
                side.damaged = true;
                side.walk.lose();
            }
        }
    }
}
