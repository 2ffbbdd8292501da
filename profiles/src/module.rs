//! Executable files (binaries and shared libraries) as the symbolizer sees them.
//!
//! A module is opened once, on first sight, through `/proc/PID/map_files/` and
//! kept open: the open file is the mapped inode itself, so symbolization still
//! works after the process exits, after the file is deleted or replaced on disk
//! (an upgrade in place), and for files inside containers' mount namespaces.
//! The symbolizer reads it through `/proc/self/fd/N`.

use std::{
    fs::File,
    num::NonZeroUsize,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::Arc,
};

use lru::LruCache;

use crate::procmaps::MapLine;

/// One mapped file.
#[derive(Debug)]
pub struct Module {
    /// Dense id, stable for the agent's lifetime (caches key on it).
    pub id: u64,
    /// The path the process mapped, as it reads in its own mount namespace.
    pub path: String,
    /// GNU build id, lower-case hex; empty when the file has none.
    pub build_id: String,
    /// File size in bytes.
    pub size: u64,
    /// Key of this file's symbolization results: derived from the build id
    /// when there is one, so the same library seen through different inodes
    /// (one per container image) is symbolized once; else the dense id.
    pub cache_key: u64,
    file: Option<File>,
}

impl Module {
    /// Where the symbolizer can read this file, even after it is gone elsewhere.
    pub fn symbol_path(&self) -> Option<PathBuf> {
        self.file
            .as_ref()
            .map(|f| PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd())))
    }

    /// The file name, for frames that keep only their module.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// Modules by (device, inode), bounded. An evicted module stays open for as
/// long as a process snapshot still refers to it.
pub struct ModuleCache {
    modules: LruCache<(String, u64), Arc<Module>>,
    next_id: u64,
}

impl ModuleCache {
    pub fn new(capacity: usize) -> ModuleCache {
        ModuleCache {
            modules: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
            next_id: 1,
        }
    }

    /// The module behind `map` of process `tgid`, opening it on first sight.
    pub fn get(&mut self, proc_root: &Path, tgid: u32, map: &MapLine) -> Arc<Module> {
        let key = (map.dev.clone(), map.inode);
        if let Some(m) = self.modules.get(&key) {
            return Arc::clone(m);
        }
        let pid_dir = proc_root.join(tgid.to_string());
        // map_files gives the mapped inode even if the path now names another file
        // or none; the root path is the fallback where map_files is not readable.
        let file = File::open(pid_dir.join("map_files").join(map.map_files_name()))
            .or_else(|_| File::open(pid_dir.join("root").join(map.path.trim_start_matches('/'))))
            .ok();
        let size = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        let id = self.next_id;
        self.next_id += 1;
        let mut module = Module {
            id,
            path: map.path.clone(),
            build_id: String::new(),
            size,
            cache_key: id,
            file,
        };
        if let Some(path) = module.symbol_path()
            && let Ok(Some(build_id)) = blazesym::helper::read_elf_build_id(&path)
        {
            module.build_id = build_id.iter().map(|b| format!("{b:02x}")).collect();
            module.cache_key = build_id_key(&module.build_id);
        }
        let module = Arc::new(module);
        self.modules.put(key, Arc::clone(&module));
        module
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }
}

/// A cache key from a build id, with the top bit set so it never equals a
/// dense module id.
fn build_id_key(build_id: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    build_id.hash(&mut h);
    h.finish() | 1 << 63
}
