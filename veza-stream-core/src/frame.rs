//! Frame boundaries in encoded audio: MP3 (MPEG audio layers I-III), AAC in ADTS, and Ogg pages
//! (Vorbis or Opus).
//!
//! A live source sends a byte stream cut wherever its TCP segments fall. [`FrameSplitter`] buffers
//! those bytes and hands back whole frames (whole Ogg pages for Ogg), each with its duration in
//! samples, so that everything downstream (the fan-out ring, the HLS segmenter, the recorder) works
//! on frame boundaries only. Junk between frames (a leading ID3v2 tag, garbage after a network
//! hiccup) is skipped and counted.
//!
//! Written here rather than taken from symphonia: symphonia's readers decode from a seekable or
//! blocking source and do not hand out the raw frame bytes with their boundaries, which is what
//! fan-out and segmenting need. The parsing is the header arithmetic of each format, nothing more.
//!
//! The buffer is bounded: a source that never produces a valid frame within
//! [`SplitterConfig::max_buffer`] bytes gets [`FrameError::NoSync`].

use bytes::{Buf, Bytes, BytesMut};

/// The framing of an encoded live input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameFormat {
    /// MPEG audio (layer III, also I and II), as sent with `Content-Type: audio/mpeg`.
    Mpeg,
    /// AAC in ADTS frames (`audio/aac`, `audio/aacp`).
    Adts,
    /// Ogg pages carrying Vorbis or Opus (`audio/ogg`).
    Ogg,
}

impl FrameFormat {
    /// The format for an HTTP `Content-Type` (parameters ignored), if it is one of ours.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            "audio/mpeg" | "audio/mp3" | "audio/mpeg3" | "audio/x-mpeg" => Some(Self::Mpeg),
            "audio/aac" | "audio/aacp" | "audio/x-aac" => Some(Self::Adts),
            "audio/ogg" | "application/ogg" | "audio/x-ogg" | "audio/vorbis" | "audio/opus" => {
                Some(Self::Ogg)
            }
            _ => None,
        }
    }

    /// The `Content-Type` listeners get for this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Mpeg => "audio/mpeg",
            Self::Adts => "audio/aac",
            Self::Ogg => "audio/ogg",
        }
    }
}

/// What a frame is, beyond its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameKind {
    /// Audio: decodable on its own once the decoder is set up.
    Audio,
    /// Stream headers a decoder needs before any audio (the Ogg pages that carry the codec's
    /// identification, comment and setup packets). A new listener gets these first.
    Header,
}

/// One whole frame (or Ogg page) of a live input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The frame's bytes, header included.
    pub data: Bytes,
    /// Audio samples per channel that the frame completes (0 for headers and for Ogg pages on
    /// which no packet ends).
    pub samples: u32,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Number of channels (0 when the header does not say, as for ADTS channel configuration 0).
    pub channels: u8,
    /// Audio or stream header.
    pub kind: FrameKind,
}

/// Why a frame could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// No valid frame was found in `buffered` bytes: the input is not in the declared format.
    /// Remedy: check the source's Content-Type and encoder settings.
    #[error(
        "no {format:?} frame found in {buffered} bytes: the input is not in the declared format"
    )]
    NoSync {
        /// The format that was expected.
        format: FrameFormat,
        /// How many bytes were searched.
        buffered: usize,
    },
    /// The stream's parameters changed mid-stream (sample rate of MPEG/ADTS frames), which
    /// listeners' decoders cannot follow. Remedy: restart the source with fixed settings.
    #[error("the sample rate changed mid-stream from {from} Hz to {to} Hz")]
    ParametersChanged {
        /// Rate in force.
        from: u32,
        /// Rate of the new frame.
        to: u32,
    },
}

/// Settings of a [`FrameSplitter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitterConfig {
    /// Most bytes held while looking for a frame (default 256 KiB; an Ogg page is at most
    /// 65,307 bytes, an MPEG or ADTS frame under 8 KiB).
    pub max_buffer: usize,
}

impl Default for SplitterConfig {
    fn default() -> Self {
        Self {
            max_buffer: 256 * 1024,
        }
    }
}

/// Counters of what the splitter skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SplitterStats {
    /// Whole frames returned.
    pub frames: u64,
    /// Bytes skipped because they were not part of a valid frame (ID3v2 tags included).
    pub skipped_bytes: u64,
}

