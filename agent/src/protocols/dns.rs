//! DNS messages, parsed with `hickory-proto` (compressed names, several
//! questions, EDNS), reduced to what the agent reports; and the two-byte length
//! framing of DNS over TCP (RFC 1035 §4.2.2).
//!
//! Malformed packets (compression loops, truncated headers, absurd counts) are
//! errors the caller counts; `hickory-proto` bounds its own work on them.

use std::net::IpAddr;

use hickory_proto::{
    op::{Message, MessageType},
    rr::RData,
};

/// Answers kept per message (addresses and names).
pub const MAX_ANSWERS: usize = 16;

/// What the agent takes from a DNS message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    pub response: bool,
    /// TC: the answer did not fit (UDP); the client retries over TCP.
    pub truncated: bool,
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, `REFUSED`, …
    pub rcode: &'static str,
    /// First question: name without the trailing dot (lower case) and type.
    pub question: Option<(String, String)>,
    /// Addresses (A, AAAA) and canonical names (CNAME) answered, bounded.
    pub answers: Vec<String>,
    pub answer_count: usize,
}

/// Why bytes are not a DNS message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed DNS message: {0}")]
pub struct DnsError(String);

impl DnsError {
    /// Label for the parse-error metric.
    pub fn reason(&self) -> &'static str {
        "malformed"
    }
}

/// The RFC 6895 mnemonic of a response code.
pub fn rcode_name(code: u16) -> &'static str {
    match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADVERS",
        _ => "OTHER",
    }
}

pub fn parse(bytes: &[u8]) -> Result<DnsMessage, DnsError> {
    let message = Message::from_vec(bytes).map_err(|e| DnsError(e.to_string()))?;
    let question = message.queries.first().map(|q| {
        let name = q.name().to_string();
        let name = name.strip_suffix('.').unwrap_or(&name).to_ascii_lowercase();
        (
            if name.is_empty() { ".".into() } else { name },
            q.query_type().to_string(),
        )
    });
    let answers = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0).to_string()),
            RData::AAAA(a) => Some(IpAddr::V6(a.0).to_string()),
            RData::CNAME(c) => Some(c.0.to_string().trim_end_matches('.').to_string()),
            _ => None,
        })
        .take(MAX_ANSWERS)
        .collect();
    Ok(DnsMessage {
        id: message.metadata.id,
        response: message.metadata.message_type == MessageType::Response,
        truncated: message.metadata.truncation,
        rcode: rcode_name(u16::from(message.metadata.response_code)),
        question,
        answers,
        answer_count: message.answers.len(),
    })
}

/// Splits a DNS-over-TCP byte stream into messages.
#[derive(Debug, Default)]
pub struct TcpFramer {
    buf: Vec<u8>,
    /// Framing lost (bytes were not captured): wait for the connection to end.
    lost: bool,
}

impl TcpFramer {
    /// Feeds bytes (`missing` uncaptured bytes after them); returns whole messages.
    pub fn push(&mut self, data: &[u8], missing: u64) -> Vec<Vec<u8>> {
        if self.lost {
            return Vec::new();
        }
        self.buf.extend_from_slice(data);
        let mut messages = Vec::new();
        loop {
            if self.buf.len() < 2 {
                break;
            }
            let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
            if self.buf.len() < 2 + len {
                break;
            }
            messages.push(self.buf[2..2 + len].to_vec());
            self.buf.drain(..2 + len);
        }
        if missing > 0 {
            // A message is at most 64 KiB: the buffer stays bounded, but after a
            // gap the length prefixes can no longer be found.
            self.lost = true;
            self.buf = Vec::new();
        }
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` of type A (1) with id 0x1234, built by hand.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend(label.as_bytes());
        }
        m.push(0);
        m.extend(qtype.to_be_bytes());
        m.extend([0, 1]);
        m
    }

    #[test]
    fn parses_queries_and_answers_with_compressed_names() {
        let q = parse(&query("www.Example.test", 1)).unwrap();
        assert_eq!((q.id, q.response), (0x1234, false));
        assert_eq!(q.question, Some(("www.example.test".into(), "A".into())));

        // Response: CNAME www -> web (compressed), web A 10.0.0.7.
        let mut r = query("www.example.test", 1);
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 2; // ANCOUNT
        // www.example.test CNAME web.example.test (pointer to offset 12, then "web" + pointer to "example").
        r.extend([
            0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6, 3, b'w', b'e', b'b', 0xc0, 16,
        ]);
        let web = r.len() - 6;
        r.extend([0xc0, web as u8, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 7]);
        let a = parse(&r).unwrap();
        assert!(a.response);
        assert_eq!(a.rcode, "NOERROR");
        r[3] = 0x83;
        assert_eq!(parse(&r).unwrap().rcode, "NXDOMAIN");
        assert_eq!(a.answers, ["web.example.test", "10.0.0.7"]);
        assert_eq!(a.answer_count, 2);
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(parse(&[0x12, 0x34, 0x01]).is_err(), "truncated header");
        // A name that points at itself.
        let mut looped = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        looped.extend([0xc0, 12, 0, 1, 0, 1]);
        assert!(parse(&looped).is_err(), "compression loop");
        // 65535 questions announced, none present.
        let absurd = [0, 1, 1, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0];
        assert!(parse(&absurd).is_err(), "absurd counts");
    }

    #[test]
    fn tcp_framing_splits_and_joins_messages() {
        let q = query("a.test", 28);
        let mut stream = (q.len() as u16).to_be_bytes().to_vec();
        stream.extend(&q);
        stream.extend((q.len() as u16).to_be_bytes());
        stream.extend(&q[..5]);
        let mut f = TcpFramer::default();
        assert_eq!(f.push(&stream, 0), vec![q.clone()]);
        assert_eq!(f.push(&q[5..], 0), vec![q.clone()]);
        assert!(f.push(&[0, 3, 1], 10).is_empty());
        assert!(f.push(&stream, 0).is_empty(), "framing lost after a gap");
    }
}
