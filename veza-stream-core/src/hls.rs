//! HLS and low-latency HLS: a segmenter that cuts encoded audio frames into segments, partial
//! segments for LL-HLS, media playlists with a sliding window (and delta updates), blocking
//! playlist reloads, master playlists for a ladder, and VOD playlists.
//!
//! Two packagings ([`SegmentFormat`]):
//! - packed audio: raw ADTS AAC or MP3 frames behind an ID3 tag that carries the segment's
//!   timestamp, as the HLS specification requires for packed audio; now-playing metadata rides
//!   in that tag (TIT2/TPE1);
//! - fMP4 ([`fmp4`]): an initialisation segment (`ftyp` + `moov`, served at `EXT-X-MAP`) and
//!   segments made of `moof` + `mdat` fragments, one per part (LL-HLS) or per segment, for AAC
//!   (`mp4a`/`esds`), FLAC (`fLaC`/`dfLa`) and Opus (`Opus`/`dOps`); now-playing metadata goes
//!   in an `emsg` box (ID3 in CMAF, scheme `https://aomedia.org/emsg/ID3`) before the next
//!   fragment.
//!
//! # Driving
//! Feed frames with [`Input::Frame`] (whole frames only: take them from the live ring or a
//! [`FrameSplitter`](crate::frame::FrameSplitter)), then drain [`Segmenter::poll_output`]. A
//! playlist request that asks for a part not yet cut ([`Input::PlaylistRequest`] with `_HLS_msn`
//! and `_HLS_part`) is held and answered by [`Output::Playlist`] when the part lands, or with
//! [`HlsError::Timeout`] after three target durations. Segments and parts are read with
//! [`Segmenter::segment`] and [`Segmenter::part`] (cloned `Bytes`, no copy), the fMP4
//! initialisation segment with [`Segmenter::init_segment`].
//!
//! # Delta updates and wall-clock time
//! With [`SegmenterConfig::delta_updates`] (the default), the playlist advertises
//! `CAN-SKIP-UNTIL` (six target durations) and a request with `skip` (`_HLS_skip=YES`) gets a
//! Playlist Delta Update: the oldest segments, those that end more than the skip boundary before
//! the end of the playlist, are replaced by `#EXT-X-SKIP:SKIPPED-SEGMENTS=N`.
//!
//! The segmenter never reads a clock: [`Input::WallClock`] anchors the current media time to a
//! Unix time in milliseconds given by the caller, and from the next segment on each segment
//! carries the wall-clock time of its first sample. `#EXT-X-PROGRAM-DATE-TIME` is written on the
//! first segment of the playlist (the first after `EXT-X-SKIP` in a delta update) and after each
//! discontinuity ([`Input::Discontinuity`], which may carry a new anchor).
//!
//! # Example
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::Bytes;
//! use veza_stream_core::frame::adts_header;
//! use veza_stream_core::hls::{Fmp4Track, Input, Output, Segmenter, SegmenterConfig};
//!
//! // ADTS AAC-LC frames of 300 bytes, 44.1 kHz stereo (as the live ring carries them).
//! let mut frame = vec![0x21u8; 300];
//! frame[..7].copy_from_slice(&adts_header(300, 44_100, 2).expect("a valid header"));
//! let frame = Bytes::from(frame);
//!
//! let t0 = Instant::now();
//! let track = Fmp4Track::aac_from_adts(&frame)?;
//! assert_eq!(track.codecs(), "mp4a.40.2"); // for the master playlist
//! let mut seg = Segmenter::new(SegmenterConfig::fmp4(track), t0);
//! seg.handle_input(Input::WallClock { now: t0, unix_ms: 1_700_000_000_000 });
//! for _ in 0..200 {
//!     let data = frame.clone();
//!     seg.handle_input(Input::Frame { now: t0, data, samples: 1024, sample_rate: 44_100 });
//! }
//! while !matches!(seg.poll_output(), Output::Timeout(_)) {}
//!
//! let init = seg.init_segment().expect("fMP4 has an init segment");
//! assert_eq!(&init[4..8], b"ftyp");
//! assert_eq!(&seg.segment(0).expect("segment 0 is complete")[4..8], b"moof");
//! let playlist = seg.media_playlist();
//! assert!(playlist.contains("#EXT-X-MAP:URI=\"seginit.mp4\""));
//! assert!(playlist.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z"));
//! assert!(playlist.contains("CAN-SKIP-UNTIL=24.0"));
//! # Ok::<(), veza_stream_core::hls::HlsError>(())
//! ```

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::MediaTime;
use crate::metadata::NowPlaying;

pub mod fmp4;

pub use fmp4::{Fmp4Codec, Fmp4Track};

use fmp4::FragmentBuilder;
use veza_audio::mp4;

/// The codec of a packed-audio stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PackedCodec {
    /// AAC-LC in ADTS frames (`.aac`, CODECS `mp4a.40.2`).
    AacLc,
    /// HE-AAC in ADTS frames (CODECS `mp4a.40.5`).
    HeAac,
    /// MP3 frames (`.mp3`, CODECS `mp4a.40.34`).
    Mp3,
}

impl PackedCodec {
    /// The CODECS attribute value.
    pub fn codecs(self) -> &'static str {
        match self {
            Self::AacLc => "mp4a.40.2",
            Self::HeAac => "mp4a.40.5",
            Self::Mp3 => "mp4a.40.34",
        }
    }

    /// File extension of segments.
    pub fn extension(self) -> &'static str {
        match self {
            Self::AacLc | Self::HeAac => "aac",
            Self::Mp3 => "mp3",
        }
    }

    /// MIME type of segments.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::AacLc | Self::HeAac => "audio/aac",
            Self::Mp3 => "audio/mpeg",
        }
    }
}

/// How a [`Segmenter`] packages segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SegmentFormat {
    /// Packed audio: an ID3 tag, then the frames as they are.
    Packed(PackedCodec),
    /// Fragmented MP4: an initialisation segment, then `moof` + `mdat` fragments.
    Fmp4(Fmp4Track),
}

impl SegmentFormat {
    /// The CODECS attribute value for a master playlist.
    pub fn codecs(&self) -> String {
        match self {
            Self::Packed(c) => c.codecs().into(),
            Self::Fmp4(t) => t.codecs(),
        }
    }

    /// File extension of segments and parts (`aac`, `mp3`, `m4s`).
    pub fn extension(&self) -> &'static str {
        match self {
            Self::Packed(c) => c.extension(),
            Self::Fmp4(_) => "m4s",
        }
    }

    /// MIME type of segments and parts (`audio/mp4` for fMP4 and its initialisation segment).
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Packed(c) => c.content_type(),
            Self::Fmp4(_) => "audio/mp4",
        }
    }
}

