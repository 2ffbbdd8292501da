//! Kubernetes identity of a process: its pod, container and owner, from the
//! API server's view of this node's pods joined to the process's cgroup ids.
//!
//! - [`pod`]: what is kept of a Pod (a few names).
//! - [`store`]: those pods, by uid and container id, bounded.
//! - [`watch`]: the one watcher that fills the store (this node's pods only).
//!
//! Naming follows the OpenTelemetry semantic conventions ("Kubernetes
//! attributes", and the non-normative rules for `service.*` on Kubernetes).

pub mod pod;
pub mod store;
pub mod watch;

use std::sync::Arc;

use serde::Serialize;

pub use self::{pod::PodMeta, store::PodStore};
use super::cgroup::CgroupIds;

/// The Kubernetes side of discovery, shared by the pipeline and the profiler.
#[derive(Debug)]
pub struct K8s {
    pub store: Arc<PodStore>,
    /// `k8s.cluster.name`, when configured (the API has no name for its cluster).
    pub cluster_name: Option<String>,
    /// Use the `app.kubernetes.io/name` label for `service.name` (opt-in: it
    /// is often shared by unrelated workloads, e.g. every Helm release's
    /// `postgresql`).
    pub well_known_labels: bool,
}

/// What a process's resource takes from its pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PodIdentity {
    pub namespace: String,
    pub pod_name: String,
    /// `None` while the pod's status does not list the process's container
    /// (not started yet, or a sandbox/pause process, which is no container of
    /// the pod's spec).
    pub container_name: Option<String>,
    pub node_name: Option<String>,
    /// `(k8s.<kind>.name, name)`, innermost first.
    pub owners: Vec<(&'static str, String)>,
    pub cluster_name: Option<String>,
    /// `resource.opentelemetry.io/<attr>` annotations other than the
    /// `service.*` ones the resource's own fields take.
    pub attributes: Vec<(String, String)>,
}

