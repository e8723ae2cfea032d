//! fMP4 (CMAF-style fragmented MP4) packaging for the HLS [`Segmenter`](super::Segmenter): the
//! track description ([`Fmp4Track`]), its initialisation segment (`EXT-X-MAP`), and the
//! `moof` + `mdat` fragments that make up segments and LL-HLS parts.
//!
//! The boxes are written by `veza_audio::mp4`, which `veza-audio`'s M4A encoder uses too.

use bytes::{Bytes, BytesMut};
use veza_audio::mp4::{self, AudioSampleEntry, AudioTrack, Fragment};

use super::HlsError;
use crate::frame::ADTS_RATES;

/// Largest encoded frame accepted in fMP4 mode (a FLAC frame of 65535 samples of 8 channels of
/// 32 bits is about 2 MiB).
pub(crate) const MAX_SAMPLE_BYTES: usize = 4 << 20;

/// The codec of an fMP4 track and what its sample entry needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fmp4Codec {
    /// AAC (`mp4a` + `esds`).
    Aac {
        /// The AudioSpecificConfig (ISO/IEC 14496-3), 2 bytes for AAC-LC.
        audio_specific_config: Vec<u8>,
        /// Frames arrive as ADTS frames (as from the live ring): the segmenter strips the
        /// 7- or 9-byte header of each. `false`: frames are raw access units.
        adts_input: bool,
    },
    /// FLAC (`fLaC` + `dfLa`): frames are whole FLAC frames.
    Flac {
        /// The 34-byte STREAMINFO body.
        streaminfo: [u8; 34],
        /// Bits per sample (from STREAMINFO).
        bits_per_sample: u16,
    },
    /// Opus (`Opus` + `dOps`, timescale 48 kHz): frames are Opus packets, their sample counts
    /// at 48 kHz.
    Opus {
        /// Samples at 48 kHz the decoder drops at the start (the encoder's pre-skip).
        pre_skip: u16,
        /// The encoder's input sample rate, for information.
        input_sample_rate: u32,
        /// Output gain to apply, Q7.8 dB (0 normally).
        output_gain: i16,
    },
}

/// The audio track of an fMP4 rendition: codec, sample rate and channels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fmp4Track {
    /// The codec and its configuration.
    pub codec: Fmp4Codec,
    /// Sample rate in Hz of the frames fed (48000 for Opus).
    pub sample_rate: u32,
    /// Channels.
    pub channels: u16,
    /// Average bitrate in bit/s for the `esds` (0: unknown).
    pub avg_bitrate: u32,
}

impl Fmp4Track {
    /// An AAC track of raw access units with `audio_specific_config`.
    ///
    /// # Errors
    /// [`HlsError::BadTrack`] when the AudioSpecificConfig is shorter than 2 bytes or names a
    /// sampling-frequency index it does not carry.
    pub fn aac(audio_specific_config: &[u8]) -> Result<Self, HlsError> {
        let (sample_rate, channels) = parse_asc(audio_specific_config)?;
        Ok(Self {
            codec: Fmp4Codec::Aac {
                audio_specific_config: audio_specific_config.to_vec(),
                adts_input: false,
            },
            sample_rate,
            channels,
            avg_bitrate: 0,
        })
    }

    /// An AAC track fed with ADTS frames, its AudioSpecificConfig built from the header of
    /// `first_frame` (object type, sampling frequency, channel configuration). Each frame's
    /// ADTS header is stripped when it is segmented.
    ///
    /// # Errors
    /// [`HlsError::BadTrack`] when `first_frame` does not start with an ADTS header.
    pub fn aac_from_adts(first_frame: &[u8]) -> Result<Self, HlsError> {
        let h = parse_adts(first_frame).ok_or(HlsError::BadTrack("not an ADTS header"))?;
        let asc = vec![
            (h.object_type << 3) | (h.sr_index >> 1),
            ((h.sr_index & 1) << 7) | (h.channel_config << 3),
        ];
        Ok(Self {
            codec: Fmp4Codec::Aac {
                audio_specific_config: asc,
                adts_input: true,
            },
            sample_rate: h.sample_rate,
            channels: u16::from(h.channel_config.max(1)),
            avg_bitrate: 0,
        })
    }

