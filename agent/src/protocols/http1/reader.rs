//! One direction of an HTTP/1 connection as a sequence of messages: heads parsed
//! across syscall boundaries, bodies skipped by their framing, gaps (bytes the
//! kernel did not capture) stepped over where the framing allows.
//!
//! After anything that is not HTTP/1, or a gap that loses the framing, the reader
//! reports one error and resynchronises: it tries again at the start of each later
//! syscall's data, where messages almost always begin.
//!
//! Positions are absolute offsets in the direction's byte sequence (the
//! chunks' `offset`): each message's end ([`Found::End`]) and where a tunnel
//! began ([`Reader::tunnel_at`]), so a caller taking over an upgraded
//! connection knows where the new protocol's first byte is.

use super::{
    Capture,
    body::{Chunked, Framing},
    head::{HeadError, Parsed, Request, Response, parse_request, parse_response},
};
use crate::{conn::Chunk, protocols::http2::frame::PREFACE};

/// Which messages this direction carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Request,
    Response,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Head {
    Request(Request),
    Response(Response),
}

/// What the reader found in the bytes it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "short-lived (one Vec per chunk), and every message has a head: boxing it would add an allocation per message"
)]
pub enum Found {
    /// A complete head; its first byte arrived at `start_ns`.
    Head { head: Head, start_ns: u64 },
    /// The current message's last byte arrived at `end_ns`; `body` holds its
    /// first bytes when body capture is on. `at`: the offset right after it.
    End {
        end_ns: u64,
        at: u64,
        body_bytes: u64,
        body: Vec<u8>,
    },
    /// Not HTTP/1, or framing lost; `reason` labels the parse-error metric.
    Error { reason: &'static str },
}

#[derive(Clone, Debug)]
enum State {
    Head,
    Body {
        remaining: u64,
        bytes: u64,
    },
    Chunked(Chunked),
    UntilClose {
        bytes: u64,
    },
    /// Upgraded or tunnelled: nothing more to parse.
    Tunnel,
    /// Waiting for the start of a syscall's data to try again.
    Resync,
}

#[derive(Clone, Debug)]
pub struct Reader {
    kind: Kind,
    /// What the user opted in to capture.
    capture: Capture,
    /// The current message's leading body bytes (body capture only).
    body: Vec<u8>,
    /// Bytes of the current message went uncaptured: its kept prefix ends there.
    body_closed: bool,
    state: State,
    /// Bytes of a head that is not complete yet (bounded by `MAX_HEAD_BYTES`).
    head: Vec<u8>,
    head_start_ns: u64,
    last_ns: u64,
    /// Offset right after the bytes pushed so far (captured or not).
    pos: u64,
    /// Where the tunnelled bytes start, once in [`State::Tunnel`] (if known).
    tunnel_at: Option<u64>,
    /// The last request head asked for `Upgrade: h2c`: a client preface at a
    /// message boundary is the upgraded connection, not a request.
    expect_preface: bool,
}

impl Reader {
    pub fn new(kind: Kind, capture: Capture) -> Reader {
        Reader {
            kind,
            capture,
            body: Vec::new(),
            body_closed: false,
            state: State::Head,
            head: Vec::new(),
            head_start_ns: 0,
            last_ns: 0,
            pos: 0,
            tunnel_at: None,
            expect_preface: false,
        }
    }

    /// The connection moved on to another protocol. The tunnel starts where
    /// the current message ends: here at a message boundary, at the start of
    /// a head not complete yet, after a body of known length; unknown inside
    /// a chunked or close-delimited body or while resynchronising.
    pub fn tunnel(&mut self) {
        if self.is_tunnel() {
            return;
        }
        let at = match &self.state {
            State::Head => self.pos.checked_sub(self.head.len() as u64),
            State::Body { remaining, .. } => self.pos.checked_add(*remaining),
            State::Chunked(_) | State::UntilClose { .. } | State::Resync | State::Tunnel => None,
        };
        self.enter_tunnel(at);
    }

    pub fn is_tunnel(&self) -> bool {
        matches!(self.state, State::Tunnel)
    }

    /// In a tunnel: the offset of its first byte, if known.
    pub fn tunnel_at(&self) -> Option<u64> {
        self.tunnel_at.filter(|_| self.is_tunnel())
    }

