//! Empty library target: `agent` has a build-dependency on this crate so cargo
//! rebuilds the agent when the kernel crate or its dependencies change. The
//! programs themselves are in the `agent` binary target (`src/main.rs`).
#![no_std]
