//! A Kubernetes API server double for the pod watcher's tests.
//!
//! No real kube-apiserver runs on the test machines, so the agent's watcher
//! talks to this one instead. It speaks the real list/watch wire protocol with
//! the official `k8s-openapi` types (so the bytes are what kube decodes in
//! production), holds a set of pods under a cluster-wide resourceVersion, and
//! scripts the faults a watcher must survive: expired resourceVersions (410),
//! bookmarks, watch timeouts and API server restarts. It serves plain HTTP on
//! loopback from its own runtime, so both sync `#[test]`s and
//! `#[tokio::test]`s can drive it with plain method calls.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    ops::Bound,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Frame, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use k8s_openapi::{
    List,
    api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStatus, Pod, PodIP, PodSpec,
        PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::{
        ListMeta, ObjectMeta, OwnerReference, Status, StatusDetails, WatchEvent,
    },
};
use tokio::{
    net::{TcpListener, TcpStream},
    runtime::Runtime,
    sync::{mpsc, oneshot, watch},
    task::JoinSet,
    time::Instant,
};
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};

/// How long a watch lasts when the client asks for no `timeoutSeconds`: the
/// real API server's `--min-request-timeout` default.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// The annotation of the bookmark that ends a streaming list's initial events
/// (kube's `StreamingList` strategy waits for it).
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// A response body: a whole JSON document, or a watch's stream of lines.
type Body = BoxBody<Bytes, Infallible>;

/// One request the double received, as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedRequest {
    pub method: String,
    pub path: String,
    /// The query parameters, percent-decoded, in the order sent.
    pub query: Vec<(String, String)>,
}

impl ServedRequest {
    /// The first value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A GET of a pod collection with `watch=true`.
    pub fn is_watch(&self) -> bool {
        self.is_collection() && self.param("watch").is_some_and(truthy)
    }

    /// A GET of a pod collection without `watch`.
    pub fn is_list(&self) -> bool {
        self.is_collection() && !self.param("watch").is_some_and(truthy)
    }

    fn is_collection(&self) -> bool {
        self.method == "GET" && matches!(route(&self.path), Some(Route::Pods { .. }))
    }
}

/// A running API server double; dropping it stops it.
pub struct ApiServer {
    shared: Arc<Shared>,
    /// `Option` only so that `Drop` can take it: a runtime cannot be dropped
    /// inside another one (a `#[tokio::test]`), only shut down in the background.
    runtime: Option<Runtime>,
}

/// What the handle, the accept loops and the watches share.
struct Shared {
    node: String,
    token: String,
    addr: SocketAddr,
    store: Mutex<Store>,
    /// Ticks after every change of the store's pods, expiries or bookmarks:
    /// wakes the open watches.
    changes: watch::Sender<u64>,
    /// Ticks after every observable thing the double did (a request served,
    /// an event sent): wakes the tests waiting in [`ApiServer::until`].
    activity: Activity,
    /// The accept loop serving now, `None` while stopped.
    serving: Mutex<Option<Serving>>,
    /// Bumped by every stop, so that a delayed restart does not revive a
    /// server stopped again (or resumed by hand) in the meantime.
    stops: AtomicU64,
}

/// The pods and the history of their changes.
#[derive(Default)]
struct Store {
    /// The current resourceVersion: that of the last change.
    rv: u64,
    pods: BTreeMap<(String, String), Pod>,
    /// Every change since start, oldest first: watches replay it from their
    /// resourceVersion, and paged lists rebuild their snapshot from it.
    log: Vec<Change>,
    /// resourceVersions below this are too old (410 Expired).
    oldest: u64,
    /// Bumped by every [`ApiServer::expire`]: open watches started before end.
    expiries: u64,
    /// Bumped by every [`ApiServer::bookmark`].
    bookmarks: u64,
    requests: Vec<ServedRequest>,
    /// Watches that have taken their starting point and not ended yet.
    open_watches: usize,
    /// Watch events sent, by type (`ADDED`, `BOOKMARK`, `ERROR`, ...).
    sent: BTreeMap<&'static str, usize>,
}

/// One change of the pod set: `before` is `None` for an add, `after` for a delete.
struct Change {
    rv: u64,
    before: Option<Pod>,
    after: Option<Pod>,
}

/// The running accept loop: `stop` ends it, `stopped` says it has let go of
/// the port and of every connection.
struct Serving {
    stop: oneshot::Sender<()>,
    stopped: std::sync::mpsc::Receiver<()>,
}

/// A counter that both sync and async waiters can sleep on.
struct Activity {
    count: Mutex<u64>,
    cond: Condvar,
    ticks: watch::Sender<u64>,
}

impl Activity {
    fn bump(&self) {
        *lock(&self.count) += 1;
        self.cond.notify_all();
        self.ticks.send_modify(|t| *t += 1);
    }
}

