//! `agent`: the node agent binary. See README.md for usage.

use std::process::ExitCode;

use agent::{Cli, Settings, logging, probe};
use anyhow::Context as _;
use clap::Parser as _;
use tokio::signal::unix::{SignalKind, signal};

/// Every captured request allocates a few small strings; with mimalloc the agent
/// used about a quarter less CPU per request than with glibc malloc in
/// `cargo xtask bench http` (same run, same load).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Symbolization parses whole symbol tables and DWARF indexes on the profiler
/// thread and frees them at the end of each interval; mimalloc keeps freed
/// pages for reuse, which held ~30 MiB of RSS between intervals. Returning them
/// is one call per interval on that thread.
fn release_freed_memory() {
    // SAFETY: no preconditions; affects the calling thread's heap.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// No transparent huge pages for the agent: mimalloc asks for them on its
/// arenas, and a 2 MiB page touched anywhere counts whole in RSS. Measured
/// here: 35 MiB RSS with, 17 MiB without (profiling off); 55 and 28 MiB with
/// profiling at 19 Hz. An agent's memory is judged by its RSS.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        eprintln!(
            "agent: PR_SET_THP_DISABLE: {} (RSS may count whole huge pages)",
            std::io::Error::last_os_error()
        );
    }
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    agent::profiling::set_after_interval(release_freed_memory);
    let cli = Cli::parse();
    let check = cli.check;
    let settings = match Settings::load(cli) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("agent: {error:#}");
            return ExitCode::from(2);
        }
    };
    if check {
        return check_kernel(&settings);
    }
    if let Err(error) = logging::init(settings.log_format, &settings.log) {
        eprintln!("agent: {error:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "starting the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "agent failed");
            ExitCode::FAILURE
        }
    }
}

/// `--check`: the capability report, then the capture path this kernel takes,
/// found by loading and attaching it (and detaching again).
fn check_kernel(settings: &Settings) -> ExitCode {
    let mut report = probe::probe();
    if report.can_run() {
        let (status, detail) = match agent::capture::loader::load(settings, std::process::id()) {
            Ok(loaded) => (probe::Status::Ok, loaded.path.to_string()),
            Err(error) => (probe::Status::Missing, format!("{error:#}")),
        };
        report.capabilities.push(probe::Capability {
            name: "capture path",
            status,
            required: true,
            detail,
        });
    }
    print!("{report}");
    if report.can_run() {
        println!("agent can run on this kernel");
        ExitCode::SUCCESS
    } else {
        println!("agent cannot run: see the required capabilities above");
        ExitCode::FAILURE
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let report = probe::probe();
    for capability in &report.capabilities {
        tracing::info!(target: "agent::probe", "{capability}");
    }
    if !report.can_run() {
        anyhow::bail!("a required kernel capability is missing (run `agent --check`)");
    }
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let handle = agent::start(&settings, agent::Taps::default()).await?;
    let attached = handle.attached.iter().filter(|r| r.error.is_none()).count();
    tracing::info!(
        attached,
        total = handle.attached.len(),
        path = %handle.capture_path,
        "capturing socket I/O"
    );
    let mut stats = tokio::time::interval(std::time::Duration::from_secs(60));
    stats.tick().await;
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = stats.tick() => {
                let snapshot = handle.snapshot();
                tracing::info!(stats = %serde_json::to_string(&snapshot)?, "self-metrics");
            }
        }
    }
    tracing::info!("stopping");
    let snapshot = handle.stop().await;
    tracing::info!(stats = %serde_json::to_string(&snapshot)?, "stopped");
    Ok(())
}
