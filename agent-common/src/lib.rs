//! The contract between the kernel programs (`agent-ebpf`) and the userspace agent.
//!
//! Everything here crosses the kernel/user boundary as raw bytes, so the types are
//! deliberately boring: `#[repr(C)]`, `Copy`, plain integers with explicit padding,
//! numeric codes instead of enums, and a compile-time size check for each struct so
//! that a change on one side that the other side does not see fails to build.
//! Userspace decodes the codes with `TryFrom` and counts whatever does not decode.
#![no_std]

use core::mem::size_of;

/// Upper bound, fixed at compile time, of the payload captured per syscall (per
/// message for `sendmmsg`/`recvmmsg`). The runtime cap (`CAPTURE_BYTES`) is at most
/// this. A power of two so the kernel side can bound offsets with a mask.
pub const MAX_CAPTURE_BYTES: usize = 8 * 1024;
/// Default runtime cap on the payload captured per syscall.
pub const DEFAULT_CAPTURE_BYTES: u32 = 4096;
/// iovec entries walked per `readv`/`writev`/`sendmsg`/`recvmsg` (constant loop
/// bound). gRPC's C core writes each frame header and payload as separate
/// slices and batches the frames of concurrent calls: 25 slices open a
/// connection, 160 carry 40 concurrent calls. Slices past the bound are not
/// captured, and HTTP/2 framing (and with it the HPACK table) is lost there.
pub const MAX_IOV: usize = 256;
/// iovec entries walked per message of `sendmmsg`/`recvmmsg` (datagrams,
/// resolvers: one or two slices; the loop runs inside the message loop, so
/// its bound multiplies the verifier's work).
pub const MAX_MMSG_IOV: usize = 8;
/// Messages reported per `sendmmsg`/`recvmmsg` call (constant loop bound).
pub const MAX_MMSG: usize = 8;
/// Bytes of a `struct sockaddr` copied verbatim (the size of `sockaddr_in6`).
pub const SOCKADDR_BYTES: usize = 28;

/// Map names, shared so userspace looks maps up by the same names the kernel defines.
pub mod maps {
    /// Ring buffer carrying [`EventHeader`](super::EventHeader) + payload records.
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU array of `u64` loss counters indexed by [`Loss`](super::Loss).
    pub const LOSSES: &str = "LOSSES";
    /// LRU hash of sockets the kernel knows: [`SockKey`](super::SockKey) → [`SockInfo`](super::SockInfo).
    pub const SOCKETS: &str = "SOCKETS";
    /// LRU hash of syscalls in flight, keyed by `pid_tgid` (tracepoint path only).
    pub const ACTIVE: &str = "ACTIVE";
    /// TLS library calls in progress, per `pid_tgid`.
    pub const TLS_CALLS: &str = "TLS_CALLS";
    /// The socket of each `SSL*` (per tgid), learned from a call's syscall.
    pub const TLS_FDS: &str = "TLS_FDS";
    /// Thread → the trace and span it serves ([`TraceCtx`](super::TraceCtx)).
    pub const TRACES_CTX: &str = "traces_ctx_v1";
    /// Hash of tgids whose stdout/stderr writes are reported (tgid → 1).
    pub const LOG_PROCS: &str = "LOG_PROCS";
    /// LRU hash tgid → [`verdict`](super::verdict): processes userspace excluded.
    pub const VERDICTS: &str = "VERDICTS";
    /// Program array of the fast path's per-syscall exit handlers, indexed by
    /// [`Syscall`](super::Syscall) code.
    pub const EXIT_PROGS: &str = "EXIT_PROGS";
    /// The same for the `tp_btf` build of the fast path.
    pub const BTF_EXIT_PROGS: &str = "BTF_EXIT_PROGS";
    /// Array of one `u32`: which profiling map set (0 or 1) the sampler fills.
    pub const PROFILE_SET: &str = "PROFILE_SET";
    /// Per-CPU sample counts of set 0 and 1: [`ProfileKey`](super::ProfileKey) → `u64`.
    pub const PROFILE_COUNTS: [&str; 2] = ["PROFILE_COUNTS_0", "PROFILE_COUNTS_1"];
    /// Stack traces of set 0 and 1 (`BPF_MAP_TYPE_STACK_TRACE`).
    pub const PROFILE_STACKS: [&str; 2] = ["PROFILE_STACKS_0", "PROFILE_STACKS_1"];
    /// LRU hash of tgids the sampler has announced (tgid → 0).
    pub const PROFILE_SEEN: &str = "PROFILE_SEEN";
    /// Ring buffer of [`NewProcess`](super::NewProcess) records.
    pub const PROFILE_PROCS: &str = "PROFILE_PROCS";
}

