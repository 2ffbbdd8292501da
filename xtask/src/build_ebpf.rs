//! Builds the kernel object with the same `aya_build::build_ebpf` call that
//! `agent/build.rs` makes, so both produce the same object.

use std::{env, path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::workspace_root;

/// Builds `agent-ebpf` and returns the path of the object.
pub fn run() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let out_dir = root.join("target").join("bpf");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let ebpf_dir = root.join("agent-ebpf");
    let ebpf_dir = ebpf_dir.to_str().context("non UTF-8 workspace path")?;
    // aya_build reads the build-script environment; provide it as cargo would for
    // a build script of a host crate.
    // SAFETY: xtask is single-threaded here; nothing else reads the environment.
    unsafe {
        env::set_var("OUT_DIR", &out_dir);
        env::set_var(
            "CARGO_CFG_TARGET_ENDIAN",
            if cfg!(target_endian = "big") {
                "big"
            } else {
                "little"
            },
        );
        env::set_var("CARGO_CFG_TARGET_ARCH", env::consts::ARCH);
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the kernel programs (is `cargo xtask setup` done?)")?;
    Ok(out_dir.join("agent"))
}

/// `cargo clippy` for the kernel crate (nightly, BPF target, core only).
pub fn clippy_command() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "clippy",
        "--package",
        "agent-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--release",
        "--target-dir",
    ]);
    cmd.arg(workspace_root().join("target").join("bpf-clippy"));
    cmd.env(
        "CARGO_ENCODED_RUSTFLAGS",
        format!("--cfg=bpf_target_arch=\"{}\"", env::consts::ARCH),
    );
    for key in ["RUSTC", "RUSTC_WORKSPACE_WRAPPER", "CARGO"] {
        cmd.env_remove(key);
    }
    cmd
}
