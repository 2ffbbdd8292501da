//! Connection tracking: which connection every event belongs to, its addresses and
//! role, and its per-direction byte streams.

pub mod procnet;
pub mod resolver;
pub mod stream;
pub mod table;
pub mod tcp_tuples;

pub use procnet::Transport;
pub use stream::{Chunk, Stream};
pub use table::{Conn, ConnKey, ConnTable, Role};