/// Cuts a byte stream into whole frames. Push bytes as they arrive with [`push`](Self::push), then
/// call [`next_frame`](Self::next_frame) until it returns `Ok(None)`.
///
/// MPEG and ADTS frames are accepted once the next frame's header is also seen (so junk that
/// happens to contain a sync word is not taken for audio), or at [`finish`](Self::finish). Ogg
/// pages are accepted when their CRC matches.
#[derive(Debug)]
pub struct FrameSplitter {
    format: FrameFormat,
    config: SplitterConfig,
    buf: BytesMut,
    finished: bool,
    stats: SplitterStats,
    /// Sample rate of the accepted frames (MPEG/ADTS), once known.
    locked_rate: Option<u32>,
    ogg: OggState,
}

#[derive(Debug, Default)]
struct OggState {
    /// Sample rate and channels from the identification header, once seen.
    rate: Option<u32>,
    channels: u8,
    /// Granule position of the last page with a packet end.
    last_granule: Option<u64>,
    /// Opus pre-skip is ignored for durations; Opus granules count at 48 kHz.
    in_headers: bool,
    header_packets_left: u32,
}

impl FrameSplitter {
    /// A splitter for `format`.
    pub fn new(format: FrameFormat, config: SplitterConfig) -> Self {
        Self {
            format,
            config,
            buf: BytesMut::new(),
            finished: false,
            stats: SplitterStats::default(),
            locked_rate: None,
            ogg: OggState::default(),
        }
    }

    /// The format being split.
    pub fn format(&self) -> FrameFormat {
        self.format
    }

    /// Counters so far.
    pub fn stats(&self) -> SplitterStats {
        self.stats
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Appends input bytes. Cheap: frames are found by [`next_frame`](Self::next_frame).
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Says no more input will come: the last frame is accepted without its successor.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Forgets buffered bytes and stream state, as after a source reconnects.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.finished = false;
        self.locked_rate = None;
        self.ogg = OggState::default();
    }

