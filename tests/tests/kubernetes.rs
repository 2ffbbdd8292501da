//! Kubernetes identity end to end, without a cluster (none can run here):
//! real processes in a kubelet-shaped cgroup (`fake_pod`), an API server
//! double that speaks the real list/watch protocol (`kube_api`, built from
//! `k8s-openapi` types) reached through a kubeconfig, the real agent, and
//! real OTLP, Prometheus and Pyroscope receivers. The resource of the pod's
//! processes is checked on spans, metrics and profiles.

use std::{path::Path, time::Duration};

use agent::{
    Settings,
    config::{K8sMode, K8sSettings},
    export::otlp::Protocol,
};
use e2e::{
    Running,
    fake_pod::FakeContainer,
    kube_api::{self, ApiServer, PodExt as _},
    otlp_receiver, peers, privileged, profile_receivers,
    profiling::{build_c_burner, temp_dir},
    scrape, settings_for_ports,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};

const DEADLINE: Duration = Duration::from_secs(20);
const HTTP_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/http_server.py");
const NODE: &str = "node-a";

/// A pod uid and a container id of its own per test (tests run in parallel,
/// each with its own cgroup).
fn ids(test: u8) -> (String, String) {
    let n = std::process::id();
    let uid = format!("{n:08x}-0000-4000-8000-{test:012x}");
    let id = format!("{n:08x}{test:02x}{}", "c".repeat(54));
    (uid, id)
}

/// `None` (and a SKIPPED line) where the test cannot run.
fn container(test: &str, uid: &str, id: &str) -> Option<FakeContainer> {
    if !privileged(test) {
        return None;
    }
    match FakeContainer::create(uid, id) {
        Ok(c) => Some(c),
        Err(error) => {
            eprintln!("SKIPPED {test}: no cgroup v2 to build a pod's cgroup in: {error}");
            None
        }
    }
}

fn k8s_settings(kubeconfig: &Path) -> K8sSettings {
    K8sSettings {
        mode: K8sMode::On,
        kubeconfig: Some(kubeconfig.to_path_buf()),
        node_name: Some(NODE.into()),
        cluster_name: Some("e2e-cluster".into()),
        ready_timeout: Duration::from_secs(10),
        ..K8sSettings::default()
    }
}

