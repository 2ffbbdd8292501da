//! Which files get TLS uprobes, and their lifetime.
//!
//! A uprobe belongs to a file (inode) and offset, not to a process: one attach
//! per OpenSSL file serves every process that maps it, containers included
//! (reached through `/proc/PID/map_files`, so the agent needs no view of the
//! container's filesystem). Files are found in processes' memory maps: every
//! process at start, and each process again at its first socket event seen
//! (after `exec` or a late `dlopen`, e.g. Python's `import ssl`). The host's
//! own libssl is probed at start even when nothing maps it yet, so a client
//! started later is seen from its first request. Executables are read only
//! when a connection of theirs carries TLS records: they may hold OpenSSL
//! (statically linked) or Go's `crypto/tls`. A file no process maps any
//! more is detached at the next sweep.
//!
//! Work happens on a thread of its own: reading ELF files and attaching
//! probes takes milliseconds, which the event pipeline must not wait for.

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroUsize,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use lru::LruCache;

use super::elf;
use crate::{capture::Capture, flows::context::locked, self_metrics::SelfMetrics};

/// A TLS implementation the agent probes: its functions, each with the
/// program on its entry and whether its RETs get `on_return`.
struct Implementation {
    name: &'static str,
    /// `(symbol, entry program, probe the RETs)`; the first one must exist.
    /// Those with RET probes must have complete exits (the ELF says).
    functions: &'static [(&'static str, &'static str, bool)],
    on_return: &'static str,
}

const OPENSSL: Implementation = Implementation {
    name: "OpenSSL",
    functions: &[
        ("SSL_write", "ssl_write", true),
        ("SSL_write_ex", "ssl_write_ex", true),
        ("SSL_read", "ssl_read", true),
        ("SSL_read_ex", "ssl_read_ex", true),
        ("SSL_free", "ssl_free", false),
    ],
    on_return: "ssl_return",
};

/// Go's `crypto/tls`, linked into every Go program that uses it.
const GO: Implementation = Implementation {
    name: "Go crypto/tls",
    functions: &[
        // Reported at entry (the kernel program says why): no RET probes.
        ("crypto/tls.(*Conn).Write", "go_tls_write", false),
        ("crypto/tls.(*Conn).Read", "go_tls_read", true),
    ],
    on_return: "go_tls_return",
};

/// The host's OpenSSL, probed at start (through pid 1's root: the host's
/// filesystem also when the agent runs in a container with `hostPID`).
const HOST_LIBRARIES: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib/x86_64-linux-gnu/libssl.so.1.1",
    "/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib64/libssl.so.3",
    "/usr/lib64/libssl.so.1.1",
    "/usr/lib/libssl.so.3",
];

/// Processes asked about at once; more are dropped (the next sweep finds them).
const QUEUE: usize = 1024;
const SWEEP: Duration = Duration::from_secs(10);
/// Executables larger than this are not read for a static OpenSSL.
const MAX_EXECUTABLE_BYTES: u64 = 64 << 20;

/// A file by device and inode, as `/proc/PID/maps` names it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

struct Library {
    path: String,
    handles: Vec<u64>,
    /// Processes that mapped it when last looked at; empty after a sweep: detached.
    users: HashSet<u32>,
    /// The host's own: kept while the agent runs.
    pinned: bool,
}

/// What the TLS thread is asked to look at.
#[derive(Clone, Copy, Debug)]
enum Job {
    /// A process's mapped libraries (its first connection).
    Libraries(u32),
    /// A process's executable: it speaks TLS and no probed library of its
    /// own may be why (OpenSSL linked in statically, or Go's `crypto/tls`).
    Executable(u32),
}

/// Asks the TLS thread to look at a process (cheap, never blocks).
#[derive(Clone, Debug)]
pub struct TlsProbes {
    tx: mpsc::SyncSender<Job>,
}

impl TlsProbes {
    /// Starts the thread: the host's libraries and every running process are
    /// looked at first.
    pub fn spawn(capture: Arc<Mutex<Capture>>, metrics: Arc<SelfMetrics>) -> TlsProbes {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let worker = Worker {
            capture,
            metrics,
            libraries: HashMap::new(),
            rejected: LruCache::new(NonZeroUsize::new(4096).unwrap_or(NonZeroUsize::MIN)),
            own_tgid: std::process::id(),
        };
        let spawned = std::thread::Builder::new()
            .name("tls-probes".into())
            .spawn(move || worker.run(rx));
        if let Err(error) = spawned {
            tracing::error!(%error, "TLS probes thread did not start: no TLS plaintext");
        }
        TlsProbes { tx }
    }

