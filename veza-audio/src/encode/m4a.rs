//! AAC-LC in an MPEG-4 audio file (`.m4a`), written as a fragmented MP4 so that it streams
//! with constant memory: nothing needs to be rewritten at the end.
//!
//! # Output layout
//! ```text
//! ftyp  major "M4A ", compatible "M4A " "isom" "iso5" "iso6" "mp41"
//! moov
//!   mvhd                        timescale = sample rate, duration 0 (all media is in fragments)
//!   trak
//!     tkhd                      track 1, enabled
//!     edts/elst                 one edit: skip the encoder's priming samples (gapless start)
//!     mdia
//!       mdhd                    timescale = sample rate, language "und"
//!       hdlr                    "soun"
//!       minf
//!         smhd, dinf/dref/url
//!         stbl
//!           stsd/mp4a/esds      channels, rate, AudioSpecificConfig from FDK
//!           stts stsc stsz stco (empty: the samples are in the fragments)
//!   mvex
//!     mehd                      only with `seekable_output`: total duration, patched at the end
//!     trex                      default sample duration 1024
//!   udta/meta/hdlr "mdir" + ilst   tags: ©nam ©ART ©alb aART ©gen ©day trkn ©cmt, and
//!                               ----/iTunSMPB (priming, padding, length: gapless info)
//! moof                          one per ~1 s of audio
//!   mfhd                        sequence number 1, 2, ...
//!   traf
//!     tfhd                      default-base-is-moof, default sample duration 1024
//!     tfdt                      decode time of the first sample (64-bit)
//!     trun                      data offset + one size per access unit
//! mdat                          the access units of that fragment
//! ...
//! ```
//! # Gapless playback
//! The encoder's priming ([`FdkEncoder::encoder_delay`], 1600 samples) is signalled twice:
//! by the edit list (its media time), which ISO readers use, and by an iTunes `iTunSMPB`
//! tag, which is what ffmpeg (5.1) uses for fragmented files (it ignores their edit lists).
//! In streamed output the total length is unknown when `moov` is written, so the edit list
//! duration is 0 ("to the end") and `iTunSMPB` says 0 padding and 0 samples; up to one frame
//! of padding then remains at the end. With [`EncoderConfig::seekable_output`], the
//! [`Encoder::header_patch`] rewrites `moov` (same size) with the exact length in the edit
//! list, `mehd` and `iTunSMPB`.
//!
//! ffprobe reports a fragmented file's duration as the sum of its fragments, so it shows the
//! input's length plus the priming plus the padding (3.042 s for 3 s at 44.1 kHz).
//!
//! # Why hand-written
//! The `mp4` crate (0.14) writes only non-fragmented files through a `Write + Seek` writer
//! (it seeks back to patch `mdat` and writes `moov` at the end), and its `ilst` writer knows
//! only title, year, cover and description. Fragmented audio-only output with our `esds` and
//! iTunes tags is a few fixed boxes, so a small box writer is simpler than a patched crate. The
//! box writer is [`crate::mp4`], shared with `veza-stream-core`'s fMP4 HLS segments.

use bytes::BytesMut;

use crate::encode::aac::{FRAME_LENGTH, FdkEncoder, Transport};
use crate::encode::{Encoder, EncoderConfig, HeaderPatch};
use crate::error::{AudioError, Result};
use crate::format::{AudioSpec, OutputFormat};
use crate::metadata::Tags;
use crate::pcm::PcmBuffer;

/// Longest tag value written, in bytes (longer values are cut at a character boundary).
const MAX_TAG_BYTES: usize = 64 * 1024;

use crate::mp4::{
    AudioSampleEntry, Fragment, put_u16 as u16be, put_u32 as u32be, put_u64 as u64be, write_box,
    write_fragment_header, write_full_box, write_matrix as matrix, write_mdia, write_trex,
};

/// `value` cut to at most `MAX_TAG_BYTES` at a character boundary.
fn capped(value: &str) -> &str {
    if value.len() <= MAX_TAG_BYTES {
        return value;
    }
    let mut end = MAX_TAG_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.get(..end).unwrap_or_default()
}

/// Parses `3` or `3/12` into (track, total).
fn parse_track(s: &str) -> Option<(u16, u16)> {
    let (n, total) = match s.split_once('/') {
        Some((n, t)) => (n, t.trim().parse().ok()?),
        None => (s, 0),
    };
    Some((n.trim().parse().ok()?, total))
}

