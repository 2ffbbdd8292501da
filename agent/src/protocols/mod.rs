//! Protocol parsers: pure functions and state machines over captured bytes.
//! Nothing here touches the kernel, the network or the clock, so every parser is
//! unit-tested on fixtures and fuzzed (`agent/fuzz`).

pub mod dns;
pub mod http1;
pub mod http2;