impl PodIdentity {
    /// Resource attributes, OpenTelemetry names (`k8s.pod.uid` is the
    /// resource's own, from the cgroup).
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &str)> {
        [
            ("k8s.namespace.name", Some(self.namespace.as_str())),
            ("k8s.pod.name", Some(self.pod_name.as_str())),
            ("k8s.container.name", self.container_name.as_deref()),
            ("k8s.node.name", self.node_name.as_deref()),
            ("k8s.cluster.name", self.cluster_name.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .chain(self.owners.iter().map(|(k, v)| (*k, v.as_str())))
        .chain(
            self.attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }

    /// The labels every metric series of this process carries: namespace,
    /// pod, container and the outermost owner (not the node or cluster: one
    /// value per agent, on `target_info`).
    pub fn metric_labels(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("k8s.namespace.name", Some(self.namespace.as_str())),
            ("k8s.pod.name", Some(self.pod_name.as_str())),
            ("k8s.container.name", self.container_name.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .chain(self.owners.last().map(|(k, v)| (*k, v.as_str())))
    }
}

/// A process's pod, as far as the store knows it.
pub enum Lookup {
    /// The cgroup names no pod: not a Kubernetes workload.
    NotInPod,
    /// The cgroup names a pod the store does not hold yet.
    Pending,
    Found {
        pod: Arc<PodMeta>,
        /// `None`: the pod is known, this container not (yet).
        container: Option<String>,
    },
}

/// `service.*` of a pod's process, before its own `OTEL_SERVICE_NAME`.
#[derive(Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    /// `None` until the container is known.
    pub instance_id: Option<String>,
}

impl K8s {
    pub fn lookup(&self, ids: &CgroupIds) -> Lookup {
        if let Some(id) = &ids.container_id
            && let Some(pod) = self.store.by_container(id)
        {
            let container = pod.container_name(id).map(str::to_string);
            return Lookup::Found { pod, container };
        }
        match &ids.pod_uid {
            None => Lookup::NotInPod,
            Some(uid) => match self.store.by_uid(uid) {
                Some(pod) => Lookup::Found {
                    pod,
                    container: None,
                },
                None => Lookup::Pending,
            },
        }
    }

    pub fn identity(&self, pod: &PodMeta, container: Option<&str>) -> PodIdentity {
        PodIdentity {
            namespace: pod.namespace.clone(),
            pod_name: pod.name.clone(),
            container_name: container.map(str::to_string),
            node_name: pod.node.clone(),
            owners: pod
                .owners
                .iter()
                .map(|(kind, name)| (kind.attribute(), name.clone()))
                .collect(),
            cluster_name: self.cluster_name.clone(),
            attributes: pod
                .annotations
                .iter()
                .filter(|(k, _)| !k.starts_with("service.") || k == "service.version")
                .filter(|(k, _)| !k.starts_with("k8s."))
                .cloned()
                .collect(),
        }
    }

    /// `service.name`: the annotation, then (opt-in) the
    /// `app.kubernetes.io/name` label, then the outermost owner, the pod, the
    /// container. `service.namespace`: the annotation, else the namespace.
    /// `service.instance.id`: the annotation, else `namespace.pod.container`.
    pub fn service(&self, pod: &PodMeta, container: Option<&str>) -> Service {
        let name = pod
            .annotation("service.name")
            .map(str::to_string)
            .or_else(|| {
                self.well_known_labels
                    .then(|| pod.app_name.clone())
                    .flatten()
            })
            .or_else(|| pod.top_owner().map(|(_, name)| name.clone()))
            .or_else(|| (!pod.name.is_empty()).then(|| pod.name.clone()))
            .or_else(|| container.map(str::to_string))
            .unwrap_or_default();
        let namespace = pod
            .annotation("service.namespace")
            .unwrap_or(&pod.namespace)
            .to_string();
        let instance_id = pod
            .annotation("service.instance.id")
            .map(str::to_string)
            .or_else(|| container.map(|c| format!("{}.{}.{c}", pod.namespace, pod.name)));
        Service {
            name,
            namespace,
            instance_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{pod::tests as fixture, *};
    use crate::self_metrics::SelfMetrics;

    fn k8s(well_known_labels: bool) -> K8s {
        K8s {
            store: Arc::new(PodStore::new(16, Arc::new(SelfMetrics::default()))),
            cluster_name: Some("prod-eu".into()),
            well_known_labels,
        }
    }

    fn meta(edit: impl FnOnce(&mut k8s_openapi::api::core::v1::Pod)) -> PodMeta {
        let mut pod = fixture::pod();
        edit(&mut pod);
        PodMeta::from_pod(&pod).expect("complete pod")
    }

    fn annotate(pod: &mut k8s_openapi::api::core::v1::Pod, key: &str, value: &str) {
        pod.metadata
            .annotations
            .get_or_insert_default()
            .insert(format!("resource.opentelemetry.io/{key}"), value.into());
    }

    #[test]
    fn service_name_precedence() {
        let k = k8s(false);
        let plain = meta(|_| {});
        assert_eq!(k.service(&plain, Some("app")).name, "web", "the Deployment");
        assert_eq!(
            k8s(true).service(&plain, Some("app")).name,
            "storefront",
            "opt-in label"
        );
        let annotated = meta(|p| annotate(p, "service.name", "checkout"));
        assert_eq!(k8s(true).service(&annotated, Some("app")).name, "checkout");
        let bare = meta(|p| p.metadata.owner_references = None);
        assert_eq!(
            k.service(&bare, Some("app")).name,
            "web-7d4b9c6f5d-x2x9z",
            "the pod"
        );
    }

    #[test]
    fn service_namespace_and_instance() {
        let k = k8s(false);
        let plain = meta(|_| {});
        assert_eq!(
            k.service(&plain, Some("app")),
            Service {
                name: "web".into(),
                namespace: "shop".into(),
                instance_id: Some("shop.web-7d4b9c6f5d-x2x9z.app".into()),
            }
        );
        assert_eq!(
            k.service(&plain, None).instance_id,
            None,
            "container unknown"
        );
        let annotated = meta(|p| {
            annotate(p, "service.namespace", "retail");
            annotate(p, "service.instance.id", "web-1");
        });
        let s = k.service(&annotated, Some("app"));
        assert_eq!(
            (s.namespace.as_str(), s.instance_id.as_deref()),
            ("retail", Some("web-1"))
        );
    }

    #[test]
    fn lookup_by_container_then_pod_uid() {
        let k = k8s(false);
        let ids = |container: Option<&str>, pod: Option<&str>| CgroupIds {
            container_id: container.map(str::to_string),
            pod_uid: pod.map(str::to_string),
        };
        let both = ids(Some(fixture::ID), Some(fixture::UID));
        assert!(matches!(k.lookup(&both), Lookup::Pending));
        assert!(matches!(
            k.lookup(&ids(Some(fixture::ID), None)),
            Lookup::NotInPod
        ));
        k.store.apply(meta(|_| {}));
        let Lookup::Found { pod, container } = k.lookup(&both) else {
            panic!("found by container id")
        };
        assert_eq!(
            (pod.name.as_str(), container.as_deref()),
            ("web-7d4b9c6f5d-x2x9z", Some("app"))
        );
        // The pause container: the pod, no container.
        let sandbox = ids(Some(&"b".repeat(64)), Some(fixture::UID));
        assert!(matches!(
            k.lookup(&sandbox),
            Lookup::Found {
                container: None,
                ..
            }
        ));
    }

    #[test]
    fn identity_attributes_and_labels() {
        let k = k8s(false);
        let pod = meta(|p| {
            annotate(p, "service.version", "1.4.2");
            annotate(p, "deployment.environment.name", "prod");
            annotate(p, "service.name", "ignored-here");
            annotate(p, "k8s.pod.name", "spoofed");
        });
        let id = k.identity(&pod, Some("app"));
        let attrs: Vec<(&str, &str)> = id.attributes().collect();
        assert_eq!(
            attrs,
            [
                ("k8s.namespace.name", "shop"),
                ("k8s.pod.name", "web-7d4b9c6f5d-x2x9z"),
                ("k8s.container.name", "app"),
                ("k8s.node.name", "node-a"),
                ("k8s.cluster.name", "prod-eu"),
                ("k8s.replicaset.name", "web-7d4b9c6f5d"),
                ("k8s.deployment.name", "web"),
                // `service.*` annotations come first (see `PodMeta::annotations`).
                ("service.version", "1.4.2"),
                ("deployment.environment.name", "prod"),
            ]
        );
        let labels: Vec<(&str, &str)> = id.metric_labels().collect();
        assert_eq!(
            labels,
            [
                ("k8s.namespace.name", "shop"),
                ("k8s.pod.name", "web-7d4b9c6f5d-x2x9z"),
                ("k8s.container.name", "app"),
                ("k8s.deployment.name", "web"),
            ]
        );
    }
}
