//! `sock:inet_sock_set_state`: the one place a TCP socket's full 4-tuple is visible
//! without kprobes. Format: `/sys/kernel/tracing/events/sock/inet_sock_set_state/format`
//! (<https://github.com/torvalds/linux/blob/v6.18/include/trace/events/sock.h>), stable
//! since 4.16. We forward SYN_SENT (fired inside `connect`, so the current task is the
//! connecting thread) and ESTABLISHED; everything else is dropped here.

use agent_common::{Loss, TcpStateEvent, kind, tcp_state};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::TracePointContext,
};

use crate::{AGENT_TGID, EVENTS, output_flags};

const IPPROTO_TCP: u16 = 6;
const AF_INET: u16 = 2;

/// Record layout of the tracepoint (offsets from the format file).
#[repr(C)]
struct Record {
    _common: u64,
    skaddr: u64,
    oldstate: i32,
    newstate: i32,
    sport: u16,
    dport: u16,
    family: u16,
    protocol: u16,
    saddr: [u8; 4],
    daddr: [u8; 4],
    saddr_v6: [u8; 16],
    daddr_v6: [u8; 16],
}

/// The struct must match the offsets the tests check against tracefs.
const _: () = {
    use core::mem::offset_of;
    let l = agent_common::layout::INET_SOCK_SET_STATE;
    assert!(offset_of!(Record, skaddr) == l[0].1);
    assert!(offset_of!(Record, oldstate) == l[1].1);
    assert!(offset_of!(Record, newstate) == l[2].1);
    assert!(offset_of!(Record, sport) == l[3].1);
    assert!(offset_of!(Record, dport) == l[4].1);
    assert!(offset_of!(Record, family) == l[5].1);
    assert!(offset_of!(Record, protocol) == l[6].1);
    assert!(offset_of!(Record, saddr) == l[7].1);
    assert!(offset_of!(Record, daddr) == l[8].1);
    assert!(offset_of!(Record, saddr_v6) == l[9].1);
    assert!(offset_of!(Record, daddr_v6) == l[10].1);
};

pub fn on_set_state(ctx: &TracePointContext) -> Result<(), Loss> {
    // Copied out with one probe read: the verifier forbids dereferencing a ctx
    // pointer at an offset, which copying the address arrays field by field does.
    // SAFETY: the record is as long as the format says.
    let r: Record = unsafe { ctx.read_at(0) }.map_err(|_| Loss::CopyFailed)?;
    let newstate = r.newstate as u32;
    if r.protocol != IPPROTO_TCP
        || (newstate != tcp_state::SYN_SENT && newstate != tcp_state::ESTABLISHED)
    {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if newstate == tcp_state::SYN_SENT && tgid == AGENT_TGID.load() {
        return Ok(());
    }
    let mut event = TcpStateEvent {
        kind: kind::TCP_STATE,
        family: u32::from(r.family),
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        tgid,
        tid: pid_tgid as u32,
        skaddr: r.skaddr,
        oldstate: r.oldstate as u32,
        newstate,
        sport: r.sport,
        dport: r.dport,
        _pad: 0,
        saddr: r.saddr_v6,
        daddr: r.daddr_v6,
    };
    if r.family == AF_INET {
        event.saddr = [0; 16];
        event.daddr = [0; 16];
        event.saddr[..4].copy_from_slice(&r.saddr);
        event.daddr[..4].copy_from_slice(&r.daddr);
    }
    EVENTS
        .output::<TcpStateEvent>(&event, output_flags())
        .map_err(|_| Loss::RingbufFull)
}