    /// A process had its first socket event (since start or exec).
    pub fn look_at(&self, tgid: u32) {
        let _ = self.tx.try_send(Job::Libraries(tgid));
    }

    /// A process's connection carries TLS records: its executable may hold
    /// OpenSSL or Go's `crypto/tls` itself. Only such executables are read (reading every
    /// executable on a host would cost gigabytes of I/O at start).
    pub fn look_at_executable(&self, tgid: u32) {
        let _ = self.tx.try_send(Job::Executable(tgid));
    }
}

struct Worker {
    capture: Arc<Mutex<Capture>>,
    metrics: Arc<SelfMetrics>,
    libraries: HashMap<FileId, Library>,
    /// Files looked at that are no OpenSSL (or failed): not read again.
    rejected: LruCache<FileId, ()>,
    own_tgid: u32,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        // The host's files through pid 1's root (the agent in a container
        // with hostPID), else the agent's own view (on the host, or where
        // pid 1's root is not readable).
        for path in HOST_LIBRARIES {
            for open in [
                PathBuf::from(format!("/proc/1/root{path}")),
                PathBuf::from(path),
            ] {
                if let Some(id) = file_id(&open) {
                    self.consider(id, &open, path, true, None);
                    break;
                }
            }
        }
        SelfMetrics::set(&self.metrics.tls_libraries, self.libraries.len() as u64);
        self.sweep();
        let mut last_sweep = Instant::now();
        loop {
            match rx.recv_timeout(SWEEP) {
                Ok(Job::Libraries(tgid)) => self.scan(tgid),
                Ok(Job::Executable(tgid)) => self.executable(tgid),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if last_sweep.elapsed() >= SWEEP {
                self.sweep();
                last_sweep = Instant::now();
            }
        }
    }

    /// Every process again: users recounted, libraries nobody maps detached.
    fn sweep(&mut self) {
        for library in self.libraries.values_mut() {
            if !is_library(&library.path) {
                // A program (static OpenSSL): still running it?
                library.users.retain(|pid| {
                    std::fs::read_link(format!("/proc/{pid}/exe"))
                        .is_ok_and(|p| p.to_string_lossy() == library.path)
                });
            } else {
                library.users.clear();
            }
        }
        let pids: Vec<u32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        for pid in pids {
            self.scan(pid);
        }
        let unused: Vec<FileId> = self
            .libraries
            .iter()
            .filter(|(_, l)| l.users.is_empty() && !l.pinned)
            .map(|(id, _)| *id)
            .collect();
        for id in unused {
            if let Some(library) = self.libraries.remove(&id) {
                tracing::info!(
                    path = library.path,
                    "TLS probes detached: no process maps it"
                );
                let mut capture = locked(&self.capture);
                for handle in library.handles {
                    capture.detach_uprobe(handle);
                }
            }
        }
        SelfMetrics::set(&self.metrics.tls_libraries, self.libraries.len() as u64);
    }

