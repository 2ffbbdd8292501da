//! Where profiles go: Pyroscope, an OTLP collector, the local disk.

pub mod local;
pub mod otlp;
pub mod pyroscope;
