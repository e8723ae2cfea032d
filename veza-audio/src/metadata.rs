//! What is known about an input: format, duration, spec and tags.

use std::time::Duration;

use crate::format::{Bitrate, Codec, Container, SampleRate};

/// Textual tags read from an input and written into outputs where the format supports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Tags {
    /// Track title.
    pub title: Option<String>,
    /// Performing artist.
    pub artist: Option<String>,
    /// Album.
    pub album: Option<String>,
    /// Album artist.
    pub album_artist: Option<String>,
    /// Genre.
    pub genre: Option<String>,
    /// Release date or year, as written in the input.
    pub date: Option<String>,
    /// Track number, as written in the input (for example `3` or `3/12`).
    pub track: Option<String>,
    /// Free comment.
    pub comment: Option<String>,
}

impl Tags {
    /// True when no tag is set.
    pub fn is_empty(&self) -> bool {
        self.pairs().next().is_none()
    }

    /// The set tags as `(Vorbis-comment field name, value)` pairs, in a fixed order.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("TITLE", &self.title),
            ("ARTIST", &self.artist),
            ("ALBUM", &self.album),
            ("ALBUMARTIST", &self.album_artist),
            ("GENRE", &self.genre),
            ("DATE", &self.date),
            ("TRACKNUMBER", &self.track),
            ("COMMENT", &self.comment),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    }

    /// Fills the fields that are unset here from `other`.
    pub fn merge_missing(&mut self, other: &Tags) {
        let fill = |dst: &mut Option<String>, src: &Option<String>| {
            if dst.is_none() {
                dst.clone_from(src);
            }
        };
        fill(&mut self.title, &other.title);
        fill(&mut self.artist, &other.artist);
        fill(&mut self.album, &other.album);
        fill(&mut self.album_artist, &other.album_artist);
        fill(&mut self.genre, &other.genre);
        fill(&mut self.date, &other.date);
        fill(&mut self.track, &other.track);
        fill(&mut self.comment, &other.comment);
    }
}

/// What the decoder learned about an input before decoding it.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StreamInfo {
    /// The codec of the decoded track.
    pub codec: Codec,
    /// A finer codec name when one is known (for example `"aac-lc"`, `"he-aac"`, `"mp3"`).
    pub codec_profile: Option<String>,
    /// The container the bytes came in, probed from the bytes.
    pub container: Container,
    /// Sample rate of the decoded audio.
    pub sample_rate: SampleRate,
    /// Channels of the decoded audio.
    pub channels: u16,
    /// Bits per sample of the source, for lossless and PCM codecs.
    pub bits_per_sample: Option<u32>,
    /// Frames in the track, when the container says so (after encoder delay and padding).
    pub total_frames: Option<u64>,
    /// Average bitrate of the track, when the container or its size tells it.
    pub bitrate: Option<Bitrate>,
    /// Tags found in the container or the codec headers.
    pub tags: Tags,
}

impl StreamInfo {
    /// The duration, when the number of frames is known.
    pub fn duration(&self) -> Option<Duration> {
        self.total_frames
            .map(|n| Duration::from_secs_f64(n as f64 / f64::from(self.sample_rate.hz())))
    }
}
