//! Socket facts the syscall tracepoints cannot give: the local address of a
//! connection, whether an fd is an IP socket at all, and the sockets that were open
//! before the agent started. All from procfs, per network namespace
//! (`/proc/PID/fd/N` → `socket:[inode]` → `/proc/PID/net/{tcp,tcp6,udp,udp6}`).

use std::{collections::HashMap, net::SocketAddr};

use procfs::{
    net::TcpState,
    process::{FDTarget, Process},
};

/// Transport of an IP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
}

/// One row of a `/proc/net/{tcp,udp}{,6}` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InetSocket {
    pub transport: Transport,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub listening: bool,
}

/// The IP sockets of one network namespace, by inode.
#[derive(Debug, Default)]
pub struct InetTable {
    by_inode: HashMap<u64, InetSocket>,
}

impl InetTable {
    /// Reads the tables of `pid`'s network namespace.
    pub fn read(pid: i32) -> procfs::ProcResult<InetTable> {
        let process = Process::new(pid)?;
        let mut by_inode = HashMap::new();
        for entries in [process.tcp(), process.tcp6()] {
            for e in entries.unwrap_or_default() {
                by_inode.insert(
                    e.inode,
                    InetSocket {
                        transport: Transport::Tcp,
                        local: normalize(e.local_address),
                        remote: normalize(e.remote_address),
                        listening: e.state == TcpState::Listen,
                    },
                );
            }
        }
        for entries in [process.udp(), process.udp6()] {
            for e in entries.unwrap_or_default() {
                by_inode.insert(
                    e.inode,
                    InetSocket {
                        transport: Transport::Udp,
                        local: normalize(e.local_address),
                        remote: normalize(e.remote_address),
                        listening: false,
                    },
                );
            }
        }
        Ok(InetTable { by_inode })
    }

    pub fn get(&self, inode: u64) -> Option<&InetSocket> {
        self.by_inode.get(&inode)
    }

    /// Local ports in LISTEN state: an established socket on one of them was accepted.
    pub fn listening_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.by_inode
            .values()
            .filter(|s| s.listening)
            .map(|s| s.local.port())
    }
}

/// Shows v4-mapped IPv6 addresses (dual-stack sockets) as IPv4, as the kernel
/// events do.
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The socket inode behind `pid`'s `fd`; `None` if the fd is not a socket.
pub fn socket_inode(pid: i32, fd: i32) -> procfs::ProcResult<Option<u64>> {
    let info = Process::new(pid)?.fd_from_fd(fd)?;
    Ok(match info.target {
        FDTarget::Socket(inode) => Some(inode),
        _ => None,
    })
}

/// Network namespace inode of `pid` (sockets are looked up per namespace).
pub fn netns(pid: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let text = link.to_str()?;
    text.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// An IP socket found open in some process when the agent started.
#[derive(Clone, Debug)]
pub struct ExistingSocket {
    pub tgid: u32,
    pub fd: i32,
    pub socket: InetSocket,
    /// An established TCP socket whose local port is listening: we are the server.
    pub accepted: bool,
}

/// Every non-listening IP socket of every process except `skip_tgid`. Each
/// namespace's tables are read once.
pub fn scan_existing(skip_tgid: u32) -> Vec<ExistingSocket> {
    let mut tables: HashMap<u64, InetTable> = HashMap::new();
    let mut found = Vec::new();
    let Ok(processes) = procfs::process::all_processes() else {
        return found;
    };
    for process in processes.flatten() {
        let pid = process.pid;
        if pid as u32 == skip_tgid {
            continue;
        }
        let Ok(fds) = process.fd() else { continue };
        let sockets: Vec<(i32, u64)> = fds
            .flatten()
            .filter_map(|fd| match fd.target {
                FDTarget::Socket(inode) => Some((fd.fd, inode)),
                _ => None,
            })
            .collect();
        if sockets.is_empty() {
            continue;
        }
        let Some(ns) = netns(pid) else { continue };
        let table = tables
            .entry(ns)
            .or_insert_with(|| InetTable::read(pid).unwrap_or_default());
        for (fd, inode) in sockets {
            let Some(socket) = table.get(inode).copied() else {
                continue;
            };
            if socket.listening {
                continue;
            }
            let accepted = socket.transport == Transport::Tcp
                && table.listening_ports().any(|p| p == socket.local.port());
            found.push(ExistingSocket {
                tgid: pid as u32,
                fd,
                socket,
                accepted,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn finds_own_sockets_by_fd() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let pid = std::process::id() as i32;
        let table = InetTable::read(pid).unwrap();

        let inode = socket_inode(pid, client.as_raw_fd()).unwrap().unwrap();
        let s = table.get(inode).unwrap();
        assert_eq!(s.transport, Transport::Tcp);
        assert_eq!(s.local, client.local_addr().unwrap());
        assert_eq!(s.remote, listener.local_addr().unwrap());

        let inode = socket_inode(pid, udp.as_raw_fd()).unwrap().unwrap();
        assert_eq!(table.get(inode).unwrap().transport, Transport::Udp);
        assert!(
            table
                .listening_ports()
                .any(|p| p == listener.local_addr().unwrap().port())
        );

        // Existing-socket scan sees both ends, and knows which one was accepted.
        let existing = scan_existing(0);
        let mine: Vec<_> = existing.iter().filter(|e| e.tgid == pid as u32).collect();
        let server_side = mine.iter().find(|e| e.fd == server.as_raw_fd()).unwrap();
        assert!(server_side.accepted);
        let client_side = mine.iter().find(|e| e.fd == client.as_raw_fd()).unwrap();
        assert!(!client_side.accepted);

        // Not a socket.
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(socket_inode(pid, file.as_raw_fd()).unwrap(), None);
        assert!(netns(pid).is_some());
    }
}
