//! What the agent keeps of a pod: a few strings, not the API object.
//!
//! A Pod from the API server is kilobytes (managed fields, the whole spec,
//! conditions); a node runs up to a few hundred of them and they churn. Each is
//! reduced on arrival to the names its processes' resources need, so the store
//! stays small however large the objects are (Beyla's store kept the objects
//! and grew to gigabytes, beyla#1342).

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// The annotation prefix whose keys become resource attributes (OpenTelemetry
/// semantic conventions, "Kubernetes attributes": `resource.opentelemetry.io/<attr>`).
pub const RESOURCE_ANNOTATION: &str = "resource.opentelemetry.io/";
/// At most this many annotation attributes per pod, each at most this long:
/// annotations are user data of any size.
const MAX_ANNOTATIONS: usize = 16;
const MAX_VALUE: usize = 256;

/// The controller a pod belongs to, as the OpenTelemetry attribute it becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerKind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    CronJob,
    Job,
}

impl OwnerKind {
    /// `k8s.<kind>.name`.
    pub fn attribute(self) -> &'static str {
        match self {
            OwnerKind::Deployment => "k8s.deployment.name",
            OwnerKind::ReplicaSet => "k8s.replicaset.name",
            OwnerKind::StatefulSet => "k8s.statefulset.name",
            OwnerKind::DaemonSet => "k8s.daemonset.name",
            OwnerKind::CronJob => "k8s.cronjob.name",
            OwnerKind::Job => "k8s.job.name",
        }
    }
}

/// One container of a pod, by the id its cgroup carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// 64 hex digits, without the runtime's `containerd://` scheme.
    pub id: String,
    pub name: String,
}

/// A pod, reduced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: Option<String>,
    /// Direct and derived owners, outermost last: `[ReplicaSet web-7d4b9c6f5d,
    /// Deployment web]`, `[Job nightly-29000000, CronJob nightly]`, `[StatefulSet db]`.
    pub owners: Vec<(OwnerKind, String)>,
    /// `resource.opentelemetry.io/<attr>` annotations, `<attr>` → value.
    pub annotations: Vec<(String, String)>,
    /// The `app.kubernetes.io/name` label (used for `service.name` only when
    /// the user opts in: it is often shared by unrelated workloads).
    pub app_name: Option<String>,
    /// Containers that have started (init and ephemeral ones included).
    pub containers: Vec<Container>,
}

impl PodMeta {
    /// `None` for an object without a uid, name or namespace (the API server
    /// always sends them; a bookmark carries none).
    pub fn from_pod(pod: &Pod) -> Option<PodMeta> {
        let meta = &pod.metadata;
        let labels = meta.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).cloned();
        let mut annotations: Vec<(String, String)> = meta
            .annotations
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                let attr = k.strip_prefix(RESOURCE_ANNOTATION)?;
                (!attr.is_empty() && !v.is_empty()).then(|| (attr.to_string(), truncate(v)))
            })
            .collect();
        // `service.*` first, so the bound never drops the service's own name.
        annotations.sort_by_key(|(k, _)| !k.starts_with("service."));
        annotations.truncate(MAX_ANNOTATIONS);
        let status = pod.status.as_ref();
        let containers = status
            .into_iter()
            .flat_map(|s| {
                [
                    &s.container_statuses,
                    &s.init_container_statuses,
                    &s.ephemeral_container_statuses,
                ]
            })
            .flatten()
            .flatten()
            .filter_map(container)
            .collect();
        Some(PodMeta {
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            owners: owners(pod, label("pod-template-hash").as_deref()),
            annotations,
            app_name: label("app.kubernetes.io/name"),
            containers,
        })
    }

    /// The outermost owner.
    pub fn top_owner(&self) -> Option<&(OwnerKind, String)> {
        self.owners.last()
    }

    pub fn annotation(&self, attr: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(k, _)| k == attr)
            .map(|(_, v)| v.as_str())
    }

    pub fn container_name(&self, id: &str) -> Option<&str> {
        self.containers
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.name.as_str())
    }
}

