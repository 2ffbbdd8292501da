//! Span ↔ profile correlation with no SDK: CPU samples taken while a thread
//! serves a request carry that request's span id (pprof label `span_id`,
//! OTLP profile links), the server span says so (`pyroscope.profile.id`),
//! and a thread serving two requests at once gets no link at all.

use std::{collections::HashMap, time::Duration};

use agent::spans::{Span, SpanKind, Value};
use e2e::{
    Running, peers, privileged, profile_receivers,
    profiling::{Stack, build_corr_server, decode_gz, settings, stacks, temp_dir},
};

const DEADLINE: Duration = Duration::from_secs(20);
const FREQUENCY: u64 = 99;

fn text(span: &Span, key: &str) -> Option<String> {
    match span.attribute(key)? {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::StrArray(a) => Some(a.join(",")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// CPU time of the samples in `stacks` labelled `span`, in ns.
fn cpu_of(stacks: &[Stack], span: Option<&str>) -> i64 {
    stacks
        .iter()
        .filter(|s| s.span_id.as_deref() == span)
        .map(|s| s.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_samples_carry_the_span_they_were_taken_in() {
    let test = "cpu_samples_carry_the_span_they_were_taken_in";
    if !privileged(test) {
        return;
    }
    let dir = temp_dir("corr");
    let server_exe = build_corr_server(&dir.join("corr_server"));
    let (pyro_addr, mut pushes) = profile_receivers::pyroscope().await.expect("receiver");
    let (otlp_addr, mut otlp) = profile_receivers::otlp_profiles().await.expect("receiver");
    let port = peers::free_port();
    let mut s = e2e::profiling::settings_to_receivers(FREQUENCY, &dir, pyro_addr, otlp_addr);
    s.ports = vec![port];
    let mut agent = Running::start(s).await.expect("agent starts");
    let mut server = std::process::Command::new(&server_exe)
        .arg(port.to_string())
        .spawn()
        .expect("corr_server");
    peers::wait_listening(port, "the server");
    // One keep-alive connection: a quick request, a burn, a burn that
    // carries its caller's trace, a quick one.
    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let client = peers::python(format!(
        r#"
import http.client
c = http.client.HTTPConnection("127.0.0.1", {port})
for path, headers in (("/quick", {{}}), ("/burn", {{}}),
        ("/burn", {{"traceparent": "00-{caller_trace}-b7ad6b7169203331-01"}}), ("/quick", {{}})):
    c.request("GET", path, headers=headers); c.getresponse().read()
"#
    ))
    .await;
    let spans = agent
        .spans_until(&[server.id()], DEADLINE, |s| s.len() >= 4)
        .await;
    let _ = server.kill();
    let _ = server.wait();
    agent.handle.stop().await;
    let _ = client;

    let servers: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .collect();
    let paths: Vec<Option<String>> = servers.iter().map(|s| text(s, "url.path")).collect();
    assert_eq!(
        paths,
        ["/quick", "/burn", "/burn", "/quick"].map(|p| Some(p.to_string())),
        "{spans:#?}"
    );
    let (burn, traced) = (servers[1], servers[2]);
    assert_eq!(hex(&traced.trace_id), caller_trace, "the caller's trace");
    for span in [burn, traced] {
        assert_eq!(
            text(span, "pyroscope.profile.id"),
            Some(hex(&span.span_id)),
            "a span with samples names them: {span:#?}"
        );
    }

    // Pyroscope: the service's pprof, its samples labelled by span.
    let service = burn.resource.service_name.clone();
    let push = tokio::time::timeout(DEADLINE, pushes.recv())
        .await
        .expect("a push")
        .expect("push");
    let series = push
        .series(&service)
        .unwrap_or_else(|| panic!("a series with the span's service.name {service:?}"));
    let profile = decode_gz(&series.samples[0].raw_profile);
    let all = stacks(&profile);
    let expected_ns = 0.4 * 1e9;
    for span in [burn, traced] {
        let id = hex(&span.span_id);
        let linked: Vec<&Stack> = all
            .iter()
            .filter(|s| s.span_id.as_deref() == Some(id.as_str()))
            .collect();
        assert!(
            linked
                .iter()
                .all(|s| s.functions.iter().any(|f| f == "burn_request")),
            "{id}: only the request's burn: {linked:#?}"
        );
        let cpu = cpu_of(&all, Some(&id));
        assert!(
            cpu as f64 >= 0.6 * expected_ns,
            "{id}: {cpu} ns of samples for a 400 ms burn"
        );
    }
    let background: Vec<&Stack> = all
        .iter()
        .filter(|s| s.functions.iter().any(|f| f == "background_spin"))
        .collect();
    assert!(!background.is_empty(), "the background thread was sampled");
    assert!(
        background.iter().all(|s| s.span_id.is_none()),
        "no span on background work: {background:#?}"
    );
    // A sample may also land while a /quick request is served: it is that
    // request's, never another process's or a made-up span.
    let linked_spans: std::collections::HashSet<&str> =
        all.iter().filter_map(|s| s.span_id.as_deref()).collect();
    let expected: std::collections::HashSet<String> =
        servers.iter().map(|s| hex(&s.span_id)).collect();
    assert!(
        linked_spans.iter().all(|id| expected.contains(*id)),
        "only this server's spans: {linked_spans:?}"
    );
    for quick in [servers[0], servers[3]] {
        let id = hex(&quick.span_id);
        assert!(
            all.iter()
                .filter(|s| s.span_id.as_deref() == Some(id.as_str()))
                .all(|s| s.functions.iter().all(|f| f != "burn_request")),
            "a /quick request never holds a burn"
        );
    }

    // OTLP: each linked sample points at (trace id, span id) in the link table.
    let request = tokio::time::timeout(DEADLINE, otlp.recv())
        .await
        .expect("an OTLP export")
        .expect("request");
    let dict = request.dictionary.as_ref().expect("dictionary");
    let mut links: HashMap<String, String> = HashMap::new();
    for rp in &request.resource_profiles {
        for sample in &rp.scope_profiles[0].profiles[0].samples {
            if sample.link_index != 0 {
                let link = &dict.link_table[sample.link_index as usize];
                links.insert(hex(&link.span_id), hex(&link.trace_id));
            }
        }
    }
    for span in [burn, traced] {
        assert_eq!(
            links.get(&hex(&span.span_id)),
            Some(&hex(&span.trace_id)),
            "link of {}: {links:?}",
            hex(&span.span_id)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_loop_serving_two_requests_gets_no_links() {
    let test = "an_event_loop_serving_two_requests_gets_no_links";
    if !privileged(test) {
        return;
    }
    let dir = temp_dir("corr-asyncio");
    let port = peers::free_port();
    let mut s = settings(FREQUENCY, &dir);
    s.ports = vec![port];
    let mut agent = Running::start(s).await.expect("agent starts");
    // One thread, many requests: /slow waits a second (awaiting) then spins
    // 300 ms; /burn spins 400 ms while /slow is in flight on the same
    // thread. Going by "the thread's latest request", /slow's spin would be
    // labelled with /burn's span (answered, the thread not reading since).
    let mut server = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            r#"
import asyncio, time
def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
async def handle(reader, writer):
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return
        if head.startswith(b"GET /slow"):
            await asyncio.sleep(1)
            burn(0.3)
        elif head.startswith(b"GET /burn"):
            burn(0.4)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        await writer.drain()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", {port})
    await server.serve_forever()
asyncio.run(main())
"#
        ))
        .spawn()
        .expect("python3");
    peers::wait_listening(port, "the server");
    let client = peers::python(format!(
        r#"
import http.client, threading, time
def get(path):
    c = http.client.HTTPConnection("127.0.0.1", {port})
    c.request("GET", path); c.getresponse().read()
slow = threading.Thread(target=get, args=("/slow",))
slow.start(); time.sleep(0.2)
get("/burn")
slow.join()
get("/burn")
"#
    ))
    .await;
    let _ = client;
    let spans = agent
        .spans_until(&[server.id()], DEADLINE, |s| s.len() >= 3)
        .await;
    let snapshot = agent.handle.snapshot();
    let _ = server.kill();
    let _ = server.wait();
    agent.handle.stop().await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    assert!(
        spans
            .iter()
            .all(|s| text(s, "pyroscope.profile.id").is_none()),
        "no span claims samples: {spans:#?}"
    );
    assert!(
        snapshot.kernel_loss(agent_common::Loss::CtxMultiplexedThreads) >= 1,
        "the thread was found serving two requests"
    );
    let python = spans[0].resource.service_name.clone();
    let (_, profile) = e2e::profiling::read_pprof(&dir, &python);
    let mine: Vec<Stack> = stacks(&profile)
        .into_iter()
        .filter(|s| s.pid == i64::from(server.id()))
        .collect();
    assert!(!mine.is_empty(), "the server was sampled");
    assert!(
        mine.iter().all(|s| s.span_id.is_none()),
        "no sample of the event loop is linked: {:?}",
        mine.iter().filter(|s| s.span_id.is_some()).count()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverse_proxy_parents_every_upstream_call_right() {
    let test = "a_reverse_proxy_parents_every_upstream_call_right";
    if !privileged(test) {
        return;
    }
    let backend = peers::Server::plain_nginx();
    let proxy = peers::Server::proxy_nginx(backend.port);
    let mut s = e2e::settings_for_ports(&[proxy.port, backend.port]);
    s.profiling.enabled = false;
    let mut agent = Running::start(s).await.expect("agent starts");
    // 16 clients at once, 1,000 requests, a unique path each: the proxy's one
    // event-loop thread interleaves them.
    const REQUESTS: usize = 1000;
    let client = peers::python(format!(
        r#"
import http.client, threading
def run(k):
    c = http.client.HTTPConnection("127.0.0.1", {port})
    for i in range(k, {REQUESTS}, 16):
        c.request("GET", "/u/%d" % i); c.getresponse().read()
threads = [threading.Thread(target=run, args=(k,)) for k in range(16)]
for t in threads: t.start()
for t in threads: t.join()
"#,
        port = proxy.port
    ))
    .await;
    let _ = client;
    let spans = agent
        .spans_until(&[proxy.pid()], Duration::from_secs(60), |s| {
            s.len() >= 2 * REQUESTS
        })
        .await;
    agent.handle.stop().await;
    let by_path = |kind: SpanKind| -> HashMap<String, &Span> {
        spans
            .iter()
            .filter(|s| s.kind == kind)
            .filter_map(|s| Some((text(s, "url.path").or_else(|| path_of_full(s))?, s)))
            .collect()
    };
    let (servers, clients) = (by_path(SpanKind::Server), by_path(SpanKind::Client));
    assert_eq!(servers.len(), REQUESTS, "the proxy's server spans");
    assert_eq!(clients.len(), REQUESTS, "the proxy's upstream calls");
    let (mut right, mut wrong, mut orphans) = (0, Vec::new(), 0);
    for (path, call) in &clients {
        match call.parent_span_id {
            None => orphans += 1,
            Some(parent) if parent == servers[path].span_id => right += 1,
            Some(_) => wrong.push(path.clone()),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} upstream calls under another request: {wrong:?}",
        wrong.len()
    );
    assert_eq!(right, REQUESTS, "{orphans} calls without a parent");
}

/// The path of a client span's `url.full`.
fn path_of_full(span: &Span) -> Option<String> {
    let full = text(span, "url.full")?;
    let rest = full.split_once("://")?.1;
    Some(rest[rest.find('/')?..].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thread_map_is_pinned_for_other_profilers() {
    let test = "the_thread_map_is_pinned_for_other_profilers";
    if !privileged(test) {
        return;
    }
    let mounted = std::fs::read_to_string("/proc/mounts")
        .is_ok_and(|m| m.lines().any(|l| l.contains(" /sys/fs/bpf bpf ")));
    if !mounted {
        let status = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status()
            .expect("mount");
        assert!(status.success(), "mounting bpffs");
    }
    let dir = temp_dir("corr-pin");
    let server_exe = build_corr_server(&dir.join("corr_server"));
    let pin = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/e2e-{}/traces_ctx_v1",
        std::process::id()
    ));
    let port = peers::free_port();
    let mut s = e2e::settings_for_ports(&[port]);
    s.profiling.enabled = false;
    s.pin_trace_context = Some(pin.clone());
    let mut agent = Running::start(s).await.expect("agent starts");
    assert!(pin.exists(), "pinned at {}", pin.display());
    let mut server = std::process::Command::new(&server_exe)
        .arg(port.to_string())
        .spawn()
        .expect("corr_server");
    peers::wait_listening(port, "the server");
    let server_pid = server.id();
    let client = tokio::spawn(peers::python(format!(
        r#"
import http.client
c = http.client.HTTPConnection("127.0.0.1", {port})
c.request("GET", "/burn"); c.getresponse().read()
"#
    )));
    // What another profiler sees while the request burns: the server
    // thread's entry, read from the pin alone.
    let seen = tokio::task::spawn_blocking(move || {
        let until = std::time::Instant::now() + DEADLINE;
        loop {
            let data = aya::maps::MapData::from_pin(&pin).expect("open the pin");
            let map: aya::maps::HashMap<_, u64, agent_common::TraceCtx> =
                aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data)).expect("map");
            let entries: Vec<(u64, agent_common::TraceCtx)> = map
                .iter()
                .filter_map(Result::ok)
                .filter(|(key, _)| (key >> 32) as u32 == server_pid)
                .collect();
            if !entries.is_empty() || std::time::Instant::now() > until {
                return entries;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .expect("join");
    let _ = client.await;
    let spans = agent
        .spans_until(&[server_pid], DEADLINE, |s| !s.is_empty())
        .await;
    let _ = server.kill();
    let _ = server.wait();
    let pin = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/e2e-{}/traces_ctx_v1",
        std::process::id()
    ));
    agent.handle.stop().await;
    let burn = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server)
        .unwrap_or_else(|| panic!("the /burn span: {spans:#?}"));
    assert_eq!(seen.len(), 1, "one thread serving: {seen:?}");
    let (key, ctx) = seen[0];
    assert_eq!(key as u32, server_pid, "the main thread (tid) serves");
    assert_eq!(ctx.span_id, burn.span_id, "the span's own id");
    assert_eq!(ctx.trace_id, burn.trace_id);
    assert!(!pin.exists(), "the pin is removed at stop");
    let _ = std::fs::remove_dir(pin.parent().expect("dir"));
    let _ = std::fs::remove_dir_all(&dir);
}