/// Locks `mutex`, ignoring poisoning: a test that panicked while holding it
/// must not turn every later assertion into a poison panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ApiServer {
    /// Starts a double for an agent on `node` (used by
    /// [`ApiServer::off_node_requests`]), with no pods, on a free loopback port.
    pub fn start(node: &str) -> ApiServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kube-api-double")
            .enable_all()
            .build()
            .expect("the API server double's runtime starts");
        // Bound here, synchronously: the port is known (and connectable) on return.
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("the API server double binds a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shared = Arc::new(Shared {
            node: node.to_string(),
            token: format!("e2e-token-{}-{}", std::process::id(), addr.port()),
            addr,
            store: Mutex::new(Store::default()),
            changes: watch::channel(0).0,
            activity: Activity {
                count: Mutex::new(0),
                cond: Condvar::new(),
                ticks: watch::channel(0).0,
            },
            serving: Mutex::new(None),
            stops: AtomicU64::new(0),
        });
        serve(&shared, runtime.handle(), listener);
        ApiServer {
            shared,
            runtime: Some(runtime),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`, the cluster's server URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The bearer token the double requires (it answers 401 to anything else).
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// Writes `dir/kubeconfig` pointing at the double (one cluster, one user
    /// with the token, a current context) and returns its path, for
    /// `Kubeconfig::read_from` or `KUBECONFIG`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: e2e\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: e2e\n  user:\n    token: {token}\n\
             contexts:\n\
             - name: e2e\n  context:\n    cluster: e2e\n    user: e2e\n    namespace: default\n\
             current-context: e2e\n",
            url = self.url(),
            token = self.shared.token,
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.shared.store)
    }

    /// Wakes the open watches after a change of the store.
    fn changed(&self) {
        self.shared.changes.send_modify(|t| *t += 1);
    }

    /// Creates `pod` (namespace and name required) and returns it as stored,
    /// with its new resourceVersion. Panics if it exists.
    pub fn add(&self, pod: Pod) -> Pod {
        let key = key(&pod);
        let stored = {
            let mut store = self.store();
            assert!(
                !store.pods.contains_key(&key),
                "pod {}/{} already exists",
                key.0,
                key.1
            );
            store.apply(key, None, Some(pod))
        };
        self.changed();
        stored.expect("an added pod is stored")
    }

    /// Replaces the stored pod of the same namespace and name with `pod` and
    /// returns it with its new resourceVersion. Panics if there is none.
    pub fn modify(&self, pod: Pod) -> Pod {
        let key = key(&pod);
        let stored = {
            let mut store = self.store();
            let before = store.pods.get(&key).cloned();
            assert!(before.is_some(), "no pod {}/{} to modify", key.0, key.1);
            store.apply(key, before, Some(pod))
        };
        self.changed();
        stored.expect("a modified pod is stored")
    }

    /// Deletes a pod at once (no graceful `deletionTimestamp` step: tests that
    /// want one [`ApiServer::modify`] first) and returns its last state at the
    /// deletion's resourceVersion, as `DELETED` events carry it. Panics if
    /// there is none.
    pub fn delete(&self, namespace: &str, name: &str) -> Pod {
        let key = (namespace.to_string(), name.to_string());
        let gone = {
            let mut store = self.store();
            let before = store.pods.get(&key).cloned();
            assert!(before.is_some(), "no pod {namespace}/{name} to delete");
            store.apply(key, before.clone(), None);
            before.map(|mut pod| {
                pod.metadata.resource_version = Some(store.rv.to_string());
                pod
            })
        };
        self.changed();
        gone.expect("checked above")
    }

    /// The pods now, by namespace and name.
    pub fn pods(&self) -> Vec<Pod> {
        self.store().pods.values().cloned().collect()
    }

    /// The stored pod `namespace/name`, if any.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.store()
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> String {
        self.store().rv.to_string()
    }

    /// Makes every resourceVersion so far too old, as etcd compaction does:
    /// open watches get an `ERROR` event with a 410 `Expired` Status and end,
    /// later watches or continue tokens from an older version get the same,
    /// and a watcher must re-list. The version moves on by one (as other
    /// objects' changes move the cluster-wide version), so that the re-list's
    /// version is the first valid one.
    pub fn expire(&self) {
        {
            let mut store = self.store();
            store.rv += 1;
            store.oldest = store.rv;
            store.expiries += 1;
        }
        self.changed();
    }

    /// Sends a `BOOKMARK` at the current resourceVersion on every open watch
    /// that allowed bookmarks (the real server sends them about once a minute).
    pub fn bookmark(&self) {
        self.store().bookmarks += 1;
        self.changed();
    }

    /// Stops serving as a crashed API server does: closes the port (new
    /// connections are refused) and drops every open connection mid-stream.
    /// The pods persist. Returns once the port is closed.
    pub fn stop(&self) {
        self.shared.stops.fetch_add(1, Ordering::SeqCst);
        stop(&self.shared);
    }

    /// Serves again on the same port after [`ApiServer::stop`]; a no-op while serving.
    pub fn resume(&self) {
        resume(&self.shared, self.handle());
    }

    /// [`ApiServer::stop`] now and [`ApiServer::resume`] after `down`, without
    /// blocking the caller, so that the client under test (often on the
    /// caller's runtime) keeps running through the outage.
    pub fn restart(&self, down: Duration) {
        let stops = self.shared.stops.fetch_add(1, Ordering::SeqCst) + 1;
        stop(&self.shared);
        let shared = Arc::clone(&self.shared);
        let handle = self.handle().clone();
        self.handle().spawn(async move {
            tokio::time::sleep(down).await;
            if shared.stops.load(Ordering::SeqCst) == stops {
                resume(&shared, &handle);
            }
        });
    }

    /// True while the port accepts connections.
    pub fn is_serving(&self) -> bool {
        lock(&self.shared.serving).is_some()
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .handle()
    }

    /// Every request received so far, oldest first (refused ones included).
    pub fn requests(&self) -> Vec<ServedRequest> {
        self.store().requests.clone()
    }

    /// Pod list requests received so far.
    pub fn lists(&self) -> usize {
        self.store().requests.iter().filter(|r| r.is_list()).count()
    }

    /// Pod watch requests received so far.
    pub fn watches(&self) -> usize {
        self.store()
            .requests
            .iter()
            .filter(|r| r.is_watch())
            .count()
    }

    /// The list and watch requests that did not select exactly this node's
    /// pods (`fieldSelector=spec.nodeName=NODE`): an agent must never ask for
    /// the whole cluster.
    pub fn off_node_requests(&self) -> Vec<ServedRequest> {
        let wanted = format!("spec.nodeName={}", self.shared.node);
        self.store()
            .requests
            .iter()
            .filter(|r| (r.is_list() || r.is_watch()) && r.param("fieldSelector") != Some(&wanted))
            .cloned()
            .collect()
    }

    /// Watches open now: started (so they will see every later change,
    /// bookmark and expiry) and not ended. Tests wait for this before
    /// scripting a fault that only open watches see.
    pub fn open_watches(&self) -> usize {
        self.store().open_watches
    }

    /// Watch events of `event_type` (`ADDED`, `MODIFIED`, `DELETED`,
    /// `BOOKMARK`, `ERROR`) sent so far, on all watches.
    pub fn sent(&self, event_type: &str) -> usize {
        self.store().sent.get(event_type).copied().unwrap_or(0)
    }

    /// Waits until `done` holds (checked after every request served and every
    /// watch event sent) or `deadline` passes; whether it holds.
    pub async fn until(&self, deadline: Duration, done: impl Fn(&ApiServer) -> bool) -> bool {
        let until = Instant::now() + deadline;
        let mut ticks = self.shared.activity.ticks.subscribe();
        loop {
            ticks.borrow_and_update();
            if done(self) {
                return true;
            }
            match tokio::time::timeout_at(until, ticks.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return done(self),
            }
        }
    }

    /// [`ApiServer::until`] for sync tests: blocks the calling thread.
    pub fn wait_until(&self, deadline: Duration, done: impl Fn(&ApiServer) -> bool) -> bool {
        let until = std::time::Instant::now() + deadline;
        let activity = &self.shared.activity;
        loop {
            let seen = *lock(&activity.count);
            if done(self) {
                return true;
            }
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            let count = lock(&activity.count);
            let _ = activity
                .cond
                .wait_timeout_while(count, left, |count| *count == seen)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Store {
    /// Records a change of the pod at `key` and returns the new state stored.
    fn apply(
        &mut self,
        key: (String, String),
        before: Option<Pod>,
        after: Option<Pod>,
    ) -> Option<Pod> {
        self.rv += 1;
        let after = after.map(|mut pod| {
            pod.metadata.resource_version = Some(self.rv.to_string());
            pod
        });
        match &after {
            Some(pod) => self.pods.insert(key, pod.clone()),
            None => self.pods.remove(&key),
        };
        self.log.push(Change {
            rv: self.rv,
            before,
            after: after.clone(),
        });
        after
    }

    /// The pods as they were at resourceVersion `rv`.
    fn snapshot(&self, rv: u64) -> BTreeMap<(String, String), Pod> {
        if rv >= self.rv {
            return self.pods.clone();
        }
        let mut pods = BTreeMap::new();
        for change in self.log.iter().take_while(|c| c.rv <= rv) {
            match (&change.before, &change.after) {
                (_, Some(pod)) => pods.insert(key(pod), pod.clone()),
                (Some(pod), None) => pods.remove(&key(pod)),
                (None, None) => None,
            };
        }
        pods
    }

    fn count_sent(&mut self, event_type: &'static str) {
        *self.sent.entry(event_type).or_default() += 1;
    }
}

/// A pod's storage key: namespace and name.
fn key(pod: &Pod) -> (String, String) {
    (
        pod.metadata
            .namespace
            .clone()
            .expect("test pods have a namespace"),
        pod.metadata.name.clone().expect("test pods have a name"),
    )
}

/// Binds `addr` for the accept loop (std's bind sets `SO_REUSEADDR`, so the
/// port of a stopped double can be bound again while old connections linger).
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Starts an accept loop on `listener`.
fn serve(shared: &Arc<Shared>, handle: &tokio::runtime::Handle, listener: std::net::TcpListener) {
    let (stop, stop_rx) = oneshot::channel();
    let (stopped_tx, stopped) = std::sync::mpsc::channel();
    handle.spawn(accept_loop(
        listener,
        Arc::clone(shared),
        stop_rx,
        stopped_tx,
    ));
    *lock(&shared.serving) = Some(Serving { stop, stopped });
}

fn stop(shared: &Shared) {
    let serving = lock(&shared.serving).take();
    if let Some(serving) = serving {
        let _ = serving.stop.send(());
        // Blocks only for the loop to drop its sockets (it runs on the
        // double's runtime, not the caller's).
        let _ = serving.stopped.recv_timeout(Duration::from_secs(5));
    }
}

fn resume(shared: &Arc<Shared>, handle: &tokio::runtime::Handle) {
    if lock(&shared.serving).is_some() {
        return;
    }
    let listener = bind(shared.addr).expect("the API server double binds its port again");
    serve(shared, handle, listener);
}

/// Accepts connections until told to stop, then drops the listener and every
/// connection (aborting their tasks closes their sockets mid-response).
async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
    stopped: std::sync::mpsc::Sender<()>,
) {
    if let Ok(listener) = TcpListener::from_std(listener) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                    }
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        connections.shutdown().await;
    }
    let _ = stopped.send(());
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let service = service_fn(move |req: Request<Incoming>| {
        let response = handle(&shared, &req);
        async move { Ok::<_, Infallible>(response) }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// What a path names.
enum Route {
    /// `/api/v1/pods` (`namespace: None`) or `/api/v1/namespaces/NS/pods`.
    Pods { namespace: Option<String> },
    /// `/api/v1/namespaces/NS/pods/NAME`.
    Pod { namespace: String, name: String },
}

fn route(path: &str) -> Option<Route> {
    if path == "/api/v1/pods" {
        return Some(Route::Pods { namespace: None });
    }
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [namespace, "pods"] => Some(Route::Pods {
            namespace: Some((*namespace).to_string()),
        }),
        [namespace, "pods", name] => Some(Route::Pod {
            namespace: (*namespace).to_string(),
            name: (*name).to_string(),
        }),
        _ => None,
    }
}

fn handle(shared: &Arc<Shared>, req: &Request<Incoming>) -> Response<Body> {
    let served = ServedRequest {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: parse_query(req.uri().query().unwrap_or("")),
    };
    lock(&shared.store).requests.push(served.clone());
    shared.activity.bump();

    let bearer = format!("Bearer {}", shared.token);
    if req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        != Some(bearer.as_bytes())
    {
        return status_response(failure(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized".into(),
        ));
    }
    let Some(route) = route(&served.path) else {
        return status_response(failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
        ));
    };
    if req.method() != Method::GET {
        return status_response(failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "the API server double serves only GET, not {}",
                req.method()
            ),
        ));
    }
    let result = match route {
        Route::Pod { namespace, name } => get(shared, &namespace, &name),
        Route::Pods { namespace } => Filter::parse(namespace, &served).and_then(|filter| {
            if served.is_watch() {
                start_watch(shared, filter, &served)
            } else {
                list(shared, &filter, &served)
            }
        }),
    };
    result.unwrap_or_else(status_response)
}

/// Which pods a list or watch asks for.
#[derive(Clone)]
struct Filter {
    namespace: Option<String>,
    /// From `fieldSelector=spec.nodeName=NODE`; `None` without a selector.
    node: Option<String>,
}

impl Filter {
    /// Reads the selectors, refusing (400, like the real server for an
    /// unsupported field) any but `spec.nodeName=NODE`: a selector the double
    /// silently ignored would let a test pass on the wrong pods.
    fn parse(namespace: Option<String>, req: &ServedRequest) -> Result<Filter, Box<Status>> {
        if let Some(labels) = req.param("labelSelector").filter(|s| !s.is_empty()) {
            return Err(failure(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("label selectors are not supported by the API server double: {labels:?}"),
            ));
        }
        let node = match req.param("fieldSelector").filter(|s| !s.is_empty()) {
            None => None,
            Some(selector) => {
                let node = selector
                    .strip_prefix("spec.nodeName==")
                    .or_else(|| selector.strip_prefix("spec.nodeName="))
                    .filter(|node| !node.contains([',', '=', '!']));
                match node {
                    Some(node) => Some(node.to_string()),
                    None => {
                        return Err(failure(
                            StatusCode::BAD_REQUEST,
                            "BadRequest",
                            format!(
                                "field selector {selector:?} is not supported by the API server \
                                 double (only spec.nodeName=NODE)"
                            ),
                        ));
                    }
                }
            }
        };
        Ok(Filter { namespace, node })
    }

    fn matches(&self, pod: &Pod) -> bool {
        let namespace_ok = self
            .namespace
            .as_ref()
            .is_none_or(|ns| pod.metadata.namespace.as_ref() == Some(ns));
        let node_ok = self.node.as_ref().is_none_or(|node| {
            let on = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
            on.unwrap_or("") == node
        });
        namespace_ok && node_ok
    }

    /// Whether a selector narrows the set (the real server then omits
    /// `remainingItemCount`, which it cannot count cheaply).
    fn selects(&self) -> bool {
        self.node.is_some()
    }
}

fn get(shared: &Shared, namespace: &str, name: &str) -> Result<Response<Body>, Box<Status>> {
    let store = lock(&shared.store);
    match store.pods.get(&(namespace.to_string(), name.to_string())) {
        Some(pod) => Ok(json_response(StatusCode::OK, pod)),
        None => {
            let mut status = failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("pods \"{name}\" not found"),
            );
            status.details = Some(StatusDetails {
                kind: Some("pods".into()),
                name: Some(name.into()),
                ..StatusDetails::default()
            });
            Err(status)
        }
    }
}

/// A list, paged by `limit` and `continue` as the real server pages: every
/// page is cut from the snapshot at the first page's resourceVersion, and the
/// continue token (opaque to clients) carries that version and the last key.
fn list(
    shared: &Shared,
    filter: &Filter,
    req: &ServedRequest,
) -> Result<Response<Body>, Box<Status>> {
    let store = lock(&shared.store);
    let limit = match req.param("limit").filter(|s| !s.is_empty()) {
        None => None,
        Some(limit) => match limit.parse::<usize>() {
            Ok(0) => None,
            Ok(limit) => Some(limit),
            Err(_) => return Err(bad_request(format!("invalid limit {limit:?}"))),
        },
    };
    let (rv, after) = match req.param("continue").filter(|s| !s.is_empty()) {
        Some(token) => {
            let (rv, key) = decode_continue(token)
                .ok_or_else(|| bad_request(format!("continue key is not valid: {token:?}")))?;
            if rv < store.oldest {
                return Err(failure(
                    StatusCode::GONE,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list \
                     result. You can start a new list without the continue parameter, or use the \
                     continue value from the response."
                        .into(),
                ));
            }
            (rv, Some(key))
        }
        None => (list_version(&store, req)?, None),
    };
    let snapshot = store.snapshot(rv);
    let lower = match &after {
        Some(key) => Bound::Excluded(key),
        None => Bound::Unbounded,
    };
    let mut matching = snapshot
        .range::<(String, String), _>((lower, Bound::Unbounded))
        .filter(|(_, pod)| filter.matches(pod))
        .map(|(_, pod)| pod.clone());
    let items: Vec<Pod> = match limit {
        Some(limit) => matching.by_ref().take(limit).collect(),
        None => matching.by_ref().collect(),
    };
    let remaining = matching.count();
    let continue_ = match items.last() {
        Some(last) if remaining > 0 => Some(encode_continue(rv, &key(last))),
        _ => None,
    };
    let list = List::<Pod> {
        items,
        metadata: ListMeta {
            continue_,
            remaining_item_count: (remaining > 0 && !filter.selects())
                .then(|| i64::try_from(remaining).unwrap_or(i64::MAX)),
            resource_version: Some(rv.to_string()),
            self_link: None,
        },
    };
    Ok(json_response(StatusCode::OK, &list))
}

/// The resourceVersion a list without `continue` serves, from its
/// `resourceVersion` and `resourceVersionMatch` (unset: the latest; `0` or
/// `NotOlderThan`: the latest too, which is never older; `Exact`: that one).
fn list_version(store: &Store, req: &ServedRequest) -> Result<u64, Box<Status>> {
    let version_match = req.param("resourceVersionMatch").filter(|s| !s.is_empty());
    let Some(asked) = req.param("resourceVersion").filter(|s| !s.is_empty()) else {
        if version_match.is_some() {
            return Err(bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
            ));
        }
        return Ok(store.rv);
    };
    let asked: u64 = asked
        .parse()
        .map_err(|_| bad_request(format!("invalid resourceVersion {asked:?}")))?;
    if asked > store.rv {
        return Err(too_large(asked, store.rv));
    }
    match version_match {
        None | Some("NotOlderThan") => Ok(store.rv),
        Some("Exact") if asked < store.oldest => Err(failure(
            StatusCode::GONE,
            "Expired",
            format!("too old resource version: {asked} ({})", store.oldest),
        )),
        Some("Exact") => Ok(asked),
        Some(other) => Err(bad_request(format!(
            "invalid resourceVersionMatch {other:?}"
        ))),
    }
}

/// Where a watch starts.
enum From {
    /// `resourceVersion` unset, empty or `0`: the current pods as synthetic
    /// `ADDED` events first (unless `sendInitialEvents=false`), then changes.
    Now,
    /// The changes after this resourceVersion.
    After(u64),
}

/// A watch's parameters.
struct WatchRequest {
    filter: Filter,
    from: From,
    deadline: Instant,
    bookmarks: bool,
    initial_events: Option<bool>,
}

/// Answers a watch with a stream of newline-separated `WatchEvent`s that a
/// task writes until the timeout, an error event, or the client going away.
fn start_watch(
    shared: &Arc<Shared>,
    filter: Filter,
    req: &ServedRequest,
) -> Result<Response<Body>, Box<Status>> {
    let timeout = match req.param("timeoutSeconds").filter(|s| !s.is_empty()) {
        None => DEFAULT_WATCH_TIMEOUT,
        Some(secs) => Duration::from_secs(
            secs.parse()
                .map_err(|_| bad_request(format!("invalid timeoutSeconds {secs:?}")))?,
        ),
    };
    let from = match req.param("resourceVersion").filter(|s| !s.is_empty()) {
        None | Some("0") => From::Now,
        Some(rv) => From::After(
            rv.parse()
                .map_err(|_| bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let watch = WatchRequest {
        filter,
        from,
        deadline: Instant::now() + timeout,
        bookmarks: req.param("allowWatchBookmarks").is_some_and(truthy),
        initial_events: req.param("sendInitialEvents").map(truthy),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(run_watch(Arc::clone(shared), watch, tx));
    let body = StreamBody::new(ReceiverStream::new(rx).map(|line| Ok(Frame::data(line))));
    let mut response = Response::new(http_body_util::BodyExt::boxed(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, private"),
    );
    Ok(response)
}

/// Writes a watch's events. The pods' changes are read from the log under the
/// store's lock, so a watch never misses one between its catch-up and its
/// live part; the event lines go out after the lock is released.
async fn run_watch(shared: Arc<Shared>, watch: WatchRequest, tx: mpsc::Sender<Bytes>) {
    let mut changes = shared.changes.subscribe();
    changes.borrow_and_update();
    let _open = OpenWatch::new(&shared);
    let (mut cursor, expiries, mut bookmarks, opening, done) = {
        let mut store = lock(&shared.store);
        let mut lines = Vec::new();
        let mut done = false;
        let cursor = match watch.from {
            From::After(rv) if rv < store.oldest => {
                let status = failure(
                    StatusCode::GONE,
                    "Expired",
                    format!("too old resource version: {rv} ({})", store.oldest),
                );
                lines.push(error_line(&mut store, status));
                done = true;
                rv
            }
            From::After(rv) if rv > store.rv => {
                let status = too_large(rv, store.rv);
                lines.push(error_line(&mut store, status));
                done = true;
                rv
            }
            From::After(rv) => rv,
            From::Now => {
                if watch.initial_events != Some(false) {
                    let current: Vec<Pod> = store
                        .pods
                        .values()
                        .filter(|pod| watch.filter.matches(pod))
                        .cloned()
                        .collect();
                    for pod in current {
                        lines.push(event_line(&mut store, &WatchEvent::Added(pod)));
                    }
                }
                if watch.initial_events == Some(true) && watch.bookmarks {
                    let rv = store.rv;
                    lines.push(bookmark_line(&mut store, rv, true));
                }
                store.rv
            }
        };
        (cursor, store.expiries, store.bookmarks, lines, done)
    };
    if !send(&shared, &tx, opening).await || done {
        return;
    }
    loop {
        changes.borrow_and_update();
        let (lines, done) = {
            let mut store = lock(&shared.store);
            if store.expiries != expiries {
                let status = failure(
                    StatusCode::GONE,
                    "Expired",
                    format!("too old resource version: {cursor} ({})", store.oldest),
                );
                (vec![error_line(&mut store, status)], true)
            } else {
                let start = store.log.partition_point(|c| c.rv <= cursor);
                let events: Vec<WatchEvent<Pod>> = store.log[start..]
                    .iter()
                    .filter_map(|change| watch_event(change, &watch.filter))
                    .collect();
                let mut lines: Vec<Bytes> = events
                    .iter()
                    .map(|event| event_line(&mut store, event))
                    .collect();
                cursor = store.rv;
                if store.bookmarks != bookmarks {
                    bookmarks = store.bookmarks;
                    if watch.bookmarks {
                        lines.push(bookmark_line(&mut store, cursor, false));
                    }
                }
                (lines, false)
            }
        };
        if !send(&shared, &tx, lines).await || done {
            return;
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep_until(watch.deadline) => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

/// Counts a watch as open for as long as it lives.
struct OpenWatch<'a>(&'a Shared);

impl<'a> OpenWatch<'a> {
    /// Registers before the watch reads its starting point, so that a test
    /// seeing it open knows the watch will see whatever it does next.
    fn new(shared: &'a Shared) -> OpenWatch<'a> {
        lock(&shared.store).open_watches += 1;
        shared.activity.bump();
        OpenWatch(shared)
    }
}

impl Drop for OpenWatch<'_> {
    fn drop(&mut self) {
        lock(&self.0.store).open_watches -= 1;
        self.0.activity.bump();
    }
}

/// Writes `lines` to the watch; false once the client has gone.
async fn send(shared: &Shared, tx: &mpsc::Sender<Bytes>, lines: Vec<Bytes>) -> bool {
    let any = !lines.is_empty();
    for line in lines {
        if tx.send(line).await.is_err() {
            return false;
        }
    }
    if any {
        shared.activity.bump();
    }
    true
}

/// The event a watch with `filter` sees for `change`, as the real server's
/// watch cache computes it: a pod that starts matching is `ADDED`, one that
/// stops is `DELETED` with its previous content at the change's version.
fn watch_event(change: &Change, filter: &Filter) -> Option<WatchEvent<Pod>> {
    let was = change.before.as_ref().filter(|pod| filter.matches(pod));
    let is = change.after.as_ref().filter(|pod| filter.matches(pod));
    match (was, is) {
        (None, Some(now)) => Some(WatchEvent::Added(now.clone())),
        (Some(_), Some(now)) => Some(WatchEvent::Modified(now.clone())),
        (Some(then), None) => {
            let mut gone = then.clone();
            gone.metadata.resource_version = Some(change.rv.to_string());
            Some(WatchEvent::Deleted(gone))
        }
        (None, None) => None,
    }
}

/// One watch line; counts it as sent (it is, unless the client went away).
fn event_line(store: &mut Store, event: &WatchEvent<Pod>) -> Bytes {
    store.count_sent(match event {
        WatchEvent::Added(_) => "ADDED",
        WatchEvent::Modified(_) => "MODIFIED",
        WatchEvent::Deleted(_) => "DELETED",
        WatchEvent::Bookmark { .. } => "BOOKMARK",
        WatchEvent::ErrorStatus(_) | WatchEvent::ErrorOther(_) => "ERROR",
    });
    json_line(event)
}

fn error_line(store: &mut Store, status: Box<Status>) -> Bytes {
    event_line(store, &WatchEvent::<Pod>::ErrorStatus(*status))
}

/// A `BOOKMARK` line, written by hand: `k8s-openapi`'s `WatchEvent::Bookmark`
/// serializes the object without `kind` and `apiVersion`, which the real
/// server sends and kube's `Bookmark` requires (without them kube reports the
/// line as an error; the self-test pins this down).
fn bookmark_line(store: &mut Store, rv: u64, initial_events_end: bool) -> Bytes {
    store.count_sent("BOOKMARK");
    let mut metadata = serde_json::json!({ "resourceVersion": rv.to_string() });
    if initial_events_end {
        metadata["annotations"] = serde_json::json!({ INITIAL_EVENTS_END: "true" });
    }
    json_line(&serde_json::json!({
        "type": "BOOKMARK",
        "object": { "kind": "Pod", "apiVersion": "v1", "metadata": metadata },
    }))
}

fn json_line(value: &impl serde::Serialize) -> Bytes {
    let mut line = serde_json::to_vec(value).expect("k8s-openapi types serialize");
    line.push(b'\n');
    Bytes::from(line)
}

fn json_response(code: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("k8s-openapi types serialize");
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A failure `Status` as the real server sends them (`kind: Status`,
/// `status: Failure`, the HTTP code repeated in `code`); boxed, as a `Status`
/// is some 300 bytes to carry through every `Result` of the handlers.
fn failure(code: StatusCode, reason: &str, message: String) -> Box<Status> {
    Box::new(Status {
        code: Some(i32::from(code.as_u16())),
        details: None,
        message: Some(message),
        metadata: ListMeta::default(),
        reason: Some(reason.to_string()),
        status: Some("Failure".into()),
    })
}

fn bad_request(message: String) -> Box<Status> {
    failure(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn too_large(asked: u64, current: u64) -> Box<Status> {
    failure(
        StatusCode::GATEWAY_TIMEOUT,
        "Timeout",
        format!("Too large resource version: {asked}, current: {current}"),
    )
}

/// A `Status` as the whole response, with its code as the HTTP status.
fn status_response(status: Box<Status>) -> Response<Body> {
    let code = status
        .code
        .and_then(|c| u16::try_from(c).ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &status)
}

fn truthy(value: &str) -> bool {
    matches!(value, "true" | "1")
}

/// `application/x-www-form-urlencoded` pairs, as kube writes its queries
/// (`spec.nodeName%3Dnode-a`).
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A continue token: the snapshot's version and the last key served, hex
/// encoded so that it stays opaque and URL-safe.
fn encode_continue(rv: u64, key: &(String, String)) -> String {
    format!("{rv}/{}/{}", key.0, key.1)
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(token: &str) -> Option<(u64, (String, String))> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let mut parts = text.splitn(3, '/');
    let rv = parts.next()?.parse().ok()?;
    let namespace = parts.next()?.to_string();
    let name = parts.next()?.to_string();
    Some((rv, (namespace, name)))
}

/// A running pod for tests: scheduled on `node` (empty: not yet scheduled),
/// with `containers` as `(name, 64-hex container id)`, whose statuses carry
/// `containerID: containerd://ID` as the kubelet reports them.
pub fn pod(namespace: &str, name: &str, uid: &str, node: &str, containers: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: (!node.is_empty()).then(|| node.into()),
            containers: containers
                .iter()
                .map(|(container, _)| Container {
                    name: (*container).into(),
                    image: Some(format!("registry.example/{container}:1")),
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            container_statuses: Some(
                containers
                    .iter()
                    .map(|(container, id)| ContainerStatus {
                        name: (*container).into(),
                        container_id: Some(format!("containerd://{id}")),
                        image: format!("registry.example/{container}:1"),
                        image_id: format!("registry.example/{container}@sha256:{id}"),
                        ready: true,
                        restart_count: 0,
                        started: Some(true),
                        state: Some(ContainerState {
                            running: Some(ContainerStateRunning::default()),
                            ..ContainerState::default()
                        }),
                        ..ContainerStatus::default()
                    })
                    .collect(),
            ),
            ..PodStatus::default()
        }),
    }
}

