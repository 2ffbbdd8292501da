//! TLS plaintext capture: finding where to put uprobes in TLS libraries and Go binaries.
pub mod elf;
pub mod probes;
