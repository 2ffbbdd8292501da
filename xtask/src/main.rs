//! Project tasks. `cargo xtask --help` lists them.

mod bench;
mod bench_grpc;
mod bench_http;
mod bench_logs;
mod bench_profile;
mod bench_report;
mod bench_tls;
mod build_ebpf;
mod deploy_check;
mod packages;
mod setup;
mod suite;

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Project tasks")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building the kernel programs, the tests and the benchmarks
    /// need (idempotent; Debian packages only when running as root).
    Setup,
    /// Build the kernel object (release, BTF) into target/bpf/.
    BuildEbpf,
    /// Set up, build and run the agent as root; arguments after `--` go to the agent.
    Run {
        #[arg(long)]
        debug: bool,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmarks, agent off vs on in the same run (needs root): `syscalls`
    /// (ns per traced syscall, per capture path), `http` (wrk and fixed-rate
    /// load against nginx), `grpc` (h2load at a fixed rate against a tonic
    /// server), `tls` (HTTPS through the OpenSSL uprobes), `logs` (the price
    /// of `--logs` per line), `profile` (profiler CPU and memory at 19 and
    /// 99 Hz), or `all`. Figures also go to target/bench/<name>.json.
    Bench {
        #[arg(default_value = "all")]
        which: String,
        /// Writes per round (syscalls).
        #[arg(long, default_value_t = 200_000)]
        iterations: u64,
        /// Seconds of load per phase (http, grpc, tls, profile).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// An extra argument for the agent (http, grpc; repeatable, e.g.
        /// `--agent-arg=--capture-bytes --agent-arg=256`).
        #[arg(long = "agent-arg", allow_hyphen_values = true)]
        agent_args: Vec<String>,
        /// An extra KEY=VALUE environment variable for the agent (http, grpc;
        /// repeatable, e.g. `--agent-env AGENT_CAPTURE_PATH=tracepoints`).
        #[arg(long = "agent-env")]
        agent_env: Vec<String>,
    },
    /// Run a parser fuzz target with cargo fuzz (installed when missing).
    Fuzz {
        /// Target name (see agent/fuzz/fuzz_targets).
        #[arg(default_value = "http1")]
        target: String,
        /// How long to fuzz.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
    },
    /// Offline checks of deploy/ (helm, kubernetes-validate, checkov, hadolint,
    /// check-jsonschema, promtool); installs the checkers on first use.
    DeployCheck,
    /// Set up, build, check formatting and lints, and run every test.
    Test {
        /// Arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().task {
        Task::Setup => setup::run(),
        Task::BuildEbpf => {
            setup::run()?;
            let object = build_ebpf::run()?;
            println!("kernel object: {}", object.display());
            Ok(())
        }
        Task::Run { debug, args } => run(debug, &args),
        Task::Bench {
            which,
            iterations,
            seconds,
            agent_args,
            agent_env,
        } => {
            bench::prepare()?;
            match which.as_str() {
                "syscalls" => bench::run(iterations),
                "http" => bench_http::run(seconds, &agent_args, &agent_env),
                "grpc" => bench_grpc::run(seconds, &agent_args, &agent_env),
                "tls" => bench_tls::run(seconds, &agent_args, &agent_env),
                "logs" => bench_logs::run(),
                "profile" => bench_profile::run(seconds.max(30)),
                "all" => bench::run(iterations)
                    .and_then(|()| bench_http::run(seconds, &agent_args, &agent_env))
                    .and_then(|()| bench_grpc::run(seconds, &agent_args, &agent_env))
                    .and_then(|()| bench_tls::run(seconds, &agent_args, &agent_env))
                    .and_then(|()| bench_logs::run())
                    .and_then(|()| bench_profile::run(seconds.max(30))),
                other => {
                    anyhow::bail!(
                        "unknown benchmark {other:?}: syscalls, http, grpc, tls, logs, profile or all"
                    )
                }
            }
        }
        Task::Fuzz { target, seconds } => fuzz(&target, seconds),
        Task::DeployCheck => deploy_check::tools().and_then(|()| deploy_check::run()),
        Task::Test { args } => suite::run(&args),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace
/// root) when set, else `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Runs a command in the workspace root, failing on a non-zero exit.
pub fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    cmd.current_dir(workspace_root());
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc_getuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "getuid"]
    fn libc_getuid() -> u32;
}

fn run(debug: bool, args: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    let mut build = cargo();
    build.args(["build", "--package", "agent", "--bin", "agent"]);
    if !debug {
        build.arg("--release");
    }
    sh(&mut build)?;
    let binary = workspace_root()
        .join("target")
        .join(if debug { "debug" } else { "release" })
        .join("agent");
    let mut cmd = if is_root() {
        Command::new(&binary)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(&binary);
        sudo
    };
    cmd.args(args);
    sh(&mut cmd)
}

/// Fuzzes `target` for `seconds`; the corpus in agent/fuzz/corpus/<target> grows
/// with what the run finds, crashes land in agent/fuzz/artifacts/<target>.
fn fuzz(target: &str, seconds: u64) -> anyhow::Result<()> {
    setup::run()?;
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        sh(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "fuzz",
        "run",
        "--fuzz-dir",
        "agent/fuzz",
        target,
    ])
    .arg(format!("agent/fuzz/corpus/{target}"))
    .args(["--", &format!("-max_total_time={seconds}"), "-max_len=4096"]);
    for key in ["RUSTC", "RUSTC_WORKSPACE_WRAPPER", "CARGO"] {
        cmd.env_remove(key);
    }
    sh(&mut cmd)
}
