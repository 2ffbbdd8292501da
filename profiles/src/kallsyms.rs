//! Kernel addresses to function names from `/proc/kallsyms`.
//!
//! Reading the file is expensive (the kernel formats 120k+ lines: ~0.1 s of
//! CPU), so it is read once, when the first kernel address needs a name, into
//! a compact table (address, name offset) plus one string of names: ~4 MiB,
//! half of what a table of owned symbols takes. It is re-read when an address
//! falls outside it (a module loaded since), at most every
//! [`RELOAD_AFTER`].

use std::{
    io::BufRead,
    time::{Duration, Instant},
};

/// Distance past a symbol's start beyond which an address is not attributed to
/// it (kallsyms has no sizes; the largest kernel functions are a few KiB).
const MAX_FUNCTION_BYTES: u64 = 128 * 1024;

/// Minimum time between two reads of the table.
pub const RELOAD_AFTER: Duration = Duration::from_secs(300);

/// Text symbols, sorted by address.
#[derive(Default)]
pub struct KernelSymbols {
    /// (start address, offset of the name in `names`, name length).
    symbols: Vec<(u64, u32, u32)>,
    names: String,
    loaded: Option<Instant>,
}

impl KernelSymbols {
    /// Builds the table from a kallsyms-format reader.
    pub fn read(reader: impl BufRead) -> std::io::Result<KernelSymbols> {
        let mut table = KernelSymbols::default();
        let mut line = String::new();
        let mut reader = reader;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            if let Some((addr, name)) = parse_line(&line) {
                let (Ok(offset), Ok(len)) =
                    (u32::try_from(table.names.len()), u32::try_from(name.len()))
                else {
                    break;
                };
                table.names.push_str(name);
                table.symbols.push((addr, offset, len));
            }
        }
        table.symbols.sort_unstable_by_key(|s| s.0);
        table.symbols.shrink_to_fit();
        table.names.shrink_to_fit();
        table.loaded = Some(Instant::now());
        Ok(table)
    }

    /// The function holding `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.symbols.partition_point(|s| s.0 <= addr);
        let &(start, offset, len) = self.symbols[..i].last()?;
        (addr - start < MAX_FUNCTION_BYTES)
            .then(|| self.names.get(offset as usize..(offset + len) as usize))
            .flatten()
    }

    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// Names `addrs`, reading `/proc/kallsyms` first if the table was never
    /// read, or if an address is not covered and the last read is old enough.
    pub fn resolve_running(&mut self, addrs: &[u64]) -> Vec<Option<String>> {
        let stale = self.loaded.is_none_or(|t| t.elapsed() >= RELOAD_AFTER)
            && (self.loaded.is_none() || addrs.iter().any(|&a| self.lookup(a).is_none()));
        if stale {
            match std::fs::File::open("/proc/kallsyms")
                .and_then(|f| KernelSymbols::read(std::io::BufReader::new(f)))
            {
                Ok(table) => *self = table,
                Err(error) => {
                    tracing::debug!(%error, "reading /proc/kallsyms");
                    self.loaded = Some(Instant::now());
                }
            }
        }
        addrs
            .iter()
            .map(|&a| self.lookup(a).map(str::to_string))
            .collect()
    }
}

/// `ffffffff81000000 T _stext` or `ffffffffc0a01000 t fn\t[module]`: text
/// symbols only. All-zero addresses (kallsyms read without privileges) are
/// skipped.
fn parse_line(line: &str) -> Option<(u64, &str)> {
    let mut fields = line.split_ascii_whitespace();
    let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
    let kind = fields.next()?;
    let name = fields.next()?;
    (addr != 0 && matches!(kind, "t" | "T")).then_some((addr, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
ffffffff81000000 T _stext
ffffffff81001000 T do_syscall_64
ffffffff81000800 t early_helper
ffffffff81002000 D some_data
ffffffffc0a01000 t xfs_read\t[xfs]
0000000000000000 T hidden
";

    #[test]
    fn nearest_text_symbol_below() {
        let table = KernelSymbols::read(TABLE.as_bytes()).unwrap();
        assert_eq!(table.len(), 4);
        let names: Vec<Option<&str>> = [
            0xffffffff81001010,
            0xffffffff81000900,
            0xffffffff81002010, // data symbols do not count: still do_syscall_64
            0xffffffffc0a01004,
            0x1000,
            0xffffffffc0a01000 + MAX_FUNCTION_BYTES,
        ]
        .iter()
        .map(|&a| table.lookup(a))
        .collect();
        assert_eq!(
            names,
            [
                Some("do_syscall_64"),
                Some("early_helper"),
                Some("do_syscall_64"),
                Some("xfs_read"),
                None,
                None,
            ]
        );
    }

    #[test]
    fn unprivileged_tables_name_nothing() {
        let table = KernelSymbols::read("0000000000000000 T _stext\n".as_bytes()).unwrap();
        assert!(table.is_empty());
        assert_eq!(table.lookup(0x10), None);
    }
}
