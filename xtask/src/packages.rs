//! The programs the tests and benchmarks run, and where each comes from: one
//! table, so a test that needs a new peer adds one line here.
//!
//! `cargo xtask setup` installs what is missing, tool by tool: a command that
//! already works is never reinstalled. Python modules go through `pip`, the
//! rest through one `apt-get update` and one `apt-get install`. `node` and
//! `npm` are never installed: machines of this kind carry Node.js 20 with npm
//! 11 from another repository, Debian's `npm` package conflicts with it and
//! `apt-get` would refuse the whole transaction; when they are missing, setup
//! says so and stops.

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
    /// Comes with the machine and is never installed here (how to get it).
    Machine(&'static str),
}

/// How to tell whether a tool is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A command on `PATH`.
    Command(&'static str),
    /// A module `python3 -c 'import …'` loads.
    PythonModule(&'static str),
    /// A file (a library or header a test compiles against).
    File(&'static str),
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

const fn machine(command: &'static str, hint: &'static str, used_by: &'static str) -> Tool {
    Tool {
        probe: Probe::Command(command),
        source: Source::Machine(hint),
        used_by,
    }
}

pub const NODE_HINT: &str = "install Node.js with its npm (e.g. NodeSource's nodejs package); \
     Debian's npm package conflicts with such a Node.js and is never installed here";

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
    machine("node", NODE_HINT, "the pprof decoder (npm pprof-format)"),
    machine("npm", NODE_HINT, "installing the pprof decoder"),
    apt("h2load", "nghttp2-client", "HTTP/2 load client (h2c)"),
    apt(
        "openssl",
        "openssl",
        "self-signed certificates for the TLS tests",
    ),
    Tool {
        probe: Probe::File("/usr/lib/x86_64-linux-gnu/libssl.a"),
        source: Source::Apt("libssl-dev"),
        used_by: "OpenSSL clients built (dynamic and static) by the TLS tests",
    },
    pip("hpack", "hpack", "HPACK differential test"),
    pip("grpc", "grpcio", "gRPC server and client peers"),
    pip("h2", "h2", "HTTP/1.1 -> h2c upgrade server peer"),
];

/// The tools whose probe fails.
pub fn missing(present: impl Fn(Probe) -> bool) -> Vec<&'static Tool> {
    TOOLS.iter().filter(|t| !present(t.probe)).collect()
}

/// The Debian packages of `tools`, each once.
pub fn apt_packages(tools: &[&Tool]) -> Vec<&'static str> {
    let mut packages = Vec::new();
    for tool in tools {
        if let Source::Apt(p) = tool.source
            && !packages.contains(&p)
        {
            packages.push(p);
        }
    }
    packages
}

/// The PyPI distributions of `tools`, each once.
pub fn pip_packages(tools: &[&Tool]) -> Vec<&'static str> {
    let mut packages = Vec::new();
    for tool in tools {
        if let Source::Pip(p) = tool.source
            && !packages.contains(&p)
        {
            packages.push(p);
        }
    }
    packages
}

fn name(probe: Probe) -> &'static str {
    match probe {
        Probe::Command(c) | Probe::PythonModule(c) | Probe::File(c) => c,
    }
}

/// Whether the probe succeeds on this machine.
pub fn probe(probe: Probe) -> bool {
    match probe {
        Probe::Command(name) => which::which(name).is_ok(),
        Probe::PythonModule(module) => Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success()),
        Probe::File(path) => std::path::Path::new(path).exists(),
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
    let gone = missing(probe);
    for tool in &gone {
        let from = match tool.source {
            Source::Apt(p) => format!("package {p}"),
            Source::Pip(p) => format!("pip {p}"),
            Source::Machine(_) => "not installed by setup".into(),
        };
        println!(
            "setup: {} missing ({from}; {})",
            name(tool.probe),
            tool.used_by
        );
    }
    let needs_machine = gone.iter().find_map(|t| match t.source {
        Source::Machine(hint) => Some((name(t.probe), hint)),
        _ => None,
    });
    if let Some((tool, hint)) = needs_machine {
        bail!("{tool} missing: {hint}");
    }
    let apt = apt_packages(&gone);
    if apt.is_empty() {
        println!("setup: Debian packages the tests use: all present");
    } else {
        let line = apt_install_line(&apt);
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
    let pip = pip_packages(&gone);
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
    let still: Vec<&str> = missing(probe).iter().map(|t| name(t.probe)).collect();
    if !still.is_empty() {
        bail!("still missing after install: {still:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(present: &[&str]) -> impl Fn(Probe) -> bool {
        move |p| present.contains(&name(p))
    }

    fn everything() -> Vec<&'static str> {
        TOOLS.iter().map(|t| name(t.probe)).collect()
    }

    fn packages(present: &[&str]) -> (Vec<&'static str>, Vec<&'static str>) {
        let gone = missing(with(present));
        (apt_packages(&gone), pip_packages(&gone))
    }

    #[test]
    fn a_missing_tool_maps_to_its_package() {
        let mut present = everything();
        present.retain(|t| !["dig", "promtool", "wrk"].contains(t));
        assert_eq!(
            packages(&present),
            (vec!["dnsutils", "prometheus", "wrk"], vec![])
        );
    }

    #[test]
    fn present_tools_install_nothing() {
        assert_eq!(packages(&everything()), (vec![], vec![]));
        assert!(missing(with(&everything())).is_empty());
    }

    #[test]
    fn node_and_npm_are_never_installed_from_debian() {
        for table_entry in TOOLS {
            assert!(
                !matches!(table_entry.source, Source::Apt("nodejs" | "npm")),
                "{table_entry:?}"
            );
        }
        let mut present = everything();
        present.retain(|t| !["node", "npm"].contains(t));
        // Missing, they are reported (setup stops and says how to get them),
        // and no apt-get line names them.
        assert_eq!(packages(&present), (vec![], vec![]));
        let gone: Vec<&str> = missing(with(&present))
            .iter()
            .map(|t| name(t.probe))
            .collect();
        assert_eq!(gone, ["node", "npm"]);
    }

    #[test]
    fn one_package_serving_two_tools_is_listed_once() {
        let mut present = everything();
        present.retain(|t| !["strip", "readelf"].contains(t));
        assert_eq!(packages(&present).0, ["binutils"]);
    }

    #[test]
    fn python_modules_come_from_pip() {
        let mut present = everything();
        present.retain(|t| *t != "hpack");
        assert_eq!(packages(&present), (vec![], vec!["hpack"]));
    }

    #[test]
    fn the_install_line_names_every_package() {
        assert_eq!(
            apt_install_line(&["dnsutils", "wrk"]),
            "apt-get install -y --no-install-recommends dnsutils wrk"
        );
    }
}
