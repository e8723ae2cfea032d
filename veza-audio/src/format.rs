//! Units, codecs, containers and output formats. Strings are parsed only here, at the edge.

use std::fmt;
use std::str::FromStr;

use crate::error::AudioError;

/// A sample rate in Hz (frames per second). Always between 1 and [`SampleRate::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct SampleRate(u32);

impl SampleRate {
    /// The highest rate accepted anywhere in the crate (768 kHz).
    pub const MAX: u32 = 768_000;
    /// 44.1 kHz.
    pub const CD: SampleRate = SampleRate(44_100);
    /// 48 kHz.
    pub const DVD: SampleRate = SampleRate(48_000);

    /// A rate in Hz.
    ///
    /// # Errors
    /// [`AudioError::InvalidSpec`] when `hz` is 0 or above [`SampleRate::MAX`].
    pub fn new(hz: u32) -> Result<Self, AudioError> {
        if hz == 0 || hz > Self::MAX {
            return Err(AudioError::InvalidSpec(format!("sample rate {hz} Hz")));
        }
        Ok(SampleRate(hz))
    }

    /// The rate in Hz.
    pub fn hz(self) -> u32 {
        self.0
    }
}

impl fmt::Display for SampleRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Hz", self.0)
    }
}

/// A bitrate in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Bitrate(u32);

impl Bitrate {
    /// A bitrate in kilobits per second (1 kbit = 1000 bits).
    pub const fn kbps(kbps: u32) -> Self {
        Bitrate(kbps.saturating_mul(1000))
    }

    /// A bitrate in bits per second.
    pub const fn bps(bps: u32) -> Self {
        Bitrate(bps)
    }

    /// The bitrate in bits per second.
    pub const fn as_bps(self) -> u32 {
        self.0
    }

    /// The bitrate in whole kilobits per second (rounded to nearest).
    pub const fn as_kbps(self) -> u32 {
        (self.0 + 500) / 1000
    }
}

impl fmt::Display for Bitrate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} kbit/s", self.as_kbps())
    }
}

/// An audio codec, as found in an input or produced by an encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Codec {
    /// MPEG-1/2/2.5 Layer III.
    Mp3,
    /// MPEG Layer I or II.
    Mp2,
    /// Free Lossless Audio Codec.
    Flac,
    /// AAC (LC, or HE-AAC where the decoder handles it).
    Aac,
    /// Vorbis.
    Vorbis,
    /// Opus (recognised in containers, not decoded).
    Opus,
    /// Apple Lossless.
    Alac,
    /// Uncompressed PCM (integer or float).
    Pcm,
    /// ADPCM variants.
    Adpcm,
    /// Anything else symphonia names.
    Other,
}

impl Codec {
    /// The codec's short lowercase name (`"mp3"`, `"flac"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Mp3 => "mp3",
            Codec::Mp2 => "mp2",
            Codec::Flac => "flac",
            Codec::Aac => "aac",
            Codec::Vorbis => "vorbis",
            Codec::Opus => "opus",
            Codec::Alac => "alac",
            Codec::Pcm => "pcm",
            Codec::Adpcm => "adpcm",
            Codec::Other => "other",
        }
    }

    /// True for codecs that lose information (re-encoding them to another lossy codec loses more).
    pub fn is_lossy(self) -> bool {
        matches!(
            self,
            Codec::Mp3 | Codec::Mp2 | Codec::Aac | Codec::Vorbis | Codec::Opus
        )
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The container (file format) around the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Container {
    /// A raw MPEG audio elementary stream (`.mp3`), possibly with ID3 tags.
    Mpeg,
    /// Native FLAC.
    Flac,
    /// Raw AAC in ADTS frames.
    Adts,
    /// ISO base media (MP4, M4A, MOV).
    Mp4,
    /// Ogg.
    Ogg,
    /// RIFF WAVE (including RF64).
    Wav,
    /// AIFF.
    Aiff,
    /// Matroska / WebM.
    Matroska,
    /// Core Audio Format.
    Caf,
    /// Anything else.
    Other,
}

impl Container {
    /// The container's short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Container::Mpeg => "mpeg",
            Container::Flac => "flac",
            Container::Adts => "adts",
            Container::Mp4 => "mp4",
            Container::Ogg => "ogg",
            Container::Wav => "wav",
            Container::Aiff => "aiff",
            Container::Matroska => "matroska",
            Container::Caf => "caf",
            Container::Other => "other",
        }
    }
}

impl fmt::Display for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format this crate can write: a codec in a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum OutputFormat {
    /// MP3 (LAME), raw MPEG audio stream.
    Mp3,
    /// FLAC, native container.
    Flac,
    /// AAC-LC in ADTS frames (`.aac`), streamable.
    Aac,
    /// AAC-LC in an MPEG-4 audio file (`.m4a`, fragmented MP4).
    M4a,
    /// Vorbis in Ogg (`.ogg`).
    Ogg,
    /// 16- or 24-bit PCM in RIFF WAVE.
    Wav,
}

