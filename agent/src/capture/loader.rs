//! Loading the kernel object and attaching its programs, from one attach table.
//!
//! Each program in [`attach_table`] names its hook and the capture path it
//! belongs to:
//! - **fast**: a `sys_exit` dispatcher and the per-syscall handlers it
//!   tail-calls (loaded into a program array, never attached), in two builds:
//!   `tp_btf` (registers as plain loads through the BTF-typed argument) and,
//!   where the kernel refuses that, a raw tracepoint (one probe read);
//! - **tracepoints**: the `syscalls:sys_{enter,exit}_*` pairs, the fallback;
//! - **both**: what either path needs (`sock:inet_sock_set_state`, and
//!   `sched:sched_process_exec`, which clears a process's filter verdict).
//!
//! `--capture-path auto` (the default) attaches the fast path and falls back to
//! the tracepoints when any part of it fails to load or attach, saying why; the
//! capability report (`agent --check`) and the startup log say which one runs.
//! Within the tracepoint path a program that fails is reported and the others
//! keep running; only when nothing at all attaches does the agent refuse to start.
//!
//! `AGENT_FAIL_ATTACH=prog,prog` makes the named programs fail as if the kernel
//! had refused them: the tests use it to prove the fallback is taken.

use agent_common::{Syscall, globals, maps};
use anyhow::{Context as _, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::ProgramArray,
    programs::{
        BtfTracePoint, RawTracePoint, TracePoint, raw_trace_point::RawTracePointLink,
        tp_btf::BtfTracePointLink, trace_point::TracePointLink,
    },
};

use crate::config::{CapturePath, Settings};

/// The kernel object built by `build.rs` (or an empty file with `AYA_BUILD_SKIP`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent"));

/// The kernel object this binary carries (the benchmarks load parts of it).
pub fn object() -> &'static [u8] {
    OBJECT
}

/// The tracepoint both fast dispatchers attach to.
const SYS_EXIT: &str = "sys_exit";

/// Environment variable naming programs that must fail (fault injection).
pub const FAIL_ATTACH_ENV: &str = "AGENT_FAIL_ATTACH";

/// Where a program goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hook {
    /// A classic tracepoint `category:name`.
    Tracepoint {
        category: &'static str,
        name: String,
    },
    /// A raw tracepoint.
    RawTracepoint(&'static str),
    /// A BTF tracepoint (`tp_btf`).
    BtfTracepoint(&'static str),
    /// Loaded for tracepoint `target` and stored at `index` of program array
    /// `map`.
    TailCall {
        map: &'static str,
        index: u32,
        btf: bool,
    },
}

/// Which capture path needs a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// The fast path as `tp_btf` programs.
    FastBtf,
    /// The fast path as raw tracepoints.
    Fast,
    Tracepoints,
    Both,
}

/// One program and where it attaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub program: String,
    pub hook: Hook,
    pub path: Path,
}

/// The outcome of attaching one program of the path in use.
#[derive(Debug)]
pub struct AttachResult {
    pub attachment: Attachment,
    pub error: Option<String>,
}

/// The path that runs, and why when it is a fallback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathReport {
    pub path: CapturePath,
    /// The fast path's program type: `tp_btf` or `raw_tracepoint`.
    pub dispatcher: Option<&'static str>,
    /// Why the fast path (or its `tp_btf` build) is not used.
    pub fast_error: Option<String>,
}

impl std::fmt::Display for PathReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.path, &self.fast_error) {
            (CapturePath::Fast, why) => {
                write!(
                    f,
                    "fast: {} sys_exit, arguments from saved registers, {} syscall handlers",
                    self.dispatcher.unwrap_or("?"),
                    Syscall::ALL.len()
                )?;
                match why {
                    Some(why) => write!(f, " (tp_btf unavailable: {why})"),
                    None => Ok(()),
                }
            }
            (_, None) => write!(
                f,
                "tracepoints: syscalls:sys_enter_*/sys_exit_* pairs (asked for)"
            ),
            (_, Some(why)) => write!(
                f,
                "tracepoints: syscalls:sys_enter_*/sys_exit_* pairs (fast path unavailable: {why})"
            ),
        }
    }
}

