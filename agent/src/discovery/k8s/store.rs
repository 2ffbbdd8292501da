//! The pods of this node, indexed by pod uid and by container id.
//!
//! Written by the watcher task, read by discovery on the pipeline and profiler
//! threads. Bounded: past `max_pods` new pods are dropped and counted (a node
//! runs at most a few hundred). A full re-list (after a 410 or a restart of the
//! API server) replaces the contents at once, so pods deleted while the watch
//! was down do not linger.

use std::{
    collections::HashMap,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use super::pod::PodMeta;
use crate::self_metrics::SelfMetrics;

/// Pods by uid, with a container id → pod uid index.
#[derive(Debug)]
pub struct PodStore {
    inner: RwLock<Inner>,
    /// Bumped by every change: discovery re-resolves a process still waiting
    /// for its pod only when this moved.
    generation: AtomicU64,
    max_pods: usize,
    /// The first complete list arrived (`/readyz` waits for it, or a timeout).
    listed: tokio::sync::watch::Sender<bool>,
    metrics: Arc<SelfMetrics>,
}

#[derive(Debug, Default)]
struct Inner {
    pods: HashMap<String, Arc<PodMeta>>,
    containers: HashMap<String, String>,
    /// Pods of a list in progress (`Init` … `InitDone`).
    relist: Option<Vec<PodMeta>>,
}

impl Inner {
    fn insert(&mut self, meta: PodMeta) {
        self.remove(&meta.uid.clone());
        for c in &meta.containers {
            self.containers.insert(c.id.clone(), meta.uid.clone());
        }
        self.pods.insert(meta.uid.clone(), Arc::new(meta));
    }

    fn remove(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            for c in &old.containers {
                if self.containers.get(&c.id).is_some_and(|u| u == uid) {
                    self.containers.remove(&c.id);
                }
            }
        }
    }
}

impl PodStore {
    pub fn new(max_pods: usize, metrics: Arc<SelfMetrics>) -> PodStore {
        PodStore {
            inner: RwLock::new(Inner::default()),
            generation: AtomicU64::new(0),
            max_pods,
            listed: tokio::sync::watch::Sender::new(false),
            metrics,
        }
    }

    fn write(&self, f: impl FnOnce(&mut Inner)) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        f(&mut inner);
        SelfMetrics::set(&self.metrics.k8s_pods, inner.pods.len() as u64);
        SelfMetrics::set(&self.metrics.k8s_containers, inner.containers.len() as u64);
        drop(inner);
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn read<T>(&self, f: impl FnOnce(&Inner) -> T) -> T {
        f(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// An added or changed pod.
    pub fn apply(&self, meta: PodMeta) {
        self.write(|inner| {
            if inner.pods.contains_key(&meta.uid) || inner.pods.len() < self.max_pods {
                inner.insert(meta);
            } else {
                SelfMetrics::add(&self.metrics.k8s_pods_dropped, 1);
            }
        });
    }

    pub fn delete(&self, uid: &str) {
        self.write(|inner| inner.remove(uid));
    }

    /// A (re-)list begins: its pods are buffered until [`Self::list_done`].
    pub fn list_begin(&self) {
        SelfMetrics::add(&self.metrics.k8s_lists, 1);
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.relist = Some(Vec::new());
    }

    pub fn list_item(&self, meta: PodMeta) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        match inner.relist.as_mut() {
            Some(list) if list.len() < self.max_pods => list.push(meta),
            Some(_) => SelfMetrics::add(&self.metrics.k8s_pods_dropped, 1),
            None => {
                drop(inner);
                self.apply(meta);
            }
        }
    }

    /// The list is complete: it replaces what the store held.
    pub fn list_done(&self) {
        self.write(|inner| {
            let list = inner.relist.take().unwrap_or_default();
            inner.pods.clear();
            inner.containers.clear();
            for meta in list {
                inner.insert(meta);
            }
        });
        self.listed.send_replace(true);
    }

    pub fn by_container(&self, id: &str) -> Option<Arc<PodMeta>> {
        self.read(|inner| {
            let uid = inner.containers.get(id)?;
            inner.pods.get(uid).cloned()
        })
    }

    pub fn by_uid(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.read(|inner| inner.pods.get(uid).cloned())
    }

    pub fn len(&self) -> usize {
        self.read(|inner| inner.pods.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn listed(&self) -> bool {
        *self.listed.borrow()
    }

    /// Waits until the first complete list arrived; `false` at the timeout.
    pub async fn wait_listed(&self, timeout: std::time::Duration) -> bool {
        let mut rx = self.listed.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|listed| *listed))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::{super::pod::Container, *};

    fn meta(uid: &str, ids: &[&str]) -> PodMeta {
        PodMeta {
            namespace: "ns".into(),
            name: format!("pod-{uid}"),
            uid: uid.into(),
            containers: ids
                .iter()
                .map(|id| Container {
                    id: (*id).into(),
                    name: format!("c-{id}"),
                })
                .collect(),
            ..PodMeta::default()
        }
    }

    #[test]
    fn indexes_by_uid_and_container_and_forgets_on_delete() {
        let metrics = Arc::new(SelfMetrics::default());
        let store = PodStore::new(8, Arc::clone(&metrics));
        store.apply(meta("a", &["1", "2"]));
        let g = store.generation();
        assert_eq!(
            store.by_container("2").map(|p| p.uid.clone()).as_deref(),
            Some("a")
        );
        // A restarted container has a new id; the old one no longer resolves.
        store.apply(meta("a", &["1", "3"]));
        assert!(store.generation() > g);
        assert!(store.by_container("2").is_none());
        assert!(store.by_container("3").is_some());
        store.delete("a");
        assert!(store.by_uid("a").is_none() && store.by_container("1").is_none());
        assert!(store.is_empty());
        assert_eq!(metrics.k8s_containers.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn bounded_and_a_relist_replaces_everything() {
        let metrics = Arc::new(SelfMetrics::default());
        let store = PodStore::new(2, Arc::clone(&metrics));
        for uid in ["a", "b", "c"] {
            store.apply(meta(uid, &[uid]));
        }
        assert_eq!(store.len(), 2);
        assert_eq!(metrics.k8s_pods_dropped.load(Ordering::Relaxed), 1);
        // An update of a pod already held is never dropped.
        store.apply(meta("a", &["a2"]));
        assert!(store.by_container("a2").is_some());

        assert!(!store.listed());
        store.list_begin();
        store.list_item(meta("d", &["d"]));
        // Until the list is done the old contents still answer.
        assert!(store.by_uid("a").is_some());
        store.list_done();
        assert!(store.listed());
        assert!(store.by_uid("a").is_none() && store.by_uid("b").is_none());
        assert_eq!(
            store.by_container("d").map(|p| p.uid.clone()).as_deref(),
            Some("d")
        );
        assert_eq!(metrics.k8s_pods.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.k8s_lists.load(Ordering::Relaxed), 1);
    }
}
