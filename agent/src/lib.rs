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
pub mod discovery;
pub mod export;
pub mod filter;
pub mod flows;
pub mod logging;
pub mod logs;
pub mod metrics;
pub mod observed;
pub mod pipeline;
pub mod probe;
pub mod profiling;
pub mod protocols;
pub mod self_metrics;
pub mod spans;
pub mod tls;

pub use config::{Cli, Settings};
pub use observed::Observed;
pub use pipeline::{AgentHandle, Taps, start};
