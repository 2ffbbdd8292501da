//! Where a message body ends (RFC 9112 §6.3), and an incremental decoder that
//! walks chunked bodies to find their end. Bodies are skipped and counted, never
//! stored.

use super::head::{Request, Response};

/// How the end of a body is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
    /// The connection becomes something else (101 Switching Protocols, CONNECT):
    /// stop parsing it.
    Tunnel,
}

pub fn request_framing(req: &Request) -> Framing {
    if req.headers.chunked {
        Framing::Chunked
    } else {
        match req.headers.content_length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    }
}

/// `method` is the request this response answers (`HEAD` has no response body).
pub fn response_framing(resp: &Response, method: &str) -> Framing {
    let status = resp.status;
    if status == 101 || (method.eq_ignore_ascii_case("CONNECT") && (200..300).contains(&status)) {
        return Framing::Tunnel;
    }
    if method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        return Framing::None;
    }
    if resp.headers.chunked {
        return Framing::Chunked;
    }
    match resp.headers.content_length {
        Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    }
}

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex size; `any` once a digit was seen, `ext` inside an extension.
    Size {
        value: u64,
        any: bool,
        ext: bool,
    },
    SizeLf {
        value: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// Trailer section: `empty` while the current line has no bytes yet.
    Trailer {
        empty: bool,
    },
    TrailerLf {
        empty: bool,
    },
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size")]
    Size,
    #[error("missing CRLF after chunk data")]
    Crlf,
    #[error("chunk line too long")]
    LineTooLong,
}

/// Walks a chunked body incrementally.
#[derive(Clone, Debug)]
pub struct Chunked {
    state: State,
    line: usize,
    /// Payload bytes (without chunk framing) seen so far.
    pub body_bytes: u64,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size {
                value: 0,
                any: false,
                ext: false,
            },
            line: 0,
            body_bytes: 0,
        }
    }
}

impl Chunked {
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes up to the end of the body; returns how many were consumed
    /// (fewer than `buf.len()` only when the body ended inside `buf`).
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, ChunkError> {
        self.feed_keeping(buf, &mut Vec::new(), 0)
    }

    /// As [`feed`](Chunked::feed), appending decoded data to `kept` until it
    /// holds `limit` bytes.
    pub fn feed_keeping(
        &mut self,
        buf: &[u8],
        kept: &mut Vec<u8>,
        limit: usize,
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < buf.len() && self.state != State::Done {
            if let State::Data { remaining } = self.state {
                let n = remaining.min((buf.len() - i) as u64);
                let room = limit.saturating_sub(kept.len()).min(n as usize);
                kept.extend_from_slice(&buf[i..i + room]);
                i += n as usize;
                self.body_bytes += n;
                self.state = if n == remaining {
                    State::DataCr
                } else {
                    State::Data {
                        remaining: remaining - n,
                    }
                };
                continue;
            }
            let b = buf[i];
            i += 1;
            self.line += 1;
            if self.line > MAX_LINE {
                return Err(ChunkError::LineTooLong);
            }
            self.state = self.step(b)?;
        }
        Ok(i)
    }

    /// Skips `n` bytes that were not captured; false if that loses the framing
    /// (the gap is not entirely inside chunk data).
    pub fn skip(&mut self, n: u64) -> bool {
        match self.state {
            State::Data { remaining } if n <= remaining => {
                self.body_bytes += n;
                self.state = if n == remaining {
                    State::DataCr
                } else {
                    State::Data {
                        remaining: remaining - n,
                    }
                };
                true
            }
            _ => n == 0,
        }
    }

    fn step(&mut self, b: u8) -> Result<State, ChunkError> {
        Ok(match self.state {
            State::Size { value, any, ext } => match b {
                b'\r' if any => State::SizeLf { value },
                b'\n' if any => self.end_size(value),
                _ if ext => State::Size { value, any, ext },
                b';' if any => State::Size {
                    value,
                    any,
                    ext: true,
                },
                b' ' | b'\t' if any => State::Size {
                    value,
                    any,
                    ext: true,
                },
                _ => {
                    let digit = (b as char).to_digit(16).ok_or(ChunkError::Size)?;
                    let value = value
                        .checked_mul(16)
                        .and_then(|v| v.checked_add(u64::from(digit)))
                        .ok_or(ChunkError::Size)?;
                    State::Size {
                        value,
                        any: true,
                        ext,
                    }
                }
            },
            State::SizeLf { value } => match b {
                b'\n' => self.end_size(value),
                _ => return Err(ChunkError::Size),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                b'\n' => self.next_size(),
                _ => return Err(ChunkError::Crlf),
            },
            State::DataLf => match b {
                b'\n' => self.next_size(),
                _ => return Err(ChunkError::Crlf),
            },
            State::Trailer { empty } => match b {
                b'\r' => State::TrailerLf { empty },
                b'\n' => self.end_trailer_line(empty),
                _ => State::Trailer { empty: false },
            },
            State::TrailerLf { empty } => match b {
                b'\n' => self.end_trailer_line(empty),
                _ => return Err(ChunkError::Crlf),
            },
            State::Data { .. } | State::Done => self.state,
        })
    }

