//! FLAC encoder: flacenc, driven one frame at a time so memory stays constant.
//!
//! flacenc's whole-stream API keeps every encoded frame in memory until the end (337 MB for a
//! 240 s track); here each block of [`BLOCK_SIZE`] frames is encoded and written out at once,
//! and only the STREAMINFO figures (frame sizes, sample count, MD5) are carried along.
//!
//! Output: `fLaC`, a STREAMINFO block with total samples 0 and MD5 zero while streaming (both
//! mean "unknown" and are legal), a VORBIS_COMMENT block with a vendor string and the tags,
//! then the frames. After [`Encoder::finish`], [`Encoder::header_patch`] gives the complete
//! STREAMINFO block (at byte offset 4) for outputs that can be rewritten.
//!
//! flacenc is used without its `par` feature, so nothing here starts a thread.

use std::fmt;

use bytes::BytesMut;
use flacenc::bitsink::MemSink;
use flacenc::component::{BitRepr, StreamInfo};
use flacenc::config;
use flacenc::error::{Verified, Verify};
use flacenc::source::{Context, Fill, FrameBuf};

use crate::encode::{Encoder, EncoderConfig, HeaderPatch, check_spec};
use crate::error::{AudioError, Result};
use crate::format::{AudioSpec, OutputFormat};
use crate::metadata::Tags;
use crate::pcm::{PcmBuffer, f32_to_int};

/// Frames per FLAC frame (block), the reference encoder's size for levels 3 and up.
pub const BLOCK_SIZE: usize = 4096;
/// Longest tag value written (longer ones are cut at a character boundary), so the
/// VORBIS_COMMENT block always fits FLAC's 24-bit block length.
const MAX_TAG_BYTES: usize = 64 * 1024;
/// Length of a STREAMINFO block body.
const STREAMINFO_LEN: usize = 34;
/// The vendor string of the VORBIS_COMMENT block.
const VENDOR: &str = concat!("veza-audio ", env!("CARGO_PKG_VERSION"), " (flacenc 0.5)");

/// FLAC encoder (16- or 24-bit, 1 to 8 channels, block size 4096).
///
/// Compression levels map to flacenc settings as follows (the block size is always 4096;
/// flacenc's LPC order is a fixed order, not a search limit, and it always computes the
/// mid/side signal of stereo input, whatever the stereo settings):
///
/// | level | stereo decorrelation          | prediction                                        |
/// |-------|-------------------------------|---------------------------------------------------|
/// | 0     | independent channels          | fixed predictors only                             |
/// | 1     | independent or mid/side       | fixed predictors only                             |
/// | 2     | best of all four modes        | fixed predictors only                             |
/// | 3     | independent channels          | fixed, or LPC of order 6                          |
/// | 4     | independent or mid/side       | fixed, or LPC of order 8                          |
/// | 5     | best of all four modes        | fixed, or LPC of order 10 (flacenc's default)     |
/// | 6     | best of all four modes        | fixed, or LPC of order 12                         |
/// | 7, 8  | best of all four modes        | LPC order 12; fixed order chosen by exact bit count |
///
/// flacenc has no further search to enable, so level 8 equals level 7. LPC orders stay at 12
/// or below, inside FLAC's streamable subset.
pub struct FlacEncoder {
    spec: AudioSpec,
    bits: u32,
    config: Verified<config::Encoder>,
    stream_info: StreamInfo,
    /// The frame buffer flacenc encodes from, and the running MD5 and sample count.
    fill: (FrameBuf, Context),
    /// Interleaved integer samples of the block being gathered (capacity one block).
    pending: Vec<i32>,
    /// Reused bit sink each frame is written into.
    sink: MemSink<u8>,
    /// `fLaC`, STREAMINFO (streaming form) and VORBIS_COMMENT.
    header: Vec<u8>,
    header_written: bool,
    min_frame_bytes: usize,
    max_frame_bytes: usize,
    frames_in: u64,
    finished: bool,
}