/// Builder steps for test pods (`pod(..).replica_set("web-7d4b9c6f5d").label(..)`).
pub trait PodExt: Sized {
    /// Adds an owner reference (`controller: true`, as controllers set it).
    fn owned_by(self, api_version: &str, kind: &str, name: &str, uid: &str) -> Self;
    /// Owned by ReplicaSet `name` (`DEPLOYMENT-HASH`), with the
    /// `pod-template-hash: HASH` label a Deployment's pods carry.
    fn replica_set(self, name: &str) -> Self;
    fn label(self, key: &str, value: &str) -> Self;
    fn annotation(self, key: &str, value: &str) -> Self;
    /// Sets `status.podIP` and `status.podIPs`.
    fn pod_ip(self, ip: &str) -> Self;
}

impl PodExt for Pod {
    fn owned_by(mut self, api_version: &str, kind: &str, name: &str, uid: &str) -> Pod {
        self.metadata
            .owner_references
            .get_or_insert_with(Vec::new)
            .push(OwnerReference {
                api_version: api_version.into(),
                kind: kind.into(),
                name: name.into(),
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            });
        self
    }

    fn replica_set(self, name: &str) -> Pod {
        let hash = name.rsplit_once('-').map_or(name, |(_, hash)| hash);
        self.owned_by("apps/v1", "ReplicaSet", name, &format!("uid-{name}"))
            .label("pod-template-hash", hash)
    }