    /// A FLAC track from its STREAMINFO: the 34-byte body, the metadata blocks (STREAMINFO
    /// first), or the start of a FLAC stream (`fLaC` then the blocks). Other blocks are not
    /// kept.
    ///
    /// # Errors
    /// [`HlsError::BadTrack`] without a valid STREAMINFO (rate 0, missing, truncated).
    pub fn flac(header: &[u8]) -> Result<Self, HlsError> {
        let h = header.strip_prefix(b"fLaC").unwrap_or(header);
        let body = if h.len() == 34 {
            h
        } else {
            // A metadata block header: type 0 (STREAMINFO), length 34.
            match h.get(..4) {
                Some([t, 0, 0, 34]) if t & 0x7F == 0 => h
                    .get(4..38)
                    .ok_or(HlsError::BadTrack("truncated STREAMINFO"))?,
                _ => return Err(HlsError::BadTrack("STREAMINFO must come first")),
            }
        };
        let mut streaminfo = [0u8; 34];
        streaminfo.copy_from_slice(body);
        let rate =
            (u32::from(body[10]) << 12) | (u32::from(body[11]) << 4) | (u32::from(body[12]) >> 4);
        let channels = u16::from((body[12] >> 1) & 0x07) + 1;
        let bits = (u16::from(body[12] & 1) << 4 | u16::from(body[13] >> 4)) + 1;
        if rate == 0 {
            return Err(HlsError::BadTrack("STREAMINFO sample rate 0"));
        }
        Ok(Self {
            codec: Fmp4Codec::Flac {
                streaminfo,
                bits_per_sample: bits,
            },
            sample_rate: rate,
            channels,
            avg_bitrate: 0,
        })
    }

    /// An Opus track (channel mapping family 0: 1 or 2 channels) at 48 kHz.
    ///
    /// # Errors
    /// [`HlsError::BadTrack`] for 0 or more than 2 channels.
    pub fn opus(channels: u16, pre_skip: u16, input_sample_rate: u32) -> Result<Self, HlsError> {
        if !(1..=2).contains(&channels) {
            return Err(HlsError::BadTrack("Opus family 0 has 1 or 2 channels"));
        }
        Ok(Self {
            codec: Fmp4Codec::Opus {
                pre_skip,
                input_sample_rate,
                output_gain: 0,
            },
            sample_rate: 48_000,
            channels,
            avg_bitrate: 0,
        })
    }

    /// An Opus track from an Ogg Opus identification header (`OpusHead`: channels, pre-skip,
    /// input rate, output gain). Frames are then the Opus packets of the stream.
    ///
    /// # Errors
    /// [`HlsError::BadTrack`] when `head` is not an `OpusHead` of channel mapping family 0.
    pub fn opus_from_head(head: &[u8]) -> Result<Self, HlsError> {
        let h = head
            .strip_prefix(b"OpusHead")
            .filter(|h| h.len() >= 11)
            .ok_or(HlsError::BadTrack("not an OpusHead"))?;
        if h[10] != 0 {
            return Err(HlsError::BadTrack(
                "only Opus channel mapping family 0 is supported",
            ));
        }
        let mut t = Self::opus(
            u16::from(h[1]),
            u16::from_le_bytes([h[2], h[3]]),
            u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
        )?;
        if let Fmp4Codec::Opus { output_gain, .. } = &mut t.codec {
            *output_gain = i16::from_le_bytes([h[8], h[9]]);
        }
        Ok(t)
    }

    /// This track with `avg_bitrate` (bit/s) written in the `esds`.
    pub fn with_avg_bitrate(mut self, avg_bitrate: u32) -> Self {
        self.avg_bitrate = avg_bitrate;
        self
    }

    /// The CODECS attribute value: `mp4a.40.<object type>` (2 for AAC-LC, 5 for HE-AAC),
    /// `fLaC` or `Opus`.
    pub fn codecs(&self) -> String {
        match &self.codec {
            Fmp4Codec::Aac {
                audio_specific_config,
                ..
            } => {
                let aot = audio_specific_config.first().map_or(2, |b| b >> 3);
                format!("mp4a.40.{aot}")
            }
            Fmp4Codec::Flac { .. } => "fLaC".into(),
            Fmp4Codec::Opus { .. } => "Opus".into(),
        }
    }

    /// Media timescale: ticks per second of decode times and durations (the sample rate).
    pub fn timescale(&self) -> u32 {
        self.sample_rate
    }

    /// The initialisation segment (`ftyp` + `moov`), as served at the playlist's `EXT-X-MAP`.
    pub fn init_segment(&self) -> Bytes {
        let mut b = Vec::with_capacity(768);
        let entry = match &self.codec {
            Fmp4Codec::Aac {
                audio_specific_config,
                ..
            } => AudioSampleEntry::Mp4a {
                audio_specific_config,
                avg_bitrate: self.avg_bitrate,
            },
            Fmp4Codec::Flac {
                streaminfo,
                bits_per_sample,
            } => AudioSampleEntry::Flac {
                metadata_blocks: streaminfo,
                bits_per_sample: *bits_per_sample,
            },
            Fmp4Codec::Opus {
                pre_skip,
                input_sample_rate,
                output_gain,
            } => AudioSampleEntry::Opus {
                pre_skip: *pre_skip,
                input_sample_rate: *input_sample_rate,
                output_gain: *output_gain,
            },
        };
        let default_sample_duration = match &self.codec {
            Fmp4Codec::Aac { .. } => 1024,
            Fmp4Codec::Flac { streaminfo, .. } => {
                u32::from(u16::from_be_bytes([streaminfo[2], streaminfo[3]]))
            }
            Fmp4Codec::Opus { .. } => 960,
        };
        mp4::write_init_segment(
            &mut b,
            &AudioTrack {
                track_id: 1,
                timescale: self.timescale(),
                sample_rate: self.sample_rate,
                channels: self.channels,
                default_sample_duration,
                entry,
            },
        );
        Bytes::from(b)
    }

