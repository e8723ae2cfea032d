//! WAV encoder: 16- or 24-bit integer PCM in a RIFF/WAVE file, 1 to 8 channels.
//!
//! Written here rather than with a crate: the format is a fixed header and raw samples, and
//! `hound` (the usual crate) wants a `Write + Seek` sink, where this encoder streams into a
//! `BytesMut` and rewrites its header afterwards through [`Encoder::header_patch`].
//!
//! Layout: `RIFF` / `WAVE`, a `fmt ` chunk (plain PCM for mono or stereo 16-bit, otherwise
//! `WAVE_FORMAT_EXTENSIBLE` with the channel mask FLAC and Vorbis use for the same counts),
//! a `LIST`/`INFO` chunk with the tags when there are any, then `data`.
//!
//! While streaming, the RIFF and data sizes are written as `0xFFFF_FFFF`, which ffmpeg and
//! most players read as "up to the end of the file". After [`Encoder::finish`],
//! [`Encoder::header_patch`] gives the header with the real sizes. Outputs whose data does not
//! fit in 32 bits (over 4 GiB) keep `0xFFFF_FFFF` in the patch too: RF64 is not written.

use bytes::{BufMut, BytesMut};

use crate::encode::{Encoder, EncoderConfig, HeaderPatch, check_spec};
use crate::error::{AudioError, Result};
use crate::format::{AudioSpec, OutputFormat};
use crate::metadata::Tags;
use crate::pcm::{PcmBuffer, f32_to_int};

/// Size written for unknown RIFF and data sizes while streaming.
const UNKNOWN_SIZE: u32 = u32::MAX;
/// Longest tag value written (longer ones are cut at a character boundary).
const MAX_TAG_BYTES: usize = 64 * 1024;
/// The KSDATAFORMAT_SUBTYPE_PCM GUID, as stored in the file.
const SUBTYPE_PCM: [u8; 16] = [
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];

/// WAV encoder (16- or 24-bit PCM).
#[derive(Debug)]
pub struct WavEncoder {
    spec: AudioSpec,
    bits: u8,
    /// The header as written while streaming (sizes unknown).
    header: Vec<u8>,
    /// Offset of the data chunk's size field within `header`.
    data_size_at: usize,
    header_written: bool,
    data_bytes: u64,
    frames_in: u64,
    finished: bool,
}

impl WavEncoder {
    /// Makes the encoder for `config.spec` at `config.bits_per_sample` (16 or 24), with
    /// `config.tags` in a `LIST`/`INFO` chunk. Does not allocate after this call except to grow
    /// the caller's output buffer.
    ///
    /// # Errors
    /// [`AudioError::InvalidConfig`] for other bit depths or more than 8 channels.
    pub fn new(config: &EncoderConfig) -> Result<Self> {
        let spec = config.spec;
        let bits = config.bits_per_sample;
        if bits != 16 && bits != 24 {
            return Err(AudioError::config(format!(
                "WAV bits per sample must be 16 or 24, not {bits}"
            )));
        }
        if !(1..=8).contains(&spec.channels) {
            return Err(AudioError::config(format!(
                "WAV output supports 1 to 8 channels, not {}",
                spec.channels
            )));
        }
        let (header, data_size_at) = build_header(spec, bits, &config.tags);
        Ok(WavEncoder {
            spec,
            bits,
            header,
            data_size_at,
            header_written: false,
            data_bytes: 0,
            frames_in: 0,
            finished: false,
        })
    }

    fn write_header_once(&mut self, out: &mut BytesMut) {
        if !self.header_written {
            out.extend_from_slice(&self.header);
            self.header_written = true;
        }
    }
}

impl Encoder for WavEncoder {
    fn format(&self) -> OutputFormat {
        OutputFormat::Wav
    }

    fn spec(&self) -> AudioSpec {
        self.spec
    }

    /// Appends the samples as little-endian integers. Allocates only to grow `out`.
    fn encode(&mut self, pcm: &PcmBuffer, out: &mut BytesMut) -> Result<()> {
        if self.finished {
            return Err(AudioError::InvalidState("encode after finish"));
        }
        check_spec(self.spec, pcm)?;
        self.write_header_once(out);
        let planes = pcm.planes();
        // The shortest plane bounds the frames (planes_mut lets a caller break equal lengths).
        let frames = planes.iter().map(Vec::len).min().unwrap_or(0);
        let bytes_per_sample = usize::from(self.bits / 8);
        let len = frames * pcm.channels() * bytes_per_sample;
        out.reserve(len);
        match self.bits {
            16 => {
                for i in 0..frames {
                    for p in planes {
                        out.put_i16_le(f32_to_int(p[i], 16) as i16);
                    }
                }
            }
            _ => {
                for i in 0..frames {
                    for p in planes {
                        let v = f32_to_int(p[i], 24).to_le_bytes();
                        out.put_slice(&v[..3]);
                    }
                }
            }
        }
        self.data_bytes += len as u64;
        self.frames_in += frames as u64;
        Ok(())
    }