/// Names of the global variables userspace sets at load time.
pub mod globals {
    /// `u32`: the agent's own tgid; the kernel never reports it.
    pub const AGENT_TGID: &str = "AGENT_TGID";
    /// `u32`: payload bytes captured per syscall, at most [`MAX_CAPTURE_BYTES`](super::MAX_CAPTURE_BYTES).
    pub const CAPTURE_BYTES: &str = "CAPTURE_BYTES";
    /// `u32`: 1 when `--pid`/`--exe` filter processes (the kernel then looks
    /// each tgid up in `VERDICTS`).
    pub const FILTERING: &str = "FILTERING";
    /// `u64`: unread ring buffer bytes above which a record wakes the reader.
    /// Below it records are written without a wakeup and the reader polls:
    /// a wakeup per record costs the traced thread ~9 µs.
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    /// Global `u32`: 1 when `--logs` asked for any process (else no lookup).
    pub const LOGGING: &str = "LOGGING";
    /// Global `u32`: 1 (default) to keep the thread → request map
    /// (`traces_ctx_v1`); 0 with `--trace-context off`.
    pub const TRACE_CONTEXT: &str = "TRACE_CONTEXT";
}

/// Syscalls the kernel programs trace. Stored as `u32` in events and enter state.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscall {
    Read = 1,
    Write = 2,
    Readv = 3,
    Writev = 4,
    Recvfrom = 5,
    Sendto = 6,
    Recvmsg = 7,
    Sendmsg = 8,
    Recvmmsg = 9,
    Sendmmsg = 10,
    Accept = 11,
    Accept4 = 12,
    Connect = 13,
    Close = 14,
}

impl Syscall {
    pub const ALL: [Syscall; 14] = [
        Syscall::Read,
        Syscall::Write,
        Syscall::Readv,
        Syscall::Writev,
        Syscall::Recvfrom,
        Syscall::Sendto,
        Syscall::Recvmsg,
        Syscall::Sendmsg,
        Syscall::Recvmmsg,
        Syscall::Sendmmsg,
        Syscall::Accept,
        Syscall::Accept4,
        Syscall::Connect,
        Syscall::Close,
    ];

    /// The syscall's name as in `syscalls:sys_enter_<name>`.
    pub const fn name(self) -> &'static str {
        match self {
            Syscall::Read => "read",
            Syscall::Write => "write",
            Syscall::Readv => "readv",
            Syscall::Writev => "writev",
            Syscall::Recvfrom => "recvfrom",
            Syscall::Sendto => "sendto",
            Syscall::Recvmsg => "recvmsg",
            Syscall::Sendmsg => "sendmsg",
            Syscall::Recvmmsg => "recvmmsg",
            Syscall::Sendmmsg => "sendmmsg",
            Syscall::Accept => "accept",
            Syscall::Accept4 => "accept4",
            Syscall::Connect => "connect",
            Syscall::Close => "close",
        }
    }

    /// How many leading arguments the enter program reads (arg 4 is the
    /// sockaddr of sendto/recvfrom). Tests check each tracepoint has them.
    pub const fn args_used(self) -> usize {
        match self {
            Syscall::Close => 1,
            Syscall::Sendto | Syscall::Recvfrom => 5,
            _ => 3,
        }
    }

    /// Data flows from the application to the network.
    pub const fn is_egress(self) -> bool {
        matches!(
            self,
            Syscall::Write
                | Syscall::Writev
                | Syscall::Sendto
                | Syscall::Sendmsg
                | Syscall::Sendmmsg
        )
    }

    /// The x86_64 syscall number (`orig_ax` at `sys_exit`; `asm/unistd_64.h`,
    /// a stable ABI). The fast capture path dispatches on it.
    pub const fn x86_64_nr(self) -> u64 {
        match self {
            Syscall::Read => 0,
            Syscall::Write => 1,
            Syscall::Close => 3,
            Syscall::Readv => 19,
            Syscall::Writev => 20,
            Syscall::Connect => 42,
            Syscall::Accept => 43,
            Syscall::Sendto => 44,
            Syscall::Recvfrom => 45,
            Syscall::Sendmsg => 46,
            Syscall::Recvmsg => 47,
            Syscall::Accept4 => 288,
            Syscall::Recvmmsg => 299,
            Syscall::Sendmmsg => 307,
        }
    }

    /// The traced syscall with this x86_64 number, if any.
    pub const fn from_x86_64_nr(nr: u64) -> Option<Syscall> {
        Some(match nr {
            0 => Syscall::Read,
            1 => Syscall::Write,
            3 => Syscall::Close,
            19 => Syscall::Readv,
            20 => Syscall::Writev,
            42 => Syscall::Connect,
            43 => Syscall::Accept,
            44 => Syscall::Sendto,
            45 => Syscall::Recvfrom,
            46 => Syscall::Sendmsg,
            47 => Syscall::Recvmsg,
            288 => Syscall::Accept4,
            299 => Syscall::Recvmmsg,
            307 => Syscall::Sendmmsg,
            _ => return None,
        })
    }

    /// Syscalls that fail with `ENOTSOCK` on anything but a socket: a successful one
    /// proves the fd is a socket even if the agent never saw it being opened.
    pub const fn is_socket_only(self) -> bool {
        matches!(
            self,
            Syscall::Recvfrom
                | Syscall::Sendto
                | Syscall::Recvmsg
                | Syscall::Sendmsg
                | Syscall::Recvmmsg
                | Syscall::Sendmmsg
        )
    }
}

