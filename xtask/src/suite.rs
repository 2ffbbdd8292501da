//! `cargo xtask test`: set up, build, check formatting and lints, run every test
//! binary (a failing one never hides the ones after it), and end with one line
//! over all of them: `tests: N passed, N failed, N skipped`.
//!
//! Skips are counted from the `SKIPPED <name>: <why>` lines privileged tests
//! write straight to stderr (past libtest's capture) when they cannot run; a
//! skipped test is not also counted as passed.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Read},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
};

use anyhow::{Context as _, bail};

use crate::{build_ebpf, cargo, is_root, setup, sh};

/// Totals over every test binary's output.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    passed: u64,
    failed: u64,
    skipped: BTreeSet<String>,
    /// Binaries whose `test result:` reported failures.
    failing_binaries: u64,
    /// Binaries cargo reports as failed (with or without a `test result:` line).
    failed_targets: u64,
}

impl Tally {
    /// Takes one line of `cargo test` output (stdout or stderr).
    pub fn line(&mut self, line: &str) {
        if let Some(rest) = line.trim_start().strip_prefix("test result:") {
            self.passed += count_before(rest, "passed");
            let failed = count_before(rest, "failed");
            self.failed += failed;
            self.failing_binaries += u64::from(failed > 0);
        }
        // A skip line can share a line with libtest's progress output.
        if let Some(at) = line.find("SKIPPED ") {
            let rest = &line[at + "SKIPPED ".len()..];
            let name = rest.split(':').next().unwrap_or(rest).trim();
            if !name.is_empty() {
                self.skipped.insert(name.to_string());
            }
        }
        // cargo's closing list under --no-fail-fast: "error: 2 targets failed:".
        if let Some(rest) = line.strip_prefix("error: ")
            && let Some(n) = rest
                .strip_suffix(" targets failed:")
                .or(rest.strip_suffix(" target failed:"))
            && let Ok(n) = n.trim().parse::<u64>()
        {
            self.failed_targets = n;
        }
    }

    pub fn passed(&self) -> u64 {
        self.passed.saturating_sub(self.skipped.len() as u64)
    }

    pub fn skipped(&self) -> u64 {
        self.skipped.len() as u64
    }

    /// Failed tests, plus binaries that died without reporting one (a crash or
    /// a signal leaves no `test result:` line).
    pub fn failed(&self) -> u64 {
        self.failed + self.failed_targets.saturating_sub(self.failing_binaries)
    }

    pub fn summary(&self) -> String {
        format!(
            "tests: {} passed, {} failed, {} skipped",
            self.passed(),
            self.failed(),
            self.skipped()
        )
    }
}

/// The number just before `word` in `"ok. 12 passed; 0 failed; …"`.
fn count_before(text: &str, word: &str) -> u64 {
    let mut last = None;
    for token in text.split([' ', ';', '.']) {
        if token == word {
            return last.unwrap_or(0);
        }
        last = token.parse::<u64>().ok();
    }
    0
}

/// Runs `cmd`, echoing its stdout and stderr as they come, feeding every line to
/// `tally`. Returns whether it succeeded.
fn run_tallied(cmd: &mut Command, tally: &mut Tally) -> anyhow::Result<bool> {
    cmd.current_dir(crate::workspace_root());
    eprintln!("+ {cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let (tx, rx) = mpsc::channel::<String>();
    let pump = |stream: Box<dyn Read + Send>, tx: mpsc::Sender<String>, to_stderr: bool| {
        thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if to_stderr {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
                let _ = tx.send(line);
            }
        })
    };
    let out = pump(
        Box::new(child.stdout.take().context("stdout")?),
        tx.clone(),
        false,
    );
    let err = pump(Box::new(child.stderr.take().context("stderr")?), tx, true);
    for line in rx {
        tally.line(&line);
    }
    let _ = (out.join(), err.join());
    Ok(child.wait()?.success())
}

/// End-to-end test binaries that run on both kernel capture paths.
/// Both test runs select the same packages, so they share one build.
const WORKSPACE_TESTS: [&str; 5] = [
    "test",
    "--workspace",
    "--exclude",
    "agent-ebpf",
    "--no-fail-fast",
];

const FALLBACK_TESTS: [&str; 6] = ["capture", "http", "grpc", "dns", "otlp", "kernel_skips"];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    setup::test_tools()?;
    build_ebpf::run()?;
    // Checks run to the end too: a lint must not hide a failing test.
    let mut failed_checks = Vec::new();
    let mut check = |name: &'static str, cmd: &mut Command| {
        if sh(cmd).is_err() {
            failed_checks.push(name);
        }
    };
    check("fmt", cargo().args(["fmt", "--all", "--", "--check"]));
    // Userspace crates: stable toolchain, warnings are errors.
    check(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "agent-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    );
    // The kernel crate: nightly, BPF target.
    check(
        "clippy (agent-ebpf)",
        build_ebpf::clippy_command().args(["--", "-D", "warnings"]),
    );
    // deploy/: chart, manifests, Dockerfile, compose, dashboards, SLO rules.
    if crate::deploy_check::tools()
        .and_then(|()| crate::deploy_check::run())
        .is_err()
    {
        failed_checks.push("deploy");
    }
    if !is_root() {
        eprintln!(
            "note: not running as root: privileged end-to-end tests will skip and say why; \
             run `sudo -E cargo xtask test` for the full suite"
        );
    }
    let mut tally = Tally::default();
    let ok = run_tallied(cargo().args(WORKSPACE_TESTS).args(args), &mut tally)?;
    // The capture tests again on the fallback kernel path (the first run
    // requires the fast one): both must keep every capture test passing.
    // The same package selection as above: `-p e2e` alone unifies features
    // differently and would build and link every test binary a second time
    // (about 6 GiB more in target/, enough to fill a CI disk).
    let mut fallback = cargo();
    fallback
        .args(WORKSPACE_TESTS)
        .args(FALLBACK_TESTS.iter().flat_map(|t| ["--test", t]))
        .args(args)
        .env("AGENT_CAPTURE_PATH", "tracepoints");
    println!("== the capture tests on the tracepoint path (AGENT_CAPTURE_PATH=tracepoints)");
    let ok = run_tallied(&mut fallback, &mut tally)? && ok;
    if !failed_checks.is_empty() {
        println!("checks failed: {}", failed_checks.join(", "));
    }
    println!("{}", tally.summary());
    if !ok || tally.failed() > 0 || !failed_checks.is_empty() {
        bail!("{}", tally.summary());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_binary_and_counts_skips_once() {
        let mut t = Tally::default();
        for line in [
            "running 3 tests",
            "SKIPPED http_spans: needs root (loads eBPF programs)",
            "test http_spans ... ok",
            "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test dns ... SKIPPED dns_lookup: needs root",
            "test result: FAILED. 5 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out",
        ] {
            t.line(line);
        }
        assert_eq!(t.summary(), "tests: 6 passed, 2 failed, 2 skipped");
    }

    #[test]
    fn a_binary_that_crashed_counts_as_failed() {
        let mut t = Tally::default();
        t.line("test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
        t.line("error: 1 target failed:");
        assert_eq!(t.summary(), "tests: 4 passed, 1 failed, 0 skipped");
        // One binary with two failures, another that crashed.
        let mut t = Tally::default();
        t.line("test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out");
        t.line("error: 2 targets failed:");
        assert_eq!(t.failed(), 3);
    }

    #[test]
    fn nothing_run_is_all_zero() {
        assert_eq!(
            Tally::default().summary(),
            "tests: 0 passed, 0 failed, 0 skipped"
        );
    }
}