    fn enter_tunnel(&mut self, at: Option<u64>) {
        self.state = State::Tunnel;
        self.tunnel_at = at;
        self.head = Vec::new();
        self.expect_preface = false;
    }

    /// Feeds one chunk. `framing` decides where the body of each head ends.
    pub fn push(
        &mut self,
        chunk: &Chunk,
        framing: &mut dyn FnMut(&Head) -> Framing,
        out: &mut Vec<Found>,
    ) {
        self.last_ns = chunk.ts_ns;
        let end = chunk.offset.saturating_add(chunk.data.len() as u64);
        let resyncing = matches!(self.state, State::Resync);
        if resyncing {
            self.state = State::Head;
            self.head.clear();
        }
        self.feed(chunk.ts_ns, &chunk.data, end, framing, out, resyncing);
        self.gap(chunk.ts_ns, end, chunk.missing, out);
        self.pos = end.saturating_add(chunk.missing);
    }

    /// The connection closed: a body delimited by the close ends here, a head cut
    /// short is an error.
    pub fn close(&mut self, out: &mut Vec<Found>) {
        match &self.state {
            State::UntilClose { bytes } => {
                self.end(self.last_ns, self.pos, *bytes, out);
            }
            State::Head if !self.head.is_empty() => out.push(Found::Error {
                reason: "incomplete_head",
            }),
            State::Body { .. } | State::Chunked(_) => out.push(Found::Error {
                reason: "incomplete_body",
            }),
            _ => {}
        }
        self.state = State::Resync;
        self.head = Vec::new();
    }

    fn lose_sync(&mut self, reason: &'static str, quiet: bool, out: &mut Vec<Found>) {
        if !quiet {
            out.push(Found::Error { reason });
        }
        self.state = State::Resync;
        self.head = Vec::new();
        self.body = Vec::new();
        self.body_closed = false;
    }

    /// The current message ended at `end_ns`, before offset `at`; the next
    /// one starts afresh.
    fn end(&mut self, end_ns: u64, at: u64, body_bytes: u64, out: &mut Vec<Found>) {
        out.push(Found::End {
            end_ns,
            at,
            body_bytes,
            body: std::mem::take(&mut self.body),
        });
        self.body_closed = false;
    }

    /// `data` is a chunk's captured bytes, ending at offset `end`; what is
    /// left of it is always the chunk's tail (a head begun in an earlier
    /// chunk ends in this one), so its offset is `end - data.len()`.
    fn feed(
        &mut self,
        ts: u64,
        data: &[u8],
        end: u64,
        framing: &mut dyn FnMut(&Head) -> Framing,
        out: &mut Vec<Found>,
        resyncing: bool,
    ) {
        let mut rest: Vec<u8>;
        let mut data = data;
        let at = |data: &[u8]| end.saturating_sub(data.len() as u64);
        // While resynchronising, a failed attempt is not counted again.
        let mut quiet = resyncing;
        while !data.is_empty() {
            let body_limit = if self.body_closed {
                0
            } else {
                self.capture.body_bytes
            };
            match &mut self.state {
                State::Resync | State::Tunnel => return,
                State::Head => {
                    // The client's preface after its `Upgrade: h2c` request:
                    // the server switched (its 101 may not have been read
                    // yet); the bytes are HTTP/2.
                    let in_place = self.head.is_empty();
                    if in_place && self.expect_preface && starts_preface(data) {
                        self.enter_tunnel(Some(at(data)));
                        return;
                    }
                    // A whole head in one syscall is the common case: it is
                    // parsed where it lies, and only bytes that must wait for
                    // more are copied.
                    if in_place {
                        self.head_start_ns = ts;
                    } else {
                        self.head.extend_from_slice(data);
                    }
                    let buf: &[u8] = if in_place { data } else { &self.head };
                    let parsed = match self.kind {
                        Kind::Request => {
                            parse_request(buf, &self.capture.headers).map(|p| match p {
                                Parsed::Complete(r) => Some((r.head_len, Head::Request(r))),
                                Parsed::Partial => None,
                            })
                        }
                        Kind::Response => {
                            parse_response(buf, &self.capture.headers).map(|p| match p {
                                Parsed::Complete(r) => Some((r.head_len, Head::Response(r))),
                                Parsed::Partial => None,
                            })
                        }
                    };
                    match parsed {
                        Ok(Some((len, head))) => {
                            if in_place {
                                data = &data[len..];
                            } else {
                                rest = self.head.split_off(len);
                                self.head.clear();
                                data = &rest;
                            }
                            if let Head::Request(r) = &head {
                                self.expect_preface =
                                    r.headers.upgrade_to.as_deref() == Some("h2c");
                            }
                            self.start_body(framing(&head), ts, at(data), out, head);
                            quiet = false;
                        }
                        Ok(None) => {
                            if in_place {
                                self.head.extend_from_slice(data);
                            }
                            return;
                        }
                        Err(e) => {
                            self.lose_sync(HeadError::reason(&e), quiet, out);
                            return;
                        }
                    }
                }
                State::Body { remaining, bytes } => {
                    let n = (*remaining).min(data.len() as u64);
                    keep(&mut self.body, body_limit, &data[..n as usize]);
                    *remaining -= n;
                    *bytes += n;
                    data = &data[n as usize..];
                    if *remaining == 0 {
                        let body_bytes = *bytes;
                        self.state = State::Head;
                        self.end(ts, at(data), body_bytes, out);
                    }
                }
                State::Chunked(c) => match c.feed_keeping(data, &mut self.body, body_limit) {
                    Ok(n) => {
                        data = &data[n..];
                        if c.done() {
                            let body_bytes = c.body_bytes;
                            self.state = State::Head;
                            self.end(ts, at(data), body_bytes, out);
                        }
                    }
                    Err(_) => {
                        self.lose_sync("chunked", false, out);
                        return;
                    }
                },
                State::UntilClose { bytes } => {
                    keep(&mut self.body, body_limit, data);
                    *bytes += data.len() as u64;
                    return;
                }
            }
        }
    }

