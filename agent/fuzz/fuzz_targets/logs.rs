//! Arbitrary bytes, cut into writes at arbitrary points with arbitrary bytes
//! missing, through one stream's line splitter, then severity and redaction
//! on every line: nothing may panic, and neither a line nor the carried
//! partial line may grow past the cap.
#![no_main]

use std::borrow::Cow;

use agent::logs::{
    lines::{Line, LineSplitter},
    redact::{REDACTED, redact},
    severity::severity,
};
use libfuzzer_sys::fuzz_target;

const NUMBERS: [i32; 6] = [1, 5, 9, 13, 17, 21];

fn check_text(text: &str) {
    if let Some(s) = severity(text) {
        assert!(NUMBERS.contains(&s.number));
    }
    if let Cow::Owned(redacted) = redact(text) {
        assert!(redacted.contains(REDACTED));
    }
}

fn check(line: &Line, max_line: usize) {
    assert!(!line.text.is_empty());
    assert!(!line.text.contains('\n'));
    // The bytes the line was cut from: U+FFFD stands for at least one.
    let bytes: usize = line
        .text
        .chars()
        .map(|c| if c == '\u{fffd}' { 1 } else { c.len_utf8() })
        .sum();
    assert!(bytes <= max_line, "{bytes} > {max_line}");
    check_text(&line.text);
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, mut rest)) = data.split_first() else {
        return;
    };
    // Small caps, so that lines are cut often.
    let max_line = usize::from(control % 64);
    let mut splitter = LineSplitter::new(max_line);
    // Each step: [len byte][gap byte][len bytes of the write].
    while let [len, gap, tail @ ..] = rest {
        let (write, next) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = next;
        let missing = if gap & 0x80 == 0 {
            0
        } else {
            u64::from(gap & 0x7f)
        };
        for line in splitter.push(write, missing) {
            check(&line, max_line);
        }
        assert!(splitter.pending() <= max_line);
    }
    if let Some(line) = splitter.flush() {
        check(&line, max_line);
    }
    assert_eq!(splitter.pending(), 0);
    // Whole inputs too: lines from the splitter are short.
    check_text(&String::from_utf8_lossy(data));
});
