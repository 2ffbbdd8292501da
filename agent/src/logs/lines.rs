//! Lines out of one stream's write() calls.
//!
//! The kernel copies at most a capped prefix of each write, so a write arrives
//! as the bytes captured plus how many were not. A process writes lines in any
//! number of calls (one per line, several lines at once, or a byte at a time
//! when stderr is unbuffered), so the bytes after the last newline are carried
//! to the next write. Everything kept is capped at `max_line` bytes per stream:
//! a process that never writes a newline costs no more than one long line.

/// One line as written, without its `\n` (or `\r\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The bytes as UTF-8, invalid sequences replaced (U+FFFD).
    pub text: String,
    /// Bytes of the line are missing: it was longer than `max_line`, or the
    /// kernel did not copy the end of the write.
    pub truncated: bool,
}

/// What was dropped from the line in progress once it reached `max_line`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    Nothing,
    /// A single `\r`: the line ended exactly at the cap with `\r\n`, so
    /// nothing of its text is missing.
    Cr,
    Bytes,
}

/// Splits one stream (a process's fd 1 or fd 2) into lines.
#[derive(Debug)]
pub struct LineSplitter {
    max_line: usize,
    /// The line in progress, at most `max_line` bytes.
    buf: Vec<u8>,
    dropped: Dropped,
}

impl LineSplitter {
    /// Lines are cut to `max_line` bytes (`0` keeps nothing, so yields no lines).
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter {
            max_line,
            buf: Vec::new(),
            dropped: Dropped::Nothing,
        }
    }

    /// Takes one write: `data` is what was captured of it and `missing` how
    /// many bytes after `data` were not. Returns the lines it completed, in
    /// order; empty lines are skipped.
    ///
    /// With bytes missing, where the line in progress ends is unknown, so it is
    /// completed now as truncated and the next write starts a new line: joining
    /// it to the next write would glue two unrelated pieces together.
    pub fn push(&mut self, data: &[u8], missing: u64) -> Vec<Line> {
        let mut lines = Vec::new();
        let mut parts = data.split(|&b| b == b'\n');
        // `split` yields at least one part: the bytes after the last newline.
        let tail = parts.next_back().unwrap_or_default();
        for part in parts {
            self.append(part);
            lines.extend(self.finish(false));
        }
        self.append(tail);
        if missing > 0 {
            lines.extend(self.finish(true));
        }
        lines
    }

    /// The line in progress, if any: for when the stream ends or has been
    /// quiet long enough that the process is not going to end the line.
    pub fn flush(&mut self) -> Option<Line> {
        self.finish(false)
    }

    /// Bytes of the line in progress (at most `max_line`).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    fn append(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.dropped != Dropped::Nothing {
            self.dropped = Dropped::Bytes;
            return;
        }
        let room = self.max_line.saturating_sub(self.buf.len());
        let (kept, rest) = bytes.split_at(bytes.len().min(room));
        self.reserve(kept.len());
        self.buf.extend_from_slice(kept);
        if let Some(&first) = rest.first() {
            self.dropped = if rest == b"\r" {
                Dropped::Cr
            } else {
                Dropped::Bytes
            };
            // Cut inside a character: drop its start rather than show U+FFFD.
            if is_continuation(first) {
                trim_partial_char(&mut self.buf);
            }
        }
    }

    /// Grows the buffer geometrically (a line written a byte at a time is not
    /// copied once per byte) but never past `max_line`.
    fn reserve(&mut self, additional: usize) {
        let needed = self.buf.len() + additional;
        if needed > self.buf.capacity() {
            let target = needed.max(self.buf.capacity() * 2).min(self.max_line);
            self.buf.reserve_exact(target - self.buf.len());
        }
    }

    /// Ends the line in progress; `cut` when the bytes after it are unknown.
    fn finish(&mut self, cut: bool) -> Option<Line> {
        let truncated = cut || self.dropped == Dropped::Bytes;
        if self.dropped == Dropped::Nothing {
            if cut {
                trim_partial_char(&mut self.buf);
            }
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        self.dropped = Dropped::Nothing;
        if self.buf.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        Some(Line { text, truncated })
    }
}

fn is_continuation(b: u8) -> bool {
    b & 0xc0 == 0x80
}

