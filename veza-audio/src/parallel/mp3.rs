//! MP3 frames as the splicer sees them: header, side information (`main_data_begin`, the
//! length of each granule's main data, block types) and the LAME info frame.
//!
//! Written here: the MP3 crates in the tree decode audio but expose neither the side information
//! nor a way to write the Xing/LAME tag; the fields needed are few and fixed by ISO 11172-3 and
//! LAME's tag layout.

use super::FrameRef;
use super::bits::BitReader;

/// Bitrates (kbit/s) by index: MPEG-1 Layer III, then MPEG-2/2.5 Layer III.
const KBPS: [[u16; 15]; 2] = [
    [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ],
    [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
];
/// Sample rates by index for MPEG-1; MPEG-2 halves them, MPEG-2.5 quarters them.
const RATES: [u32; 3] = [44_100, 48_000, 32_000];

/// One parsed frame header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    /// MPEG-1 (two granules per frame) or MPEG-2/2.5 (one).
    pub(crate) mpeg1: bool,
    pub(crate) crc: bool,
    pub(crate) mono: bool,
    pub(crate) kbps: u16,
    pub(crate) len: usize,
}

/// Parses the 4-byte header at the start of `b` (Layer III only, no free format).
pub(crate) fn header(b: &[u8]) -> Option<Header> {
    let [b0, b1, b2, b3] = *b.get(..4)? else {
        return None;
    };
    if b0 != 0xFF || b1 & 0xE0 != 0xE0 || (b1 >> 1) & 3 != 1 {
        return None;
    }
    let version = (b1 >> 3) & 3; // 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
    if version == 1 {
        return None;
    }
    let mpeg1 = version == 3;
    let br = usize::from(b2 >> 4);
    let sr = usize::from((b2 >> 2) & 3);
    if br == 0 || br == 15 || sr == 3 {
        return None;
    }
    let kbps = KBPS[usize::from(!mpeg1)][br];
    let rate = RATES[sr]
        >> if mpeg1 {
            0
        } else if version == 2 {
            1
        } else {
            2
        };
    let pad = usize::from((b2 >> 1) & 1);
    let coef = if mpeg1 { 144_000 } else { 72_000 };
    let len = coef * usize::from(kbps) / rate as usize + pad;
    Some(Header {
        mpeg1,
        crc: b1 & 1 == 0,
        mono: b3 >> 6 == 3,
        kbps,
        len,
    })
}

/// Bytes of side information after the header (and its CRC).
fn side_info_len(h: &Header) -> usize {
    match (h.mpeg1, h.mono) {
        (true, true) => 17,
        (true, false) => 32,
        (false, true) => 9,
        (false, false) => 17,
    }
}

/// Parses the frame at the start of `b` (which holds at least the whole frame).
pub(crate) fn frame(b: &[u8], start: usize) -> Option<FrameRef> {
    let h = header(b)?;
    if b.len() < h.len {
        return None;
    }
    let side_at = 4 + if h.crc { 2 } else { 0 };
    let main_off = side_at + side_info_len(&h);
    if main_off > h.len {
        return None;
    }
    let mut r = BitReader::new(b.get(side_at..main_off)?);
    let channels = if h.mono { 1 } else { 2 };
    let granules = if h.mpeg1 { 2 } else { 1 };
    let mdb = if h.mpeg1 {
        let v = r.read(9)?;
        r.skip(if h.mono { 5 } else { 3 });
        r.skip(4 * channels); // scfsi
        v
    } else {
        let v = r.read(8)?;
        r.skip(if h.mono { 1 } else { 2 });
        v
    };
    let mut bits = 0u32;
    let mut head_long = true;
    let mut tail_long = true;
    for gr in 0..granules {
        for _ in 0..channels {
            bits += r.read(12)?; // part2_3_length
            r.skip(9 + 8); // big_values, global_gain
            r.skip(if h.mpeg1 { 4 } else { 9 }); // scalefac_compress
            let switching = r.read(1)? == 1;
            let long = if switching {
                let block_type = r.read(2)?;
                r.skip(1 + 10 + 9); // mixed flag, 2 table selects, 3 subblock gains
                block_type == 0
            } else {
                r.skip(15 + 4 + 3); // 3 table selects, region counts
                true
            };
            r.skip(if h.mpeg1 { 3 } else { 2 });
            if gr == 0 {
                head_long &= long;
            }
            if gr == granules - 1 {
                tail_long &= long;
            }
        }
    }
    Some(FrameRef {
        start,
        len: h.len,
        head_long,
        tail_long,
        shape: 0,
        mdb: mdb as u16,
        main_off: main_off as u16,
        main_len: (h.len - main_off) as u16,
        used: bits.div_ceil(8),
        kbps: h.kbps,
    })
}