/// The `iTunSMPB` value: priming, padding and sample count in fixed-width hex, as iTunes
/// writes it (fixed width, so the patched header has the same size).
fn itunsmpb(priming: u32, padding: u32, samples: u64) -> String {
    format!(
        " 00000000 {priming:08X} {padding:08X} {samples:016X} 00000000 00000000 00000000 \
         00000000 00000000 00000000 00000000 00000000"
    )
}

/// The iTunes-style `udta/meta` box with an `ilst` of the set tags and the gapless info.
fn write_udta(b: &mut Vec<u8>, tags: &Tags, gapless: &str) {
    let text_items: [(&[u8; 4], &Option<String>); 7] = [
        (b"\xa9nam", &tags.title),
        (b"\xa9ART", &tags.artist),
        (b"\xa9alb", &tags.album),
        (b"aART", &tags.album_artist),
        (b"\xa9gen", &tags.genre),
        (b"\xa9day", &tags.date),
        (b"\xa9cmt", &tags.comment),
    ];
    let track = tags.track.as_deref().and_then(parse_track);
    write_box(b, b"udta", |b| {
        write_full_box(b, b"meta", 0, 0, |b| {
            write_full_box(b, b"hdlr", 0, 0, |b| {
                u32be(b, 0);
                b.extend_from_slice(b"mdir");
                b.extend_from_slice(b"appl");
                b.extend_from_slice(&[0; 8]);
                b.push(0);
            });
            write_box(b, b"ilst", |b| {
                for (kind, value) in text_items {
                    if let Some(v) = value {
                        write_box(b, kind, |b| {
                            // Well-known type 1: UTF-8 text; locale 0.
                            write_box(b, b"data", |b| {
                                u32be(b, 1);
                                u32be(b, 0);
                                b.extend_from_slice(capped(v).as_bytes());
                            });
                        });
                    }
                }
                // Encoder delay for players that read it (ffmpeg skips the priming of
                // fragmented files only from here, not from the edit list).
                write_box(b, b"----", |b| {
                    write_full_box(b, b"mean", 0, 0, |b| {
                        b.extend_from_slice(b"com.apple.iTunes")
                    });
                    write_full_box(b, b"name", 0, 0, |b| b.extend_from_slice(b"iTunSMPB"));
                    write_box(b, b"data", |b| {
                        u32be(b, 1);
                        u32be(b, 0);
                        b.extend_from_slice(gapless.as_bytes());
                    });
                });
                if let Some((n, total)) = track {
                    write_box(b, b"trkn", |b| {
                        // Type 0 (implicit): 2 pad bytes, track, total, 2 pad bytes.
                        write_box(b, b"data", |b| {
                            u32be(b, 0);
                            u32be(b, 0);
                            u16be(b, 0);
                            u16be(b, n);
                            u16be(b, total);
                            u16be(b, 0);
                        });
                    });
                }
            });
        });
    });
}

/// What the headers say; everything but the durations is known at the start.
struct HeaderInfo<'a> {
    spec: AudioSpec,
    asc: &'a [u8],
    delay: u32,
    avg_bitrate: u32,
    tags: &'a Tags,
    seekable: bool,
    /// Media duration of all fragments (priming and padding included), 0 if unknown.
    media_duration: u64,
    /// Presentation duration (the input's length), 0 if unknown ("to the end").
    presentation_duration: u64,
}

fn write_ftyp(b: &mut Vec<u8>) {
    write_box(b, b"ftyp", |b| {
        b.extend_from_slice(b"M4A ");
        u32be(b, 0);
        for brand in [b"M4A ", b"isom", b"iso5", b"iso6", b"mp41"] {
            b.extend_from_slice(brand);
        }
    });
}