impl TryFrom<u32> for Syscall {
    type Error = u32;
    fn try_from(code: u32) -> Result<Self, u32> {
        Syscall::ALL
            .iter()
            .copied()
            .find(|s| *s as u32 == code)
            .ok_or(code)
    }
}

/// Event kinds (`EventHeader::kind`).
pub mod kind {
    /// Payload moved by a data syscall; `captured` bytes follow the header.
    pub const DATA: u32 = 1;
    /// `accept`/`accept4` returned a new connection (`fd` is the new fd).
    pub const ACCEPT: u32 = 2;
    /// `connect` succeeded or is in progress (`EINPROGRESS`).
    pub const CONNECT: u32 = 3;
    /// A tracked socket fd was closed.
    pub const CLOSE: u32 = 4;
    /// A TCP socket entered SYN_SENT or ESTABLISHED ([`TcpStateEvent`](super::TcpStateEvent)).
    pub const TCP_STATE: u32 = 5;
    /// A write to stdout or stderr (`fd` 1 or 2) of a process userspace asked
    /// for (`--logs`); `captured` bytes follow, `trace_id`/`span_id` with
    /// `flags::TRACE_CTX` when the thread was serving a request.
    pub const LOG: u32 = 6;
}

/// TCP states (`include/net/tcp_states.h`).
pub mod tcp_state {
    pub const ESTABLISHED: u32 = 1;
    pub const SYN_SENT: u32 = 2;
    pub const SYN_RECV: u32 = 3;
}

