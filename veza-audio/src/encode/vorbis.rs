//! Ogg Vorbis encoder: aoTuV through `vorbis_rs`, 1 to 8 channels.
//!
//! Rate control:
//! - [`RateControl::Vbr`] `q` (0..=10) is Vorbis quality `q / 10`, i.e. the same number as
//!   `oggenc -q` (so `Vbr(4.0)` is `-q 4`, about 128 kbit/s stereo at 44.1 kHz). oggenc's
//!   negative qualities are not reachable.
//! - [`RateControl::Abr`] is Vorbis managed average bitrate.
//! - [`RateControl::Cbr`] is Vorbis managed bitrate with the value as a hard maximum (Vorbis
//!   has no true CBR; the average lands a little below it).
//!
//! Tags go into the Vorbis comment header. The Ogg stream serial is not random: it is an FNV-1a
//! hash of the settings (rate, channels, rate control, tags), so the same input and settings
//! give byte-identical output, and no clock or RNG is read. Two streams with identical settings
//! chained into one physical Ogg file would share a serial; this encoder writes one stream.
//!
//! `vorbis_rs` writes Ogg pages to a `Write` it owns; here that sink appends to a small shared
//! buffer, which is moved into the caller's `BytesMut` after each call (no copy when the
//! caller's buffer is empty, one copy of the new pages otherwise).

use std::fmt;
use std::io::Write;
use std::num::{NonZeroU8, NonZeroU32};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::BytesMut;
use vorbis_rs::{
    VorbisBitrateManagementStrategy, VorbisEncoder as RawEncoder, VorbisEncoderBuilder,
};

use crate::encode::{Encoder, EncoderConfig, RateControl, check_spec};
use crate::error::{AudioError, Result};
use crate::format::{AudioSpec, OutputFormat};
use crate::pcm::PcmBuffer;

/// Frames handed to the library per call (its docs suggest blocks of at most a few thousand).
const CHUNK_FRAMES: usize = 4096;
/// Longest tag value written (longer ones are cut at a character boundary).
const MAX_TAG_BYTES: usize = 64 * 1024;

/// The `Write` given to `vorbis_rs`: appends to a buffer the encoder drains after each call.
#[derive(Clone, Default)]
struct SharedSink(Arc<Mutex<BytesMut>>);

impl SharedSink {
    fn drain_into(&self, out: &mut BytesMut) {
        let mut buf = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        out.unsplit(buf.split());
    }
}

impl Write for SharedSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Owns the library encoder so it can be sent to another thread.
struct RawSend(RawEncoder<SharedSink>);

// SAFETY: `vorbis_rs::VorbisEncoder` is not `Send` only because it holds raw pointers to its
// libvorbis/libogg state. That state is heap-allocated, owned by this one value, reached only
// through `&mut self`, and uses no thread-local data, so moving it to another thread is sound.
// The sink is an `Arc<Mutex<_>>`, which is `Send`.
unsafe impl Send for RawSend {}

/// Ogg Vorbis encoder (aoTuV).
pub struct VorbisEncoder {
    spec: AudioSpec,
    raw: Option<RawSend>,
    sink: SharedSink,
    /// Input planes in Vorbis channel order: `order[i]` is the input plane of Vorbis channel i.
    order: &'static [usize],
    /// Frames waiting to make up a full [`CHUNK_FRAMES`] block, one plane per channel.
    stage: Vec<Vec<f32>>,
    frames_in: u64,
}

impl fmt::Debug for VorbisEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VorbisEncoder")
            .field("spec", &self.spec)
            .field("frames_in", &self.frames_in)
            .field("finished", &self.raw.is_none())
            .finish_non_exhaustive()
    }
}