    fn scan(&mut self, pid: u32) {
        if pid == self.own_tgid {
            return;
        }
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return;
        };
        let mut seen = HashSet::new();
        for mapping in maps.lines().filter_map(Mapping::parse) {
            if !seen.insert(mapping.id) || !is_library(mapping.path) {
                continue;
            }
            let through = PathBuf::from(format!("/proc/{pid}/map_files/{}", mapping.map_file()));
            self.consider(mapping.id, &through, mapping.path, false, Some(pid));
        }
        SelfMetrics::set(&self.metrics.tls_libraries, self.libraries.len() as u64);
    }

    /// The executable of `pid`, through `/proc/PID/exe`.
    fn executable(&mut self, pid: u32) {
        if pid == self.own_tgid {
            return;
        }
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let Ok(target) = std::fs::read_link(&exe) else {
            return;
        };
        let name = target.to_string_lossy().into_owned();
        if !is_candidate(&name) {
            return;
        }
        if let Some(id) = file_id(&exe) {
            self.consider(id, &exe, &name, false, Some(pid));
        }
    }

    fn consider(&mut self, id: FileId, open: &Path, name: &str, pinned: bool, user: Option<u32>) {
        if let Some(library) = self.libraries.get_mut(&id) {
            library.users.extend(user);
            library.pinned |= pinned;
            return;
        }
        if self.rejected.contains(&id) {
            return;
        }
        match self.attach(open, name) {
            Ok(Some(handles)) => {
                self.libraries.insert(
                    id,
                    Library {
                        path: name.to_string(),
                        handles,
                        users: user.into_iter().collect(),
                        pinned,
                    },
                );
            }
            Ok(None) => {
                self.rejected.put(id, ());
            }
            // The process exited between reading its maps and opening the
            // file: another user of the file will bring it up again.
            Err(_) if !open.exists() => {}
            Err(error) => {
                tracing::warn!(path = name, error = %format!("{error:#}"), "TLS probes not attached");
                self.rejected.put(id, ());
            }
        }
    }

    /// The probes on one file; `None` when it has no TLS functions we probe.
    fn attach(&mut self, path: &Path, name: &str) -> anyhow::Result<Option<Vec<u64>>> {
        // The file is read whole: an executable this large is no static
        // OpenSSL program worth the memory (debug builds of big programs).
        let library = is_library(name);
        if !library && std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_EXECUTABLE_BYTES) {
            return Ok(None);
        }
        let names: Vec<&str> = [OPENSSL, GO]
            .iter()
            .flat_map(|i| i.functions.iter().map(|(f, _, _)| *f))
            .collect();
        let binary = elf::find_functions(path, &names)?;
        let implementation = if binary.function(OPENSSL.functions[0].0).is_some() {
            OPENSSL
        } else if let Some(go) = &binary.go {
            if !go_probeable(name, go, &binary) {
                SelfMetrics::add(&self.metrics.tls_unprobeable_executables, 1);
                return Ok(None);
            }
            GO
        } else {
            return Ok(None);
        };
        // The capture lock is taken per probe: attaching one takes
        // milliseconds, and the pipeline (and the agent's stop) share it.
        let capture = &self.capture;
        let mut handles = Vec::new();
        for &(function, program, returns) in implementation.functions {
            let Some(f) = binary.function(function) else {
                continue;
            };
            if !returns {
                handles.push(locked(capture).attach_uprobe(program, path, f.file_offset)?);
                continue;
            }
            // An exit the RET probes miss would leave the call open and
            // wrongly claim the thread's next syscall: such a function is
            // not probed at all.
            if !f.exits_complete() || f.exits.is_empty() {
                tracing::warn!(
                    function,
                    "not probed: it exits through a jump, not only RETs"
                );
                continue;
            }
            // RETs first: a call entered once the entry is probed then
            // always meets its return probes (a return without an entry is
            // only a loss, an entry without a return a wrong claim).
            for exit in &f.exits {
                handles.push(locked(capture).attach_uprobe(
                    implementation.on_return,
                    path,
                    *exit,
                )?);
            }
            handles.push(locked(capture).attach_uprobe(program, path, f.file_offset)?);
        }
        tracing::info!(
            path = name,
            probes = handles.len(),
            "TLS plaintext: uprobes on {}",
            implementation.name
        );
        Ok(Some(handles))
    }
}

/// Whether a Go program's `crypto/tls` can be probed; says why not (once per
/// file: it is not read again). Its connections are counted as not visible.
fn go_probeable(name: &str, go: &elf::GoBuild, binary: &elf::Binary) -> bool {
    let why_not = if !binary.has_symtab {
        "stripped (no symbol table)"
    } else if go.has_register_abi() != Some(true) {
        "older than Go 1.17 or of unknown version (no register ABI)"
    } else if binary.function(GO.functions[0].0).is_none() {
        "no crypto/tls functions (another TLS implementation)"
    } else {
        return true;
    };
    tracing::warn!(
        path = name,
        go = go.version.as_deref().unwrap_or("unknown"),
        "Go program speaking TLS, not visible: {why_not}"
    );
    false
}

/// An executable that may link OpenSSL statically (it then has `SSL_write`)
/// or be a Go program; the ELF says. Node's executable has OpenSSL too but drives it over
/// memory BIOs, with no socket syscall inside a call: not probed (its
/// connections are counted as not visible instead).
fn is_candidate(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    if is_library(path) {
        return true;
    }
    let shared_library = name.starts_with("lib") && name.contains(".so");
    let gone = !path.starts_with('/') || path.ends_with(" (deleted)");
    !(shared_library || gone || matches!(name, "node" | "nodejs"))
}

