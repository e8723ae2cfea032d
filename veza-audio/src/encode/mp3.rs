//! MP3 encoder: LAME through `mp3lame-encoder`, mono or stereo, CBR, ABR or VBR.
//!
//! - The output sample rate is set to the input rate (LAME would otherwise resample low
//!   bitrates on its own); rates LAME cannot write are refused.
//! - Planar `f32` goes to LAME as it is (`lame_encode_buffer_ieee_float` takes one pointer per
//!   channel), and LAME writes straight into the spare capacity of the caller's `BytesMut`:
//!   no interleaving and no intermediate buffer.
//! - Tags become an ID3v2.4 tag before the first frame.
//! - With [`EncoderConfig::seekable_output`], LAME puts a placeholder frame where its info
//!   (Xing/LAME) frame goes, right after the ID3 tag; after [`Encoder::finish`],
//!   [`Encoder::header_patch`] gives the real one. With it, players and ffmpeg know the exact
//!   length and trim the encoder delay and padding (gapless playback). Pure streams get no
//!   info frame.

use std::fmt;
use std::num::NonZeroU32;

use bytes::BytesMut;
use mp3lame_encoder::{DualPcm, EncoderInput, FlushGap, Mode, MonoPcm, ffi};

use crate::encode::{Encoder, EncoderConfig, HeaderPatch, RateControl, check_spec};
use crate::error::{AudioError, Result};
use crate::format::{AudioSpec, OutputFormat};
use crate::metadata::Tags;
use crate::pcm::PcmBuffer;

/// Frames handed to LAME per call, which bounds the output reserved per call (about 17 KB).
const CHUNK_FRAMES: usize = 8192;
/// Longest tag value written (longer ones are cut at a character boundary).
const MAX_TAG_BYTES: usize = 64 * 1024;

/// Sample rates LAME writes (MPEG-1, MPEG-2 and MPEG-2.5 rates).
pub const SUPPORTED_RATES: [u32; 9] = [
    8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000,
];
/// CBR bitrates (kbit/s) of MPEG-1 Layer III (32, 44.1 and 48 kHz).
const MPEG1_KBPS: [u32; 14] = [
    32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
];
/// CBR bitrates (kbit/s) of MPEG-2 and 2.5 Layer III (24 kHz and below).
const MPEG2_KBPS: [u32; 14] = [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];

/// MP3 encoder (LAME).
///
/// Rate control: [`RateControl::Cbr`] takes a bitrate of the MPEG table for the sample rate
/// (32-320 kbit/s at 32 kHz and up, 8-160 kbit/s below); [`RateControl::Abr`] any bitrate
/// within that table's range; [`RateControl::Vbr`] `q` in 0..=10 becomes LAME's `-V (9 - q)`
/// (fractions kept; `q` from 9 to 10 all give `-V 0`, LAME's best).
pub struct Mp3Encoder {
    spec: AudioSpec,
    lame: mp3lame_encoder::Encoder,
    /// ID3v2 tag to write before the first frame (empty when there are no tags).
    id3: Vec<u8>,
    started: bool,
    info_frame: bool,
    lame_tag: Option<Vec<u8>>,
    frames_in: u64,
    finished: bool,
}

impl fmt::Debug for Mp3Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mp3Encoder")
            .field("spec", &self.spec)
            .field("id3_len", &self.id3.len())
            .field("info_frame", &self.info_frame)
            .field("frames_in", &self.frames_in)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// The CBR bitrate table for a sample rate LAME supports.
fn bitrate_table(rate: u32) -> &'static [u32] {
    if rate >= 32_000 {
        &MPEG1_KBPS
    } else {
        &MPEG2_KBPS
    }
}

fn lame_err(what: &str, e: impl fmt::Display) -> AudioError {
    AudioError::encoder("mp3", format!("{what}: {e}"))
}

/// Checks a LAME setter's return code (negative is an error).
fn check(code: std::ffi::c_int, what: &str) -> Result<()> {
    if code < 0 {
        return Err(AudioError::config(format!(
            "LAME refused {what} (code {code})"
        )));
    }
    Ok(())
}