    /// The next whole frame, `Ok(None)` when more input is needed.
    ///
    /// # Errors
    /// [`FrameError::NoSync`] when `max_buffer` bytes hold no frame (the buffer is then dropped,
    /// so the caller may go on or give up); [`FrameError::ParametersChanged`] when an MPEG/ADTS
    /// stream changes its sample rate (the frame is dropped).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let r = match self.format {
            FrameFormat::Mpeg | FrameFormat::Adts => self.next_mpeg_or_adts(),
            FrameFormat::Ogg => self.next_ogg(),
        };
        if let Ok(Some(_)) = r {
            self.stats.frames += 1;
        }
        if matches!(r, Ok(None)) && self.buf.len() > self.config.max_buffer {
            let buffered = self.buf.len();
            self.stats.skipped_bytes += buffered as u64;
            self.buf.clear();
            return Err(FrameError::NoSync {
                format: self.format,
                buffered,
            });
        }
        r
    }

    fn skip(&mut self, n: usize) {
        self.buf.advance(n);
        self.stats.skipped_bytes += n as u64;
    }

    fn parse_header(&self, b: &[u8]) -> Option<Header> {
        match self.format {
            FrameFormat::Mpeg => parse_mpeg(b),
            FrameFormat::Adts => parse_adts(b),
            FrameFormat::Ogg => None,
        }
    }

    fn next_mpeg_or_adts(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            // An ID3v2 tag at the start (ffmpeg's mp3 muxer writes one) is skipped whole.
            if self.format == FrameFormat::Mpeg && self.buf.len() >= 10 && &self.buf[..3] == b"ID3"
            {
                let b = &self.buf;
                let synchsafe = b[6..10].iter().all(|x| x & 0x80 == 0);
                if synchsafe {
                    let size = (usize::from(b[6]) << 21)
                        | (usize::from(b[7]) << 14)
                        | (usize::from(b[8]) << 7)
                        | usize::from(b[9]);
                    let footer = if b[5] & 0x10 != 0 { 10 } else { 0 };
                    let total = 10 + size + footer;
                    if self.buf.len() < total {
                        if total > self.config.max_buffer {
                            // Too large to hold: skip the header and resync past it bytewise.
                            self.skip(10);
                            continue;
                        }
                        return Ok(None);
                    }
                    self.skip(total);
                    continue;
                }
            }
            let Some(pos) = self
                .buf
                .windows(2)
                .position(|w| w[0] == 0xFF && w[1] & 0xE0 == 0xE0)
            else {
                // Keep a trailing 0xFF: it may start a sync word.
                let keep = usize::from(self.buf.last() == Some(&0xFF));
                let n = self.buf.len() - keep;
                self.skip(n);
                return Ok(None);
            };
            if pos > 0 {
                self.skip(pos);
            }
            if self.buf.len() < 9 {
                return Ok(None);
            }
            let Some(h) = self.parse_header(&self.buf) else {
                self.skip(1);
                continue;
            };
            if self.buf.len() < h.len {
                if self.finished {
                    // A truncated last frame is dropped.
                    let n = self.buf.len();
                    self.skip(n);
                }
                return Ok(None);
            }
            // Confirm with the next header unless the stream is locked on this rate already
            // (then one valid header with the locked rate is enough) or the input ended.
            let locked = self.locked_rate == Some(h.sample_rate);
            if !locked && !self.finished {
                if self.buf.len() < h.len + 4 {
                    return Ok(None);
                }
                match self.parse_header(&self.buf[h.len..]) {
                    Some(next) if next.sample_rate == h.sample_rate => {}
                    _ => {
                        self.skip(1);
                        continue;
                    }
                }
            }
            if let Some(rate) = self.locked_rate {
                if rate != h.sample_rate {
                    // Either a false sync inside junk, or a real change: a real change shows as
                    // two consecutive frames at the new rate.
                    let confirmed = self.buf.len() >= h.len + 4
                        && self
                            .parse_header(&self.buf[h.len..])
                            .is_some_and(|n| n.sample_rate == h.sample_rate);
                    self.skip(if confirmed { h.len } else { 1 });
                    if confirmed {
                        return Err(FrameError::ParametersChanged {
                            from: rate,
                            to: h.sample_rate,
                        });
                    }
                    continue;
                }
            }
            self.locked_rate = Some(h.sample_rate);
            let data = self.buf.split_to(h.len).freeze();
            return Ok(Some(Frame {
                data,
                samples: h.samples,
                sample_rate: h.sample_rate,
                channels: h.channels,
                kind: FrameKind::Audio,
            }));
        }
    }

    fn next_ogg(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            let Some(pos) = self.buf.windows(4).position(|w| w == b"OggS") else {
                let keep = self.buf.len().min(3);
                let n = self.buf.len() - keep;
                self.skip(n);
                return Ok(None);
            };
            if pos > 0 {
                self.skip(pos);
            }
            if self.buf.len() < 27 {
                return Ok(None);
            }
            let nsegs = usize::from(self.buf[26]);
            if self.buf[4] != 0 {
                self.skip(1);
                continue;
            }
            if self.buf.len() < 27 + nsegs {
                return Ok(None);
            }
            let lacing = &self.buf[27..27 + nsegs];
            let body: usize = lacing.iter().map(|&l| usize::from(l)).sum();
            let len = 27 + nsegs + body;
            if self.buf.len() < len {
                if self.finished {
                    let n = self.buf.len();
                    self.skip(n);
                }
                return Ok(None);
            }
            let stored_crc =
                u32::from_le_bytes([self.buf[22], self.buf[23], self.buf[24], self.buf[25]]);
            if ogg_crc(&self.buf[..len]) != stored_crc {
                self.skip(1);
                continue;
            }
            let header_type = self.buf[5];
            let granule = i64::from_le_bytes(
                self.buf[6..14]
                    .try_into()
                    .expect("an 8-byte slice converts to [u8; 8]"),
            );
            let first_packet_start = 27 + nsegs;
            let bos = header_type & 0x02 != 0;
            if bos {
                // A new logical stream (the start, or the next link of a chained stream, as
                // Icecast sources send on a title change): read the codec's identification.
                let p = &self.buf[first_packet_start..len];
                if p.len() >= 30 && &p[..7] == b"\x01vorbis" {
                    self.ogg.channels = p[11];
                    self.ogg.rate = Some(u32::from_le_bytes([p[12], p[13], p[14], p[15]]));
                    self.ogg.header_packets_left = 3;
                } else if p.len() >= 19 && &p[..8] == b"OpusHead" {
                    self.ogg.channels = p[9];
                    self.ogg.rate = Some(48_000);
                    self.ogg.header_packets_left = 2;
                } else {
                    // Another codec (FLAC, Speex...): framing still works; durations are
                    // unknown until a rate is known.
                    self.ogg.rate = None;
                    self.ogg.header_packets_left = 1;
                }
                self.ogg.in_headers = true;
                self.ogg.last_granule = None;
            }
            // Packets completed on this page: lacing values below 255 end a packet.
            let packets_ended = lacing.iter().filter(|&&l| l < 255).count() as u32;
            let is_header = self.ogg.in_headers;
            if self.ogg.in_headers {
                self.ogg.header_packets_left =
                    self.ogg.header_packets_left.saturating_sub(packets_ended);
                if self.ogg.header_packets_left == 0 {
                    self.ogg.in_headers = false;
                }
            }
            let mut samples = 0u32;
            if !is_header && granule >= 0 && packets_ended > 0 {
                let g = granule as u64;
                if let Some(prev) = self.ogg.last_granule {
                    samples = u32::try_from(g.saturating_sub(prev)).unwrap_or(u32::MAX);
                }
                self.ogg.last_granule = Some(g);
            } else if is_header && granule >= 0 && granule != 0 {
                self.ogg.last_granule = Some(granule as u64);
            }
            if is_header && self.ogg.last_granule.is_none() {
                self.ogg.last_granule = Some(0);
            }
            let data = self.buf.split_to(len).freeze();
            return Ok(Some(Frame {
                data,
                samples,
                sample_rate: self.ogg.rate.unwrap_or(0),
                channels: self.ogg.channels,
                kind: if is_header {
                    FrameKind::Header
                } else {
                    FrameKind::Audio
                },
            }));
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Header {
    len: usize,
    samples: u32,
    sample_rate: u32,
    channels: u8,
}

/// Parses an MPEG audio frame header (layers I-III, MPEG-1/2/2.5).
fn parse_mpeg(b: &[u8]) -> Option<Header> {
    if b.len() < 4 || b[0] != 0xFF || b[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (b[1] >> 3) & 0b11; // 0: 2.5, 1: reserved, 2: 2, 3: 1
    let layer = (b[1] >> 1) & 0b11; // 1: III, 2: II, 3: I
    let br_idx = usize::from(b[2] >> 4);
    let sr_idx = usize::from((b[2] >> 2) & 0b11);
    let padding = usize::from((b[2] >> 1) & 1);
    let mode = b[3] >> 6;
    if version == 1 || layer == 0 || br_idx == 0 || br_idx == 15 || sr_idx == 3 {
        return None; // reserved values; free format is not supported
    }
    let mpeg1 = version == 3;
    const RATES: [[u32; 3]; 3] = [
        [11_025, 12_000, 8_000],  // 2.5
        [22_050, 24_000, 16_000], // 2
        [44_100, 48_000, 32_000], // 1
    ];
    let sample_rate = match version {
        0 => RATES[0][sr_idx],
        2 => RATES[1][sr_idx],
        _ => RATES[2][sr_idx],
    };
    const BR_V1: [[u32; 15]; 3] = [
        [
            0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
        ], // L1
        [
            0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
        ], // L2
        [
            0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
        ], // L3
    ];
    const BR_V2: [[u32; 15]; 2] = [
        [
            0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
        ], // L1
        [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160], // L2, L3
    ];
    let kbps = match (mpeg1, layer) {
        (true, 3) => BR_V1[0][br_idx],
        (true, 2) => BR_V1[1][br_idx],
        (true, _) => BR_V1[2][br_idx],
        (false, 3) => BR_V2[0][br_idx],
        (false, _) => BR_V2[1][br_idx],
    };
    let bps = kbps as usize * 1000;
    let sr = sample_rate as usize;
    let (len, samples) = match layer {
        3 => ((12 * bps / sr + padding) * 4, 384),
        2 => (144 * bps / sr + padding, 1152),
        _ if mpeg1 => (144 * bps / sr + padding, 1152),
        _ => (72 * bps / sr + padding, 576),
    };
    if len < 4 {
        return None;
    }
    Some(Header {
        len,
        samples,
        sample_rate,
        channels: if mode == 3 { 1 } else { 2 },
    })
}

/// Sample rates of the ADTS sampling-frequency index.
pub(crate) const ADTS_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// The 7-byte ADTS header (MPEG-4, AAC-LC, no CRC, one raw data block) of a frame of
/// `frame_len` bytes in all (header included), for wrapping raw AAC access units (from MP4, say)
/// as ADTS frames. `None` for a rate ADTS cannot express, more than 7 channels, or a length
/// outside 8..=8191 bytes.
pub fn adts_header(frame_len: usize, sample_rate: u32, channels: u8) -> Option<[u8; 7]> {
    let sr = ADTS_RATES.iter().position(|&r| r == sample_rate)? as u8;
    if channels > 7 || !(8..=8191).contains(&frame_len) {
        return None;
    }
    let len = frame_len as u16;
    Some([
        0xFF,
        0xF1,
        (1 << 6) | (sr << 2) | (channels >> 2),
        ((channels & 3) << 6) | (len >> 11) as u8,
        (len >> 3) as u8,
        ((len as u8 & 0x07) << 5) | 0x1F,
        0xFC,
    ])
}

/// Parses an ADTS header.
fn parse_adts(b: &[u8]) -> Option<Header> {
    if b.len() < 7 || b[0] != 0xFF || b[1] & 0xF6 != 0xF0 {
        return None; // sync 0xFFF, layer 00
    }
    let protection_absent = b[1] & 1 == 1;
    let sr_idx = usize::from((b[2] >> 2) & 0x0F);
    let sample_rate = *ADTS_RATES.get(sr_idx)?;
    let channels = ((b[2] & 1) << 2) | (b[3] >> 6);
    let len = (usize::from(b[3] & 0x03) << 11) | (usize::from(b[4]) << 3) | usize::from(b[5] >> 5);
    let header_len = if protection_absent { 7 } else { 9 };
    if len <= header_len {
        return None;
    }
    let blocks = u32::from(b[6] & 0x03) + 1;
    Some(Header {
        len,
        samples: 1024 * blocks,
        sample_rate,
        channels,
    })
}

/// The Ogg page checksum: CRC-32 with polynomial 0x04C11DB7, no reflection, zero initial value,
/// computed with the CRC field itself zeroed.
fn ogg_crc(page: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut r = (i as u32) << 24;
            for _ in 0..8 {
                r = if r & 0x8000_0000 != 0 {
                    (r << 1) ^ 0x04C1_1DB7
                } else {
                    r << 1
                };
            }
            *e = r;
        }
        t
    });
    let mut crc = 0u32;
    for (i, &byte) in page.iter().enumerate() {
        let byte = if (22..26).contains(&i) { 0 } else { byte };
        crc = (crc << 8) ^ table[usize::from(((crc >> 24) as u8) ^ byte)];
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal MPEG-1 layer III 128 kbit/s 44.1 kHz frame (417 bytes, no padding).
    pub(crate) fn mp3_frame(fill: u8) -> Vec<u8> {
        let mut f = vec![fill; 417];
        f[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
        f
    }

    fn adts_frame(len: usize) -> Vec<u8> {
        let mut f = vec![0x21u8; len];
        f[..7].copy_from_slice(&adts_header(len, 44_100, 2).expect("a valid header"));
        f
    }

    fn drain(s: &mut FrameSplitter) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = s.next_frame().expect("valid stream") {
            out.push(f);
        }
        out
    }

    #[test]
    fn mpeg_frames_split_whatever_the_chunking() {
        let mut stream = b"ID3\x04\x00\x00\x00\x00\x00\x05hello".to_vec();
        for i in 0..10 {
            stream.extend(mp3_frame(i));
        }
        for chunk in [1usize, 7, 100, 5000] {
            let mut s = FrameSplitter::new(FrameFormat::Mpeg, SplitterConfig::default());
            let mut frames = Vec::new();
            for c in stream.chunks(chunk) {
                s.push(c);
                frames.extend(drain(&mut s));
            }
            s.finish();
            frames.extend(drain(&mut s));
            assert_eq!(frames.len(), 10, "chunk {chunk}");
            assert!(
                frames
                    .iter()
                    .all(|f| f.data.len() == 417 && f.samples == 1152)
            );
            assert_eq!(frames[3].data[4], 3);
            assert_eq!(s.stats().skipped_bytes, 15);
        }
    }

    #[test]
    fn junk_between_frames_is_skipped_and_counted() {
        let mut stream = mp3_frame(0);
        stream.extend(mp3_frame(1));
        stream.extend([0xFF, 0xFB, 0x00, 0x13, 0x37]); // a false sync
        stream.extend(mp3_frame(2));
        stream.extend(mp3_frame(3));
        let mut s = FrameSplitter::new(FrameFormat::Mpeg, SplitterConfig::default());
        s.push(&stream);
        s.finish();
        let frames = drain(&mut s);
        assert_eq!(frames.len(), 4);
        assert_eq!(s.stats().skipped_bytes, 5);
    }

    #[test]
    fn adts_frames_and_garbage_limit() {
        let mut stream = Vec::new();
        for len in [200usize, 371, 9, 512] {
            stream.extend(adts_frame(len));
        }
        let mut s = FrameSplitter::new(FrameFormat::Adts, SplitterConfig::default());
        s.push(&stream);
        s.finish();
        let frames = drain(&mut s);
        assert_eq!(
            frames.iter().map(|f| f.data.len()).collect::<Vec<_>>(),
            [200, 371, 9, 512]
        );
        assert!(
            frames
                .iter()
                .all(|f| f.sample_rate == 44_100 && f.channels == 2)
        );

        let mut s = FrameSplitter::new(FrameFormat::Adts, SplitterConfig { max_buffer: 1000 });
        s.push(&[0x42; 1500]);
        // Garbage with no sync byte is dropped as it comes; a buffer that keeps syncing falsely is
        // dropped at the limit. Either way memory stays bounded and nothing is returned.
        let r = s.next_frame();
        assert!(matches!(r, Ok(None) | Err(FrameError::NoSync { .. })));
        assert!(s.buffered() <= 1000);
    }

    #[test]
    fn adts_headers_round_trip_and_refuse_what_adts_cannot_say() {
        let h = adts_header(300, 48_000, 1).expect("valid");
        let p = parse_adts(&h).expect("parses");
        assert_eq!(
            (p.len, p.sample_rate, p.channels, p.samples),
            (300, 48_000, 1, 1024)
        );
        assert_eq!(adts_header(300, 44_000, 2), None);
        assert_eq!(adts_header(9000, 44_100, 2), None);
        assert_eq!(adts_header(300, 44_100, 8), None);
    }

    #[test]
    fn truncated_last_frame_is_dropped() {
        let mut stream = mp3_frame(0);
        stream.extend(mp3_frame(1));
        stream.extend(&mp3_frame(2)[..100]);
        let mut s = FrameSplitter::new(FrameFormat::Mpeg, SplitterConfig::default());
        s.push(&stream);
        s.finish();
        assert_eq!(drain(&mut s).len(), 2);
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn ogg_crc_of_a_known_page() {
        // Build a page, compute its CRC, store it, and check the splitter accepts it and rejects
        // a corrupted copy.
        let mut page = b"OggS\x00\x02".to_vec();
        page.extend(0i64.to_le_bytes());
        page.extend(7u32.to_le_bytes());
        page.extend(0u32.to_le_bytes());
        page.extend([0, 0, 0, 0, 1, 30]);
        let mut id = b"\x01vorbis".to_vec();
        id.extend(0u32.to_le_bytes());
        id.push(2);
        id.extend(44_100u32.to_le_bytes());
        id.extend([0u8; 30 - 16]);
        page.extend(&id);
        let crc = ogg_crc(&page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        let mut s = FrameSplitter::new(FrameFormat::Ogg, SplitterConfig::default());
        s.push(&page);
        let f = s.next_frame().expect("valid").expect("a page");
        assert_eq!(
            (f.kind, f.sample_rate, f.channels),
            (FrameKind::Header, 44_100, 2)
        );
        let mut bad = page.clone();
        bad[40] ^= 1;
        let mut s = FrameSplitter::new(FrameFormat::Ogg, SplitterConfig::default());
        s.push(&bad);
        s.finish();
        assert_eq!(s.next_frame(), Ok(None));
    }

    #[test]
    fn content_types() {
        assert_eq!(
            FrameFormat::from_content_type("audio/mpeg; charset=x"),
            Some(FrameFormat::Mpeg)
        );
        assert_eq!(
            FrameFormat::from_content_type("AUDIO/AAC"),
            Some(FrameFormat::Adts)
        );
        assert_eq!(
            FrameFormat::from_content_type("audio/ogg"),
            Some(FrameFormat::Ogg)
        );
        assert_eq!(FrameFormat::from_content_type("text/html"), None);
    }
}