/// Every program of the capture path.
pub fn attach_table() -> Vec<Attachment> {
    let mut table = vec![
        Attachment {
            program: "sys_exit_btf".into(),
            hook: Hook::BtfTracepoint(SYS_EXIT),
            path: Path::FastBtf,
        },
        Attachment {
            program: "sys_exit".into(),
            hook: Hook::RawTracepoint(SYS_EXIT),
            path: Path::Fast,
        },
    ];
    for (path, prefix, map, btf) in [
        (Path::FastBtf, "btf_exit_", maps::BTF_EXIT_PROGS, true),
        (Path::Fast, "exit_", maps::EXIT_PROGS, false),
    ] {
        for s in Syscall::ALL {
            table.push(Attachment {
                program: format!("{prefix}{}", s.name()),
                hook: Hook::TailCall {
                    map,
                    index: s as u32,
                    btf,
                },
                path,
            });
        }
    }
    for s in Syscall::ALL {
        for prefix in ["sys_enter_", "sys_exit_"] {
            let name = format!("{prefix}{}", s.name());
            table.push(Attachment {
                program: name.clone(),
                hook: Hook::Tracepoint {
                    category: "syscalls",
                    name,
                },
                path: Path::Tracepoints,
            });
        }
    }
    // A process that execs is judged again by the --pid/--exe filters.
    table.push(Attachment {
        program: "capture_exec".into(),
        hook: Hook::Tracepoint {
            category: "sched",
            name: "sched_process_exec".into(),
        },
        path: Path::Both,
    });
    table.push(Attachment {
        program: "inet_sock_set_state".into(),
        hook: Hook::Tracepoint {
            category: "sock",
            name: "inet_sock_set_state".into(),
        },
        path: Path::Both,
    });
    table
}

/// An attached program; dropping it detaches.
pub enum Link {
    Tracepoint(TracePointLink),
    Raw(RawTracePointLink),
    Btf(BtfTracePointLink),
}

/// What [`load`] hands over.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub links: Vec<Link>,
    pub results: Vec<AttachResult>,
    pub path: PathReport,
}

