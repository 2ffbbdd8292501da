//! Syscall loop for `cargo xtask bench`: ns per `write` on a traced socket (the
//! capture path: enter state, payload copy, ring buffer record) and on an
//! untraced fd (`/dev/null`: one socket-table lookup at enter and exit).
//! Prints one JSON object; the median of several rounds per case.

use std::{fs::File, net::UdpSocket, os::fd::AsRawFd, time::Instant};

const ROUNDS: usize = 7;

/// CPU time (user + system) of the calling thread, in ns. The BPF programs run
/// inside the traced syscalls, so their cost is part of it; time the thread
/// spends preempted by other processes (the agent itself) is not.
fn thread_cpu_ns() -> u64 {
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    ns(ru.ru_utime) + ns(ru.ru_stime)
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
    let payload = [b'x'; 64];
    // A connected UDP socket: `connect` makes it a tracked socket; the receiver
    // never reads, so its queue fills and the kernel drops datagrams after the
    // send succeeded — the sender's syscall path is all that is measured.
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sender
        .connect(receiver.local_addr().expect("addr"))
        .expect("connect");
    let devnull = File::options()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let socket = per_write_ns(sender.as_raw_fd(), iterations, &payload);
    let file = per_write_ns(devnull.as_raw_fd(), iterations, &payload);
    println!(
        "{}",
        serde_json::json!({
            "iterations": iterations,
            "socket_write_wall_ns": socket.0,
            "socket_write_cpu_ns": socket.1,
            "devnull_write_wall_ns": file.0,
            "devnull_write_cpu_ns": file.1,
        })
    );
}