impl Mp3Encoder {
    /// Makes the encoder for `config.spec` with `config.rate_control`,
    /// `config.mp3_algorithm_quality`, `config.tags` and `config.seekable_output`.
    ///
    /// # Errors
    /// [`AudioError::InvalidConfig`] for more than 2 channels, a sample rate LAME cannot write
    /// (resample to one of [`SUPPORTED_RATES`] first), a bitrate outside the MPEG table for the
    /// rate, a VBR quality outside 0..=10, or an algorithm quality above 9;
    /// [`AudioError::Encoder`] when LAME cannot be set up.
    pub fn new(config: &EncoderConfig) -> Result<Self> {
        let spec = config.spec;
        if spec.channels > 2 {
            return Err(AudioError::config(format!(
                "MP3 supports mono and stereo only, not {} channels (downmix first)",
                spec.channels
            )));
        }
        let rate = spec.sample_rate.hz();
        if !SUPPORTED_RATES.contains(&rate) {
            return Err(AudioError::config(format!(
                "MP3 cannot be written at {rate} Hz; resample to one of {SUPPORTED_RATES:?}"
            )));
        }
        let quality = config.mp3_algorithm_quality;
        if quality > 9 {
            return Err(AudioError::config(format!(
                "LAME algorithm quality must be 0 to 9, not {quality}"
            )));
        }
        let table = bitrate_table(rate);
        let (lo, hi) = (table[0], table[table.len() - 1]);
        match config.rate_control {
            RateControl::Cbr(b) if !table.contains(&b.as_kbps()) => {
                return Err(AudioError::config(format!(
                    "MP3 CBR at {rate} Hz takes one of {table:?} kbit/s, not {b}"
                )));
            }
            RateControl::Abr(b) if !(lo..=hi).contains(&b.as_kbps()) => {
                return Err(AudioError::config(format!(
                    "MP3 ABR at {rate} Hz takes {lo} to {hi} kbit/s, not {b}"
                )));
            }
            RateControl::Vbr(q) if !(0.0..=10.0).contains(&q) => {
                return Err(AudioError::config(format!(
                    "MP3 VBR quality must be 0 to 10, not {q}"
                )));
            }
            _ => {}
        }

        let mut b = mp3lame_encoder::Builder::new()
            .ok_or_else(|| AudioError::encoder("mp3", "LAME could not allocate its state"))?;
        let channels = u8::try_from(spec.channels).expect("checked: at most 2 channels");
        b.set_num_channels(channels)
            .map_err(|e| lame_err("channels", e))?;
        b.set_sample_rate(rate)
            .map_err(|e| lame_err("input rate", e))?;
        b.set_output_sample_rate(NonZeroU32::new(rate))
            .map_err(|e| AudioError::config(format!("LAME refused output rate {rate}: {e}")))?;
        b.set_mode(if channels == 1 {
            Mode::Mono
        } else {
            Mode::JointStereo
        })
        .map_err(|e| lame_err("mode", e))?;
        b.set_to_write_vbr_tag(config.seekable_output)
            .map_err(|e| lame_err("info frame", e))?;
        // SAFETY: the pointer is the builder's live LAME state; these setters only store
        // values in it, and the builder stays the owner.
        unsafe {
            let gfp = b.as_ptr();
            check(
                ffi::lame_set_quality(gfp, std::ffi::c_int::from(quality)),
                "quality",
            )?;
            match config.rate_control {
                RateControl::Cbr(br) => {
                    check(ffi::lame_set_VBR(gfp, ffi::vbr_mode::vbr_off), "CBR")?;
                    check(
                        ffi::lame_set_brate(gfp, br.as_kbps() as std::ffi::c_int),
                        "bitrate",
                    )?;
                }
                RateControl::Abr(br) => {
                    check(ffi::lame_set_VBR(gfp, ffi::vbr_mode::vbr_abr), "ABR")?;
                    let kbps = br.as_kbps() as std::ffi::c_int;
                    check(ffi::lame_set_VBR_mean_bitrate_kbps(gfp, kbps), "bitrate")?;
                }
                RateControl::Vbr(q) => {
                    check(ffi::lame_set_VBR(gfp, ffi::vbr_mode::vbr_mtrh), "VBR")?;
                    let v = (9.0 - q).clamp(0.0, 9.0);
                    check(ffi::lame_set_VBR_quality(gfp, v), "VBR quality")?;
                }
            }
        }
        let lame = b
            .build()
            .map_err(|e| AudioError::config(format!("LAME refused the settings: {e}")))?;
        Ok(Mp3Encoder {
            spec,
            lame,
            id3: id3v24(&config.tags),
            started: false,
            info_frame: config.seekable_output,
            lame_tag: None,
            frames_in: 0,
            finished: false,
        })
    }

