//! HLS and low-latency HLS: a segmenter that cuts encoded audio frames into packed-audio segments
//! (raw ADTS AAC or MP3 frames behind an ID3 tag that carries the segment's timestamp, as the HLS
//! specification requires for packed audio), partial segments for LL-HLS, media playlists with a
//! sliding window, blocking playlist reloads, master playlists for a ladder, and VOD playlists.
//!
//! # Driving
//! Feed frames with [`Input::Frame`] (whole frames only: take them from the live ring or a
//! [`FrameSplitter`](crate::frame::FrameSplitter)), then drain [`Segmenter::poll_output`]. A
//! playlist request that asks for a part not yet cut ([`Input::PlaylistRequest`] with `_HLS_msn`
//! and `_HLS_part`) is held and answered by [`Output::Playlist`] when the part lands, or with
//! [`HlsError::Timeout`] after three target durations. Segments and parts are read with
//! [`Segmenter::segment`] and [`Segmenter::part`] (cloned `Bytes`, no copy).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::MediaTime;
use crate::metadata::NowPlaying;

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

/// Settings of a [`Segmenter`].
#[derive(Debug, Clone)]
pub struct SegmenterConfig {
    /// Codec of the frames.
    pub codec: PackedCodec,
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
    /// `{prefix}{N}.{P}.{ext}` (default "seg").
    pub uri_prefix: String,
    /// How long a blocking playlist request may wait, in target durations (default 3).
    pub block_limit_targets: u32,
}

impl SegmenterConfig {
    /// Defaults (see each field) for `codec`.
    pub fn new(codec: PackedCodec) -> Self {
        Self {
            codec,
            target_duration: Duration::from_secs(4),
            part_target: Some(Duration::from_secs(1)),
            window: 6,
            keep_after_window: 2,
            uri_prefix: "seg".into(),
            block_limit_targets: 3,
        }
    }
}

/// Why a playlist or a segment could not be served.
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
    /// Now-playing metadata: carried as ID3 text frames at the start of the next segment.
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
}

#[derive(Debug)]
struct Building {
    msn: u64,
    samples: u64,
    parts: Vec<Part>,
    part_buf: BytesMut,
    part_samples: u64,
}

#[derive(Debug)]
struct Pending {
    id: u64,
    msn: u64,
    part: Option<u32>,
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
}