/// Bits of `EventHeader::flags` and `SockInfo::flags`.
pub mod flags {
    /// Fewer bytes were captured than the syscall moved (cap, iovec or copy limit).
    pub const TRUNCATED: u32 = 1 << 0;
    /// `addr` holds a sockaddr given to or returned by this syscall.
    pub const HAS_ADDR: u32 = 1 << 1;
    /// The socket was first seen through a data syscall, not `accept`/`connect`.
    pub const DISCOVERED: u32 = 1 << 2;
    /// The socket was accepted (we are the server side).
    pub const ROLE_SERVER: u32 = 1 << 3;
    /// The socket was connected (we are the client side).
    pub const ROLE_CLIENT: u32 = 1 << 4;
    /// The socket existed before the agent started (inserted by userspace).
    pub const PREEXISTING: u32 = 1 << 5;
    /// Copying the payload from user memory failed; `captured` is 0.
    pub const COPY_FAILED: u32 = 1 << 6;
    /// Set by userspace on sockets that are not ours (Unix-domain, netlink, …): the
    /// kernel skips them without emitting anything.
    pub const IGNORED: u32 = 1 << 7;
    /// Set by userspace on connections no parser wants (bulk or unknown
    /// traffic): the kernel skips their data (counted) and still reports their
    /// close.
    pub const OPAQUE: u32 = 1 << 8;
    /// `comm` is filled: connection events, and the data event that
    /// discovered its socket. Other data events leave it zeroed (reading it
    /// costs ~50 ns a syscall); userspace takes the connection's.
    pub const HAS_COMM: u32 = 1 << 9;
    /// Set by userspace on HTTP/2 connections: the kernel walks their frames
    /// and copies headers, header blocks and control frames rather than a
    /// prefix of each syscall (see the kernel's `frames` module).
    pub const FRAMES: u32 = 1 << 10;
    /// A data event's payload is a frame skeleton: segments `[u32 offset]
    /// [u32 len]` + bytes (little endian), offsets within the syscall's data.
    pub const SPARSE: u32 = 1 << 11;
    /// Set by the kernel once a socket received data: its first bytes were
    /// looked at for the HTTP/2 client preface (which sets `FRAMES` at once,
    /// before the first large message, which userspace would flag too late).
    pub const INGRESS_SEEN: u32 = 1 << 12;
    /// The same for data sent (a client writes the preface; a server writes
    /// its SETTINGS before it reads the client's preface).
    pub const EGRESS_SEEN: u32 = 1 << 13;
    /// Socket: a TLS library call on this thread used it; its syscalls carry
    /// ciphertext and are skipped. Record: plaintext from a TLS library's
    /// read or write (uprobes), not a syscall's bytes.
    pub const TLS: u32 = 1 << 14;
    /// Record: an earlier TLS call of the same goroutine returned without its
    /// entry having been seen (it was in flight when the probes attached), so
    /// its bytes are missing: userspace parses the connection afresh from here.
    pub const TLS_RESYNC: u32 = 1 << 15;
    /// Record: `trace_id`/`span_id` hold the ids the kernel gave the request
    /// this thread serves (`traces_ctx_v1`): set on the read that started it.
    pub const TRACE_CTX: u32 = 1 << 16;
    /// Record: a write of that request's response (`TRACE_CTX` too), after the
    /// CPU sampler took at least one sample labelled with its span id.
    pub const PROFILED: u32 = 1 << 17;
}

/// HTTP/2 framing facts both halves use (RFC 9113): userspace reads frames,
/// the kernel walks their headers on HTTP/2 connections (`flags::FRAMES`).
pub mod http2 {
    /// §3.4: what a client sends first.
    pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    /// Bytes of a frame header (§4.1).
    pub const HEADER_LEN: usize = 9;

    /// Frame types (§6).
    pub mod kind {
        pub const DATA: u8 = 0x0;
        pub const HEADERS: u8 = 0x1;
        pub const PRIORITY: u8 = 0x2;
        pub const RST_STREAM: u8 = 0x3;
        pub const SETTINGS: u8 = 0x4;
        pub const PUSH_PROMISE: u8 = 0x5;
        pub const PING: u8 = 0x6;
        pub const GOAWAY: u8 = 0x7;
        pub const WINDOW_UPDATE: u8 = 0x8;
        pub const CONTINUATION: u8 = 0x9;
    }

    /// Frame flags (§6).
    pub mod flag {
        pub const END_STREAM: u8 = 0x1;
        pub const ACK: u8 = 0x1;
        pub const END_HEADERS: u8 = 0x4;
        pub const PADDED: u8 = 0x8;
        pub const PRIORITY: u8 = 0x20;
    }

    /// The flags a frame type defines; others are legal but make a header
    /// implausible as the start of a frame found without framing.
    pub const fn defined_flags(frame_type: u8) -> u8 {
        match frame_type {
            kind::DATA => flag::END_STREAM | flag::PADDED,
            kind::HEADERS => flag::END_STREAM | flag::END_HEADERS | flag::PADDED | flag::PRIORITY,
            kind::SETTINGS | kind::PING => flag::ACK,
            kind::PUSH_PROMISE => flag::END_HEADERS | flag::PADDED,
            kind::CONTINUATION => flag::END_HEADERS,
            _ => 0,
        }
    }
}

/// Values of the `VERDICTS` map (per tgid).
pub mod verdict {
    /// `--pid`/`--exe` exclude this process: the kernel skips its syscalls.
    pub const DENIED: u32 = 1;
}

