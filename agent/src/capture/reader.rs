//! The ring buffer reader: one task, woken by epoll readiness (tokio `AsyncFd`) or
//! by its poll interval, drains every record, decodes it and hands it on through a
//! bounded queue. It never waits for the consumer: a full queue drops the event
//! and counts it.
//!
//! The kernel only wakes it when enough bytes are waiting (`WAKEUP_BYTES`): a
//! wakeup per record costs the traced thread more than everything else the
//! programs do. The poll interval bounds how long a lone record can wait.

use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, watch},
};

use super::event::{Record, decode_record};
use crate::self_metrics::SelfMetrics;

pub async fn run(
    ring: RingBuf<MapData>,
    poll: std::time::Duration,
    tx: mpsc::Sender<Record>,
    metrics: Arc<SelfMetrics>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns the
    // RingBuf, and always returns that same fd.
    let mut fd = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("registering the ring buffer fd: {e}"))?;
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => drain(fd.get_mut(), &tx, &metrics),
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &tx, &metrics);
                guard.clear_ready();
            }
            _ = shutdown.changed() => break,
        }
    }
    // Whatever is still in the ring buffer at shutdown is delivered too.
    drain(fd.get_mut(), &tx, &metrics);
    Ok(())
}

fn drain(ring: &mut RingBuf<MapData>, tx: &mpsc::Sender<Record>, metrics: &SelfMetrics) {
    while let Some(record) = ring.next() {
        SelfMetrics::add(&metrics.events_received, 1);
        let event = match decode_record(&record) {
            Ok(event) => event,
            Err(error) => {
                SelfMetrics::add(&metrics.decode_errors, 1);
                tracing::debug!(%error, "undecodable ring buffer record");
                continue;
            }
        };
        if let Record::Socket(e) = &event {
            SelfMetrics::add(&metrics.bytes_captured, e.payload.len() as u64);
        }
        if tx.try_send(event).is_err() {
            SelfMetrics::add(&metrics.dropped_queue_full, 1);
        }
    }
}
