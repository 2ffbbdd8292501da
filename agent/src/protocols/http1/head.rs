//! Request and response heads (start line + headers), parsed with `httparse`.
//!
//! Only the headers the agent uses are kept, and their values only where they are
//! not sensitive: `Authorization`, `Cookie` and every other header never leave this
//! function. Heads are bounded: a head longer than [`MAX_HEAD_BYTES`] or with more
//! than [`MAX_HEADERS`] headers is an error, never an ever-growing buffer.

/// Longest head accepted (start line + headers).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers accepted in one head.
pub const MAX_HEADERS: usize = 100;
/// Longest header value kept (User-Agent, Host, Content-Type, trace context);
/// longer values are cut at a character boundary.
pub const MAX_VALUE: usize = 512;
/// Longest `Upgrade` protocol token kept; a longer one is not kept at all.
pub const MAX_UPGRADE_TOKEN: usize = 32;

/// The headers the agent uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    pub host: Option<String>,
    pub user_agent: Option<String>,
    /// Cut to [`MAX_VALUE`] bytes.
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    /// `Transfer-Encoding` ends with `chunked`.
    pub chunked: bool,
    /// `Connection: close`.
    pub close: bool,
    /// `Connection: keep-alive` (matters for HTTP/1.0).
    pub keep_alive: bool,
    /// `Connection: upgrade` with an `Upgrade` header.
    pub upgrade: bool,
    /// With `upgrade`: the first protocol token of the (first) `Upgrade`
    /// header, lower case (`h2c`, `websocket`), when it is ASCII and at most
    /// [`MAX_UPGRADE_TOKEN`] bytes.
    pub upgrade_to: Option<String>,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// Headers the user opted in to capture (`--capture-header`), lower-case
    /// names, bounded values; empty unless asked for.
    pub captured: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent (path and query; absolute form for proxies).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Headers,
    /// Bytes of the head, CRLFs included.
    pub head_len: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub minor_version: u8,
    pub headers: Headers,
    pub head_len: usize,
}

/// A head, or not enough bytes yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    Complete(T),
    Partial,
}

/// Why bytes are not an HTTP/1.x head.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("invalid head: {0}")]
    Invalid(httparse::Error),
    #[error("head longer than {MAX_HEAD_BYTES} bytes")]
    TooLong,
    #[error("invalid or conflicting Content-Length")]
    ContentLength,
    #[error("method or target is not valid UTF-8")]
    Encoding,
}

impl HeadError {
    /// Stable label for the parse-error self-metric.
    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::Invalid(_) => "invalid_head",
            HeadError::TooLong => "head_too_long",
            HeadError::ContentLength => "content_length",
            HeadError::Encoding => "encoding",
        }
    }
}

fn too_long<T>(buf: &[u8], parsed: Parsed<T>) -> Result<Parsed<T>, HeadError> {
    match parsed {
        Parsed::Partial if buf.len() >= MAX_HEAD_BYTES => Err(HeadError::TooLong),
        other => Ok(other),
    }
}

/// Header names (lower case) whose values the user opted in to capture.
pub type CaptureHeaders = [String];

pub fn parse_request(buf: &[u8], capture: &CaptureHeaders) -> Result<Parsed<Request>, HeadError> {
    // Uninitialised header slots: initialising all of them costs more than
    // parsing a typical head.
    let mut storage =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let parsed = match req
        .parse_with_uninit_headers(buf, &mut storage)
        .map_err(HeadError::Invalid)?
    {
        httparse::Status::Partial => Parsed::Partial,
        httparse::Status::Complete(head_len) => Parsed::Complete(Request {
            method: req.method.ok_or(HeadError::Encoding)?.to_string(),
            target: req.path.ok_or(HeadError::Encoding)?.to_string(),
            minor_version: req.version.unwrap_or(1),
            headers: pick_headers(req.headers, capture)?,
            head_len,
        }),
    };
    too_long(buf, parsed)
}

