//! The HPACK static table (RFC 7541 Appendix A) and our model of the peer's
//! dynamic table (§2.3.2, §4), which may know only part of it.
//!
//! # What is exact, and why
//!
//! The encoder's dynamic table is always the newest entries of its insertion
//! history: eviction only removes the oldest (§4.4). So dynamic index `62 + j`
//! is the j-th newest insertion that is still in the table, and whatever was
//! evicted, an index the encoder uses points at the j-th newest insertion. If we
//! saw every insertion since some point (connection start, or the start of an
//! epoch), the newest entries we hold are exact by position, even when we know
//! nothing about the entries older than that point, nor their sizes.
//!
//! Sizes and the maximum only decide which old entries are gone. We drop an
//! entry only when it is *surely* evicted: the lower bound of the sizes of it and
//! the entries newer than it exceeds an upper bound of the encoder's maximum.
//! Keeping an entry that the encoder has in fact evicted is harmless (a valid
//! encoder never references it); dropping one it still has would turn a later
//! reference into `Unknown` (when we do not know the whole table) or an invalid
//! index (when we do). Neither is a wrong value.
//!
//! An insertion whose name is unknown (it referenced an entry we do not know)
//! still takes its position, as a placeholder with an unknown name and a size
//! known only from below.
//!
//! `complete` records that no entry exists in the encoder's table beyond the
//! ones held: true from connection start, after a size update below 32 (every
//! entry is at least 32 bytes, so the table is empty) or after an insertion
//! surely larger than the maximum (which empties it, §4.4). Only then is a
//! reference past the held entries an error rather than `Unknown`.

use std::collections::VecDeque;

/// Bytes of dynamic table (counted as RFC 7541 §4.1 entry sizes) we keep per
/// decoder, whatever the peer allows: a peer may set SETTINGS_HEADER_TABLE_SIZE
/// up to 4 GiB, but the research note found no encoder using more than 64 KiB.
/// Entries beyond this are dropped and later references to them are `Unknown`.
pub const TABLE_CAP: usize = 64 * 1024;

/// The size HTTP/2 starts with (RFC 9113 §6.5.2, SETTINGS_HEADER_TABLE_SIZE).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// RFC 7541 §4.1: the size of an entry is its name and value lengths plus 32.
pub const ENTRY_OVERHEAD: usize = 32;

/// RFC 7541 Appendix A, index 1 to 61.
pub const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// One dynamic table entry as far as we know it. `None` is unknown, never a
/// guess.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

impl Entry {
    /// Lower bound of the RFC 7541 §4.1 size: exact when both parts are known.
    fn min_size(&self) -> usize {
        ENTRY_OVERHEAD
            + self.name.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
    }
}

/// What a dynamic index resolves to.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// An entry we saw inserted (parts of it may still be unknown).
    Entry(&'a Entry),
    /// Older than anything we saw inserted: the content is not known.
    Unknown,
    /// Beyond the end of a table we know completely: the encoder is wrong.
    Invalid,
}

/// Our model of the peer encoder's dynamic table (see the module doc).
#[derive(Clone, Debug)]
pub struct Dynamic {
    /// Newest first: `entries[j]` is dynamic index `62 + j`.
    entries: VecDeque<Entry>,
    /// Sum of the entries' lower-bound sizes.
    size: usize,
    /// No entry exists in the encoder's table beyond `entries`.
    complete: bool,
    /// The encoder's current maximum, when known exactly (from the connection
    /// start, or the last size update).
    encoder_max: Option<usize>,
    /// Latest SETTINGS_HEADER_TABLE_SIZE the caller told us about.
    settings: Option<usize>,
    /// Highest SETTINGS value since the last size update: a size update may
    /// still answer an older, higher setting that crossed a newer one.
    settings_high: Option<usize>,
}

impl Dynamic {
    /// The table at connection start: empty, maximum 4096.
    pub fn at_start() -> Dynamic {
        Dynamic {
            entries: VecDeque::new(),
            size: 0,
            complete: true,
            encoder_max: Some(DEFAULT_TABLE_SIZE),
            settings: Some(DEFAULT_TABLE_SIZE),
            settings_high: Some(DEFAULT_TABLE_SIZE),
        }
    }

    /// A table of which nothing is known (attached mid-connection).
    pub fn unknown() -> Dynamic {
        Dynamic {
            entries: VecDeque::new(),
            size: 0,
            complete: false,
            encoder_max: None,
            settings: None,
            settings_high: None,
        }
    }

    /// Forgets the content (a new epoch), keeping what SETTINGS told us: the
    /// encoder's maximum may have changed in the bytes we missed.
    pub fn forget(&mut self) {
        self.entries.clear();
        self.size = 0;
        self.complete = false;
        self.encoder_max = None;
        self.settings_high = self.settings;
    }