fn write_moov(b: &mut Vec<u8>, h: &HeaderInfo<'_>) {
    let rate = h.spec.sample_rate.hz();
    let channels = h.spec.channels;
    write_box(b, b"moov", |b| {
        write_full_box(b, b"mvhd", 0, 0, |b| {
            u32be(b, 0); // creation time
            u32be(b, 0); // modification time
            u32be(b, rate); // timescale
            u32be(b, 0); // duration: the media is all in fragments
            u32be(b, 0x0001_0000); // rate 1.0
            u16be(b, 0x0100); // volume 1.0
            b.extend_from_slice(&[0; 10]);
            matrix(b);
            b.extend_from_slice(&[0; 24]); // pre_defined
            u32be(b, 2); // next track ID
        });
        write_box(b, b"trak", |b| {
            write_full_box(b, b"tkhd", 0, 0x3, |b| {
                u32be(b, 0);
                u32be(b, 0);
                u32be(b, 1); // track ID
                u32be(b, 0);
                u32be(b, 0); // duration
                b.extend_from_slice(&[0; 8]);
                u16be(b, 0); // layer
                u16be(b, 0); // alternate group
                u16be(b, 0x0100); // volume
                u16be(b, 0);
                matrix(b);
                u32be(b, 0); // width
                u32be(b, 0); // height
            });
            write_box(b, b"edts", |b| {
                write_full_box(b, b"elst", 1, 0, |b| {
                    u32be(b, 1);
                    u64be(b, h.presentation_duration);
                    u64be(b, u64::from(h.delay)); // media time: skip the priming
                    u16be(b, 1); // rate 1.0
                    u16be(b, 0);
                });
            });
            let entry = AudioSampleEntry::Mp4a {
                audio_specific_config: h.asc,
                avg_bitrate: h.avg_bitrate,
            };
            write_mdia(b, rate, &entry, rate, channels);
        });
        write_box(b, b"mvex", |b| {
            if h.seekable {
                write_full_box(b, b"mehd", 1, 0, |b| u64be(b, h.presentation_duration));
            }
            write_trex(b, 1, FRAME_LENGTH);
        });
        // Padding and length are unknown until the end (0 here; exact in the header patch).
        let padding = h
            .media_duration
            .saturating_sub(h.presentation_duration + u64::from(h.delay));
        let gapless = itunsmpb(
            h.delay,
            u32::try_from(padding).unwrap_or(0),
            h.presentation_duration,
        );
        write_udta(b, h.tags, &gapless);
    });
}

/// Groups access units into `moof` + `mdat` fragments of about one second.
#[derive(Debug)]
struct Fragmenter {
    data: Vec<u8>,
    sizes: Vec<u32>,
    per_fragment: usize,
    sequence: u32,
    /// Access units already written in fragments.
    units_written: u64,
    moof: Vec<u8>,
}

impl Fragmenter {
    fn push(&mut self, unit: &[u8], out: &mut BytesMut) {
        self.data.extend_from_slice(unit);
        // An access unit is at most a few kB.
        self.sizes
            .push(u32::try_from(unit.len()).unwrap_or(u32::MAX));
        if self.sizes.len() >= self.per_fragment {
            self.flush(out);
        }
    }

    /// Writes the pending access units as one fragment.
    fn flush(&mut self, out: &mut BytesMut) {
        if self.sizes.is_empty() {
            return;
        }
        self.sequence = self.sequence.wrapping_add(1);
        let decode_time = self.units_written * u64::from(FRAME_LENGTH);
        let count = u32::try_from(self.sizes.len()).unwrap_or(u32::MAX);
        let b = &mut self.moof;
        b.clear();
        write_fragment_header(
            b,
            &Fragment {
                sequence: self.sequence,
                track_id: 1,
                base_decode_time: decode_time,
                default_sample_duration: FRAME_LENGTH,
                sample_sizes: &self.sizes,
                sample_durations: &[],
            },
        );
        out.extend_from_slice(b);
        out.extend_from_slice(&self.data);
        self.units_written += u64::from(count);
        self.data.clear();
        self.sizes.clear();
    }
}

/// Writes AAC-LC access units into the fragmented layout of the module docs: headers first,
/// then one fragment per ~1 s. [`M4aEncoder`] feeds it from its own FDK encoder; the threaded
/// transcoder feeds it units spliced from several encoders of the same settings.
#[derive(Debug)]
pub(crate) struct M4aMuxer {
    spec: AudioSpec,
    asc: Vec<u8>,
    delay: u32,
    avg_bitrate: u32,
    tags: Tags,
    seekable: bool,
    header_written: bool,
    ftyp_len: usize,
    moov_len: usize,
    frag: Fragmenter,
}

