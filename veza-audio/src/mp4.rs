//! Writing fragmented MP4 (ISO base media file format, ISO/IEC 14496-12) for one audio track:
//! the boxes that the M4A encoder ([`crate::encode`]) and `veza-stream-core`'s fMP4 HLS
//! segmenter share.
//!
//! - [`write_box`] and [`write_full_box`] append a box whose size is filled in afterwards.
//! - [`write_audio_sample_entry`] writes the `stsd` entry of an audio track: `mp4a` with an
//!   `esds` (AAC), `fLaC` with a `dfLa` (FLAC in ISO BMFF), or `Opus` with a `dOps` (Opus in
//!   ISO BMFF).
//! - [`write_init_segment`] writes a CMAF-style header (`ftyp` + `moov` with `mvex`/`trex`, no
//!   samples), as an HLS `EXT-X-MAP` or a DASH initialisation segment needs.
//! - [`write_emsg`] writes an event message (`emsg`), as timed ID3 metadata in CMAF uses.
//! - [`write_fragment_header`] writes a `moof` (`mfhd`, `traf` with `tfhd`, `tfdt`, `trun`) and
//!   the `mdat` header; the samples' bytes follow it.
//!
//! Nothing here allocates beyond the output buffer, and no input makes it panic: a box that
//! grows past 4 GiB gets a 64-bit `largesize`.

/// Appends a box: size, type, then what `body` writes; the size is patched in afterwards (a box
/// past 4 GiB gets the 64-bit `largesize` form).
pub fn write_box(buf: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(kind);
    body(buf);
    let size = buf.len() - start;
    match u32::try_from(size) {
        Ok(size) => {
            if let Some(field) = buf.get_mut(start..start + 4) {
                field.copy_from_slice(&size.to_be_bytes());
            }
        }
        Err(_) => {
            // size 1: a 64-bit size follows the type.
            if let Some(field) = buf.get_mut(start..start + 4) {
                field.copy_from_slice(&1u32.to_be_bytes());
            }
            let large = (size as u64).saturating_add(8);
            buf.splice(start + 8..start + 8, large.to_be_bytes());
        }
    }
}

/// Appends a full box: a box whose body starts with a version byte and 24 bits of flags.
pub fn write_full_box(
    buf: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    write_box(buf, kind, |b| {
        b.push(version);
        b.extend_from_slice(&flags.to_be_bytes()[1..]);
        body(b);
    });
}

/// Appends a big-endian `u16`.
pub fn put_u16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian `u32`.
pub fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian `u64`.
pub fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_be_bytes());
}

/// Appends the unity transformation matrix of `mvhd` and `tkhd`.
pub fn write_matrix(b: &mut Vec<u8>) {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        put_u32(b, v);
    }
}

/// Appends an MPEG-4 descriptor (ISO/IEC 14496-1): tag, length in the 4-byte expandable form,
/// body. Bodies longer than 2^28 - 1 bytes are cut (descriptors here are a few bytes).
pub fn write_descriptor(b: &mut Vec<u8>, tag: u8, body: &[u8]) {
    let body = body.get(..body.len().min(0x0FFF_FFFF)).unwrap_or_default();
    let len = body.len() as u32;
    b.push(tag);
    b.extend_from_slice(&[
        0x80 | ((len >> 21) & 0x7F) as u8,
        0x80 | ((len >> 14) & 0x7F) as u8,
        0x80 | ((len >> 7) & 0x7F) as u8,
        (len & 0x7F) as u8,
    ]);
    b.extend_from_slice(body);
}

/// The codec-specific part of an audio track's sample entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioSampleEntry<'a> {
    /// MPEG-4 audio (AAC): an `mp4a` entry with an `esds` carrying the AudioSpecificConfig.
    Mp4a {
        /// The AudioSpecificConfig (ISO/IEC 14496-3), 2 bytes for AAC-LC.
        audio_specific_config: &'a [u8],
        /// Average bitrate in bit/s (0 if unknown or variable); also written as the maximum.
        avg_bitrate: u32,
    },
    /// FLAC: a `fLaC` entry with a `dfLa` box ("Encapsulation of FLAC in ISO Base Media File
    /// Format").
    Flac {
        /// The FLAC metadata blocks, each with its 4-byte header, STREAMINFO first; the
        /// last-block flag is set on the last one when written. The bare 34-byte STREAMINFO
        /// body is accepted too (its header is added).
        metadata_blocks: &'a [u8],
        /// Bits per sample (the sample entry's `samplesize`).
        bits_per_sample: u16,
    },
    /// Opus: an `Opus` entry with a `dOps` box ("Encapsulation of Opus in ISO Base Media File
    /// Format"), channel mapping family 0 (mono or stereo).
    Opus {
        /// Samples (at 48 kHz) to drop at the start (the encoder's pre-skip).
        pre_skip: u16,
        /// The sample rate of the encoder's input, for information.
        input_sample_rate: u32,
        /// Output gain, Q7.8 dB.
        output_gain: i16,
    },
}

