//! Traffic helper for the end-to-end tests: runs one client/server exchange on
//! loopback using exactly the syscalls named by its scenario (raw libc calls, so no
//! runtime picks different ones), then prints a JSON line describing the sockets.
//!
//! Usage: `traffic SCENARIO [--wait]`. With `--wait` it sets up its connection
//! first, prints `ready`, and waits for a line on stdin before moving data (for
//! connections that must exist before the agent starts).

use std::{
    io::{BufRead as _, Write as _},
    mem::{size_of, zeroed},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    thread,
};

use e2e::payloads;

fn check(ret: isize, what: &str) -> usize {
    if ret < 0 {
        panic!("{what}: {}", std::io::Error::last_os_error());
    }
    ret as usize
}

fn sockaddr(addr: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    // SAFETY: all-zero sockaddr_in is valid.
    let mut sa: libc::sockaddr_in = unsafe { zeroed() };
    sa.sin_family = libc::AF_INET as u16;
    sa.sin_port = v4.port().to_be();
    sa.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
    sa
}

fn write_all(fd: i32, data: &[u8]) {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: valid buffer and length.
        off += check(
            unsafe { libc::write(fd, data[off..].as_ptr().cast(), data.len() - off) },
            "write",
        );
    }
}

fn read_exact(fd: i32, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut off = 0;
    while off < len {
        // SAFETY: valid buffer and length.
        let n = check(
            unsafe { libc::read(fd, buf[off..].as_mut_ptr().cast(), len - off) },
            "read",
        );
        assert!(n > 0, "unexpected EOF");
        off += n;
    }
    buf
}

fn iovec(data: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    }
}

fn iovec_mut(data: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    }
}

struct TcpPair {
    /// Kept open, as a server keeps its listener.
    _listener: TcpListener,
    client: TcpStream,
    server: TcpStream,
}

fn tcp_pair() -> TcpPair {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    TcpPair {
        _listener: listener,
        client,
        server,
    }
}

/// write / read.
fn rw(pair: &TcpPair) {
    let (c, s) = (pair.client.as_raw_fd(), pair.server.as_raw_fd());
    write_all(c, payloads::REQUEST);
    assert_eq!(read_exact(s, payloads::REQUEST.len()), payloads::REQUEST);
    write_all(s, payloads::RESPONSE);
    assert_eq!(read_exact(c, payloads::RESPONSE.len()), payloads::RESPONSE);
}