/// Loads the object with the agent's globals and map sizes, then attaches the
/// capture path the settings ask for.
pub fn load(settings: &Settings, agent_tgid: u32) -> anyhow::Result<Loaded> {
    if OBJECT.is_empty() {
        bail!(
            "this agent binary was built with AYA_BUILD_SKIP=1 and has no kernel programs; \
             build it with `cargo xtask build-ebpf` and `cargo build` without AYA_BUILD_SKIP"
        );
    }
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    let ring_bytes = settings.ring_buffer_bytes(cpus);
    let wakeup_bytes = wakeup_bytes(ring_bytes);
    // Profiling off: the maps still exist in the object, at their smallest.
    let profile_entries = if settings.profiling.enabled {
        crate::profiling::sampler::map_entries(
            cpus,
            settings.profiling.frequency,
            settings.profiling.interval,
        )
    } else {
        1
    };
    let filtering = u32::from(!settings.pids.is_empty() || !settings.exes.is_empty());
    let logging = u32::from(!settings.logs.exes.is_empty());
    let trace_context = u32::from(settings.trace_context);
    // The kernel's BTF, parsed once (several MiB of it): for the loader's
    // relocations and for the tp_btf programs.
    let btf = Btf::from_sys_fs().ok();
    let mut loader = EbpfLoader::new();
    loader
        .btf(btf.as_ref())
        .override_global(globals::AGENT_TGID, &agent_tgid, true)
        .override_global(globals::CAPTURE_BYTES, &settings.capture_bytes, true)
        .override_global(globals::WAKEUP_BYTES, &wakeup_bytes, true)
        .override_global(globals::FILTERING, &filtering, true)
        .override_global(globals::LOGGING, &logging, true)
        .override_global(globals::TRACE_CONTEXT, &trace_context, true)
        .map_max_entries(maps::EVENTS, ring_bytes)
        .map_max_entries(maps::SOCKETS, settings.socket_table_size);
    // The tracepoint path's enter state is not needed by the fast one.
    if settings.capture_path == CapturePath::Fast {
        loader.map_max_entries(maps::ACTIVE, 1);
    }
    for name in maps::PROFILE_COUNTS.iter().chain(&maps::PROFILE_STACKS) {
        loader.map_max_entries(name, profile_entries);
    }
    let mut ebpf = loader.load(OBJECT).context("loading the kernel programs")?;
    tracing::info!(
        ring_buffer_bytes = ring_bytes,
        wakeup_bytes,
        cpus,
        profile_map_entries = profile_entries,
        "kernel object loaded"
    );
    let failing = failing_programs();
    let table = attach_table();
    let mut links = Vec::new();
    let mut results = Vec::new();
    let mut fast_error = None;
    let mut dispatcher = None;
    let mut path = settings.capture_path;
    if path != CapturePath::Tracepoints {
        let mut errors = Vec::new();
        for (variant, name) in [(Path::FastBtf, "tp_btf"), (Path::Fast, "raw_tracepoint")] {
            let fast: Vec<_> = table.iter().filter(|a| a.path == variant).collect();
            match attach_fast(&mut ebpf, &fast, btf.as_ref(), &failing) {
                Ok(link) => {
                    links.push(link);
                    results.extend(fast.into_iter().map(|a| AttachResult {
                        attachment: a.clone(),
                        error: None,
                    }));
                    dispatcher = Some(name);
                    break;
                }
                Err(error) => errors.push(format!("{name}: {error:#}")),
            }
        }
        if dispatcher.is_some() {
            path = CapturePath::Fast;
            fast_error = errors.pop();
            if let Some(error) = &fast_error {
                tracing::info!(%error, "fast capture path as a raw tracepoint");
            }
        } else if path == CapturePath::Auto {
            let error = errors.join("; ");
            tracing::warn!(%error, "fast capture path unavailable; using syscall tracepoints");
            fast_error = Some(error);
            path = CapturePath::Tracepoints;
        } else {
            bail!("--capture-path fast: {}", errors.join("; "));
        }
    }
    let wanted = |a: &&Attachment| {
        a.path == Path::Both || (a.path == Path::Tracepoints && path == CapturePath::Tracepoints)
    };
    let tracepoints: Vec<Attachment> = table.iter().filter(wanted).cloned().collect();
    for (attachment, outcome) in attach_tracepoints(&mut ebpf, tracepoints, &failing) {
        let error = match outcome {
            Ok(link) => {
                links.push(Link::Tracepoint(link));
                None
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(program = %attachment.program, %error, "program not attached");
                Some(error)
            }
        };
        results.push(AttachResult { attachment, error });
    }
    if !results
        .iter()
        .any(|r| r.error.is_none() && r.attachment.path != Path::Both)
    {
        bail!("no capture program could be attached; see the warnings above");
    }
    Ok(Loaded {
        ebpf,
        links,
        results,
        path: PathReport {
            path,
            dispatcher,
            fast_error,
        },
    })
}

