//! ADTS frames as the splicer sees them: the frame length and the window of the first channel
//! element (window sequence and shape, ISO 14496-3 `ics_info`).
//!
//! Written here: the AAC crates in the tree decode audio but do not expose a frame's window.

use super::FrameRef;
use super::bits::BitReader;

/// `ONLY_LONG_SEQUENCE`.
const ONLY_LONG: u32 = 0;

/// Parses the ADTS frame at the start of `b`.
pub(crate) fn frame(b: &[u8], start: usize) -> Option<FrameRef> {
    let head = b.get(..7)?;
    if head[0] != 0xFF || head[1] & 0xF6 != 0xF0 {
        return None;
    }
    let protection_absent = head[1] & 1 == 1;
    let len =
        (usize::from(head[3] & 3) << 11) | (usize::from(head[4]) << 3) | usize::from(head[5] >> 5);
    let raw_at = if protection_absent { 7 } else { 9 };
    if len < raw_at || b.len() < len {
        return None;
    }
    // The frame is its raw data block behind the header: same window facts, the whole length.
    let mut frame = raw_unit(b.get(raw_at..len)?, start);
    frame.len = len;
    Some(frame)
}

/// A raw access unit (as an MP4 sample) at `start` of a segment's bytes.
pub(crate) fn raw_unit(unit: &[u8], start: usize) -> FrameRef {
    let (long, shape) = window(unit);
    FrameRef {
        start,
        len: unit.len(),
        head_long: long,
        tail_long: long,
        shape,
        mdb: 0,
        main_off: 0,
        main_len: 0,
        used: 0,
        kbps: 0,
    }
}

/// Whether the raw data block's first element uses only long windows, and its window shape.
///
/// The first element is a single channel element (0) or a channel pair (1); the splicer only
/// accepts seams where the window of every channel is known to be long, so a pair without a
/// common window (whose second window is further in) counts as "not long", as does anything
/// unreadable.
fn window(raw: &[u8]) -> (bool, u8) {
    let mut r = BitReader::new(raw);
    let Some(element) = r.read(3) else {
        return (false, 0);
    };
    r.skip(4); // element_instance_tag
    let ics = match element {
        0 => {
            r.skip(8 + 1); // global_gain, ics_reserved_bit
            true
        }
        1 => {
            let common = r.read(1) == Some(1);
            r.skip(1); // ics_reserved_bit
            common
        }
        _ => false,
    };
    match (ics, r.read(2), r.read(1)) {
        (true, Some(sequence), Some(shape)) => (sequence == ONLY_LONG, shape as u8),
        _ => (false, 0),
    }
}
