//! Compression presets: the API's "compress" operation reduces bandwidth with a quality level
//! per format, and never re-encodes lossy audio that already fits the target.

use std::fmt;
use std::str::FromStr;

use crate::encode::RateControl;
use crate::error::AudioError;
use crate::format::{Bitrate, OutputFormat};
use crate::metadata::StreamInfo;
use crate::transcode::OutputSettings;

/// A compression level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Quality {
    /// Smallest files: speech, previews, poor networks.
    Low,
    /// The usual streaming quality.
    Medium,
    /// Near-transparent lossy, or the smallest lossless.
    High,
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quality::Low => "low",
            Quality::Medium => "medium",
            Quality::High => "high",
        })
    }
}

impl FromStr for Quality {
    type Err = AudioError;

    /// Parses `low`, `medium` or `high` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(Quality::Low),
            "medium" | "med" => Ok(Quality::Medium),
            "high" => Ok(Quality::High),
            _ => Err(AudioError::config(format!(
                "unknown quality {s:?} (low, medium or high)"
            ))),
        }
    }
}

/// The settings of a preset.
///
/// | format | low | medium | high |
/// |---|---|---|---|
/// | MP3 (CBR) | 96 kbit/s | 128 kbit/s | 192 kbit/s |
/// | AAC, M4A (CBR) | 64 kbit/s | 96 kbit/s | 160 kbit/s |
/// | Ogg Vorbis (ABR) | 80 kbit/s | 128 kbit/s | 192 kbit/s |
/// | FLAC | level 0 | level 5 | level 8 |
/// | WAV | 16-bit | 16-bit | 24-bit |
///
/// Lossy presets are constant or average bitrate so that output sizes (and HTTP ranges) are
/// predictable. The sample rate and channels are kept (within what each encoder takes).
pub fn preset(format: OutputFormat, quality: Quality) -> OutputSettings {
    let mut s = OutputSettings::new(format);
    let kbps = |k: u32| Some(RateControl::Cbr(Bitrate::kbps(k)));
    match (format, quality) {
        (OutputFormat::Mp3, Quality::Low) => s.rate_control = kbps(96),
        (OutputFormat::Mp3, Quality::Medium) => s.rate_control = kbps(128),
        (OutputFormat::Mp3, Quality::High) => s.rate_control = kbps(192),
        (OutputFormat::Aac | OutputFormat::M4a, Quality::Low) => s.rate_control = kbps(64),
        (OutputFormat::Aac | OutputFormat::M4a, Quality::Medium) => s.rate_control = kbps(96),
        (OutputFormat::Aac | OutputFormat::M4a, Quality::High) => s.rate_control = kbps(160),
        (OutputFormat::Ogg, q) => {
            let k = match q {
                Quality::Low => 80,
                Quality::Medium => 128,
                Quality::High => 192,
            };
            s.rate_control = Some(RateControl::Abr(Bitrate::kbps(k)));
        }
        (OutputFormat::Flac, q) => {
            s.flac_level = match q {
                Quality::Low => 0,
                Quality::Medium => 5,
                Quality::High => 8,
            };
        }
        (OutputFormat::Wav, q) => {
            s.bits_per_sample = Some(if q == Quality::High { 24 } else { 16 })
        }
    }
    s
}

/// What a compression request comes to for a given source.
#[derive(Debug, Clone, PartialEq)]
pub enum CompressionPlan {
    /// The source already fits: serve it as it is. `reason` says why, for the caller to show.
    Passthrough {
        /// Why nothing is re-encoded.
        reason: String,
    },
    /// Encode with these settings. `note` is set when the plan had to deviate (for example a
    /// lossy-to-lossy re-encode that the requested format forces).
    Transcode {
        /// The output settings.
        settings: OutputSettings,
        /// A remark for the caller, if any.
        note: Option<String>,
    },
}

