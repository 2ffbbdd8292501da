//! What the kernel offers, probed at start and printed one line per capability.
//!
//! The capture path needs tracefs, syscall tracepoints, ring buffers and the right
//! to load BPF programs; uprobes and perf events serve later features; kprobes and
//! fentry are reported but never required (many of our kernels have neither).

use std::{ffi::CString, fmt, path::Path};

use agent_common::Syscall;
use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_map_supported, is_program_supported},
};

pub const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
pub const BPFFS: &str = "/sys/fs/bpf";
const TRACEFS_MAGIC: i64 = 0x7472_6163;
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Missing,
}

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Capability {
    pub name: &'static str,
    pub status: Status,
    /// The agent cannot capture without it.
    pub required: bool,
    pub detail: String,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match (self.status, self.required) {
            (Status::Ok, _) => "ok",
            (Status::Missing, true) => "MISSING (required)",
            (Status::Missing, false) => "missing",
        };
        write!(f, "{:<20} {:<19} {}", self.name, status, self.detail)
    }
}

/// The full probe report.
#[derive(Clone, Debug)]
pub struct Report {
    pub capabilities: Vec<Capability>,
}

impl Report {
    /// True when every required capability is there.
    pub fn can_run(&self) -> bool {
        self.capabilities
            .iter()
            .all(|c| !c.required || c.status == Status::Ok)
    }

    pub fn get(&self, name: &str) -> Option<&Capability> {
        self.capabilities.iter().find(|c| c.name == name)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.capabilities {
            writeln!(f, "{c}")?;
        }
        Ok(())
    }
}

fn fs_magic(path: &str) -> Option<i64> {
    let c_path = CString::new(path).ok()?;
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_type)
}

fn mount(fstype: &str, target: &str) -> std::io::Result<()> {
    let src = CString::new(fstype)?;
    let dst = CString::new(target)?;
    // SAFETY: valid C strings; no mount data.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Finds tracefs, mounting it at `/sys/kernel/tracing` when it is not mounted.
fn tracefs() -> Capability {
    let mut cap = Capability {
        name: "tracefs",
        status: Status::Ok,
        required: true,
        detail: String::new(),
    };
    for path in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(path).join("events").is_dir() {
            cap.detail = path.to_string();
            return cap;
        }
    }
    match mount("tracefs", TRACEFS) {
        Ok(()) if fs_magic(TRACEFS) == Some(TRACEFS_MAGIC) => {
            cap.detail = format!("{TRACEFS} (mounted by the agent)");
        }
        result => {
            let why = result
                .err()
                .map_or("not tracefs after mount".to_string(), |e| e.to_string());
            cap.status = Status::Missing;
            cap.detail = format!(
                "not mounted and mounting failed ({why}); run: mount -t tracefs tracefs {TRACEFS}"
            );
        }
    }
    cap
}

/// bpffs is not needed for capture (no pinning yet), but mount it like tracefs so
/// later features and operators find it.
fn bpffs() -> Capability {
    let mut cap = Capability {
        name: "bpffs",
        status: Status::Ok,
        required: false,
        detail: BPFFS.to_string(),
    };
    if fs_magic(BPFFS) == Some(BPF_FS_MAGIC) {
        return cap;
    }
    match mount("bpf", BPFFS) {
        Ok(()) => cap.detail = format!("{BPFFS} (mounted by the agent)"),
        Err(e) => {
            cap.status = Status::Missing;
            cap.detail = format!("not mounted ({e}); run: mount -t bpf bpf {BPFFS}");
        }
    }
    cap
}

fn btf() -> Capability {
    let ok = Path::new("/sys/kernel/btf/vmlinux").exists();
    Capability {
        name: "btf",
        status: if ok { Status::Ok } else { Status::Missing },
        required: false,
        detail: if ok {
            "/sys/kernel/btf/vmlinux".into()
        } else {
            "no /sys/kernel/btf/vmlinux (kernel built without CONFIG_DEBUG_INFO_BTF)".into()
        },
    }
}

fn syscall_tracepoints(tracefs: &str) -> Capability {
    let missing: Vec<String> = Syscall::ALL
        .iter()
        .flat_map(|s| {
            [
                format!("sys_enter_{}", s.name()),
                format!("sys_exit_{}", s.name()),
            ]
        })
        .filter(|name| {
            !Path::new(tracefs)
                .join("events/syscalls")
                .join(name)
                .is_dir()
        })
        .collect();
    let total = Syscall::ALL.len() * 2;
    Capability {
        name: "syscall tracepoints",
        status: if missing.len() < total {
            Status::Ok
        } else {
            Status::Missing
        },
        required: true,
        detail: if missing.is_empty() {
            format!("{total}/{total} (CONFIG_FTRACE_SYSCALLS)")
        } else {
            format!(
                "{}/{total}, missing: {}",
                total - missing.len(),
                missing.join(" ")
            )
        },
    }
}