/// Appends an `esds` box for AAC with `audio_specific_config`.
pub fn write_esds(b: &mut Vec<u8>, audio_specific_config: &[u8], channels: u16, avg_bitrate: u32) {
    write_full_box(b, b"esds", 0, 0, |b| {
        let mut dsi = Vec::with_capacity(16);
        write_descriptor(&mut dsi, 0x05, audio_specific_config);
        let mut dcd = Vec::with_capacity(32);
        dcd.push(0x40); // object type: MPEG-4 audio
        dcd.push(0x15); // stream type 5 (audio) << 2 | reserved bit
        let buffer_size = 768 * u32::from(channels); // one access unit at most
        dcd.extend_from_slice(&buffer_size.to_be_bytes()[1..]);
        put_u32(&mut dcd, avg_bitrate); // max bitrate
        put_u32(&mut dcd, avg_bitrate); // average bitrate (0: variable)
        dcd.extend_from_slice(&dsi);
        let mut es = Vec::with_capacity(48);
        put_u16(&mut es, 1); // ES ID
        es.push(0); // flags
        write_descriptor(&mut es, 0x04, &dcd);
        write_descriptor(&mut es, 0x06, &[0x02]); // SL config: predefined MP4
        write_descriptor(b, 0x03, &es);
    });
}

/// Appends the sample entry (`mp4a`, `fLaC` or `Opus`) of an audio track of `channels` at
/// `sample_rate` Hz. Rates above 65535 Hz do not fit the entry's 16.16 field: it is 0 then, and
/// readers take the rate from the codec's own configuration.
pub fn write_audio_sample_entry(
    b: &mut Vec<u8>,
    entry: &AudioSampleEntry<'_>,
    sample_rate: u32,
    channels: u16,
) {
    let (kind, sample_size): (&[u8; 4], u16) = match entry {
        AudioSampleEntry::Mp4a { .. } => (b"mp4a", 16),
        AudioSampleEntry::Flac {
            bits_per_sample, ..
        } => (b"fLaC", *bits_per_sample),
        AudioSampleEntry::Opus { .. } => (b"Opus", 16),
    };
    write_box(b, kind, |b| {
        b.extend_from_slice(&[0; 6]);
        put_u16(b, 1); // data reference index
        b.extend_from_slice(&[0; 8]);
        put_u16(b, channels);
        put_u16(b, sample_size);
        put_u32(b, 0);
        put_u32(
            b,
            if sample_rate <= 0xFFFF {
                sample_rate << 16
            } else {
                0
            },
        );
        match entry {
            AudioSampleEntry::Mp4a {
                audio_specific_config,
                avg_bitrate,
            } => write_esds(b, audio_specific_config, channels, *avg_bitrate),
            AudioSampleEntry::Flac {
                metadata_blocks, ..
            } => write_full_box(b, b"dfLa", 0, 0, |b| write_flac_blocks(b, metadata_blocks)),
            AudioSampleEntry::Opus {
                pre_skip,
                input_sample_rate,
                output_gain,
            } => write_box(b, b"dOps", |b| {
                b.push(0); // version
                b.push(channels.min(255) as u8);
                put_u16(b, *pre_skip);
                put_u32(b, *input_sample_rate);
                b.extend_from_slice(&output_gain.to_be_bytes());
                b.push(0); // channel mapping family 0: mono or stereo
            }),
        }
    });
}

/// FLAC metadata blocks as `dfLa` wants them: headers present, last-block flag on the last.
fn write_flac_blocks(b: &mut Vec<u8>, blocks: &[u8]) {
    if blocks.len() == 34 {
        // A bare STREAMINFO body: type 0, last block, length 34.
        b.extend_from_slice(&[0x80, 0, 0, 34]);
        b.extend_from_slice(blocks);
        return;
    }
    let mut pos = 0;
    while let Some(header) = blocks.get(pos..pos + 4) {
        let len =
            (usize::from(header[1]) << 16) | (usize::from(header[2]) << 8) | usize::from(header[3]);
        let Some(body) = blocks.get(pos + 4..pos + 4 + len) else {
            break;
        };
        let last = pos + 4 + len >= blocks.len();
        b.push((header[0] & 0x7F) | if last { 0x80 } else { 0 });
        b.extend_from_slice(&header[1..4]);
        b.extend_from_slice(body);
        pos += 4 + len;
    }
}

