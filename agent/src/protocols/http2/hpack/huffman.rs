//! The HPACK Huffman code (RFC 7541 §5.2, Appendix B).
//!
//! The code in Appendix B is canonical: ordering the symbols by (code length,
//! symbol) and counting up gives every code. So the table below holds only the
//! 257 code lengths, and the decoding tables are derived from them at compile
//! time; the tests check a few codes against Appendix B and the Appendix C
//! vectors exercise the rest.
//!
//! Decoding walks one bit at a time. Header strings are short and this keeps
//! the decoder small enough to check by eye; bounds come from the input length
//! (at most 8 symbols per 5 input bits).

use thiserror::Error;

/// Why a Huffman string was rejected (RFC 7541 §5.2).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum HuffmanError {
    /// The EOS symbol appeared inside the string.
    #[error("huffman string contains EOS")]
    Eos,
    /// More than 7 bits of padding: the encoder wrote a longer EOS prefix.
    #[error("huffman padding longer than 7 bits")]
    PaddingTooLong,
    /// The padding bits are not the most significant bits of EOS (all ones).
    #[error("huffman padding is not an EOS prefix")]
    PaddingNotEos,
}

/// Code length in bits of each symbol 0..=255 and EOS (256), RFC 7541 Appendix B.
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

const EOS: u16 = 256;
const MAX_LEN: usize = 30;
const MIN_LEN: usize = 5;

/// The canonical code in the form the decoder walks.
struct Canonical {
    /// Numerically smallest code of each length.
    first_code: [u32; MAX_LEN + 1],
    /// Number of codes of each length.
    count: [u32; MAX_LEN + 1],
    /// Index in `symbols` of the first symbol of each length.
    first_index: [u16; MAX_LEN + 1],
    /// Symbols ordered by (length, value).
    symbols: [u16; 257],
}

const fn build() -> Canonical {
    let mut count = [0u32; MAX_LEN + 1];
    let mut s = 0;
    while s < 257 {
        count[LENGTHS[s] as usize] += 1;
        s += 1;
    }
    let mut symbols = [0u16; 257];
    let mut first_index = [0u16; MAX_LEN + 1];
    let mut first_code = [0u32; MAX_LEN + 1];
    let mut next = 0u16;
    let mut code = 0u32;
    let mut len = 1;
    while len <= MAX_LEN {
        first_index[len] = next;
        first_code[len] = code;
        let mut s = 0;
        while s < 257 {
            if LENGTHS[s] as usize == len {
                symbols[next as usize] = s as u16;
                next += 1;
            }
            s += 1;
        }
        code = (code + count[len]) << 1;
        len += 1;
    }
    Canonical {
        first_code,
        count,
        first_index,
        symbols,
    }
}

static CODE: Canonical = build();

/// Decodes a Huffman string, appending the symbols to `out`.
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    out.reserve(input.len() + input.len() / 2);
    let mut code = 0u32;
    let mut len = 0usize;
    for &byte in input {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if len < MIN_LEN {
                continue;
            }
            let (Some(&first), Some(&count), Some(&index)) = (
                CODE.first_code.get(len),
                CODE.count.get(len),
                CODE.first_index.get(len),
            ) else {
                // Longer than any code: cannot happen with a complete code,
                // and refused rather than assumed.
                return Err(HuffmanError::PaddingTooLong);
            };
            let offset = code.wrapping_sub(first);
            if offset < count {
                let symbol = CODE
                    .symbols
                    .get(usize::from(index) + offset as usize)
                    .copied()
                    .unwrap_or(EOS);
                if symbol == EOS {
                    return Err(HuffmanError::Eos);
                }
                out.push(symbol as u8);
                code = 0;
                len = 0;
            }
        }
    }
    if len > 7 {
        return Err(HuffmanError::PaddingTooLong);
    }
    if code != (1u32 << len) - 1 {
        return Err(HuffmanError::PaddingNotEos);
    }
    Ok(())
}

