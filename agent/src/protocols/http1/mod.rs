//! HTTP/1.0 and HTTP/1.1: heads ([`head`]), body framing ([`body`]), one
//! direction as a message sequence ([`reader`]) and request/response pairing
//! ([`session`]).

pub mod body;
pub mod head;
pub mod reader;
pub mod session;

pub use session::{Exchange, Output, Session, Started};
