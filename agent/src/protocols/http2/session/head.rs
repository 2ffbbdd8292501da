//! What one decoded header block says, for the fields the agent uses, with
//! every field tagged known or not ([`Known`]).
//!
//! The product promises every method named right or not named at all, so a
//! field is a [`Known::Value`] only when the decoder knew both its name and
//! value, and [`Known::Absent`] only when every field of the block was read and
//! none had that name. A field whose name is unknown (a reference to a table
//! entry the agent never saw) could have been any field, so then every field
//! not found is [`Known::Unknown`]; so it is when decoding stopped early.

use crate::protocols::http2::hpack::{Decoded, Field, HpackError};

/// Longest value kept (method, path, authority, scheme, content type, trace
/// context, captured headers); beyond, a value is `Unknown` (counted as
/// `value_too_long`), except `user-agent` and captured headers, which are cut.
pub const MAX_VALUE: usize = 512;
/// Opted-in headers kept per head.
pub const MAX_CAPTURED: usize = 16;

/// A field of a header block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Known<T> {
    /// The whole block is known and has no such field.
    #[default]
    Absent,
    Value(T),
    /// The field may be in the block, but its name or value is not known (or
    /// it appeared twice with different values).
    Unknown,
}

impl<T> Known<T> {
    pub fn value(&self) -> Option<&T> {
        match self {
            Known::Value(v) => Some(v),
            Known::Absent | Known::Unknown => None,
        }
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Known::Unknown)
    }

    /// Records one occurrence: a second one that disagrees makes it unknown.
    fn merge(&mut self, new: Known<T>)
    where
        T: PartialEq,
    {
        match self {
            Known::Absent => *self = new,
            Known::Value(_) if *self == new => {}
            _ => *self = Known::Unknown,
        }
    }
}

/// What a header block said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    pub method: Known<String>,
    /// `:path` as sent, query string included.
    pub path: Known<String>,
    pub authority: Known<String>,
    pub scheme: Known<String>,
    pub status: Known<u16>,
    pub content_type: Known<String>,
    /// Cut to [`MAX_VALUE`] bytes.
    pub user_agent: Known<String>,
    pub grpc_status: Known<u32>,
    /// A `grpc-message` field was read (its value is not kept).
    pub grpc_message_present: bool,
    /// `grpc-timeout` of a request, in ns: the caller's deadline.
    pub grpc_timeout_ns: Option<u64>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// Fields whose name was unknown (a reference to a table entry the agent
    /// never saw).
    pub unknown_fields: u32,
    /// Opted-in headers (lower-case names) with their values, cut to
    /// [`MAX_VALUE`] bytes, at most [`MAX_CAPTURED`]; never a field sent as
    /// never-indexed.
    pub captured: Vec<(String, String)>,
}

impl Head {
    /// A block the agent could not read at all (lost in a capture gap, or a
    /// stream joined after its request).
    pub fn unknown() -> Head {
        Head {
            method: Known::Unknown,
            path: Known::Unknown,
            authority: Known::Unknown,
            scheme: Known::Unknown,
            status: Known::Unknown,
            content_type: Known::Unknown,
            user_agent: Known::Unknown,
            grpc_status: Known::Unknown,
            ..Head::default()
        }
    }

