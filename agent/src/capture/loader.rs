//! Loading the kernel object and attaching its programs.
//!
//! The attach table is derived from [`Syscall::ALL`]: every traced syscall has an
//! enter and an exit program named after its tracepoint. A program that fails to
//! load or attach is reported and the others keep running; only when nothing at all
//! attaches does the agent refuse to start.

use agent_common::{Syscall, globals, maps};
use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{TracePoint, trace_point::TracePointLink},
};

use crate::config::Settings;

/// The kernel object built by `build.rs` (or an empty file with `AYA_BUILD_SKIP`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent"));

/// One tracepoint program and where it attaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub program: String,
    pub category: &'static str,
    pub name: String,
}

/// The outcome of attaching one program.
#[derive(Debug)]
pub struct AttachResult {
    pub attachment: Attachment,
    pub error: Option<String>,
}

/// Every program of the capture path: enter and exit for each syscall, and the
/// TCP state tracepoint that gives connections their local address.
pub fn attach_table() -> Vec<Attachment> {
    let syscalls = Syscall::ALL
        .iter()
        .flat_map(|s| ["sys_enter_", "sys_exit_"].map(|prefix| format!("{prefix}{}", s.name())))
        .map(|name| Attachment {
            program: name.clone(),
            category: "syscalls",
            name,
        });
    let tcp = Attachment {
        program: "inet_sock_set_state".into(),
        category: "sock",
        name: "inet_sock_set_state".into(),
    };
    syscalls.chain(std::iter::once(tcp)).collect()
}

/// Loads the object with the agent's globals and map sizes, then attaches.
///
/// Attaching a syscall tracepoint waits for an RCU grace period in the kernel
/// (~60 ms each here), so programs are attached from parallel threads, where
/// those waits overlap: 28 programs take about as long as one. The links are
/// returned owned, so that [`detach_all`] can release them in parallel too.
pub fn load(
    settings: &Settings,
    agent_tgid: u32,
) -> anyhow::Result<(Ebpf, Vec<TracePointLink>, Vec<AttachResult>)> {
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
    let mut loader = EbpfLoader::new();
    loader
        .override_global(globals::AGENT_TGID, &agent_tgid, true)
        .override_global(globals::CAPTURE_BYTES, &settings.capture_bytes, true)
        .override_global(globals::WAKEUP_BYTES, &wakeup_bytes, true)
        .map_max_entries(maps::EVENTS, ring_bytes)
        .map_max_entries(maps::SOCKETS, settings.socket_table_size);
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

    let table = attach_table();
    let mut programs: Vec<(&str, &mut aya::programs::Program)> = ebpf.programs_mut().collect();
    let outcomes: Vec<(Attachment, anyhow::Result<TracePointLink>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = table
            .into_iter()
            .map(|attachment| {
                let program = programs
                    .iter()
                    .position(|(name, _)| *name == attachment.program)
                    .map(|i| programs.swap_remove(i).1);
                scope.spawn(move || {
                    let result = match program {
                        Some(program) => attach(program, &attachment),
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
    });

    let mut links = Vec::new();
    let mut results = Vec::new();
    for (attachment, outcome) in outcomes {
        let error = match outcome {
            Ok(link) => {
                links.push(link);
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
    if links.is_empty() {
        bail!("no capture program could be attached; see the warnings above");
    }
    Ok((ebpf, links, results))
}

fn attach(
    program: &mut aya::programs::Program,
    attachment: &Attachment,
) -> anyhow::Result<TracePointLink> {
    let program: &mut TracePoint = program.try_into()?;
    program.load().context("verifier")?;
    let id = program
        .attach(attachment.category, &attachment.name)
        .with_context(|| format!("attaching to {}:{}", attachment.category, attachment.name))?;
    Ok(program.take_link(id)?)
}

/// Unread bytes that wake the reader: an eighth of the ring, at most 256 KiB, so
/// at high rates the reader is woken long before the ring fills, and at low rates
/// its poll interval picks records up.
pub fn wakeup_bytes(ring_bytes: u32) -> u64 {
    (u64::from(ring_bytes) / 8).min(256 * 1024)
}

/// Detaches every link, in parallel (see [`load`]).
pub fn detach_all(links: Vec<TracePointLink>) {
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
    fn table_has_enter_and_exit_for_every_syscall() {
        let table = attach_table();
        assert_eq!(table.len(), 2 * Syscall::ALL.len() + 1);
        assert!(table.iter().any(|a| a.name == "sys_enter_recvmmsg"));
        assert!(table.iter().any(|a| a.name == "sys_exit_accept4"));
        assert!(table.iter().all(|a| a.program == a.name));
        assert!(
            table
                .iter()
                .any(|a| a.category == "sock" && a.name == "inet_sock_set_state")
        );
    }
}