/// Direction of a data event.
pub mod direction {
    /// Bytes read by the application (received from the peer).
    pub const INGRESS: u32 = 1;
    /// Bytes written by the application (sent to the peer).
    pub const EGRESS: u32 = 2;
}

/// Reasons for lost or partial data; indices into the `LOSSES` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// The ring buffer had no room: the whole event is lost.
    RingbufFull = 0,
    /// `bpf_probe_read_user` of a payload failed: event sent without payload.
    CopyFailed = 1,
    /// More iovecs than `MAX_IOV` (`MAX_MMSG_IOV` per mmsg message): the payload
    /// is truncated (the byte count is exact).
    IovLimit = 2,
    /// More messages than `MAX_MMSG` in one `sendmmsg`/`recvmmsg`: the rest are lost.
    MmsgLimit = 3,
    /// A syscall exit without the state its enter should have stored (LRU eviction).
    NoEnterState = 4,
    /// Inserting into the socket table failed.
    SocketTableInsert = 5,
    /// Inserting syscall enter state failed.
    EnterStateInsert = 6,
    /// The per-CPU scratch buffer could not be looked up.
    Scratch = 7,
    /// A CPU sample whose stack hashed to a stack-map bucket already holding
    /// another stack: the sample is counted without that stack.
    ProfileStackCollision = 8,
    /// The sample-count map was full: the sample is lost.
    ProfileCountsFull = 9,
    /// A new process could not be announced (ring buffer full); userspace reads
    /// its memory map late, at the next drain.
    ProfileProcessNotice = 10,
    /// The fast path's tail call to a syscall's exit handler failed (empty slot):
    /// the syscall is lost.
    TailCall = 11,
    /// Not a loss: data of a connection userspace marked opaque, skipped.
    OpaqueSkipped = 12,
    /// Not a loss: a syscall of a process `--pid`/`--exe` exclude, skipped.
    ProcessFiltered = 13,
    /// Not a loss: a `MSG_PEEK` read (curl's liveness check), skipped: its
    /// bytes are read again, and counting them twice would shift the stream.
    Peeked = 14,
    /// An HTTP/2 frame walk ran out of steps: the rest of that syscall was not
    /// copied, and the next one hunts for a frame start.
    FramesSteps = 15,
    /// An HTTP/2 frame walk met bytes that are no frame header (or an iovec it
    /// could not read): the same.
    FramesLost = 16,
    /// Not a loss by itself: a syscall of an HTTP/2 connection that did not
    /// start at a frame (no walk state) was copied as a plain prefix.
    FramesHunt = 17,
    /// A TLS read or write returned data, but neither a syscall during the
    /// call nor an earlier one on the same `SSL*` named its socket.
    TlsNoFd = 18,
    /// A TLS call's socket is not in the socket table (opened before the
    /// agent and not registered, or evicted): its plaintext is lost.
    TlsNoSocket = 19,
    /// Not a loss: ciphertext of a socket whose plaintext comes from a TLS
    /// library's probes, skipped.
    TlsCiphertext = 20,
    /// The per-thread TLS call table was full: that call's plaintext is lost.
    TlsCallInsert = 21,
    /// A TLS call returned without its entry having been seen (in flight
    /// when the probes attached): its plaintext is lost.
    TlsCallMissed = 22,
    /// A request started on a thread that already serves one (event loops,
    /// pipelining) or was found doing so before: no thread link for it.
    CtxMultiplexed = 23,
    /// Threads found with a second request in flight, from then on unlinked.
    CtxMultiplexedThreads = 24,
}

impl Loss {
    pub const COUNT: usize = 25;
    pub const ALL: [Loss; Loss::COUNT] = [
        Loss::RingbufFull,
        Loss::CopyFailed,
        Loss::IovLimit,
        Loss::MmsgLimit,
        Loss::NoEnterState,
        Loss::SocketTableInsert,
        Loss::EnterStateInsert,
        Loss::Scratch,
        Loss::ProfileStackCollision,
        Loss::ProfileCountsFull,
        Loss::ProfileProcessNotice,
        Loss::TailCall,
        Loss::OpaqueSkipped,
        Loss::ProcessFiltered,
        Loss::Peeked,
        Loss::FramesSteps,
        Loss::FramesLost,
        Loss::FramesHunt,
        Loss::TlsNoFd,
        Loss::TlsNoSocket,
        Loss::TlsCiphertext,
        Loss::TlsCallInsert,
        Loss::TlsCallMissed,
        Loss::CtxMultiplexed,
        Loss::CtxMultiplexedThreads,
    ];

