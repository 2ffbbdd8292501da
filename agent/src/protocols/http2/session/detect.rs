//! Whether the first bytes of a direction look like HTTP/2 (see
//! [`super::Session::detect`]).

use crate::protocols::http2::frame::{FrameHeader, HEADER_LEN, PREFACE, flag, kind};

/// SETTINGS_MAX_FRAME_SIZE before any SETTINGS (RFC 9113 §6.5.2).
const DEFAULT_MAX_FRAME: u32 = 16_384;
/// Frame headers checked in one chunk.
const DETECT_FRAMES: usize = 16;

pub(super) fn detect(data: &[u8]) -> bool {
    if data.starts_with(PREFACE) || (data.len() >= 16 && PREFACE.starts_with(data)) {
        return true;
    }
    let Some(first) = header_at(data, 0) else {
        return false;
    };
    if !first.plausible(DEFAULT_MAX_FRAME) {
        return false;
    }
    let settings = first.frame_type == kind::SETTINGS && first.flags & flag::ACK == 0;
    if settings && !settings_plausible(&first, data) {
        return false;
    }
    if !settings && first.len == 0 {
        return false;
    }
    let (mut at, mut prev, mut headers) = (0usize, first, 1usize);
    while headers < DETECT_FRAMES {
        let next_at = at
            .saturating_add(HEADER_LEN)
            .saturating_add(prev.len as usize);
        let Some(next) = header_at(data, next_at) else {
            break;
        };
        let continues = next.frame_type == kind::CONTINUATION
            && matches!(
                prev.frame_type,
                kind::HEADERS | kind::PUSH_PROMISE | kind::CONTINUATION
            )
            && prev.flags & flag::END_HEADERS == 0
            && next.stream_id == prev.stream_id
            && !next.reserved
            && next.flags & !flag::END_HEADERS == 0
            && next.len <= DEFAULT_MAX_FRAME;
        if !continues && !next.plausible(DEFAULT_MAX_FRAME) {
            return false;
        }
        (at, prev, headers) = (next_at, next, headers + 1);
    }
    settings || headers >= 2
}

/// The frame header at `at`, if 9 bytes are there.
fn header_at(data: &[u8], at: usize) -> Option<FrameHeader> {
    let bytes: &[u8; HEADER_LEN] = data.get(at..at.checked_add(HEADER_LEN)?)?.try_into().ok()?;
    Some(FrameHeader::parse(bytes))
}

/// A first SETTINGS frame as servers send it: few parameters, the known ones
/// within their ranges (RFC 9113 §6.5.2, RFC 8441, RFC 9218).
fn settings_plausible(first: &FrameHeader, data: &[u8]) -> bool {
    if first.len > 6 * 32 {
        return false;
    }
    let end = HEADER_LEN
        .saturating_add(first.len as usize)
        .min(data.len());
    let params = data.get(HEADER_LEN..end).unwrap_or_default();
    params.chunks_exact(6).all(|p| {
        let Ok([i0, i1, v0, v1, v2, v3]) = <[u8; 6]>::try_from(p) else {
            return false;
        };
        let v = u32::from_be_bytes([v0, v1, v2, v3]);
        match u16::from_be_bytes([i0, i1]) {
            0x2 | 0x8 | 0x9 => v <= 1,
            0x4 => v <= 0x7fff_ffff,
            0x5 => (16_384..=0xff_ffff).contains(&v),
            _ => true,
        }
    })
}