/// One audio track of an initialisation segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioTrack<'a> {
    /// The track ID (1 for a single-track file).
    pub track_id: u32,
    /// The media timescale: ticks per second (the sample rate; 48000 for Opus).
    pub timescale: u32,
    /// The sample rate written in the sample entry.
    pub sample_rate: u32,
    /// Channels.
    pub channels: u16,
    /// Default duration of a sample (access unit), in timescale ticks (`trex`).
    pub default_sample_duration: u32,
    /// The sample entry.
    pub entry: AudioSampleEntry<'a>,
}

/// Appends an initialisation segment for `track`: `ftyp` (major brand `iso6`, compatible `iso6`
/// `cmfc` `mp41`) and a `moov` with `mvhd`, one `trak` (`tkhd`, `mdia` with `mdhd`, `hdlr`
/// "soun", `minf`/`stbl` with the sample entry and empty sample tables) and `mvex`/`trex`. All
/// media goes in fragments ([`write_fragment_header`]).
pub fn write_init_segment(b: &mut Vec<u8>, track: &AudioTrack<'_>) {
    write_box(b, b"ftyp", |b| {
        b.extend_from_slice(b"iso6");
        put_u32(b, 0);
        for brand in [b"iso6", b"cmfc", b"mp41"] {
            b.extend_from_slice(brand);
        }
    });
    write_box(b, b"moov", |b| {
        write_full_box(b, b"mvhd", 0, 0, |b| {
            put_u32(b, 0); // creation time
            put_u32(b, 0); // modification time
            put_u32(b, track.timescale);
            put_u32(b, 0); // duration: the media is all in fragments
            put_u32(b, 0x0001_0000); // rate 1.0
            put_u16(b, 0x0100); // volume 1.0
            b.extend_from_slice(&[0; 10]);
            write_matrix(b);
            b.extend_from_slice(&[0; 24]); // pre_defined
            put_u32(b, track.track_id.saturating_add(1)); // next track ID
        });
        write_box(b, b"trak", |b| {
            write_full_box(b, b"tkhd", 0, 0x3, |b| {
                put_u32(b, 0);
                put_u32(b, 0);
                put_u32(b, track.track_id);
                put_u32(b, 0);
                put_u32(b, 0); // duration
                b.extend_from_slice(&[0; 8]);
                put_u16(b, 0); // layer
                put_u16(b, 0); // alternate group
                put_u16(b, 0x0100); // volume
                put_u16(b, 0);
                write_matrix(b);
                put_u32(b, 0); // width
                put_u32(b, 0); // height
            });
            write_mdia(
                b,
                track.timescale,
                &track.entry,
                track.sample_rate,
                track.channels,
            );
        });
        write_box(b, b"mvex", |b| {
            write_trex(b, track.track_id, track.default_sample_duration)
        });
    });
}

/// Appends a `mdia` box for one audio track: `mdhd` (`timescale`, language "und"), `hdlr`
/// "soun", and `minf` with `smhd`, `dinf`/`dref` and an `stbl` holding the sample entry and empty
/// sample tables (the samples are in fragments). Shared by the HLS init segment and the M4A
/// encoder's header.
pub fn write_mdia(
    b: &mut Vec<u8>,
    timescale: u32,
    entry: &AudioSampleEntry<'_>,
    sample_rate: u32,
    channels: u16,
) {
    write_box(b, b"mdia", |b| {
        write_full_box(b, b"mdhd", 0, 0, |b| {
            put_u32(b, 0);
            put_u32(b, 0);
            put_u32(b, timescale);
            put_u32(b, 0);
            put_u16(b, 0x55C4); // "und"
            put_u16(b, 0);
        });
        write_full_box(b, b"hdlr", 0, 0, |b| {
            put_u32(b, 0);
            b.extend_from_slice(b"soun");
            b.extend_from_slice(&[0; 12]);
            b.extend_from_slice(b"SoundHandler\0");
        });
        write_box(b, b"minf", |b| {
            write_full_box(b, b"smhd", 0, 0, |b| put_u32(b, 0));
            write_box(b, b"dinf", |b| {
                write_full_box(b, b"dref", 0, 0, |b| {
                    put_u32(b, 1);
                    write_full_box(b, b"url ", 0, 1, |_| {});
                });
            });
            write_box(b, b"stbl", |b| {
                write_full_box(b, b"stsd", 0, 0, |b| {
                    put_u32(b, 1);
                    write_audio_sample_entry(b, entry, sample_rate, channels);
                });
                write_full_box(b, b"stts", 0, 0, |b| put_u32(b, 0));
                write_full_box(b, b"stsc", 0, 0, |b| put_u32(b, 0));
                write_full_box(b, b"stsz", 0, 0, |b| put_u64(b, 0));
                write_full_box(b, b"stco", 0, 0, |b| put_u32(b, 0));
            });
        });
    });
}