    /// Stable name used in self-metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Loss::RingbufFull => "ringbuf_full",
            Loss::CopyFailed => "copy_failed",
            Loss::IovLimit => "iov_limit",
            Loss::MmsgLimit => "mmsg_limit",
            Loss::NoEnterState => "no_enter_state",
            Loss::SocketTableInsert => "socket_table_insert",
            Loss::EnterStateInsert => "enter_state_insert",
            Loss::Scratch => "scratch",
            Loss::ProfileStackCollision => "profile_stack_collision",
            Loss::ProfileCountsFull => "profile_counts_full",
            Loss::ProfileProcessNotice => "profile_process_notice",
            Loss::TailCall => "tail_call",
            Loss::OpaqueSkipped => "opaque_skipped",
            Loss::ProcessFiltered => "process_filtered",
            Loss::Peeked => "peeked",
            Loss::FramesSteps => "frames_steps",
            Loss::FramesLost => "frames_lost",
            Loss::FramesHunt => "frames_hunt",
            Loss::TlsNoFd => "tls_no_fd",
            Loss::TlsNoSocket => "tls_no_socket",
            Loss::TlsCiphertext => "tls_ciphertext",
            Loss::TlsCallInsert => "tls_call_insert",
            Loss::TlsCallMissed => "tls_call_missed",
            Loss::CtxMultiplexed => "ctx_multiplexed",
            Loss::CtxMultiplexedThreads => "ctx_multiplexed_threads",
        }
    }

    /// The reason with this [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<Loss> {
        Loss::ALL.iter().copied().find(|l| l.name() == name)
    }

    /// Skips by design, not data lost: reported apart from the losses.
    pub const fn is_skip(self) -> bool {
        matches!(
            self,
            Loss::OpaqueSkipped
                | Loss::ProcessFiltered
                | Loss::Peeked
                | Loss::FramesHunt
                | Loss::TlsCiphertext
                | Loss::CtxMultiplexed
                | Loss::CtxMultiplexedThreads
        )
    }
}

/// Header of every ring buffer record. Data events are followed by `captured`
/// payload bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// One of [`kind`].
    pub kind: u32,
    /// Bits of [`flags`].
    pub flags: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at syscall exit.
    pub ts_ns: u64,
    /// Process id (`pid_tgid >> 32`).
    pub tgid: u32,
    /// Thread id (`pid_tgid as u32`).
    pub tid: u32,
    pub fd: i32,
    /// A [`Syscall`] code.
    pub syscall: u32,
    /// Identifies the connection behind (`tgid`, `fd`): changes when the fd number is reused.
    pub conn_id: u64,
    /// Data: bytes the syscall moved. Connect: its return value (0 or `-EINPROGRESS`).
    /// Accept: the listening fd.
    pub bytes: i64,
    /// Payload bytes that follow this header.
    pub captured: u32,
    /// One of [`direction`] for data events, 0 otherwise.
    pub direction: u32,
    /// `comm` of the calling thread (NUL padded) when `flags & HAS_COMM`,
    /// else zeroed.
    pub comm: [u8; 16],
    /// Raw `struct sockaddr` bytes when `flags & HAS_ADDR`.
    pub addr: [u8; SOCKADDR_BYTES],
    /// Length of `addr` the syscall reported (or `SOCKADDR_BYTES` when unknown).
    pub addr_len: u32,
    /// With `flags::TRACE_CTX`: the request's ids, as in `traces_ctx_v1`.
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}
const _: () = assert!(size_of::<EventHeader>() == 128);

/// Value of the `traces_ctx_v1` map (key: `pid_tgid`), the layout the
/// OpenTelemetry eBPF profiler and OBI share: the trace and span a thread is
/// serving, so any profiler on the node can label its samples.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceCtx {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}
const _: () = assert!(size_of::<TraceCtx>() == 24);

