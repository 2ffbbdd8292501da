//! Syscall loop for `cargo xtask bench`: ns per `write` on a traced socket
//! carrying HTTP (the whole capture path: payload copy and ring buffer record
//! on every write), on a traced socket carrying bytes no parser wants (marked
//! opaque after its first writes: one socket-table lookup each), and on an
//! untraced fd (`/dev/null`). Prints one JSON object; the median of several
//! rounds per case.

use std::{fs::File, net::UdpSocket, os::fd::AsRawFd, time::Instant};

const ROUNDS: usize = 7;

/// CPU time of the calling thread, in ns (`CLOCK_THREAD_CPUTIME_ID`: ns
/// resolution, unlike `getrusage`'s ticks). The BPF programs run inside the
/// traced syscalls, so their cost is part of it; time the thread spends
/// preempted by other processes (the agent itself) is not.
fn thread_cpu_ns() -> u64 {
    // SAFETY: zeroed timespec is a valid out-parameter.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Median over the rounds of (wall ns, CPU ns) per write.
fn per_write_ns(fd: i32, iterations: usize, payload: &[u8]) -> (f64, f64) {
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let cpu_start = thread_cpu_ns();
        for _ in 0..iterations {
            // SAFETY: valid fd and buffer.
            let n = unsafe { libc::write(fd, payload.as_ptr().cast(), payload.len()) };
            assert!(n >= 0, "write: {}", std::io::Error::last_os_error());
        }
        cpu.push((thread_cpu_ns() - cpu_start) as f64 / iterations as f64);
        wall.push(start.elapsed().as_nanos() as f64 / iterations as f64);
    }
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    (wall[ROUNDS / 2], cpu[ROUNDS / 2])
}

fn main() {
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    // 64 bytes of HTTP request: the agent's parser keeps wanting them, so
    // every write is copied and recorded.
    let head = b"GET /bench HTTP/1.1\r\nHost: bench\r\nX-Pad: ";
    let mut http = head.to_vec();
    http.resize(64 - 4, b'.');
    http.extend_from_slice(b"\r\n\r\n");
    let http = &http[..];
    let opaque = [0u8; 64];
    // Connected UDP sockets: `connect` makes them tracked sockets; the
    // receivers never read, so their queues fill and the kernel drops
    // datagrams after the send succeeded — the sender's path is all that is
    // measured.
    let connected = || {
        let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sender
            .connect(receiver.local_addr().expect("addr"))
            .expect("connect");
        (sender, receiver)
    };
    let (http_sender, _r1) = connected();
    let (opaque_sender, _r2) = connected();
    let devnull = File::options()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let socket = per_write_ns(http_sender.as_raw_fd(), iterations, http);
    let opaque_socket = per_write_ns(opaque_sender.as_raw_fd(), iterations, &opaque);
    let file = per_write_ns(devnull.as_raw_fd(), iterations, &opaque);
    println!(
        "{}",
        serde_json::json!({
            "iterations": iterations,
            "socket_write_wall_ns": socket.0,
            "socket_write_cpu_ns": socket.1,
            "opaque_socket_write_wall_ns": opaque_socket.0,
            "opaque_socket_write_cpu_ns": opaque_socket.1,
            "devnull_write_wall_ns": file.0,
            "devnull_write_cpu_ns": file.1,
        })
    );
}