impl OutputFormat {
    /// All output formats.
    pub const ALL: [OutputFormat; 6] = [
        OutputFormat::Mp3,
        OutputFormat::Flac,
        OutputFormat::Aac,
        OutputFormat::M4a,
        OutputFormat::Ogg,
        OutputFormat::Wav,
    ];

    /// The codec inside.
    pub fn codec(self) -> Codec {
        match self {
            OutputFormat::Mp3 => Codec::Mp3,
            OutputFormat::Flac => Codec::Flac,
            OutputFormat::Aac | OutputFormat::M4a => Codec::Aac,
            OutputFormat::Ogg => Codec::Vorbis,
            OutputFormat::Wav => Codec::Pcm,
        }
    }

    /// The container around it.
    pub fn container(self) -> Container {
        match self {
            OutputFormat::Mp3 => Container::Mpeg,
            OutputFormat::Flac => Container::Flac,
            OutputFormat::Aac => Container::Adts,
            OutputFormat::M4a => Container::Mp4,
            OutputFormat::Ogg => Container::Ogg,
            OutputFormat::Wav => Container::Wav,
        }
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Mp3 => "mp3",
            OutputFormat::Flac => "flac",
            OutputFormat::Aac => "aac",
            OutputFormat::M4a => "m4a",
            OutputFormat::Ogg => "ogg",
            OutputFormat::Wav => "wav",
        }
    }

    /// The MIME type for HTTP `Content-Type`.
    pub fn mime_type(self) -> &'static str {
        match self {
            OutputFormat::Mp3 => "audio/mpeg",
            OutputFormat::Flac => "audio/flac",
            OutputFormat::Aac => "audio/aac",
            OutputFormat::M4a => "audio/mp4",
            OutputFormat::Ogg => "audio/ogg",
            OutputFormat::Wav => "audio/wav",
        }
    }

    /// True for lossy codecs.
    pub fn is_lossy(self) -> bool {
        self.codec().is_lossy()
    }

    /// The format whose usual extension is `ext` (case-insensitive, without the dot).
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "mp3" => Some(OutputFormat::Mp3),
            "flac" => Some(OutputFormat::Flac),
            "aac" | "adts" => Some(OutputFormat::Aac),
            "m4a" | "mp4" => Some(OutputFormat::M4a),
            "ogg" | "oga" => Some(OutputFormat::Ogg),
            "wav" | "wave" => Some(OutputFormat::Wav),
            _ => None,
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

impl FromStr for OutputFormat {
    type Err = AudioError;

    /// Parses `mp3`, `flac`, `aac`, `m4a`, `ogg` (or `vorbis`), `wav`, case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("vorbis") {
            return Ok(OutputFormat::Ogg);
        }
        OutputFormat::from_extension(s)
            .ok_or_else(|| AudioError::config(format!("unknown output format {s:?}")))
    }
}

/// The shape of PCM audio: rate and channel count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AudioSpec {
    /// Frames per second.
    pub sample_rate: SampleRate,
    /// Number of channels (1 to [`AudioSpec::MAX_CHANNELS`]).
    pub channels: u16,
}

impl AudioSpec {
    /// The most channels accepted anywhere in the crate.
    pub const MAX_CHANNELS: u16 = 32;

    /// A spec from a rate in Hz and a channel count.
    ///
    /// # Errors
    /// [`AudioError::InvalidSpec`] for a rate of 0 or above [`SampleRate::MAX`], or a channel
    /// count of 0 or above [`AudioSpec::MAX_CHANNELS`].
    pub fn new(sample_rate_hz: u32, channels: u16) -> Result<Self, AudioError> {
        let sample_rate = SampleRate::new(sample_rate_hz)?;
        if channels == 0 || channels > Self::MAX_CHANNELS {
            return Err(AudioError::InvalidSpec(format!("{channels} channels")));
        }
        Ok(AudioSpec {
            sample_rate,
            channels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_formats_at_the_edge() {
        assert_eq!("MP3".parse::<OutputFormat>().unwrap(), OutputFormat::Mp3);
        assert_eq!("vorbis".parse::<OutputFormat>().unwrap(), OutputFormat::Ogg);
        assert!("opus".parse::<OutputFormat>().is_err());
        assert_eq!(OutputFormat::M4a.codec(), Codec::Aac);
    }

    #[test]
    fn rejects_absurd_specs() {
        assert!(AudioSpec::new(0, 2).is_err());
        assert!(AudioSpec::new(44_100, 0).is_err());
        assert!(AudioSpec::new(44_100, 200).is_err());
        assert!(AudioSpec::new(44_100, 2).is_ok());
        assert_eq!(Bitrate::kbps(128).as_bps(), 128_000);
    }
}
