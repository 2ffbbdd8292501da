//! Spans: the agent's own model of an OpenTelemetry span, built from flows, printed
//! as JSON lines (`--stdout spans`) and exported over OTLP.

pub mod context;
pub mod dns;
pub mod http;
pub mod links;
pub mod measure;
pub mod route;
pub mod rpc;
pub mod sampler;

use std::{borrow::Cow, sync::Arc};

use serde::{Serialize, Serializer, ser::SerializeMap};

use crate::discovery::Resource;
use context::{SpanId, TraceId, to_hex};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SpanKind {
    Server,
    Client,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Unset,
    Error,
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Value {
    Str(String),
    Int(i64),
    StrArray(Vec<String>),
}

/// Where a span sits in its trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub trace_flags: u8,
    pub trace_state: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Span {
    #[serde(serialize_with = "hex")]
    pub trace_id: TraceId,
    #[serde(serialize_with = "hex")]
    pub span_id: SpanId,
    #[serde(serialize_with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<SpanId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_state: Option<String>,
    /// W3C trace flags (bit 0: sampled).
    #[serde(skip)]
    pub trace_flags: u8,
    pub name: String,
    pub kind: SpanKind,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    #[serde(serialize_with = "attribute_map")]
    /// Semantic-conventions keys, plus `http.*.header.<name>` for opted-in headers.
    pub attributes: Vec<(Cow<'static, str>, Value)>,
    pub status: Status,
    #[serde(serialize_with = "resource_map")]
    pub resource: Arc<Resource>,
}

impl Span {
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    pub fn duration_ns(&self) -> u64 {
        self.end_time_unix_nano
            .saturating_sub(self.start_time_unix_nano)
    }
}

fn hex<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&to_hex(bytes))
}

pub(crate) fn hex_opt<S: Serializer, const N: usize>(
    bytes: &Option<[u8; N]>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(b) => s.serialize_str(&to_hex(b)),
        None => s.serialize_none(),
    }
}

fn attribute_map<S: Serializer>(
    attrs: &[(Cow<'static, str>, Value)],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(attrs.len()))?;
    for (k, v) in attrs {
        map.serialize_entry(k.as_ref(), v)?;
    }
    map.end()
}

pub(crate) fn resource_map<S: Serializer>(
    resource: &Arc<Resource>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let attrs = resource.attributes();
    let mut map = s.serialize_map(Some(attrs.len()))?;
    for (k, v) in &attrs {
        map.serialize_entry(k, v)?;
    }
    map.end()
}