    fn label(mut self, key: &str, value: &str) -> Pod {
        self.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }

    fn annotation(mut self, key: &str, value: &str) -> Pod {
        self.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }

    fn pod_ip(mut self, ip: &str) -> Pod {
        let status = self.status.get_or_insert_with(PodStatus::default);
        status.pod_ip = Some(ip.into());
        status.pod_ips = Some(vec![PodIP { ip: ip.into() }]);
        self
    }
}

/// kube 5's own watcher against the double: the protocol as kube speaks it,
/// not as this file imagines it.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt as _;
    use k8s_openapi::api::core::v1::Pod;
    use kube::{
        Api, Client, ResourceExt as _,
        api::{ListParams, WatchParams},
        config::{KubeConfigOptions, Kubeconfig},
        runtime::{
            WatchStreamExt as _,
            watcher::{self, Event, watcher},
        },
    };
    use tokio::sync::mpsc;

    use super::{ApiServer, PodExt as _, pod};
    use crate::profiling::temp_dir;

    /// How long one expected step may take: generous, a wait never a sleep.
    const STEP: Duration = Duration::from_secs(5);
    const NODE: &str = "spec.nodeName=node-a";
    const ID_A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const ID_B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    type Item = Result<Event<Pod>, watcher::Error>;

    /// A kube client configured the way the agent is: from the kubeconfig file.
    async fn client(server: &ApiServer, test: &str) -> Client {
        let path = server.kubeconfig(&temp_dir(test));
        let kubeconfig = Kubeconfig::read_from(&path).expect("kube reads the kubeconfig");
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("kube accepts the kubeconfig");
        assert_eq!(config.cluster_url.to_string(), format!("{}/", server.url()));
        // kube takes HTTPS_PROXY from the environment even for a plain-http
        // loopback server, and without its `http-proxy` feature refuses to
        // build a client at all; the double is never behind a proxy.
        config.proxy_url = None;
        Client::try_from(config).expect("kube builds a client")
    }

    /// Drives `events` on a task of its own, so that the watcher keeps
    /// running (re-watching, backing off) while the test waits elsewhere.
    fn drive(
        events: impl futures::Stream<Item = Item> + Send + 'static,
    ) -> mpsc::UnboundedReceiver<Item> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(item) = events.next().await {
                if tx.send(item).is_err() {
                    return;
                }
            }
        });
        rx
    }

    async fn next(events: &mut mpsc::UnboundedReceiver<Item>) -> Item {
        tokio::time::timeout(STEP, events.recv())
            .await
            .expect("a watcher event within STEP")
            .expect("the watcher streams forever")
    }

    /// The next event, which must not be an error, as kube displays it
    /// (`InitApply(web-1)`).
    async fn next_ok(events: &mut mpsc::UnboundedReceiver<Item>) -> String {
        match next(events).await {
            Ok(event) => event.to_string(),
            Err(error) => panic!("watcher error: {error}"),
        }
    }

    /// Reads `Init`, the `InitApply`s, `InitDone`; the names listed, in order.
    async fn init(events: &mut mpsc::UnboundedReceiver<Item>) -> Vec<String> {
        assert_eq!(next_ok(events).await, "Init");
        let mut names = Vec::new();
        loop {
            match next(events).await {
                Ok(Event::InitApply(pod)) => names.push(pod.name_any()),
                Ok(Event::InitDone) => return names,
                other => panic!("during the initial list: {other:?}"),
            }
        }
    }

    fn node_a_watcher(
        client: Client,
        config: watcher::Config,
    ) -> impl futures::Stream<Item = Item> {
        watcher(Api::<Pod>::all(client), config.fields(NODE))
    }

    #[tokio::test]
    async fn lists_this_node_then_follows_live_changes() {
        let server = ApiServer::start("node-a");
        server.add(pod(
            "default",
            "web-1",
            "uid-web-1",
            "node-a",
            &[("web", ID_A)],
        ));
        server.add(pod(
            "kube-system",
            "agent",
            "uid-agent",
            "node-a",
            &[("agent", ID_B)],
        ));
        server.add(pod(
            "default",
            "elsewhere-1",
            "uid-e1",
            "node-b",
            &[("web", ID_B)],
        ));
        let client = client(&server, "kube-live").await;
        let mut events = drive(node_a_watcher(client, watcher::Config::default()));

        assert_eq!(init(&mut events).await, ["web-1", "agent"]);

        server.add(pod(
            "default",
            "elsewhere-2",
            "uid-e2",
            "node-b",
            &[("web", ID_B)],
        ));
        server.add(
            pod("default", "web-2", "uid-web-2", "node-a", &[("web", ID_B)])
                .replica_set("web-7d4b9c6f5d")
                .annotation("example.com/team", "payments"),
        );
        match next(&mut events).await {
            Ok(Event::Apply(added)) => {
                assert_eq!(added.name_any(), "web-2");
                assert_eq!(added.labels()["pod-template-hash"], "7d4b9c6f5d");
                assert_eq!(added.owner_references()[0].kind, "ReplicaSet");
                assert_eq!(added.annotations()["example.com/team"], "payments");
                let status = &added.status.as_ref().expect("status").container_statuses;
                assert_eq!(
                    status.as_ref().expect("container statuses")[0]
                        .container_id
                        .as_deref(),
                    Some(format!("containerd://{ID_B}").as_str())
                );
            }
            other => panic!("expected web-2 added: {other:?}"),
        }
        let web1 = server.pod("default", "web-1").expect("web-1 is stored");
        server.modify(web1.label("app", "web"));
        match next(&mut events).await {
            Ok(Event::Apply(modified)) => {
                assert_eq!(modified.name_any(), "web-1");
                assert_eq!(modified.labels()["app"], "web");
                assert_eq!(modified.resource_version(), Some(server.resource_version()));
            }
            other => panic!("expected web-1 modified: {other:?}"),
        }

        // The bookmark goes out before the delete: had kube failed to read
        // it, the next item would be an error.
        server.bookmark();
        assert!(server.until(STEP, |s| s.sent("BOOKMARK") == 1).await);
        server.delete("default", "web-2");
        assert_eq!(next_ok(&mut events).await, "Delete(web-2)");

        assert_eq!((server.lists(), server.watches()), (1, 1));
        assert_eq!(server.off_node_requests(), []);
        let requests = server.requests();
        let (list, watch) = (&requests[0], &requests[1]);
        assert!(list.is_list() && watch.is_watch(), "{requests:?}");
        assert_eq!(list.path, "/api/v1/pods");
        assert_eq!(list.param("limit"), Some("500"));
        assert_eq!(list.param("resourceVersion"), None);
        // Watches from the version of the list, with bookmarks, for 290 s.
        assert_eq!(watch.param("resourceVersion"), Some("3"));
        assert_eq!(watch.param("allowWatchBookmarks"), Some("true"));
        assert_eq!(watch.param("timeoutSeconds"), Some("290"));
    }

    #[tokio::test]
    async fn a_bookmark_moves_where_the_next_watch_resumes() {
        let server = ApiServer::start("node-a");
        server.add(pod(
            "default",
            "web-1",
            "uid-web-1",
            "node-a",
            &[("web", ID_A)],
        ));
        let client = client(&server, "kube-bookmark").await;
        // The server ends each watch after a second; kube then re-watches.
        let config = watcher::Config::default().timeout(1);
        let mut events = drive(node_a_watcher(client, config));
        assert_eq!(init(&mut events).await, ["web-1"]);
        assert!(server.until(STEP, |s| s.open_watches() == 1).await);

        // A change the watcher does not see moves the version on; only the
        // bookmark tells the watcher.
        server.add(pod(
            "default",
            "elsewhere",
            "uid-e",
            "node-b",
            &[("web", ID_B)],
        ));
        server.bookmark();
        assert!(server.until(STEP, |s| s.watches() == 2).await);
        let requests = server.requests();
        let watches: Vec<_> = requests.iter().filter(|r| r.is_watch()).collect();
        assert_eq!(watches[0].param("resourceVersion"), Some("1"));
        assert_eq!(watches[0].param("timeoutSeconds"), Some("1"));
        assert_eq!(watches[1].param("resourceVersion"), Some("2"));
        assert_eq!(server.lists(), 1);
        assert!(events.try_recv().is_err(), "no events, no errors");
    }

    #[tokio::test]
    async fn expiry_makes_the_watcher_list_again() {
        let server = ApiServer::start("node-a");
        server.add(pod(
            "default",
            "web-1",
            "uid-web-1",
            "node-a",
            &[("web", ID_A)],
        ));
        server.add(pod(
            "default",
            "web-2",
            "uid-web-2",
            "node-a",
            &[("web", ID_B)],
        ));
        let client = client(&server, "kube-expire").await;
        let mut events = drive(node_a_watcher(client.clone(), watcher::Config::default()));
        assert_eq!(init(&mut events).await, ["web-1", "web-2"]);
        assert!(server.until(STEP, |s| s.open_watches() == 1).await);

        server.expire();
        match next(&mut events).await {
            Err(watcher::Error::WatchError(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
                assert_eq!(status.message, "too old resource version: 2 (3)");
            }
            other => panic!("expected 410 Expired: {other:?}"),
        }
        assert_eq!(init(&mut events).await, ["web-1", "web-2"]);
        server.add(pod(
            "default",
            "web-3",
            "uid-web-3",
            "node-a",
            &[("web", ID_B)],
        ));
        assert_eq!(next_ok(&mut events).await, "Apply(web-3)");
        assert_eq!((server.lists(), server.watches()), (2, 2));
        let requests = server.requests();
        let watches: Vec<_> = requests.iter().filter(|r| r.is_watch()).collect();
        assert_eq!(watches[1].param("resourceVersion"), Some("3"));

        // A watch from an old version starts with the error, then ends.
        let api = Api::<Pod>::all(client);
        let stream = api
            .watch(&WatchParams::default().fields(NODE), "2")
            .await
            .expect("the watch starts (200), its first event is the error");
        let seen: Vec<_> = tokio::time::timeout(STEP, stream.collect::<Vec<_>>())
            .await
            .expect("the stream ends after the error");
        match seen.as_slice() {
            [Ok(kube::api::WatchEvent::Error(status))] => assert_eq!(status.code, 410),
            other => panic!("expected one 410 event: {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_watcher_survives_a_restart() {
        let server = ApiServer::start("node-a");
        server.add(pod(
            "default",
            "web-1",
            "uid-web-1",
            "node-a",
            &[("web", ID_A)],
        ));
        let client = client(&server, "kube-restart").await;
        let events = node_a_watcher(client, watcher::Config::default()).default_backoff();
        let mut events = drive(events);
        assert_eq!(init(&mut events).await, ["web-1"]);
        assert!(server.until(STEP, |s| s.open_watches() == 1).await);

        server.restart(Duration::from_millis(500));
        assert!(
            std::net::TcpStream::connect(server.addr()).is_err(),
            "refused while down"
        );
        server.add(pod(
            "default",
            "web-2",
            "uid-web-2",
            "node-a",
            &[("web", ID_B)],
        ));

        let mut errors = Vec::new();
        loop {
            match next(&mut events).await {
                Ok(event) => {
                    assert_eq!(event.to_string(), "Apply(web-2)");
                    break;
                }
                Err(error) => errors.push(error),
            }
        }
        assert!(server.is_serving());
        assert!(
            !errors.is_empty()
                && errors
                    .iter()
                    .all(|e| matches!(e, watcher::Error::WatchStartFailed(_))),
            "{errors:?}"
        );
        // Resumed from its version: the change made while down was replayed,
        // with no second list.
        assert_eq!(server.lists(), 1);
        assert!(server.watches() >= 2);
    }

    #[tokio::test]
    async fn pages_are_cut_from_one_snapshot() {
        let server = ApiServer::start("node-a");
        for i in 0..5 {
            let name = format!("web-{i}");
            server.add(pod("default", &name, &name, "node-a", &[("web", ID_A)]));
        }
        server.add(pod(
            "default",
            "elsewhere",
            "uid-e",
            "node-b",
            &[("web", ID_B)],
        ));
        let client = client(&server, "kube-pages").await;
        let config = watcher::Config::default().page_size(2);
        let mut events = drive(node_a_watcher(client.clone(), config));
        assert_eq!(
            init(&mut events).await,
            ["web-0", "web-1", "web-2", "web-3", "web-4"]
        );
        assert_eq!(server.lists(), 3);
        let requests = server.requests();
        let continues: Vec<_> = requests
            .iter()
            .filter(|r| r.is_list())
            .map(|r| r.param("continue").is_some())
            .collect();
        assert_eq!(continues, [false, true, true]);

        // Later pages keep the first page's version, even after changes.
        let api = Api::<Pod>::all(client);
        let lp = ListParams::default().fields(NODE).limit(3);
        let first = api.list(&lp).await.expect("first page");
        assert_eq!(first.metadata.resource_version.as_deref(), Some("6"));
        server.add(pod(
            "default",
            "web-9",
            "uid-web-9",
            "node-a",
            &[("web", ID_B)],
        ));
        server.delete("default", "web-4");
        let token = first.metadata.continue_.clone().expect("a continue token");
        let second = api
            .list(&lp.clone().continue_token(&token))
            .await
            .expect("second page");
        let names: Vec<_> = second.items.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["web-3", "web-4"]);
        assert_eq!(second.metadata.resource_version.as_deref(), Some("6"));
        assert_eq!(second.metadata.continue_, None);

        server.expire();
        match api.list(&lp.continue_token(&token)).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            }
            other => panic!("expected 410 for an expired continue token: {other:?}"),
        }
    }

    #[tokio::test]
    async fn streaming_lists_get_initial_events_and_their_end() {
        let server = ApiServer::start("node-a");
        server.add(pod(
            "default",
            "web-1",
            "uid-web-1",
            "node-a",
            &[("web", ID_A)],
        ));
        server.add(pod(
            "default",
            "elsewhere",
            "uid-e",
            "node-b",
            &[("web", ID_B)],
        ));
        let client = client(&server, "kube-streaming").await;
        let config = watcher::Config::default().streaming_lists();
        let mut events = drive(node_a_watcher(client, config));
        assert_eq!(init(&mut events).await, ["web-1"]);
        server.add(pod(
            "default",
            "web-2",
            "uid-web-2",
            "node-a",
            &[("web", ID_B)],
        ));
        assert_eq!(next_ok(&mut events).await, "Apply(web-2)");

        assert_eq!((server.lists(), server.watches()), (0, 1));
        let watch = &server.requests()[0];
        assert_eq!(watch.param("sendInitialEvents"), Some("true"));
        assert_eq!(watch.param("resourceVersionMatch"), Some("NotOlderThan"));
        assert_eq!(watch.param("resourceVersion"), Some("0"));
    }

    #[tokio::test]
    async fn refuses_what_it_cannot_serve() {
        let server = ApiServer::start("node-a");
        let client = client(&server, "kube-refuse").await;
        let api = Api::<Pod>::all(client);
        for lp in [
            ListParams::default().fields("metadata.name=web-1"),
            ListParams::default().fields("spec.nodeName!=node-a"),
            ListParams::default().fields("spec.nodeName=node-a,status.phase=Running"),
            ListParams::default().labels("app=web"),
        ] {
            match api.list(&lp).await {
                Err(kube::Error::Api(status)) => assert_eq!(status.code, 400, "{lp:?}"),
                other => panic!("{lp:?} must be refused: {other:?}"),
            }
        }
        // All four: a request without the node's selector is off-node too.
        assert_eq!(server.off_node_requests().len(), 4);

        // A kubeconfig with another token gets 401s.
        let dir = temp_dir("kube-refuse-token");
        let path = server.kubeconfig(&dir);
        let text = std::fs::read_to_string(&path).expect("read the kubeconfig");
        std::fs::write(&path, text.replace(server.token(), "wrong")).expect("rewrite");
        let kubeconfig = Kubeconfig::read_from(&path).expect("kube reads the kubeconfig");
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("kube accepts the kubeconfig");
        config.proxy_url = None;
        let wrong = Api::<Pod>::all(Client::try_from(config).expect("client"));
        match wrong.list(&ListParams::default().fields(NODE)).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"));
            }
            other => panic!("a wrong token must get 401: {other:?}"),
        }
    }

    /// Why the double writes bookmarks by hand: kube cannot read the ones
    /// `k8s-openapi` serializes.
    #[test]
    fn kube_needs_kind_and_api_version_in_bookmarks() {
        let openapi = k8s_openapi::apimachinery::pkg::apis::meta::v1::WatchEvent::<Pod>::Bookmark {
            annotations: Default::default(),
            resource_version: "7".into(),
        };
        let line = serde_json::to_string(&openapi).expect("serializes");
        assert!(
            serde_json::from_str::<kube::api::WatchEvent<Pod>>(&line).is_err(),
            "{line}"
        );

        let mut store = super::Store::default();
        let ours = super::bookmark_line(&mut store, 7, false);
        match serde_json::from_slice::<kube::api::WatchEvent<Pod>>(&ours) {
            Ok(kube::api::WatchEvent::Bookmark(bookmark)) => {
                assert_eq!(bookmark.metadata.resource_version, "7");
            }
            other => panic!("{other:?}"),
        }
    }

    /// Sync tests drive the double with plain calls.
    #[test]
    fn serves_sync_tests_too() {
        let server = ApiServer::start("node-a");
        server.add(pod(
            "default",
            "web-1",
            "uid-web-1",
            "node-a",
            &[("web", ID_A)],
        ));
        let mut stream = std::net::TcpStream::connect(server.addr()).expect("connect");
        let request = format!(
            "GET /api/v1/namespaces/default/pods/web-1 HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {}\r\nConnection: close\r\n\r\n",
            server.token()
        );
        std::io::Write::write_all(&mut stream, request.as_bytes()).expect("send");
        let mut response = String::new();
        std::io::Read::read_to_string(&mut stream, &mut response).expect("read");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains(r#""resourceVersion":"1""#), "{response}");
        assert!(server.wait_until(STEP, |s| s.requests().len() == 1));
    }
}
