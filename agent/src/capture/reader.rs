//! The ring buffer reader: one task, woken by epoll readiness (tokio `AsyncFd`) or
//! by its poll interval, drains every record, decodes it and hands it on through a
//! bounded queue, in batches of up to [`BATCH`] records (one queue operation per
//! batch instead of per event). It never waits for the consumer: a full queue
//! drops the batch and counts its events.
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

/// Records handed over at once.
pub const BATCH: usize = 256;

/// Queue slots (batches) for a budget of `events` queued events.
pub fn queue_batches(events: usize) -> usize {
    (events / BATCH).max(4)
}

pub async fn run(
    ring: RingBuf<MapData>,
    poll: std::time::Duration,
    tx: mpsc::Sender<Vec<Record>>,
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

fn drain(ring: &mut RingBuf<MapData>, tx: &mpsc::Sender<Vec<Record>>, metrics: &SelfMetrics) {
    let mut batch = Vec::with_capacity(BATCH);
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
        batch.push(event);
        if batch.len() == BATCH {
            send(
                tx,
                std::mem::replace(&mut batch, Vec::with_capacity(BATCH)),
                metrics,
            );
        }
    }
    if !batch.is_empty() {
        send(tx, batch, metrics);
    }
}

fn send(tx: &mpsc::Sender<Vec<Record>>, batch: Vec<Record>, metrics: &SelfMetrics) {
    let n = batch.len() as u64;
    // Counted in before the send: the processor may take it out at once.
    SelfMetrics::add(&metrics.queue_len, n);
    if tx.try_send(batch).is_err() {
        metrics
            .queue_len
            .fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
        SelfMetrics::add(&metrics.dropped_queue_full, n);
    }
}
