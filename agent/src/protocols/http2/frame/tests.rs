//! Frame reader tests: every frame type, padding, CONTINUATION, gaps and
//! resynchronisation, bounds.
use super::*;
use crate::protocols::http2::wire::frame;

/// Chunks of a byte stream: (captured bytes, missing after them).
fn run(mut r: FrameReader, parts: &[(&[u8], u64)]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut offset = 0;
    for (i, (data, missing)) in parts.iter().enumerate() {
        let chunk = Chunk {
            ts_ns: i as u64 + 1,
            offset,
            data: data.to_vec(),
            missing: *missing,
        };
        offset += data.len() as u64 + missing;
        r.push(&chunk, &mut out);
    }
    out
}

fn split(bytes: &[u8], size: usize) -> Vec<Event> {
    let parts: Vec<(&[u8], u64)> = bytes.chunks(size).map(|c| (c, 0)).collect();
    run(FrameReader::server(), &parts)
}

fn bodies(events: &[Event]) -> Vec<Body> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Frame(f) => Some(f.body.clone()),
            _ => None,
        })
        .collect()
}

fn frames(events: &[Event]) -> Vec<Frame> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Frame(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

fn others(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .filter(|e| !matches!(e, Event::Frame(_)))
        .cloned()
        .collect()
}

/// One frame of every type, as a server would send them (plus a push).
fn every_type() -> Vec<u8> {
    let mut s = Vec::new();
    let mut settings = Vec::new();
    for (id, v) in [(1u16, 8192u32), (5, 32768), (0x99, 7)] {
        settings.extend(id.to_be_bytes());
        settings.extend(v.to_be_bytes());
    }
    s.extend(frame(kind::SETTINGS, 0, 0, &settings));
    s.extend(frame(kind::SETTINGS, flag::ACK, 0, &[]));
    s.extend(frame(kind::HEADERS, flag::END_HEADERS, 1, &[0x88]));
    s.extend(frame(kind::DATA, 0, 1, &[7; 10]));
    s.extend(frame(kind::DATA, flag::END_STREAM, 1, &[]));
    s.extend(frame(kind::PRIORITY, 0, 3, &[0x80, 0, 0, 1, 15]));
    s.extend(frame(kind::RST_STREAM, 0, 3, &8u32.to_be_bytes()));
    s.extend(frame(
        kind::PUSH_PROMISE,
        flag::END_HEADERS,
        1,
        &[0, 0, 0, 2, 0x82, 0x84],
    ));
    s.extend(frame(kind::PING, flag::ACK, 0, b"12345678"));
    let mut goaway = 0x8000_0005u32.to_be_bytes().to_vec();
    goaway.extend(2u32.to_be_bytes());
    goaway.extend(b"debug data");
    s.extend(frame(kind::GOAWAY, 0, 0, &goaway));
    s.extend(frame(
        kind::WINDOW_UPDATE,
        0,
        0,
        &0x8000_1000u32.to_be_bytes(),
    ));
    s.extend(frame(0x10, 0xff, 5, b"priority update"));
    s
}

fn every_type_bodies() -> Vec<Body> {
    vec![
        Body::Settings(Settings {
            header_table_size: Some(8192),
            max_frame_size: Some(32768),
            ..Settings::default()
        }),
        Body::Settings(Settings::default()),
        Body::Headers {
            block: vec![0x88],
            priority: None,
        },
        Body::Data {
            len: 10,
            exact: true,
        },
        Body::Data {
            len: 0,
            exact: true,
        },
        Body::Priority(Priority {
            exclusive: true,
            dependency: 1,
            weight: 15,
        }),
        Body::RstStream { error_code: 8 },
        Body::PushPromise {
            promised_stream_id: 2,
            block: vec![0x82, 0x84],
        },
        Body::Ping { data: *b"12345678" },
        Body::GoAway {
            last_stream_id: 5,
            error_code: 2,
        },
        Body::WindowUpdate { increment: 0x1000 },
        Body::Unknown {
            frame_type: 0x10,
            len: 15,
        },
    ]
}

#[test]
fn every_frame_type() {
    let events = split(&every_type(), usize::MAX);
    assert_eq!(others(&events), vec![]);
    assert_eq!(bodies(&events), every_type_bodies());
    let f = frames(&events);
    assert!(f[1].ack() && !f[0].ack());
    assert!(f[4].end_stream() && !f[3].end_stream());
    assert!(f[8].ack());
    assert_eq!(f[3].stream_id, 1);
}

#[test]
fn split_at_every_size_gives_the_same_frames() {
    let bytes = every_type();
    for size in [1, 2, 3, 5, 8, 9, 10, 17, 64] {
        let events = split(&bytes, size);
        assert_eq!(others(&events), vec![], "size {size}");
        assert_eq!(bodies(&events), every_type_bodies(), "size {size}");
    }
    // Timestamps: the first frame's header arrives in chunk 1, its last byte
    // (9 + 18 bytes in 1-byte chunks) in chunk 27.
    let f = frames(&split(&bytes, 1));
    assert_eq!((f[0].start_ns, f[0].end_ns), (1, 27));
}

#[test]
fn client_preface_then_frames() {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(kind::SETTINGS, 0, 0, &[]));
    let parts: Vec<(&[u8], u64)> = bytes.chunks(5).map(|c| (c, 0)).collect();
    let events = run(FrameReader::client(), &parts);
    assert_eq!(events[0], Event::Preface { ts_ns: 5 });
    assert_eq!(bodies(&events), vec![Body::Settings(Settings::default())]);

    let events = run(FrameReader::client(), &[(b"GET / HTTP/1.1\r\n", 0)]);
    assert_eq!(
        events,
        vec![
            Event::Error(FrameError::BadPreface),
            Event::FramingLost { ts_ns: 1 }
        ]
    );
}

