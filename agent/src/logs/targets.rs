//! Which processes are logged: those whose executable name (or thread
//! name, as `--exe` matches) fits a `--logs` glob. The process table is
//! scanned once a second; the kernel reports only the listed ones.

use std::collections::HashSet;

use anyhow::Context as _;
use globset::{Glob, GlobSet, GlobSetBuilder};

pub struct Targets {
    globs: GlobSet,
    listed: HashSet<u32>,
    own: u32,
}

/// What a scan changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<u32>,
    pub removed: Vec<u32>,
}

impl Targets {
    pub fn new(globs: &[String]) -> anyhow::Result<Targets> {
        let mut builder = GlobSetBuilder::new();
        for glob in globs {
            builder.add(Glob::new(glob).with_context(|| format!("--logs {glob:?}"))?);
        }
        Ok(Targets {
            globs: builder.build().context("--logs")?,
            listed: HashSet::new(),
            own: std::process::id(),
        })
    }

    pub fn listed(&self) -> usize {
        self.listed.len()
    }

    /// Whether a process with this executable file name and thread name is logged.
    pub fn matches(&self, exe: Option<&str>, comm: &str) -> bool {
        exe.is_some_and(|e| self.globs.is_match(e)) || self.globs.is_match(comm)
    }

    /// Compares `/proc` with the processes listed so far.
    pub fn scan(&mut self) -> Changes {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Changes::default();
        };
        let mut now = HashSet::new();
        for pid in entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != self.own)
        {
            if self.listed.contains(&pid) {
                now.insert(pid);
                continue;
            }
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            let exe = exe
                .as_ref()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str());
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if self.matches(exe, comm.trim_end()) {
                now.insert(pid);
            }
        }
        let added = now.difference(&self.listed).copied().collect();
        let removed = self.listed.difference(&now).copied().collect();
        self.listed = now;
        Changes { added, removed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_executable_or_the_thread_name() {
        let t = Targets::new(&["py*".into(), "api-server".into()]).expect("globs");
        assert!(t.matches(Some("python3.11"), "python3"));
        assert!(t.matches(None, "api-server"));
        assert!(!t.matches(Some("nginx"), "nginx"));
        assert!(Targets::new(&["[".into()]).is_err());
    }

    #[test]
    fn a_scan_finds_this_test_process_by_name_and_forgets_it_once_gone() {
        let name = std::fs::read_to_string("/proc/self/comm").expect("comm");
        let mut t = Targets::new(&[name.trim_end().to_string()]).expect("glob");
        // This process is the agent here: never logged.
        t.own = 0;
        let changes = t.scan();
        assert!(changes.added.contains(&std::process::id()), "{changes:?}");
        t.globs = GlobSet::empty();
        t.listed.insert(u32::MAX);
        let changes = t.scan();
        assert!(changes.removed.contains(&u32::MAX));
    }
}
