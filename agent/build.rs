//! Builds the kernel programs (`agent-ebpf`) for the BPF target with the nightly
//! toolchain and places the object in `OUT_DIR`, where `src/capture/loader.rs`
//! embeds it. `cargo xtask build-ebpf` runs the same `aya_build::build_ebpf` call.
//!
//! `AYA_BUILD_SKIP=1` skips the kernel build (for `cargo check`/`clippy` on a stable
//! toolchain); the agent then embeds an empty object and refuses to start with a
//! message saying so.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let object = out_dir.join("agent");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        if !object.exists() {
            fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
        }
        return Ok(());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../agent-ebpf");
    let root = root
        .canonicalize()
        .with_context(|| format!("{}", root.display()))?;
    let root = root.to_str().ok_or_else(|| anyhow!("non UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