/// Bytes no parser knows, in many writes with pauses between them: the agent
/// gives up on the connection and the kernel stops copying it.
fn opaque(pair: &TcpPair) {
    let (c, s) = (pair.client.as_raw_fd(), pair.server.as_raw_fd());
    let chunk: Vec<u8> = (0..512).map(|i| (i % 7) as u8).collect();
    for _ in 0..payloads::OPAQUE_WRITES {
        write_all(c, &chunk);
        assert_eq!(read_exact(s, chunk.len()), chunk);
        thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The request looked at with `recv(MSG_PEEK)` (as curl checks a connection
/// is alive) and with `recvmsg(MSG_PEEK)`, then read: the peeks move nothing.
fn peek(pair: &TcpPair) {
    let (c, s) = (pair.client.as_raw_fd(), pair.server.as_raw_fd());
    write_all(c, payloads::REQUEST);
    let mut buf = [0u8; 256];
    // SAFETY: valid buffers and lengths.
    unsafe {
        let n = check(
            libc::recv(s, buf.as_mut_ptr().cast(), 1, libc::MSG_PEEK),
            "recv(MSG_PEEK)",
        );
        assert_eq!(n, 1);
        let mut iov = [iovec_mut(&mut buf[..8])];
        let mut hdr: libc::msghdr = zeroed();
        hdr.msg_iov = iov.as_mut_ptr();
        hdr.msg_iovlen = 1;
        check(
            libc::recvmsg(s, &mut hdr, libc::MSG_PEEK),
            "recvmsg(MSG_PEEK)",
        );
    }
    assert_eq!(read_exact(s, payloads::REQUEST.len()), payloads::REQUEST);
}

/// send / recv (glibc: sendto / recvfrom with no address).
fn sendrecv(pair: &TcpPair) {
    let (c, s) = (pair.client.as_raw_fd(), pair.server.as_raw_fd());
    let mut buf = [0u8; 256];
    // SAFETY: valid buffers and lengths.
    unsafe {
        check(
            libc::send(
                c,
                payloads::REQUEST.as_ptr().cast(),
                payloads::REQUEST.len(),
                0,
            ),
            "send",
        );
        let n = check(libc::recv(s, buf.as_mut_ptr().cast(), buf.len(), 0), "recv");
        assert_eq!(&buf[..n], payloads::REQUEST);
        check(
            libc::send(
                s,
                payloads::RESPONSE.as_ptr().cast(),
                payloads::RESPONSE.len(),
                0,
            ),
            "send",
        );
        let n = check(libc::recv(c, buf.as_mut_ptr().cast(), buf.len(), 0), "recv");
        assert_eq!(&buf[..n], payloads::RESPONSE);
    }
}

/// sendmsg / recvmsg with several iovecs on each side.
fn msg(pair: &TcpPair) {
    let (c, s) = (pair.client.as_raw_fd(), pair.server.as_raw_fd());
    let parts = payloads::MSG_PARTS;
    let mut iov: Vec<libc::iovec> = parts.iter().map(|p| iovec(p)).collect();
    // SAFETY: msghdr fully initialised below; iovecs point at live buffers.
    unsafe {
        let mut m: libc::msghdr = zeroed();
        m.msg_iov = iov.as_mut_ptr();
        m.msg_iovlen = iov.len();
        check(libc::sendmsg(c, &m, 0), "sendmsg");
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let (mut a, mut b) = (vec![0u8; 7], vec![0u8; total - 7]);
        let mut riov = [iovec_mut(&mut a), iovec_mut(&mut b)];
        let mut r: libc::msghdr = zeroed();
        r.msg_iov = riov.as_mut_ptr();
        r.msg_iovlen = riov.len();
        let mut got = 0;
        while got < total {
            got += check(libc::recvmsg(s, &mut r, libc::MSG_WAITALL), "recvmsg");
        }
    }
}

/// writev / readv with several iovecs.
fn vec(pair: &TcpPair) {
    let (c, s) = (pair.client.as_raw_fd(), pair.server.as_raw_fd());
    let parts = payloads::MSG_PARTS;
    let iov: Vec<libc::iovec> = parts.iter().map(|p| iovec(p)).collect();
    let total: usize = parts.iter().map(|p| p.len()).sum();
    // SAFETY: iovecs point at live buffers.
    unsafe {
        check(libc::writev(c, iov.as_ptr(), iov.len() as i32), "writev");
        let (mut a, mut b) = (vec![0u8; 5], vec![0u8; total - 5]);
        let riov = [iovec_mut(&mut a), iovec_mut(&mut b)];
        let mut got = 0;
        while got < total {
            got += check(libc::readv(s, riov.as_ptr(), riov.len() as i32), "readv");
        }
        assert_eq!([a, b].concat(), parts.concat());
    }
}

/// A write larger than the capture cap, read back in pieces.
fn big(pair: &TcpPair) {
    let (c, s) = (pair.client.as_raw_fd(), pair.server.as_raw_fd());
    let data = payloads::big();
    let reader = thread::spawn(move || read_exact(s, payloads::BIG_LEN));
    // One write syscall of the whole buffer (blocking sockets complete it).
    // SAFETY: valid buffer.
    let n = check(
        unsafe { libc::write(c, data.as_ptr().cast(), data.len()) },
        "write",
    );
    assert_eq!(n, data.len());
    assert_eq!(reader.join().expect("reader"), data);
}

struct UdpPair {
    client: UdpSocket,
    server: UdpSocket,
}

fn udp_pair() -> UdpPair {
    UdpPair {
        server: UdpSocket::bind("127.0.0.1:0").expect("bind"),
        client: UdpSocket::bind("127.0.0.1:0").expect("bind"),
    }
}

/// sendto / recvfrom on unconnected UDP sockets, addresses on every datagram.
fn udp(pair: &UdpPair) {
    let (c, s) = (pair.client.as_raw_fd(), pair.server.as_raw_fd());
    let to_server = sockaddr(pair.server.local_addr().expect("addr"));
    let mut buf = [0u8; 256];
    // SAFETY: valid buffers, lengths and sockaddrs.
    unsafe {
        check(
            libc::sendto(
                c,
                payloads::REQUEST.as_ptr().cast(),
                payloads::REQUEST.len(),
                0,
                (&raw const to_server).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            ),
            "sendto",
        );
        let mut from: libc::sockaddr_in = zeroed();
        let mut from_len = size_of::<libc::sockaddr_in>() as u32;
        let n = check(
            libc::recvfrom(
                s,
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&raw mut from).cast(),
                &mut from_len,
            ),
            "recvfrom",
        );
        assert_eq!(&buf[..n], payloads::REQUEST);
        check(
            libc::sendto(
                s,
                payloads::RESPONSE.as_ptr().cast(),
                payloads::RESPONSE.len(),
                0,
                (&raw const from).cast(),
                from_len,
            ),
            "sendto",
        );
        let mut from2: libc::sockaddr_in = zeroed();
        let mut from2_len = size_of::<libc::sockaddr_in>() as u32;
        let n = check(
            libc::recvfrom(
                c,
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&raw mut from2).cast(),
                &mut from2_len,
            ),
            "recvfrom",
        );
        assert_eq!(&buf[..n], payloads::RESPONSE);
    }
}

/// sendmmsg / recvmmsg: several datagrams per syscall.
fn mmsg(pair: &UdpPair) {
    let (c, s) = (pair.client.as_raw_fd(), pair.server.as_raw_fd());
    let mut to_server = sockaddr(pair.server.local_addr().expect("addr"));
    let datagrams = payloads::DATAGRAMS;
    let mut iovs: Vec<libc::iovec> = datagrams.iter().map(|d| iovec(d)).collect();
    // SAFETY: mmsghdrs point at live iovecs, buffers and sockaddrs.
    unsafe {
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                let mut m: libc::mmsghdr = zeroed();
                m.msg_hdr.msg_name = (&raw mut to_server).cast();
                m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let sent = libc::sendmmsg(c, msgs.as_mut_ptr(), msgs.len() as u32, 0);
        assert_eq!(sent as usize, datagrams.len(), "sendmmsg");

        let mut bufs = vec![[0u8; 128]; datagrams.len()];
        let mut names: Vec<libc::sockaddr_in> = vec![zeroed(); datagrams.len()];
        let mut riovs: Vec<libc::iovec> = bufs.iter_mut().map(|b| iovec_mut(b)).collect();
        let mut rmsgs: Vec<libc::mmsghdr> = riovs
            .iter_mut()
            .zip(names.iter_mut())
            .map(|(iov, name)| {
                let mut m: libc::mmsghdr = zeroed();
                m.msg_hdr.msg_name = (name as *mut libc::sockaddr_in).cast();
                m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let got = libc::recvmmsg(
            s,
            rmsgs.as_mut_ptr(),
            rmsgs.len() as u32,
            0,
            std::ptr::null_mut(),
        );
        assert_eq!(got as usize, datagrams.len(), "recvmmsg");
        for (i, d) in datagrams.iter().enumerate() {
            assert_eq!(&bufs[i][..rmsgs[i].msg_len as usize], *d);
        }
    }
}

fn local_port(addr: std::io::Result<SocketAddr>) -> u16 {
    addr.expect("addr").port()
}

fn wait_for_go() {
    println!("ready");
    std::io::stdout().flush().expect("flush");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("stdin");
}

fn main() {
    // Never outlive a test that gave up on us.
    // SAFETY: alarm has no preconditions.
    unsafe { libc::alarm(60) };
    let mut args = std::env::args().skip(1);
    let scenario = args.next().expect("usage: traffic SCENARIO [--wait]");
    let wait = args.next().as_deref() == Some("--wait");
    let report = match scenario.as_str() {
        "rw" | "sendrecv" | "msg" | "vec" | "big" | "opaque" | "peek" => {
            let pair = tcp_pair();
            if wait {
                wait_for_go();
            }
            match scenario.as_str() {
                "rw" => rw(&pair),
                "sendrecv" => sendrecv(&pair),
                "msg" => msg(&pair),
                "vec" => vec(&pair),
                "opaque" => opaque(&pair),
                "peek" => peek(&pair),
                _ => big(&pair),
            }
            e2e::Report {
                client_fd: pair.client.as_raw_fd(),
                server_fd: pair.server.as_raw_fd(),
                client_port: local_port(pair.client.local_addr()),
                server_port: local_port(pair.server.local_addr()),
            }
        }
        "udp" | "mmsg" => {
            let pair = udp_pair();
            if wait {
                wait_for_go();
            }
            if scenario == "udp" {
                udp(&pair)
            } else {
                mmsg(&pair)
            }
            e2e::Report {
                client_fd: pair.client.as_raw_fd(),
                server_fd: pair.server.as_raw_fd(),
                client_port: local_port(pair.client.local_addr()),
                server_port: local_port(pair.server.local_addr()),
            }
        }
        other => panic!("unknown scenario {other}"),
    };
    println!("{}", serde_json::to_string(&report).expect("json"));
}
