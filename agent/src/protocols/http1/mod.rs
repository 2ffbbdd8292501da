//! HTTP/1.0 and HTTP/1.1: heads ([`head`]), body framing ([`body`]), one
//! direction as a message sequence ([`reader`]) and request/response pairing
//! ([`session`]).

pub mod body;
pub mod head;
pub mod reader;
pub mod session;

pub use session::{Exchange, Output, Session, Started};

use std::sync::Arc;

/// What the user opted in to capture beyond the default (nothing sensitive).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capture {
    /// Header names (lower case) whose values are kept.
    pub headers: Arc<[String]>,
    /// Leading body bytes kept per message (0: none).
    pub body_bytes: usize,
}