#[test]
fn upgraded_readers_start_at_their_offset() {
    let push = |r: &mut FrameReader, ts_ns: u64, offset: u64, data: &[u8], missing: u64| {
        let mut out = Vec::new();
        let chunk = Chunk {
            ts_ns,
            offset,
            data: data.to_vec(),
            missing,
        };
        r.push(&chunk, &mut out);
        out
    };
    let settings = frame(kind::SETTINGS, 0, 0, &[]);
    let ping = frame(kind::PING, 0, 0, &[3; 8]);

    // Client: the HTTP/1 request ends at 40, the preface follows in the same
    // chunk, SETTINGS in the next one.
    let mut first = vec![b'x'; 40];
    first.extend(PREFACE);
    let mut r = FrameReader::client_at(40);
    let mut events = push(&mut r, 1, 0, &first, 0);
    events.extend(push(&mut r, 2, first.len() as u64, &settings, 0));
    assert_eq!(others(&events), vec![Event::Preface { ts_ns: 1 }]);
    assert_eq!(bodies(&events), vec![Body::Settings(Settings::default())]);

    // The offset inside a chunk's uncaptured tail, then a chunk starting
    // exactly there.
    let mut r = FrameReader::client_at(40);
    assert_eq!(push(&mut r, 1, 0, &[b'x'; 10], 30), vec![]);
    let mut second = PREFACE.to_vec();
    second.extend(&ping);
    let events = push(&mut r, 2, 40, &second, 0);
    assert_eq!(others(&events), vec![Event::Preface { ts_ns: 2 }]);
    assert_eq!(bodies(&events), vec![Body::Ping { data: [3; 8] }]);

    // Server: a chunk wholly before the offset is skipped, the next one is
    // read from the offset (the `101` head's end) on.
    let mut r = FrameReader::server_at(100);
    assert_eq!(push(&mut r, 1, 0, &[b'h'; 60], 0), vec![]);
    let mut tail = vec![b'h'; 40];
    tail.extend(&settings);
    tail.extend(&ping);
    let events = push(&mut r, 2, 60, &tail, 0);
    assert_eq!(others(&events), vec![]);
    assert_eq!(
        bodies(&events),
        vec![
            Body::Settings(Settings::default()),
            Body::Ping { data: [3; 8] }
        ]
    );
    // Bytes not seen before the offset are no gap: the reader never needed
    // them.
    let mut r = FrameReader::server_at(100);
    let events = push(&mut r, 5, 100, &settings, 0);
    assert_eq!(others(&events), vec![]);
    assert_eq!(bodies(&events), vec![Body::Settings(Settings::default())]);
    // A chunk starting after the offset is a gap at the frame start (this
    // one starts with a plausible frame).
    let mut r = FrameReader::server_at(100);
    let events = push(&mut r, 6, 105, &settings, 0);
    assert_eq!(
        others(&events),
        vec![
            Event::FramingLost { ts_ns: 6 },
            Event::Resynced { ts_ns: 6 }
        ]
    );
}