/// From `sock:inet_sock_set_state`: the 4-tuple of a TCP socket at a state change.
/// Only SYN_SENT (in the connecting thread's context, so `tgid`/`tid` name it) and
/// ESTABLISHED are reported; userspace joins them to connect/accept events to learn
/// local addresses without reading procfs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpStateEvent {
    /// Always [`kind::TCP_STATE`].
    pub kind: u32,
    /// `AF_INET` or `AF_INET6`.
    pub family: u32,
    pub ts_ns: u64,
    /// The current task: meaningful for SYN_SENT only (softirq otherwise).
    pub tgid: u32,
    pub tid: u32,
    /// Address of the kernel `struct sock`: identifies the socket, never dereferenced.
    pub skaddr: u64,
    pub oldstate: u32,
    pub newstate: u32,
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    pub _pad: u32,
    /// IPv4 in the first 4 bytes, or IPv6.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}
const _: () = assert!(size_of::<TcpStateEvent>() == 80);

/// Field offsets of the tracepoint records the kernel programs read, checked at
/// compile time against the kernel-side structs and by tests against tracefs.
pub mod layout {
    /// `syscalls:sys_enter_*`: argument `i` is at `SYSCALL_ARGS + 8 * i`, 8 bytes.
    /// `syscalls:sys_exit_*`: `ret` is at `SYSCALL_ARGS`, 8 bytes.
    pub const SYSCALL_ARGS: usize = 16;
    /// `sock:inet_sock_set_state` fields and offsets.
    pub const INET_SOCK_SET_STATE: [(&str, usize); 11] = [
        ("skaddr", 8),
        ("oldstate", 16),
        ("newstate", 20),
        ("sport", 24),
        ("dport", 26),
        ("family", 28),
        ("protocol", 30),
        ("saddr", 32),
        ("daddr", 36),
        ("saddr_v6", 40),
        ("daddr_v6", 56),
    ];
}

/// Key of the kernel's socket table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockKey {
    pub tgid: u32,
    pub fd: i32,
}
const _: () = assert!(size_of::<SockKey>() == 8);

/// Value of the kernel's socket table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockInfo {
    pub conn_id: u64,
    /// Bits of [`flags`] (role, discovered, preexisting).
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<SockInfo>() == 16);

/// Syscall arguments saved at enter, consumed at exit (keyed by `pid_tgid`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingCall {
    pub syscall: u32,
    pub fd: i32,
    /// Buffer, iovec array, msghdr, mmsghdr array or sockaddr pointer (arg 1).
    pub arg1: u64,
    /// Length, iovec count or message count (arg 2); `recvmsg`'s flags.
    pub arg2: u64,
    /// `recvfrom`'s flags (arg 3).
    pub arg3: u64,
    /// `sendto`/`recvfrom` sockaddr pointer (arg 4).
    pub arg4: u64,
}
const _: () = assert!(size_of::<PendingCall>() == 40);

/// `recv*` flag: the bytes are looked at, not consumed (`MSG_PEEK`); a later
/// read returns them again.
pub const MSG_PEEK: u64 = 2;

/// Key of the sample-count maps: one entry per distinct (process, thread name,
/// user stack, kernel stack). A stack id is negative when that stack is missing
/// (a kernel thread has no user stack, a sample in user mode no kernel stack) or
/// could not be stored (the negative errno of `bpf_get_stackid`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProfileKey {
    pub tgid: u32,
    pub user_stack: i32,
    pub kernel_stack: i32,
    pub _pad: u32,
    /// `comm` of the sampled thread (NUL padded).
    pub comm: [u8; 16],
    /// The span the thread was serving (`traces_ctx_v1`, big-endian bytes as
    /// a number), 0 for none.
    pub span_id: u64,
}
const _: () = assert!(size_of::<ProfileKey>() == 40);

/// Announces a process the sampler saw for the first time (since it started,
/// exec'd or its pid was reused), so userspace reads its memory map while the
/// process is still alive.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewProcess {
    pub tgid: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<NewProcess>() == 8);

/// Deepest stack `bpf_get_stackid` records (the kernel's `PERF_MAX_STACK_DEPTH`).
pub const MAX_STACK_DEPTH: usize = 127;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers and arrays, every bit pattern is valid.
    unsafe impl aya::Pod for super::ProfileKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NewProcess {}
    // SAFETY: plain `#[repr(C)]` integers and arrays, every bit pattern is valid.
    unsafe impl aya::Pod for super::SockKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PendingCall {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TcpStateEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TraceCtx {}
}
