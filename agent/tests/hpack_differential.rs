//! Differential test of the HPACK decoder against an independent encoder
//! (Python's `hpack`): pseudo-random header sets over several connections,
//! with table size changes, long values that force eviction, sensitive fields,
//! Huffman on and off. A decoder that saw each connection from its start must
//! give every field back exactly; decoders attached mid-connection must never
//! give a wrong name or value, only unknown ones.
//!
//! Skips (with a message) when python3 cannot import `hpack`.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use agent::protocols::http2::hpack::Decoder;
use serde_json::{Value, json};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/hpack/encode.py"
);

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Clone, Debug)]
struct Header {
    name: Vec<u8>,
    value: Vec<u8>,
    sensitive: bool,
}

struct BlockSpec {
    table_size: Option<u32>,
    huffman: bool,
    headers: Vec<Header>,
}

const NAMES: &[&str] = &[
    ":method",
    ":path",
    ":scheme",
    ":authority",
    ":status",
    "content-type",
    "user-agent",
    "te",
    "grpc-timeout",
    "grpc-status",
    "grpc-message",
    "traceparent",
    "x-request-id",
    "cookie",
    "accept-encoding",
    "date",
];

const VALUES: &[&str] = &[
    "GET",
    "POST",
    "/",
    "/pkg.Service/Method",
    "/users/42/orders",
    "http",
    "200",
    "404",
    "application/grpc",
    "trailers",
    "gzip, deflate",
    "0",
    "14",
];

fn random_bytes(rng: &mut Rng, len: usize, any_byte: bool) -> Vec<u8> {
    (0..len)
        .map(|_| {
            if any_byte {
                rng.below(256) as u8
            } else {
                b"abcdefghijklmnopqrstuvwxyz0123456789-_/.=;: "[rng.below(44)]
            }
        })
        .collect()
}

fn header(rng: &mut Rng) -> Header {
    let name = match rng.below(4) {
        0 => format!("x-custom-{}", rng.below(40)).into_bytes(),
        _ => NAMES[rng.below(NAMES.len())].as_bytes().to_vec(),
    };
    let value = match rng.below(10) {
        0..=4 => VALUES[rng.below(VALUES.len())].as_bytes().to_vec(),
        5 | 6 => format!("v{}", rng.below(30)).into_bytes(),
        7 => {
            let len = rng.below(40);
            random_bytes(rng, len, true)
        }
        8 => {
            let len = rng.below(300);
            random_bytes(rng, len, false)
        }
        // Long enough to evict most of a small table, or not fit at all.
        _ => {
            let len = 200 + rng.below(5000);
            random_bytes(rng, len, false)
        }
    };
    Header {
        name,
        value,
        sensitive: rng.below(12) == 0,
    }
}