#[test]
fn padding_and_priority_are_stripped() {
    let mut s = Vec::new();
    // PADDED | PRIORITY: pad length 3, priority (5 bytes), fragment, padding.
    let mut p = vec![3, 0, 0, 0, 7, 200];
    p.extend([0x82, 0x86]);
    p.extend([0; 3]);
    s.extend(frame(
        kind::HEADERS,
        flag::PADDED | flag::PRIORITY | flag::END_HEADERS | flag::END_STREAM,
        1,
        &p,
    ));
    s.extend(frame(kind::DATA, flag::PADDED, 1, &[4, 1, 2, 0, 0, 0, 0]));
    s.extend(frame(
        kind::PUSH_PROMISE,
        flag::PADDED | flag::END_HEADERS,
        1,
        &[1, 0, 0, 0, 4, 0xbe, 0],
    ));
    let events = split(&s, usize::MAX);
    assert_eq!(others(&events), vec![]);
    assert_eq!(
        bodies(&events),
        vec![
            Body::Headers {
                block: vec![0x82, 0x86],
                priority: Some(Priority {
                    exclusive: false,
                    dependency: 7,
                    weight: 200
                }),
            },
            Body::Data {
                len: 2,
                exact: true
            },
            Body::PushPromise {
                promised_stream_id: 4,
                block: vec![0xbe],
            },
        ]
    );
    assert!(frames(&events)[0].end_stream());
    // Padding as long as the payload is an error; framing is kept.
    let mut s = frame(kind::DATA, flag::PADDED, 1, &[5, 0, 0, 0, 0]);
    s.extend(frame(
        kind::HEADERS,
        flag::PADDED | flag::END_HEADERS,
        1,
        &[9, 0x82],
    ));
    s.extend(frame(kind::PING, 0, 0, &[0; 8]));
    let events = split(&s, usize::MAX);
    assert_eq!(
        others(&events),
        vec![
            Event::Error(FrameError::BadPadding { frame_type: 0 }),
            Event::Error(FrameError::BadPadding { frame_type: 1 }),
            Event::HeaderBlockLost {
                stream_id: 1,
                reason: LossReason::Protocol
            },
        ]
    );
    assert_eq!(bodies(&events), vec![Body::Ping { data: [0; 8] }]);
}

#[test]
fn continuation_frames_join_the_block() {
    let mut s = frame(kind::HEADERS, flag::END_STREAM, 3, &[1, 2]);
    s.extend(frame(kind::CONTINUATION, 0, 3, &[3]));
    s.extend(frame(kind::CONTINUATION, 0, 3, &[]));
    s.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 3, &[4, 5]));
    let parts: Vec<(&[u8], u64)> = s.chunks(9).map(|c| (c, 0)).collect();
    let events = run(FrameReader::server(), &parts);
    assert_eq!(others(&events), vec![]);
    let f = frames(&events);
    assert_eq!(f.len(), 1);
    assert_eq!(
        f[0].body,
        Body::Headers {
            block: vec![1, 2, 3, 4, 5],
            priority: None
        }
    );
    assert_eq!((f[0].start_ns, f[0].end_ns), (1, parts.len() as u64));
    assert_eq!(f[0].flags, flag::END_STREAM | flag::END_HEADERS);
    assert!(f[0].end_stream());
}

