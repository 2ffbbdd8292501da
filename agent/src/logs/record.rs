//! One log record: a line a process wrote, with the request it was serving.

use std::sync::Arc;

use serde::Serialize;

use crate::{
    discovery::Resource,
    spans::context::{SpanId, TraceId},
};

/// Which stream the line was written to (`log.iostream`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoStream {
    Stdout,
    Stderr,
}

impl IoStream {
    pub fn of_fd(fd: i32) -> Option<IoStream> {
        match fd {
            1 => Some(IoStream::Stdout),
            2 => Some(IoStream::Stderr),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IoStream::Stdout => "stdout",
            IoStream::Stderr => "stderr",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LogRecord {
    /// When the write that ended the line happened.
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    /// OpenTelemetry severity number and text, when the line says.
    pub severity_number: Option<i32>,
    pub severity_text: Option<&'static str>,
    /// The line as written (redacted unless turned off), without its newline.
    pub body: String,
    /// The line was longer than the cap, or not all of it was captured.
    pub truncated: bool,
    #[serde(rename = "log.iostream")]
    pub iostream: IoStream,
    #[serde(serialize_with = "crate::spans::hex_opt")]
    pub trace_id: Option<TraceId>,
    #[serde(serialize_with = "crate::spans::hex_opt")]
    pub span_id: Option<SpanId>,
    #[serde(serialize_with = "crate::spans::resource_map")]
    pub resource: Arc<Resource>,
}