impl M4aMuxer {
    /// A muxer for the units of `fdk` (or of encoders with the same settings).
    pub(crate) fn new(fdk: &FdkEncoder, tags: Tags, seekable: bool) -> Self {
        let rate = fdk.spec().sample_rate.hz() as usize;
        let per_fragment = rate.div_ceil(FRAME_LENGTH as usize).max(1);
        M4aMuxer {
            spec: fdk.spec(),
            asc: fdk.audio_specific_config().to_vec(),
            delay: fdk.encoder_delay(),
            avg_bitrate: fdk.bitrate().map_or(0, |b| b.as_bps()),
            tags,
            seekable,
            header_written: false,
            ftyp_len: 0,
            moov_len: 0,
            frag: Fragmenter {
                data: Vec::new(),
                sizes: Vec::with_capacity(per_fragment),
                per_fragment,
                sequence: 0,
                units_written: 0,
                moof: Vec::new(),
            },
        }
    }

    fn header_info(&self, media_duration: u64, presentation_duration: u64) -> HeaderInfo<'_> {
        HeaderInfo {
            spec: self.spec,
            asc: &self.asc,
            delay: self.delay,
            avg_bitrate: self.avg_bitrate,
            tags: &self.tags,
            seekable: self.seekable,
            media_duration,
            presentation_duration,
        }
    }

    /// Writes `ftyp` and `moov` (once).
    pub(crate) fn write_header(&mut self, out: &mut BytesMut) {
        if self.header_written {
            return;
        }
        self.header_written = true;
        let mut b = Vec::with_capacity(1024);
        write_ftyp(&mut b);
        self.ftyp_len = b.len();
        write_moov(&mut b, &self.header_info(0, 0));
        self.moov_len = b.len() - self.ftyp_len;
        out.extend_from_slice(&b);
    }

    /// Adds one access unit (the headers go first).
    pub(crate) fn push(&mut self, unit: &[u8], out: &mut BytesMut) {
        self.write_header(out);
        self.frag.push(unit, out);
    }

    /// Writes the last fragment; with `seekable`, returns the `moov` with the exact lengths
    /// for an input of `frames_in` frames.
    pub(crate) fn finish(&mut self, frames_in: u64, out: &mut BytesMut) -> Option<HeaderPatch> {
        self.write_header(out);
        self.frag.flush(out);
        if !self.seekable {
            return None;
        }
        let media = self.frag.units_written * u64::from(FRAME_LENGTH);
        let mut moov = Vec::with_capacity(self.moov_len);
        write_moov(&mut moov, &self.header_info(media, frames_in));
        // Same boxes, same sizes: only duration fields differ.
        debug_assert_eq!(moov.len(), self.moov_len);
        let offset = self.ftyp_len as u64;
        (moov.len() == self.moov_len).then_some(HeaderPatch {
            offset,
            bytes: moov,
        })
    }
}

/// AAC-LC in a fragmented MPEG-4 audio file (`.m4a`). See the module docs for the layout.
///
/// The headers are written with the first output (on the first `encode` or on `finish`);
/// then one fragment per ~1 s of audio. Memory held: one fragment of encoded audio.
#[derive(Debug)]
pub struct M4aEncoder {
    fdk: FdkEncoder,
    mux: M4aMuxer,
    patch: Option<HeaderPatch>,
}

impl M4aEncoder {
    /// Makes an M4A encoder for `config` (AAC settings as for
    /// [`AacEncoder`](crate::encode::aac::AacEncoder); tags from `config.tags`).
    ///
    /// # Errors
    /// [`crate::AudioError::InvalidConfig`] for settings FDK cannot encode (see
    /// [`FdkEncoder::new`]); [`crate::AudioError::Encoder`] when FDK fails to start.
    pub fn new(config: &EncoderConfig) -> Result<Self> {
        let fdk = FdkEncoder::new(config, Transport::Raw)?;
        let mux = M4aMuxer::new(&fdk, config.tags.clone(), config.seekable_output);
        Ok(M4aEncoder {
            fdk,
            mux,
            patch: None,
        })
    }

    /// Priming samples the edit list skips (see [`FdkEncoder::encoder_delay`]).
    pub fn encoder_delay(&self) -> u32 {
        self.fdk.encoder_delay()
    }

