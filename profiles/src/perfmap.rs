//! JIT symbol maps: `/tmp/perf-PID.map`, written by runtimes (Node with
//! `--perf-basic-prof`, the JVM with perf-map-agent, .NET, LuaJIT, …) so that
//! profilers can name code that has no file. One line per symbol:
//! `START SIZE name`, START and SIZE in hex (with or without `0x`).
//! <https://github.com/torvalds/linux/blob/v6.18/tools/perf/Documentation/jit-interface.txt>

use std::sync::Arc;

/// A parsed perf map, sorted by start address. Later lines win on overlap (a JIT
/// reuses memory for new code and appends the new symbol).
#[derive(Clone, Debug, Default)]
pub struct PerfMap {
    entries: Vec<(u64, u64, Arc<str>)>,
}

/// Symbols kept per map: a runtime that never stops generating code must not
/// grow the agent without bound.
pub const MAX_ENTRIES: usize = 200_000;

impl PerfMap {
    pub fn parse(text: &str) -> PerfMap {
        let mut entries: Vec<(u64, u64, Arc<str>)> = Vec::new();
        for line in text.lines() {
            let mut parts = line.splitn(3, ' ');
            let (Some(start), Some(size), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
            let (Some(start), Some(size)) = (hex(start), hex(size)) else {
                continue;
            };
            if size == 0 || name.trim().is_empty() {
                continue;
            }
            entries.push((start, start.saturating_add(size), Arc::from(name.trim())));
        }
        if entries.len() > MAX_ENTRIES {
            let drop = entries.len() - MAX_ENTRIES;
            entries.drain(..drop);
        }
        // Stable sort keeps file order among equal starts; lookups take the last.
        entries.sort_by_key(|e| e.0);
        PerfMap { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The symbol whose range holds `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&Arc<str>> {
        let upto = self.entries.partition_point(|e| e.0 <= addr);
        self.entries[..upto]
            .iter()
            .rev()
            .take(64)
            .find(|e| addr < e.1)
            .map(|e| &e.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_jitted_functions_by_address() {
        let map = PerfMap::parse(
            "7f0000001000 40 LazyCompile:*fib /app/index.js:3\n\
             0x7f0000002000 0x100 Builtin:ArgumentsAdaptorTrampoline\n\
             not a line\n\
             7f0000003000 0 empty\n",
        );
        assert_eq!(map.len(), 2);
        assert_eq!(
            map.lookup(0x7f0000001010).map(|s| &**s),
            Some("LazyCompile:*fib /app/index.js:3")
        );
        assert_eq!(
            map.lookup(0x7f00000020ff).map(|s| &**s),
            Some("Builtin:ArgumentsAdaptorTrampoline")
        );
        assert_eq!(map.lookup(0x7f0000001040), None);
        assert_eq!(map.lookup(0x1000), None);
    }

    #[test]
    fn reused_memory_takes_the_newest_symbol() {
        let map = PerfMap::parse("1000 100 old\n1000 100 new\n");
        assert_eq!(map.lookup(0x1050).map(|s| &**s), Some("new"));
    }
}
