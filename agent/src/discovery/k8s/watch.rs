//! The pod watcher: one list/watch of this node's pods (`spec.nodeName`),
//! never the cluster's (a DaemonSet watching every pod costs the API server
//! and each agent in proportion to the cluster, beyla#824).
//!
//! kube-runtime's watcher does the protocol: the paged list, the watch from
//! its `resourceVersion` with bookmarks, a re-list when the version expired
//! (410 Gone), reconnects with backoff when the API server restarts. Every
//! `Init` … `InitDone` is a complete list, which replaces the store.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::sync::watch as signal;

use super::{K8s, pod::PodMeta, store::PodStore};
use crate::{config::K8sSettings, self_metrics::SelfMetrics};

/// Starts the watcher when the settings ask for it. With `--k8s on` a client
/// that cannot be configured stops the agent; with `auto` it is one warning
/// and the agent runs without pod metadata.
pub async fn start(
    settings: &K8sSettings,
    metrics: &Arc<SelfMetrics>,
    shutdown: signal::Receiver<bool>,
) -> anyhow::Result<Option<(Arc<K8s>, tokio::task::JoinHandle<()>)>> {
    if !settings.enabled() {
        return Ok(None);
    }
    let client = match client(settings.kubeconfig.as_deref()).await {
        Ok(client) => client,
        Err(error) if settings.mode == crate::config::K8sMode::Auto => {
            tracing::warn!(
                error = %format!("{error:#}"),
                "Kubernetes pod metadata off (--k8s on makes this an error)"
            );
            return Ok(None);
        }
        Err(error) => return Err(error.context("--k8s on")),
    };
    let node = settings
        .node_name
        .clone()
        .unwrap_or_else(crate::discovery::host_name);
    let store = Arc::new(PodStore::new(settings.max_pods, Arc::clone(metrics)));
    tracing::info!(node, "watching this node's pods");
    let task = tokio::spawn(run(
        client,
        node,
        Arc::clone(&store),
        Arc::clone(metrics),
        shutdown,
    ));
    let k8s = K8s {
        store,
        cluster_name: settings.cluster_name.clone(),
        well_known_labels: settings.well_known_labels,
    };
    Ok(Some((Arc::new(k8s), task)))
}

/// A client from an explicit kubeconfig, else the in-cluster service account
/// (`KUBERNETES_SERVICE_HOST`), else kube's usual inference (`KUBECONFIG`,
/// `~/.kube/config`).
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            kube::Config::incluster().context("in-cluster Kubernetes configuration")?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?,
    };
    Client::try_from(config).context("Kubernetes client")
}

/// Watches `node`'s pods into `store` until `shutdown`.
pub async fn run(
    client: Client,
    node: String,
    store: Arc<PodStore>,
    metrics: Arc<SelfMetrics>,
    mut shutdown: signal::Receiver<bool>,
) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut last_warning: Option<tokio::time::Instant> = None;
    let mut first_list = true;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match event {
            None => return,
            Some(Ok(watcher::Event::Init)) => store.list_begin(),
            Some(Ok(watcher::Event::InitApply(pod))) => {
                if let Some(meta) = PodMeta::from_pod(&pod) {
                    store.list_item(meta);
                }
            }
            Some(Ok(watcher::Event::InitDone)) => {
                store.list_done();
                if std::mem::take(&mut first_list) {
                    tracing::info!(node, pods = store.len(), "Kubernetes pods listed");
                } else {
                    tracing::info!(node, pods = store.len(), "Kubernetes pods re-listed");
                }
            }
            Some(Ok(watcher::Event::Apply(pod))) => {
                if let Some(meta) = PodMeta::from_pod(&pod) {
                    store.apply(meta);
                }
            }
            Some(Ok(watcher::Event::Delete(pod))) => {
                if let Some(uid) = &pod.metadata.uid {
                    store.delete(uid);
                }
            }
            Some(Err(error)) => {
                SelfMetrics::add(&metrics.k8s_watch_errors, 1);
                // The watcher retries with backoff; say so once a minute at most.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    last_warning = Some(tokio::time::Instant::now());
                    tracing::warn!(
                        error = %error,
                        "Kubernetes pod watch failed; retrying (pods keep their last known metadata)"
                    );
                }
            }
        }
    }
}