    /// The HTTP/1.1 request of an `Upgrade: h2c` (RFC 7540 §3.2: it is
    /// stream 1's request): method, path (the request target as sent),
    /// authority (`Host`), scheme `http`, content type, user agent, trace
    /// context and captured headers. The HTTP/1 parser kept every header
    /// used here, so a missing one is `Absent`, except `grpc-status`, which
    /// it does not keep (`Unknown`; a request never carries it anyway).
    /// A value that is too long, or that the HTTP/1 parser may have cut (it
    /// cuts at its own [`http1::head::MAX_VALUE`]), is `Unknown` (trace
    /// context: `None`), as a long HTTP/2 value would be; `user-agent` and
    /// captured headers are cut, as they are in HTTP/2.
    ///
    /// [`http1::head::MAX_VALUE`]: crate::protocols::http1::head::MAX_VALUE
    pub fn from_http1(request: &crate::protocols::http1::head::Request) -> Head {
        use crate::protocols::http1::head::MAX_VALUE as HTTP1_CUT;
        let h = &request.headers;
        // Whole: not longer than ours, and short enough that the HTTP/1
        // parser's cut (which leaves at least `HTTP1_CUT - 3` bytes, at a
        // character boundary) cannot have touched it.
        let whole = |v: &str| v.len() <= MAX_VALUE && v.len() + 3 < HTTP1_CUT;
        let cut_known = |v: Option<&String>| match v {
            None => Known::Absent,
            Some(v) if whole(v) => Known::Value(v.clone()),
            Some(_) => Known::Unknown,
        };
        let text = |v: &str| {
            if v.len() <= MAX_VALUE {
                Known::Value(v.to_string())
            } else {
                Known::Unknown
            }
        };
        Head {
            method: text(&request.method),
            path: text(&request.target),
            authority: cut_known(h.host.as_ref()),
            scheme: Known::Value("http".to_string()),
            status: Known::Absent,
            content_type: cut_known(h.content_type.as_ref()),
            user_agent: match &h.user_agent {
                Some(v) => Known::Value(cut(v).to_string()),
                None => Known::Absent,
            },
            grpc_status: Known::Unknown,
            grpc_message_present: false,
            grpc_timeout_ns: None,
            traceparent: h.traceparent.clone().filter(|v| whole(v)),
            tracestate: h.tracestate.clone().filter(|v| whole(v)),
            unknown_fields: 0,
            captured: h
                .captured
                .iter()
                .take(MAX_CAPTURED)
                .map(|(n, v)| (n.clone(), cut(v).to_string()))
                .collect(),
        }
    }

    /// The content type says gRPC with binary messages (`application/grpc`,
    /// `+proto` and the like, and gRPC-Web; not the base64 `grpc-web-text`).
    pub fn is_grpc(&self) -> bool {
        self.content_type.value().is_some_and(|ct| {
            ct.starts_with("application/grpc") && !ct.starts_with("application/grpc-web-text")
        })
    }

    /// Reads a decoded block; `errors` gets a reason per problem. `capture`
    /// lists the lower-case header names the user opted in to.
    pub(super) fn from_block(
        decoded: &Decoded,
        capture: &[String],
        errors: &mut Vec<&'static str>,
    ) -> Head {
        let mut h = Head::default();
        let mut traceparent = Known::Absent;
        let mut tracestate = Known::Absent;
        for field in &decoded.fields {
            let Some(name) = field.name.as_deref() else {
                h.unknown_fields = h.unknown_fields.saturating_add(1);
                continue;
            };
            match name {
                b":method" => h.method.merge(text(field, errors)),
                b":path" => h.path.merge(text(field, errors)),
                b":authority" => h.authority.merge(text(field, errors)),
                b":scheme" => h.scheme.merge(text(field, errors)),
                b"content-type" => h.content_type.merge(text(field, errors)),
                b":status" => h.status.merge(number(field, 3, errors, "bad_status")),
                b"grpc-status" => h
                    .grpc_status
                    .merge(number(field, 10, errors, "bad_grpc_status")),
                b"grpc-message" => h.grpc_message_present = true,
                b"grpc-timeout" => h.grpc_timeout_ns = field.value.as_deref().and_then(timeout_ns),
                b"user-agent" => h.user_agent.merge(match utf8(field, errors) {
                    Some(v) => Known::Value(cut(v).to_string()),
                    None => Known::Unknown,
                }),
                b"traceparent" => traceparent.merge(text(field, errors)),
                b"tracestate" => tracestate.merge(text(field, errors)),
                _ => {}
            }
            if !field.sensitive
                && h.captured.len() < MAX_CAPTURED
                && let Some(wanted) = capture.iter().find(|c| c.as_bytes() == name)
                && let Some(v) = field
                    .value
                    .as_deref()
                    .and_then(|v| std::str::from_utf8(v).ok())
            {
                h.captured.push((wanted.clone(), cut(v).to_string()));
            }
        }
        if h.unknown_fields > 0 {
            errors.push("unknown_fields");
        }
        // Fields may be missing from the list: an unknown name could be any
        // of them, a decoding that stopped or skipped a reference lost some.
        let incomplete = h.unknown_fields > 0
            || decoded.new_epoch
            || matches!(
                decoded.error,
                Some(
                    HpackError::BlockTooLarge(_)
                        | HpackError::Truncated
                        | HpackError::IntegerOverflow
                        | HpackError::InvalidIndex(_)
                        | HpackError::TooManyFields
                )
            );
        if incomplete {
            for k in [
                &mut h.method,
                &mut h.path,
                &mut h.authority,
                &mut h.scheme,
                &mut h.content_type,
                &mut h.user_agent,
            ] {
                if *k == Known::Absent {
                    *k = Known::Unknown;
                }
            }
            if h.status == Known::Absent {
                h.status = Known::Unknown;
            }
            if h.grpc_status == Known::Absent {
                h.grpc_status = Known::Unknown;
            }
        }
        h.traceparent = traceparent.value().cloned();
        h.tracestate = tracestate.value().cloned();
        h
    }
}

