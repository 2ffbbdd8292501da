//! The programs the tests and benchmarks run, and where each comes from: one
//! table, so a test that needs a new peer adds one line here.
//!
//! `cargo xtask setup` installs what is missing, tool by tool: a command that
//! already works is never reinstalled, and `node`/`npm` are left alone whenever
//! they run (machines of this kind carry Node.js 20 with npm 11 from another
//! repository; Debian's `npm` package conflicts with it and `apt-get` refuses the
//! whole transaction). Python modules go through `pip`, the rest through one
//! `apt-get update` and one `apt-get install`.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::sh;

/// Where a missing tool comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A Debian package.
    Apt(&'static str),
    /// A PyPI distribution, for a module `python3` imports.
    Pip(&'static str),
}

/// How to tell whether a tool is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A command on `PATH`.
    Command(&'static str),
    /// A module `python3 -c 'import …'` loads.
    PythonModule(&'static str),
}

/// One tool the tests or benchmarks use.
#[derive(Clone, Copy, Debug)]
pub struct Tool {
    pub probe: Probe,
    pub source: Source,
    /// Who needs it, for the setup log.
    pub used_by: &'static str,
}

const fn apt(command: &'static str, package: &'static str, used_by: &'static str) -> Tool {
    Tool {
        probe: Probe::Command(command),
        source: Source::Apt(package),
        used_by,
    }
}

const fn pip(module: &'static str, package: &'static str, used_by: &'static str) -> Tool {
    Tool {
        probe: Probe::PythonModule(module),
        source: Source::Pip(package),
        used_by,
    }
}

/// Every tool the tests and benchmarks call. `python3` comes first: the Python
/// modules are probed with it.
pub const TOOLS: &[Tool] = &[
    apt("python3", "python3", "HTTP peers, Python resolver tests"),
    Tool {
        probe: Probe::PythonModule("pip"),
        source: Source::Apt("python3-pip"),
        used_by: "installing the Python peers",
    },
    apt("curl", "curl", "HTTP client peer"),
    apt("dig", "dnsutils", "DNS client peer"),
    apt("promtool", "prometheus", "checking the /metrics exposition"),
    apt("cc", "gcc", "C CPU burners for the profiling tests"),
    apt("strip", "binutils", "stripped-binary profiling tests"),
    apt("readelf", "binutils", "build ids in the profiling tests"),
    apt("unshare", "util-linux", "private resolv.conf for DNS tests"),
    apt("wrk", "wrk", "HTTP load in the benchmarks"),
    apt("nginx", "nginx", "HTTP server peer in the benchmarks"),
    apt(
        "perf",
        "linux-perf",
        "profiling the agent in the benchmarks",
    ),
    apt("node", "nodejs", "the pprof decoder (npm pprof-format)"),
    apt("npm", "npm", "installing the pprof decoder"),
    pip("hpack", "hpack", "HPACK differential test"),
];

/// What is missing, given which probes succeed. `node` and `npm` are one unit:
/// when either runs, neither package is installed (a working Node.js brings its
/// own npm; Debian's would conflict with it).
pub fn missing(present: impl Fn(Probe) -> bool) -> (Vec<&'static str>, Vec<&'static str>) {
    let node_works = present(Probe::Command("node")) || present(Probe::Command("npm"));
    let mut apt = Vec::new();
    let mut pip = Vec::new();
    for tool in TOOLS {
        if matches!(tool.probe, Probe::Command("node" | "npm")) && node_works {
            continue;
        }
        if present(tool.probe) {
            continue;
        }
        match tool.source {
            Source::Apt(package) if !apt.contains(&package) => apt.push(package),
            Source::Pip(package) if !pip.contains(&package) => pip.push(package),
            _ => {}
        }
    }
    (apt, pip)
}

/// Whether the probe succeeds on this machine.
pub fn probe(probe: Probe) -> bool {
    match probe {
        Probe::Command(name) => which::which(name).is_ok(),
        Probe::PythonModule(module) => Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success()),
    }
}

/// The exact command that installs `packages` from Debian.
pub fn apt_install_line(packages: &[&str]) -> String {
    format!(
        "apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    )
}

/// Installs every missing tool (as root), or stops with the command to run.
pub fn ensure(is_root: bool) -> anyhow::Result<()> {
    let (apt, _) = missing(probe);
    if apt.is_empty() {
        println!("setup: Debian packages the tests use: all present");
    } else {
        let line = apt_install_line(&apt);
        for tool in TOOLS {
            if let (Probe::Command(c), Source::Apt(p)) = (tool.probe, tool.source)
                && apt.contains(&p)
                && !probe(tool.probe)
            {
                println!("setup: {c} missing (package {p}; {})", tool.used_by);
            }
        }
        if !is_root {
            bail!(
                "missing Debian packages: run `sudo {line}` (or run this command as root, \
                 which installs them)"
            );
        }
        println!("setup: {line}");
        sh(Command::new("apt-get")
            .args(["update", "-qq"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        sh(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&apt)
            .env("DEBIAN_FRONTEND", "noninteractive"))
        .with_context(|| format!("`{line}` failed"))?;
    }
    // Python modules after apt: pip itself may just have been installed.
    let (_, pip) = missing(probe);
    if !pip.is_empty() {
        println!("setup: python3 -m pip install {}", pip.join(" "));
        let install = |extra: &[&str]| {
            sh(Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(extra)
                .args(&pip))
        };
        // Debian's own python3 refuses pip installs (PEP 668) unless told to;
        // a pyenv or venv python takes them as they are.
        install(&[])
            .or_else(|_| install(&["--break-system-packages"]))
            .context("pip install of the Python test peers")?;
    }
    let (apt, pip) = missing(probe);
    if !apt.is_empty() || !pip.is_empty() {
        bail!("still missing after install: {apt:?} {pip:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(present: &[&str]) -> impl Fn(Probe) -> bool {
        move |p| match p {
            Probe::Command(c) | Probe::PythonModule(c) => present.contains(&c),
        }
    }

    fn everything() -> Vec<&'static str> {
        TOOLS
            .iter()
            .map(|t| match t.probe {
                Probe::Command(c) | Probe::PythonModule(c) => c,
            })
            .collect()
    }

    #[test]
    fn a_missing_tool_maps_to_its_package() {
        let mut present = everything();
        present.retain(|t| !["dig", "promtool", "wrk"].contains(t));
        let (apt, pip) = missing(with(&present));
        assert_eq!(apt, ["dnsutils", "prometheus", "wrk"]);
        assert!(pip.is_empty());
    }

    #[test]
    fn present_tools_install_nothing() {
        let present = everything();
        assert_eq!(missing(with(&present)), (vec![], vec![]));
    }

    #[test]
    fn working_node_or_npm_means_no_nodejs_or_npm_package() {
        let mut present = everything();
        present.retain(|t| *t != "npm");
        assert_eq!(missing(with(&present)).0, Vec::<&str>::new());
        present.retain(|t| *t != "node");
        present.push("npm");
        assert_eq!(missing(with(&present)).0, Vec::<&str>::new());
        // Neither works: both come from Debian.
        present.retain(|t| *t != "npm");
        assert_eq!(missing(with(&present)).0, ["nodejs", "npm"]);
    }

    #[test]
    fn one_package_serving_two_tools_is_listed_once() {
        let mut present = everything();
        present.retain(|t| !["strip", "readelf"].contains(t));
        assert_eq!(missing(with(&present)).0, ["binutils"]);
    }

    #[test]
    fn python_modules_come_from_pip() {
        let mut present = everything();
        present.retain(|t| *t != "hpack");
        assert_eq!(missing(with(&present)), (vec![], vec!["hpack"]));
    }

    #[test]
    fn the_install_line_names_every_package() {
        assert_eq!(
            apt_install_line(&["dnsutils", "wrk"]),
            "apt-get install -y --no-install-recommends dnsutils wrk"
        );
    }
}