    fn start(&mut self, out: &mut BytesMut) {
        if !self.started {
            out.extend_from_slice(&self.id3);
            self.started = true;
        }
    }

    /// Runs one LAME call writing into `out`'s spare capacity, after reserving `reserve` bytes.
    fn lame_into(
        &mut self,
        out: &mut BytesMut,
        reserve: usize,
        call: impl FnOnce(
            &mut mp3lame_encoder::Encoder,
            &mut [std::mem::MaybeUninit<u8>],
        ) -> std::result::Result<usize, mp3lame_encoder::EncodeError>,
    ) -> Result<()> {
        out.reserve(reserve);
        let written =
            call(&mut self.lame, out.spare_capacity_mut()).map_err(|e| lame_err("encode", e))?;
        let new_len = out.len() + written;
        assert!(
            new_len <= out.capacity(),
            "LAME reports no more bytes than it was given"
        );
        // SAFETY: LAME initialised the first `written` bytes of the spare capacity.
        unsafe { out.set_len(new_len) };
        Ok(())
    }

    fn encode_chunk(
        &mut self,
        input: impl EncoderInput,
        frames: usize,
        out: &mut BytesMut,
    ) -> Result<()> {
        self.lame_into(
            out,
            mp3lame_encoder::max_required_buffer_size(frames),
            |lame, buf| lame.encode(input, buf),
        )
    }
}

impl Encoder for Mp3Encoder {
    fn format(&self) -> OutputFormat {
        OutputFormat::Mp3
    }

    fn spec(&self) -> AudioSpec {
        self.spec
    }

    /// Encodes `pcm` in chunks of up to 8192 frames; what LAME has ready is appended. Allocates
    /// only to grow `out`.
    fn encode(&mut self, pcm: &PcmBuffer, out: &mut BytesMut) -> Result<()> {
        if self.finished {
            return Err(AudioError::InvalidState("encode after finish"));
        }
        check_spec(self.spec, pcm)?;
        self.start(out);
        let planes = pcm.planes();
        // The shortest plane bounds the frames (planes_mut lets a caller break equal lengths).
        let frames = planes.iter().map(Vec::len).min().unwrap_or(0);
        let mut i = 0;
        while i < frames {
            let end = frames.min(i + CHUNK_FRAMES);
            let n = end - i;
            match planes {
                [mono] => self.encode_chunk(MonoPcm(&mono[i..end]), n, out)?,
                [left, right] => self.encode_chunk(
                    DualPcm {
                        left: &left[i..end],
                        right: &right[i..end],
                    },
                    n,
                    out,
                )?,
                _ => {
                    return Err(AudioError::InvalidState(
                        "MP3 encoder with more than 2 planes",
                    ));
                }
            }
            i = end;
        }
        self.frames_in += frames as u64;
        Ok(())
    }