/// The smallest bitrate index above the frame's (whose header starts `head`) that makes it at
/// least `more` bytes longer, and by how much; `None` when the table has none or the frame is
/// CRC-protected (its CRC covers the header). A stream whose frames differ in bitrate is
/// valid MPEG audio (it is how VBR is written); the grown frame's extra bytes are free space
/// in the bit reservoir.
pub(crate) fn grow_to_fit(head: &[u8], more: usize) -> Option<(u8, usize)> {
    let h = header(head)?;
    if h.crc {
        return None;
    }
    let current = head[2] >> 4;
    let mut probe = [head[0], head[1], head[2], head[3]];
    (current + 1..15).find_map(|index| {
        probe[2] = (head[2] & 0x0F) | (index << 4);
        let len = header(&probe)?.len;
        let extra = len.checked_sub(h.len)?;
        (extra >= more).then_some((index, extra))
    })
}

/// CRC-16 as LAME computes it for its tag (polynomial 0x8005 reflected, initial value 0).
pub(crate) fn crc16_update(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// LAME's seek-table accumulator (`addVbr` in LAME's VbrTag.c): the running sum of frame
/// bitrates sampled at most 400 times, halving its resolution as the stream grows, so that the
/// table of contents is computed exactly as LAME would in bounded memory.
#[derive(Debug)]
pub(crate) struct SeekTable {
    bag: [u32; 400],
    pos: usize,
    want: u32,
    seen: u32,
    sum: u32,
    /// Audio frames counted.
    pub(crate) frames: u32,
}

impl SeekTable {
    pub(crate) fn new() -> Self {
        SeekTable {
            bag: [0; 400],
            pos: 0,
            want: 1,
            seen: 0,
            sum: 0,
            frames: 0,
        }
    }

    /// Counts one audio frame of `kbps`.
    pub(crate) fn add(&mut self, kbps: u16) {
        self.frames += 1;
        self.sum = self.sum.wrapping_add(u32::from(kbps));
        self.seen += 1;
        if self.seen < self.want {
            return;
        }
        if self.pos < self.bag.len() {
            self.bag[self.pos] = self.sum;
            self.pos += 1;
            self.seen = 0;
        }
        if self.pos == self.bag.len() {
            let mut i = 1;
            while i < self.bag.len() {
                self.bag[i / 2] = self.bag[i];
                i += 2;
            }
            self.want *= 2;
            self.pos /= 2;
        }
    }

    /// The 100-byte Xing table of contents (`Xing_seek_table` in LAME).
    fn toc(&self) -> [u8; 100] {
        let mut t = [0u8; 100];
        if self.pos == 0 {
            return t;
        }
        for (i, slot) in t.iter_mut().enumerate().skip(1) {
            // LAME computes in single precision here; so does this, to give the same bytes.
            let j = i as f32 / 100.0;
            let indx = ((j * self.pos as f32).floor() as usize).min(self.pos - 1);
            let act = self.bag[indx] as f32;
            let sum = self.sum as f32;
            let seek = (256.0 * f64::from(act) / f64::from(sum)) as i64;
            *slot = seek.clamp(0, 255) as u8;
        }
        t
    }
}

/// What the whole spliced stream says about itself, for its info frame.
#[derive(Debug)]
pub(crate) struct StreamTotals<'a> {
    pub(crate) table: &'a SeekTable,
    /// Bytes of audio frames written (without the info frame).
    pub(crate) audio_bytes: u64,
    /// CRC-16 of the audio frames as written.
    pub(crate) music_crc: u16,
    /// PCM samples per channel that went in.
    pub(crate) samples: u64,
    /// Samples per MPEG frame.
    pub(crate) frame_len: u64,
}

