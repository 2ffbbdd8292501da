//! HPACK (RFC 7541) header block decoding for one direction of an HTTP/2
//! connection, written for an observer that may have missed bytes.
//!
//! Our own rather than a crate: the crates the research note audited panic on
//! short inputs or drop the rest of a block (and its insertions) at the first
//! bad index, silently desynchronising the table. Here:
//!
//! - every decoded [`Field`] says what is known: a name or value is `None`
//!   when it came from a dynamic table entry we never saw (a decoder attached
//!   mid-connection, or after a capture gap). Values are never guessed;
//! - entries inserted since the decoder started (or since the last
//!   [`Decoder::reset_epoch`]) are exact by their position from the top of
//!   the table, whatever came before ([`table`] explains why);
//! - a bad representation does not stop the block: the decoder goes on and
//!   keeps applying insertions while it can find where each representation
//!   ends. Only when it cannot (a truncated block, an integer overflow) does it
//!   start a new epoch, since the insertions it could not see shift positions;
//! - nothing panics and nothing grows without bound: a block, the fields and
//!   decoded bytes of one block, and the table are all capped.

pub mod huffman;
pub mod table;

use huffman::HuffmanError;
use table::{Dynamic, Entry, Lookup, STATIC};
use thiserror::Error;

/// Largest header block decoded (the frame reader's bound too): more is not a
/// block any peer sends in practice, and bounds the work per block.
pub const MAX_BLOCK: usize = 64 * 1024;
/// Fields returned per block; the rest are parsed for their insertions only.
pub const MAX_FIELDS: usize = 1024;
/// Name and value bytes returned per block: indexed fields are 1 byte on the
/// wire but copy a table entry, so the output needs its own bound.
pub const MAX_DECODED: usize = 256 * 1024;

/// Why a block did not decode cleanly (each is counted by the caller).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum HpackError {
    #[error("header block of {0} bytes exceeds the limit")]
    BlockTooLarge(usize),
    #[error("header block truncated")]
    Truncated,
    #[error("integer overflow")]
    IntegerOverflow,
    #[error("invalid table index {0}")]
    InvalidIndex(u32),
    #[error("bad huffman string: {0}")]
    Huffman(#[from] HuffmanError),
    #[error("table size update to {size} exceeds the limit {limit}")]
    SizeUpdateTooLarge { size: u32, limit: u32 },
    #[error("table size update after a header field")]
    SizeUpdateNotAtStart,
    #[error("too many fields or bytes in one header block")]
    TooManyFields,
}

/// One decoded header field. `None` means not known (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Sent as "never indexed" (RFC 7541 §6.2.3): the value is sensitive.
    pub sensitive: bool,
}

impl Field {
    /// Both name and value are known.
    pub fn is_known(&self) -> bool {
        self.name.is_some() && self.value.is_some()
    }
}

/// What one block gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The fields in order, up to the first error that stopped parsing (or
    /// all of them when parsing reached the end).
    pub fields: Vec<Field>,
    /// The first error met, if any.
    pub error: Option<HpackError>,
    /// The block could not be parsed to its end, so the decoder started a new
    /// epoch: later references to older entries are `Unknown`.
    pub new_epoch: bool,
}

/// One direction's HPACK decoder.
#[derive(Clone, Debug)]
pub struct Decoder {
    table: Dynamic,
    epoch: u64,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new()
    }
}

/// A parse failure after which the rest of the block cannot be read.
struct Fatal(HpackError);

impl Decoder {
    /// A decoder that has seen the connection from its start: the table is
    /// empty and its maximum is 4096 (RFC 9113 §6.5.2).
    pub fn new() -> Decoder {
        Decoder {
            table: Dynamic::at_start(),
            epoch: 0,
        }
    }

    /// A decoder attached to a connection already in progress: references to
    /// entries inserted before it are `Unknown`, entries it sees inserted are
    /// exact.
    pub fn new_midstream() -> Decoder {
        Decoder {
            table: Dynamic::unknown(),
            epoch: 0,
        }
    }

