//! Who a process is, as an OpenTelemetry resource: `service.name` (its own
//! `OTEL_SERVICE_NAME`, else its pod's, else its executable name), process and
//! host attributes, the container it runs in and, in Kubernetes, its pod.
//!
//! Privacy: from `/proc/PID/environ` only `OTEL_SERVICE_NAME` (and
//! `OTEL_RESOURCE_ATTRIBUTES`' `service.name`) is read out; the command line and
//! every other variable stay on the host (they hold secrets).
//!
//! Resources are cached per (pid, process start time), so a recycled pid is a new
//! process, and a process that exits is still described for events captured
//! before it did. A process whose pod the agent does not know yet (the pod
//! watch lags the container start) is described again once the pod store
//! changes: see [`Discovery::renew`].

pub mod cgroup;
pub mod k8s;

use std::{num::NonZeroUsize, sync::Arc};

use lru::LruCache;
use serde::Serialize;

use self::{
    cgroup::CgroupIds,
    k8s::{K8s, Lookup, PodIdentity},
};

/// Resource attributes of one traced process (semantic conventions names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Resource {
    pub service_name: String,
    /// `service.namespace`: in Kubernetes, the pod's namespace.
    pub service_namespace: Option<String>,
    /// Stable per process instance: `<host>:<pid>:<start time>`, or in
    /// Kubernetes `<namespace>.<pod>.<container>`.
    pub service_instance_id: String,
    pub pid: u32,
    pub executable_name: String,
    pub executable_path: String,
    pub container_id: Option<String>,
    /// `k8s.pod.uid`, from the kubelet's cgroup of the process.
    pub pod_uid: Option<String>,
    /// The pod, from the API server.
    pub k8s: Option<PodIdentity>,
    pub host_name: String,
    pub host_arch: &'static str,
    /// What the process says about itself, kept to describe it again.
    #[serde(skip)]
    pub(crate) own: Own,
}

/// The parts of a resource read from the process itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Own {
    /// `OTEL_SERVICE_NAME` from its environment.
    service_name: Option<String>,
    /// `<host>:<pid>:<start time>`.
    instance_id: String,
    /// The pod store's generation when the process's pod (or container) was
    /// not in it; `None` once complete, or outside Kubernetes.
    waiting_since: Option<u64>,
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
        if let Some(ns) = &self.service_namespace {
            attrs.push(("service.namespace", ns.clone()));
        }
        if let Some(id) = &self.container_id {
            attrs.push(("container.id", id.clone()));
        }
        if let Some(uid) = &self.pod_uid {
            attrs.push(("k8s.pod.uid", uid.clone()));
        }
        attrs
    }

    /// Attributes from the pod (annotations' keys are the user's, hence not
    /// `&'static`).
    pub fn pod_attributes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.k8s.iter().flat_map(PodIdentity::attributes)
    }

    /// The resource's labels on every metric series, by name: `service.name`,
    /// and in Kubernetes `service.namespace` and the pod's
    /// ([`PodIdentity::metric_labels`]). Borrowed: recorded per request.
    pub fn metric_labels(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once(("service.name", self.service_name.as_str()))
            .chain(
                self.service_namespace
                    .as_deref()
                    .map(|ns| ("service.namespace", ns)),
            )
            .chain(self.k8s.iter().flat_map(PodIdentity::metric_labels))
    }

    /// A metric label that comes from the resource (OTLP carries those on the
    /// resource, not on each data point).
    pub fn is_resource_label(name: &str) -> bool {
        name.starts_with("service.") || name.starts_with("k8s.")
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
    k8s: Option<Arc<K8s>>,
}

const CACHE: usize = 4096;

impl Default for Discovery {
    fn default() -> Self {
        Discovery::new(None)
    }
}

impl Discovery {
    pub fn new(k8s: Option<Arc<K8s>>) -> Discovery {
        Discovery {
            cache: LruCache::new(NonZeroUsize::new(CACHE).unwrap_or(NonZeroUsize::MIN)),
            host_name: host_name(),
            k8s,
        }
    }

    /// Describes `pid` anew, replacing what was cached: after an `exec` the
    /// process (same pid, same start time) runs another program.
    pub fn refresh(&mut self, pid: u32, comm: &str) -> Arc<Resource> {
        self.cache.pop(&(pid, start_time(pid).unwrap_or(0)));
        self.resource(pid, comm)
    }

    /// The resource of `pid`; `comm` names it if it has already exited.
    pub fn resource(&mut self, pid: u32, comm: &str) -> Arc<Resource> {
        let started = start_time(pid).unwrap_or(0);
        if let Some(r) = self.cache.get_mut(&(pid, started)) {
            if let Some(renewed) = renewed(self.k8s.as_deref(), r) {
                *r = renewed;
            }
            return Arc::clone(r);
        }
        let resource = Arc::new(self.describe(pid, started, comm));
        self.cache.put((pid, started), Arc::clone(&resource));
        resource
    }

    /// Replaces `resource` with a newer description when it was waiting for
    /// its pod and the pod store has changed since: a connection opened before
    /// the pod was known gets the pod's names on its next request. One atomic
    /// load when nothing is pending.
    pub fn renew(&mut self, resource: &mut Arc<Resource>) {
        if resource.own.waiting_since.is_some()
            && let Some(renewed) = renewed(self.k8s.as_deref(), resource)
        {
            *resource = renewed;
        }
    }