/// Settings of a [`Segmenter`].
#[derive(Debug, Clone)]
pub struct SegmenterConfig {
    /// Packaging and codec of the segments.
    pub format: SegmentFormat,
    /// Target segment duration (default 4 s). Segments end on the first frame boundary at or
    /// past it, so they last at most one frame longer.
    pub target_duration: Duration,
    /// Partial segment target for low-latency HLS (default `Some(1 s)`; `None`: plain HLS).
    pub part_target: Option<Duration>,
    /// Segments listed in the live playlist (default 6).
    pub window: usize,
    /// Segments kept after they leave the playlist, for clients still fetching them (default 2).
    pub keep_after_window: usize,
    /// URI prefix of segments: segment N is `{prefix}{N}.{ext}`, part P of it
    /// `{prefix}{N}.{P}.{ext}`, the fMP4 initialisation segment `{prefix}init.mp4`
    /// (default "seg").
    pub uri_prefix: String,
    /// How long a blocking playlist request may wait, in target durations (default 3).
    pub block_limit_targets: u32,
    /// Playlist delta updates (default `true`): `CAN-SKIP-UNTIL` (six target durations) is
    /// advertised and requests with `skip` get `EXT-X-SKIP` in place of the oldest segments.
    pub delta_updates: bool,
}

impl SegmenterConfig {
    /// Packed audio of `codec`, other settings at their defaults (see each field).
    pub fn new(codec: PackedCodec) -> Self {
        Self::with_format(SegmentFormat::Packed(codec))
    }

    /// fMP4 segments of `track`, other settings at their defaults (see each field).
    pub fn fmp4(track: Fmp4Track) -> Self {
        Self::with_format(SegmentFormat::Fmp4(track))
    }

    /// `format`, other settings at their defaults (see each field).
    pub fn with_format(format: SegmentFormat) -> Self {
        Self {
            format,
            target_duration: Duration::from_secs(4),
            part_target: Some(Duration::from_secs(1)),
            window: 6,
            keep_after_window: 2,
            uri_prefix: "seg".into(),
            block_limit_targets: 3,
            delta_updates: true,
        }
    }
}

/// Why a playlist or a segment could not be served, or a frame or a track was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HlsError {
    /// `_HLS_msn` is more than two segments past the last one (HTTP 400, as the spec says).
    #[error("_HLS_msn {requested} is too far ahead of the last segment {last}")]
    TooFarAhead {
        /// The requested media sequence number.
        requested: u64,
        /// The last complete or in-progress segment.
        last: u64,
    },
    /// `_HLS_part` without `_HLS_msn`, or a part on a playlist without parts (HTTP 400).
    #[error("bad blocking request: {0}")]
    BadRequest(&'static str),
    /// The blocking request waited its limit and the part did not come (HTTP 503).
    #[error("the requested segment did not arrive in time")]
    Timeout,
    /// The stream ended before the requested part (HTTP 404).
    #[error("the stream ended before the requested segment")]
    Ended,
    /// A frame could not be segmented (not the track's framing, rate or size): it was dropped.
    /// Fix the source, or the track description it is segmented as.
    #[error("frame dropped: {0}")]
    BadFrame(&'static str),
    /// An fMP4 track description is invalid (codec configuration missing or malformed).
    #[error("bad fMP4 track: {0}")]
    BadTrack(&'static str),
}

/// What a segmenter is told.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Input {
    /// One whole encoded frame.
    Frame {
        /// When it arrived.
        now: Instant,
        /// Its bytes.
        data: Bytes,
        /// Samples per channel in it.
        samples: u32,
        /// Its sample rate.
        sample_rate: u32,
    },
    /// Now-playing metadata: carried as ID3 text frames at the start of the next packed-audio
    /// segment; in fMP4, as an ID3 `emsg` event at this media time before the next fragment.
    Metadata {
        /// When.
        now: Instant,
        /// What plays.
        now_playing: NowPlaying,
    },
    /// A playlist request, blocking when `msn` is set and not yet available.
    PlaylistRequest {
        /// When.
        now: Instant,
        /// The caller's id for the request (echoed in [`Output::Playlist`]).
        id: u64,
        /// `_HLS_msn`.
        msn: Option<u64>,
        /// `_HLS_part`.
        part: Option<u32>,
        /// `_HLS_skip=YES` (or `v2`): answer with a delta update when the playlist has
        /// segments past the skip boundary (ignored with `delta_updates` off).
        skip: bool,
    },
    /// The wall-clock time (Unix milliseconds, from the caller's clock) of the next frame's
    /// first sample: segments opened from now on carry `EXT-X-PROGRAM-DATE-TIME`.
    WallClock {
        /// When.
        now: Instant,
        /// Unix time in milliseconds.
        unix_ms: u64,
    },
    /// A discontinuity (a new source, a gap, changed encoding): the segment in progress is
    /// closed and the next one gets `#EXT-X-DISCONTINUITY` (and `EXT-X-PROGRAM-DATE-TIME` when
    /// an anchor is known). `unix_ms` re-anchors wall-clock time at the next frame.
    Discontinuity {
        /// When.
        now: Instant,
        /// Unix milliseconds of the next frame's first sample, if known.
        unix_ms: Option<u64>,
    },
    /// The stream ended: the last segment is closed and the playlist gets `#EXT-X-ENDLIST`.
    End {
        /// When.
        now: Instant,
    },
    /// Time passed.
    Timeout {
        /// Now.
        now: Instant,
    },
}

/// What a segmenter asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// A part (LL-HLS) is complete.
    PartReady {
        /// Its segment.
        msn: u64,
        /// Its index in the segment.
        part: u32,
    },
    /// A segment is complete.
    SegmentReady {
        /// Its media sequence number.
        msn: u64,
    },
    /// The answer to a playlist request.
    Playlist {
        /// The request's id.
        id: u64,
        /// The playlist text, or why not.
        result: Result<String, HlsError>,
    },
    /// A frame was dropped ([`HlsError::BadFrame`]); the stream goes on without it.
    FrameRejected {
        /// Why.
        error: HlsError,
    },
    /// Call back with [`Input::Timeout`] at this instant.
    Timeout(Option<Instant>),
}

#[derive(Debug, Clone)]
struct Part {
    data: Bytes,
    duration: Duration,
}

#[derive(Debug, Clone)]
struct Segment {
    msn: u64,
    duration: Duration,
    parts: Vec<Part>,
    data: Bytes,
    discontinuity: bool,
    /// Unix milliseconds of the first sample.
    pdt_ms: Option<u64>,
}

