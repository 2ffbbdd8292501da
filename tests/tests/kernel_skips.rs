//! What the kernel skips on userspace's word, end to end: the data of a
//! connection no parser wants (flag `OPAQUE`), and every syscall of a process
//! `--exe`/`--pid` exclude (the `VERDICTS` map). Both are counted in
//! `agent_kernel_skipped_total`, and neither hides a connection's close. And
//! what it skips on its own: `MSG_PEEK` reads, whose bytes are read again.
//! Needs root; skips with a message otherwise.

use std::time::Duration;

use agent::capture::{Direction, EventKind};
use agent_common::Loss;
use e2e::{Running, Traffic, payloads, privileged, settings};

const TRAFFIC: &str = env!("CARGO_BIN_EXE_traffic");
const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_connection_data_is_skipped_in_the_kernel_but_its_close_is_seen() {
    if !privileged("opaque_connection_data_is_skipped_in_the_kernel_but_its_close_is_seen") {
        return;
    }
    let mut agent = Running::start(settings()).await.expect("agent starts");
    let (pid, report) = Traffic::run(TRAFFIC, "opaque").await;
    let events = agent
        .collect_until(pid, DEADLINE, |ev| {
            [report.client_fd, report.server_fd]
                .iter()
                .all(|fd| ev.iter().any(|e| e.fd == *fd && e.kind == EventKind::Close))
        })
        .await;
    let writes = events
        .iter()
        .filter(|e| e.fd == report.client_fd && e.direction == Some(Direction::Egress))
        .count();
    // Detection looks at 16 chunks before it gives up; a few more may be in
    // flight while the kernel is told. Far fewer than were written.
    assert!(
        (16..payloads::OPAQUE_WRITES - 16).contains(&writes),
        "{writes} of {} writes reached userspace",
        payloads::OPAQUE_WRITES
    );
    let snapshot = agent.handle.snapshot();
    assert!(
        snapshot.kernel_loss(Loss::OpaqueSkipped) > 0,
        "{snapshot:?}"
    );
    assert!(snapshot.connections_opaque >= 1, "{snapshot:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peeked_bytes_are_not_counted_twice() {
    if !privileged("peeked_bytes_are_not_counted_twice") {
        return;
    }
    let mut agent = Running::start(settings()).await.expect("agent starts");
    let (pid, report) = Traffic::run(TRAFFIC, "peek").await;
    let events = agent
        .collect_until(pid, DEADLINE, |ev| {
            ev.iter()
                .any(|e| e.fd == report.server_fd && e.kind == EventKind::Close)
        })
        .await;
    let read: i64 = events
        .iter()
        .filter(|e| e.fd == report.server_fd && e.direction == Some(Direction::Ingress))
        .map(|e| e.bytes)
        .sum();
    assert_eq!(
        read,
        payloads::REQUEST.len() as i64,
        "the stream holds each byte once: {events:#?}"
    );
    let snapshot = agent.handle.snapshot();
    assert!(snapshot.kernel_loss(Loss::Peeked) >= 2, "{snapshot:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_process_is_skipped_in_the_kernel() {
    if !privileged("excluded_process_is_skipped_in_the_kernel") {
        return;
    }
    // --exe that matches nothing; --pid of a process that does no socket I/O.
    for filtered in [
        agent::Settings {
            exes: vec!["no-such-program".into()],
            ..settings()
        },
        agent::Settings {
            pids: vec![1],
            ..settings()
        },
    ] {
        excluded(filtered).await;
    }
}

async fn excluded(filtered: agent::Settings) {
    let mut agent = Running::start(filtered).await.expect("agent starts");
    // The helper's first events reach userspace, which judges it; from then
    // on (a few ms into its third of a second of writes) the kernel skips it.
    let (pid, _) = Traffic::run(TRAFFIC, "opaque").await;
    let events = agent
        .collect_until(pid, Duration::from_secs(1), |ev| !ev.is_empty())
        .await;
    assert!(
        events.is_empty(),
        "events of an excluded process: {events:#?}"
    );
    let snapshot = agent.handle.snapshot();
    assert!(
        snapshot.kernel_loss(Loss::ProcessFiltered) > 0,
        "the kernel skipped nothing: {snapshot:?}"
    );
    assert!(snapshot.events_filtered > 0, "{snapshot:?}");
}