/// FNV-1a over the settings, the Ogg stream serial.
fn stream_serial(config: &EncoderConfig) -> i32 {
    let mut h: u32 = 0x811C_9DC5;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    eat(&config.spec.sample_rate.hz().to_le_bytes());
    eat(&config.spec.channels.to_le_bytes());
    match config.rate_control {
        RateControl::Cbr(b) => {
            eat(b"cbr");
            eat(&b.as_bps().to_le_bytes());
        }
        RateControl::Abr(b) => {
            eat(b"abr");
            eat(&b.as_bps().to_le_bytes());
        }
        RateControl::Vbr(q) => {
            eat(b"vbr");
            eat(&q.to_bits().to_le_bytes());
        }
    }
    for (k, v) in config.tags.pairs() {
        eat(k.as_bytes());
        eat(v.as_bytes());
    }
    h as i32
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

fn strategy(rc: RateControl) -> Result<VorbisBitrateManagementStrategy> {
    let bitrate = |b: crate::format::Bitrate| {
        NonZeroU32::new(b.as_bps()).ok_or_else(|| AudioError::config("Vorbis bitrate of 0"))
    };
    Ok(match rc {
        RateControl::Vbr(q) => {
            if !(0.0..=10.0).contains(&q) {
                return Err(AudioError::config(format!(
                    "Vorbis quality must be 0 to 10, not {q}"
                )));
            }
            VorbisBitrateManagementStrategy::QualityVbr {
                target_quality: q / 10.0,
            }
        }
        RateControl::Abr(b) => VorbisBitrateManagementStrategy::Abr {
            average_bitrate: bitrate(b)?,
        },
        RateControl::Cbr(b) => VorbisBitrateManagementStrategy::ConstrainedAbr {
            maximum_bitrate: bitrate(b)?,
        },
    })
}

/// Vorbis channel order from the crate's (WAV/FLAC) order: entry `i` is the input plane that
/// becomes Vorbis channel `i` (Vorbis puts the centre second and the LFE last).
fn vorbis_order(channels: u16) -> &'static [usize] {
    match channels {
        1 => &[0],
        2 => &[0, 1],
        3 => &[0, 2, 1],
        4 => &[0, 1, 2, 3],
        5 => &[0, 2, 1, 3, 4],
        6 => &[0, 2, 1, 4, 5, 3],
        7 => &[0, 2, 1, 5, 6, 4, 3],
        _ => &[0, 2, 1, 6, 7, 4, 5, 3],
    }
}

/// Hands one block to the library. Blocks are always [`CHUNK_FRAMES`] long except the last, so
/// the output does not depend on how the caller split its input (aoTuV's output does).
fn feed(raw: &mut RawSend, views: &[&[f32]]) -> Result<()> {
    raw.0
        .encode_audio_block(views)
        .map_err(|e| AudioError::encoder("vorbis", e))
}

/// Feeds the staged planes (in Vorbis order) and empties them.
fn feed_stage(raw: &mut RawSend, stage: &mut [Vec<f32>], order: &[usize]) -> Result<()> {
    let mut views: [&[f32]; 8] = [&[]; 8];
    for (v, &src) in views.iter_mut().zip(order) {
        *v = stage[src].as_slice();
    }
    feed(raw, &views[..order.len()])?;
    for p in stage.iter_mut() {
        p.clear();
    }
    Ok(())
}

impl VorbisEncoder {
    /// Makes the encoder for `config.spec` with `config.rate_control` and `config.tags`, and
    /// prepares the three Vorbis header packets (written with the first output).
    ///
    /// # Errors
    /// [`AudioError::InvalidConfig`] for more than 8 channels, a quality outside 0..=10, or a
    /// rate/channels/bitrate combination aoTuV has no mode for.
    pub fn new(config: &EncoderConfig) -> Result<Self> {
        let spec = config.spec;
        if !(1..=8).contains(&spec.channels) {
            return Err(AudioError::config(format!(
                "Vorbis output supports 1 to 8 channels, not {}",
                spec.channels
            )));
        }
        let strategy = strategy(config.rate_control)?;
        let rate = NonZeroU32::new(spec.sample_rate.hz()).expect("SampleRate is never 0");
        let channels = u8::try_from(spec.channels)
            .ok()
            .and_then(NonZeroU8::new)
            .expect("checked: 1 to 8 channels");
        let sink = SharedSink::default();
        let mut builder = VorbisEncoderBuilder::new_with_serial(
            rate,
            channels,
            sink.clone(),
            stream_serial(config),
        );
        builder.bitrate_management_strategy(strategy);
        for (key, value) in config.tags.pairs() {
            builder
                .comment_tag(key, truncate_utf8(value, MAX_TAG_BYTES))
                .map_err(|e| AudioError::config(format!("Vorbis comment {key}: {e}")))?;
        }
        let raw = builder.build().map_err(|e| {
            AudioError::config(format!(
                "Vorbis cannot encode {} ch at {} with {:?}: {e}",
                spec.channels, spec.sample_rate, config.rate_control
            ))
        })?;
        let order = vorbis_order(spec.channels);
        let stage = (0..spec.channels)
            .map(|_| Vec::with_capacity(CHUNK_FRAMES))
            .collect();
        Ok(VorbisEncoder {
            spec,
            raw: Some(RawSend(raw)),
            sink,
            order,
            stage,
            frames_in: 0,
        })
    }
}