#[derive(Debug)]
struct Building {
    msn: u64,
    samples: u64,
    parts: Vec<Part>,
    /// Packed audio: the bytes of the part in progress.
    part_buf: BytesMut,
    /// fMP4: the samples of the part in progress.
    frag: FragmentBuilder,
    part_samples: u64,
    /// Decode time (samples) of the first sample of the part in progress.
    part_start: u64,
    discontinuity: bool,
    pdt_ms: Option<u64>,
}

#[derive(Debug)]
struct Pending {
    id: u64,
    msn: u64,
    part: Option<u32>,
    skip: bool,
    deadline: Instant,
}

/// The segmenter of one rendition. See the [module docs](self).
#[derive(Debug)]
pub struct Segmenter {
    config: SegmenterConfig,
    done: VecDeque<Segment>,
    building: Option<Building>,
    next_msn: u64,
    media: MediaTime,
    metadata: Option<NowPlaying>,
    pending: Vec<Pending>,
    outputs: VecDeque<Output>,
    ended: bool,
    max_segment: Duration,
    /// fMP4: the initialisation segment.
    init: Option<Bytes>,
    /// fMP4: sequence number of the last fragment written (`mfhd`).
    fragments: u32,
    /// Media time and Unix milliseconds of the wall-clock anchor.
    anchor: Option<(MediaTime, u64)>,
    /// The next segment starts after a discontinuity.
    discontinuity_next: bool,
    /// Segments with a discontinuity that left `done`.
    discontinuities_dropped: u64,
    /// fMP4: media time (samples) at which `metadata` arrived.
    metadata_at: u64,
    /// fMP4: the id of the last `emsg` written.
    events: u32,
}

impl Segmenter {
    /// A segmenter with no segment yet.
    pub fn new(config: SegmenterConfig, _now: Instant) -> Self {
        let init = match &config.format {
            SegmentFormat::Fmp4(track) => Some(track.init_segment()),
            SegmentFormat::Packed(_) => None,
        };
        Self {
            config,
            done: VecDeque::new(),
            building: None,
            next_msn: 0,
            media: MediaTime::ZERO,
            metadata: None,
            pending: Vec::new(),
            outputs: VecDeque::new(),
            ended: false,
            max_segment: Duration::ZERO,
            init,
            fragments: 0,
            anchor: None,
            discontinuity_next: false,
            discontinuities_dropped: 0,
            metadata_at: 0,
            events: 0,
        }
    }

    /// The settings.
    pub fn config(&self) -> &SegmenterConfig {
        &self.config
    }

    /// The fMP4 initialisation segment (`ftyp` + `moov`), served at [`Segmenter::init_uri`];
    /// `None` for packed audio.
    pub fn init_segment(&self) -> Option<Bytes> {
        self.init.clone()
    }

    /// The URI of the fMP4 initialisation segment (`{prefix}init.mp4`); `None` for packed audio.
    pub fn init_uri(&self) -> Option<String> {
        self.init
            .as_ref()
            .map(|_| format!("{}init.mp4", self.config.uri_prefix))
    }

    /// The bytes of a complete segment still held.
    pub fn segment(&self, msn: u64) -> Option<Bytes> {
        self.done
            .iter()
            .find(|s| s.msn == msn)
            .map(|s| s.data.clone())
    }

    /// The bytes of a complete part (of a complete or in-progress segment).
    pub fn part(&self, msn: u64, part: u32) -> Option<Bytes> {
        let idx = usize::try_from(part).ok()?;
        if let Some(b) = self.building.as_ref().filter(|b| b.msn == msn) {
            return b.parts.get(idx).map(|p| p.data.clone());
        }
        self.done
            .iter()
            .find(|s| s.msn == msn)
            .and_then(|s| s.parts.get(idx))
            .map(|p| p.data.clone())
    }

    /// The media sequence number of the next segment to complete.
    pub fn next_msn(&self) -> u64 {
        self.building.as_ref().map_or(self.next_msn, |b| b.msn)
    }

    /// True after [`Input::End`].
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Feeds one input.
    pub fn handle_input(&mut self, input: Input) {
        match input {
            Input::Frame {
                now,
                data,
                samples,
                sample_rate,
            } => self.frame(now, data, samples, sample_rate),
            Input::Metadata {
                now: _,
                now_playing,
            } => {
                // Packed audio: in the ID3 tag of the next segment. fMP4: an `emsg` at this
                // media time, before the fragment that holds it.
                self.metadata_at = self.media.samples;
                self.metadata = Some(now_playing);
            }
            Input::PlaylistRequest {
                now,
                id,
                msn,
                part,
                skip,
            } => self.request(now, id, msn, part, skip),
            Input::WallClock { now: _, unix_ms } => self.anchor = Some((self.media, unix_ms)),
            Input::Discontinuity { now, unix_ms } => {
                if self.ended {
                    return;
                }
                self.close_part();
                self.close_segment();
                // Before the first segment there is nothing to be discontinuous with.
                self.discontinuity_next = self.next_msn > 0;
                if let Some(ms) = unix_ms {
                    self.anchor = Some((self.media, ms));
                }
                self.answer_pending(now);
            }
            Input::End { now } => {
                if !self.ended {
                    self.close_part();
                    self.close_segment();
                    self.ended = true;
                    self.answer_pending(now);
                }
            }
            Input::Timeout { now } => self.answer_pending(now),
        }
    }