#[test]
fn continuation_out_of_place_is_a_protocol_error() {
    let mut s = frame(kind::CONTINUATION, flag::END_HEADERS, 1, &[1]);
    s.extend(frame(kind::HEADERS, 0, 3, &[2]));
    s.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 5, &[3]));
    s.extend(frame(kind::HEADERS, 0, 7, &[4]));
    s.extend(frame(kind::PING, 0, 0, &[0; 8]));
    s.extend(frame(kind::HEADERS, flag::END_HEADERS, 9, &[5]));
    let events = split(&s, usize::MAX);
    assert_eq!(
        others(&events),
        vec![
            Event::Error(FrameError::UnexpectedContinuation { stream_id: 1 }),
            Event::HeaderBlockLost {
                stream_id: 1,
                reason: LossReason::Protocol
            },
            Event::Error(FrameError::ContinuationWrongStream {
                expected: 3,
                got: 5
            }),
            Event::HeaderBlockLost {
                stream_id: 3,
                reason: LossReason::Protocol
            },
            Event::Error(FrameError::Interleaved {
                stream_id: 7,
                frame_type: kind::PING
            }),
            Event::HeaderBlockLost {
                stream_id: 7,
                reason: LossReason::Protocol
            },
        ]
    );
    assert_eq!(
        bodies(&events),
        vec![
            Body::Ping { data: [0; 8] },
            Body::Headers {
                block: vec![5],
                priority: None
            }
        ]
    );
}

#[test]
fn gap_inside_data_is_skipped_exactly() {
    let data = frame(kind::DATA, flag::END_STREAM, 1, &[0xaa; 100]);
    let headers = frame(kind::HEADERS, flag::END_HEADERS, 3, &[0x88]);
    let events = run(FrameReader::server(), &[(&data[..20], 89), (&headers, 0)]);
    assert_eq!(others(&events), vec![]);
    let f = frames(&events);
    assert_eq!(
        f[0].body,
        Body::Data {
            len: 100,
            exact: true
        }
    );
    assert_eq!((f[0].start_ns, f[0].end_ns), (1, 1));
    assert_eq!(f[1].stream_id, 3);
    // The pad length byte itself in the gap: the length is an upper bound.
    let data = frame(kind::DATA, flag::PADDED, 1, &[2, 0, 0, 0, 0]);
    let events = run(FrameReader::server(), &[(&data[..9], 5), (&headers, 0)]);
    assert_eq!(
        bodies(&events)[0],
        Body::Data {
            len: 4,
            exact: false
        }
    );
    // A gap covering only a header block's padding loses nothing.
    let h = frame(
        kind::HEADERS,
        flag::PADDED | flag::END_HEADERS,
        1,
        &[3, 0x82, 0, 0, 0],
    );
    let events = run(FrameReader::server(), &[(&h[..11], 3), (&headers, 0)]);
    assert_eq!(others(&events), vec![]);
    assert_eq!(bodies(&events).len(), 2);
}

#[test]
fn gap_inside_a_header_block_loses_the_block_only() {
    let mut s = frame(kind::HEADERS, 0, 1, &[1; 20]);
    let cut = s.len() - 5;
    s.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 1, &[2; 4]));
    let next = frame(kind::HEADERS, flag::END_HEADERS, 3, &[0x88]);
    let events = run(
        FrameReader::server(),
        &[(&s[..cut], 5), (&s[cut + 5..], 0), (&next, 0)],
    );
    assert_eq!(
        others(&events),
        vec![Event::HeaderBlockLost {
            stream_id: 1,
            reason: LossReason::Gap
        }]
    );
    assert!(events[0].loses_hpack_state());
    assert_eq!(
        bodies(&events),
        vec![Body::Headers {
            block: vec![0x88],
            priority: None
        }]
    );
    // A gap in a CONTINUATION loses the block too.
    let c = frame(kind::CONTINUATION, flag::END_HEADERS, 1, &[2; 4]);
    let h = frame(kind::HEADERS, 0, 1, &[1; 3]);
    let events = run(FrameReader::server(), &[(&h, 0), (&c[..10], 3), (&next, 0)]);
    assert_eq!(
        others(&events),
        vec![Event::HeaderBlockLost {
            stream_id: 1,
            reason: LossReason::Gap
        }]
    );
    assert_eq!(bodies(&events).len(), 1);
}