    /// The sample to store for a fed frame: the frame itself, or its payload past the ADTS
    /// header.
    pub(crate) fn sample<'a>(&self, frame: &'a [u8]) -> Result<&'a [u8], HlsError> {
        if frame.is_empty() {
            return Err(HlsError::BadFrame("empty frame"));
        }
        if frame.len() > MAX_SAMPLE_BYTES {
            return Err(HlsError::BadFrame("frame larger than 4 MiB"));
        }
        match &self.codec {
            Fmp4Codec::Aac {
                adts_input: true, ..
            } => {
                let h = parse_adts(frame).ok_or(HlsError::BadFrame("not an ADTS frame"))?;
                if h.raw_blocks != 1 {
                    return Err(HlsError::BadFrame(
                        "ADTS frames with several raw data blocks are not supported",
                    ));
                }
                if h.sample_rate != self.sample_rate {
                    return Err(HlsError::BadFrame(
                        "ADTS sample rate differs from the track",
                    ));
                }
                frame
                    .get(h.header_len..)
                    .filter(|p| !p.is_empty())
                    .ok_or(HlsError::BadFrame("ADTS frame without payload"))
            }
            _ => Ok(frame),
        }
    }
}

/// (sample rate, channels) of an AudioSpecificConfig.
fn parse_asc(asc: &[u8]) -> Result<(u32, u16), HlsError> {
    let [a, b, ..] = asc else {
        return Err(HlsError::BadTrack(
            "AudioSpecificConfig shorter than 2 bytes",
        ));
    };
    let sr_index = ((a & 0x07) << 1) | (b >> 7);
    let channels = u16::from((b >> 3) & 0x0F);
    let rate = *ADTS_RATES
        .get(usize::from(sr_index))
        .ok_or(HlsError::BadTrack(
            "explicit or reserved sampling frequency",
        ))?;
    Ok((rate, channels.max(1)))
}

struct Adts {
    object_type: u8,
    sr_index: u8,
    sample_rate: u32,
    channel_config: u8,
    header_len: usize,
    raw_blocks: u8,
}

fn parse_adts(b: &[u8]) -> Option<Adts> {
    if b.len() < 7 || b[0] != 0xFF || b[1] & 0xF6 != 0xF0 {
        return None;
    }
    let header_len = if b[1] & 1 == 1 { 7 } else { 9 };
    let sr_index = (b[2] >> 2) & 0x0F;
    let sample_rate = *ADTS_RATES.get(usize::from(sr_index))?;
    let len = (usize::from(b[3] & 0x03) << 11) | (usize::from(b[4]) << 3) | usize::from(b[5] >> 5);
    if len != b.len() || len <= header_len {
        return None;
    }
    Some(Adts {
        object_type: ((b[2] >> 6) & 0x03) + 1,
        sr_index,
        sample_rate,
        channel_config: ((b[2] & 1) << 2) | (b[3] >> 6),
        header_len,
        raw_blocks: (b[6] & 0x03) + 1,
    })
}

/// Samples of one fragment being gathered, and the buffer its header is written into.
#[derive(Debug, Default)]
pub(crate) struct FragmentBuilder {
    sizes: Vec<u32>,
    durations: Vec<u32>,
    data: BytesMut,
    header: Vec<u8>,
}

impl FragmentBuilder {
    /// Adds one sample (at most [`MAX_SAMPLE_BYTES`], checked by [`Fmp4Track::sample`]).
    pub(crate) fn push(&mut self, sample: &[u8], duration: u32) {
        self.sizes
            .push(u32::try_from(sample.len()).unwrap_or(u32::MAX));
        self.durations.push(duration);
        self.data.extend_from_slice(sample);
    }