impl fmt::Debug for FlacEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlacEncoder")
            .field("spec", &self.spec)
            .field("bits", &self.bits)
            .field("frames_in", &self.frames_in)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// flacenc settings for a compression level (see [`FlacEncoder`]).
fn level_config(level: u8) -> Result<config::Encoder> {
    if level > 8 {
        return Err(AudioError::config(format!(
            "FLAC level must be 0 to 8, not {level}"
        )));
    }
    let mut c = config::Encoder::default();
    c.block_size = BLOCK_SIZE;
    c.multithread = false;
    let (left_right_side, mid_side) = match level {
        0 | 3 => (false, false),
        1 | 4 => (false, true),
        _ => (true, true),
    };
    c.stereo_coding.use_leftside = left_right_side;
    c.stereo_coding.use_rightside = left_right_side;
    c.stereo_coding.use_midside = mid_side;
    match level {
        0..=2 => c.subframe_coding.use_lpc = false,
        3 => c.subframe_coding.qlpc.lpc_order = 6,
        4 => c.subframe_coding.qlpc.lpc_order = 8,
        5 => c.subframe_coding.qlpc.lpc_order = 10,
        6 => c.subframe_coding.qlpc.lpc_order = 12,
        _ => {
            c.subframe_coding.qlpc.lpc_order = 12;
            c.subframe_coding.fixed.order_sel = config::OrderSel::BitCount;
        }
    }
    Ok(c)
}

impl FlacEncoder {
    /// Makes the encoder for `config.spec` at `config.bits_per_sample` (16 or 24) and
    /// `config.flac_level`, with `config.tags` in a VORBIS_COMMENT block. Buffers for one block
    /// are allocated here and reused.
    ///
    /// # Errors
    /// [`AudioError::InvalidConfig`] for a level above 8, other bit depths, more than 8
    /// channels, or a sample rate FLAC cannot store (above 655,350 Hz).
    pub fn new(config: &EncoderConfig) -> Result<Self> {
        let spec = config.spec;
        let bits = config.bits_per_sample;
        if bits != 16 && bits != 24 {
            return Err(AudioError::config(format!(
                "FLAC bits per sample must be 16 or 24, not {bits}"
            )));
        }
        let channels = usize::from(spec.channels);
        if !(1..=8).contains(&channels) {
            return Err(AudioError::config(format!(
                "FLAC supports 1 to 8 channels, not {channels}"
            )));
        }
        let flac_config = level_config(config.flac_level)?
            .into_verified()
            .map_err(|(_, e)| AudioError::config(format!("FLAC settings: {e}")))?;
        let rate = spec.sample_rate.hz() as usize;
        let stream_info = StreamInfo::new(rate, channels, usize::from(bits)).map_err(|e| {
            AudioError::config(format!("FLAC cannot store {}: {e}", spec.sample_rate))
        })?;
        let framebuf = FrameBuf::with_size(channels, BLOCK_SIZE)
            .map_err(|e| AudioError::encoder("flac", e))?;

        let mut enc = FlacEncoder {
            spec,
            bits: u32::from(bits),
            config: flac_config,
            stream_info,
            fill: (framebuf, Context::new(usize::from(bits), channels)),
            pending: Vec::with_capacity(BLOCK_SIZE * channels),
            sink: MemSink::with_capacity(BLOCK_SIZE * channels * usize::from(bits) + 1024),
            header: Vec::new(),
            header_written: false,
            min_frame_bytes: 0,
            max_frame_bytes: 0,
            frames_in: 0,
            finished: false,
        };
        let mut header = b"fLaC".to_vec();
        header.extend_from_slice(&streaminfo_block(&enc.stream_info_now(false)?)?);
        push_vorbis_comment(&mut header, &config.tags);
        enc.header = header;
        Ok(enc)
    }

