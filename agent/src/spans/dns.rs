//! DNS lookups as CLIENT spans named `DNS {QTYPE}`, with `dns.question.name`,
//! `dns.question.type`, `dns.response.code`, `dns.answer.count`, `dns.answers`
//! (bounded), the resolver as `server.address`/`server.port`,
//! `network.transport`, and `error.type` for failures and timeouts.

use std::{borrow::Cow, net::SocketAddr, sync::Arc};

use super::{Span, SpanContext, SpanKind, Status, Value};
use crate::{discovery::Resource, protocols::dns::DnsMessage};

/// One finished (answered or timed out) lookup.
pub struct DnsLookup {
    pub question: Option<(String, String)>,
    /// Unix ns.
    pub start_ns: u64,
    pub end_ns: u64,
    /// `None`: no answer within the timeout.
    pub response: Option<DnsMessage>,
    pub server: Option<SocketAddr>,
    pub transport: &'static str,
    pub resource: Arc<Resource>,
    pub context: SpanContext,
}

/// Response codes that are failures of the lookup.
fn is_error(rcode: &str) -> bool {
    rcode != "NOERROR"
}

pub fn span(lookup: DnsLookup) -> Span {
    let mut attrs: Vec<(&'static str, Value)> = Vec::new();
    let qtype = lookup.question.as_ref().map(|(_, t)| t.clone());
    if let Some((name, qtype)) = &lookup.question {
        attrs.push(("dns.question.name", Value::Str(name.clone())));
        attrs.push(("dns.question.type", Value::Str(qtype.clone())));
    }
    if let Some(server) = lookup.server {
        attrs.push(("server.address", Value::Str(server.ip().to_string())));
        attrs.push(("server.port", Value::Int(i64::from(server.port()))));
        attrs.push(("network.peer.address", Value::Str(server.ip().to_string())));
        attrs.push(("network.peer.port", Value::Int(i64::from(server.port()))));
    }
    attrs.push(("network.transport", Value::Str(lookup.transport.into())));
    let error = match &lookup.response {
        Some(r) => {
            attrs.push(("dns.response.code", Value::Str(r.rcode.into())));
            attrs.push(("dns.answer.count", Value::Int(r.answer_count as i64)));
            if !r.answers.is_empty() {
                attrs.push(("dns.answers", Value::StrArray(r.answers.clone())));
            }
            if r.truncated {
                attrs.push(("dns.response.truncated", Value::Int(1)));
            }
            is_error(r.rcode).then(|| r.rcode.to_string())
        }
        None => Some("timeout".to_string()),
    };
    if let Some(e) = &error {
        attrs.push(("error.type", Value::Str(e.clone())));
    }
    Span {
        trace_id: lookup.context.trace_id,
        span_id: lookup.context.span_id,
        parent_span_id: lookup.context.parent_span_id,
        trace_state: lookup.context.trace_state,
        trace_flags: lookup.context.trace_flags,
        name: qtype.map_or_else(|| "DNS".to_string(), |t| format!("DNS {t}")),
        kind: SpanKind::Client,
        start_time_unix_nano: lookup.start_ns,
        end_time_unix_nano: lookup.end_ns,
        attributes: attrs
            .into_iter()
            .map(|(k, v)| (Cow::Borrowed(k), v))
            .collect(),
        status: if error.is_some() {
            Status::Error
        } else {
            Status::Unset
        },
        resource: lookup.resource,
    }
}