impl Segmenter {
    /// A segmenter with no segment yet.
    pub fn new(config: SegmenterConfig, _now: Instant) -> Self {
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
        }
    }

    /// The settings.
    pub fn config(&self) -> &SegmenterConfig {
        &self.config
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
            } => self.metadata = Some(now_playing),
            Input::PlaylistRequest { now, id, msn, part } => self.request(now, id, msn, part),
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

    fn frame(&mut self, now: Instant, data: Bytes, samples: u32, rate: u32) {
        if self.ended || rate == 0 {
            return;
        }
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
            part_buf.extend_from_slice(&id3_tag(self.media, self.metadata.take().as_ref()));
            self.building = Some(Building {
                msn,
                samples: 0,
                parts: Vec::new(),
                part_buf,
                part_samples: 0,
            });
        }
        let b = self.building.as_mut().expect("a segment is being built");
        b.part_buf.extend_from_slice(&data);
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
        let Some(b) = self.building.as_mut() else {
            return;
        };
        if b.part_samples == 0 {
            return;
        }
        let duration = MediaTime::new(b.part_samples, self.media.rate).as_duration();
        let data = b.part_buf.split().freeze();
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
        });
        while self.done.len() > self.config.window + self.config.keep_after_window {
            self.done.pop_front();
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

    fn request(&mut self, now: Instant, id: u64, msn: Option<u64>, part: Option<u32>) {
        let Some(msn) = msn else {
            let result = if part.is_some() {
                Err(HlsError::BadRequest("_HLS_part without _HLS_msn"))
            } else {
                Ok(self.media_playlist())
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
            deadline: now + limit,
        });
        self.answer_pending(now);
    }

    fn answer_pending(&mut self, now: Instant) {
        if self.pending.is_empty() {
            return;
        }
        let mut playlist: Option<String> = None;
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            let result = if self.is_available(p.msn, p.part) {
                Some(Ok(playlist
                    .get_or_insert_with(|| self.media_playlist())
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

    fn segment_uri(&self, msn: u64) -> String {
        format!(
            "{}{msn}.{}",
            self.config.uri_prefix,
            self.config.codec.extension()
        )
    }

    fn part_uri(&self, msn: u64, part: usize) -> String {
        format!(
            "{}{msn}.{part}.{}",
            self.config.uri_prefix,
            self.config.codec.extension()
        )
    }

    /// The live media playlist now.
    pub fn media_playlist(&self) -> String {
        let listed: Vec<&Segment> = {
            let skip = self.done.len().saturating_sub(self.config.window);
            self.done.iter().skip(skip).collect()
        };
        let target = self
            .max_segment
            .max(self.config.target_duration)
            .as_secs_f64()
            .round()
            .max(1.0) as u64;
        let mut m = String::with_capacity(256 + listed.len() * 64);
        m.push_str("#EXTM3U\n");
        let ll = self.config.part_target;
        let _ = writeln!(m, "#EXT-X-VERSION:{}", if ll.is_some() { 9 } else { 3 });
        let _ = writeln!(m, "#EXT-X-TARGETDURATION:{target}");
        let first = listed.first().map_or_else(|| self.next_msn(), |s| s.msn);
        let _ = writeln!(m, "#EXT-X-MEDIA-SEQUENCE:{first}");
        if let Some(pt) = ll {
            let part_target = self.part_target_advertised(pt);
            let _ = writeln!(
                m,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}",
                part_target * 3.0
            );
            let _ = writeln!(m, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
        }
        // Parts are listed for the last segments, within three target durations of the edge.
        let part_segments = 3usize;
        let with_parts_from = listed.len().saturating_sub(part_segments);
        for (i, s) in listed.iter().enumerate() {
            if ll.is_some() && i >= with_parts_from {
                for (pi, p) in s.parts.iter().enumerate() {
                    let _ = writeln!(
                        m,
                        "#EXT-X-PART:DURATION={:.5},URI=\"{}\",INDEPENDENT=YES",
                        p.duration.as_secs_f64(),
                        self.part_uri(s.msn, pi)
                    );
                }
            }
            let _ = writeln!(m, "#EXTINF:{:.5},", s.duration.as_secs_f64());
            let _ = writeln!(m, "{}", self.segment_uri(s.msn));
        }
        if ll.is_some() && !self.ended {
            let (msn, next_part) = match &self.building {
                Some(b) => {
                    for (pi, p) in b.parts.iter().enumerate() {
                        let _ = writeln!(
                            m,
                            "#EXT-X-PART:DURATION={:.5},URI=\"{}\",INDEPENDENT=YES",
                            p.duration.as_secs_f64(),
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

/// The ID3v2.4 tag at the start of a packed-audio segment: the Apple transport-stream timestamp
/// of its first sample (PRIV `com.apple.streaming.transportStreamTimestamp`, 33-bit 90 kHz) and,
/// when given, the now-playing title (TIT2) and artist (TPE1) as timed metadata.
pub fn id3_tag(start: MediaTime, metadata: Option<&NowPlaying>) -> Vec<u8> {
    fn frame(out: &mut Vec<u8>, id: &[u8; 4], body: &[u8]) {
        out.extend_from_slice(id);
        out.extend_from_slice(&synchsafe(body.len() as u32));
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(body);
    }
    let mut frames = Vec::with_capacity(96);
    let mut priv_body = b"com.apple.streaming.transportStreamTimestamp\0".to_vec();
    let ts = start.ticks_90k() & 0x1_FFFF_FFFF;
    priv_body.extend_from_slice(&ts.to_be_bytes());
    frame(&mut frames, b"PRIV", &priv_body);
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
        assert!(pl.contains("#EXTINF:4.01705,\nseg0.aac\n"), "{pl}");
        assert!(
            pl.contains("#EXT-X-PART:DURATION=1.02168,URI=\"seg3.0.aac\",INDEPENDENT=YES"),
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
}
