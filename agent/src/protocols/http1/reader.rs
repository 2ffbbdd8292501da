//! One direction of an HTTP/1 connection as a sequence of messages: heads parsed
//! across syscall boundaries, bodies skipped by their framing, gaps (bytes the
//! kernel did not capture) stepped over where the framing allows.
//!
//! After anything that is not HTTP/1, or a gap that loses the framing, the reader
//! reports one error and resynchronises: it tries again at the start of each later
//! syscall's data, where messages almost always begin.

use super::{
    Capture,
    body::{Chunked, Framing},
    head::{HeadError, Parsed, Request, Response, parse_request, parse_response},
};
use crate::conn::Chunk;

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
pub enum Found {
    /// A complete head; its first byte arrived at `start_ns`.
    Head { head: Head, start_ns: u64 },
    /// The current message's last byte arrived at `end_ns`; `body` holds its
    /// first bytes when body capture is on.
    End {
        end_ns: u64,
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
        }
    }

    /// The connection moved on to another protocol.
    pub fn tunnel(&mut self) {
        self.state = State::Tunnel;
        self.head = Vec::new();
    }

    pub fn is_tunnel(&self) -> bool {
        matches!(self.state, State::Tunnel)
    }

    /// Feeds one chunk. `framing` decides where the body of each head ends.
    pub fn push(
        &mut self,
        chunk: &Chunk,
        framing: &mut dyn FnMut(&Head) -> Framing,
        out: &mut Vec<Found>,
    ) {
        self.last_ns = chunk.ts_ns;
        if matches!(self.state, State::Resync) {
            self.state = State::Head;
            self.head.clear();
            self.feed(chunk.ts_ns, &chunk.data, framing, out, true);
        } else {
            self.feed(chunk.ts_ns, &chunk.data, framing, out, false);
        }
        self.gap(chunk.ts_ns, chunk.missing, out);
    }

    /// The connection closed: a body delimited by the close ends here, a head cut
    /// short is an error.
    pub fn close(&mut self, out: &mut Vec<Found>) {
        match &self.state {
            State::UntilClose { bytes } => {
                self.end(self.last_ns, *bytes, out);
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

    /// The current message ended at `end_ns`; the next one starts afresh.
    fn end(&mut self, end_ns: u64, body_bytes: u64, out: &mut Vec<Found>) {
        out.push(Found::End {
            end_ns,
            body_bytes,
            body: std::mem::take(&mut self.body),
        });
        self.body_closed = false;
    }

    fn feed(
        &mut self,
        ts: u64,
        data: &[u8],
        framing: &mut dyn FnMut(&Head) -> Framing,
        out: &mut Vec<Found>,
        resyncing: bool,
    ) {
        let mut rest: Vec<u8>;
        let mut data = data;
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
                    // A whole head in one syscall is the common case: it is
                    // parsed where it lies, and only bytes that must wait for
                    // more are copied.
                    let in_place = self.head.is_empty();
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
                            self.start_body(framing(&head), ts, out, head);
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
                        self.end(ts, body_bytes, out);
                    }
                }
                State::Chunked(c) => match c.feed_keeping(data, &mut self.body, body_limit) {
                    Ok(n) => {
                        data = &data[n..];
                        if c.done() {
                            let body_bytes = c.body_bytes;
                            self.state = State::Head;
                            self.end(ts, body_bytes, out);
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

    fn start_body(&mut self, framing: Framing, ts: u64, out: &mut Vec<Found>, head: Head) {
        out.push(Found::Head {
            head,
            start_ns: self.head_start_ns,
        });
        self.state = match framing {
            Framing::None => {
                self.end(ts, 0, out);
                State::Head
            }
            Framing::Length(n) => State::Body {
                remaining: n,
                bytes: 0,
            },
            Framing::Chunked => State::Chunked(Chunked::default()),
            Framing::UntilClose => State::UntilClose { bytes: 0 },
            Framing::Tunnel => {
                self.end(ts, 0, out);
                State::Tunnel
            }
        };
    }

    /// `missing` bytes after the chunk's data were not captured.
    fn gap(&mut self, ts: u64, missing: u64, out: &mut Vec<Found>) {
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
                    self.end(ts, body_bytes, out);
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

/// Appends to a kept body prefix, up to `limit` bytes in all.
fn keep(body: &mut Vec<u8>, limit: usize, bytes: &[u8]) {
    let room = limit.saturating_sub(body.len()).min(bytes.len());
    body.extend_from_slice(&bytes[..room]);
}