    /// Writes the header if nothing was encoded, and the pad byte RIFF needs after odd data.
    fn finish(&mut self, out: &mut BytesMut) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.write_header_once(out);
        if self.data_bytes % 2 == 1 {
            out.put_u8(0);
        }
        self.finished = true;
        Ok(())
    }

    /// The header with the real RIFF and data sizes (kept at `0xFFFF_FFFF` past 4 GiB).
    fn header_patch(&self) -> Option<HeaderPatch> {
        if !self.finished {
            return None;
        }
        let mut bytes = self.header.clone();
        let pad = self.data_bytes % 2;
        let riff = (self.header.len() as u64 - 8) + self.data_bytes + pad;
        let data = u32::try_from(self.data_bytes).unwrap_or(UNKNOWN_SIZE);
        let riff = u32::try_from(riff).unwrap_or(UNKNOWN_SIZE);
        bytes[4..8].copy_from_slice(&riff.to_le_bytes());
        bytes[self.data_size_at..self.data_size_at + 4].copy_from_slice(&data.to_le_bytes());
        Some(HeaderPatch { offset: 0, bytes })
    }

    fn frames_in(&self) -> u64 {
        self.frames_in
    }
}

/// The standard speaker mask for `channels` channels (the layouts FLAC and Vorbis define).
fn channel_mask(channels: u16) -> u32 {
    match channels {
        1 => 0x4,   // FC
        2 => 0x3,   // FL FR
        3 => 0x7,   // FL FR FC
        4 => 0x33,  // FL FR BL BR
        5 => 0x37,  // FL FR FC BL BR
        6 => 0x3F,  // FL FR FC LFE BL BR
        7 => 0x70F, // FL FR FC LFE BC SL SR
        _ => 0x63F, // FL FR FC LFE BL BR SL SR
    }
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

/// The streaming header and the offset of the data size field in it.
fn build_header(spec: AudioSpec, bits: u8, tags: &Tags) -> (Vec<u8>, usize) {
    let channels = spec.channels;
    let rate = spec.sample_rate.hz();
    let block_align = channels * u16::from(bits / 8);
    let extensible = channels > 2 || bits > 16;

    let mut h = Vec::with_capacity(128);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&UNKNOWN_SIZE.to_le_bytes());
    h.extend_from_slice(b"WAVE");

    h.extend_from_slice(b"fmt ");
    h.extend_from_slice(&(if extensible { 40u32 } else { 16 }).to_le_bytes());
    h.extend_from_slice(&(if extensible { 0xFFFEu16 } else { 1 }).to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&rate.saturating_mul(u32::from(block_align)).to_le_bytes());
    h.extend_from_slice(&block_align.to_le_bytes());
    h.extend_from_slice(&u16::from(bits).to_le_bytes());
    if extensible {
        h.extend_from_slice(&22u16.to_le_bytes()); // cbSize
        h.extend_from_slice(&u16::from(bits).to_le_bytes()); // valid bits per sample
        h.extend_from_slice(&channel_mask(channels).to_le_bytes());
        h.extend_from_slice(&SUBTYPE_PCM);
    }

    // RIFF INFO ids; album artist has no common id and is left out.
    let info: [(&[u8; 4], &Option<String>); 7] = [
        (b"INAM", &tags.title),
        (b"IART", &tags.artist),
        (b"IPRD", &tags.album),
        (b"IGNR", &tags.genre),
        (b"ICRD", &tags.date),
        (b"ITRK", &tags.track),
        (b"ICMT", &tags.comment),
    ];
    let mut list = Vec::new();
    for (id, value) in info {
        if let Some(v) = value.as_deref() {
            let v = truncate_utf8(v, MAX_TAG_BYTES);
            let size = v.len() + 1; // NUL-terminated
            list.extend_from_slice(id);
            list.extend_from_slice(&(size as u32).to_le_bytes());
            list.extend_from_slice(v.as_bytes());
            list.push(0);
            if size % 2 == 1 {
                list.push(0);
            }
        }
    }
    if !list.is_empty() {
        h.extend_from_slice(b"LIST");
        h.extend_from_slice(&((list.len() + 4) as u32).to_le_bytes());
        h.extend_from_slice(b"INFO");
        h.extend_from_slice(&list);
    }

    h.extend_from_slice(b"data");
    let data_size_at = h.len();
    h.extend_from_slice(&UNKNOWN_SIZE.to_le_bytes());
    (h, data_size_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::testutil::{
        apply_patch, assert_sine, decode, encode_in_blocks, ffprobe, sine,
    };

    fn config(rate: u32, channels: u16, bits: u8) -> EncoderConfig {
        let mut c = EncoderConfig::new(OutputFormat::Wav, AudioSpec::new(rate, channels).unwrap());
        c.bits_per_sample = bits;
        c
    }

    fn round_trip(rate: u32, channels: u16, bits: u8, tags: Tags) {
        let cfg = config(rate, channels, bits).with_tags(tags);
        let pcm = sine(cfg.spec, 2.0);
        let mut enc = WavEncoder::new(&cfg).unwrap();
        let mut bytes = encode_in_blocks(&mut enc, &pcm, 1000).to_vec();
        assert_eq!(enc.frames_in(), pcm.frames() as u64);

        // Streaming form (sizes unknown) is readable by ffprobe.
        let probe = ffprobe(&bytes, "wav");
        assert_eq!(probe.sample_rate, rate);
        assert_eq!(probe.channels, usize::from(channels));
        assert!(
            (probe.duration.unwrap() - 2.0).abs() < 0.01,
            "ffprobe duration {:?}",
            probe.duration
        );

        let patch = enc.header_patch().unwrap();
        assert_eq!(patch.offset, 0);
        apply_patch(&mut bytes, &patch);
        let probe = ffprobe(&bytes, "wav");
        let codec = if bits == 16 { "pcm_s16le" } else { "pcm_s24le" };
        assert_eq!(probe.codec_name, codec);
        assert!((probe.duration.unwrap() - 2.0).abs() < 0.001);

        let dec = decode(&bytes, "wav");
        assert_eq!(dec.rate, rate);
        assert_eq!(dec.channels, usize::from(channels));
        assert_eq!(dec.frames(), pcm.frames());
        for plane in &dec.planes {
            assert_sine(plane, rate);
        }
        // Lossless up to quantisation.
        let step = 1.0 / f32::from(1u16 << (bits - 9)) / 128.0;
        for (a, b) in dec.planes[0].iter().zip(pcm.plane(0)) {
            assert!((a - b).abs() <= step, "{a} vs {b}");
        }
    }

    #[test]
    fn stereo_16_bit_44k1() {
        round_trip(44_100, 2, 16, Tags::default());
    }

    #[test]
    fn mono_24_bit_48k_with_tags() {
        let tags = Tags {
            title: Some("Sine".into()),
            artist: Some("Veza Tést".into()),
            album: Some("Tones".into()),
            comment: Some("odd".into()),
            ..Tags::default()
        };
        round_trip(48_000, 1, 24, tags.clone());
        // The LIST chunk comes before the data chunk.
        let (h, data_at) = build_header(AudioSpec::new(48_000, 1).unwrap(), 24, &tags);
        let list = h.windows(4).position(|w| w == b"LIST").unwrap();
        assert!(list < data_at);
        assert!(h.windows(4).any(|w| w == b"INAM"));
    }

    #[test]
    fn six_channels_24_bit() {
        round_trip(48_000, 6, 24, Tags::default());
    }

    #[test]
    fn bad_settings_are_invalid_config() {
        for bits in [8, 20, 32] {
            let err = WavEncoder::new(&config(44_100, 2, bits)).unwrap_err();
            assert!(matches!(err, AudioError::InvalidConfig(_)), "{bits}: {err}");
        }
        let err = WavEncoder::new(&config(44_100, 9, 16)).unwrap_err();
        assert!(matches!(err, AudioError::InvalidConfig(_)));
    }

    #[test]
    fn block_splits_give_identical_bytes() {
        let cfg = config(44_100, 2, 24);
        let pcm = sine(cfg.spec, 1.0);
        let a = encode_in_blocks(&mut WavEncoder::new(&cfg).unwrap(), &pcm, 44_100);
        let b = encode_in_blocks(&mut WavEncoder::new(&cfg).unwrap(), &pcm, 37);
        assert_eq!(a, b);
    }

    #[test]
    fn odd_data_is_padded_and_sizes_patched() {
        let cfg = config(8_000, 1, 24);
        let pcm = sine(cfg.spec, 0.001); // 8 frames
        let mut enc = WavEncoder::new(&cfg).unwrap();
        let pcm = PcmBuffer::from_planes(cfg.spec, vec![pcm.plane(0)[..7].to_vec()]);
        let bytes = encode_in_blocks(&mut enc, &pcm, 100);
        let patch = enc.header_patch().unwrap();
        assert_eq!(bytes.len(), patch.bytes.len() + 21 + 1);
        let riff = u32::from_le_bytes(patch.bytes[4..8].try_into().unwrap());
        assert_eq!(riff as usize, bytes.len() - 8);
        let mut buf = BytesMut::new();
        assert!(enc.encode(&pcm, &mut buf).is_err());
    }
}