#[test]
fn gap_inside_a_frame_header_loses_framing_until_a_plausible_chunk() {
    let ping = frame(kind::PING, 0, 0, &[0; 8]);
    let h = frame(kind::HEADERS, flag::END_HEADERS, 5, &[0x82]);
    let events = run(
        FrameReader::server(),
        &[
            (&ping[..4], 13),
            // Mid-frame garbage at a chunk start: not plausible.
            (&[0xff; 20], 0),
            // Too short to judge.
            (&h[..5], 0),
            (&h, 0),
        ],
    );
    assert_eq!(
        others(&events),
        vec![
            Event::FramingLost { ts_ns: 1 },
            Event::Resynced { ts_ns: 4 }
        ]
    );
    assert_eq!(frames(&events)[0].stream_id, 5);
    assert!(events[0].loses_hpack_state());
}

#[test]
fn gap_past_the_end_of_a_payload_loses_framing() {
    let data = frame(kind::DATA, 0, 1, &[0; 10]);
    let h = frame(kind::HEADERS, flag::END_HEADERS | 0x40, 1, &[0x82]);
    // The DATA payload ends inside the gap, which goes on into the next header.
    let mut open = frame(kind::HEADERS, 0, 3, &[1]);
    open.extend(&data[..12]);
    let events = run(FrameReader::server(), &[(&open, 20), (&h, 0)]);
    assert_eq!(
        others(&events),
        vec![
            Event::Error(FrameError::Interleaved {
                stream_id: 3,
                frame_type: kind::DATA
            }),
            Event::HeaderBlockLost {
                stream_id: 3,
                reason: LossReason::Protocol
            },
            Event::FramingLost { ts_ns: 1 },
        ]
    );
    // The DATA frame completed in the gap; the next chunk's undefined flag
    // (0x40) makes it implausible, so the reader stays lost.
    assert_eq!(
        bodies(&events),
        vec![Body::Data {
            len: 10,
            exact: true
        }]
    );
}

#[test]
fn resync_checks_the_following_frame_header() {
    let mut fake = frame(kind::DATA, 0, 1, &[0; 4]);
    fake.extend([0xff; 9]);
    let mut real = frame(kind::DATA, 0, 1, &[0; 4]);
    real.extend(frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
    let mut r = FrameReader::midstream();
    let events = run(r.clone(), &[(&fake, 0)]);
    assert_eq!(events, vec![]);
    let events = run(r.clone(), &[(&real, 0)]);
    assert_eq!(events[0], Event::Resynced { ts_ns: 1 });
    assert_eq!(bodies(&events).len(), 2);
    // The client preface at a chunk start is a resynchronisation point too.
    let mut out = Vec::new();
    r.push(
        &Chunk {
            ts_ns: 9,
            offset: 1000,
            data: PREFACE.to_vec(),
            missing: 0,
        },
        &mut out,
    );
    assert_eq!(
        out,
        vec![Event::Resynced { ts_ns: 9 }, Event::Preface { ts_ns: 9 }]
    );
}

#[test]
fn bad_lengths_are_errors_that_keep_framing() {
    let mut s = frame(kind::PING, 0, 0, &[0; 7]);
    s.extend(frame(kind::SETTINGS, 0, 0, &[0; 5]));
    s.extend(frame(kind::SETTINGS, flag::ACK, 0, &[0; 6]));
    s.extend(frame(kind::WINDOW_UPDATE, 0, 1, &[0; 3]));
    s.extend(frame(kind::RST_STREAM, 0, 0, &[0; 4]));
    s.extend(frame(kind::GOAWAY, 0, 0, &[0; 7]));
    s.extend(frame(kind::PRIORITY, 0, 1, &[0; 6]));
    s.extend(frame(kind::DATA, 0, 0, &[0; 6]));
    s.extend(frame(
        kind::HEADERS,
        flag::PRIORITY | flag::END_HEADERS,
        1,
        &[0; 4],
    ));
    s.extend(frame(kind::PING, 0, 0, &[1; 8]));
    let events = split(&s, 7);
    let errors: Vec<_> = others(&events)
        .into_iter()
        .filter(|e| matches!(e, Event::Error(_)))
        .collect();
    assert_eq!(errors.len(), 9);
    assert_eq!(bodies(&events), vec![Body::Ping { data: [1; 8] }]);
}

#[test]
fn continuation_flood_and_oversized_blocks_are_bounded() {
    let mut s = frame(kind::HEADERS, 0, 1, &[1]);
    for _ in 0..MAX_CONTINUATIONS + 50 {
        s.extend(frame(kind::CONTINUATION, 0, 1, &[]));
    }
    s.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 1, &[2]));
    s.extend(frame(kind::HEADERS, flag::END_HEADERS, 3, &[3]));
    let events = split(&s, 1000);
    assert_eq!(
        others(&events),
        vec![
            Event::Error(FrameError::ContinuationFlood { stream_id: 1 }),
            Event::HeaderBlockLost {
                stream_id: 1,
                reason: LossReason::Flood
            },
        ]
    );
    assert_eq!(frames(&events).len(), 1);

    let big = vec![0x82; 40 * 1024];
    let mut s = frame(kind::HEADERS, 0, 1, &big);
    s.extend(frame(kind::CONTINUATION, 0, 1, &big));
    s.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 1, &big));
    s.extend(frame(kind::HEADERS, flag::END_HEADERS, 3, &[3]));
    let events = split(&s, 4096);
    assert_eq!(
        others(&events),
        vec![
            Event::Error(FrameError::HeaderBlockTooLarge { stream_id: 1 }),
            Event::HeaderBlockLost {
                stream_id: 1,
                reason: LossReason::TooLarge
            },
        ]
    );
    assert_eq!(frames(&events).len(), 1);
}