fn connections() -> Vec<Vec<BlockSpec>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let sizes = [0u32, 100, 256, 1024, 4096, 16384, 65536];
    (0..6)
        .map(|_| {
            (0..70)
                .map(|i| BlockSpec {
                    table_size: (i > 0 && rng.below(12) == 0)
                        .then(|| sizes[rng.below(sizes.len())]),
                    huffman: rng.below(3) != 0,
                    headers: (0..1 + rng.below(14)).map(|_| header(&mut rng)).collect(),
                })
                .collect()
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex from the encoder"))
        .collect()
}

fn python_hpack() -> bool {
    Command::new("python3")
        .args(["-c", "import hpack"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn encode(conns: &[Vec<BlockSpec>]) -> Vec<Vec<Vec<u8>>> {
    let input: Vec<Value> = conns
        .iter()
        .map(|blocks| {
            Value::Array(
                blocks
                    .iter()
                    .map(|b| {
                        json!({
                            "table_size": b.table_size,
                            "huffman": b.huffman,
                            "headers": b.headers.iter().map(|h| json!([hex(&h.name), hex(&h.value), h.sensitive])).collect::<Vec<_>>(),
                        })
                    })
                    .collect(),
            )
        })
        .collect();
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3");
    let body = serde_json::to_vec(&input).expect("serialise the header sets");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(&body)
        .expect("write to encode.py");
    let out = child.wait_with_output().expect("wait for encode.py");
    assert!(out.status.success(), "encode.py failed");
    let v: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).expect("encode.py output");
    v.into_iter()
        .map(|c| c.iter().map(|b| unhex(b)).collect())
        .collect()
}

#[test]
fn decoder_matches_python_hpack() {
    if !python_hpack() {
        // Straight to stderr, past libtest's capture: `cargo xtask test` counts these.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"SKIPPED hpack_differential: python3 hpack not installed\n",
        );
        return;
    }
    let conns = connections();
    let encoded = encode(&conns);
    let mut blocks_checked = 0;
    let mut mid_known = 0;
    let mut mid_unknown = 0;
    for (c, (specs, blocks)) in conns.iter().zip(&encoded).enumerate() {
        assert_eq!(specs.len(), blocks.len());
        let mut full = Decoder::new();
        // Mid-stream decoders attached before blocks 1, 10 and 35.
        let mut mids: Vec<(usize, Decoder)> = [1, 10, 35]
            .into_iter()
            .map(|k| (k, Decoder::new_midstream()))
            .collect();
        for (i, (spec, block)) in specs.iter().zip(blocks).enumerate() {
            if let Some(size) = spec.table_size {
                full.set_max_table_size(size);
            }
            let out = full.decode(block);
            assert_eq!(out.error, None, "connection {c} block {i}");
            assert_eq!(
                out.fields.len(),
                spec.headers.len(),
                "connection {c} block {i}"
            );
            for (j, (got, want)) in out.fields.iter().zip(&spec.headers).enumerate() {
                assert_eq!(
                    got.name.as_ref(),
                    Some(&want.name),
                    "connection {c} block {i} field {j}"
                );
                assert_eq!(
                    got.value.as_ref(),
                    Some(&want.value),
                    "connection {c} block {i} field {j}"
                );
                // Python sends a sensitive field as indexed when the table holds
                // it; it never marks a non-sensitive field never-indexed.
                assert!(
                    !got.sensitive || want.sensitive,
                    "connection {c} block {i} field {j}"
                );
            }
            assert!(full.table_size() <= full.table_limit());
            blocks_checked += 1;
            for (start, mid) in &mut mids {
                if i < *start {
                    continue;
                }
                if let Some(size) = spec.table_size {
                    mid.set_max_table_size(size);
                }
                let out = mid.decode(block);
                assert!(
                    !out.new_epoch,
                    "connection {c} block {i} (mid from {start})"
                );
                assert_eq!(out.fields.len(), spec.headers.len());
                for (got, want) in out.fields.iter().zip(&spec.headers) {
                    if let Some(name) = &got.name {
                        assert_eq!(
                            name, &want.name,
                            "connection {c} block {i} (mid from {start})"
                        );
                    }
                    if let Some(value) = &got.value {
                        assert_eq!(
                            value, &want.value,
                            "connection {c} block {i} (mid from {start})"
                        );
                    }
                    if got.is_known() {
                        mid_known += 1;
                    } else {
                        mid_unknown += 1;
                    }
                }
            }
        }
    }
    assert_eq!(blocks_checked, 6 * 70);
    // Both cases really happen: references to entries from before the attach,
    // and (far more) fields the attached decoder knows.
    assert!(
        mid_unknown > 0,
        "no unknown fields: the mid-stream case is not exercised"
    );
    assert!(
        mid_known > 10 * mid_unknown,
        "known {mid_known}, unknown {mid_unknown}"
    );
    println!(
        "hpack_differential: {blocks_checked} blocks, mid-stream known {mid_known} unknown {mid_unknown}"
    );
}