    /// The next output; call until it returns [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.outputs.pop_front() {
            return o;
        }
        Output::Timeout(self.pending.iter().map(|p| p.deadline).min())
    }

    fn reject(&mut self, reason: &'static str) {
        self.outputs.push_back(Output::FrameRejected {
            error: HlsError::BadFrame(reason),
        });
    }

    fn frame(&mut self, now: Instant, data: Bytes, samples: u32, rate: u32) {
        if self.ended {
            return;
        }
        if rate == 0 {
            self.reject("sample rate 0");
            return;
        }
        // fMP4: the sample to store (the frame, or its payload past the ADTS header).
        let sample = match &self.config.format {
            SegmentFormat::Packed(_) => None,
            SegmentFormat::Fmp4(track) => {
                if rate != track.sample_rate {
                    self.reject("sample rate differs from the fMP4 track");
                    return;
                }
                if samples == 0 {
                    self.reject("a frame of 0 samples");
                    return;
                }
                match track.sample(&data) {
                    Ok(s) => Some(data.slice(data.len() - s.len()..)),
                    Err(HlsError::BadFrame(reason)) => {
                        self.reject(reason);
                        return;
                    }
                    Err(_) => {
                        self.reject("invalid frame");
                        return;
                    }
                }
            }
        };
        if self.media.rate != rate {
            // A rate change restarts media time at the same instant in the new rate.
            let at = self.media.as_duration();
            self.media = MediaTime::new(
                (at.as_nanos() * u128::from(rate) / 1_000_000_000) as u64,
                rate,
            );
        }
        if self.building.is_none() {
            let msn = self.next_msn;
            self.next_msn += 1;
            let mut part_buf = BytesMut::new();
            if sample.is_none() {
                part_buf.extend_from_slice(&id3_tag(self.media, self.metadata.take().as_ref()));
            }
            let pdt_ms = self.anchor.map(|(at, ms)| {
                let since = self.media.duration_since(at).as_millis();
                ms.saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
            });
            self.building = Some(Building {
                msn,
                samples: 0,
                parts: Vec::new(),
                part_buf,
                frag: FragmentBuilder::default(),
                part_samples: 0,
                part_start: self.media.samples,
                discontinuity: std::mem::take(&mut self.discontinuity_next),
                pdt_ms,
            });
        }
        let b = self.building.as_mut().expect("a segment is being built");
        if b.part_samples == 0 {
            b.part_start = self.media.samples;
        }
        match &sample {
            Some(s) => b.frag.push(s, samples),
            None => b.part_buf.extend_from_slice(&data),
        }
        b.part_samples += u64::from(samples);
        b.samples += u64::from(samples);
        self.media = self.media.add_samples(u64::from(samples));
        let part_dur = MediaTime::new(b.part_samples, rate).as_duration();
        let seg_dur = MediaTime::new(b.samples, rate).as_duration();
        if self.config.part_target.is_some_and(|t| part_dur >= t) {
            self.close_part();
        }
        if seg_dur >= self.config.target_duration {
            self.close_part();
            self.close_segment();
        }
        self.answer_pending(now);
    }

    fn close_part(&mut self) {
        let fmp4 = self.init.is_some();
        let Some(b) = self.building.as_mut() else {
            return;
        };
        if b.part_samples == 0 {
            return;
        }
        let duration = MediaTime::new(b.part_samples, self.media.rate).as_duration();
        let data = if fmp4 {
            // mfhd sequence numbers start at 1 and increase by one per fragment.
            self.fragments = self.fragments.wrapping_add(1).max(1);
            let event = self.metadata.take().map(|np| {
                self.events = self.events.wrapping_add(1);
                let mut emsg = Vec::with_capacity(160);
                mp4::write_emsg(
                    &mut emsg,
                    &mp4::EventMessage {
                        timescale: self.media.rate,
                        presentation_time: self.metadata_at.max(b.part_start),
                        event_duration: u32::MAX,
                        id: self.events,
                        scheme_id_uri: mp4::ID3_EMSG_SCHEME,
                        value: "",
                        message_data: &id3_metadata_tag(&np),
                    },
                );
                emsg
            });
            b.frag
                .finish(event.as_deref(), self.fragments, b.part_start)
        } else {
            b.part_buf.split().freeze()
        };
        b.parts.push(Part { data, duration });
        b.part_samples = 0;
        let (msn, part) = (b.msn, (b.parts.len() - 1) as u32);
        if self.config.part_target.is_some() {
            self.outputs.push_back(Output::PartReady { msn, part });
        }
    }

    fn close_segment(&mut self) {
        let Some(b) = self.building.take() else {
            return;
        };
        if b.samples == 0 {
            self.next_msn = b.msn;
            self.discontinuity_next |= b.discontinuity;
            return;
        }
        let duration = MediaTime::new(b.samples, self.media.rate).as_duration();
        let total: usize = b.parts.iter().map(|p| p.data.len()).sum();
        let mut data = BytesMut::with_capacity(total);
        for p in &b.parts {
            data.extend_from_slice(&p.data);
        }
        self.max_segment = self.max_segment.max(duration);
        self.done.push_back(Segment {
            msn: b.msn,
            duration,
            parts: b.parts,
            data: data.freeze(),
            discontinuity: b.discontinuity,
            pdt_ms: b.pdt_ms,
        });
        while self.done.len() > self.config.window + self.config.keep_after_window {
            if self.done.pop_front().is_some_and(|s| s.discontinuity) {
                self.discontinuities_dropped += 1;
            }
        }
        self.outputs.push_back(Output::SegmentReady { msn: b.msn });
    }

    fn is_available(&self, msn: u64, part: Option<u32>) -> bool {
        if let Some(b) = &self.building {
            if msn < b.msn {
                return true;
            }
            if msn == b.msn {
                return part.is_some_and(|p| (p as usize) < b.parts.len());
            }
            return false;
        }
        msn < self.next_msn
    }

    fn request(&mut self, now: Instant, id: u64, msn: Option<u64>, part: Option<u32>, skip: bool) {
        let Some(msn) = msn else {
            let result = if part.is_some() {
                Err(HlsError::BadRequest("_HLS_part without _HLS_msn"))
            } else {
                Ok(self.playlist(skip))
            };
            self.outputs.push_back(Output::Playlist { id, result });
            return;
        };
        if part.is_some() && self.config.part_target.is_none() {
            self.outputs.push_back(Output::Playlist {
                id,
                result: Err(HlsError::BadRequest("this playlist has no parts")),
            });
            return;
        }
        let last = self.next_msn();
        if msn > last + 2 {
            self.outputs.push_back(Output::Playlist {
                id,
                result: Err(HlsError::TooFarAhead {
                    requested: msn,
                    last,
                }),
            });
            return;
        }
        let limit = self.config.target_duration * self.config.block_limit_targets.max(1);
        self.pending.push(Pending {
            id,
            msn,
            part,
            skip,
            deadline: now + limit,
        });
        self.answer_pending(now);
    }

    fn answer_pending(&mut self, now: Instant) {
        if self.pending.is_empty() {
            return;
        }
        // Rendered at most once per kind (full, delta) for all the requests answered now.
        let mut rendered: [Option<String>; 2] = [None, None];
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            let result = if self.is_available(p.msn, p.part) {
                let skip = p.skip;
                Some(Ok(rendered[usize::from(skip)]
                    .get_or_insert_with(|| self.playlist(skip))
                    .clone()))
            } else if self.ended {
                Some(Err(HlsError::Ended))
            } else if now >= p.deadline {
                Some(Err(HlsError::Timeout))
            } else {
                None
            };
            match result {
                Some(result) => {
                    let p = self.pending.swap_remove(i);
                    self.outputs
                        .push_back(Output::Playlist { id: p.id, result });
                }
                None => i += 1,
            }
        }
    }

    /// The URI of segment `msn`, relative to the media playlist: `{prefix}{msn}.{ext}`.
    pub fn segment_uri(&self, msn: u64) -> String {
        format!(
            "{}{msn}.{}",
            self.config.uri_prefix,
            self.config.format.extension()
        )
    }

    /// The URI of part `part` of segment `msn`: `{prefix}{msn}.{part}.{ext}`.
    pub fn part_uri(&self, msn: u64, part: usize) -> String {
        format!(
            "{}{msn}.{part}.{}",
            self.config.uri_prefix,
            self.config.format.extension()
        )
    }

    /// The live media playlist now (in full).
    pub fn media_playlist(&self) -> String {
        self.playlist(false)
    }

    /// The skip boundary (`CAN-SKIP-UNTIL`) in seconds: six target durations; `None` with
    /// delta updates off.
    pub fn skip_boundary(&self) -> Option<u64> {
        self.config
            .delta_updates
            .then(|| 6 * self.target_duration_secs())
    }

    /// `EXT-X-TARGETDURATION`: the longest segment (or the target), rounded, at least 1 s.
    fn target_duration_secs(&self) -> u64 {
        self.max_segment
            .max(self.config.target_duration)
            .as_secs_f64()
            .round()
            .max(1.0) as u64
    }

    /// The live media playlist now; with `skip` (`_HLS_skip=YES`) and delta updates on, a
    /// Playlist Delta Update: the segments that end more than the skip boundary before the end
    /// of the playlist are replaced by `#EXT-X-SKIP:SKIPPED-SEGMENTS=N` (none may be).
    pub fn playlist(&self, skip: bool) -> String {
        let window_start = self.done.len().saturating_sub(self.config.window);
        let listed: Vec<&Segment> = self.done.iter().skip(window_start).collect();
        let target = self.target_duration_secs();
        let skipped = match self.skip_boundary() {
            Some(boundary) if skip => {
                let total: Duration = listed.iter().map(|s| s.duration).sum();
                let boundary = Duration::from_secs(boundary);
                let mut end = Duration::ZERO;
                listed
                    .iter()
                    .take_while(|s| {
                        end += s.duration;
                        total - end >= boundary
                    })
                    .count()
            }
            _ => 0,
        };
        let mut m = String::with_capacity(256 + listed.len() * 96);
        m.push_str("#EXTM3U\n");
        let ll = self.config.part_target;
        let version = if ll.is_some() || self.config.delta_updates {
            9
        } else if self.init.is_some() {
            6
        } else {
            3
        };
        let _ = writeln!(m, "#EXT-X-VERSION:{version}");
        let _ = writeln!(m, "#EXT-X-TARGETDURATION:{target}");
        let first = listed.first().map_or_else(|| self.next_msn(), |s| s.msn);
        let _ = writeln!(m, "#EXT-X-MEDIA-SEQUENCE:{first}");
        let discontinuity_seq = self.discontinuities_dropped
            + self
                .done
                .iter()
                .take(window_start)
                .filter(|s| s.discontinuity)
                .count() as u64;
        if discontinuity_seq > 0 {
            let _ = writeln!(m, "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_seq}");
        }
        let mut control = Vec::with_capacity(3);
        if let Some(pt) = ll {
            let part_target = self.part_target_advertised(pt);
            control.push("CAN-BLOCK-RELOAD=YES".to_string());
            control.push(format!("PART-HOLD-BACK={:.3}", part_target * 3.0));
        }
        if let Some(boundary) = self.skip_boundary() {
            control.push(format!("CAN-SKIP-UNTIL={:.1}", boundary as f64));
        }
        if !control.is_empty() {
            let _ = writeln!(m, "#EXT-X-SERVER-CONTROL:{}", control.join(","));
        }
        if let Some(pt) = ll {
            let part_target = self.part_target_advertised(pt);
            let _ = writeln!(m, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
        }
        if skipped > 0 {
            let _ = writeln!(m, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        if let Some(uri) = self.init_uri() {
            let _ = writeln!(m, "#EXT-X-MAP:URI=\"{uri}\"");
        }
        // Parts are listed for the last segments, within three target durations of the edge.
        let part_segments = 3usize;
        let with_parts_from = listed.len().saturating_sub(part_segments);
        let mut prev_pdt: Option<Option<u64>> = None;
        for (i, s) in listed.iter().enumerate().skip(skipped) {
            write_segment_tags(&mut m, s.discontinuity, s.pdt_ms, prev_pdt);
            prev_pdt = Some(s.pdt_ms);
            if ll.is_some() && i >= with_parts_from {
                for (pi, p) in s.parts.iter().enumerate() {
                    let _ = writeln!(
                        m,
                        "#EXT-X-PART:DURATION={},URI=\"{}\",INDEPENDENT=YES",
                        secs6(listed_duration(p.duration)),
                        self.part_uri(s.msn, pi)
                    );
                }
            }
            let _ = writeln!(m, "#EXTINF:{},", secs6(s.listed()));
            let _ = writeln!(m, "{}", self.segment_uri(s.msn));
        }
        if ll.is_some() && !self.ended {
            let (msn, next_part) = match &self.building {
                Some(b) => {
                    if !b.parts.is_empty() {
                        write_segment_tags(&mut m, b.discontinuity, b.pdt_ms, prev_pdt);
                    }
                    for (pi, p) in b.parts.iter().enumerate() {
                        let _ = writeln!(
                            m,
                            "#EXT-X-PART:DURATION={},URI=\"{}\",INDEPENDENT=YES",
                            secs6(listed_duration(p.duration)),
                            self.part_uri(b.msn, pi)
                        );
                    }
                    (b.msn, b.parts.len())
                }
                None => (self.next_msn, 0),
            };
            let _ = writeln!(
                m,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
                self.part_uri(msn, next_part)
            );
        }
        if self.ended {
            m.push_str("#EXT-X-ENDLIST\n");
        }
        m
    }

    /// PART-TARGET must be at least every part's duration; parts end on frame boundaries, so
    /// the longest part seen (or the target) is advertised.
    fn part_target_advertised(&self, target: Duration) -> f64 {
        let longest = self
            .done
            .iter()
            .flat_map(|s| s.parts.iter())
            .chain(self.building.iter().flat_map(|b| b.parts.iter()))
            .map(|p| p.duration)
            .max()
            .unwrap_or(target);
        longest.max(target).as_secs_f64()
    }
}

/// The duration a live playlist lists for a segment or part: its duration in whole
/// microseconds, less 2 µs, so that every listed duration is shorter than its audio.
///
/// Players place parts and segments by adding up the listed durations from where they started,
/// and compare that with the end of what they buffered (media time, kept in microseconds by
/// browsers). A listed duration rounded up, or one rounded down less than a part that started
/// the count, can put the end of the buffer a few microseconds before the listed end of the last
/// part; hls.js then loads that part again and again instead of the next one. Listed durations
/// that are each at least 1 µs short (and a segment listed as the sum of its parts) keep the end
/// of the buffer past every listed boundary; the 2 µs per part this costs is corrected by players
/// from the media timestamps.
fn listed_duration(d: Duration) -> Duration {
    Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .saturating_sub(Duration::from_micros(2))
}

/// A listed duration in seconds with six decimals.
fn secs6(d: Duration) -> String {
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

impl Segment {
    /// The duration the playlist lists: the sum of its parts' listed durations (see
    /// [`listed_duration`]).
    fn listed(&self) -> Duration {
        if self.parts.is_empty() {
            listed_duration(self.duration)
        } else {
            self.parts.iter().map(|p| listed_duration(p.duration)).sum()
        }
    }
}

/// The tags before a segment (or the parts of the one in progress): `EXT-X-DISCONTINUITY`, and
/// `EXT-X-PROGRAM-DATE-TIME` on the first segment written (`prev_pdt` is `None`), after a
/// discontinuity, and where wall-clock time starts.
fn write_segment_tags(
    m: &mut String,
    discontinuity: bool,
    pdt_ms: Option<u64>,
    prev_pdt: Option<Option<u64>>,
) {
    if discontinuity {
        m.push_str("#EXT-X-DISCONTINUITY\n");
    }
    if let Some(ms) = pdt_ms {
        if discontinuity || !matches!(prev_pdt, Some(Some(_))) {
            let _ = writeln!(m, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601_ms(ms));
        }
    }
}

/// Unix milliseconds as an ISO 8601 / RFC 3339 UTC date-time with milliseconds
/// (`2026-11-24T23:41:41.123Z`), as `EXT-X-PROGRAM-DATE-TIME` wants.
pub fn iso8601_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let ms = unix_ms % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, min, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Days since 1970-01-01 to a proleptic Gregorian civil date (eras of 400 years).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z")
}

/// The ID3v2.4 tag at the start of a packed-audio segment: the Apple transport-stream timestamp
/// of its first sample (PRIV `com.apple.streaming.transportStreamTimestamp`, 33-bit 90 kHz) and,
/// when given, the now-playing title (TIT2) and artist (TPE1) as timed metadata.
pub fn id3_tag(start: MediaTime, metadata: Option<&NowPlaying>) -> Vec<u8> {
    id3(Some(start), metadata)
}

/// An ID3v2.4 tag with the now-playing title (TIT2) and artist (TPE1) only: the message of an
/// fMP4 `emsg` timed-metadata event.
pub fn id3_metadata_tag(metadata: &NowPlaying) -> Vec<u8> {
    id3(None, Some(metadata))
}

fn id3(start: Option<MediaTime>, metadata: Option<&NowPlaying>) -> Vec<u8> {
    fn frame(out: &mut Vec<u8>, id: &[u8; 4], body: &[u8]) {
        out.extend_from_slice(id);
        out.extend_from_slice(&synchsafe(body.len() as u32));
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(body);
    }
    let mut frames = Vec::with_capacity(96);
    if let Some(start) = start {
        let mut priv_body = b"com.apple.streaming.transportStreamTimestamp\0".to_vec();
        let ts = start.ticks_90k() & 0x1_FFFF_FFFF;
        priv_body.extend_from_slice(&ts.to_be_bytes());
        frame(&mut frames, b"PRIV", &priv_body);
    }
    if let Some(np) = metadata {
        for (id, text) in [(b"TIT2", &np.title), (b"TPE1", &np.artist)] {
            if let Some(t) = text {
                // UTF-8 (encoding byte 3), capped so a hostile title cannot bloat segments.
                let mut t = t.as_str();
                let mut cut = t.len().min(1024);
                while !t.is_char_boundary(cut) {
                    cut -= 1;
                }
                t = &t[..cut];
                let mut body = vec![3u8];
                body.extend_from_slice(t.as_bytes());
                frame(&mut frames, id, &body);
            }
        }
    }
    let mut tag = Vec::with_capacity(10 + frames.len());
    tag.extend_from_slice(b"ID3\x04\x00\x00");
    tag.extend_from_slice(&synchsafe(frames.len() as u32));
    tag.extend_from_slice(&frames);
    tag
}

fn synchsafe(n: u32) -> [u8; 4] {
    [
        ((n >> 21) & 0x7F) as u8,
        ((n >> 14) & 0x7F) as u8,
        ((n >> 7) & 0x7F) as u8,
        (n & 0x7F) as u8,
    ]
}

/// One rendition of a master playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    /// URI of its media playlist, relative to the master.
    pub uri: String,
    /// Peak bitrate in bits per second (BANDWIDTH).
    pub bandwidth: u32,
    /// Average bitrate (AVERAGE-BANDWIDTH), if known.
    pub average_bandwidth: Option<u32>,
    /// CODECS value.
    pub codecs: String,
    /// A name for players' menus (e.g. "AAC 96k").
    pub name: Option<String>,
}

/// A master playlist listing `renditions` in the given order (players usually start with the
/// first: order them with the ABR module's choice first).
pub fn master_playlist(renditions: &[Rendition]) -> String {
    let mut m = String::from("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for r in renditions {
        let _ = write!(m, "#EXT-X-STREAM-INF:BANDWIDTH={}", r.bandwidth);
        if let Some(a) = r.average_bandwidth {
            let _ = write!(m, ",AVERAGE-BANDWIDTH={a}");
        }
        let _ = write!(m, ",CODECS=\"{}\"", r.codecs.replace('"', ""));
        if let Some(n) = &r.name {
            let _ = write!(m, ",NAME=\"{}\"", n.replace(['"', '\n', '\r'], ""));
        }
        m.push('\n');
        m.push_str(&r.uri.replace(['\n', '\r'], ""));
        m.push('\n');
    }
    m
}

/// A segment of an on-demand file: which frames it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VodSegment {
    /// Index of its first frame.
    pub first_frame: usize,
    /// Frames in it.
    pub frames: usize,
    /// Media time of its first sample.
    pub start: MediaTime,
    /// Its duration.
    pub duration: Duration,
}