fn truncate(v: &str) -> String {
    let mut end = v.len().min(MAX_VALUE);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_string()
}

/// A started container's id, with the runtime scheme (`containerd://`,
/// `cri-o://`, `docker://`) cut off.
fn container(status: &ContainerStatus) -> Option<Container> {
    let raw = status.container_id.as_deref()?;
    let id = raw.rsplit_once("://").map_or(raw, |(_, id)| id);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Container {
        id: id.to_ascii_lowercase(),
        name: status.name.clone(),
    })
}

/// Owners from the controller reference, without watching ReplicaSets or Jobs:
/// a Deployment names its ReplicaSets `<deployment>-<pod-template-hash>` and
/// labels their pods with that hash, so the Deployment is known exactly when
/// the suffix equals the label (otherwise, e.g. an Argo Rollout or a bare
/// ReplicaSet, only the ReplicaSet is). A CronJob names its Jobs
/// `<cronjob>-<scheduled minute since the epoch>`; no label says so, so the
/// CronJob is taken only when the suffix is such a number and the Job's
/// owner reference could not be anything else — 8 digits or more (minutes
/// since 1970 passed 10^7 in 1989).
fn owners(pod: &Pod, template_hash: Option<&str>) -> Vec<(OwnerKind, String)> {
    let refs = pod.metadata.owner_references.as_deref().unwrap_or_default();
    let Some(owner) = refs
        .iter()
        .find(|r| r.controller == Some(true))
        .or(refs.first())
    else {
        return Vec::new();
    };
    let name = owner.name.clone();
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let deployment = name
                .rsplit_once('-')
                .filter(|(_, hash)| Some(*hash) == template_hash)
                .map(|(d, _)| d.to_string());
            let mut owners = vec![(OwnerKind::ReplicaSet, name)];
            owners.extend(deployment.map(|d| (OwnerKind::Deployment, d)));
            owners
        }
        "Job" => {
            let cronjob = name
                .rsplit_once('-')
                .filter(|(_, n)| n.len() >= 8 && n.bytes().all(|b| b.is_ascii_digit()))
                .map(|(c, _)| c.to_string());
            let mut owners = vec![(OwnerKind::Job, name)];
            owners.extend(cronjob.map(|c| (OwnerKind::CronJob, c)));
            owners
        }
        "StatefulSet" => vec![(OwnerKind::StatefulSet, name)],
        "DaemonSet" => vec![(OwnerKind::DaemonSet, name)],
        _ => Vec::new(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{
        api::core::v1::{PodSpec, PodStatus},
        apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
    };

    use super::*;

    pub const ID: &str = "4f1e3c1b2a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";
    pub const UID: &str = "0f2d6a1e-3b4c-4d5e-8f90-a1b2c3d4e5f6";

    /// A pod of the Deployment `web` (ReplicaSet `web-7d4b9c6f5d`) on `node-a`
    /// with one started container `app` ([`ID`]).
    pub fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                name: Some("web-7d4b9c6f5d-x2x9z".into()),
                uid: Some(UID.into()),
                labels: Some(BTreeMap::from([
                    ("pod-template-hash".into(), "7d4b9c6f5d".into()),
                    ("app.kubernetes.io/name".into(), "storefront".into()),
                ])),
                owner_references: Some(vec![owner("ReplicaSet", "web-7d4b9c6f5d")]),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "app".into(),
                    container_id: Some(format!("containerd://{ID}")),
                    ..ContainerStatus::default()
                }]),
                init_container_statuses: Some(vec![ContainerStatus {
                    name: "not-started".into(),
                    container_id: None,
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    pub fn owner(kind: &str, name: &str) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: "1".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }
    }

    fn owners_of(kind: &str, name: &str, hash: Option<&str>) -> Vec<(OwnerKind, String)> {
        let mut p = pod();
        p.metadata.owner_references = Some(vec![owner(kind, name)]);
        if let Some(labels) = p.metadata.labels.as_mut() {
            labels.remove("pod-template-hash");
            if let Some(h) = hash {
                labels.insert("pod-template-hash".into(), h.into());
            }
        }
        PodMeta::from_pod(&p).map(|m| m.owners).unwrap_or_default()
    }

    #[test]
    fn a_pod_is_reduced_to_its_names() {
        let meta = PodMeta::from_pod(&pod()).expect("complete pod");
        assert_eq!(meta.namespace, "shop");
        assert_eq!(meta.name, "web-7d4b9c6f5d-x2x9z");
        assert_eq!(meta.uid, UID);
        assert_eq!(meta.node.as_deref(), Some("node-a"));
        assert_eq!(meta.app_name.as_deref(), Some("storefront"));
        assert_eq!(meta.container_name(ID), Some("app"));
        assert_eq!(
            meta.containers.len(),
            1,
            "a container not started has no id"
        );
        assert_eq!(
            meta.top_owner(),
            Some(&(OwnerKind::Deployment, "web".to_string()))
        );
        let mut bookmark = pod();
        bookmark.metadata.uid = None;
        assert_eq!(PodMeta::from_pod(&bookmark), None);
    }

    #[test]
    fn owners_without_watching_replicasets_or_jobs() {
        use OwnerKind::*;
        let s = |k, n: &str| (k, n.to_string());
        assert_eq!(
            owners_of("ReplicaSet", "web-7d4b9c6f5d", Some("7d4b9c6f5d")),
            [s(ReplicaSet, "web-7d4b9c6f5d"), s(Deployment, "web")]
        );
        // A multi-dash deployment name is cut at the last dash only.
        assert_eq!(
            owners_of("ReplicaSet", "my-web-app-5f7b8c", Some("5f7b8c")),
            [
                s(ReplicaSet, "my-web-app-5f7b8c"),
                s(Deployment, "my-web-app")
            ]
        );
        // No hash label, or another one (Argo Rollouts, a bare ReplicaSet): only the ReplicaSet.
        assert_eq!(
            owners_of("ReplicaSet", "web-7d4b9c6f5d", None),
            [s(ReplicaSet, "web-7d4b9c6f5d")]
        );
        assert_eq!(
            owners_of("ReplicaSet", "web-7d4b9c6f5d", Some("other")),
            [s(ReplicaSet, "web-7d4b9c6f5d")]
        );
        assert_eq!(
            owners_of("Job", "nightly-29412345", None),
            [s(Job, "nightly-29412345"), s(CronJob, "nightly")]
        );
        assert_eq!(owners_of("Job", "migrate-v2", None), [s(Job, "migrate-v2")]);
        assert_eq!(owners_of("StatefulSet", "db", None), [s(StatefulSet, "db")]);
        assert_eq!(
            owners_of("DaemonSet", "agent", None),
            [s(DaemonSet, "agent")]
        );
        assert_eq!(owners_of("Node", "node-a", None), []);
    }

    #[test]
    fn resource_annotations_are_bounded() {
        let mut p = pod();
        let mut annotations = BTreeMap::from([
            (
                "resource.opentelemetry.io/service.name".to_string(),
                "checkout".to_string(),
            ),
            (
                "resource.opentelemetry.io/".to_string(),
                "empty key".to_string(),
            ),
            (
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                "{}".to_string(),
            ),
            ("resource.opentelemetry.io/big".to_string(), "é".repeat(400)),
        ]);
        p.metadata.annotations = Some(annotations.clone());
        let meta = PodMeta::from_pod(&p).expect("complete pod");
        assert_eq!(meta.annotations.len(), 2);
        assert_eq!(meta.annotation("service.name"), Some("checkout"));
        assert_eq!(meta.annotation("big").map(str::len), Some(MAX_VALUE));

        for i in 0..40 {
            annotations.insert(format!("resource.opentelemetry.io/a{i:02}"), "v".into());
        }
        p.metadata.annotations = Some(annotations);
        let meta = PodMeta::from_pod(&p).expect("complete pod");
        assert_eq!(meta.annotations.len(), MAX_ANNOTATIONS);
        assert_eq!(
            meta.annotation("service.name"),
            Some("checkout"),
            "never dropped"
        );
    }
}