    /// Flushes LAME's last frames (padded with silence) and prepares the info frame.
    fn finish(&mut self, out: &mut BytesMut) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.start(out);
        self.lame_into(
            out,
            mp3lame_encoder::max_required_buffer_size(0),
            |lame, buf| lame.flush::<FlushGap>(buf),
        )?;
        self.finished = true;
        if self.info_frame && self.lame.lame_tag_size() > 0 {
            let mut tag = Vec::with_capacity(self.lame.lame_tag_size());
            if self.lame.lame_tag_encode_to_vec(&mut tag).is_some() {
                self.lame_tag = Some(tag);
            }
        }
        Ok(())
    }

    /// With `seekable_output`: LAME's info frame, to write over its placeholder just after the
    /// ID3 tag.
    fn header_patch(&self) -> Option<HeaderPatch> {
        let bytes = self.lame_tag.clone()?;
        Some(HeaderPatch {
            offset: self.id3.len() as u64,
            bytes,
        })
    }

    fn frames_in(&self) -> u64 {
        self.frames_in
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

/// A 28-bit size as four 7-bit bytes (ID3v2 "syncsafe" integer).
fn syncsafe(n: u32) -> [u8; 4] {
    [
        (n >> 21) as u8 & 0x7F,
        (n >> 14) as u8 & 0x7F,
        (n >> 7) as u8 & 0x7F,
        n as u8 & 0x7F,
    ]
}

/// An ID3v2.4 tag with UTF-8 text frames, or nothing when `tags` is empty.
///
/// Written here: eight text frames are a few dozen lines, where the `id3` crate brings a
/// reader, file handling and several dependencies; LAME's own ID3 writer only writes v2.3
/// with Latin-1/UTF-16 text and a fixed set of fields.
fn id3v24(tags: &Tags) -> Vec<u8> {
    if tags.is_empty() {
        return Vec::new();
    }
    let frames: [(&[u8; 4], &Option<String>); 8] = [
        (b"TIT2", &tags.title),
        (b"TPE1", &tags.artist),
        (b"TALB", &tags.album),
        (b"TPE2", &tags.album_artist),
        (b"TCON", &tags.genre),
        (b"TDRC", &tags.date),
        (b"TRCK", &tags.track),
        (b"COMM", &tags.comment),
    ];
    let mut body = Vec::new();
    for (id, value) in frames {
        let Some(value) = value.as_deref() else {
            continue;
        };
        let value = truncate_utf8(value, MAX_TAG_BYTES);
        let mut content = vec![3u8]; // UTF-8
        if id == b"COMM" {
            content.extend_from_slice(b"XXX"); // language unknown
            content.push(0); // empty description
        }
        content.extend_from_slice(value.as_bytes());
        body.extend_from_slice(id);
        body.extend_from_slice(&syncsafe(content.len() as u32));
        body.extend_from_slice(&[0, 0]); // flags
        body.extend_from_slice(&content);
    }
    // At most 8 frames of 64 KiB: well under the 28-bit limit.
    let mut tag = b"ID3\x04\x00\x00".to_vec();
    tag.extend_from_slice(&syncsafe(body.len() as u32));
    tag.extend_from_slice(&body);
    tag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::testutil::{
        apply_patch, assert_sine, decode, encode_in_blocks, ffprobe, sine,
    };
    use crate::format::Bitrate;

    fn config(rate: u32, channels: u16, rc: RateControl) -> EncoderConfig {
        EncoderConfig::new(OutputFormat::Mp3, AudioSpec::new(rate, channels).unwrap())
            .with_rate_control(rc)
    }

    /// Samples per MPEG frame at `rate`.
    fn frame_len(rate: u32) -> usize {
        if rate >= 32_000 { 1152 } else { 576 }
    }

    fn check_decoded(bytes: &[u8], cfg: &EncoderConfig, frames: usize, exact: bool) {
        let rate = cfg.spec.sample_rate.hz();
        let dec = decode(bytes, "mp3");
        assert_eq!(dec.rate, rate);
        assert_eq!(dec.channels, usize::from(cfg.spec.channels));
        let got = dec.frames();
        if exact {
            // The info frame lets the decoder trim delay and padding.
            assert!(got.abs_diff(frames) <= frame_len(rate), "{got} vs {frames}");
        } else {
            // Without it, encoder delay (576 + 529) and padding (< 2 frames) stay in.
            assert!(
                got >= frames && got <= frames + 3 * frame_len(rate),
                "{got} vs {frames}"
            );
        }
        for plane in &dec.planes {
            assert_sine(plane, rate);
        }
    }

    fn run(cfg: &EncoderConfig, secs: f64) -> (Vec<u8>, Mp3Encoder, usize) {
        let pcm = sine(cfg.spec, secs);
        let mut enc = Mp3Encoder::new(cfg).unwrap();
        let bytes = encode_in_blocks(&mut enc, &pcm, 4000).to_vec();
        assert_eq!(enc.frames_in(), pcm.frames() as u64);
        (bytes, enc, pcm.frames())
    }

    #[test]
    fn stereo_cbr_128_44k1_streaming() {
        let cfg = config(44_100, 2, RateControl::Cbr(Bitrate::kbps(128)));
        let (bytes, enc, frames) = run(&cfg, 2.5);
        assert!(enc.header_patch().is_none());
        check_decoded(&bytes, &cfg, frames, false);
        let probe = ffprobe(&bytes, "mp3");
        assert_eq!(
            (probe.codec_name.as_str(), probe.sample_rate, probe.channels),
            ("mp3", 44_100, 2)
        );
        let d = probe.duration.unwrap();
        assert!((d - 2.5).abs() < 0.1, "ffprobe duration {d}");
        // 128 kbit/s for 2.5 s, give or take a frame.
        assert!(
            (bytes.len() as i64 - 40_000).abs() < 1_000,
            "{} bytes",
            bytes.len()
        );
    }

    #[test]
    fn seekable_output_gets_info_frame_and_exact_duration() {
        let tags = Tags {
            title: Some("Sine".into()),
            artist: Some("Veza Tést".into()),
            comment: Some("a comment".into()),
            ..Tags::default()
        };
        let mut cfg = config(44_100, 2, RateControl::Vbr(5.0)).with_tags(tags);
        cfg.seekable_output = true;
        let (mut bytes, enc, frames) = run(&cfg, 2.5);
        let patch = enc.header_patch().expect("an info frame");
        assert_eq!(patch.offset, enc.id3.len() as u64);
        assert!(patch.offset > 10);
        // The placeholder is all zeros after its 4-byte header; the patch is "Info"/"Xing".
        let at = patch.offset as usize;
        assert_eq!(bytes[at], 0xFF);
        apply_patch(&mut bytes, &patch);
        assert!(
            bytes[at..at + patch.bytes.len()]
                .windows(4)
                .any(|w| w == b"Xing" || w == b"Info")
        );
        check_decoded(&bytes, &cfg, frames, true);
        let probe = ffprobe(&bytes, "mp3");
        assert_eq!(
            (probe.codec_name.as_str(), probe.sample_rate, probe.channels),
            ("mp3", 44_100, 2)
        );
        // ffprobe (ffmpeg 5.1) reports the frame count of the info frame times 1152: the input
        // plus encoder delay and padding, less than two frames over.
        let d = probe.duration.unwrap();
        assert!(
            (2.5..2.5 + 2.0 * 1152.0 / 44_100.0).contains(&d),
            "ffprobe duration {d}"
        );
        // ffmpeg decodes exactly the input length (it trims delay and padding from the tag).
        assert_eq!(ffmpeg_decoded_frames(&bytes), frames);
    }

    fn ffmpeg_decoded_frames(bytes: &[u8]) -> usize {
        let path =
            std::env::temp_dir().join(format!("veza-mp3-gapless-{}-{}.mp3", std::process::id(), {
                // Tests run in parallel: each call gets its own file.
                static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            }));
        std::fs::write(&path, bytes).unwrap();
        let out = std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(&path)
            .args(["-f", "s16le", "-ac", "1", "-"])
            .output()
            .expect("ffmpeg runs (install ffmpeg)");
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "ffmpeg failed to decode {} bytes of our MP3 ({}): {}",
            bytes.len(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout.len() / 2
    }

    #[test]
    fn mono_abr_48k() {
        // symphonia estimates the length of an MP3 without info frame from the first frame's
        // bitrate and trims the decode to it, which cuts ABR/VBR streams short; with the info
        // frame the length is exact.
        let mut cfg = config(48_000, 1, RateControl::Abr(Bitrate::kbps(96)));
        cfg.seekable_output = true;
        let (mut bytes, enc, frames) = run(&cfg, 2.0);
        apply_patch(&mut bytes, &enc.header_patch().unwrap());
        check_decoded(&bytes, &cfg, frames, true);
        assert_eq!(ffmpeg_decoded_frames(&bytes), frames);
        let probe = ffprobe(&bytes, "mp3");
        assert_eq!((probe.sample_rate, probe.channels), (48_000, 1));
    }

    #[test]
    fn low_bitrate_keeps_the_input_rate() {
        let cfg = config(44_100, 2, RateControl::Cbr(Bitrate::kbps(64)));
        let (bytes, _, frames) = run(&cfg, 2.0);
        check_decoded(&bytes, &cfg, frames, false);
        let cfg = config(22_050, 1, RateControl::Cbr(Bitrate::kbps(144)));
        let (bytes, _, frames) = run(&cfg, 2.0);
        check_decoded(&bytes, &cfg, frames, false);
    }

    #[test]
    fn id3_tag_is_read_back() {
        let tags = Tags {
            title: Some("Sine".into()),
            album_artist: Some("Various".into()),
            track: Some("3/12".into()),
            ..Tags::default()
        };
        let cfg = config(44_100, 2, RateControl::Cbr(Bitrate::kbps(128))).with_tags(tags);
        let (bytes, _, _) = run(&cfg, 1.0);
        let path = std::env::temp_dir().join(format!("veza-mp3-id3-{}.mp3", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let out = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "format_tags",
                "-of",
                "default=nw=1",
            ])
            .arg(&path)
            .output()
            .expect("ffprobe runs (install ffmpeg)");
        let _ = std::fs::remove_file(&path);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("TAG:title=Sine"), "{text}");
        assert!(text.contains("TAG:album_artist=Various"), "{text}");
        assert!(text.contains("TAG:track=3/12"), "{text}");
    }

    #[test]
    fn bad_settings_are_invalid_config() {
        let bad = [
            config(44_100, 2, RateControl::Cbr(Bitrate::kbps(7))),
            config(44_100, 2, RateControl::Cbr(Bitrate::kbps(999))),
            config(44_100, 2, RateControl::Cbr(Bitrate::kbps(144))), // MPEG-2 only
            config(44_100, 2, RateControl::Abr(Bitrate::kbps(999))),
            config(44_100, 2, RateControl::Vbr(11.0)),
            config(44_100, 2, RateControl::Vbr(f32::NAN)),
            config(44_100, 3, RateControl::Cbr(Bitrate::kbps(128))),
            config(96_000, 2, RateControl::Cbr(Bitrate::kbps(128))),
        ];
        for cfg in bad {
            let err = Mp3Encoder::new(&cfg).unwrap_err();
            assert!(
                matches!(err, AudioError::InvalidConfig(_)),
                "{:?}: {err}",
                cfg.rate_control
            );
        }
        let mut cfg = config(44_100, 2, RateControl::Cbr(Bitrate::kbps(128)));
        cfg.mp3_algorithm_quality = 10;
        assert!(matches!(
            Mp3Encoder::new(&cfg),
            Err(AudioError::InvalidConfig(_))
        ));
    }

    #[test]
    fn block_splits_give_identical_bytes() {
        let mut cfg = config(44_100, 2, RateControl::Vbr(4.0));
        cfg.seekable_output = true;
        let pcm = sine(cfg.spec, 1.5);
        let mut a_enc = Mp3Encoder::new(&cfg).unwrap();
        let a = encode_in_blocks(&mut a_enc, &pcm, 100_000);
        let mut b_enc = Mp3Encoder::new(&cfg).unwrap();
        let b = encode_in_blocks(&mut b_enc, &pcm, 517);
        assert_eq!(a, b);
        assert_eq!(a_enc.header_patch(), b_enc.header_patch());
    }
}