/// Appends a `trex` box: track `track_id`, sample description 1, `default_sample_duration`,
/// every sample a sync sample (audio).
pub fn write_trex(b: &mut Vec<u8>, track_id: u32, default_sample_duration: u32) {
    write_full_box(b, b"trex", 0, 0, |b| {
        put_u32(b, track_id);
        put_u32(b, 1); // sample description index
        put_u32(b, default_sample_duration);
        put_u32(b, 0); // sample size
        put_u32(b, 0x0200_0000); // flags: depends on no other sample (all are sync)
    });
}

/// The `scheme_id_uri` of ID3 timed metadata in `emsg` boxes ("Carriage of ID3 Timed Metadata
/// in the Common Media Application Format").
pub const ID3_EMSG_SCHEME: &str = "https://aomedia.org/emsg/ID3";

/// An event message (`emsg`, version 1, ISO/IEC 23009-1): an event at an absolute presentation
/// time, placed before the `moof` of the fragment it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMessage<'a> {
    /// Ticks per second of `presentation_time` and `event_duration`.
    pub timescale: u32,
    /// When the event happens, on the track's media timeline.
    pub presentation_time: u64,
    /// How long it lasts (`0xFFFF_FFFF`: unknown).
    pub event_duration: u32,
    /// An id, unique per scheme and value among the events of the stream.
    pub id: u32,
    /// The scheme (for example [`ID3_EMSG_SCHEME`]); NUL bytes end it early.
    pub scheme_id_uri: &'a str,
    /// The scheme's value; NUL bytes end it early.
    pub value: &'a str,
    /// The payload (for ID3: a complete ID3v2 tag).
    pub message_data: &'a [u8],
}

/// Appends an `emsg` box (version 1).
pub fn write_emsg(b: &mut Vec<u8>, event: &EventMessage<'_>) {
    write_full_box(b, b"emsg", 1, 0, |b| {
        put_u32(b, event.timescale);
        put_u64(b, event.presentation_time);
        put_u32(b, event.event_duration);
        put_u32(b, event.id);
        for text in [event.scheme_id_uri, event.value] {
            let end = text.find('\0').unwrap_or(text.len());
            b.extend_from_slice(&text.as_bytes()[..end]);
            b.push(0);
        }
        b.extend_from_slice(event.message_data);
    });
}

/// What a movie fragment (`moof`) says about its samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// The fragment's sequence number (`mfhd`): 1, 2, ... in decode order.
    pub sequence: u32,
    /// The track the samples belong to.
    pub track_id: u32,
    /// Decode time of the first sample, in timescale ticks (`tfdt`, 64-bit).
    pub base_decode_time: u64,
    /// The duration of a sample unless `sample_durations` says otherwise (`tfhd`).
    pub default_sample_duration: u32,
    /// The size of each sample, in order (`trun`).
    pub sample_sizes: &'a [u32],
    /// The duration of each sample, or empty when all last `default_sample_duration`. Written
    /// in the `trun` only when one differs from the default.
    pub sample_durations: &'a [u32],
}

impl Fragment<'_> {
    /// Bytes of the samples: the sum of `sample_sizes`.
    pub fn data_len(&self) -> u64 {
        self.sample_sizes.iter().map(|&s| u64::from(s)).sum()
    }
}