    /// The peer decoder's SETTINGS_HEADER_TABLE_SIZE (the bound of size updates).
    pub fn set_max_table_size(&mut self, limit: u32) {
        self.table.set_settings(limit as usize);
    }

    /// After bytes of this direction were lost: what the table held is now
    /// unknown, but entries inserted from here on are exact again.
    pub fn reset_epoch(&mut self) {
        self.table.forget();
        self.epoch += 1;
    }

    /// Epochs started since the decoder was created.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Lower bound of the size of the dynamic table entries held.
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// What [`Decoder::table_size`] stays within.
    pub fn table_limit(&self) -> usize {
        self.table.limit()
    }

    /// Dynamic entries held (the newest of the peer's table).
    pub fn known_entries(&self) -> usize {
        self.table.len()
    }

    /// The decoder knows the peer's whole table.
    pub fn knows_whole_table(&self) -> bool {
        self.table.is_complete()
    }

    /// Decodes one complete header block (HEADERS or PUSH_PROMISE plus its
    /// CONTINUATION frames).
    pub fn decode(&mut self, block: &[u8]) -> Decoded {
        let mut out = Decoded::default();
        if block.len() > MAX_BLOCK {
            out.error = Some(HpackError::BlockTooLarge(block.len()));
            out.new_epoch = true;
            self.reset_epoch();
            return out;
        }
        let mut state = Block {
            input: block,
            pos: 0,
            seen_field: false,
            decoded: 0,
            full: false,
        };
        while state.pos < block.len() {
            match self.representation(&mut state, &mut out) {
                Ok(()) => {}
                Err(Fatal(e)) => {
                    out.error.get_or_insert(e);
                    out.new_epoch = true;
                    self.reset_epoch();
                    break;
                }
            }
        }
        out
    }

    /// Parses one representation (RFC 7541 §6) at `state.pos`.
    fn representation(&mut self, s: &mut Block<'_>, out: &mut Decoded) -> Result<(), Fatal> {
        let first = s.peek()?;
        if first & 0x80 != 0 {
            // §6.1 indexed field.
            let index = s.integer(7)?;
            s.seen_field = true;
            match self.lookup(index) {
                Ok((name, value)) => s.emit(out, name, value, false),
                Err(e) => note(out, e),
            }
        } else if first & 0xc0 == 0x40 {
            // §6.2.1 literal with incremental indexing.
            let (name, value) = self.literal(s, 6, out)?;
            s.emit(out, name.clone(), value.clone(), false);
            self.table.insert(Entry { name, value });
        } else if first & 0xe0 == 0x20 {
            // §6.3 dynamic table size update.
            let size = s.integer(5)?;
            if s.seen_field {
                note(out, HpackError::SizeUpdateNotAtStart);
            }
            if let Err(limit) = self.table.size_update(size as usize) {
                note(
                    out,
                    HpackError::SizeUpdateTooLarge {
                        size,
                        limit: u32::try_from(limit).unwrap_or(u32::MAX),
                    },
                );
            }
        } else {
            // §6.2.2 without indexing (0000) or §6.2.3 never indexed (0001).
            let sensitive = first & 0x10 != 0;
            let (name, value) = self.literal(s, 4, out)?;
            s.emit(out, name, value, sensitive);
        }
        Ok(())
    }