/// OpenSSL's shared library (`libssl.so.3`, `libssl.so.1.1`).
fn is_library(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .unwrap_or(path)
        .starts_with("libssl.so")
}

/// One line of `/proc/PID/maps` that maps a file.
struct Mapping<'a> {
    range: &'a str,
    id: FileId,
    path: &'a str,
}

impl<'a> Mapping<'a> {
    /// Its entry in `/proc/PID/map_files`: the range without the zero
    /// padding `maps` prints (`00401000-…` is `401000-…` there).
    fn map_file(&self) -> String {
        let (start, end) = self.range.split_once('-').unwrap_or((self.range, ""));
        let trim = |s: &'a str| match s.trim_start_matches('0') {
            "" => "0",
            t => t,
        };
        format!("{}-{}", trim(start), trim(end))
    }

    /// `start-end perms offset dev inode path`.
    fn parse(line: &'a str) -> Option<Mapping<'a>> {
        let mut fields = line.splitn(6, ' ');
        let range = fields.next()?;
        let perms = fields.next()?;
        let _offset = fields.next()?;
        let dev = fields.next()?;
        let ino: u64 = fields.next()?.parse().ok()?;
        let path = fields.next()?.trim_start();
        if ino == 0 || !perms.contains('x') {
            return None;
        }
        let (major, minor) = dev.split_once(':')?;
        let dev =
            (u64::from_str_radix(major, 16).ok()? << 20) | u64::from_str_radix(minor, 16).ok()?;
        Some(Mapping {
            range,
            id: FileId { dev, ino },
            path,
        })
    }
}

/// The (device, inode) of a file, in the same form as `/proc/PID/maps`.
fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    let dev = meta.dev();
    // maps prints major:minor of the kernel's dev_t (MKDEV: major << 20 | minor).
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    Some(FileId {
        dev: (u64::from(major) << 20) | u64::from(minor),
        ino: meta.ino(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_name_executable_file_mappings() {
        let line = "7f1c2a000000-7f1c2a0b3000 r-xp 00022000 fe:01 1327541                    /usr/lib/x86_64-linux-gnu/libssl.so.3";
        let m = Mapping::parse(line).expect("a file mapping");
        assert_eq!(m.range, "7f1c2a000000-7f1c2a0b3000");
        assert_eq!(m.path, "/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert_eq!(
            m.id,
            FileId {
                dev: (0xfe << 20) | 1,
                ino: 1327541
            }
        );
        assert_eq!(m.map_file(), "7f1c2a000000-7f1c2a0b3000");
        let low =
            Mapping::parse("00401000-0074b000 r-xp 00001000 fe:01 7 /tmp/static").expect("mapping");
        assert_eq!(
            low.map_file(),
            "401000-74b000",
            "as /proc/PID/map_files names it"
        );
        assert!(Mapping::parse("7ffd1000-7ffd2000 r-xp 00000000 00:00 0      [vdso]").is_none());
        assert!(
            Mapping::parse("55d0-55d1 r--p 00000000 fe:01 42 /usr/bin/curl").is_none(),
            "not executable"
        );
    }

    #[test]
    fn candidates_are_openssl_and_executables() {
        assert!(is_candidate("/usr/lib/x86_64-linux-gnu/libssl.so.3"));
        assert!(is_candidate("/usr/local/bin/static-server"));
        assert!(!is_candidate("/usr/lib/x86_64-linux-gnu/libcrypto.so.3"));
        assert!(!is_candidate("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(!is_candidate("/usr/bin/node"));
        assert!(!is_candidate("/tmp/gone (deleted)"));
    }

    #[test]
    fn the_same_file_has_the_same_id_from_stat_and_maps() {
        // This test binary maps itself: its maps line and its stat agree.
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        let exe = exe.to_string_lossy();
        let mapped = maps
            .lines()
            .filter_map(Mapping::parse)
            .find(|m| m.path == exe)
            .expect("the executable is mapped");
        assert_eq!(Some(mapped.id), file_id(Path::new(exe.as_ref())));
    }
}