/// A `grpc-timeout` value (`gRPC/doc/PROTOCOL-HTTP2.md`: at most 8 digits
/// and a unit, `H`, `M`, `S`, `m`, `u` or `n`) in ns.
fn timeout_ns(v: &[u8]) -> Option<u64> {
    let (unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let scale: u64 = match unit {
        b'H' => 3_600_000_000_000,
        b'M' => 60_000_000_000,
        b'S' => 1_000_000_000,
        b'm' => 1_000_000,
        b'u' => 1_000,
        b'n' => 1,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// A value taken whole: known, UTF-8 and within [`MAX_VALUE`].
fn text(field: &Field, errors: &mut Vec<&'static str>) -> Known<String> {
    match utf8(field, errors) {
        Some(v) if v.len() > MAX_VALUE => {
            errors.push("value_too_long");
            Known::Unknown
        }
        Some(v) => Known::Value(v.to_string()),
        None => Known::Unknown,
    }
}

/// A decimal number of at most `digits` ASCII digits.
fn number<T: std::str::FromStr>(
    field: &Field,
    digits: usize,
    errors: &mut Vec<&'static str>,
    reason: &'static str,
) -> Known<T> {
    let Some(v) = field.value.as_deref() else {
        return Known::Unknown;
    };
    let parsed = (!v.is_empty() && v.len() <= digits && v.iter().all(u8::is_ascii_digit))
        .then(|| std::str::from_utf8(v).ok()?.parse().ok())
        .flatten();
    match parsed {
        Some(n) => Known::Value(n),
        None => {
            errors.push(reason);
            Known::Unknown
        }
    }
}

fn utf8<'a>(field: &'a Field, errors: &mut Vec<&'static str>) -> Option<&'a str> {
    let v = field.value.as_deref()?;
    let s = std::str::from_utf8(v).ok();
    if s.is_none() {
        errors.push("value_not_utf8");
    }
    s
}

/// The longest prefix of `v` within [`MAX_VALUE`] bytes, at a character
/// boundary.
fn cut(v: &str) -> &str {
    let mut end = v.len().min(MAX_VALUE);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod timeout_tests {
    use super::timeout_ns;

    #[test]
    fn grpc_timeouts_parse_with_their_units() {
        assert_eq!(timeout_ns(b"200m"), Some(200_000_000));
        assert_eq!(timeout_ns(b"1S"), Some(1_000_000_000));
        assert_eq!(timeout_ns(b"2562047H"), Some(2_562_047 * 3_600_000_000_000));
        assert_eq!(timeout_ns(b"99999999H"), None, "past u64 ns");
        for bad in [&b""[..], b"m", b"123456789m", b"10x", b"-1S", b"1.5S"] {
            assert_eq!(timeout_ns(bad), None, "{bad:?}");
        }
    }
}
