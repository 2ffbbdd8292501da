//! The userspace half of the agent, as a library so that tests (and the binary)
//! drive the same code.
//!
//! Data flow: [`capture`] loads the kernel programs and reads their ring buffer;
//! [`pipeline`] moves events through bounded queues to the [`conn`] table, applies
//! the [`filter`]s and hands [`observed::Observed`] records to the outputs.

pub mod capture;
pub mod clock;
pub mod config;
pub mod conn;
pub mod filter;
pub mod logging;
pub mod observed;
pub mod pipeline;
pub mod probe;
pub mod protocols;
pub mod self_metrics;

pub use config::{Cli, Settings};
pub use observed::Observed;
pub use pipeline::{AgentHandle, start};
