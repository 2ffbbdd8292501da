//! What the symbolizer needs to know about each sampled process, read while the
//! process is alive: its executable mappings (with their files held open), its
//! JIT perf map, and who it is (service and labels).
//!
//! Snapshots are taken when the kernel announces a process on its first sample,
//! and lazily at drain time for processes whose announcement was missed. A
//! process that exits keeps its snapshot until its samples are symbolized.

use std::{
    num::NonZeroUsize,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use lru::LruCache;

use crate::{
    module::{Module, ModuleCache},
    perfmap::PerfMap,
    procmaps::{self, MapLine},
};

/// Who a process is, as the profile backends label it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Target {
    /// `service_name` label / `service.name` attribute.
    pub service_name: String,
    /// Further resource attributes, OpenTelemetry names (`host.name`, `container.id`, …).
    pub attributes: Vec<(String, String)>,
}

/// One executable mapping.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    /// The file, or `None` for anonymous memory and special mappings.
    pub module: Option<Arc<Module>>,
    /// The path or pseudo-path (`[vdso]`, empty for anonymous memory).
    pub name: Arc<str>,
}

impl Mapping {
    /// Offset in the file of an address in this mapping.
    pub fn file_offset(&self, addr: u64) -> u64 {
        addr - self.start + self.offset
    }
}

/// A process snapshot.
#[derive(Debug)]
pub struct Process {
    pub tgid: u32,
    pub target: Arc<Target>,
    pub mappings: Vec<Mapping>,
    perf_map: Option<PerfMapFile>,
}

#[derive(Debug)]
struct PerfMapFile {
    path: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
    map: PerfMap,
}

impl Process {
    /// The mapping holding `addr`.
    pub fn mapping(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        self.mappings[..i].last().filter(|m| addr < m.end)
    }

    /// The JIT symbol of `addr`, from the process's perf map.
    pub fn jit_symbol(&self, addr: u64) -> Option<&Arc<str>> {
        self.perf_map.as_ref()?.map.lookup(addr)
    }
}

/// Snapshots of sampled processes, bounded (LRU by last use).
pub struct ProcessTable {
    proc_root: PathBuf,
    processes: LruCache<u32, Process>,
    modules: ModuleCache,
}

impl ProcessTable {
    pub fn new(proc_root: impl Into<PathBuf>, processes: usize, modules: usize) -> ProcessTable {
        ProcessTable {
            proc_root: proc_root.into(),
            processes: LruCache::new(NonZeroUsize::new(processes).unwrap_or(NonZeroUsize::MIN)),
            modules: ModuleCache::new(modules),
        }
    }

    /// Reads (or re-reads, after an exec) the process now. Returns false when it
    /// is already gone, or exiting (no executable mappings left): a snapshot
    /// taken while it lived is then kept.
    pub fn snapshot(&mut self, tgid: u32, target: Arc<Target>) -> bool {
        let dir = self.proc_root.join(tgid.to_string());
        let Ok(text) = std::fs::read_to_string(dir.join("maps")) else {
            return false;
        };
        let lines = procmaps::parse_exec_maps(&text);
        if lines.is_empty() {
            return false;
        }
        let mappings = self.mappings(tgid, &lines);
        let perf_map = perf_map_path(&dir).map(|path| PerfMapFile {
            path,
            modified: None,
            len: 0,
            map: PerfMap::default(),
        });
        let mut process = Process {
            tgid,
            target,
            mappings,
            perf_map,
        };
        refresh_perf_map(&mut process);
        self.processes.put(tgid, process);
        true
    }

    fn mappings(&mut self, tgid: u32, lines: &[MapLine]) -> Vec<Mapping> {
        lines
            .iter()
            .map(|line| Mapping {
                start: line.start,
                end: line.end,
                offset: line.offset,
                module: line
                    .is_file()
                    .then(|| self.modules.get(&self.proc_root, tgid, line)),
                name: Arc::from(line.path.as_str()),
            })
            .collect()
    }

    pub fn contains(&self, tgid: u32) -> bool {
        self.processes.contains(&tgid)
    }

    /// The snapshot of `tgid`, if any (marks it recently used).
    pub fn get(&mut self, tgid: u32) -> Option<&Process> {
        self.processes.get(&tgid)
    }

    /// Before symbolizing: re-reads the maps of a live process if one of its
    /// addresses is outside every known mapping (a library loaded after the
    /// snapshot) and its perf map if that file changed.
    pub fn refresh(&mut self, tgid: u32, addrs: &[u64]) {
        let Some(process) = self.processes.get_mut(&tgid) else {
            return;
        };
        refresh_perf_map(process);
        let unmapped = addrs.iter().any(|&a| process.mapping(a).is_none());
        if !unmapped {
            return;
        }
        let dir = self.proc_root.join(tgid.to_string());
        if let Ok(text) = std::fs::read_to_string(dir.join("maps")) {
            let lines = procmaps::parse_exec_maps(&text);
            let mappings = self.mappings(tgid, &lines);
            if let Some(process) = self.processes.get_mut(&tgid) {
                process.mappings = mappings;
            }
        }
    }

