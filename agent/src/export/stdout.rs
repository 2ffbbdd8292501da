//! JSON lines on stdout: spans (`--stdout spans`, the local default when no OTLP
//! endpoint is set), log records (`--stdout logs`, with `--logs`) and raw
//! events (`--stdout events`, for debugging).

use std::io::{BufWriter, Stdout, Write as _};

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StdoutKind {
    Spans,
    Events,
    Logs,
}

/// Buffered JSON-lines writer, flushed by the caller after each batch.
pub struct JsonLines {
    out: BufWriter<Stdout>,
}

impl Default for JsonLines {
    fn default() -> Self {
        JsonLines {
            out: BufWriter::new(std::io::stdout()),
        }
    }
}

impl JsonLines {
    pub fn write(&mut self, value: &impl Serialize) {
        let written = serde_json::to_writer(&mut self.out, value)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        if let Err(error) = written {
            tracing::warn!(%error, "writing to stdout");
        }
    }

    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}