    /// The peer decoder's SETTINGS_HEADER_TABLE_SIZE: the bound for size updates.
    pub fn set_settings(&mut self, limit: usize) {
        self.settings = Some(limit);
        self.settings_high = Some(self.settings_high.map_or(limit, |h| h.max(limit)));
        self.trim();
    }

    /// An upper bound of the encoder's current maximum, when there is one.
    pub fn max_bound(&self) -> Option<usize> {
        self.encoder_max.or(self.settings_high)
    }

    /// Applies a dynamic table size update. Returns the SETTINGS limit when
    /// the update exceeds it (it is applied all the same: the encoder did).
    pub fn size_update(&mut self, max: usize) -> Result<(), usize> {
        let allowed = match self.settings_high {
            Some(limit) if max > limit => Err(limit),
            _ => Ok(()),
        };
        self.encoder_max = Some(max);
        self.settings_high = self.settings;
        if max < ENTRY_OVERHEAD {
            self.entries.clear();
            self.size = 0;
            self.complete = true;
        }
        self.trim();
        allowed
    }

    /// Records an insertion (literal with incremental indexing).
    pub fn insert(&mut self, entry: Entry) {
        let size = entry.min_size();
        if self.max_bound().is_some_and(|max| size > max) {
            // Surely larger than the maximum: the encoder emptied its table and
            // did not add the entry (RFC 7541 §4.4).
            self.entries.clear();
            self.size = 0;
            self.complete = true;
            return;
        }
        self.entries.push_front(entry);
        self.size += size;
        self.trim();
    }

    /// Drops the entries that are surely evicted, then those beyond our cap.
    fn trim(&mut self) {
        let bound = self.max_bound();
        let mut cumulative = 0usize;
        let mut keep = self.entries.len();
        for (j, e) in self.entries.iter().enumerate() {
            cumulative += e.min_size();
            if bound.is_some_and(|max| cumulative > max) {
                keep = j;
                break;
            }
            if cumulative > TABLE_CAP {
                keep = j;
                self.complete = false;
                break;
            }
        }
        while self.entries.len() > keep {
            if let Some(e) = self.entries.pop_back() {
                self.size -= e.min_size();
            }
        }
    }

    /// Resolves dynamic index `62 + j`.
    pub fn get(&self, j: usize) -> Lookup<'_> {
        match self.entries.get(j) {
            Some(e) => Lookup::Entry(e),
            None if self.complete => Lookup::Invalid,
            None => Lookup::Unknown,
        }
    }

    /// Entries held (the newest ones).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Lower bound of the held entries' total size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The whole encoder table is known.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// What the held size must stay within: the maximum bound, and our cap.
    pub fn limit(&self) -> usize {
        self.max_bound().map_or(TABLE_CAP, |max| max.min(TABLE_CAP))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, value: &str) -> Entry {
        Entry {
            name: Some(name.into()),
            value: Some(value.into()),
        }
    }

    #[test]
    fn evicts_oldest_by_exact_size() {
        let mut t = Dynamic::at_start();
        t.size_update(100).unwrap();
        t.insert(entry("aaaa", "bbbb")); // 40
        t.insert(entry("cccc", "dddd")); // 40
        assert_eq!(t.len(), 2);
        t.insert(entry("e", "f")); // 34: 114 > 100, the oldest goes
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(1), Lookup::Entry(&entry("cccc", "dddd")));
        assert_eq!(t.get(2), Lookup::Invalid);
        assert_eq!(t.size(), 74);
    }

    #[test]
    fn oversized_insert_empties_a_known_table() {
        let mut t = Dynamic::at_start();
        t.size_update(64).unwrap();
        t.insert(entry("a", "b"));
        t.insert(entry(&"n".repeat(40), "v"));
        assert!(t.is_empty());
        assert!(t.is_complete());
        assert_eq!(t.get(0), Lookup::Invalid);
    }

    #[test]
    fn unknown_table_keeps_positions_and_answers_unknown_beyond() {
        let mut t = Dynamic::unknown();
        t.insert(entry("x", "1"));
        t.insert(Entry {
            name: None,
            value: Some(b"2".to_vec()),
        });
        assert_eq!(t.get(1), Lookup::Entry(&entry("x", "1")));
        assert!(matches!(t.get(0), Lookup::Entry(e) if e.name.is_none()));
        assert_eq!(t.get(2), Lookup::Unknown);
        // A size update to 0 empties the table: from here it is fully known.
        t.size_update(0).unwrap();
        assert_eq!(t.get(0), Lookup::Invalid);
    }

    #[test]
    fn cap_drops_make_the_table_incomplete() {
        let mut t = Dynamic::at_start();
        t.set_settings(1 << 20);
        t.size_update(1 << 20).unwrap();
        let big = "v".repeat(4000);
        for i in 0..20 {
            t.insert(entry(&format!("n{i}"), &big));
        }
        assert!(t.size() <= TABLE_CAP);
        assert!(!t.is_complete());
        assert_eq!(t.get(t.len()), Lookup::Unknown);
    }
}