impl Encoder for VorbisEncoder {
    fn format(&self) -> OutputFormat {
        OutputFormat::Ogg
    }

    fn spec(&self) -> AudioSpec {
        self.spec
    }

    /// Encodes `pcm` in blocks of 4096 frames (a shorter tail waits in a reused buffer) and
    /// appends the Ogg pages that are complete (the first call also appends the header pages).
    /// Channels are reordered from WAV/FLAC order to Vorbis order without copying.
    fn encode(&mut self, pcm: &PcmBuffer, out: &mut BytesMut) -> Result<()> {
        let Some(raw) = self.raw.as_mut() else {
            return Err(AudioError::InvalidState("encode after finish"));
        };
        check_spec(self.spec, pcm)?;
        let planes = pcm.planes();
        // The shortest plane bounds the frames (planes_mut lets a caller break equal lengths).
        let frames = planes.iter().map(Vec::len).min().unwrap_or(0);
        let mut i = 0;
        while i < frames {
            let staged = self.stage.first().map_or(0, Vec::len);
            if staged == 0 && frames - i >= CHUNK_FRAMES {
                // A whole block straight from the caller's planes.
                let end = i + CHUNK_FRAMES;
                let mut views: [&[f32]; 8] = [&[]; 8];
                for (v, &src) in views.iter_mut().zip(self.order) {
                    *v = &planes[src][i..end];
                }
                feed(raw, &views[..self.order.len()])?;
                i = end;
            } else {
                let end = frames.min(i + CHUNK_FRAMES - staged);
                for (dst, p) in self.stage.iter_mut().zip(planes) {
                    dst.extend_from_slice(&p[i..end]);
                }
                i = end;
                if self.stage.first().map_or(0, Vec::len) == CHUNK_FRAMES {
                    feed_stage(raw, &mut self.stage, self.order)?;
                }
            }
        }
        self.frames_in += frames as u64;
        self.sink.drain_into(out);
        Ok(())
    }

    /// Ends the stream: the last packets and the end-of-stream page.
    fn finish(&mut self, out: &mut BytesMut) -> Result<()> {
        if let Some(mut raw) = self.raw.take() {
            if self.stage.first().is_some_and(|p| !p.is_empty()) {
                feed_stage(&mut raw, &mut self.stage, self.order)?;
            }
            raw.0
                .finish()
                .map_err(|e| AudioError::encoder("vorbis", e))?;
        }
        self.sink.drain_into(out);
        Ok(())
    }