    /// STREAMINFO with what is known so far; `complete` puts in the final frame sizes, sample
    /// count and MD5, otherwise they are left unknown (0).
    fn stream_info_now(&self, complete: bool) -> Result<StreamInfo> {
        let mut info = self.stream_info.clone();
        let err = |e: flacenc::error::VerifyError| AudioError::encoder("flac", e);
        info.set_block_sizes(BLOCK_SIZE, BLOCK_SIZE).map_err(err)?;
        if complete {
            info.set_frame_sizes(self.min_frame_bytes, self.max_frame_bytes)
                .map_err(err)?;
            // 36 bits hold the sample count; past that (13 days at 48 kHz) it stays unknown.
            let total = if self.frames_in < (1 << 36) {
                self.frames_in
            } else {
                0
            };
            info.set_total_samples(usize::try_from(total).unwrap_or(0));
            info.set_md5_digest(&self.fill.1.md5_digest());
        } else {
            info.set_frame_sizes(0, 0).map_err(err)?;
        }
        Ok(info)
    }

    fn write_header_once(&mut self, out: &mut BytesMut) {
        if !self.header_written {
            out.extend_from_slice(&self.header);
            self.header_written = true;
        }
    }

    /// Encodes the gathered samples (one block, or the shorter last one) as a frame.
    fn flush_block(&mut self, out: &mut BytesMut) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.fill
            .fill_interleaved(&self.pending)
            .map_err(|e| AudioError::encoder("flac", e))?;
        self.pending.clear();
        let frame_number = self
            .fill
            .1
            .current_frame_number()
            .expect("a block was just filled, so there is a current frame");
        let frame = flacenc::encode_fixed_size_frame(
            &self.config,
            &self.fill.0,
            frame_number,
            &self.stream_info,
        )
        .map_err(|e| AudioError::encoder("flac", e))?;
        self.sink.clear();
        frame
            .write(&mut self.sink)
            .map_err(|e| AudioError::encoder("flac", e))?;
        let bytes = self.sink.as_slice();
        let n = bytes.len();
        self.min_frame_bytes = if self.min_frame_bytes == 0 {
            n
        } else {
            self.min_frame_bytes.min(n)
        };
        self.max_frame_bytes = self.max_frame_bytes.max(n);
        out.extend_from_slice(bytes);
        Ok(())
    }
}

impl Encoder for FlacEncoder {
    fn format(&self) -> OutputFormat {
        OutputFormat::Flac
    }

    fn spec(&self) -> AudioSpec {
        self.spec
    }

    /// Converts to integers, and encodes and appends every completed 4096-frame block.
    /// Allocates only to grow `out` (and what flacenc allocates per frame).
    fn encode(&mut self, pcm: &PcmBuffer, out: &mut BytesMut) -> Result<()> {
        if self.finished {
            return Err(AudioError::InvalidState("encode after finish"));
        }
        check_spec(self.spec, pcm)?;
        self.write_header_once(out);
        let planes = pcm.planes();
        // The shortest plane bounds the frames (planes_mut lets a caller break equal lengths).
        let frames = planes.iter().map(Vec::len).min().unwrap_or(0);
        let channels = planes.len();
        let mut i = 0;
        while i < frames {
            let room = BLOCK_SIZE - self.pending.len() / channels;
            let end = frames.min(i + room);
            for j in i..end {
                for p in planes {
                    self.pending.push(f32_to_int(p[j], self.bits));
                }
            }
            i = end;
            if self.pending.len() == BLOCK_SIZE * channels {
                self.flush_block(out)?;
            }
        }
        self.frames_in += frames as u64;
        Ok(())
    }