#[test]
fn offsets_jumping_ahead_are_gaps_and_overlaps_are_skipped() {
    let data = frame(kind::DATA, 0, 1, &[0; 30]);
    let ping = frame(kind::PING, 0, 0, &[2; 8]);
    let mut r = FrameReader::server();
    let mut out = Vec::new();
    let mut push = |offset: u64, bytes: &[u8], out: &mut Vec<Event>| {
        r.push(
            &Chunk {
                ts_ns: offset,
                offset,
                data: bytes.to_vec(),
                missing: 0,
            },
            out,
        );
    };
    push(0, &data[..15], &mut out);
    // Bytes 15..30 were dropped by the stream buffer; 30..39 overlap.
    push(30, &data[30..], &mut out);
    push(30, &data[30..], &mut out);
    push(39, &ping, &mut out);
    assert_eq!(others(&out), vec![]);
    assert_eq!(
        bodies(&out),
        vec![
            Body::Data {
                len: 30,
                exact: true
            },
            Body::Ping { data: [2; 8] }
        ]
    );
}

#[test]
fn midstream_reader_waits_for_a_frame_start() {
    let data = frame(kind::DATA, 0, 1, &[0; 30]);
    let h = frame(kind::HEADERS, flag::END_HEADERS, 3, &[0x82]);
    let events = run(FrameReader::midstream(), &[(&data[12..], 0), (&h, 0)]);
    assert_eq!(events[0], Event::Resynced { ts_ns: 2 });
    assert_eq!(bodies(&events).len(), 1);
}

/// Block `k` references the entries blocks `k-1` and `k-2` inserted (by
/// dynamic index 62 and 63), then inserts its own: a table that drifted by
/// one position would give wrong values.
fn chained_block(k: usize) -> (Vec<u8>, Fields) {
    let mut block = Vec::new();
    let mut want = Vec::new();
    for (index, back) in [(0xbe, 1), (0xbf, 2)] {
        if k >= back {
            block.push(index);
            want.push((format!("x-{}", k - back), format!("v{}", k - back)));
        }
    }
    let (name, value) = (format!("x-{k}"), format!("v{k}"));
    block.push(0x40);
    block.push(name.len() as u8);
    block.extend(name.as_bytes());
    block.push(value.len() as u8);
    block.extend(value.as_bytes());
    want.push((name, value));
    (block, want)
}

/// One frame per syscall: HEADERS (every third one split with a
/// CONTINUATION) and a DATA frame after each.
/// The expected (name, value) fields of one block.
type Fields = Vec<(String, String)>;

