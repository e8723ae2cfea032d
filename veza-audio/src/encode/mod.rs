//! Encoders: one module per format, each behind its cargo feature, all behind one trait.
//!
//! An [`Encoder`] takes planar `f32` PCM of the spec it was made for and appends encoded bytes
//! to a caller's `BytesMut`. Output is streamable as it comes: headers first, then audio.
//! Some formats can write better headers once the end is known (FLAC's STREAMINFO with the total
//! sample count and MD5, WAV's chunk sizes, MP3's LAME/Xing info frame for gapless playback);
//! when the output can be rewritten, [`EncoderConfig::seekable_output`] asks the encoder to
//! reserve room for them, and [`Encoder::header_patch`] gives the final bytes after `finish`.

use bytes::BytesMut;

use crate::error::{AudioError, Result};
use crate::format::{AudioSpec, Bitrate, OutputFormat};
use crate::metadata::Tags;
use crate::pcm::PcmBuffer;

#[cfg(feature = "aac")]
pub mod aac;
#[cfg(feature = "flac")]
pub mod flac;
#[cfg(feature = "aac")]
pub mod m4a;
#[cfg(feature = "mp3")]
pub mod mp3;
#[cfg(feature = "vorbis")]
pub mod vorbis;
#[cfg(feature = "wav")]
pub mod wav;

#[cfg(test)]
mod testutil;

/// How a lossy encoder spends bits. Lossless formats ignore it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum RateControl {
    /// Constant bitrate.
    Cbr(Bitrate),
    /// Average bitrate (MP3 ABR; Vorbis managed average; AAC CBR for FDK).
    Abr(Bitrate),
    /// Variable bitrate at a quality on a 0.0 (smallest) to 10.0 (best) scale, mapped to each
    /// encoder's own: LAME `-V (9 - q)`, Vorbis `q` (-1..10 shifted), FDK VBR modes 1 to 5.
    Vbr(f32),
}

impl RateControl {
    /// The target bitrate of CBR and ABR, `None` for VBR.
    pub fn bitrate(self) -> Option<Bitrate> {
        match self {
            RateControl::Cbr(b) | RateControl::Abr(b) => Some(b),
            RateControl::Vbr(_) => None,
        }
    }
}

/// Settings of one encoder. Build with [`EncoderConfig::new`] and adjust the public fields.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// The format to write.
    pub format: OutputFormat,
    /// The spec of the PCM that will be pushed (the output has the same rate and channels).
    pub spec: AudioSpec,
    /// Bit spending of lossy formats. Default: CBR 128 kbit/s (Vorbis: ABR 128).
    pub rate_control: RateControl,
    /// FLAC compression level 0 (fastest) to 8 (smallest). Default 5.
    pub flac_level: u8,
    /// Threads the FLAC encoder encodes frames on: 1 (the default) encodes in the caller's
    /// thread, 0 uses one per available core. Above 1, blocks are encoded a batch at a time
    /// on scoped threads (see the FLAC encoder's docs); the output bytes do not
    /// depend on it. Other formats ignore it.
    pub flac_threads: usize,
    /// Bits per sample of FLAC and WAV output: 16 or 24. Default 16.
    pub bits_per_sample: u8,
    /// LAME's algorithm quality 0 (best, slowest) to 9 (fastest). Default 3 (ffmpeg's default).
    pub mp3_algorithm_quality: u8,
    /// FDK's afterburner (better quality, about 1.6x slower). Default on.
    pub aac_afterburner: bool,
    /// Tags to write where the format has room for them.
    pub tags: Tags,
    /// The output will be written to something that can be rewritten at the start (a file):
    /// reserve room for a final header. Default false (pure streaming output).
    pub seekable_output: bool,
}

impl EncoderConfig {
    /// Defaults for `format` at `spec` (see each field).
    pub fn new(format: OutputFormat, spec: AudioSpec) -> Self {
        let rate_control = match format {
            OutputFormat::Ogg => RateControl::Abr(Bitrate::kbps(128)),
            _ => RateControl::Cbr(Bitrate::kbps(128)),
        };
        EncoderConfig {
            format,
            spec,
            rate_control,
            flac_level: 5,
            flac_threads: 1,
            bits_per_sample: 16,
            mp3_algorithm_quality: 3,
            aac_afterburner: true,
            tags: Tags::default(),
            seekable_output: false,
        }
    }