fn event_source(name: &'static str, pmu: &str, required: bool, used_for: &str) -> Capability {
    let ok = Path::new("/sys/bus/event_source/devices")
        .join(pmu)
        .join("type")
        .exists();
    Capability {
        name,
        status: if ok { Status::Ok } else { Status::Missing },
        required,
        detail: if ok {
            format!("/sys/bus/event_source/devices/{pmu} ({used_for})")
        } else {
            format!("no {pmu} PMU in /sys/bus/event_source/devices ({used_for})")
        },
    }
}

fn perf_events() -> Capability {
    const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
    // perf_event_attr for the software cpu-clock event, sampling off.
    #[repr(C)]
    struct Attr {
        type_: u32,
        size: u32,
        config: u64,
        rest: [u64; 14],
    }
    let attr = Attr {
        type_: 1, // PERF_TYPE_SOFTWARE
        size: size_of::<Attr>() as u32,
        config: 0, // PERF_COUNT_SW_CPU_CLOCK
        rest: [0; 14],
    };
    // SAFETY: perf_event_open with a valid attr; the fd is closed right away.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr,
            -1i32,
            0i32,
            -1i32,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    let ok = fd >= 0;
    let detail = if ok {
        // SAFETY: fd came from perf_event_open.
        unsafe { libc::close(fd as i32) };
        "software cpu-clock".to_string()
    } else {
        format!(
            "perf_event_open(cpu-clock): {}",
            std::io::Error::last_os_error()
        )
    };
    Capability {
        name: "perf events",
        status: if ok { Status::Ok } else { Status::Missing },
        required: false,
        detail,
    }
}

fn supported(
    name: &'static str,
    required: bool,
    result: Result<bool, String>,
    what: &str,
) -> Capability {
    let (status, detail) = match result {
        Ok(true) => (Status::Ok, what.to_string()),
        Ok(false) => (
            Status::Missing,
            format!("{what}: not supported by this kernel"),
        ),
        Err(e) => (Status::Missing, format!("{what}: not available ({e})")),
    };
    Capability {
        name,
        status,
        required,
        detail,
    }
}

/// `RLIMIT_MEMLOCK` only matters before 5.11; since then BPF memory is charged to
/// the memory cgroup. Raising it fails without `CAP_SYS_RESOURCE`, which is fine.
fn memlock() -> Capability {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid rlimit pointer.
    let ok = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } == 0;
    Capability {
        name: "memlock",
        status: Status::Ok,
        required: false,
        detail: if ok {
            "RLIMIT_MEMLOCK raised to unlimited".into()
        } else {
            format!(
                "could not raise RLIMIT_MEMLOCK ({}); fine on kernels >= 5.11 (memcg accounting)",
                std::io::Error::last_os_error()
            )
        },
    }
}

/// Runs every probe (mounting tracefs/bpffs when needed).
pub fn probe() -> Report {
    let tracefs = tracefs();
    let tracefs_path = if tracefs.detail.starts_with(DEBUGFS_TRACING) {
        DEBUGFS_TRACING
    } else {
        TRACEFS
    };
    let mut capabilities = vec![memlock(), tracefs.clone(), bpffs(), btf()];
    capabilities.push(syscall_tracepoints(tracefs_path));
    capabilities.push(supported(
        "ring buffer",
        true,
        is_map_supported(MapType::RingBuf).map_err(|e| e.to_string()),
        "BPF_MAP_TYPE_RINGBUF",
    ));
    capabilities.push(supported(
        "bpf tracepoint",
        true,
        is_program_supported(ProgramType::TracePoint).map_err(|e| e.to_string()),
        "BPF_PROG_TYPE_TRACEPOINT",
    ));
    capabilities.push(supported(
        "raw tracepoint",
        false,
        is_program_supported(ProgramType::RawTracePoint).map_err(|e| e.to_string()),
        "BPF_PROG_TYPE_RAW_TRACEPOINT (fast capture path)",
    ));
    capabilities.push(event_source(
        "uprobes",
        "uprobe",
        false,
        "TLS plaintext from OpenSSL; without it HTTPS is not visible",
    ));
    capabilities.push(perf_events());
    capabilities.push(event_source("kprobes", "kprobe", false, "not used"));
    capabilities.push(supported(
        "fentry",
        false,
        is_program_supported(ProgramType::Tracing).map_err(|e| e.to_string()),
        "BPF_PROG_TYPE_TRACING (not used for capture)",
    ));
    Report { capabilities }
}
