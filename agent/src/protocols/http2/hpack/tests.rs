use super::*;
use crate::protocols::http2::wire::{indexed, int, size_update, string};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn known(fields: &[Field]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|f| {
            (
                String::from_utf8(f.name.clone().expect("name known")).unwrap(),
                String::from_utf8(f.value.clone().expect("value known")).unwrap(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// The dynamic table as (name, value) pairs, newest first.
fn table(d: &Decoder) -> Vec<(String, String)> {
    (0..d.known_entries())
        .map(|j| match d.table.get(j) {
            Lookup::Entry(e) => (
                String::from_utf8(e.name.clone().unwrap()).unwrap(),
                String::from_utf8(e.value.clone().unwrap()).unwrap(),
            ),
            other => panic!("entry {j}: {other:?}"),
        })
        .collect()
}

fn ok(d: &mut Decoder, block: &[u8]) -> Vec<(String, String)> {
    let out = d.decode(block);
    assert_eq!(out.error, None);
    assert!(!out.new_epoch);
    known(&out.fields)
}

/// Literal with incremental indexing, new name.
fn insert(name: &str, value: &str) -> Vec<u8> {
    let mut v = vec![0x40];
    string(name.as_bytes(), &mut v);
    string(value.as_bytes(), &mut v);
    v
}

/// Literal with incremental indexing, indexed name.
fn insert_indexed_name(index: u32, value: &str) -> Vec<u8> {
    let mut v = Vec::new();
    int(0x40, 6, index, &mut v);
    string(value.as_bytes(), &mut v);
    v
}

#[test]
fn c1_integers() {
    // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337 with a 5-bit prefix; C.1.3: 42 at an octet boundary.
    for (bytes, prefix, value) in [
        (vec![0x0a], 5, 10),
        (vec![0x1f, 0x9a, 0x0a], 5, 1337),
        (vec![0x2a], 8, 42),
    ] {
        let mut b = Block {
            input: &bytes,
            pos: 0,
            seen_field: false,
            decoded: 0,
            full: false,
        };
        assert_eq!(b.integer(prefix).ok(), Some(value));
        assert_eq!(b.pos, bytes.len());
        let mut enc = Vec::new();
        int(0, prefix, value, &mut enc);
        if prefix < 8 {
            assert_eq!(enc, bytes);
        }
    }
}

#[test]
fn c2_literal_representations() {
    let mut d = Decoder::new();
    let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
    assert_eq!(
        ok(&mut d, &block),
        pairs(&[("custom-key", "custom-header")])
    );
    assert_eq!(table(&d), pairs(&[("custom-key", "custom-header")]));
    assert_eq!(d.table_size(), 55);

    let mut d = Decoder::new();
    let block = hex("040c 2f73 616d 706c 652f 7061 7468");
    assert_eq!(ok(&mut d, &block), pairs(&[(":path", "/sample/path")]));
    assert_eq!(d.known_entries(), 0);

    let mut d = Decoder::new();
    let out = d.decode(&hex("1008 7061 7373 776f 7264 0673 6563 7265 74"));
    assert_eq!(known(&out.fields), pairs(&[("password", "secret")]));
    assert!(out.fields[0].sensitive);
    assert_eq!(d.known_entries(), 0);

    let mut d = Decoder::new();
    assert_eq!(ok(&mut d, &[0x82]), pairs(&[(":method", "GET")]));
    assert_eq!(d.known_entries(), 0);
}

fn requests(blocks: [&str; 3]) {
    let mut d = Decoder::new();
    let r1 = pairs(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ]);
    assert_eq!(ok(&mut d, &hex(blocks[0])), r1);
    assert_eq!(table(&d), pairs(&[(":authority", "www.example.com")]));
    assert_eq!(d.table_size(), 57);

    let mut r2 = r1.clone();
    r2.push(("cache-control".into(), "no-cache".into()));
    assert_eq!(ok(&mut d, &hex(blocks[1])), r2);
    assert_eq!(
        table(&d),
        pairs(&[
            ("cache-control", "no-cache"),
            (":authority", "www.example.com")
        ])
    );
    assert_eq!(d.table_size(), 110);

    let r3 = pairs(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ]);
    assert_eq!(ok(&mut d, &hex(blocks[2])), r3);
    assert_eq!(
        table(&d),
        pairs(&[
            ("custom-key", "custom-value"),
            ("cache-control", "no-cache"),
            (":authority", "www.example.com"),
        ])
    );
    assert_eq!(d.table_size(), 164);
}

#[test]
fn c3_requests_without_huffman() {
    requests([
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]);
}

#[test]
fn c4_requests_with_huffman() {
    requests([
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]);
}

const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";

fn responses(blocks: [&str; 3]) {
    // Appendix C.5/C.6 run with a 256-byte table: the peer's SETTINGS and the
    // encoder's size update say so (a block holding only the update).
    let mut d = Decoder::new();
    d.set_max_table_size(256);
    assert_eq!(ok(&mut d, &size_update(256)), pairs(&[]));

    let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
    let loc = "https://www.example.com";
    let r1 = pairs(&[
        (":status", "302"),
        ("cache-control", "private"),
        ("date", date1),
        ("location", loc),
    ]);
    assert_eq!(ok(&mut d, &hex(blocks[0])), r1);
    assert_eq!(
        table(&d),
        pairs(&[
            ("location", loc),
            ("date", date1),
            ("cache-control", "private"),
            (":status", "302"),
        ])
    );
    assert_eq!(d.table_size(), 222);

    let mut r2 = r1.clone();
    r2[0].1 = "307".into();
    assert_eq!(ok(&mut d, &hex(blocks[1])), r2);
    // ":status: 302" was evicted to make room.
    assert_eq!(
        table(&d),
        pairs(&[
            (":status", "307"),
            ("location", loc),
            ("date", date1),
            ("cache-control", "private"),
        ])
    );
    assert_eq!(d.table_size(), 222);

    let date2 = "Mon, 21 Oct 2013 20:13:22 GMT";
    let r3 = pairs(&[
        (":status", "200"),
        ("cache-control", "private"),
        ("date", date2),
        ("location", loc),
        ("content-encoding", "gzip"),
        ("set-cookie", COOKIE),
    ]);
    assert_eq!(ok(&mut d, &hex(blocks[2])), r3);
    assert_eq!(
        table(&d),
        pairs(&[
            ("set-cookie", COOKIE),
            ("content-encoding", "gzip"),
            ("date", date2),
        ])
    );
    assert_eq!(d.table_size(), 215);
    assert!(d.knows_whole_table());
    // Index 65 is past the three entries of a fully known table.
    assert_eq!(d.decode(&[0xc1]).error, Some(HpackError::InvalidIndex(65)));
}

#[test]
fn c5_responses_without_huffman() {
    responses([
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
         6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d \
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 \
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e \
         3d31",
    ]);
}

#[test]
fn c6_responses_with_huffman() {
    responses([
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ]);
}

#[test]
fn every_one_byte_block_is_handled() {
    for b in 0..=255u8 {
        for mut d in [Decoder::new(), Decoder::new_midstream()] {
            let out = d.decode(&[b]);
            assert!(out.fields.len() <= 1);
            assert!(d.table_size() <= d.table_limit());
        }
    }
    let mut d = Decoder::new();
    // RUSTSEC-2023-0085 (`hpack` panics): a size update whose integer never ends.
    let out = d.decode(&[0x3f]);
    assert_eq!(out.error, Some(HpackError::Truncated));
    assert!(out.new_epoch);
    assert_eq!(d.epoch(), 1);
    // httlib-hpack reads past the end here.
    assert_eq!(d.decode(&[0xff]).error, Some(HpackError::Truncated));
    assert_eq!(d.decode(&[0x1f, 0x80]).error, Some(HpackError::Truncated));
    // Index 0 is not an entry; the block goes on.
    let out = Decoder::new().decode(&[0x80, 0x82]);
    assert_eq!(out.error, Some(HpackError::InvalidIndex(0)));
    assert!(!out.new_epoch);
    assert_eq!(known(&out.fields), pairs(&[(":method", "GET")]));
}

#[test]
fn truncated_blocks_keep_the_fields_before_the_cut() {
    // C.5.1: literals and static references only.
    let full = hex(
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
         6c65 2e63 6f6d",
    );
    for cut in 0..full.len() {
        let mut d = Decoder::new();
        let out = d.decode(&full[..cut]);
        assert!(out.fields.len() <= 4, "cut {cut}");
        if out.new_epoch {
            assert_eq!(out.error, Some(HpackError::Truncated));
            assert!(!d.knows_whole_table());
            assert_eq!(d.known_entries(), 0);
        }
        // Field 0 (`:status: 302`) is complete from the fifth byte on.
        if cut >= 5 {
            assert_eq!(out.fields[0].value.as_deref(), Some(&b"302"[..]));
        } else {
            assert!(out.fields.is_empty());
        }
    }
}

#[test]
fn integer_overflow_is_an_error() {
    for block in [
        vec![0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        vec![0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
        vec![0x3f, 0xff, 0xff, 0xff, 0xff, 0x0f],
    ] {
        let mut d = Decoder::new();
        let out = d.decode(&block);
        assert_eq!(out.error, Some(HpackError::IntegerOverflow), "{block:02x?}");
        assert!(out.new_epoch);
    }
    // u32::MAX itself decodes (and is an invalid index).
    let out = Decoder::new().decode(&indexed(u32::MAX));
    assert_eq!(out.error, Some(HpackError::InvalidIndex(u32::MAX)));
}

#[test]
fn bad_huffman_makes_the_value_unknown_and_parsing_goes_on() {
    let mut d = Decoder::new();
    // Literal with incremental indexing, name "a", Huffman value 0xff (8 bits
    // of padding), then an indexed field and a reference to the new entry.
    let mut block = vec![0x40, 0x01, b'a', 0x81, 0xff];
    block.extend(indexed(2));
    block.extend(indexed(62));
    let out = d.decode(&block);
    assert_eq!(
        out.error,
        Some(HpackError::Huffman(HuffmanError::PaddingTooLong))
    );
    assert!(!out.new_epoch);
    assert_eq!(out.fields.len(), 3);
    assert_eq!(out.fields[0].name.as_deref(), Some(&b"a"[..]));
    assert_eq!(out.fields[0].value, None);
    assert_eq!(out.fields[1].value.as_deref(), Some(&b"GET"[..]));
    // The entry still took its place in the table, value unknown.
    assert_eq!(out.fields[2].name.as_deref(), Some(&b"a"[..]));
    assert_eq!(out.fields[2].value, None);
    // A padding bit that is not 1.
    let out = Decoder::new().decode(&[0x00, 0x01, b'a', 0x81, 0x1e]);
    assert_eq!(
        out.error,
        Some(HpackError::Huffman(HuffmanError::PaddingNotEos))
    );
}

#[test]
fn midstream_references_to_unseen_entries_are_unknown() {
    let mut d = Decoder::new_midstream();
    let out = d.decode(&[0xbe, 0x82]);
    assert_eq!(out.error, None);
    assert_eq!(out.fields[0].name, None);
    assert_eq!(out.fields[0].value, None);
    assert!(!out.fields[0].is_known());
    assert!(out.fields[1].is_known());

    // Entries it sees inserted are exact by position; older ones stay unknown.
    let mut block = insert("x-id", "1");
    block.extend(indexed(62));
    block.extend(indexed(63));
    let out = d.decode(&block);
    assert_eq!(out.error, None);
    assert_eq!(
        known(&out.fields[..2]),
        pairs(&[("x-id", "1"), ("x-id", "1")])
    );
    assert!(!out.fields[2].is_known());

    // An insertion naming an unknown entry is a placeholder: the value is known,
    // the name is not, and the entry behind it keeps its position.
    let mut block = insert_indexed_name(64, "v2");
    block.extend(indexed(62));
    block.extend(indexed(63));
    block.extend(indexed(64));
    let out = d.decode(&block);
    assert_eq!(out.error, None);
    for f in &out.fields[..2] {
        assert_eq!(f.name, None);
        assert_eq!(f.value.as_deref(), Some(&b"v2"[..]));
    }
    assert_eq!(known(&out.fields[2..3]), pairs(&[("x-id", "1")]));
    assert!(!out.fields[3].is_known());
    // Literal name referencing the placeholder's name: name unknown, value known.
    let out = d.decode(&insert_indexed_name(62, "v3"));
    assert_eq!(out.fields[0].name, None);
    assert_eq!(out.fields[0].value.as_deref(), Some(&b"v3"[..]));
}

#[test]
fn midstream_table_becomes_known_after_a_size_update_to_zero() {
    let mut d = Decoder::new_midstream();
    assert!(!d.knows_whole_table());
    let mut block = size_update(0);
    block.extend(size_update(4096));
    block.extend(insert("k", "v"));
    block.extend(indexed(62));
    assert_eq!(ok(&mut d, &block), pairs(&[("k", "v"), ("k", "v")]));
    assert!(d.knows_whole_table());
    assert_eq!(
        d.decode(&indexed(63)).error,
        Some(HpackError::InvalidIndex(63))
    );
}

#[test]
fn epochs_forget_the_table_without_poisoning_it() {
    let mut d = Decoder::new();
    ok(&mut d, &insert("a", "1"));
    assert_eq!(ok(&mut d, &indexed(62)), pairs(&[("a", "1")]));
    d.reset_epoch();
    assert_eq!(d.epoch(), 1);
    let out = d.decode(&indexed(62));
    assert_eq!(out.error, None);
    assert!(!out.fields[0].is_known());
    ok(&mut d, &insert("b", "2"));
    assert_eq!(ok(&mut d, &indexed(62)), pairs(&[("b", "2")]));
    let out = d.decode(&indexed(63));
    assert!(!out.fields[0].is_known());
}

#[test]
fn a_truncated_block_starts_a_new_epoch() {
    let mut d = Decoder::new();
    ok(&mut d, &insert("a", "1"));
    let mut block = insert("b", "2");
    block.extend([0x40, 0x05, b'c']); // name string cut short
    let out = d.decode(&block);
    assert_eq!(out.error, Some(HpackError::Truncated));
    assert!(out.new_epoch);
    assert_eq!(known(&out.fields), pairs(&[("b", "2")]));
    assert_eq!(d.epoch(), 1);
    // Whatever the cut block inserted, positions are unknown now.
    assert!(!d.decode(&indexed(62)).fields[0].is_known());
}

#[test]
fn invalid_index_in_a_known_table_does_not_stop_insertions() {
    let mut d = Decoder::new();
    let mut block = indexed(70);
    block.extend(insert("k", "v"));
    let out = d.decode(&block);
    assert_eq!(out.error, Some(HpackError::InvalidIndex(70)));
    assert!(!out.new_epoch);
    assert_eq!(known(&out.fields), pairs(&[("k", "v")]));
    assert_eq!(ok(&mut d, &indexed(62)), pairs(&[("k", "v")]));
}

#[test]
fn size_updates() {
    let mut d = Decoder::new();
    // Above the default SETTINGS value: reported, applied.
    let out = d.decode(&size_update(8192));
    assert_eq!(
        out.error,
        Some(HpackError::SizeUpdateTooLarge {
            size: 8192,
            limit: 4096
        })
    );
    // Allowed once SETTINGS raise the limit.
    d.set_max_table_size(65536);
    ok(&mut d, &size_update(65536));
    // Shrinking evicts exactly: two 34-byte entries fit in 70, not three.
    ok(&mut d, &insert("a", "1"));
    ok(&mut d, &insert("b", "2"));
    ok(&mut d, &insert("c", "3"));
    ok(&mut d, &size_update(70));
    assert_eq!(table(&d), pairs(&[("c", "3"), ("b", "2")]));
    assert!(d.knows_whole_table());
    // After a field, an update is an error (RFC 7541 §4.2), still applied.
    let mut block = indexed(2);
    block.extend(size_update(0));
    let out = d.decode(&block);
    assert_eq!(out.error, Some(HpackError::SizeUpdateNotAtStart));
    assert_eq!(d.known_entries(), 0);
    // An entry larger than the maximum empties the table (RFC 7541 §4.4).
    ok(&mut d, &size_update(100));
    ok(&mut d, &insert("a", "1"));
    ok(&mut d, &insert("big", &"x".repeat(100)));
    assert_eq!(d.known_entries(), 0);
    assert_eq!(
        d.decode(&indexed(62)).error,
        Some(HpackError::InvalidIndex(62))
    );
}

#[test]
fn output_limits_keep_insertions() {
    let mut d = Decoder::new();
    let mut block = vec![0x82; MAX_FIELDS + 10];
    block.extend(insert("late", "entry"));
    let out = d.decode(&block);
    assert_eq!(out.error, Some(HpackError::TooManyFields));
    assert_eq!(out.fields.len(), MAX_FIELDS);
    assert!(!out.new_epoch);
    assert_eq!(ok(&mut d, &indexed(62)), pairs(&[("late", "entry")]));

    let out = d.decode(&vec![0x82; MAX_BLOCK + 1]);
    assert_eq!(out.error, Some(HpackError::BlockTooLarge(MAX_BLOCK + 1)));
    assert!(out.new_epoch);
}

#[test]
fn huffman_literals_round_trip() {
    let mut d = Decoder::new();
    let value: Vec<u8> = (0..=255).collect();
    let mut enc = Vec::new();
    huffman::encode(&value, &mut enc);
    let mut block = vec![0x00, 0x01, b'n'];
    int(0x80, 7, enc.len() as u32, &mut block);
    block.extend(&enc);
    let out = d.decode(&block);
    assert_eq!(out.error, None);
    assert_eq!(out.fields[0].value.as_deref(), Some(&value[..]));
}