/// Decides how to compress `source` to `quality`, in `format` (or the source's own format when
/// `None`).
///
/// Lossy sources whose bitrate is at or below the preset's (5 % slack) are passed through
/// rather than re-encoded, when the format is kept (same codec) or not specified. When another
/// lossy format is required, the target bitrate is capped at the source's so no bits are
/// invented, and the plan says so. Lossless sources are always encoded.
///
/// # Errors
/// [`AudioError::Unsupported`] when `format` is `None` and the source's codec has no encoder.
pub fn plan_compression(
    source: &StreamInfo,
    format: Option<OutputFormat>,
    quality: Quality,
) -> Result<CompressionPlan, AudioError> {
    let same_codec_format = match source.codec {
        crate::format::Codec::Mp3 => Some(OutputFormat::Mp3),
        crate::format::Codec::Aac => Some(match source.container {
            crate::format::Container::Mp4 => OutputFormat::M4a,
            _ => OutputFormat::Aac,
        }),
        crate::format::Codec::Vorbis => Some(OutputFormat::Ogg),
        crate::format::Codec::Flac => Some(OutputFormat::Flac),
        crate::format::Codec::Pcm => Some(OutputFormat::Wav),
        _ => None,
    };
    let target = match format.or(same_codec_format) {
        Some(f) => f,
        None => {
            return Err(AudioError::Unsupported(format!(
                "no encoder for {}; name an output format",
                source.codec
            )));
        }
    };
    let mut settings = preset(target, quality);
    let target_bits = settings.rate_control.and_then(RateControl::bitrate);
    if !source.codec.is_lossy() {
        return Ok(CompressionPlan::Transcode {
            settings,
            note: None,
        });
    }
    let keeps_codec = target.codec() == source.codec;
    match (source.bitrate, target_bits) {
        (Some(src), Some(tgt))
            if u64::from(src.as_bps()) * 100 <= u64::from(tgt.as_bps()) * 105 =>
        {
            if keeps_codec || format.is_none() {
                Ok(CompressionPlan::Passthrough {
                    reason: format!(
                        "the source ({} at {}) already fits the {quality} preset ({tgt}); re-encoding lossy audio would only lose quality",
                        source.codec, src
                    ),
                })
            } else {
                settings.rate_control = Some(RateControl::Cbr(src));
                Ok(CompressionPlan::Transcode {
                    settings,
                    note: Some(format!(
                        "lossy-to-lossy re-encode forced by the requested format; bitrate capped at the source's {src}"
                    )),
                })
            }
        }
        (_, _) if target.is_lossy() => Ok(CompressionPlan::Transcode {
            settings,
            note: Some("lossy-to-lossy re-encode: the source is above the preset's bitrate".into()),
        }),
        _ => Ok(CompressionPlan::Transcode {
            settings,
            note: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Codec, Container, SampleRate};
    use crate::metadata::Tags;

    fn info(codec: Codec, container: Container, kbps: Option<u32>) -> StreamInfo {
        StreamInfo {
            codec,
            codec_profile: None,
            container,
            sample_rate: SampleRate::CD,
            channels: 2,
            bits_per_sample: None,
            total_frames: Some(44_100),
            bitrate: kbps.map(Bitrate::kbps),
            tags: Tags::default(),
        }
    }

    #[test]
    fn small_lossy_source_passes_through() {
        let src = info(Codec::Mp3, Container::Mpeg, Some(128));
        let plan = plan_compression(&src, None, Quality::High).unwrap();
        assert!(
            matches!(plan, CompressionPlan::Passthrough { .. }),
            "{plan:?}"
        );
        let plan = plan_compression(&src, Some(OutputFormat::Mp3), Quality::Medium).unwrap();
        assert!(
            matches!(plan, CompressionPlan::Passthrough { .. }),
            "{plan:?}"
        );
    }

    #[test]
    fn large_sources_are_encoded() {
        let src = info(Codec::Mp3, Container::Mpeg, Some(320));
        match plan_compression(&src, None, Quality::Low).unwrap() {
            CompressionPlan::Transcode { settings, note } => {
                assert_eq!(
                    settings.rate_control,
                    Some(RateControl::Cbr(Bitrate::kbps(96)))
                );
                assert!(note.is_some());
            }
            p => panic!("{p:?}"),
        }
        let flac = info(Codec::Flac, Container::Flac, Some(900));
        assert!(matches!(
            plan_compression(&flac, Some(OutputFormat::Aac), Quality::Low).unwrap(),
            CompressionPlan::Transcode { note: None, .. }
        ));
    }

    #[test]
    fn other_lossy_format_caps_bitrate() {
        let src = info(Codec::Aac, Container::Adts, Some(64));
        match plan_compression(&src, Some(OutputFormat::Mp3), Quality::Medium).unwrap() {
            CompressionPlan::Transcode { settings, note } => {
                assert_eq!(
                    settings.rate_control,
                    Some(RateControl::Cbr(Bitrate::kbps(64)))
                );
                assert!(note.unwrap().contains("lossy-to-lossy"));
            }
            p => panic!("{p:?}"),
        }
        assert!("HIGH".parse::<Quality>().is_ok());
        assert!("best".parse::<Quality>().is_err());
    }
}
