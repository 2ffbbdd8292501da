//! Continuous CPU profiling, userspace half: process snapshots, symbolization
//! (`blazesym`), profiles per service, pprof encoding, flamegraphs (`inferno`)
//! and export (Pyroscope, OTLP profiles, local files).
//!
//! The kernel half (sampling and in-kernel aggregation) lives in `agent-ebpf`;
//! the agent drains its maps into [`RawSample`]s and hands them to a
//! [`Collector`], which keeps what must outlive a process (its mappings and
//! open files) between intervals.

pub mod export;
pub mod flamegraph;
pub mod kallsyms;
pub mod module;
pub mod perfmap;
pub mod pprof;
pub mod process;
pub mod procmaps;
pub mod profile;
pub mod symbolize;
#[cfg(test)]
mod testing;

pub use process::Target;
pub use profile::{Collector, CollectorLimits, Link, Profile, RawSample, Sample, Window};

/// Errors of the export paths (symbolization degrades per frame instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("export failed: {0}")]
    Export(String),
}

/// Gzip of a byte slice (in-memory, cannot fail).
pub fn gzip_bytes(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}