/// Removes a UTF-8 sequence left incomplete at the end of `buf`, if any.
fn trim_partial_char(buf: &mut Vec<u8>) {
    let len = buf.len();
    // A cut four-byte character leaves at most three of its bytes.
    for back in 1..=len.min(3) {
        let start = len - back;
        if !buf.get(start).copied().is_some_and(is_continuation) {
            if let Err(e) = std::str::from_utf8(&buf[start..])
                && e.error_len().is_none()
            {
                buf.truncate(start);
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Line {
        Line {
            text: text.to_string(),
            truncated: false,
        }
    }

    fn cut(text: &str) -> Line {
        Line {
            text: text.to_string(),
            truncated: true,
        }
    }

    #[test]
    fn one_write_several_lines() {
        let mut s = LineSplitter::new(100);
        assert_eq!(
            s.push(b"a\nbb\nccc\n", 0),
            vec![line("a"), line("bb"), line("ccc")]
        );
        assert_eq!(s.pending(), 0);
        assert_eq!(s.flush(), None);
    }

    #[test]
    fn crlf_and_empty_lines() {
        let mut s = LineSplitter::new(100);
        assert_eq!(s.push(b"a\r\n\r\n\n\nb\r\n", 0), vec![line("a"), line("b")]);
        // Only one trailing \r is the line ending.
        assert_eq!(s.push(b"c\r\r\n", 0), vec![line("c\r")]);
        // A \r elsewhere is text.
        assert_eq!(s.push(b"x\ry\n", 0), vec![line("x\ry")]);
    }

    #[test]
    fn partial_line_carried_across_writes() {
        let mut s = LineSplitter::new(100);
        assert_eq!(s.push(b"hel", 0), vec![]);
        assert_eq!(s.pending(), 3);
        assert_eq!(s.push(b"lo\nwor", 0), vec![line("hello")]);
        assert_eq!(s.push(b"ld", 0), vec![]);
        assert_eq!(s.push(b"\n", 0), vec![line("world")]);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn byte_at_a_time() {
        let mut s = LineSplitter::new(100);
        let mut out = Vec::new();
        for b in b"one\r\ntwo\n" {
            out.extend(s.push(&[*b], 0));
        }
        assert_eq!(out, vec![line("one"), line("two")]);
    }

    #[test]
    fn crlf_split_across_writes() {
        let mut s = LineSplitter::new(100);
        assert_eq!(s.push(b"abc\r", 0), vec![]);
        assert_eq!(s.push(b"\n", 0), vec![line("abc")]);
    }

    #[test]
    fn long_line_cut() {
        let mut s = LineSplitter::new(4);
        assert_eq!(s.push(b"abcdefgh\nxy\n", 0), vec![cut("abcd"), line("xy")]);
    }

    #[test]
    fn exactly_max_line_is_not_truncated() {
        let mut s = LineSplitter::new(4);
        assert_eq!(s.push(b"abcd\n", 0), vec![line("abcd")]);
        // The \r of a \r\n ending past the cap is not text.
        assert_eq!(s.push(b"abcd\r\n", 0), vec![line("abcd")]);
        assert_eq!(s.push(b"abcd\r", 0), vec![]);
        assert_eq!(s.push(b"\n", 0), vec![line("abcd")]);
        assert_eq!(s.push(b"abcd\r\r\n", 0), vec![cut("abcd")]);
        assert_eq!(s.push(b"abcde\r\n", 0), vec![cut("abcd")]);
    }

    #[test]
    fn carry_bounded_across_writes() {
        let mut s = LineSplitter::new(5);
        for _ in 0..1000 {
            assert_eq!(s.push(b"xyz", 0), vec![]);
            assert!(s.pending() <= 5);
            assert!(s.buf.capacity() <= 5);
        }
        assert_eq!(s.push(b"\nnext\n", 0), vec![cut("xyzxy"), line("next")]);
    }

    #[test]
    fn flush_returns_carried_line() {
        let mut s = LineSplitter::new(100);
        s.push(b"no newline yet\r", 0);
        assert_eq!(s.flush(), Some(line("no newline yet")));
        assert_eq!(s.flush(), None);
        assert_eq!(s.pending(), 0);

        let mut s = LineSplitter::new(3);
        s.push(b"abcdef", 0);
        assert_eq!(s.flush(), Some(cut("abc")));
    }

    #[test]
    fn missing_bytes_end_the_line_in_progress() {
        let mut s = LineSplitter::new(100);
        assert_eq!(s.push(b"start ", 0), vec![]);
        assert_eq!(
            s.push(b"done\nhalf of a li", 500),
            vec![line("start done"), cut("half of a li")]
        );
        assert_eq!(s.pending(), 0);
        // The next write starts a new line rather than continuing the lost one.
        assert_eq!(s.push(b"ne\n", 0), vec![line("ne")]);
    }

    #[test]
    fn missing_bytes_after_a_newline() {
        let mut s = LineSplitter::new(100);
        assert_eq!(s.push(b"whole\n", 10), vec![line("whole")]);
        assert_eq!(s.pending(), 0);
        // Nothing captured at all, but a carried line is ended.
        s.push(b"carried", 0);
        assert_eq!(s.push(b"", 10), vec![cut("carried")]);
        assert_eq!(s.push(b"", 10), vec![]);
    }

    #[test]
    fn missing_bytes_on_a_cut_line() {
        let mut s = LineSplitter::new(3);
        assert_eq!(s.push(b"abcdef", 7), vec![cut("abc")]);
        assert_eq!(s.push(b"x\n", 0), vec![line("x")]);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut s = LineSplitter::new(100);
        assert_eq!(s.push(b"a\xffb\n", 0), vec![line("a\u{fffd}b")]);
    }

    #[test]
    fn character_split_across_writes_is_joined() {
        let mut s = LineSplitter::new(100);
        let euro = "€".as_bytes();
        assert_eq!(s.push(&euro[..1], 0), vec![]);
        assert_eq!(s.push(&euro[1..], 0), vec![]);
        assert_eq!(s.push(b"\n", 0), vec![line("€")]);
    }

    #[test]
    fn cut_inside_a_character_drops_it_whole() {
        // "a€" is 4 bytes; a cap of 3 falls inside the euro sign.
        let mut s = LineSplitter::new(3);
        assert_eq!(s.push("a€b\n".as_bytes(), 0), vec![cut("a")]);
        // Also when the cap falls between writes.
        let mut s = LineSplitter::new(2);
        s.push(b"a", 0);
        assert_eq!(s.push("€\n".as_bytes(), 0), vec![cut("a")]);
        // And when the kernel's copy ends inside a character.
        let mut s = LineSplitter::new(100);
        assert_eq!(s.push(&"x€".as_bytes()[..3], 1), vec![cut("x")]);
        // A character that ends exactly at the cap stays.
        let mut s = LineSplitter::new(4);
        assert_eq!(s.push("a€b\n".as_bytes(), 0), vec![cut("a€")]);
    }

    #[test]
    fn invalid_bytes_at_the_cut_are_kept_replaced() {
        // 0xff is no character start: nothing to trim, it shows as U+FFFD.
        let mut s = LineSplitter::new(2);
        assert_eq!(s.push(b"a\xff\x80\n", 0), vec![cut("a\u{fffd}")]);
    }

    #[test]
    fn zero_max_line_yields_nothing() {
        let mut s = LineSplitter::new(0);
        assert_eq!(s.push(b"abc\ndef", 3), vec![]);
        assert_eq!(s.pending(), 0);
        assert_eq!(s.flush(), None);
    }

    #[test]
    fn same_lines_however_the_bytes_are_split() {
        let input = b"first line\r\nsecond\n\nthird is longer than cap\nfo";
        let whole = {
            let mut s = LineSplitter::new(12);
            let mut out = s.push(input, 0);
            out.extend(s.flush());
            out
        };
        for at in 0..=input.len() {
            let mut s = LineSplitter::new(12);
            let mut out = s.push(&input[..at], 0);
            out.extend(s.push(&input[at..], 0));
            out.extend(s.flush());
            assert_eq!(out, whole, "split at {at}");
        }
        assert_eq!(
            whole,
            vec![
                line("first line"),
                line("second"),
                cut("third is lon"),
                line("fo")
            ]
        );
    }
}
