//! Socket I/O capture, end to end: the real kernel programs observe a helper
//! process doing a client/server exchange on loopback with one syscall family,
//! and the events must carry the exact bytes, directions, pids, ports and
//! connection ids. Needs root; skips with a message otherwise.

use std::time::Duration;

use agent::{
    Observed,
    capture::{Direction, EventKind},
    conn::Role,
};
use agent_common::{DEFAULT_CAPTURE_BYTES, Loss};
use e2e::{Report, Running, Traffic, payloads, privileged, settings};

const TRAFFIC: &str = env!("CARGO_BIN_EXE_traffic");
const DEADLINE: Duration = Duration::from_secs(20);

/// Runs `scenario` in a fresh helper under a fresh agent; returns the helper's
/// report and its events once both of its sockets were closed.
async fn run(scenario: &str) -> (Report, Vec<Observed>, Running) {
    let mut agent = Running::start(settings()).await.expect("agent starts");
    let (pid, report) = Traffic::run(TRAFFIC, scenario).await;
    let events = agent
        .collect_until(pid, DEADLINE, |ev| {
            closed(ev, report.client_fd) && closed(ev, report.server_fd)
        })
        .await;
    assert!(events.iter().all(|e| e.pid == pid));
    (report, events, agent)
}

fn closed(events: &[Observed], fd: i32) -> bool {
    events
        .iter()
        .any(|e| e.fd == fd && e.kind == EventKind::Close)
}

fn one(events: &[Observed], fd: i32, kind: EventKind) -> &Observed {
    let found: Vec<&Observed> = events
        .iter()
        .filter(|e| e.fd == fd && e.kind == kind)
        .collect();
    assert_eq!(found.len(), 1, "one {kind:?} on fd {fd}: {events:#?}");
    found[0]
}

fn data(events: &[Observed], fd: i32, direction: Direction) -> Vec<&Observed> {
    events
        .iter()
        .filter(|e| e.fd == fd && e.direction == Some(direction))
        .collect()
}

/// Checks one direction of one socket: the exact bytes, the syscall, the
/// connection id and the peer port.
fn assert_flow(
    events: &[Observed],
    fd: i32,
    direction: Direction,
    syscall: &str,
    expected: &[u8],
    conn_id: Option<u64>,
    peer_port: u16,
) {
    let flow = data(events, fd, direction);
    assert!(
        !flow.is_empty(),
        "no {direction:?} data on fd {fd}: {events:#?}"
    );
    let payload: Vec<u8> = flow.iter().flat_map(|e| e.payload.clone()).collect();
    assert_eq!(payload, expected, "{direction:?} bytes on fd {fd}");
    let moved: i64 = flow.iter().map(|e| e.bytes).sum();
    assert_eq!(moved, expected.len() as i64);
    for e in &flow {
        assert_eq!(e.syscall, syscall);
        assert!(!e.truncated);
        if let Some(conn_id) = conn_id {
            assert_eq!(e.conn_id, conn_id);
        }
        assert_eq!(e.peer.map(|p| p.port()), Some(peer_port), "peer of {e:?}");
    }
    // All of a socket's data carries one connection id.
    assert!(flow.iter().all(|e| e.conn_id == flow[0].conn_id));
}

/// The connect and accept events of a TCP pair; returns their connection ids.
fn assert_connection(events: &[Observed], report: &Report) -> (u64, u64) {
    let connect = one(events, report.client_fd, EventKind::Connect);
    assert_eq!(connect.role, Role::Client);
    assert_eq!(connect.peer.map(|p| p.port()), Some(report.server_port));
    let client_local = events
        .iter()
        .filter(|e| e.fd == report.client_fd)
        .find_map(|e| e.local);
    assert_eq!(
        client_local.map(|p| p.port()),
        Some(report.client_port),
        "client local port"
    );
    let accept = one(events, report.server_fd, EventKind::Accept);
    assert_eq!(accept.role, Role::Server);
    assert_eq!(accept.peer.map(|p| p.port()), Some(report.client_port));
    assert_eq!(accept.local.map(|p| p.port()), Some(report.server_port));
    assert_ne!(connect.conn_id, accept.conn_id);
    // Close carries the same connection id.
    assert_eq!(
        one(events, report.client_fd, EventKind::Close).conn_id,
        connect.conn_id
    );
    assert_eq!(
        one(events, report.server_fd, EventKind::Close).conn_id,
        accept.conn_id
    );
    (connect.conn_id, accept.conn_id)
}