/// The code of one symbol as (bits, length), from the canonical ordering.
fn code_of(symbol: u16) -> (u32, u32) {
    let len = LENGTHS.get(usize::from(symbol)).copied().unwrap_or(0);
    let len_index = usize::from(len);
    let first = CODE.first_code.get(len_index).copied().unwrap_or(0);
    let start = usize::from(CODE.first_index.get(len_index).copied().unwrap_or(0));
    let rank = CODE
        .symbols
        .get(start..)
        .and_then(|rest| rest.iter().position(|&s| s == symbol))
        .unwrap_or(0) as u32;
    (first + rank, u32::from(len))
}

/// Encodes `input` with the Huffman code, padded with the high bits of EOS.
/// The agent only decodes; this exists for tests and fuzz round trips.
pub fn encode(input: &[u8], out: &mut Vec<u8>) {
    let mut acc = 0u64;
    let mut bits = 0u32;
    for &b in input {
        let (code, len) = code_of(u16::from(b));
        acc = (acc << len) | u64::from(code);
        bits += len;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1u64 << bits) - 1;
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push(((acc << pad) | ((1u64 << pad) - 1)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(input: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(input, &mut out).map(|()| out)
    }

    #[test]
    fn codes_match_appendix_b() {
        // (symbol, code, length) rows read from RFC 7541 Appendix B.
        for (symbol, code, len) in [
            (0u16, 0x1ff8u32, 13u32),
            (1, 0x7fffd8, 23),
            (9, 0xffffea, 24),
            (10, 0x3ffffffc, 30),
            (u16::from(b' '), 0x14, 6),
            (u16::from(b'0'), 0x0, 5),
            (u16::from(b'a'), 0x3, 5),
            (u16::from(b'z'), 0x7b, 7),
            (u16::from(b'~'), 0x1ffd, 13),
            (255, 0x3ffffee, 26),
            (EOS, 0x3fffffff, 30),
        ] {
            assert_eq!(code_of(symbol), (code, len), "symbol {symbol}");
        }
        // Kraft equality: the code is complete, so no bit string is left
        // without a meaning (the decoder never runs past 30 bits).
        let kraft: u64 = LENGTHS.iter().map(|&l| 1u64 << (30 - l)).sum();
        assert_eq!(kraft, 1 << 30);
    }

    #[test]
    fn round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let mut enc = Vec::new();
        encode(&all, &mut enc);
        assert_eq!(dec(&enc).unwrap(), all);
        for b in 0..=255u8 {
            let mut enc = Vec::new();
            encode(&[b, b, b], &mut enc);
            assert_eq!(dec(&enc).unwrap(), [b, b, b]);
        }
    }

    #[test]
    fn rfc_example_string() {
        // RFC 7541 C.4.1: "www.example.com".
        let enc = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        assert_eq!(dec(&enc).unwrap(), b"www.example.com");
        assert_eq!(dec(&[]).unwrap(), b"");
    }

    #[test]
    fn padding_rules() {
        // 'a' is 00011 (5 bits): 3 one bits of padding are fine.
        assert_eq!(dec(&[0b0001_1111]).unwrap(), b"a");
        // Padding with a zero bit is not an EOS prefix.
        assert_eq!(dec(&[0b0001_1110]), Err(HuffmanError::PaddingNotEos));
        // A whole byte of ones after a symbol is 8 bits of padding.
        assert_eq!(dec(&[0b0001_1111, 0xff]), Err(HuffmanError::PaddingTooLong));
        assert_eq!(dec(&[0xff]), Err(HuffmanError::PaddingTooLong));
        // EOS itself (30 ones) inside the string.
        assert_eq!(dec(&[0xff, 0xff, 0xff, 0xfc]), Err(HuffmanError::Eos));
        // '9' is 011111 (6 bits), then 2 bits of padding.
        assert_eq!(dec(&[0x7f]).unwrap(), b"9");
        // '0' is 00000, then 11 one bits: too much padding.
        assert_eq!(dec(&[0x07, 0xff]), Err(HuffmanError::PaddingTooLong));
        assert_eq!(dec(&[0xfe]), Err(HuffmanError::PaddingTooLong));
    }
}