    fn end_size(&mut self, value: u64) -> State {
        self.line = 0;
        if value == 0 {
            State::Trailer { empty: true }
        } else {
            State::Data { remaining: value }
        }
    }

    fn next_size(&mut self) -> State {
        self.line = 0;
        State::Size {
            value: 0,
            any: false,
            ext: false,
        }
    }

    fn end_trailer_line(&mut self, empty: bool) -> State {
        self.line = 0;
        if empty {
            State::Done
        } else {
            State::Trailer { empty: true }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::http1::head::{Parsed, parse_request, parse_response};

    #[test]
    fn walks_a_chunked_body_fed_byte_by_byte_and_whole() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let mut whole = Chunked::default();
        assert_eq!(whole.feed(body).unwrap(), body.len() - 4);
        assert!(whole.done());
        assert_eq!(whole.body_bytes, 23);

        let mut bytewise = Chunked::default();
        let mut consumed = 0;
        for b in body.iter() {
            if bytewise.done() {
                break;
            }
            consumed += bytewise.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(consumed, body.len() - 4);
        assert_eq!(bytewise.body_bytes, 23);
    }

    #[test]
    fn rejects_bad_sizes_and_bounds_lines() {
        assert_eq!(Chunked::default().feed(b"zz\r\n"), Err(ChunkError::Size));
        assert_eq!(Chunked::default().feed(b"\r\n"), Err(ChunkError::Size));
        assert_eq!(
            Chunked::default().feed(b"ffffffffffffffffff\r\n"),
            Err(ChunkError::Size)
        );
        assert_eq!(Chunked::default().feed(b"3\r\nabcX"), Err(ChunkError::Crlf));
        let long = [b'1'; MAX_LINE + 10];
        assert!(Chunked::default().feed(&long).is_err());
    }

    #[test]
    fn gaps_inside_chunk_data_are_skipped_others_lose_framing() {
        let mut c = Chunked::default();
        c.feed(b"10\r\nabcd").unwrap();
        assert!(c.skip(10));
        assert_eq!(c.feed(b"ef\r\n0\r\n\r\n").unwrap(), 9);
        assert!(c.done());
        assert_eq!(c.body_bytes, 16);
        let mut c = Chunked::default();
        c.feed(b"4\r\nab").unwrap();
        assert!(!c.skip(5));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let Ok(Parsed::Complete(get)) = parse_request(b"GET / HTTP/1.1\r\n\r\n", &[]) else {
            panic!()
        };
        assert_eq!(request_framing(&get), Framing::None);
        let Ok(Parsed::Complete(post)) =
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n", &[])
        else {
            panic!()
        };
        assert_eq!(request_framing(&post), Framing::Length(9));
        let resp = |raw: &[u8]| match parse_response(raw, &[]) {
            Ok(Parsed::Complete(r)) => r,
            other => panic!("{other:?}"),
        };
        let ok_len = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(response_framing(&ok_len, "GET"), Framing::Length(5));
        assert_eq!(response_framing(&ok_len, "HEAD"), Framing::None);
        assert_eq!(
            response_framing(&resp(b"HTTP/1.1 204 No Content\r\n\r\n"), "GET"),
            Framing::None
        );
        assert_eq!(
            response_framing(
                &resp(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"),
                "GET"
            ),
            Framing::None
        );
        assert_eq!(
            response_framing(&resp(b"HTTP/1.1 100 Continue\r\n\r\n"), "POST"),
            Framing::None
        );
        assert_eq!(
            response_framing(&resp(b"HTTP/1.1 101 Switching\r\n\r\n"), "GET"),
            Framing::Tunnel
        );
        assert_eq!(
            response_framing(&resp(b"HTTP/1.1 200 OK\r\n\r\n"), "CONNECT"),
            Framing::Tunnel
        );
        assert_eq!(
            response_framing(&resp(b"HTTP/1.0 200 OK\r\n\r\n"), "GET"),
            Framing::UntilClose
        );
        assert_eq!(
            response_framing(
                &resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
                "GET"
            ),
            Framing::Chunked
        );
    }
}