fn chained_stream(blocks: usize) -> (Vec<Vec<u8>>, Vec<Fields>) {
    let mut chunks = Vec::new();
    let mut wants = Vec::new();
    for k in 0..blocks {
        let (block, want) = chained_block(k);
        let stream = 2 * k as u32 + 1;
        if k % 3 == 0 {
            let (a, b) = block.split_at(3);
            chunks.push(frame(kind::HEADERS, 0, stream, a));
            chunks.push(frame(kind::CONTINUATION, flag::END_HEADERS, stream, b));
        } else {
            chunks.push(frame(kind::HEADERS, flag::END_HEADERS, stream, &block));
        }
        chunks.push(frame(kind::DATA, flag::END_STREAM, stream, &[0; 12]));
        wants.push(want);
    }
    (chunks, wants)
}

/// A gap at every byte of every syscall (the kernel captured a prefix),
/// and every syscall dropped whole: never a wrong field, and everything
/// known again within two blocks of the loss.
#[test]
fn a_gap_anywhere_never_gives_a_wrong_header() {
    use crate::protocols::http2::hpack::Decoder;
    let (frames, wants) = chained_stream(8);
    let mut cases = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        for cut in 0..f.len() {
            cases.push((i, Some(cut)));
        }
        cases.push((i, None));
    }
    for (lossy, cut) in cases {
        let mut reader = FrameReader::server();
        let mut decoder = Decoder::new();
        let mut offset = 0u64;
        let mut events = Vec::new();
        let mut decoded = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let chunk = match (i == lossy, cut) {
                (true, Some(cut)) => Chunk {
                    ts_ns: i as u64,
                    offset,
                    data: f[..cut].to_vec(),
                    missing: (f.len() - cut) as u64,
                },
                // Dropped whole: the next chunk's offset jumps.
                (true, None) => {
                    offset += f.len() as u64;
                    continue;
                }
                _ => Chunk {
                    ts_ns: i as u64,
                    offset,
                    data: f.clone(),
                    missing: 0,
                },
            };
            offset += f.len() as u64;
            events.clear();
            reader.push(&chunk, &mut events);
            for e in &events {
                if e.loses_hpack_state() {
                    decoder.reset_epoch();
                }
                if let Event::Frame(Frame {
                    stream_id,
                    body: Body::Headers { block, .. },
                    ..
                }) = e
                {
                    decoded.push(((*stream_id as usize - 1) / 2, decoder.decode(block)));
                }
            }
        }
        let case = format!("chunk {lossy} cut {cut:?}");
        let first_lost = frames[..=lossy]
            .iter()
            .filter(|f| f[3] == kind::HEADERS)
            .count()
            .saturating_sub(1);
        for (k, out) in &decoded {
            assert_eq!(out.error, None, "{case} block {k}");
            assert_eq!(out.fields.len(), wants[*k].len(), "{case} block {k}");
            for (field, (name, value)) in out.fields.iter().zip(&wants[*k]) {
                if let Some(n) = &field.name {
                    assert_eq!(n, name.as_bytes(), "{case} block {k}");
                }
                if let Some(v) = &field.value {
                    assert_eq!(v, value.as_bytes(), "{case} block {k}");
                }
                if *k > first_lost + 2 {
                    assert!(field.is_known(), "{case} block {k}");
                }
            }
        }
        // Every block after the loss's neighbourhood was read.
        let late = decoded.iter().filter(|(k, _)| *k > first_lost + 1).count();
        assert_eq!(late, wants.len().saturating_sub(first_lost + 2), "{case}");
    }
}

#[test]
fn goaway_debug_data_may_be_lost() {
    let mut goaway = 3u32.to_be_bytes().to_vec();
    goaway.extend(0u32.to_be_bytes());
    goaway.extend([b'x'; 100]);
    let g = frame(kind::GOAWAY, 0, 0, &goaway);
    let events = run(FrameReader::server(), &[(&g[..30], 87)]);
    assert_eq!(
        bodies(&events),
        vec![Body::GoAway {
            last_stream_id: 3,
            error_code: 0
        }]
    );
}

