//! A container of a pod, as far as a process's cgroup tells: a cgroup v2
//! directory shaped like the kubelet's (systemd driver,
//! `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope`),
//! and real processes moved into it before they `exec` their program. No
//! container runtime runs here; the agent reads the same `/proc/PID/cgroup`
//! lines it would read on a node.

use std::{path::PathBuf, process::Command};

/// Removed on drop (directories leaf first), after the processes in it are
/// gone: drop those first.
pub struct FakeContainer {
    /// The scope directory the processes run in.
    scope: PathBuf,
    /// Directories this container created, outermost first.
    created: Vec<PathBuf>,
}

/// The cgroup v2 mount point, from `/proc/self/mountinfo` (`/sys/fs/cgroup`
/// on unified hosts, `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?;
        (right.split(' ').next() == Some("cgroup2")).then(|| PathBuf::from(mount_point))
    })
}

impl FakeContainer {
    /// Creates the cgroup of container `container_id` (64 hex digits) of pod
    /// `pod_uid`; `Err` says why not (no cgroup v2, not root).
    pub fn create(pod_uid: &str, container_id: &str) -> anyhow::Result<FakeContainer> {
        let root = cgroup2_mount().ok_or_else(|| anyhow::anyhow!("no cgroup v2 mount"))?;
        let slice = format!("kubepods-burstable-pod{}.slice", pod_uid.replace('-', "_"));
        let mut dir = root.clone();
        let mut created = Vec::new();
        for part in [
            "kubepods.slice",
            "kubepods-burstable.slice",
            &slice,
            &format!("cri-containerd-{container_id}.scope"),
        ] {
            dir = dir.join(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .map_err(|e| anyhow::anyhow!("mkdir {}: {e}", dir.display()))?;
                created.push(dir.clone());
            }
        }
        Ok(FakeContainer {
            scope: dir,
            created,
        })
    }

    /// The command, started inside the container: a shell moves itself into
    /// the cgroup, then `exec`s `program` (same pid), so every socket of the
    /// program is opened from inside.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
            .arg(&self.scope)
            .arg(program)
            .args(args);
        cmd
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        // A cgroup is removable once empty; rmdir (not remove_dir_all: its
        // files are the kernel's). The scope empties as its killed processes
        // are reaped; the shared parents stay while another test uses them.
        for dir in self.created.iter().rev() {
            let tries = if *dir == self.scope { 100 } else { 1 };
            for _ in 0..tries {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}