    /// Reads a literal's name (indexed or literal) and its value.
    #[expect(
        clippy::type_complexity,
        reason = "a (name, value) pair of maybe-known byte strings reads best inline"
    )]
    fn literal(
        &self,
        s: &mut Block<'_>,
        prefix: u8,
        out: &mut Decoded,
    ) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>), Fatal> {
        let index = s.integer(prefix)?;
        s.seen_field = true;
        let name = if index == 0 {
            s.string(out)?
        } else {
            match self.lookup(index) {
                Ok((name, _)) => name,
                Err(e) => {
                    note(out, e);
                    None
                }
            }
        };
        let value = s.string(out)?;
        Ok((name, value))
    }

    /// Resolves an index in the static or dynamic table.
    #[expect(
        clippy::type_complexity,
        reason = "a (name, value) pair of maybe-known byte strings reads best inline"
    )]
    fn lookup(&self, index: u32) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>), HpackError> {
        let i = index as usize;
        if i == 0 {
            return Err(HpackError::InvalidIndex(index));
        }
        if let Some((name, value)) = STATIC.get(i - 1) {
            return Ok((
                Some(name.as_bytes().to_vec()),
                Some(value.as_bytes().to_vec()),
            ));
        }
        match self.table.get(i - STATIC.len() - 1) {
            Lookup::Entry(e) => Ok((e.name.clone(), e.value.clone())),
            Lookup::Unknown => Ok((None, None)),
            Lookup::Invalid => Err(HpackError::InvalidIndex(index)),
        }
    }
}

/// Records a recoverable error (the first one wins).
fn note(out: &mut Decoded, e: HpackError) {
    out.error.get_or_insert(e);
}

/// Parsing position in one block.
struct Block<'a> {
    input: &'a [u8],
    pos: usize,
    /// A field representation came before (size updates must not follow one).
    seen_field: bool,
    /// Name and value bytes returned so far.
    decoded: usize,
    /// The output limits were reached: go on parsing, return no more fields.
    full: bool,
}

impl Block<'_> {
    fn peek(&self) -> Result<u8, Fatal> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(Fatal(HpackError::Truncated))
    }

    fn next(&mut self) -> Result<u8, Fatal> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    /// RFC 7541 §5.1 integer with an N-bit prefix, refused above `u32::MAX`
    /// (no field, index or size needs more; it also stops 0x80 runs).
    fn integer(&mut self, prefix: u8) -> Result<u32, Fatal> {
        // Prefixes are 4 to 7 bits in HPACK; 8 is allowed for the RFC examples.
        let mask = ((1u16 << prefix.min(8)) - 1) as u8;
        let first = self.next()? & mask;
        if first < mask {
            return Ok(u32::from(first));
        }
        let mut value = u64::from(mask);
        let mut shift = 0u32;
        loop {
            let b = self.next()?;
            if shift > 28 {
                return Err(Fatal(HpackError::IntegerOverflow));
            }
            value += u64::from(b & 0x7f) << shift;
            if value > u64::from(u32::MAX) {
                return Err(Fatal(HpackError::IntegerOverflow));
            }
            if b & 0x80 == 0 {
                return u32::try_from(value).map_err(|_| Fatal(HpackError::IntegerOverflow));
            }
            shift += 7;
        }
    }

    /// RFC 7541 §5.2 string literal. A bad Huffman string is skipped (its
    /// length is known) and reads as unknown.
    fn string(&mut self, out: &mut Decoded) -> Result<Option<Vec<u8>>, Fatal> {
        let huffman = self.peek()? & 0x80 != 0;
        let len = self.integer(7)? as usize;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.input.len())
            .ok_or(Fatal(HpackError::Truncated))?;
        let raw = self.input.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        if !huffman {
            return Ok(Some(raw.to_vec()));
        }
        let mut decoded = Vec::new();
        match huffman::decode(raw, &mut decoded) {
            Ok(()) => Ok(Some(decoded)),
            Err(e) => {
                note(out, e.into());
                Ok(None)
            }
        }
    }

    /// Appends a field unless the block's output limits are reached.
    fn emit(
        &mut self,
        out: &mut Decoded,
        name: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        sensitive: bool,
    ) {
        if self.full {
            return;
        }
        let bytes = name.as_ref().map_or(0, Vec::len) + value.as_ref().map_or(0, Vec::len);
        if out.fields.len() >= MAX_FIELDS || self.decoded + bytes > MAX_DECODED {
            self.full = true;
            note(out, HpackError::TooManyFields);
            return;
        }
        self.decoded += bytes;
        out.fields.push(Field {
            name,
            value,
            sensitive,
        });
    }
}

#[cfg(test)]
mod tests;