    /// A head ended just before offset `at`.
    fn start_body(&mut self, framing: Framing, ts: u64, at: u64, out: &mut Vec<Found>, head: Head) {
        out.push(Found::Head {
            head,
            start_ns: self.head_start_ns,
        });
        self.state = match framing {
            Framing::None => {
                self.end(ts, at, 0, out);
                State::Head
            }
            Framing::Length(n) => State::Body {
                remaining: n,
                bytes: 0,
            },
            Framing::Chunked => State::Chunked(Chunked::default()),
            Framing::UntilClose => State::UntilClose { bytes: 0 },
            Framing::Tunnel => {
                self.end(ts, at, 0, out);
                self.enter_tunnel(Some(at));
                State::Tunnel
            }
        };
    }

    /// `missing` bytes after the chunk's data (which ends at offset `end`)
    /// were not captured.
    fn gap(&mut self, ts: u64, end: u64, missing: u64, out: &mut Vec<Found>) {
        if missing == 0 {
            return;
        }
        // A kept body prefix stops at the first byte that was not captured.
        self.body_closed = true;
        match &mut self.state {
            State::Body { remaining, bytes } if missing <= *remaining => {
                *remaining -= missing;
                *bytes += missing;
                if *remaining == 0 {
                    let body_bytes = *bytes;
                    self.state = State::Head;
                    self.end(ts, end.saturating_add(missing), body_bytes, out);
                }
            }
            State::Chunked(c) => {
                if !c.skip(missing) {
                    self.lose_sync("gap", false, out);
                }
            }
            State::UntilClose { bytes } => *bytes += missing,
            State::Tunnel | State::Resync => {}
            State::Head if self.head.is_empty() => self.state = State::Resync,
            State::Head => self.lose_sync("truncated_head", false, out),
            State::Body { .. } => self.lose_sync("gap", false, out),
        }
    }
}

/// Whether bytes at a message boundary are (the start of) the HTTP/2 client
/// preface: at least `PRI ` of it, in case the chunk was cut short.
fn starts_preface(data: &[u8]) -> bool {
    data.len() >= 4 && (data.starts_with(PREFACE) || PREFACE.starts_with(data))
}

/// Appends to a kept body prefix, up to `limit` bytes in all.
fn keep(body: &mut Vec<u8>, limit: usize, bytes: &[u8]) {
    let room = limit.saturating_sub(body.len()).min(bytes.len());
    body.extend_from_slice(&bytes[..room]);
}
