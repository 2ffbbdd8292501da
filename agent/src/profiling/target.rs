//! Which service a sampled process belongs to, as profile labels.

use std::sync::Arc;

use profiles::Target;

use crate::discovery::Discovery;

/// `PF_KTHREAD` in `/proc/PID/stat`'s flags field.
const PF_KTHREAD: u64 = 0x0020_0000;

/// The target of `tgid`: kernel threads are the `kernel` service; processes
/// are named as for spans (`OTEL_SERVICE_NAME`, else the executable). Only
/// attributes shared by a service's processes become labels; the pid is a
/// sample label, so one service stays one series.
pub fn of(discovery: &mut Discovery, tgid: u32, comm: &str) -> Arc<Target> {
    describe(discovery, tgid, comm, false)
}

/// As [`of`], for a process just announced by the kernel: its first sample
/// since it started or exec'd, so a cached description may be of the program
/// it ran before `exec`.
pub fn announced(discovery: &mut Discovery, tgid: u32) -> Arc<Target> {
    describe(discovery, tgid, "", true)
}

fn describe(discovery: &mut Discovery, tgid: u32, comm: &str, fresh: bool) -> Arc<Target> {
    if is_kernel_thread(tgid) {
        return Arc::new(Target {
            service_name: "kernel".into(),
            attributes: vec![("host.name".into(), crate::discovery::host_name())],
        });
    }
    let resource = if fresh {
        discovery.refresh(tgid, comm)
    } else {
        discovery.resource(tgid, comm)
    };
    let mut attributes = vec![
        ("host.name".to_string(), resource.host_name.clone()),
        (
            "process.executable.name".to_string(),
            resource.executable_name.clone(),
        ),
    ];
    if let Some(id) = &resource.container_id {
        attributes.push(("container.id".into(), id.clone()));
    }
    // The span's service, exactly (Grafana finds a span's profiles by
    // `service_name`), and the pod's names, as on spans and metrics.
    if let Some(ns) = &resource.service_namespace {
        attributes.push(("service.namespace".into(), ns.clone()));
    }
    if let Some(uid) = &resource.pod_uid {
        attributes.push(("k8s.pod.uid".into(), uid.clone()));
    }
    attributes.extend(
        resource
            .pod_attributes()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Arc::new(Target {
        service_name: resource.service_name.clone(),
        attributes,
    })
}

fn is_kernel_thread(tgid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{tgid}/stat")) else {
        return false;
    };
    // Fields after the command name (which may hold spaces): state is the
    // first, flags the seventh.
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().nth(6))
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_threads_are_the_kernel_service() {
        // kthreadd is pid 2 on every Linux system with a pid namespace of its own... or not
        // visible at all inside a container; only assert when it is visible.
        if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
            assert!(is_kernel_thread(2));
        }
        assert!(!is_kernel_thread(std::process::id()));
        let mut d = Discovery::default();
        let me = of(&mut d, std::process::id(), "x");
        assert_ne!(me.service_name, "kernel");
        assert!(me.attributes.iter().any(|(k, _)| k == "host.name"));
    }
}