async fn tcp_exchange(scenario: &str, egress: &str, ingress: &str) {
    let (report, events, agent) = run(scenario).await;
    let (client_id, server_id) = assert_connection(&events, &report);
    // The kernel names the thread once per connection; every event still
    // carries it.
    assert!(
        events.iter().all(|e| e.comm == "traffic"),
        "comm: {:?}",
        events.iter().map(|e| &e.comm).collect::<Vec<_>>()
    );
    let (request, response) = if scenario == "msg" || scenario == "vec" {
        (payloads::MSG_PARTS.concat(), Vec::new())
    } else {
        (payloads::REQUEST.to_vec(), payloads::RESPONSE.to_vec())
    };
    let (c, s) = (report.client_fd, report.server_fd);
    assert_flow(
        &events,
        c,
        Direction::Egress,
        egress,
        &request,
        Some(client_id),
        report.server_port,
    );
    assert_flow(
        &events,
        s,
        Direction::Ingress,
        ingress,
        &request,
        Some(server_id),
        report.client_port,
    );
    if !response.is_empty() {
        assert_flow(
            &events,
            s,
            Direction::Egress,
            egress,
            &response,
            Some(server_id),
            report.client_port,
        );
        assert_flow(
            &events,
            c,
            Direction::Ingress,
            ingress,
            &response,
            Some(client_id),
            report.server_port,
        );
    }
    let stats = agent.handle.stop().await;
    assert_eq!(stats.kernel_loss(Loss::RingbufFull), 0);
    assert_eq!(stats.dropped_queue_full, 0);
    assert_eq!(stats.decode_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_and_read() {
    if privileged("write_and_read") {
        tcp_exchange("rw", "write", "read").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_recv() {
    if privileged("send_and_recv") {
        // glibc implements send/recv with the sendto/recvfrom syscalls.
        tcp_exchange("sendrecv", "sendto", "recvfrom").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendmsg_and_recvmsg_with_several_iovecs() {
    if privileged("sendmsg_and_recvmsg_with_several_iovecs") {
        tcp_exchange("msg", "sendmsg", "recvmsg").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writev_and_readv() {
    if privileged("writev_and_readv") {
        tcp_exchange("vec", "writev", "readv").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_sendto_and_recvfrom_carry_addresses() {
    if !privileged("udp_sendto_and_recvfrom_carry_addresses") {
        return;
    }
    let (report, events, agent) = run("udp").await;
    let (c, s) = (report.client_fd, report.server_fd);
    assert_flow(
        &events,
        c,
        Direction::Egress,
        "sendto",
        payloads::REQUEST,
        None,
        report.server_port,
    );
    assert_flow(
        &events,
        s,
        Direction::Ingress,
        "recvfrom",
        payloads::REQUEST,
        None,
        report.client_port,
    );
    assert_flow(
        &events,
        s,
        Direction::Egress,
        "sendto",
        payloads::RESPONSE,
        None,
        report.client_port,
    );
    assert_flow(
        &events,
        c,
        Direction::Ingress,
        "recvfrom",
        payloads::RESPONSE,
        None,
        report.server_port,
    );
    for e in events.iter().filter(|e| e.kind == EventKind::Data) {
        assert!(e.addr.is_some(), "datagram without address: {e:?}");
    }
    agent.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendmmsg_and_recvmmsg_report_each_datagram() {
    if !privileged("sendmmsg_and_recvmmsg_report_each_datagram") {
        return;
    }
    let (report, events, agent) = run("mmsg").await;
    for (fd, direction, syscall, peer) in [
        (
            report.client_fd,
            Direction::Egress,
            "sendmmsg",
            report.server_port,
        ),
        (
            report.server_fd,
            Direction::Ingress,
            "recvmmsg",
            report.client_port,
        ),
    ] {
        let flow = data(&events, fd, direction);
        let got: Vec<&[u8]> = flow.iter().map(|e| e.payload.as_slice()).collect();
        assert_eq!(got, payloads::DATAGRAMS, "{syscall}");
        for (e, d) in flow.iter().zip(payloads::DATAGRAMS) {
            assert_eq!(e.syscall, syscall);
            assert_eq!(e.bytes, d.len() as i64);
            assert_eq!(e.addr.map(|a| a.port()), Some(peer));
        }
    }
    agent.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_larger_than_the_cap_is_truncated_with_exact_counts() {
    if !privileged("payload_larger_than_the_cap_is_truncated_with_exact_counts") {
        return;
    }
    let (report, events, agent) = run("big").await;
    let big = payloads::big();
    let cap = DEFAULT_CAPTURE_BYTES as usize;

    let sent = data(&events, report.client_fd, Direction::Egress);
    assert_eq!(sent.len(), 1, "one write syscall");
    assert_eq!(sent[0].bytes, payloads::BIG_LEN as i64);
    assert_eq!(sent[0].captured, cap);
    assert!(sent[0].truncated);
    assert_eq!(sent[0].payload, big[..cap]);

    // The reads: every captured prefix sits at its exact offset, counts add up.
    let received = data(&events, report.server_fd, Direction::Ingress);
    let mut offset = 0usize;
    for e in &received {
        assert_eq!(
            e.payload,
            big[offset..offset + e.captured],
            "read at offset {offset}"
        );
        assert_eq!(e.truncated, (e.captured as i64) < e.bytes);
        offset += e.bytes as usize;
    }
    assert_eq!(offset, payloads::BIG_LEN);
    let stats = agent.handle.stop().await;
    assert!(stats.bytes_not_captured > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_opened_before_the_agent_started() {
    if !privileged("connection_opened_before_the_agent_started") {
        return;
    }
    let mut traffic = Traffic::spawn(TRAFFIC, "rw", true).expect("helper starts");
    let pid = traffic.pid();
    // The helper's connection is up before this agent exists.
    let mut agent = Running::start(settings()).await.expect("agent starts");
    traffic.go().expect("go");
    let report = tokio::task::spawn_blocking(move || traffic.finish())
        .await
        .expect("join")
        .expect("helper succeeds");
    let events = agent
        .collect_until(pid, DEADLINE, |ev| {
            closed(ev, report.client_fd) && closed(ev, report.server_fd)
        })
        .await;

    let client = one(&events, report.client_fd, EventKind::Existing);
    assert_eq!(client.role, Role::Client);
    assert_eq!(client.peer.map(|p| p.port()), Some(report.server_port));
    assert_eq!(client.local.map(|p| p.port()), Some(report.client_port));
    let server = one(&events, report.server_fd, EventKind::Existing);
    assert_eq!(server.role, Role::Server);
    assert_eq!(server.peer.map(|p| p.port()), Some(report.client_port));

    let (c, s) = (report.client_fd, report.server_fd);
    assert_flow(
        &events,
        c,
        Direction::Egress,
        "write",
        payloads::REQUEST,
        Some(client.conn_id),
        report.server_port,
    );
    assert_flow(
        &events,
        s,
        Direction::Ingress,
        "read",
        payloads::REQUEST,
        Some(server.conn_id),
        report.client_port,
    );
    assert_flow(
        &events,
        s,
        Direction::Egress,
        "write",
        payloads::RESPONSE,
        Some(server.conn_id),
        report.client_port,
    );
    assert_flow(
        &events,
        c,
        Direction::Ingress,
        "read",
        payloads::RESPONSE,
        Some(client.conn_id),
        report.server_port,
    );
    agent.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_never_reports_its_own_process() {
    if !privileged("agent_never_reports_its_own_process") {
        return;
    }
    let mut agent = Running::start(settings()).await.expect("agent starts");
    // Traffic of this very process (the agent's own tgid)...
    let own = std::process::id();
    tokio::task::spawn_blocking(|| {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(b"own traffic").expect("write");
        let mut buf = [0u8; 11];
        server.read_exact(&mut buf).expect("read");
    })
    .await
    .expect("own traffic");
    // ...then a helper's, which must arrive.
    let (pid, report) = Traffic::run(TRAFFIC, "rw").await;
    let helper = agent
        .collect_until(pid, DEADLINE, |ev| closed(ev, report.server_fd))
        .await;
    assert!(closed(&helper, report.server_fd), "helper events arrive");
    let mine = agent.collect_until(own, Duration::ZERO, |_| false).await;
    assert!(mine.is_empty(), "own events reported: {mine:#?}");
    agent.handle.stop().await;
}