/// Appends `moof` (`mfhd`; `traf` with `tfhd` default-base-is-moof, `tfdt` and `trun` with the
/// data offset and each sample's size, and each duration when they differ) and the header of the
/// `mdat` box. The caller appends the samples' bytes ([`Fragment::data_len`] of them) right
/// after. If `sample_durations` is not empty it must have one entry per sample (missing entries
/// count as the default).
pub fn write_fragment_header(b: &mut Vec<u8>, fragment: &Fragment<'_>) {
    let f = fragment;
    let per_sample_durations = f
        .sample_durations
        .iter()
        .any(|&d| d != f.default_sample_duration);
    let count = u32::try_from(f.sample_sizes.len()).unwrap_or(u32::MAX);
    let moof_start = b.len();
    let mut offset_at = 0;
    write_box(b, b"moof", |b| {
        write_full_box(b, b"mfhd", 0, 0, |b| put_u32(b, f.sequence));
        write_box(b, b"traf", |b| {
            // Flags: default-base-is-moof | default-sample-duration-present.
            write_full_box(b, b"tfhd", 0, 0x02_0008, |b| {
                put_u32(b, f.track_id);
                put_u32(b, f.default_sample_duration);
            });
            write_full_box(b, b"tfdt", 1, 0, |b| put_u64(b, f.base_decode_time));
            // Flags: data-offset-present | sample-size-present (| sample-duration-present).
            let flags = if per_sample_durations {
                0x00_0301
            } else {
                0x00_0201
            };
            write_full_box(b, b"trun", 0, flags, |b| {
                put_u32(b, count);
                offset_at = b.len();
                put_u32(b, 0); // data offset, set below
                for (i, &size) in f.sample_sizes.iter().enumerate() {
                    if per_sample_durations {
                        let d = f
                            .sample_durations
                            .get(i)
                            .copied()
                            .unwrap_or(f.default_sample_duration);
                        put_u32(b, d);
                    }
                    put_u32(b, size);
                }
            });
        });
    });
    let moof_len = b.len() - moof_start;
    let data_len = f.data_len();
    let mdat_header_len = match u32::try_from(data_len + 8) {
        Ok(size) => {
            put_u32(b, size);
            b.extend_from_slice(b"mdat");
            8
        }
        Err(_) => {
            put_u32(b, 1);
            b.extend_from_slice(b"mdat");
            put_u64(b, data_len + 16);
            16
        }
    };
    // The samples start right after the moof and the mdat header (default-base-is-moof).
    let data_offset = u32::try_from(moof_len + mdat_header_len).unwrap_or(u32::MAX);
    if let Some(field) = b.get_mut(offset_at..offset_at + 4) {
        field.copy_from_slice(&data_offset.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxes(mut b: &[u8]) -> Vec<(String, usize)> {
        let mut v = Vec::new();
        while b.len() >= 8 {
            let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            v.push((String::from_utf8_lossy(&b[4..8]).into_owned(), size));
            b = &b[size..];
        }
        v
    }

    #[test]
    fn init_segment_is_ftyp_then_moov() {
        let mut b = Vec::new();
        write_init_segment(
            &mut b,
            &AudioTrack {
                track_id: 1,
                timescale: 44_100,
                sample_rate: 44_100,
                channels: 2,
                default_sample_duration: 1024,
                entry: AudioSampleEntry::Mp4a {
                    audio_specific_config: &[0x12, 0x10],
                    avg_bitrate: 128_000,
                },
            },
        );
        let names: Vec<String> = boxes(&b).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["ftyp", "moov"]);
        assert_eq!(boxes(&b).iter().map(|(_, s)| s).sum::<usize>(), b.len());
    }

    #[test]
    fn fragment_data_offset_points_past_the_mdat_header() {
        let mut b = Vec::new();
        let sizes = [10u32, 20, 30];
        let f = Fragment {
            sequence: 7,
            track_id: 1,
            base_decode_time: 3072,
            default_sample_duration: 1024,
            sample_sizes: &sizes,
            sample_durations: &[1024, 1024, 512],
        };
        write_fragment_header(&mut b, &f);
        let header_len = b.len();
        b.extend(std::iter::repeat_n(0xAB, 60));
        let list = boxes(&b);
        assert_eq!(list[0].0, "moof");
        assert_eq!(list[1], ("mdat".into(), 68));
        let trun = b.windows(4).position(|w| w == b"trun").unwrap_or(0);
        // flags: durations present because one differs.
        assert_eq!(&b[trun + 5..trun + 8], &[0x00, 0x03, 0x01]);
        let offset = u32::from_be_bytes([b[trun + 12], b[trun + 13], b[trun + 14], b[trun + 15]]);
        assert_eq!(offset as usize, header_len);
        assert_eq!(f.data_len(), 60);
    }

    #[test]
    fn flac_blocks_get_the_last_flag() {
        let mut b = Vec::new();
        let mut blocks = vec![0u8, 0, 0, 34];
        blocks.extend([0u8; 34]);
        blocks.extend([4u8, 0, 0, 2, 1, 2]); // a vorbis comment block
        write_flac_blocks(&mut b, &blocks);
        assert_eq!(b[0], 0x00);
        assert_eq!(b[38], 0x84);
        let mut bare = Vec::new();
        write_flac_blocks(&mut bare, &[0u8; 34]);
        assert_eq!(&bare[..4], &[0x80, 0, 0, 34]);
    }
}
