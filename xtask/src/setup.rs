//! Installs the eBPF toolchain and the test tools, idempotently: the nightly toolchain's `rust-src`
//! (for `-Z build-std=core`) and `bpf-linker` built against the nightly's own LLVM.
//!
//! bpf-linker links LLVM dynamically; it is built with an rpath to the nightly's
//! `lib/` so it runs without `LD_LIBRARY_PATH`, and a marker file records which
//! `libLLVM` it was built against, so a nightly update triggers a rebuild.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::sh;

const TOOLCHAIN: &str = "nightly";
const BPF_LINKER_VERSION: &str = "^0.13";

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// Everything `run`, `test` and `bench` need: the eBPF toolchain, then the
/// programs the tests and benchmarks call (see [`crate::packages`]).
pub fn run() -> anyhow::Result<()> {
    ensure_nightly()?;
    ensure_bpf_linker()?;
    crate::packages::ensure(crate::is_root())
}

/// What the tests need beyond Rust: the independent pprof decoder (npm
/// `pprof-format`, pinned by `tests/js/package-lock.json`), installed once.
pub fn test_tools() -> anyhow::Result<()> {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/js");
    if js.join("node_modules/pprof-format").exists() {
        return Ok(());
    }
    println!("setup: installing the npm pprof-format decoder into tests/js");
    sh(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(&js))
    .context("npm ci in tests/js")
}

fn ensure_nightly() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !installed.lines().any(|l| l.starts_with(TOOLCHAIN)) {
        println!("setup: installing the {TOOLCHAIN} toolchain");
        sh(Command::new("rustup").args([
            "toolchain",
            "install",
            TOOLCHAIN,
            "--profile",
            "minimal",
        ]))?;
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        TOOLCHAIN,
        "--installed",
    ]))?;
    if components.lines().any(|l| l.starts_with("rust-src")) {
        println!("setup: rust-src for {TOOLCHAIN}: present");
    } else {
        println!("setup: adding rust-src to {TOOLCHAIN}");
        sh(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "clippy",
            "--toolchain",
            TOOLCHAIN,
        ]))?;
    }
    Ok(())
}

/// The nightly's `libLLVM.so.*` file and its major version.
fn nightly_llvm() -> anyhow::Result<(PathBuf, String)> {
    let sysroot = output(
        Command::new("rustc")
            .arg(format!("+{TOOLCHAIN}"))
            .args(["--print", "sysroot"]),
    )?;
    let lib = Path::new(&sysroot).join("lib");
    for entry in fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(version) = name.strip_prefix("libLLVM.so.") {
            let major = version.split('.').next().unwrap_or_default().to_string();
            return Ok((path, major));
        }
    }
    bail!("no libLLVM.so.* in {}", lib.display())
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    let (libllvm, major) = nightly_llvm()?;
    let wanted = libllvm
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let marker = cargo_home().join(".bpf-linker-llvm");
    let recorded = fs::read_to_string(&marker).unwrap_or_default();
    let runs = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if runs && recorded.trim() == wanted {
        println!("setup: bpf-linker built against {wanted}: present");
        return Ok(());
    }
    println!(
        "setup: building bpf-linker against {wanted} (LLVM {major}); this takes a minute or two"
    );
    let prefix = std::env::temp_dir().join(format!("agent-llvm-{major}"));
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)?;
    let link = prefix_lib.join("libLLVM.so");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)
        .with_context(|| format!("linking {} to {}", link.display(), libllvm.display()))?;
    let rpath = libllvm.parent().context("libLLVM has no parent dir")?;
    sh(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix)
        .env(
            "RUSTFLAGS",
            format!("-C link-args=-Wl,-rpath,{}", rpath.display()),
        ))?;
    fs::write(&marker, &wanted).with_context(|| format!("writing {}", marker.display()))?;
    Ok(())
}