    /// Encodes the last, shorter block.
    fn finish(&mut self, out: &mut BytesMut) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.write_header_once(out);
        self.flush_block(out)?;
        self.finished = true;
        Ok(())
    }

    /// The complete STREAMINFO block (header and body, 38 bytes) at offset 4.
    fn header_patch(&self) -> Option<HeaderPatch> {
        if !self.finished {
            return None;
        }
        let info = self.stream_info_now(true).ok()?;
        let bytes = streaminfo_block(&info).ok()?;
        Some(HeaderPatch { offset: 4, bytes })
    }

    fn frames_in(&self) -> u64 {
        self.frames_in
    }
}

/// The STREAMINFO metadata block: 4-byte block header (type 0, not last) and 34-byte body.
fn streaminfo_block(info: &StreamInfo) -> Result<Vec<u8>> {
    let mut sink = MemSink::<u8>::with_capacity(STREAMINFO_LEN * 8);
    info.write(&mut sink)
        .map_err(|e| AudioError::encoder("flac", e))?;
    let body = sink.as_slice();
    if body.len() != STREAMINFO_LEN {
        return Err(AudioError::encoder("flac", "STREAMINFO is not 34 bytes"));
    }
    let mut block = vec![0u8, 0, 0, STREAMINFO_LEN as u8];
    block.extend_from_slice(body);
    Ok(block)
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Appends the VORBIS_COMMENT block (the last metadata block) with the vendor and `tags`.
fn push_vorbis_comment(out: &mut Vec<u8>, tags: &Tags) {
    let mut body = Vec::new();
    body.extend_from_slice(&(VENDOR.len() as u32).to_le_bytes());
    body.extend_from_slice(VENDOR.as_bytes());
    body.extend_from_slice(&(tags.pairs().count() as u32).to_le_bytes());
    for (key, value) in tags.pairs() {
        let value = truncate_utf8(value, MAX_TAG_BYTES);
        body.extend_from_slice(&((key.len() + 1 + value.len()) as u32).to_le_bytes());
        body.extend_from_slice(key.as_bytes());
        body.push(b'=');
        body.extend_from_slice(value.as_bytes());
    }
    // 8 tags of at most 64 KiB each: far below the 24-bit block length.
    let len = body.len() as u32;
    out.push(0x80 | 4); // last metadata block, type VORBIS_COMMENT
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::testutil::{
        apply_patch, assert_sine, decode, encode_in_blocks, ffprobe, sine,
    };

    fn config(rate: u32, channels: u16, bits: u8, level: u8) -> EncoderConfig {
        let mut c = EncoderConfig::new(OutputFormat::Flac, AudioSpec::new(rate, channels).unwrap());
        c.bits_per_sample = bits;
        c.flac_level = level;
        c
    }

    fn round_trip(cfg: &EncoderConfig, secs: f64) -> Vec<u8> {
        let pcm = sine(cfg.spec, secs);
        let mut enc = FlacEncoder::new(cfg).unwrap();
        let mut bytes = encode_in_blocks(&mut enc, &pcm, 1500).to_vec();
        assert_eq!(enc.frames_in(), pcm.frames() as u64);
        let rate = cfg.spec.sample_rate.hz();
        let channels = usize::from(cfg.spec.channels);

        // The streaming form decodes too (symphonia and ffprobe).
        assert_eq!(decode(&bytes, "flac").frames(), pcm.frames());
        let probe = ffprobe(&bytes, "flac");
        assert_eq!(probe.codec_name, "flac");

        let patch = enc.header_patch().unwrap();
        assert_eq!(patch.offset, 4);
        apply_patch(&mut bytes, &patch);
        let probe = ffprobe(&bytes, "flac");
        assert_eq!(probe.codec_name, "flac");
        assert_eq!(probe.sample_rate, rate);
        assert_eq!(probe.channels, channels);
        assert!(
            (probe.duration.unwrap() - secs).abs() < 0.001,
            "ffprobe duration {:?}",
            probe.duration
        );

        let dec = decode(&bytes, "flac");
        assert_eq!(dec.rate, rate);
        assert_eq!(dec.channels, channels);
        assert_eq!(dec.frames(), pcm.frames());
        for (plane, orig) in dec.planes.iter().zip(pcm.planes()) {
            assert_sine(plane, rate);
            // Lossless: each sample is the quantised input.
            for (a, b) in plane.iter().zip(orig) {
                let q = f32_to_int(*b, u32::from(cfg.bits_per_sample));
                let d = f32_to_int(*a, u32::from(cfg.bits_per_sample));
                assert_eq!(q, d);
            }
        }
        bytes
    }

    #[test]
    fn stereo_16_bit_44k1_with_tags_and_md5() {
        let tags = Tags {
            title: Some("Sine".into()),
            artist: Some("Veza".into()),
            track: Some("3/12".into()),
            ..Tags::default()
        };
        let cfg = config(44_100, 2, 16, 5).with_tags(tags);
        let bytes = round_trip(&cfg, 2.5);
        // The patched MD5 is that of the decoded samples (ffmpeg's md5 muxer hashes them as
        // interleaved s16le, exactly what FLAC's MD5 covers at 16 bits).
        let path = std::env::temp_dir().join(format!("veza-flac-md5-{}.flac", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let out = std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(&path)
            .args(["-f", "md5", "-"])
            .output()
            .expect("ffmpeg runs (install ffmpeg)");
        let _ = std::fs::remove_file(&path);
        let text = String::from_utf8(out.stdout).unwrap();
        let md5: String = bytes[4 + 4 + 18..4 + 4 + 34]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(text.trim(), format!("MD5={md5}"));
        assert!(bytes.windows(10).any(|w| w == b"TITLE=Sine"));
    }

    #[test]
    fn mono_24_bit_48k_level_8() {
        round_trip(&config(48_000, 1, 24, 8), 2.0);
    }

    #[test]
    fn every_level_decodes() {
        for level in 0..=8 {
            round_trip(&config(44_100, 2, 16, level), 1.1);
        }
    }

    #[test]
    fn six_channels() {
        round_trip(&config(48_000, 6, 16, 5), 1.2);
    }

    #[test]
    fn tiny_last_block_and_constant_buffers() {
        let cfg = config(44_100, 2, 16, 5);
        let full = sine(cfg.spec, 1.0);
        let planes = full
            .planes()
            .iter()
            .map(|p| p[..BLOCK_SIZE + 5].to_vec())
            .collect();
        let pcm = PcmBuffer::from_planes(cfg.spec, planes);
        let mut enc = FlacEncoder::new(&cfg).unwrap();
        let mut bytes = encode_in_blocks(&mut enc, &pcm, 7).to_vec();
        assert_eq!(enc.pending.capacity(), BLOCK_SIZE * 2);
        apply_patch(&mut bytes, &enc.header_patch().unwrap());
        assert_eq!(decode(&bytes, "flac").frames(), BLOCK_SIZE + 5);
    }

    #[test]
    fn bad_settings_are_invalid_config() {
        for cfg in [
            config(44_100, 2, 16, 9),
            config(44_100, 2, 20, 5),
            config(44_100, 9, 16, 5),
        ] {
            let err = FlacEncoder::new(&cfg).unwrap_err();
            assert!(matches!(err, AudioError::InvalidConfig(_)), "{err}");
        }
    }

    #[test]
    fn block_splits_give_identical_bytes() {
        let cfg = config(44_100, 2, 16, 5);
        let pcm = sine(cfg.spec, 1.3);
        let a = encode_in_blocks(&mut FlacEncoder::new(&cfg).unwrap(), &pcm, 4096);
        let b = encode_in_blocks(&mut FlacEncoder::new(&cfg).unwrap(), &pcm, 333);
        let c = encode_in_blocks(&mut FlacEncoder::new(&cfg).unwrap(), &pcm, 100_000);
        assert_eq!(a, b);
        assert_eq!(a, c);
    }
}
