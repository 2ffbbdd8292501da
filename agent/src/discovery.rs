//! Who a process is, as an OpenTelemetry resource: `service.name` (its own
//! `OTEL_SERVICE_NAME`, else its executable name), process and host attributes, and
//! the container it runs in.
//!
//! Privacy: from `/proc/PID/environ` only `OTEL_SERVICE_NAME` (and
//! `OTEL_RESOURCE_ATTRIBUTES`' `service.name`) is read out; the command line and
//! every other variable stay on the host (they hold secrets).
//!
//! Resources are cached per (pid, process start time), so a recycled pid is a new
//! process, and a process that exits is still described for events captured
//! before it did.

use std::{num::NonZeroUsize, sync::Arc};

use lru::LruCache;
use serde::Serialize;

/// Resource attributes of one traced process (semantic conventions names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Resource {
    pub service_name: String,
    /// Stable per process instance: `<host>:<pid>:<start time>`.
    pub service_instance_id: String,
    pub pid: u32,
    pub executable_name: String,
    pub executable_path: String,
    pub container_id: Option<String>,
    /// `k8s.pod.uid`, from the kubelet's cgroup of the process.
    pub pod_uid: Option<String>,
    pub host_name: String,
    pub host_arch: &'static str,
}

impl Resource {
    /// `(key, value)` pairs in OpenTelemetry naming.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut attrs = vec![
            ("service.name", self.service_name.clone()),
            ("service.instance.id", self.service_instance_id.clone()),
            ("process.pid", self.pid.to_string()),
            ("process.executable.name", self.executable_name.clone()),
            ("process.executable.path", self.executable_path.clone()),
            ("host.name", self.host_name.clone()),
            ("host.arch", self.host_arch.to_string()),
            ("os.type", "linux".to_string()),
            ("telemetry.distro.name", "agent".to_string()),
        ];
        if let Some(id) = &self.container_id {
            attrs.push(("container.id", id.clone()));
        }
        if let Some(uid) = &self.pod_uid {
            attrs.push(("k8s.pod.uid", uid.clone()));
        }
        attrs
    }
}

/// OpenTelemetry's `host.arch` values.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "x86",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        other => other,
    }
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The service name a process gives itself in its environment, if any.
pub fn service_name_from_environ(environ: &[u8]) -> Option<String> {
    let mut from_attributes = None;
    for var in environ.split(|&b| b == 0) {
        if let Some(v) = var.strip_prefix(b"OTEL_SERVICE_NAME=") {
            let name = String::from_utf8_lossy(v).trim().to_string();
            if !name.is_empty() {
                return Some(name);
            }
        } else if let Some(v) = var.strip_prefix(b"OTEL_RESOURCE_ATTRIBUTES=") {
            from_attributes = String::from_utf8_lossy(v).split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k.trim() == "service.name" && !v.trim().is_empty()).then(|| v.trim().to_string())
            });
        }
    }
    from_attributes
}

/// The container id in a `/proc/PID/cgroup` file: the 64-hex-digit id that docker,
/// containerd, CRI-O and podman put in the cgroup path.
pub fn container_id_from_cgroup(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let path = line.rsplit(':').next()?;
        path.split('/').rev().find_map(|segment| {
            let segment = segment.trim_end_matches(".scope");
            let id = segment.rsplit(['-', ':']).next()?;
            (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
        })
    })
}

/// `k8s.pod.uid` from `/proc/PID/cgroup`: the kubelet puts every container of
/// a pod under `pod<uid>` (cgroupfs driver: `/kubepods/burstable/pod<uid>/…`)
/// or `kubepods-<qos>-pod<uid>.slice` with `_` for `-` (systemd driver), on
/// cgroup v1 and v2 alike.
pub fn pod_uid_from_cgroup(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        // hierarchy-ID:controllers:path (the path may itself hold ':').
        let path = line.splitn(3, ':').nth(2)?;
        if !path.contains("kubepods") {
            return None;
        }
        path.split('/').find_map(|segment| {
            let segment = segment.strip_suffix(".slice").unwrap_or(segment);
            let (_, uid) = segment.rsplit_once("pod")?;
            let uid = uid.replace('_', "-");
            is_uuid(&uid).then_some(uid)
        })
    })
}

/// 8-4-4-4-12 hex digits.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Start time of a process in clock ticks since boot (field 22 of `stat`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Describes processes, with a bounded cache.
pub struct Discovery {
    cache: LruCache<(u32, u64), Arc<Resource>>,
    host_name: String,
}

const CACHE: usize = 4096;

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            cache: LruCache::new(NonZeroUsize::new(CACHE).unwrap_or(NonZeroUsize::MIN)),
            host_name: host_name(),
        }
    }
}

impl Discovery {
    /// Describes `pid` anew, replacing what was cached: after an `exec` the
    /// process (same pid, same start time) runs another program.
    pub fn refresh(&mut self, pid: u32, comm: &str) -> Arc<Resource> {
        self.cache.pop(&(pid, start_time(pid).unwrap_or(0)));
        self.resource(pid, comm)
    }