/// The agent's `/metrics` until `done` holds, or the deadline.
async fn metrics_until(agent: &Running, done: impl Fn(&str) -> bool) -> String {
    let addr = agent.handle.prometheus.expect("Prometheus endpoint");
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let text = tokio::task::spawn_blocking(move || scrape(addr))
            .await
            .expect("scrape");
        if done(&text) || tokio::time::Instant::now() > until {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of an unlabeled self-metric.
fn gauge(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn string_of(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_processes_are_named_on_spans_metrics_and_profiles() {
    let test = "a_pods_processes_are_named_on_spans_metrics_and_profiles";
    let (uid, id) = ids(1);
    let Some(container) = container(test, &uid, &id) else {
        return;
    };
    let dir = temp_dir("k8s-named");
    let api = ApiServer::start(NODE);
    api.add(
        kube_api::pod("shop", "web-7d4b9c6f5d-x2x9z", &uid, NODE, &[("app", &id)])
            .replica_set("web-7d4b9c6f5d"),
    );
    // Another node's pod: never asked for, never stored.
    api.add(kube_api::pod(
        "shop",
        "elsewhere",
        "00000000-0000-4000-8000-000000000009",
        "node-b",
        &[("app", &"d".repeat(64))],
    ));
    let kubeconfig = api.kubeconfig(&dir);
    let server = peers::Server::spawn(&mut container.command("python3", &[HTTP_SERVER]));
    let burner = build_c_burner(&dir.join("burn"));

    let (otlp_addr, mut otlp) = otlp_receiver::grpc().await.expect("OTLP receiver");
    let (pyro_addr, mut pushes) = profile_receivers::pyroscope().await.expect("receiver");
    let mut settings: Settings = e2e::profiling::settings(99, &dir);
    settings.ports = vec![server.port];
    settings.profiling.dir = None;
    settings.profiling.pyroscope_url = Some(format!("http://{pyro_addr}"));
    let endpoint = format!("http://{otlp_addr}");
    settings.otlp = Some(otlp_receiver::settings(
        Protocol::Grpc,
        endpoint.clone(),
        endpoint,
        Vec::new(),
    ));
    settings.k8s = k8s_settings(&kubeconfig);
    let mut agent = Running::start(settings).await.expect("agent starts");
    let text = metrics_until(&agent, |t| gauge(t, "agent_k8s_pods") == Some(1)).await;
    assert_eq!(
        gauge(&text, "agent_k8s_pods"),
        Some(1),
        "this node's pod only:\n{text}"
    );
    assert_eq!(gauge(&text, "agent_k8s_containers"), Some(1));

    peers::curl_urls(&[server.url("/users/7"), server.url("/status/503")]).await;
    let status = tokio::task::spawn_blocking({
        let mut cmd = container.command(&burner.to_string_lossy(), &["cpu", "2"]);
        move || cmd.status()
    })
    .await
    .expect("join")
    .expect("burner runs");
    assert!(status.success());

    // Spans: the pod's names, and the Deployment as service.name.
    let spans = agent
        .spans_until(&[server.pid()], DEADLINE, |s| s.len() >= 2)
        .await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    for span in &spans {
        let r = &span.resource;
        assert_eq!(r.service_name, "web");
        assert_eq!(r.service_namespace.as_deref(), Some("shop"));
        assert_eq!(r.service_instance_id, "shop.web-7d4b9c6f5d-x2x9z.app");
        assert_eq!(r.pod_uid.as_deref(), Some(uid.as_str()));
        assert_eq!(r.container_id.as_deref(), Some(id.as_str()));
        let pod = r.k8s.as_ref().expect("pod identity");
        assert_eq!(pod.namespace, "shop");
        assert_eq!(pod.pod_name, "web-7d4b9c6f5d-x2x9z");
        assert_eq!(pod.container_name.as_deref(), Some("app"));
        assert_eq!(pod.node_name.as_deref(), Some(NODE));
        assert_eq!(pod.cluster_name.as_deref(), Some("e2e-cluster"));
        assert_eq!(
            pod.owners,
            [
                ("k8s.replicaset.name", "web-7d4b9c6f5d".to_string()),
                ("k8s.deployment.name", "web".to_string())
            ]
        );
    }

    // Prometheus: the pod's labels on the request series.
    let text = metrics_until(&agent, |t| t.contains("k8s_deployment_name=\"web\"")).await;
    let series = text
        .lines()
        .find(|l| {
            l.starts_with("http_server_request_duration_seconds_count{")
                && l.contains("status_code=\"503\"")
        })
        .unwrap_or_else(|| panic!("a 503 series:\n{text}"));
    for label in [
        "service_name=\"web\"",
        "service_namespace=\"shop\"",
        "k8s_namespace_name=\"shop\"",
        "k8s_pod_name=\"web-7d4b9c6f5d-x2x9z\"",
        "k8s_container_name=\"app\"",
        "k8s_deployment_name=\"web\"",
    ] {
        assert!(series.contains(label), "{label} in {series}");
    }

    // OTLP: the same resource on traces and metrics, none of it on data points.
    let traces = otlp
        .traces_until(DEADLINE, |got| {
            got.iter()
                .flat_map(|r| &r.resource_spans)
                .filter_map(|rs| rs.resource.as_ref())
                .any(|r| string_of(&r.attributes, "service.name").as_deref() == Some("web"))
        })
        .await;
    let resource = traces
        .iter()
        .flat_map(|r| &r.resource_spans)
        .filter_map(|rs| rs.resource.as_ref())
        .find(|r| string_of(&r.attributes, "service.name").as_deref() == Some("web"))
        .expect("a trace resource for web");
    for (key, value) in [
        ("service.namespace", "shop"),
        ("service.instance.id", "shop.web-7d4b9c6f5d-x2x9z.app"),
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "web-7d4b9c6f5d-x2x9z"),
        ("k8s.pod.uid", uid.as_str()),
        ("k8s.container.name", "app"),
        ("k8s.node.name", NODE),
        ("k8s.cluster.name", "e2e-cluster"),
        ("k8s.replicaset.name", "web-7d4b9c6f5d"),
        ("k8s.deployment.name", "web"),
        ("container.id", id.as_str()),
    ] {
        assert_eq!(
            string_of(&resource.attributes, key).as_deref(),
            Some(value),
            "{key}"
        );
    }
    let metrics = otlp
        .metrics_until(DEADLINE, |got| {
            got.iter()
                .flat_map(|r| &r.resource_metrics)
                .filter_map(|rm| rm.resource.as_ref())
                .any(|r| string_of(&r.attributes, "k8s.deployment.name").as_deref() == Some("web"))
        })
        .await;
    let web = metrics
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .find(|rm| {
            rm.resource
                .as_ref()
                .is_some_and(|r| string_of(&r.attributes, "k8s.pod.name").is_some())
        })
        .expect("metrics with the pod's resource");
    let point_keys: Vec<&str> = web
        .scope_metrics
        .iter()
        .flat_map(|s| &s.metrics)
        .filter_map(|m| match m.data.as_ref()? {
            opentelemetry_proto::tonic::metrics::v1::metric::Data::Histogram(h) => Some(h),
            _ => None,
        })
        .flat_map(|h| &h.data_points)
        .flat_map(|p| &p.attributes)
        .map(|kv| kv.key.as_str())
        .collect();
    assert!(!point_keys.is_empty());
    assert!(
        point_keys
            .iter()
            .all(|k| !k.starts_with("k8s.") && !k.starts_with("service.")),
        "{point_keys:?}"
    );

    // Profiles (pushed when the agent stops): one series for the pod's
    // service, named exactly as its spans, with the short Kubernetes labels.
    agent.handle.stop().await;
    let mut labels = None;
    while let Ok(Some(push)) = tokio::time::timeout(DEADLINE, pushes.recv()).await {
        labels = push.request.series.iter().find_map(|s| {
            let label = |n: &str| {
                s.labels
                    .iter()
                    .find(|l| l.name == n)
                    .map(|l| l.value.clone())
            };
            (label("service_name").as_deref() == Some("web")).then(|| {
                [
                    "namespace",
                    "pod",
                    "container",
                    "k8s_deployment_name",
                    "service_namespace",
                ]
                .map(label)
            })
        });
        if labels.is_some() {
            break;
        }
    }
    let [
        namespace,
        pod,
        container_label,
        deployment,
        service_namespace,
    ] = labels.expect("a profile series for service_name=web");
    assert_eq!(namespace.as_deref(), Some("shop"));
    assert_eq!(pod.as_deref(), Some("web-7d4b9c6f5d-x2x9z"));
    assert_eq!(container_label.as_deref(), Some("app"));
    assert_eq!(deployment.as_deref(), Some("web"));
    assert_eq!(service_namespace.as_deref(), Some("shop"));

    // Only this node's pods were ever asked for.
    assert!(
        api.off_node_requests().is_empty(),
        "{:?}",
        api.off_node_requests()
    );
    drop(server);
    drop(container);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_pods_expired_watches_restarts_and_churn() {
    let test = "late_pods_expired_watches_restarts_and_churn";
    let (uid, id) = ids(2);
    let Some(container) = container(test, &uid, &id) else {
        return;
    };
    let dir = temp_dir("k8s-late");
    let api = ApiServer::start(NODE);
    let kubeconfig = api.kubeconfig(&dir);
    let server = peers::Server::spawn(&mut container.command("python3", &[HTTP_SERVER]));
    let mut settings = settings_for_ports(&[server.port]);
    settings.k8s = K8sSettings {
        max_pods: 50,
        ..k8s_settings(&kubeconfig)
    };
    let mut agent = Running::start(settings).await.expect("agent starts");
    let addr = agent.handle.prometheus.expect("Prometheus endpoint");
    let text = metrics_until(&agent, |t| gauge(t, "agent_k8s_lists_total") == Some(1)).await;
    assert_eq!(gauge(&text, "agent_k8s_pods"), Some(0), "{text}");
    let ready = tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .expect("request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("response");
        out
    })
    .await
    .expect("join");
    assert!(
        ready.starts_with("HTTP/1.1 200"),
        "ready once listed: {ready}"
    );

    // One keep-alive connection: a request before the pod is known, one after.
    let marker = dir.join("pod-known");
    let client = tokio::spawn(peers::python(format!(
        r#"
import http.client, os, time
c = http.client.HTTPConnection("127.0.0.1", {port})
c.request("GET", "/users/1"); c.getresponse().read()
deadline = time.time() + 30
while not os.path.exists({marker:?}) and time.time() < deadline: time.sleep(0.02)
c.request("GET", "/users/2"); c.getresponse().read()
"#,
        port = server.port,
        marker = marker.to_string_lossy(),
    )));
    let spans = agent
        .spans_until(&[server.pid()], DEADLINE, |s| !s.is_empty())
        .await;
    let early = &spans.first().expect("the first request's span").resource;
    assert_eq!(
        early.service_name, early.executable_name,
        "not guessed before the pod is known"
    );
    assert!(early.k8s.is_none());
    assert_eq!(
        early.pod_uid.as_deref(),
        Some(uid.as_str()),
        "from the cgroup"
    );

    api.add(
        kube_api::pod("shop", "web-7d4b9c6f5d-late1", &uid, NODE, &[("app", &id)])
            .replica_set("web-7d4b9c6f5d")
            .annotation("resource.opentelemetry.io/service.name", "storefront"),
    );
    metrics_until(&agent, |t| gauge(t, "agent_k8s_pods") == Some(1)).await;
    std::fs::write(&marker, b"").expect("marker");
    client.await.expect("client");
    let spans = agent
        .spans_until(&[server.pid()], DEADLINE, |s| s.len() >= 2)
        .await;
    let late = &spans.get(1).expect("the second request's span").resource;
    assert_eq!(
        late.service_name, "storefront",
        "the annotation, once the pod arrived"
    );
    assert_eq!(
        late.k8s.as_ref().map(|p| p.pod_name.as_str()),
        Some("web-7d4b9c6f5d-late1")
    );

    // An expired watch: the agent re-lists, and the pod deleted meanwhile is gone.
    assert!(
        api.until(DEADLINE, |a| a.open_watches() > 0).await,
        "a watch is open"
    );
    api.expire();
    api.delete("shop", "web-7d4b9c6f5d-late1");
    let text = metrics_until(&agent, |t| {
        gauge(t, "agent_k8s_lists_total") >= Some(2) && gauge(t, "agent_k8s_pods") == Some(0)
    })
    .await;
    assert!(gauge(&text, "agent_k8s_lists_total") >= Some(2), "{text}");
    assert_eq!(gauge(&text, "agent_k8s_pods"), Some(0), "{text}");

    // The API server restarts; pods added after it are seen.
    api.restart(Duration::from_millis(1500));
    api.add(kube_api::pod(
        "shop",
        "after-restart",
        "00000000-0000-4000-8000-0000000000aa",
        NODE,
        &[("app", &"a".repeat(64))],
    ));
    let text = metrics_until(&agent, |t| gauge(t, "agent_k8s_pods") == Some(1)).await;
    assert_eq!(gauge(&text, "agent_k8s_pods"), Some(1), "{text}");
    assert!(
        gauge(&text, "agent_k8s_watch_errors_total") >= Some(1),
        "the outage is counted"
    );

    // Churn past the bound: at most max_pods held, the rest counted; all gone after.
    let churn: Vec<String> = (0..80).map(|i| format!("churn-{i}")).collect();
    for (i, name) in churn.iter().enumerate() {
        api.add(kube_api::pod(
            "batch",
            name,
            &format!("00000000-0000-4000-8000-{i:012x}"),
            NODE,
            &[("job", &format!("{i:064x}"))],
        ));
    }
    // The store is full at the 50th pod; the 31 after it arrive later.
    let text = metrics_until(&agent, |t| {
        gauge(t, "agent_k8s_pods") == Some(50)
            && gauge(t, "agent_k8s_pods_dropped_total") == Some(31)
    })
    .await;
    assert_eq!(gauge(&text, "agent_k8s_pods"), Some(50), "bounded:\n{text}");
    assert_eq!(
        gauge(&text, "agent_k8s_pods_dropped_total"),
        Some(31),
        "{text}"
    );
    for name in &churn {
        api.delete("batch", name);
    }
    api.delete("shop", "after-restart");
    let text = metrics_until(&agent, |t| gauge(t, "agent_k8s_pods") == Some(0)).await;
    assert_eq!(gauge(&text, "agent_k8s_pods"), Some(0), "{text}");
    assert_eq!(gauge(&text, "agent_k8s_containers"), Some(0), "{text}");

    assert!(
        api.off_node_requests().is_empty(),
        "{:?}",
        api.off_node_requests()
    );
    agent.handle.stop().await;
    drop(server);
    drop(container);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_on_without_a_usable_kubeconfig_is_a_clear_error() {
    if !privileged("k8s_on_without_a_usable_kubeconfig_is_a_clear_error") {
        return;
    }
    let dir = temp_dir("k8s-bad");
    let missing = dir.join("no-such-kubeconfig");
    let mut settings = settings_for_ports(&[1]);
    settings.k8s = k8s_settings(&missing);
    let error = match agent::start(&settings, agent::Taps::default()).await {
        Ok(_) => panic!("the agent must not start"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("--k8s on") && error.contains("no-such-kubeconfig"),
        "{error}"
    );
    // `auto` with the same file: one warning, the agent runs without pod metadata.
    settings.k8s.mode = K8sMode::Auto;
    let handle = agent::start(&settings, agent::Taps::default())
        .await
        .expect("auto starts anyway");
    handle.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