    fn frames_in(&self) -> u64 {
        self.frames_in
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::testutil::{assert_sine, decode, encode_in_blocks, ffprobe, sine};
    use crate::format::Bitrate;
    use crate::metadata::Tags;

    fn config(rate: u32, channels: u16, rc: RateControl) -> EncoderConfig {
        EncoderConfig::new(OutputFormat::Ogg, AudioSpec::new(rate, channels).unwrap())
            .with_rate_control(rc)
    }

    fn round_trip(cfg: &EncoderConfig, secs: f64) -> Vec<u8> {
        let pcm = sine(cfg.spec, secs);
        let mut enc = VorbisEncoder::new(cfg).unwrap();
        let bytes = encode_in_blocks(&mut enc, &pcm, 3000).to_vec();
        assert_eq!(enc.frames_in(), pcm.frames() as u64);
        let rate = cfg.spec.sample_rate.hz();
        let channels = usize::from(cfg.spec.channels);

        let dec = decode(&bytes, "ogg");
        assert_eq!(dec.rate, rate);
        assert_eq!(dec.channels, channels);
        // Ogg granule positions give the exact length; allow one Vorbis block (2048).
        assert!(
            dec.frames().abs_diff(pcm.frames()) <= 2048,
            "{} vs {}",
            dec.frames(),
            pcm.frames()
        );
        let lfe = if channels >= 6 { Some(3) } else { None };
        let mid = rate as usize / 4..pcm.frames() - rate as usize / 4;
        for (i, plane) in dec.planes.iter().enumerate() {
            if Some(i) == lfe {
                continue; // Vorbis low-passes the LFE channel: a 1 kHz tone is removed.
            }
            assert_sine(plane, rate);
            // Channels come back in their places (each test channel has its own phase).
            let dot = |o: &[f32]| -> f64 {
                plane[mid.clone()]
                    .iter()
                    .zip(&o[mid.clone()])
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum()
            };
            let best = (0..channels)
                .max_by(|&a, &b| dot(pcm.plane(a)).total_cmp(&dot(pcm.plane(b))))
                .unwrap();
            assert_eq!(best, i, "decoded channel {i} matches input channel {best}");
        }

        let probe = ffprobe(&bytes, "ogg");
        assert_eq!(probe.codec_name, "vorbis");
        assert_eq!(probe.sample_rate, rate);
        assert_eq!(probe.channels, channels);
        let d = probe.duration.unwrap();
        assert!(
            (d - secs).abs() < 2048.0 / f64::from(rate),
            "ffprobe duration {d}"
        );
        bytes
    }

    #[test]
    fn stereo_abr_44k1_with_tags() {
        let tags = Tags {
            title: Some("Sine".into()),
            artist: Some("Veza Tést".into()),
            ..Tags::default()
        };
        let cfg = config(44_100, 2, RateControl::Abr(Bitrate::kbps(128))).with_tags(tags);
        let bytes = round_trip(&cfg, 2.5);
        assert!(bytes.windows(10).any(|w| w == b"TITLE=Sine"));
    }

    #[test]
    fn mono_quality_vbr_48k() {
        round_trip(&config(48_000, 1, RateControl::Vbr(4.0)), 2.0);
    }

    #[test]
    fn stereo_cbr_48k() {
        round_trip(
            &config(48_000, 2, RateControl::Cbr(Bitrate::kbps(160))),
            2.0,
        );
    }

    #[test]
    fn multichannel_keeps_channel_order() {
        round_trip(&config(48_000, 6, RateControl::Vbr(5.0)), 1.5);
        round_trip(&config(44_100, 3, RateControl::Vbr(5.0)), 1.5);
    }

    #[test]
    fn bad_settings_are_invalid_config() {
        let bad = [
            config(44_100, 2, RateControl::Vbr(11.0)),
            config(44_100, 2, RateControl::Vbr(-1.0)),
            config(44_100, 2, RateControl::Abr(Bitrate::kbps(7))),
            config(44_100, 2, RateControl::Abr(Bitrate::kbps(9_999))),
            config(44_100, 9, RateControl::Vbr(4.0)),
        ];
        for cfg in bad {
            let err = VorbisEncoder::new(&cfg).unwrap_err();
            assert!(
                matches!(err, AudioError::InvalidConfig(_)),
                "{:?}: {err}",
                cfg.rate_control
            );
        }
    }

    #[test]
    fn block_splits_give_identical_bytes() {
        let cfg = config(44_100, 2, RateControl::Vbr(5.0));
        let pcm = sine(cfg.spec, 1.5);
        let a = encode_in_blocks(&mut VorbisEncoder::new(&cfg).unwrap(), &pcm, 100_000);
        let b = encode_in_blocks(&mut VorbisEncoder::new(&cfg).unwrap(), &pcm, 331);
        let c = encode_in_blocks(&mut VorbisEncoder::new(&cfg).unwrap(), &pcm, 4096);
        assert!(a == c, "4096-frame blocks differ");
        let first_diff = a.iter().zip(b.iter()).position(|(x, y)| x != y);
        assert!(
            a == b,
            "lengths {} and {}, first difference at {first_diff:?}",
            a.len(),
            b.len()
        );
    }

    #[test]
    fn encoder_is_send() {
        fn is_send<T: Send>() {}
        is_send::<VorbisEncoder>();
    }
}