/// Rewrites LAME's info frame `tag` (made by the first segment's encoder, which saw only that
/// segment) for the whole stream: frame count, byte count, table of contents, end padding, music
/// length, music CRC and the tag's own CRC. Encoder settings and the start delay stay as LAME
/// wrote them. `None` when `tag` is not a Xing/Info frame with a LAME extension.
pub(crate) fn rebuild_info_frame(tag: &[u8], t: &StreamTotals<'_>) -> Option<Vec<u8>> {
    let x = tag
        .windows(4)
        .take(64)
        .position(|w| w == b"Info" || w == b"Xing")?;
    let mut out = tag.to_vec();
    if out.len() < x + 156 {
        return None;
    }
    let put4 = |o: &mut Vec<u8>, at: usize, v: u32| o[at..at + 4].copy_from_slice(&v.to_be_bytes());
    put4(&mut out, x + 8, t.table.frames);
    let total_bytes = u32::try_from(t.audio_bytes + tag.len() as u64).unwrap_or(u32::MAX);
    put4(&mut out, x + 12, total_bytes);
    out[x + 16..x + 116].copy_from_slice(&t.table.toc());
    // Delay (12 bits) as LAME wrote it; padding (12 bits) for the whole stream.
    let d = x + 141;
    let delay = (u64::from(out[d]) << 4) | u64::from(out[d + 1] >> 4);
    let coded = u64::from(t.table.frames) * t.frame_len;
    let padding = coded.checked_sub(delay + t.samples)?;
    if padding > 0xFFF {
        return None;
    }
    out[d + 1] = (out[d + 1] & 0xF0) | (padding >> 8) as u8;
    out[d + 2] = padding as u8;
    put4(&mut out, x + 148, total_bytes);
    out[x + 152..x + 154].copy_from_slice(&t.music_crc.to_be_bytes());
    let crc = crc16_update(0, &out[..x + 154]);
    out[x + 154..x + 156].copy_from_slice(&crc.to_be_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths_and_growth() {
        // MPEG-1 Layer III, no CRC, 64 kbit/s, 44.1 kHz, no padding, joint stereo.
        let head = [0xFF, 0xFB, 0x50, 0x44];
        let h = header(&head).unwrap();
        assert_eq!(
            (h.kbps, h.len, h.mpeg1, h.crc, h.mono),
            (64, 208, true, false, false)
        );
        // 80 kbit/s is 261 bytes: 53 more.
        assert_eq!(grow_to_fit(&head, 50), Some((6, 53)));
        assert_eq!(grow_to_fit(&head, 53), Some((6, 53)));
        // 96 kbit/s: 313 bytes.
        assert_eq!(grow_to_fit(&head, 54), Some((7, 105)));
        // Nothing above 320 kbit/s.
        assert_eq!(grow_to_fit(&[0xFF, 0xFB, 0xE0, 0x44], 1), None);
        // A CRC-protected frame is not grown (its CRC covers the header).
        assert_eq!(grow_to_fit(&[0xFF, 0xFA, 0x50, 0x44], 1), None);
    }

    #[test]
    fn crc16_is_lame_s() {
        // CRC-16/ARC check value.
        assert_eq!(crc16_update(0, b"123456789"), 0xBB3D);
    }
}