#[test]
fn truncated_control_frames_are_reported_as_such() {
    let settings = frame(
        kind::SETTINGS,
        0,
        0,
        &[0, 1, 0, 0, 0x10, 0, 0, 4, 0, 0, 0, 1],
    );
    let ping = frame(kind::PING, 0, 0, &[0; 8]);
    let events = run(
        FrameReader::server(),
        &[(&settings[..12], 9), (&ping[..10], 7), (&ping, 0)],
    );
    assert_eq!(
        bodies(&events),
        vec![
            Body::Truncated {
                frame_type: kind::SETTINGS,
                len: 12
            },
            Body::Truncated {
                frame_type: kind::PING,
                len: 8
            },
            Body::Ping { data: [0; 8] },
        ]
    );
}

fn data_reader() -> FrameReader {
    let mut r = FrameReader::server();
    r.set_data_bytes(true);
    r
}

/// (stream, at, bytes) of every [`Event::DataBytes`].
fn data_bytes(events: &[Event]) -> Vec<(u32, u32, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::DataBytes {
                stream_id,
                at,
                bytes,
            } => Some((*stream_id, *at, bytes.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn data_bytes_are_off_by_default() {
    let bytes = frame(kind::DATA, 0, 1, b"hello");
    let events = run(FrameReader::server(), &[(&bytes, 0)]);
    assert_eq!(data_bytes(&events), vec![]);
    let events = run(data_reader(), &[(&bytes, 0)]);
    assert_eq!(data_bytes(&events), vec![(1, 0, b"hello".to_vec())]);
}

#[test]
fn data_bytes_exclude_padding_and_come_before_their_frame() {
    let mut bytes = Vec::new();
    // PADDED: pad length 3, "hello", 3 bytes of padding.
    bytes.extend(frame(kind::DATA, flag::PADDED, 1, b"\x03hello\0\0\0"));
    bytes.extend(frame(kind::HEADERS, flag::END_HEADERS, 3, &[0x88]));
    bytes.extend(frame(kind::DATA, flag::END_STREAM, 3, b"world!"));
    bytes.extend(frame(kind::DATA, flag::END_STREAM, 1, &[]));
    for size in 1..=bytes.len() {
        let parts: Vec<(&[u8], u64)> = bytes.chunks(size).map(|c| (c, 0)).collect();
        let events = run(data_reader(), &parts);
        let mut joined: [Vec<u8>; 2] = Default::default();
        for (stream, at, piece) in data_bytes(&events) {
            let buf = &mut joined[(stream / 3) as usize];
            assert_eq!(at as usize, buf.len(), "size {size}: pieces in order");
            buf.extend(piece);
        }
        assert_eq!(
            joined,
            [b"hello".to_vec(), b"world!".to_vec()],
            "size {size}"
        );
        // Each frame's bytes are all reported before its Frame event.
        let first_frame = events
            .iter()
            .position(|e| matches!(e, Event::Frame(_)))
            .unwrap();
        let last_stream_1 = events
            .iter()
            .rposition(|e| matches!(e, Event::DataBytes { stream_id: 1, .. }))
            .unwrap();
        assert!(last_stream_1 < first_frame, "size {size}");
        assert_eq!(
            bodies(&events)[0],
            Body::Data {
                len: 5,
                exact: true
            }
        );
    }
}

#[test]
fn uncaptured_data_bytes_are_holes_not_reported() {
    let data: Vec<u8> = (0..20).collect();
    let f = frame(kind::DATA, 0, 5, &data);
    // Header and 5 data bytes captured, 10 missing; then the last 5.
    let events = run(data_reader(), &[(&f[..14], 10), (&f[24..], 0)]);
    assert_eq!(
        data_bytes(&events),
        vec![(5, 0, data[..5].to_vec()), (5, 15, data[15..].to_vec())]
    );
    assert_eq!(
        bodies(&events),
        vec![Body::Data {
            len: 20,
            exact: true
        }]
    );
    // A lost pad length: the data length is unknown, so nothing is reported.
    let f = frame(kind::DATA, flag::PADDED, 5, b"\x02abcdef\0\0");
    let events = run(data_reader(), &[(&f[..9], 1), (&f[10..], 0)]);
    assert_eq!(data_bytes(&events), vec![]);
    assert_eq!(
        bodies(&events),
        vec![Body::Data {
            len: 8,
            exact: false
        }]
    );
}