pub fn parse_response(buf: &[u8], capture: &CaptureHeaders) -> Result<Parsed<Response>, HeadError> {
    let mut storage =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut storage)
        .map_err(HeadError::Invalid)?
    {
        httparse::Status::Partial => Parsed::Partial,
        httparse::Status::Complete(head_len) => Parsed::Complete(Response {
            status: resp.code.unwrap_or(0),
            minor_version: resp.version.unwrap_or(1),
            headers: pick_headers(resp.headers, capture)?,
            head_len,
        }),
    };
    too_long(buf, parsed)
}

/// A header value as text, bounded; `None` if it is not UTF-8.
fn value(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    let end = text
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|&end| end <= MAX_VALUE)
        .last()
        .unwrap_or(0);
    Some(text[..end].to_string())
}

fn has_token(raw: &[u8], token: &str) -> bool {
    std::str::from_utf8(raw)
        .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        .unwrap_or(false)
}

/// The first token of an `Upgrade` value (RFC 9110 §7.8: a comma-separated
/// list of `protocol[/version]`), lower case, if short and ASCII.
fn first_token(raw: &[u8]) -> Option<String> {
    let first = std::str::from_utf8(raw).ok()?.split(',').next()?.trim();
    (!first.is_empty() && first.len() <= MAX_UPGRADE_TOKEN && first.is_ascii())
        .then(|| first.to_ascii_lowercase())
}

