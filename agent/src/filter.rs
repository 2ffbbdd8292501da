//! `--pid`, `--exe` and `--port` filters.
//!
//! Process decisions are cached per (tgid, comm): `comm` changes on exec, so a
//! child that execs into another program is judged again.

use std::{collections::HashSet, net::SocketAddr, num::NonZeroUsize};

use anyhow::Context as _;
use globset::{Glob, GlobSet, GlobSetBuilder};
use lru::LruCache;

use crate::capture::Comm;

pub struct Filter {
    pids: HashSet<u32>,
    exes: Option<GlobSet>,
    ports: HashSet<u16>,
    decisions: LruCache<(u32, Comm), bool>,
}

const DECISION_CACHE: usize = 4096;

impl Filter {
    pub fn new(pids: &[u32], exes: &[String], ports: &[u16]) -> anyhow::Result<Filter> {
        let exes = if exes.is_empty() {
            None
        } else {
            let mut builder = GlobSetBuilder::new();
            for pattern in exes {
                builder.add(Glob::new(pattern).with_context(|| format!("--exe {pattern:?}"))?);
            }
            Some(builder.build()?)
        };
        Ok(Filter {
            pids: pids.iter().copied().collect(),
            exes,
            ports: ports.iter().copied().collect(),
            decisions: LruCache::new(
                NonZeroUsize::new(DECISION_CACHE).unwrap_or(NonZeroUsize::MIN),
            ),
        })
    }

    pub fn has_port_filter(&self) -> bool {
        !self.ports.is_empty()
    }

    /// Whether decisions look at the thread's name (`--exe`).
    pub fn judges_by_name(&self) -> bool {
        self.exes.is_some()
    }

    /// Whether events of this process are wanted.
    pub fn process_allowed(&mut self, tgid: u32, comm: Comm) -> bool {
        if !self.pids.is_empty() && !self.pids.contains(&tgid) {
            return false;
        }
        let Some(exes) = &self.exes else { return true };
        let key = (tgid, comm);
        if let Some(&decision) = self.decisions.get(&key) {
            return decision;
        }
        // The executable's file name; the thread's comm if the process is gone.
        let name = std::fs::read_link(format!("/proc/{tgid}/exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| comm.to_string());
        let decision = exes.is_match(&name) || exes.is_match(comm.as_str());
        self.decisions.put(key, decision);
        decision
    }

    /// Whether a connection with these addresses is wanted.
    pub fn ports_allowed(&self, peer: Option<SocketAddr>, local: Option<SocketAddr>) -> bool {
        self.ports.is_empty()
            || [peer, local]
                .iter()
                .flatten()
                .any(|a| self.ports.contains(&a.port()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_and_port_filters() {
        let mut f = Filter::new(&[42], &[], &[8080]).unwrap();
        assert!(f.process_allowed(42, "x".into()));
        assert!(!f.process_allowed(43, "x".into()));
        let peer = Some("127.0.0.1:50000".parse().unwrap());
        assert!(!f.ports_allowed(peer, None));
        assert!(f.ports_allowed(peer, Some("127.0.0.1:8080".parse().unwrap())));
        assert!(
            Filter::new(&[], &[], &[])
                .unwrap()
                .ports_allowed(None, None)
        );
    }

    #[test]
    fn exe_glob_matches_executable_name() {
        // The test binary itself is a live process with a known executable.
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap();
        let prefix = &name[..3];
        let mut f = Filter::new(&[], &[format!("{prefix}*")], &[]).unwrap();
        assert!(f.process_allowed(me, "whatever".into()));
        let mut f = Filter::new(&[], &["nginx".into()], &[]).unwrap();
        assert!(!f.process_allowed(me, "whatever".into()));
        assert!(Filter::new(&[], &["[".into()], &[]).is_err());
    }
}
