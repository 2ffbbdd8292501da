//! Container and pod ids from a `/proc/PID/cgroup` file.
//!
//! Runtimes and the kubelet name cgroups after what runs in them; the forms
//! seen in the wild (docker, podman, containerd, CRI-O; systemd and cgroupfs
//! drivers; cgroup v1 and v2; nested clusters such as kind) are the fixtures
//! below. When the agent runs in a private cgroup namespace, other containers'
//! paths start with `/..` and may lack the `kubepods` prefix, so ids are
//! recognised by their own shape, not by where they sit.

/// The ids one process's cgroups carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupIds {
    /// The innermost 64-hex-digit container id (kind nests a node's
    /// containers inside the node's own container).
    pub container_id: Option<String>,
    /// `k8s.pod.uid`, from the kubelet's `pod<uid>` cgroup.
    pub pod_uid: Option<String>,
}

impl CgroupIds {
    pub fn parse(cgroup: &str) -> CgroupIds {
        CgroupIds {
            container_id: container_id_from_cgroup(cgroup),
            pod_uid: pod_uid_from_cgroup(cgroup),
        }
    }
}

/// `hierarchy-ID:controllers:path` lines; the path may itself hold ':'.
fn paths(cgroup: &str) -> impl Iterator<Item = &str> {
    cgroup.lines().filter_map(|line| line.splitn(3, ':').nth(2))
}

/// The container id: the 64-hex-digit id that docker, containerd, CRI-O and
/// podman put in the cgroup path (`docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope`, `/docker/<id>`, `/kubepods/…/<id>`,
/// `…:cri-containerd:<id>`). CRI-O's `crio-conmon-<id>` is its monitor
/// process, not the container.
pub fn container_id_from_cgroup(cgroup: &str) -> Option<String> {
    paths(cgroup).find_map(|path| {
        path.split('/').rev().find_map(|segment| {
            let segment = segment.trim_end_matches(".scope");
            if segment.starts_with("crio-conmon-") {
                return None;
            }
            let id = segment.rsplit(['-', ':']).next()?;
            (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
        })
    })
}

/// `k8s.pod.uid`: the kubelet puts every container of a pod under
/// `pod<uid>` (cgroupfs driver: `/kubepods/burstable/pod<uid>/…`) or
/// `kubepods-<qos>-pod<uid_>.slice` with `_` for `-` (systemd driver).
pub fn pod_uid_from_cgroup(cgroup: &str) -> Option<String> {
    paths(cgroup).find_map(|path| {
        path.split('/').find_map(|segment| {
            let uid = match segment.strip_suffix(".slice") {
                Some(slice) if slice.starts_with("kubepods") => slice.rsplit_once("-pod")?.1,
                Some(_) => return None,
                None => segment.strip_prefix("pod")?,
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1e3c1b2a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";
    const UID: &str = "0f2d6a1e-3b4c-4d5e-8f90-a1b2c3d4e5f6";

    #[test]
    fn container_ids_from_common_cgroup_layouts() {
        let outer = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for cgroup in [
            format!("0::/system.slice/docker-{ID}.scope\n"),
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{ID}.scope"
            ),
            format!("12:memory:/docker/{ID}\n0::/"),
            format!("0::/kubepods/besteffort/pod5678/{ID}"),
            format!("0::/machine.slice/libpod-{ID}.scope/container"),
            format!(
                "0::/system.slice/containerd.service/kubepods-burstable-pod1234.slice:cri-containerd:{ID}"
            ),
            // kind: the node is itself a container; the innermost id is the pod's.
            format!(
                "0::/docker/{outer}/kubelet.slice/kubelet-kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope"
            ),
            // Seen from a private cgroup namespace.
            format!("0::/../../kubepods-besteffort-pod1.slice/crio-{ID}.scope"),
        ] {
            assert_eq!(
                container_id_from_cgroup(&cgroup).as_deref(),
                Some(ID),
                "{cgroup}"
            );
        }
        for cgroup in [
            "0::/user.slice/user-0.slice/session-1.scope".to_string(),
            format!("0::/kubepods.slice/kubepods-pod1.slice/crio-conmon-{ID}.scope"),
        ] {
            assert_eq!(container_id_from_cgroup(&cgroup), None, "{cgroup}");
        }
    }

    #[test]
    fn pod_uids_from_kubelet_cgroups() {
        let systemd = UID.replace('-', "_");
        for cgroup in [
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{systemd}.slice/cri-containerd-{ID}.scope"
            ),
            // Guaranteed QoS has no QoS level.
            format!("0::/kubepods.slice/kubepods-pod{systemd}.slice/crio-{ID}.scope"),
            format!("0::/kubepods/besteffort/pod{UID}/{ID}"),
            format!("12:memory:/kubepods/pod{UID}/{ID}\n11:cpu:/kubepods/pod{UID}/{ID}\n0::/"),
            format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{systemd}.slice/docker-{ID}.scope"
            ),
            // A private cgroup namespace inside another pod of the same QoS.
            format!("0::/../../pod{UID}/{ID}"),
            format!("0::/../kubepods-besteffort-pod{systemd}.slice/cri-containerd-{ID}.scope"),
        ] {
            assert_eq!(
                pod_uid_from_cgroup(&cgroup).as_deref(),
                Some(UID),
                "{cgroup}"
            );
        }
        for cgroup in [
            "0::/user.slice/user-0.slice/session-1.scope".to_string(),
            format!("0::/system.slice/docker-{ID}.scope"),
            // Not a uid.
            "0::/kubepods/burstable/pod1234/abc".to_string(),
            format!("0::/machine.slice/mypod{UID}.scope"),
            format!("0::/machine.slice/other-pod{systemd}.slice"),
        ] {
            assert_eq!(pod_uid_from_cgroup(&cgroup), None, "{cgroup}");
        }
    }
}
