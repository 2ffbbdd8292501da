//! Test encoders for HTTP/2 bytes: frames (with [`FrameHeader::encode`]) and
//! the HPACK representations of RFC 7541 §5–6, shared by the frame, HPACK and
//! session tests.

use super::frame::FrameHeader;

/// One frame with its header.
pub fn frame(frame_type: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = FrameHeader {
        len: payload.len() as u32,
        frame_type,
        flags,
        stream_id,
        reserved: false,
    }
    .encode()
    .to_vec();
    v.extend_from_slice(payload);
    v
}

/// An RFC 7541 §5.1 integer with `flags` in the bits above the prefix.
pub fn int(flags: u8, prefix: u8, value: u32, out: &mut Vec<u8>) {
    let max = (1u32 << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A string literal without Huffman coding (§5.2).
pub fn string(s: &[u8], out: &mut Vec<u8>) {
    int(0, 7, s.len() as u32, out);
    out.extend_from_slice(s);
}

/// An indexed header field (§6.1).
pub fn indexed(index: u32) -> Vec<u8> {
    let mut v = Vec::new();
    int(0x80, 7, index, &mut v);
    v
}

/// A dynamic table size update (§6.3).
pub fn size_update(size: u32) -> Vec<u8> {
    let mut v = Vec::new();
    int(0x20, 5, size, &mut v);
    v
}