    /// The gathered samples as one `moof` + `mdat` fragment, after `prefix` (an `emsg`) when
    /// given; empties the builder.
    pub(crate) fn finish(
        &mut self,
        prefix: Option<&[u8]>,
        sequence: u32,
        base_decode_time: u64,
    ) -> Bytes {
        let default = self.durations.first().copied().unwrap_or(1024);
        self.header.clear();
        mp4::write_fragment_header(
            &mut self.header,
            &Fragment {
                sequence,
                track_id: 1,
                base_decode_time,
                default_sample_duration: default,
                sample_sizes: &self.sizes,
                sample_durations: &self.durations,
            },
        );
        let prefix = prefix.unwrap_or_default();
        let mut out = BytesMut::with_capacity(prefix.len() + self.header.len() + self.data.len());
        out.extend_from_slice(prefix);
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&self.data);
        self.data.clear();
        self.sizes.clear();
        self.durations.clear();
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adts_gives_the_audio_specific_config() {
        let h = crate::frame::adts_header(100, 44_100, 2).unwrap_or_default();
        let mut f = h.to_vec();
        f.resize(100, 0x21);
        let t = Fmp4Track::aac_from_adts(&f).unwrap_or_else(|e| panic!("{e}"));
        let Fmp4Codec::Aac {
            audio_specific_config,
            adts_input,
        } = &t.codec
        else {
            panic!("aac")
        };
        assert_eq!(audio_specific_config, &[0x12, 0x10]);
        assert!(adts_input);
        assert_eq!((t.sample_rate, t.channels), (44_100, 2));
        assert_eq!(t.codecs(), "mp4a.40.2");
        assert_eq!(t.sample(&f).map(<[u8]>::len), Ok(93));
        assert!(t.sample(&f[..50]).is_err(), "length must match");
        assert_eq!(
            Fmp4Track::aac(&[0x12, 0x10]).map(|t| t.sample_rate),
            Ok(44_100)
        );
        assert!(Fmp4Track::aac(&[0x12]).is_err());
    }

    #[test]
    fn flac_streaminfo_is_parsed() {
        // 4096-sample blocks, 44.1 kHz, 2 channels, 16 bits.
        let mut si = [0u8; 34];
        si[0..2].copy_from_slice(&4096u16.to_be_bytes());
        si[2..4].copy_from_slice(&4096u16.to_be_bytes());
        let rate = 44_100u32;
        si[10] = (rate >> 12) as u8;
        si[11] = (rate >> 4) as u8;
        si[12] = ((rate as u8 & 0x0F) << 4) | (1 << 1);
        si[13] = 15 << 4;
        let mut stream = b"fLaC\x80\x00\x00\x22".to_vec();
        stream.extend_from_slice(&si);
        for input in [&si[..], &stream[..], &stream[4..]] {
            let t = Fmp4Track::flac(input).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((t.sample_rate, t.channels), (44_100, 2));
            assert_eq!(t.codecs(), "fLaC");
            assert!(matches!(
                t.codec,
                Fmp4Codec::Flac {
                    bits_per_sample: 16,
                    ..
                }
            ));
        }
        assert!(Fmp4Track::flac(&stream[..20]).is_err());
        assert!(Fmp4Track::flac(&[0u8; 34]).is_err(), "rate 0");
    }

    #[test]
    fn opus_track_is_48k() {
        let t = Fmp4Track::opus(2, 312, 44_100).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.timescale(), t.codecs()), (48_000, "Opus".to_string()));
        let init = t.init_segment();
        assert!(init.windows(4).any(|w| w == b"dOps"));
        assert!(Fmp4Track::opus(3, 0, 48_000).is_err());
        let mut head = b"OpusHead\x01\x02".to_vec();
        head.extend_from_slice(&312u16.to_le_bytes());
        head.extend_from_slice(&44_100u32.to_le_bytes());
        head.extend_from_slice(&[0, 0, 0]);
        assert_eq!(Fmp4Track::opus_from_head(&head), Ok(t));
        head[18] = 1;
        assert!(Fmp4Track::opus_from_head(&head).is_err());
        assert!(Fmp4Track::opus_from_head(b"OpusHead").is_err());
    }

    proptest::proptest! {
        /// Any bytes as a track header or an ADTS frame give a value or a typed error.
        #[test]
        fn arbitrary_headers_and_frames_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = Fmp4Track::flac(&bytes);
            let _ = Fmp4Track::aac(&bytes);
            let mut head = b"OpusHead".to_vec();
            head.extend_from_slice(&bytes);
            let _ = Fmp4Track::opus_from_head(&head);
            if let Ok(t) = Fmp4Track::aac_from_adts(&bytes) {
                let _ = t.sample(&bytes);
                proptest::prop_assert!(!t.init_segment().is_empty());
            }
            let t = Fmp4Track::aac_from_adts(&{
                let mut f = crate::frame::adts_header(100, 48_000, 2).unwrap_or_default().to_vec();
                f.resize(100, 0);
                f
            });
            if let Ok(t) = t {
                let _ = t.sample(&bytes);
            }
        }
    }
}