    /// The underlying FDK encoder.
    pub fn fdk(&self) -> &FdkEncoder {
        &self.fdk
    }
}

impl Encoder for M4aEncoder {
    fn format(&self) -> OutputFormat {
        OutputFormat::M4a
    }

    fn spec(&self) -> AudioSpec {
        self.fdk.spec()
    }

    fn encode(&mut self, pcm: &PcmBuffer, out: &mut BytesMut) -> Result<()> {
        if self.fdk.is_finished() {
            return Err(AudioError::InvalidState("encode after finish"));
        }
        crate::encode::check_spec(self.fdk.spec(), pcm)?;
        self.mux.write_header(out);
        let mux = &mut self.mux;
        self.fdk.encode(pcm, |unit| mux.push(unit, out))
    }

    fn finish(&mut self, out: &mut BytesMut) -> Result<()> {
        if self.fdk.is_finished() {
            return Ok(());
        }
        self.mux.write_header(out);
        let mux = &mut self.mux;
        self.fdk.finish(|unit| mux.push(unit, out))?;
        self.patch = self.mux.finish(self.fdk.frames_in(), out);
        Ok(())
    }

    fn header_patch(&self) -> Option<HeaderPatch> {
        self.patch.clone()
    }

    fn frames_in(&self) -> u64 {
        self.fdk.frames_in()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::RateControl;
    use crate::encode::aac::testkit::*;
    use crate::format::Bitrate;

    const AMP: f32 = 0.501_187;

    fn tags() -> Tags {
        Tags {
            title: Some("Night Train".into()),
            artist: Some("The Vezas".into()),
            album: Some("Rails".into()),
            album_artist: Some("Various".into()),
            genre: Some("Jazz".into()),
            date: Some("2024".into()),
            track: Some("3/12".into()),
            comment: Some("ok \u{e9}t\u{e9}".into()),
        }
    }

    fn encode(
        config: &EncoderConfig,
        pcm: &PcmBuffer,
        block: usize,
    ) -> (Vec<u8>, Option<HeaderPatch>) {
        let mut enc = M4aEncoder::new(config).unwrap();
        let mut out = BytesMut::new();
        let mut part = PcmBuffer::new(pcm.spec());
        let mut pos = 0;
        while pos < pcm.frames() {
            let end = (pos + block).min(pcm.frames());
            part.clear();
            for (dst, src) in part.planes_mut().iter_mut().zip(pcm.planes()) {
                dst.extend_from_slice(&src[pos..end]);
            }
            enc.encode(&part, &mut out).unwrap();
            pos = end;
        }
        enc.finish(&mut out).unwrap();
        (out.to_vec(), enc.header_patch())
    }

    /// The payload of the first box of type `kind` in `bytes` (searched through containers).
    fn find_box<'a>(bytes: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
        let mut pos = 0;
        while pos + 8 <= bytes.len() {
            let size = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            let body = &bytes[pos + 8..pos + size];
            if &bytes[pos + 4..pos + 8] == kind {
                return Some(body);
            }
            let inner = match &bytes[pos + 4..pos + 8] {
                b"moov" | b"trak" | b"edts" | b"mdia" | b"minf" | b"stbl" | b"mvex" | b"udta"
                | b"ilst" | b"----" | b"moof" | b"traf" => Some(body),
                b"meta" => Some(&body[4..]),
                _ => None,
            };
            if let Some(found) = inner.and_then(|b| find_box(b, kind)) {
                return Some(found);
            }
            pos += size;
        }
        None
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// Encodes 3 s of a 1 kHz sine with tags; checks ffprobe's view (codec, profile, rate,
    /// channels, timing, tags), ffmpeg's and symphonia's decodes (length, tone, level).
    fn check_file(rate: u32, channels: u16, seekable: bool, name: &str) {
        let spec = AudioSpec::new(rate, channels).unwrap();
        let pcm = sine(spec, 3.0, 1000.0, AMP);
        let n = pcm.frames();
        let mut config = EncoderConfig::new(OutputFormat::M4a, spec)
            .with_rate_control(RateControl::Cbr(Bitrate::kbps(128)))
            .with_tags(tags());
        config.seekable_output = seekable;
        let (mut bytes, patch) = encode(&config, &pcm, 3000);
        let delay = 1600usize;
        let media = bytes_media_duration(&bytes);
        assert!(
            media >= (n + delay) as u64 && media < (n + delay + 1024) as u64,
            "{media}"
        );
        assert_eq!(patch.is_some(), seekable);
        if let Some(p) = patch {
            let at = p.offset as usize;
            bytes[at..at + p.bytes.len()].copy_from_slice(&p.bytes);
            // The patched moov has the exact durations and gapless info.
            let elst = find_box(&bytes, b"elst").unwrap();
            assert_eq!(u64_at(elst, 8), n as u64, "elst segment duration");
            assert_eq!(u64_at(elst, 16), delay as u64, "elst media time");
            assert_eq!(u64_at(find_box(&bytes, b"mehd").unwrap(), 4), n as u64);
            let data = find_box(find_box(&bytes, b"----").unwrap(), b"data").unwrap();
            let smpb = String::from_utf8_lossy(&data[8..]).to_string();
            let fields: Vec<u64> = smpb
                .split_whitespace()
                .map(|f| u64::from_str_radix(f, 16).unwrap())
                .collect();
            assert_eq!(
                &fields[1..4],
                &[delay as u64, media - (n + delay) as u64, n as u64]
            );
        }
        let path = temp_path(name);
        std::fs::write(&path, &bytes).unwrap();

        let probe = ffprobe(&path);
        assert_eq!(probe_value(&probe, "codec_name"), "aac");
        assert_eq!(probe_value(&probe, "profile"), "LC");
        assert_eq!(probe_value(&probe, "sample_rate"), rate.to_string());
        assert_eq!(probe_value(&probe, "channels"), channels.to_string());
        // ffmpeg 5.1 times a fragmented file by its fragments: `duration` is the media length,
        // priming included (it skips the priming when decoding, from iTunSMPB, but does not
        // subtract it here). Without the priming it is within one frame of the input.
        assert_eq!(probe_value(&probe, "duration_ts"), media.to_string());
        let duration: f64 = probe_value(&probe, "duration").parse().unwrap();
        let frame_secs = 1024.0 / f64::from(rate);
        let shown = duration - delay as f64 / f64::from(rate);
        assert!(
            shown >= 3.0 - 1e-4 && shown - 3.0 < frame_secs,
            "{duration} s"
        );
        for (key, want) in [
            ("TAG:title", "Night Train"),
            ("TAG:artist", "The Vezas"),
            ("TAG:album", "Rails"),
            ("TAG:album_artist", "Various"),
            ("TAG:genre", "Jazz"),
            ("TAG:date", "2024"),
            ("TAG:track", "3/12"),
            ("TAG:comment", "ok \u{e9}t\u{e9}"),
            ("TAG:major_brand", "M4A "),
        ] {
            assert_eq!(probe_value(&probe, key), want, "{key}");
        }

        // ffmpeg skips the priming (from iTunSMPB) and keeps up to one frame of padding.
        let ff = ffmpeg_decode(&path, rate, usize::from(channels));
        std::fs::remove_file(&path).ok();
        assert!(ff.frames() >= n, "tail lost: {} < {n}", ff.frames());
        assert!(
            ff.frames() < n + 1024,
            "priming not skipped: {}",
            ff.frames()
        );
        let rms = f64::from(AMP) / std::f64::consts::SQRT_2;
        assert_sine(&ff, 1024..n - 1024, 1000.0, rms);

        // symphonia 0.6 reads fragmented MP4 but trims nothing (its isomp4 is not gapless).
        let sy = symphonia_decode(bytes, "m4a").expect("symphonia reads the fragmented M4A");
        assert_eq!((sy.rate, sy.channels), (rate, usize::from(channels)));
        assert_eq!(sy.frames() as u64, media);
        assert_sine(&sy, delay + 1024..delay + n - 1024, 1000.0, rms);
    }

    /// Total duration of the fragments: sum of the trun sample counts times 1024.
    fn bytes_media_duration(bytes: &[u8]) -> u64 {
        let mut pos = 0;
        let mut units = 0u64;
        while pos + 8 <= bytes.len() {
            let size = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            if &bytes[pos + 4..pos + 8] == b"moof" {
                let trun = find_box(&bytes[pos..pos + size], b"trun").unwrap();
                units += u64::from(u32::from_be_bytes(trun[4..8].try_into().unwrap()));
            }
            pos += size;
        }
        assert_eq!(pos, bytes.len(), "boxes cover the file");
        units * 1024
    }

    #[test]
    fn block_splits_give_identical_files() {
        let spec = AudioSpec::new(44_100, 2).unwrap();
        let pcm = sine(spec, 2.5, 440.0, 0.3);
        let config = EncoderConfig::new(OutputFormat::M4a, spec).with_tags(tags());
        let (whole, _) = encode(&config, &pcm, usize::MAX);
        for block in [1, 441, 4096] {
            assert!(encode(&config, &pcm, block).0 == whole, "block {block}");
        }
    }

    #[test]
    fn output_streams_as_it_goes() {
        let spec = AudioSpec::new(44_100, 2).unwrap();
        let config = EncoderConfig::new(OutputFormat::M4a, spec);
        let mut enc = M4aEncoder::new(&config).unwrap();
        let mut out = BytesMut::new();
        let second = sine(spec, 1.0, 440.0, 0.3);
        enc.encode(&second, &mut out).unwrap();
        let head = out.len();
        assert!(find_box(&out, b"moov").is_some(), "header comes first");
        for _ in 0..4 {
            enc.encode(&second, &mut out).unwrap();
        }
        assert!(
            out.len() > head + 40_000,
            "fragments come before finish: {}",
            out.len()
        );
        let before = out.len();
        enc.finish(&mut out).unwrap();
        assert!(out.len() > before);
        assert!(
            enc.header_patch().is_none(),
            "no patch without seekable_output"
        );
        assert_eq!(enc.frames_in(), 5 * 44_100);
        assert!(matches!(
            enc.encode(&second, &mut out),
            Err(crate::error::AudioError::InvalidState(_))
        ));
    }

    #[test]
    fn without_tags_or_audio_the_file_is_still_valid() {
        let spec = AudioSpec::new(22_050, 1).unwrap();
        let config =
            EncoderConfig::new(OutputFormat::M4a, spec).with_rate_control(RateControl::Vbr(3.0));
        let mut enc = M4aEncoder::new(&config).unwrap();
        let mut out = BytesMut::new();
        enc.finish(&mut out).unwrap();
        let path = temp_path("empty.m4a");
        std::fs::write(&path, &out).unwrap();
        let probe = ffprobe(&path);
        assert_eq!(probe_value(&probe, "codec_name"), "aac");
        let ff = ffmpeg_decode(&path, 22_050, 1);
        std::fs::remove_file(&path).ok();
        assert!(ff.frames() < 1024, "{}", ff.frames());
    }

    #[test]
    fn high_rates_come_from_the_audio_specific_config() {
        // 96 kHz does not fit mp4a's 16.16 rate field; readers take it from the esds.
        let spec = AudioSpec::new(96_000, 2).unwrap();
        let config = EncoderConfig::new(OutputFormat::M4a, spec);
        let (bytes, _) = encode(&config, &sine(spec, 1.0, 1000.0, AMP), 9600);
        let path = temp_path("hirate.m4a");
        std::fs::write(&path, &bytes).unwrap();
        let probe = ffprobe(&path);
        assert_eq!(probe_value(&probe, "sample_rate"), "96000");
        let ff = ffmpeg_decode(&path, 96_000, 2);
        std::fs::remove_file(&path).ok();
        assert!(
            ff.frames() >= 96_000 && ff.frames() < 96_000 + 1024,
            "{}",
            ff.frames()
        );
    }

    #[test]
    fn track_numbers_parse_or_are_skipped() {
        assert_eq!(parse_track("3"), Some((3, 0)));
        assert_eq!(parse_track(" 3 / 12 "), Some((3, 12)));
        assert_eq!(parse_track("A3"), None);
        assert_eq!(parse_track("70000"), None);
        let long = "\u{e9}".repeat(MAX_TAG_BYTES);
        assert!(capped(&long).len() <= MAX_TAG_BYTES);
    }

    #[test]
    fn stereo_44k_streamed_file_reads_back() {
        check_file(44_100, 2, false, "stereo.m4a");
    }

    #[test]
    fn mono_48k_seekable_file_gets_exact_durations() {
        check_file(48_000, 1, true, "mono.m4a");
    }
}
