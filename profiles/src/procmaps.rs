//! `/proc/PID/maps`: which file backs each executable address range.
//!
//! Format (proc(5)): `start-end perms offset dev inode pathname`, addresses and
//! offset in hex, `dev` as `major:minor`; the path may contain spaces and ends in
//! ` (deleted)` when the file was removed or replaced after it was mapped.

/// One executable mapping of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapLine {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    /// `major:minor` of the backing file's device, as printed.
    pub dev: String,
    pub inode: u64,
    /// The path, without a ` (deleted)` suffix; empty for anonymous memory.
    pub path: String,
    pub deleted: bool,
}

impl MapLine {
    /// Backed by a regular file (not anonymous memory, `[vdso]`, `[heap]`, …).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }

    /// The name of this range under `/proc/PID/map_files/`.
    pub fn map_files_name(&self) -> String {
        format!("{:x}-{:x}", self.start, self.end)
    }
}

/// The executable mappings in a maps file, in address order. Lines that do not
/// parse are skipped (the kernel writes this file; a bad line means a format we
/// do not know, and the other lines are still right).
pub fn parse_exec_maps(text: &str) -> Vec<MapLine> {
    let mut maps: Vec<MapLine> = text.lines().filter_map(parse_line).collect();
    maps.sort_by_key(|m| m.start);
    maps
}

fn parse_line(line: &str) -> Option<MapLine> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    if perms.as_bytes().get(2) != Some(&b'x') {
        return None;
    }
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let dev = fields.next()?.to_string();
    let inode = fields.next()?.parse().ok()?;
    let path = fields.next().unwrap_or("").trim_start();
    let (start, end) = range.split_once('-')?;
    let (path, deleted) = match path.strip_suffix(" (deleted)") {
        Some(p) => (p, true),
        None => (path, false),
    };
    Some(MapLine {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset,
        dev,
        inode,
        path: path.to_string(),
        deleted,
    })
}

/// The innermost pid of a process (its pid in its own pid namespace), from the
/// `NSpid:` line of `/proc/PID/status`: JIT runtimes name their perf map after it.
pub fn ns_pid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c8a00000-55d0c8a02000 r--p 00000000 fd:01 1311 /usr/bin/burn
55d0c8a02000-55d0c8a03000 r-xp 00002000 fd:01 1311 /usr/bin/burn
7f5e1c028000-7f5e1c1bd000 r-xp 00028000 fd:01 2245 /usr/lib/x86_64-linux-gnu/libc.so.6
7f5e1c400000-7f5e1c401000 r-xp 00001000 00:1f 77 /tmp/my app (deleted)
7f5e1c500000-7f5e1c600000 rwxp 00000000 00:00 0 
7ffd2b5f0000-7ffd2b5f2000 r-xp 00000000 00:00 0                          [vdso]
garbage line
";

    #[test]
    fn keeps_executable_mappings_with_their_files() {
        let maps = parse_exec_maps(MAPS);
        assert_eq!(maps.len(), 5);
        assert_eq!(maps[0].path, "/usr/bin/burn");
        assert_eq!(maps[0].offset, 0x2000);
        assert_eq!(maps[0].map_files_name(), "55d0c8a02000-55d0c8a03000");
        assert!(maps[0].is_file());
        assert_eq!(maps[1].dev, "fd:01");
        assert_eq!(maps[1].inode, 2245);
        assert_eq!(maps[2].path, "/tmp/my app");
        assert!(maps[2].deleted);
        assert!(!maps[3].is_file(), "anonymous (JIT) memory");
        assert_eq!(maps[4].path, "[vdso]");
        assert!(!maps[4].is_file());
    }

    #[test]
    fn innermost_pid_from_status() {
        let status = "Name:\tnode\nTgid:\t4242\nNSpid:\t4242\t17\nPPid:\t1\n";
        assert_eq!(ns_pid(status), Some(17));
        assert_eq!(ns_pid("NSpid:\t99\n"), Some(99));
        assert_eq!(ns_pid("Name:\tx\n"), None);
    }
}