    /// Drops snapshots of processes that have exited (call after their samples
    /// were symbolized).
    pub fn forget_exited(&mut self) {
        let gone: Vec<u32> = self
            .processes
            .iter()
            .map(|(&tgid, _)| tgid)
            .filter(|tgid| !self.proc_root.join(tgid.to_string()).exists())
            .collect();
        for tgid in gone {
            self.processes.pop(&tgid);
        }
    }

    pub fn len(&self) -> usize {
        self.processes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    pub fn modules(&self) -> usize {
        self.modules.len()
    }
}

/// `/proc/PID/root/tmp/perf-NSPID.map`: the JIT writes it in its own mount and
/// pid namespaces.
fn perf_map_path(dir: &Path) -> Option<PathBuf> {
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let ns_pid = procmaps::ns_pid(&status)?;
    Some(dir.join(format!("root/tmp/perf-{ns_pid}.map")))
}

/// Re-reads the perf map when its size or modification time changed. Bounded:
/// a map larger than 64 MiB is read no further.
fn refresh_perf_map(process: &mut Process) {
    const MAX_BYTES: u64 = 64 << 20;
    let Some(pm) = process.perf_map.as_mut() else {
        return;
    };
    let Ok(meta) = std::fs::metadata(&pm.path) else {
        return;
    };
    let modified = meta.modified().ok();
    if meta.len() == pm.len && modified == pm.modified {
        return;
    }
    use std::io::Read as _;
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open(&pm.path)
        && file.take(MAX_BYTES).read_to_string(&mut text).is_ok()
    {
        pm.map = PerfMap::parse(&text);
        pm.len = meta.len();
        pm.modified = modified;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_this_process_with_its_own_binary() {
        let mut table = ProcessTable::new("/proc", 8, 64);
        let me = std::process::id();
        assert!(table.snapshot(me, Arc::new(Target::default())));
        let here = snapshots_this_process_with_its_own_binary as *const () as u64;
        let process = table.get(me).unwrap();
        let mapping = process.mapping(here).expect("test code is mapped");
        let module = mapping.module.as_ref().expect("file backed");
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(module.path, exe.to_string_lossy());
        assert!(module.symbol_path().is_some());
        assert_eq!(module.build_id.len() % 2, 0);
        assert!(!table.snapshot(u32::MAX - 7, Arc::new(Target::default())));
    }

    #[test]
    fn an_exiting_process_keeps_the_snapshot_taken_while_it_lived() {
        let root = std::env::temp_dir().join(format!("procroot-{}", std::process::id()));
        let dir = root.join("4242");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("maps"), "1000-2000 r-xp 00000000 00:00 0 \n").unwrap();
        let mut table = ProcessTable::new(&root, 8, 8);
        let target = |name: &str| {
            Arc::new(Target {
                service_name: name.into(),
                attributes: Vec::new(),
            })
        };
        assert!(table.snapshot(4242, target("app")));
        // Sampled again after its memory map is gone (exit in progress).
        std::fs::write(dir.join("maps"), "").unwrap();
        assert!(!table.snapshot(4242, target("")));
        let process = table.get(4242).unwrap();
        assert_eq!(process.target.service_name, "app");
        assert!(process.mapping(0x1800).is_some());
        // Gone for good: forgotten after its samples were symbolized.
        std::fs::remove_dir_all(&root).unwrap();
        table.forget_exited();
        assert!(table.is_empty());
    }

    #[test]
    fn jit_code_is_named_from_the_perf_map() {
        // Anonymous executable memory, as a JIT allocates it.
        const LEN: usize = 4096;
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let code = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(code, libc::MAP_FAILED);
        let start = code as u64;
        let me = std::process::id();
        // Our own pid namespace: NSpid is our pid; /proc/self/root is /.
        let map = std::path::PathBuf::from(format!("/tmp/perf-{me}.map"));
        std::fs::write(&map, format!("{start:x} 40 JS:*fib index.js:3\n")).unwrap();
        let mut table = ProcessTable::new("/proc", 8, 64);
        assert!(table.snapshot(me, Arc::new(Target::default())));
        let process = table.get(me).unwrap();
        let mapping = process.mapping(start + 8).expect("anonymous mapping");
        assert!(mapping.module.is_none());
        assert_eq!(
            process.jit_symbol(start + 8).map(|s| &**s),
            Some("JS:*fib index.js:3")
        );
        assert_eq!(process.jit_symbol(start + 0x40), None);
        // Appended symbols are picked up before the next symbolization.
        std::fs::write(
            &map,
            format!(
                "{start:x} 40 JS:*fib index.js:3\n{:x} 20 JS:*later x.js:1\n",
                start + 0x100
            ),
        )
        .unwrap();
        table.refresh(me, &[start + 0x108]);
        let process = table.get(me).unwrap();
        assert_eq!(
            process.jit_symbol(start + 0x108).map(|s| &**s),
            Some("JS:*later x.js:1")
        );
        let _ = std::fs::remove_file(&map);
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(code, LEN) };
    }
}