    /// Sets the rate control (builder style).
    pub fn with_rate_control(mut self, rc: RateControl) -> Self {
        self.rate_control = rc;
        self
    }

    /// Sets the tags (builder style).
    pub fn with_tags(mut self, tags: Tags) -> Self {
        self.tags = tags;
        self
    }
}

/// Bytes to write over the start of a finished output, when it can be rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPatch {
    /// Byte offset from the start of the output.
    pub offset: u64,
    /// The bytes to write there (they replace exactly as many bytes).
    pub bytes: Vec<u8>,
}

/// An audio encoder: PCM in, encoded bytes out.
///
/// Call [`Encoder::encode`] with blocks of any length, then [`Encoder::finish`] once. Neither
/// call spawns threads (except the FLAC encoder when [`EncoderConfig::flac_threads`] is above 1,
/// whose threads end before the call returns); memory held is bounded by one codec frame (FLAC
/// with threads: one batch of frames) plus the caller's blocks.
pub trait Encoder: Send {
    /// The format written.
    fn format(&self) -> OutputFormat;

    /// The spec of the PCM expected (and of the output).
    fn spec(&self) -> AudioSpec;

    /// Encodes `pcm` (which must have [`Encoder::spec`]) and appends what is ready to `out`.
    ///
    /// # Errors
    /// [`AudioError::InvalidState`] after `finish`, [`AudioError::InvalidSpec`] for PCM of
    /// another spec, [`AudioError::Encoder`] when the codec library fails.
    fn encode(&mut self, pcm: &PcmBuffer, out: &mut BytesMut) -> Result<()>;

    /// Flushes the last frames (and trailers) into `out`. Later calls do nothing.
    ///
    /// # Errors
    /// [`AudioError::Encoder`] when the codec library fails.
    fn finish(&mut self, out: &mut BytesMut) -> Result<()>;

    /// After `finish`, the final header to write over the start of a seekable output, if the
    /// format has one and [`EncoderConfig::seekable_output`] was set (or the format always
    /// reserves room, like FLAC's STREAMINFO and WAV's sizes).
    fn header_patch(&self) -> Option<HeaderPatch> {
        None
    }

    /// PCM frames pushed so far.
    fn frames_in(&self) -> u64;
}

/// Makes the encoder for `config.format`.
///
/// # Errors
/// [`AudioError::Unsupported`] when the format's cargo feature is off;
/// [`AudioError::InvalidConfig`] when a setting is out of range for the format.
pub fn new_encoder(config: &EncoderConfig) -> Result<Box<dyn Encoder>> {
    match config.format {
        #[cfg(feature = "mp3")]
        OutputFormat::Mp3 => Ok(Box::new(mp3::Mp3Encoder::new(config)?)),
        #[cfg(feature = "flac")]
        OutputFormat::Flac => Ok(Box::new(flac::FlacEncoder::new(config)?)),
        #[cfg(feature = "aac")]
        OutputFormat::Aac => Ok(Box::new(aac::AacEncoder::new(config)?)),
        #[cfg(feature = "aac")]
        OutputFormat::M4a => Ok(Box::new(m4a::M4aEncoder::new(config)?)),
        #[cfg(feature = "vorbis")]
        OutputFormat::Ogg => Ok(Box::new(vorbis::VorbisEncoder::new(config)?)),
        #[cfg(feature = "wav")]
        OutputFormat::Wav => Ok(Box::new(wav::WavEncoder::new(config)?)),
        #[allow(unreachable_patterns)]
        other => Err(AudioError::Unsupported(format!(
            "encoding {other} (this build lacks the cargo feature for it)"
        ))),
    }
}

/// Checks that a pushed block has the encoder's spec.
pub(crate) fn check_spec(expected: AudioSpec, pcm: &PcmBuffer) -> Result<()> {
    if pcm.spec() != expected {
        return Err(AudioError::InvalidSpec(format!(
            "encoder expects {} ch at {}, got {} ch at {}",
            expected.channels,
            expected.sample_rate,
            pcm.channels(),
            pcm.sample_rate()
        )));
    }
    Ok(())
}