/// Cuts a file's frames (samples per frame, in order) into segments of at least `target`
/// (the last may be shorter), on frame boundaries.
pub fn plan_vod(
    frame_samples: impl IntoIterator<Item = u32>,
    rate: u32,
    target: Duration,
) -> Vec<VodSegment> {
    let mut out = Vec::new();
    let mut first = 0usize;
    let mut frames = 0usize;
    let mut samples = 0u64;
    let mut start = MediaTime::new(0, rate);
    for (i, s) in frame_samples.into_iter().enumerate() {
        if frames == 0 {
            first = i;
        }
        frames += 1;
        samples += u64::from(s);
        let d = MediaTime::new(samples, rate).as_duration();
        if d >= target {
            out.push(VodSegment {
                first_frame: first,
                frames,
                start,
                duration: d,
            });
            start = start.add_samples(samples);
            frames = 0;
            samples = 0;
        }
    }
    if frames > 0 {
        out.push(VodSegment {
            first_frame: first,
            frames,
            start,
            duration: MediaTime::new(samples, rate).as_duration(),
        });
    }
    out
}

/// The VOD media playlist of planned segments, segment N at `{prefix}{N}.{ext}`.
pub fn vod_playlist(segments: &[VodSegment], uri_prefix: &str, ext: &str) -> String {
    let target = segments
        .iter()
        .map(|s| s.duration.as_secs_f64().round() as u64)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut m = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n"
    );
    for (i, s) in segments.iter().enumerate() {
        let _ = writeln!(
            m,
            "#EXTINF:{:.5},\n{uri_prefix}{i}.{ext}",
            s.duration.as_secs_f64()
        );
    }
    m.push_str("#EXT-X-ENDLIST\n");
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adts(len: usize) -> Bytes {
        let mut f = vec![0x21u8; len];
        f[..7].copy_from_slice(&crate::frame::adts_header(len, 44_100, 2).expect("a valid header"));
        Bytes::from(f)
    }

    fn feed(s: &mut Segmenter, t0: Instant, n: usize) {
        for i in 0..n {
            s.handle_input(Input::Frame {
                now: t0 + Duration::from_micros(23_220 * i as u64),
                data: adts(300),
                samples: 1024,
                sample_rate: 44_100,
            });
        }
    }

    fn drain(s: &mut Segmenter) -> Vec<Output> {
        let mut v = Vec::new();
        loop {
            match s.poll_output() {
                Output::Timeout(_) => return v,
                o => v.push(o),
            }
        }
    }

    #[test]
    fn segments_and_parts_are_cut_on_frames_near_target() {
        let t0 = Instant::now();
        let mut s = Segmenter::new(SegmenterConfig::new(PackedCodec::AacLc), t0);
        // 565 frames of 1024 samples: three segments of 173 frames (4.017 s) and one part of 44.
        feed(&mut s, t0, 565);
        let out = drain(&mut s);
        let segs: Vec<_> = out
            .iter()
            .filter(|o| matches!(o, Output::SegmentReady { .. }))
            .collect();
        assert_eq!(segs.len(), 3);
        let pl = s.media_playlist();
        assert!(pl.contains("#EXT-X-TARGETDURATION:4\n"), "{pl}");
        // Listed durations are in microseconds, 2 µs short per part (see `listed_duration`): parts of
        // 44, 44, 44 and 41 frames.
        assert!(pl.contains("#EXTINF:4.017044,\nseg0.aac\n"), "{pl}");
        assert!(
            pl.contains("#EXT-X-PART:DURATION=1.021676,URI=\"seg3.0.aac\",INDEPENDENT=YES"),
            "{pl}"
        );
        assert!(
            pl.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg3.1.aac\""),
            "{pl}"
        );
        let seg = s.segment(1).unwrap();
        assert_eq!(&seg[..3], b"ID3");
        // The segment is the concatenation of its parts.
        let parts: Vec<u8> = (0..4)
            .flat_map(|p| s.part(1, p).unwrap().to_vec())
            .collect();
        assert_eq!(parts, seg.to_vec());
    }

    #[test]
    fn blocking_request_is_answered_when_the_part_lands() {
        let t0 = Instant::now();
        let mut s = Segmenter::new(SegmenterConfig::new(PackedCodec::AacLc), t0);
        feed(&mut s, t0, 10);
        drain(&mut s);
        s.handle_input(Input::PlaylistRequest {
            now: t0,
            id: 7,
            msn: Some(0),
            part: Some(1),
            skip: false,
        });
        let out = drain(&mut s);
        assert!(out.is_empty(), "held until the part lands: {out:?}");
        assert!(matches!(s.poll_output(), Output::Timeout(Some(_))));
        feed(&mut s, t0, 80);
        let out = drain(&mut s);
        let answer = out
            .iter()
            .find_map(|o| match o {
                Output::Playlist { id: 7, result } => Some(result.clone()),
                _ => None,
            })
            .expect("answered");
        assert!(answer.unwrap().contains("seg0.1.aac"));
        // Too far ahead: 400 at once.
        s.handle_input(Input::PlaylistRequest {
            now: t0,
            id: 8,
            msn: Some(99),
            part: None,
            skip: false,
        });
        assert!(matches!(
            drain(&mut s)[..],
            [Output::Playlist {
                id: 8,
                result: Err(HlsError::TooFarAhead { .. })
            }]
        ));
    }

    #[test]
    fn held_request_times_out_after_three_targets() {
        let t0 = Instant::now();
        let mut s = Segmenter::new(SegmenterConfig::new(PackedCodec::Mp3), t0);
        s.handle_input(Input::PlaylistRequest {
            now: t0,
            id: 1,
            msn: Some(0),
            part: Some(0),
            skip: false,
        });
        assert_eq!(
            s.poll_output(),
            Output::Timeout(Some(t0 + Duration::from_secs(12)))
        );
        s.handle_input(Input::Timeout {
            now: t0 + Duration::from_secs(12),
        });
        assert_eq!(
            drain(&mut s),
            vec![Output::Playlist {
                id: 1,
                result: Err(HlsError::Timeout)
            }]
        );
    }

    #[test]
    fn listed_durations_are_short_and_segments_are_the_sum_of_their_parts() {
        let t0 = Instant::now();
        let mut cfg = SegmenterConfig::new(PackedCodec::AacLc);
        cfg.target_duration = Duration::from_secs(1);
        cfg.part_target = Some(Duration::from_millis(250));
        let mut s = Segmenter::new(cfg, t0);
        feed(&mut s, t0, 44 * 3);
        let pl = s.media_playlist();
        let micros = |v: &str| -> u64 {
            let (a, b) = v.split_once('.').unwrap();
            assert_eq!(b.len(), 6, "{v}");
            a.parse::<u64>().unwrap() * 1_000_000 + b.parse::<u64>().unwrap()
        };
        let parts: Vec<u64> = pl
            .lines()
            .filter_map(|l| l.strip_prefix("#EXT-X-PART:DURATION="))
            .map(|l| micros(l.split(',').next().unwrap()))
            .collect();
        let segs: Vec<u64> = pl
            .lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .map(|l| micros(l.trim_end_matches(',')))
            .collect();
        // 11 frames per part (255419.5 µs), four parts per segment.
        assert_eq!(parts.len(), 12, "{pl}");
        assert!(parts.iter().all(|&p| p == 255_417), "{pl}");
        assert_eq!(segs, vec![4 * 255_417; 3], "{pl}");
    }

    #[test]
    fn id3_timestamp_is_33_bit_90khz() {
        let tag = id3_tag(MediaTime::new(44_100 * 10, 44_100), None);
        assert_eq!(&tag[..5], b"ID3\x04\x00");
        let ts = u64::from_be_bytes(tag[tag.len() - 8..].try_into().unwrap());
        assert_eq!(ts, 900_000);
    }

    #[test]
    fn vod_plan_tiles_the_file() {
        let segs = plan_vod(
            std::iter::repeat_n(1152u32, 1000),
            44_100,
            Duration::from_secs(6),
        );
        assert_eq!(segs.iter().map(|s| s.frames).sum::<usize>(), 1000);
        for w in segs.windows(2) {
            assert_eq!(w[0].first_frame + w[0].frames, w[1].first_frame);
        }
        let pl = vod_playlist(&segs, "s", "mp3");
        assert!(pl.ends_with("#EXT-X-ENDLIST\n"));
        assert!(pl.contains("#EXT-X-TARGETDURATION:6\n"));
    }

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601_ms(1_795_995_701_007), "2026-11-29T23:41:41.007Z");
        assert_eq!(iso8601_ms(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn delta_update_skips_segments_past_the_boundary() {
        let t0 = Instant::now();
        let mut cfg = SegmenterConfig::new(PackedCodec::AacLc);
        cfg.target_duration = Duration::from_secs(1);
        cfg.window = 20;
        let mut s = Segmenter::new(cfg, t0);
        // 15 segments of 44 frames (1.0216 s): 15.3 s listed; the boundary is 6 s.
        feed(&mut s, t0, 15 * 44);
        drain(&mut s);
        let full = s.media_playlist();
        assert!(full.contains("CAN-SKIP-UNTIL=6.0"), "advertised: {full}");
        assert!(!full.contains("EXT-X-SKIP"));
        let delta = s.playlist(true);
        // Segments 0..=8 end more than 6 s before the end (15 - 9 = 6 segments remain past).
        assert!(
            delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=9\n"),
            "{delta}"
        );
        assert!(delta.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
        assert!(!delta.contains("seg8.aac\n") && delta.contains("seg9.aac\n"));
        // Off: no advertisement, no skipping.
        s.config.delta_updates = false;
        assert!(!s.playlist(true).contains("SKIP"));
    }

    #[test]
    fn program_date_time_on_first_segment_and_after_discontinuities() {
        let t0 = Instant::now();
        let mut cfg = SegmenterConfig::new(PackedCodec::AacLc);
        cfg.part_target = None;
        cfg.delta_updates = false;
        cfg.window = 3;
        cfg.keep_after_window = 0;
        let mut s = Segmenter::new(cfg, t0);
        let anchor = 1_795_995_701_000u64;
        s.handle_input(Input::WallClock {
            now: t0,
            unix_ms: anchor,
        });
        feed(&mut s, t0, 173 * 2);
        let pl = s.media_playlist();
        assert!(pl.starts_with("#EXTM3U\n#EXT-X-VERSION:3\n"), "{pl}");
        assert_eq!(pl.matches("#EXT-X-PROGRAM-DATE-TIME").count(), 1, "{pl}");
        assert!(pl.contains("#EXT-X-PROGRAM-DATE-TIME:2026-11-29T23:41:41.000Z\n#EXTINF"));
        // A discontinuity with a new anchor an hour later.
        s.handle_input(Input::Discontinuity {
            now: t0,
            unix_ms: Some(anchor + 3_600_000),
        });
        feed(&mut s, t0, 173 * 2);
        let pl = s.media_playlist();
        // Segment 0 left the window (3 listed): segment 1 is first and gets its own PDT,
        // 4.017 s after the anchor.
        assert!(pl.contains("#EXT-X-MEDIA-SEQUENCE:1\n"), "{pl}");
        assert!(
            pl.contains(
                "#EXT-X-PROGRAM-DATE-TIME:2026-11-29T23:41:45.017Z\n#EXTINF:4.017050,\nseg1.aac"
            ),
            "{pl}"
        );
        assert!(
            pl.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2026-11-30T00:41:41.000Z\n#EXTINF:4.017050,\nseg2.aac"),
            "{pl}"
        );
        assert!(!pl.contains("DISCONTINUITY-SEQUENCE"));
        // Once the discontinuous segment leaves, the sequence counts it.
        feed(&mut s, t0, 173 * 3);
        let pl = s.media_playlist();
        assert!(pl.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{pl}");
        assert!(!pl.contains("#EXT-X-DISCONTINUITY\n"), "{pl}");
    }

    #[test]
    fn fmp4_segments_are_fragments_behind_a_map() {
        let t0 = Instant::now();
        let track = Fmp4Track::aac_from_adts(&adts(300)).unwrap();
        let mut s = Segmenter::new(SegmenterConfig::fmp4(track), t0);
        assert_eq!(s.init_uri().as_deref(), Some("seginit.mp4"));
        let init = s.init_segment().unwrap();
        assert_eq!(&init[4..8], b"ftyp");
        feed(&mut s, t0, 200);
        let out = drain(&mut s);
        assert!(out.contains(&Output::SegmentReady { msn: 0 }));
        let pl = s.media_playlist();
        assert!(pl.contains("#EXT-X-MAP:URI=\"seginit.mp4\"\n"), "{pl}");
        assert_eq!(s.config().format.codecs(), "mp4a.40.2");
        assert_eq!(s.config().format.content_type(), "audio/mp4");
        let master = master_playlist(&[Rendition {
            uri: "aac/index.m3u8".into(),
            bandwidth: 140_000,
            average_bandwidth: None,
            codecs: s.config().format.codecs(),
            name: None,
        }]);
        assert!(master.contains("CODECS=\"mp4a.40.2\""), "{master}");
        assert!(
            pl.contains("seg0.m4s\n") && pl.contains("URI=\"seg1.0.m4s\""),
            "{pl}"
        );
        let seg = s.segment(0).unwrap();
        assert_eq!(&seg[4..8], b"moof");
        // 173 frames of 293 payload bytes (ADTS headers stripped) in 4 fragments.
        let moofs = seg.windows(4).filter(|w| w == b"moof").count();
        assert_eq!(moofs, 4);
        // A frame at another rate or not ADTS is dropped with an output saying why.
        s.handle_input(Input::Frame {
            now: t0,
            data: adts(300),
            samples: 1024,
            sample_rate: 48_000,
        });
        s.handle_input(Input::Frame {
            now: t0,
            data: Bytes::from_static(b"junk"),
            samples: 1024,
            sample_rate: 44_100,
        });
        let out = drain(&mut s);
        assert_eq!(
            out.iter()
                .filter(|o| matches!(o, Output::FrameRejected { .. }))
                .count(),
            2
        );
    }
}
