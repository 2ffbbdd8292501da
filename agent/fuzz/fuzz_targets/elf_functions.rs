//! Arbitrary bytes as an ELF file to find uprobe points in: it must never panic,
//! and whatever it finds must lie within the input and the function's bounds.
//! Seeds (corpus/elf_functions, 70d7…, fbd6…): two tiny real ELF files, a
//! static executable and a shared library, with
//! `SSL_read`/`SSL_write` functions, a tail call and a jump table.
#![no_main]

use agent::tls::elf::{MAX_FUNCTION_SIZE, find_functions_in};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 5] = [
    "SSL_read",
    "SSL_write",
    "callee",
    "_start",
    "crypto/tls.(*Conn).Read",
];

fuzz_target!(|data: &[u8]| {
    let Ok(binary) = find_functions_in(data, &NAMES) else {
        return;
    };
    assert_eq!(binary.functions.len(), NAMES.len());
    for f in binary
        .functions
        .iter()
        .filter_map(|f| f.as_ref().ok().and_then(Option::as_ref))
    {
        assert!(f.size > 0 && f.size <= MAX_FUNCTION_SIZE);
        let end = f.file_offset + f.size;
        assert!(end <= data.len() as u64);
        for &offset in f.exits.iter().chain(&f.tail_jumps).chain(&f.indirect_jumps) {
            assert!((f.file_offset..end).contains(&offset));
        }
    }
});