fn pick_headers(
    raw: &[httparse::Header<'_>],
    capture: &CaptureHeaders,
) -> Result<Headers, HeadError> {
    let mut h = Headers::default();
    for header in raw {
        if capture.iter().any(|c| header.name.eq_ignore_ascii_case(c))
            && let Some(v) = value(header.value)
        {
            h.captured.push((header.name.to_ascii_lowercase(), v));
        }
    }
    let mut upgrade_header = false;
    let mut upgrade_to = None;
    let mut connection_upgrade = false;
    for header in raw {
        let name = header.name;
        let v = header.value;
        if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or(HeadError::ContentLength)?;
            if h.content_length.is_some_and(|old| old != n) {
                return Err(HeadError::ContentLength);
            }
            h.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            h.close |= has_token(v, "close");
            h.keep_alive |= has_token(v, "keep-alive");
            connection_upgrade |= has_token(v, "upgrade");
        } else if name.eq_ignore_ascii_case("upgrade") {
            if !upgrade_header {
                upgrade_to = first_token(v);
            }
            upgrade_header = true;
        } else if name.eq_ignore_ascii_case("expect") {
            h.expect_continue |= has_token(v, "100-continue");
        } else if name.eq_ignore_ascii_case("host") {
            h.host = value(v);
        } else if name.eq_ignore_ascii_case("user-agent") {
            h.user_agent = value(v);
        } else if name.eq_ignore_ascii_case("content-type") {
            h.content_type = value(v);
        } else if name.eq_ignore_ascii_case("traceparent") {
            h.traceparent = value(v);
        } else if name.eq_ignore_ascii_case("tracestate") {
            h.tracestate = value(v);
        }
    }
    h.upgrade = upgrade_header && connection_upgrade;
    if h.upgrade {
        h.upgrade_to = upgrade_to;
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(buf: &[u8]) -> Request {
        match parse_request(buf, &[]).unwrap() {
            Parsed::Complete(r) => r,
            Parsed::Partial => panic!("partial"),
        }
    }

    #[test]
    fn parses_a_request_and_keeps_only_useful_headers() {
        let r = request(
            b"POST /api/v1/users?id=7 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: curl/8.5\r\n\
              Authorization: Bearer secret\r\nCookie: session=abc\r\nContent-Length: 5\r\n\
              traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\nhello",
        );
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/api/v1/users?id=7");
        assert_eq!(r.minor_version, 1);
        assert_eq!(r.headers.host.as_deref(), Some("example.com:8080"));
        assert_eq!(r.headers.user_agent.as_deref(), Some("curl/8.5"));
        assert_eq!(r.headers.content_length, Some(5));
        assert!(r.headers.traceparent.is_some());
        assert_eq!(r.head_len, r.head_len.min(1000));
        let debug = format!("{r:?}");
        assert!(!debug.contains("secret") && !debug.contains("session"));
    }

    #[test]
    fn partial_heads_wait_for_more_bytes_and_long_ones_fail() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a", &[]),
            Ok(Parsed::Partial)
        );
        let mut long = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        assert_eq!(parse_request(&long, &[]), Err(HeadError::TooLong));
    }

    #[test]
    fn rejects_garbage_and_conflicting_lengths() {
        assert!(matches!(
            parse_request(b"\x16\x03\x01\x02\x00", &[]),
            Err(HeadError::Invalid(_))
        ));
        assert_eq!(
            parse_request(
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                &[]
            ),
            Err(HeadError::ContentLength)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &[]),
            Err(HeadError::ContentLength)
        );
    }

    #[test]
    fn parses_responses_and_connection_semantics() {
        let Ok(Parsed::Complete(r)) = parse_response(b"HTTP/1.0 101 Switching Protocols\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
              Transfer-Encoding: gzip, chunked\r\n\r\n",
            &[]) else {
            panic!("not parsed")
        };
        assert_eq!(r.status, 101);
        assert_eq!(r.minor_version, 0);
        assert!(r.headers.upgrade && r.headers.keep_alive && r.headers.chunked && !r.headers.close);
        assert_eq!(r.headers.upgrade_to.as_deref(), Some("websocket"));
    }

    #[test]
    fn upgrade_token_needs_connection_upgrade_and_is_bounded() {
        let r = request(
            b"GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: H2C, foo/1\r\n\
              HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Type: text/plain\r\n\r\n",
        );
        assert!(r.headers.upgrade);
        assert_eq!(r.headers.upgrade_to.as_deref(), Some("h2c"));
        assert_eq!(r.headers.content_type.as_deref(), Some("text/plain"));
        // `Upgrade` without `Connection: upgrade` is not an upgrade request.
        let r = request(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n");
        assert!(!r.headers.upgrade);
        assert_eq!(r.headers.upgrade_to, None);
        // The first `Upgrade` header's first token; a long one is not kept.
        let r = request(
            b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c\r\n\r\n",
        );
        assert_eq!(r.headers.upgrade_to.as_deref(), Some("websocket"));
        let mut long = b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: ".to_vec();
        long.extend([b'x'; MAX_UPGRADE_TOKEN + 1]);
        long.extend(b"\r\n\r\n");
        let r = request(&long);
        assert!(r.headers.upgrade);
        assert_eq!(r.headers.upgrade_to, None);
    }

    #[test]
    fn long_values_are_cut_on_a_char_boundary() {
        let mut buf = b"GET / HTTP/1.1\r\nUser-Agent: ".to_vec();
        buf.extend("é".repeat(400).as_bytes());
        buf.extend(b"\r\n\r\n");
        let ua = request(&buf).headers.user_agent.unwrap();
        assert!(ua.len() <= MAX_VALUE && ua.chars().all(|c| c == 'é'));
    }
}

#[cfg(test)]
mod capture_tests {
    use super::*;

    #[test]
    fn only_named_headers_are_captured() {
        let raw = b"GET / HTTP/1.1\r\nAuthorization: Bearer secret\r\nX-Request-Id: 42\r\nCookie: a=b\r\n\r\n";
        let Ok(Parsed::Complete(r)) = parse_request(raw, &["x-request-id".to_string()]) else {
            panic!()
        };
        assert_eq!(
            r.headers.captured,
            vec![("x-request-id".to_string(), "42".to_string())]
        );
        let Ok(Parsed::Complete(r)) = parse_request(raw, &[]) else {
            panic!()
        };
        assert!(r.headers.captured.is_empty());
        assert!(!format!("{r:?}").contains("secret"));
    }
}
