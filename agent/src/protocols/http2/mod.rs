//! HTTP/2 without TLS (h2c), as pure functions over captured bytes: the frame
//! reader for one direction ([`frame`]), the HPACK header decoder
//! ([`hpack`]) and the connection as streams of request, response and
//! trailers with gRPC message counts ([`session`]); `flows::http2` turns
//! them into spans and metrics.
//!
//! All are built for an observer, not an endpoint: they may start in the
//! middle of a connection and lose bytes the kernel did not capture, and they
//! say so (frame events for lost header blocks and lost framing, HPACK fields
//! whose name or value is unknown, head fields that are `Unknown`) instead of
//! guessing.

pub mod frame;
pub mod hpack;
pub mod session;
#[cfg(test)]
mod wire;