    /// The resource of `pid`; `comm` names it if it has already exited.
    pub fn resource(&mut self, pid: u32, comm: &str) -> Arc<Resource> {
        let started = start_time(pid).unwrap_or(0);
        if let Some(r) = self.cache.get(&(pid, started)) {
            return Arc::clone(r);
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        let executable_path = exe
            .as_ref()
            .map(|p| {
                p.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            })
            .unwrap_or_default();
        let executable_name = exe.as_ref().and_then(|p| p.file_name()).map_or_else(
            || comm.to_string(),
            |n| {
                n.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            },
        );
        let service_name = std::fs::read(format!("/proc/{pid}/environ"))
            .ok()
            .and_then(|env| service_name_from_environ(&env))
            .unwrap_or_else(|| executable_name.clone());
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let container_id = container_id_from_cgroup(&cgroup);
        let pod_uid = pod_uid_from_cgroup(&cgroup);
        let resource = Arc::new(Resource {
            service_name,
            service_instance_id: format!("{}:{pid}:{started}", self.host_name),
            pid,
            executable_name,
            executable_path,
            container_id,
            pod_uid,
            host_name: self.host_name.clone(),
            host_arch: host_arch(),
        });
        self.cache.put((pid, started), Arc::clone(&resource));
        resource
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_name_comes_only_from_otel_variables() {
        let env = b"PATH=/bin\0API_TOKEN=secret\0OTEL_SERVICE_NAME=checkout\0";
        assert_eq!(service_name_from_environ(env).as_deref(), Some("checkout"));
        let env = b"OTEL_RESOURCE_ATTRIBUTES=deployment.environment=prod,service.name=cart\0";
        assert_eq!(service_name_from_environ(env).as_deref(), Some("cart"));
        assert_eq!(service_name_from_environ(b"HOME=/root\0"), None);
        assert_eq!(service_name_from_environ(b"OTEL_SERVICE_NAME=\0"), None);
    }

    #[test]
    fn container_ids_from_common_cgroup_layouts() {
        let id = "4f1e3c1b2a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";
        for cgroup in [
            format!("0::/system.slice/docker-{id}.scope\n"),
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{id}.scope"
            ),
            format!("12:memory:/docker/{id}\n0::/"),
            format!("0::/kubepods/besteffort/pod5678/{id}"),
            format!("0::/machine.slice/libpod-{id}.scope/container"),
        ] {
            assert_eq!(
                container_id_from_cgroup(&cgroup).as_deref(),
                Some(id),
                "{cgroup}"
            );
        }
        assert_eq!(
            container_id_from_cgroup("0::/user.slice/user-0.slice/session-1.scope"),
            None
        );
    }

    #[test]
    fn pod_uids_from_kubelet_cgroups() {
        let uid = "0f2d6a1e-3b4c-4d5e-8f90-a1b2c3d4e5f6";
        let systemd = uid.replace('-', "_");
        let id = "4f1e3c1b2a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";
        for cgroup in [
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{systemd}.slice/cri-containerd-{id}.scope"
            ),
            format!("0::/kubepods.slice/kubepods-pod{systemd}.slice/crio-{id}.scope"),
            format!("0::/kubepods/besteffort/pod{uid}/{id}"),
            format!(
                "12:memory:/kubepods/pod{uid}/{id}
11:cpu:/kubepods/pod{uid}/{id}
0::/"
            ),
            format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{systemd}.slice/docker-{id}.scope"
            ),
        ] {
            assert_eq!(
                pod_uid_from_cgroup(&cgroup).as_deref(),
                Some(uid),
                "{cgroup}"
            );
        }
        for cgroup in [
            "0::/user.slice/user-0.slice/session-1.scope".to_string(),
            format!("0::/system.slice/docker-{id}.scope"),
            // Not a uid, and not under kubepods.
            "0::/kubepods/burstable/pod1234/abc".to_string(),
            format!("0::/machine.slice/mypod{uid}.scope"),
        ] {
            assert_eq!(pod_uid_from_cgroup(&cgroup), None, "{cgroup}");
        }
    }

    #[test]
    fn describes_a_live_process_without_its_secrets() {
        let mut d = Discovery::default();
        let me = std::process::id();
        let r = d.resource(me, "x");
        assert_eq!(r.pid, me);
        assert!(!r.executable_name.is_empty());
        assert!(r.executable_path.ends_with(&r.executable_name));
        assert!(r.service_instance_id.contains(&me.to_string()));
        assert!(Arc::ptr_eq(&r, &d.resource(me, "x")), "cached");
        // A process that no longer exists falls back to its comm.
        let gone = d.resource(u32::MAX - 1, "ghost");
        assert_eq!(gone.service_name, "ghost");
    }
}
