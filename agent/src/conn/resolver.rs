//! Resolves, off the event path, what a new connection's syscalls did not tell:
//! its local address and transport, or that it is not an IP socket at all.
//!
//! Runs on its own thread because it reads procfs. Requests are batched: each batch
//! reads a namespace's socket tables once however many connections it resolves, so
//! the cost per connection falls as the rate of new connections rises.

use std::{collections::HashMap, net::SocketAddr, sync::mpsc as std_mpsc, thread};

use tokio::sync::mpsc;

use super::{
    ConnKey, Transport,
    procnet::{InetTable, netns, socket_inode},
};

/// The answer for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    Inet {
        key: ConnKey,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
    },
    /// A Unix-domain, netlink or other non-IP socket.
    NotInet { key: ConnKey },
    /// The process or fd is gone (short-lived connection): nothing to learn.
    Gone { key: ConnKey },
}

const MAX_BATCH: usize = 512;

/// Resolves a batch of connections, reading each namespace's tables once.
pub fn resolve_batch(keys: &[ConnKey]) -> Vec<Resolution> {
    let mut tables: HashMap<u64, InetTable> = HashMap::new();
    keys.iter()
        .map(|&key| {
            let pid = key.tgid as i32;
            let inode = match socket_inode(pid, key.fd) {
                Ok(Some(inode)) => inode,
                Ok(None) => return Resolution::NotInet { key },
                Err(_) => return Resolution::Gone { key },
            };
            let Some(ns) = netns(pid) else {
                return Resolution::Gone { key };
            };
            let table = tables
                .entry(ns)
                .or_insert_with(|| InetTable::read(pid).unwrap_or_default());
            match table.get(inode) {
                Some(s) => Resolution::Inet {
                    key,
                    transport: s.transport,
                    local: s.local,
                    remote: s.remote,
                },
                None => Resolution::NotInet { key },
            }
        })
        .collect()
}

/// Handle to the resolver thread; dropping it stops the thread.
pub struct Resolver {
    tx: std_mpsc::SyncSender<ConnKey>,
}

impl Resolver {
    /// Starts the thread; answers go to `out`.
    pub fn spawn(capacity: usize, out: mpsc::Sender<Resolution>) -> std::io::Result<Resolver> {
        let (tx, rx) = std_mpsc::sync_channel::<ConnKey>(capacity);
        thread::Builder::new()
            .name("conn-resolver".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(key) => batch.push(key),
                            Err(_) => break,
                        }
                    }
                    for resolution in resolve_batch(&batch) {
                        if out.blocking_send(resolution).is_err() {
                            return;
                        }
                    }
                }
            })?;
        Ok(Resolver { tx })
    }

    /// Queues a lookup; false when the queue is full (the caller counts it).
    pub fn request(&self, key: ConnKey) -> bool {
        self.tx.try_send(key).is_ok()
    }
}