/// Program names from [`FAIL_ATTACH_ENV`].
fn failing_programs() -> Vec<String> {
    std::env::var(FAIL_ATTACH_ENV)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn injected(program: &str, failing: &[String]) -> anyhow::Result<()> {
    if failing.iter().any(|f| f == program) {
        bail!("{program}: refused ({FAIL_ATTACH_ENV})");
    }
    Ok(())
}

/// Loads every handler into its program array, then loads and attaches the
/// dispatcher. The handlers stay loaded with the object if it fails.
fn attach_fast(
    ebpf: &mut Ebpf,
    fast: &[&Attachment],
    btf: Option<&Btf>,
    failing: &[String],
) -> anyhow::Result<Link> {
    for attachment in fast {
        let Hook::TailCall {
            map,
            index,
            btf: is_btf,
        } = attachment.hook
        else {
            continue;
        };
        injected(&attachment.program, failing)?;
        let program = ebpf
            .program_mut(&attachment.program)
            .with_context(|| format!("program {} not in the object", attachment.program))?;
        let fd = match (is_btf, btf) {
            (true, Some(btf)) => {
                let p: &mut BtfTracePoint = program.try_into()?;
                p.load(SYS_EXIT, btf)
                    .with_context(|| format!("verifier: {}", attachment.program))?;
                p.fd()?.try_clone()?
            }
            (true, None) => bail!("no kernel BTF (/sys/kernel/btf/vmlinux)"),
            (false, _) => {
                let p: &mut RawTracePoint = program.try_into()?;
                p.load()
                    .with_context(|| format!("verifier: {}", attachment.program))?;
                p.fd()?.try_clone()?
            }
        };
        let mut array =
            ProgramArray::try_from(ebpf.map_mut(map).with_context(|| format!("{map} map"))?)?;
        array
            .set(index, &fd, 0)
            .with_context(|| format!("{map}[{index}]"))?;
    }
    let dispatcher = fast
        .iter()
        .find(|a| matches!(a.hook, Hook::BtfTracepoint(_) | Hook::RawTracepoint(_)))
        .context("no dispatcher in the fast path's table")?;
    injected(&dispatcher.program, failing)?;
    let program = ebpf
        .program_mut(&dispatcher.program)
        .with_context(|| format!("program {} not in the object", dispatcher.program))?;
    let verifier = || format!("verifier: {}", dispatcher.program);
    match (&dispatcher.hook, btf) {
        (Hook::BtfTracepoint(target), Some(btf)) => {
            let p: &mut BtfTracePoint = program.try_into()?;
            p.load(target, btf).with_context(verifier)?;
            let id = p
                .attach()
                .with_context(|| format!("attaching tp_btf {target}"))?;
            Ok(Link::Btf(p.take_link(id)?))
        }
        (Hook::RawTracepoint(target), _) => {
            let p: &mut RawTracePoint = program.try_into()?;
            p.load().with_context(verifier)?;
            let id = p
                .attach(target)
                .with_context(|| format!("attaching raw tracepoint {target}"))?;
            Ok(Link::Raw(p.take_link(id)?))
        }
        _ => bail!("no kernel BTF (/sys/kernel/btf/vmlinux)"),
    }
}

/// Attaches classic tracepoints from parallel threads: attaching one waits for
/// an RCU grace period in the kernel (~60 ms each here), and in parallel those
/// waits overlap, so 29 programs take about as long as one.
fn attach_tracepoints(
    ebpf: &mut Ebpf,
    table: Vec<Attachment>,
    failing: &[String],
) -> Vec<(Attachment, anyhow::Result<TracePointLink>)> {
    let mut programs: Vec<(&str, &mut aya::programs::Program)> = ebpf.programs_mut().collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = table
            .into_iter()
            .map(|attachment| {
                let program = programs
                    .iter()
                    .position(|(name, _)| *name == attachment.program)
                    .map(|i| programs.swap_remove(i).1);
                scope.spawn(move || {
                    let result = match program {
                        Some(program) => injected(&attachment.program, failing)
                            .and_then(|()| attach_tracepoint(program, &attachment)),
                        None => Err(anyhow::anyhow!(
                            "program {} not in the object",
                            attachment.program
                        )),
                    };
                    (attachment, result)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}

fn attach_tracepoint(
    program: &mut aya::programs::Program,
    attachment: &Attachment,
) -> anyhow::Result<TracePointLink> {
    let Hook::Tracepoint { category, name } = &attachment.hook else {
        bail!("{} is not a tracepoint program", attachment.program);
    };
    let program: &mut TracePoint = program.try_into()?;
    program.load().context("verifier")?;
    let id = program
        .attach(category, name)
        .with_context(|| format!("attaching to {category}:{name}"))?;
    Ok(program.take_link(id)?)
}

/// Unread bytes that wake the reader: an eighth of the ring, at most 256 KiB, so
/// at high rates the reader is woken long before the ring fills, and at low rates
/// its poll interval picks records up.
pub fn wakeup_bytes(ring_bytes: u32) -> u64 {
    (u64::from(ring_bytes) / 8).min(256 * 1024)
}

/// Detaches every link, in parallel (see [`attach_tracepoints`]).
pub fn detach_all<L: Send>(links: Vec<L>) {
    std::thread::scope(|scope| {
        for link in links {
            scope.spawn(move || drop(link));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_both_paths_for_every_syscall() {
        let table = attach_table();
        assert_eq!(table.len(), 2 + 4 * Syscall::ALL.len() + 2);
        let has = |program: &str, path: Path| {
            table.iter().any(|a| a.program == program && a.path == path)
        };
        assert!(has("sys_exit", Path::Fast));
        assert!(has("sys_exit_btf", Path::FastBtf));
        assert!(has("exit_recvmmsg", Path::Fast));
        assert!(has("btf_exit_recvmmsg", Path::FastBtf));
        assert!(has("sys_enter_recvmmsg", Path::Tracepoints));
        assert!(has("sys_exit_accept4", Path::Tracepoints));
        assert!(has("inet_sock_set_state", Path::Both));
        assert!(has("capture_exec", Path::Both));
        // Handlers sit at their syscall's code, which the dispatcher indexes by.
        for s in Syscall::ALL {
            for (prefix, btf) in [("exit_", false), ("btf_exit_", true)] {
                assert!(
                    table
                        .iter()
                        .any(|a| a.program == format!("{prefix}{}", s.name())
                            && matches!(a.hook, Hook::TailCall { index, btf: b, .. }
                        if index == s as u32 && b == btf))
                );
            }
        }
    }

    #[test]
    fn syscall_numbers_are_the_x86_64_abi() {
        for (s, nr) in [
            (Syscall::Read, libc::SYS_read),
            (Syscall::Write, libc::SYS_write),
            (Syscall::Close, libc::SYS_close),
            (Syscall::Readv, libc::SYS_readv),
            (Syscall::Writev, libc::SYS_writev),
            (Syscall::Connect, libc::SYS_connect),
            (Syscall::Accept, libc::SYS_accept),
            (Syscall::Sendto, libc::SYS_sendto),
            (Syscall::Recvfrom, libc::SYS_recvfrom),
            (Syscall::Sendmsg, libc::SYS_sendmsg),
            (Syscall::Recvmsg, libc::SYS_recvmsg),
            (Syscall::Accept4, libc::SYS_accept4),
            (Syscall::Recvmmsg, libc::SYS_recvmmsg),
            (Syscall::Sendmmsg, libc::SYS_sendmmsg),
        ] {
            assert_eq!(s.x86_64_nr(), nr as u64, "{s:?}");
            assert_eq!(Syscall::from_x86_64_nr(nr as u64), Some(s));
        }
        assert_eq!(Syscall::from_x86_64_nr(libc::SYS_getpid as u64), None);
    }

    #[test]
    fn the_report_says_which_path_and_why() {
        let fast = PathReport {
            path: CapturePath::Fast,
            dispatcher: Some("tp_btf"),
            fast_error: None,
        };
        assert!(fast.to_string().starts_with("fast: tp_btf sys_exit"));
        let raw = PathReport {
            path: CapturePath::Fast,
            dispatcher: Some("raw_tracepoint"),
            fast_error: Some("sys_exit_btf: refused".into()),
        };
        assert!(
            raw.to_string()
                .contains("(tp_btf unavailable: sys_exit_btf: refused)")
        );
        let fallback = PathReport {
            path: CapturePath::Tracepoints,
            dispatcher: None,
            fast_error: Some("sys_exit: refused".into()),
        };
        assert!(
            fallback
                .to_string()
                .contains("fast path unavailable: sys_exit: refused")
        );
    }
}