    fn describe(&self, pid: u32, started: u64, comm: &str) -> Resource {
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
        let own_name = std::fs::read(format!("/proc/{pid}/environ"))
            .ok()
            .and_then(|env| service_name_from_environ(&env));
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let ids = CgroupIds::parse(&cgroup);
        let instance_id = format!("{}:{pid}:{started}", self.host_name);
        let base = Resource {
            service_name: own_name.clone().unwrap_or_else(|| executable_name.clone()),
            service_namespace: None,
            service_instance_id: instance_id.clone(),
            pid,
            executable_name,
            executable_path,
            container_id: ids.container_id,
            pod_uid: ids.pod_uid,
            k8s: None,
            host_name: self.host_name.clone(),
            host_arch: host_arch(),
            own: Own {
                service_name: own_name,
                instance_id,
                waiting_since: None,
            },
        };
        match &self.k8s {
            Some(k8s) => with_pod(k8s, base),
            None => base,
        }
    }
}

/// A newer `resource` if it waits for its pod and the store changed.
fn renewed(k8s: Option<&K8s>, resource: &Resource) -> Option<Arc<Resource>> {
    let (k8s, since) = (k8s?, resource.own.waiting_since?);
    (k8s.store.generation() != since).then(|| Arc::new(with_pod(k8s, resource.clone())))
}

/// `resource` with what the pod store knows of its pod: `k8s.*`, and
/// `service.*` per [`K8s::service`] below the process's own
/// `OTEL_SERVICE_NAME`.
fn with_pod(k8s: &K8s, mut resource: Resource) -> Resource {
    let generation = k8s.store.generation();
    let ids = CgroupIds {
        container_id: resource.container_id.clone(),
        pod_uid: resource.pod_uid.clone(),
    };
    resource.own.waiting_since = None;
    match k8s.lookup(&ids) {
        Lookup::NotInPod => {}
        Lookup::Pending => resource.own.waiting_since = Some(generation),
        Lookup::Found { pod, container } => {
            // A pod's sandbox (`pause`) is no container of its spec: it never
            // gets a container name, so nothing to wait for.
            let sandbox = container.is_none() && resource.executable_name == "pause";
            let service = k8s.service(&pod, container.as_deref());
            if let Some(own) = &resource.own.service_name {
                resource.service_name = own.clone();
            } else {
                resource.service_name = service.name;
            }
            resource.service_namespace = Some(service.namespace);
            match service.instance_id {
                Some(id) => resource.service_instance_id = id,
                None => {
                    resource.service_instance_id = resource.own.instance_id.clone();
                    resource.own.waiting_since = (!sandbox).then_some(generation);
                }
            }
            resource.pod_uid = Some(pod.uid.clone());
            resource.k8s = Some(k8s.identity(&pod, container.as_deref()));
        }
    }
    resource
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
    fn a_process_waiting_for_its_pod_is_renewed_once_the_pod_arrives() {
        use k8s::{PodMeta, PodStore, pod::tests as fixture};
        let k8s = K8s {
            store: Arc::new(PodStore::new(8, Arc::default())),
            cluster_name: None,
            well_known_labels: false,
        };
        let base = |own_name: Option<&str>| Resource {
            service_name: own_name.unwrap_or("nginx").into(),
            service_instance_id: "h:7:1".into(),
            executable_name: "nginx".into(),
            container_id: Some(fixture::ID.into()),
            pod_uid: Some(fixture::UID.into()),
            own: Own {
                service_name: own_name.map(str::to_string),
                instance_id: "h:7:1".into(),
                waiting_since: None,
            },
            ..Resource::default()
        };
        let early = Arc::new(with_pod(&k8s, base(None)));
        assert_eq!(early.service_name, "nginx");
        assert!(early.k8s.is_none());
        assert!(renewed(Some(&k8s), &early).is_none(), "nothing changed");

        k8s.store
            .apply(PodMeta::from_pod(&fixture::pod()).expect("complete pod"));
        let mut resource = Arc::clone(&early);
        let mut discovery = Discovery::new(Some(Arc::new(k8s)));
        discovery.renew(&mut resource);
        assert_eq!(resource.service_name, "web");
        assert_eq!(resource.service_namespace.as_deref(), Some("shop"));
        assert_eq!(
            resource.service_instance_id,
            "shop.web-7d4b9c6f5d-x2x9z.app"
        );
        let pod = resource.k8s.as_ref().expect("pod identity");
        assert_eq!(pod.container_name.as_deref(), Some("app"));
        let labels: Vec<_> = resource.metric_labels().collect();
        assert!(labels.contains(&("service.namespace", "shop")));
        assert!(labels.contains(&("k8s.deployment.name", "web")));
        // Complete: no more lookups.
        assert_eq!(resource.own.waiting_since, None);

        // The process's own OTEL_SERVICE_NAME still wins.
        let k8s = discovery.k8s.as_deref().expect("k8s");
        assert_eq!(
            with_pod(k8s, base(Some("checkout"))).service_name,
            "checkout"
        );
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
