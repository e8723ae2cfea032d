//! A live stream: its life (created -> live -> ended, with interrupted -> resumed when the source
//! drops and returns within a grace period), its ingest, and the chunk ring its listeners read.
//!
//! # Ingest
//! The source's bytes go in through [`Input::Data`] (encoded MP3, AAC in ADTS, or Ogg) or
//! [`LiveStream::handle_pcm`] (raw PCM, encoded here with a `veza-audio` encoder). A [`FrameSplitter`] finds
//! the frame boundaries; whole frames are grouped into chunks of at least
//! [`LiveConfig::chunk_duration`] and timestamped in media time (samples since the stream began,
//! continuous across source reconnections).
//!
//! # Fan-out
//! Chunks go into one [`Ring`] shared by every listener. A listener is a cursor (a sequence
//! number); reading a chunk clones a [`Bytes`] handle, never the audio. Ingest does no work per
//! listener. The ring holds at most [`LiveConfig::ring_max_bytes`] and
//! [`LiveConfig::ring_max_duration`]; a listener that falls more than [`LiveConfig::max_lag`]
//! behind the live edge, or whose next chunk left the ring, skips forward to the burst position
//! (a chunk boundary, so a frame boundary) and [`Event::ListenerSkipped`] says so. It never slows
//! the others and never makes the ring grow.
//!
//! # Driving
//! `handle_input` with each input (each carries its `Instant`), then `poll_output` until it
//! returns [`Output::Timeout`]. Listeners are served by [`LiveStream::next_chunk`], called by
//! whoever writes to the listener's socket, whenever it can write.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::frame::{Frame, FrameError, FrameFormat, FrameKind, FrameSplitter, SplitterConfig};
use crate::metadata::NowPlaying;
use crate::{ListenerId, MediaTime, Seq};

/// Settings of a [`LiveStream`].
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// The framing of the source's bytes.
    pub format: FrameFormat,
    /// Frames are grouped into chunks of at least this much audio (default 100 ms; zero means
    /// one frame per chunk, the lowest latency).
    pub chunk_duration: Duration,
    /// Byte budget of the ring (default 4 MiB).
    pub ring_max_bytes: usize,
    /// Duration budget of the ring (default 30 s).
    pub ring_max_duration: Duration,
    /// Audio a new listener gets at once, before the live edge, for a fast start (default 2 s;
    /// zero starts at the live edge: lowest latency).
    pub burst: Duration,
    /// A listener further behind the live edge than this skips forward (default 10 s).
    pub max_lag: Duration,
    /// How long a dropped source may take to come back before the stream ends (default 10 s).
    pub grace_period: Duration,
    /// Most listeners at once (default 100,000).
    pub max_listeners: usize,
    /// Settings of the frame splitter.
    pub splitter: SplitterConfig,
}

impl LiveConfig {
    /// Defaults (see each field) for a source of `format`.
    pub fn new(format: FrameFormat) -> Self {
        Self {
            format,
            chunk_duration: Duration::from_millis(100),
            ring_max_bytes: 4 << 20,
            ring_max_duration: Duration::from_secs(30),
            burst: Duration::from_secs(2),
            max_lag: Duration::from_secs(10),
            grace_period: Duration::from_secs(10),
            max_listeners: 100_000,
            splitter: SplitterConfig::default(),
        }
    }
}

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LiveState {
    /// Created, no source yet.
    Created,
    /// A source is sending.
    Live,
    /// The source dropped; the stream waits for it until the grace period ends.
    Interrupted,
    /// Over: no source may connect, listeners drain what is left.
    Ended,
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndReason {
    /// Ended on request ([`Input::End`]).
    Requested,
    /// The source dropped and did not come back within the grace period.
    SourceLost,
}

/// What a live stream is told.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Input {
    /// A source connected (first start or reconnection).
    SourceConnected {
        /// When.
        now: Instant,
    },
    /// Encoded bytes from the source, cut anywhere.
    Data {
        /// When they arrived.
        now: Instant,
        /// The bytes.
        data: Bytes,
    },
    /// The source's connection closed (or failed).
    SourceDisconnected {
        /// When.
        now: Instant,
    },
    /// New now-playing metadata.
    Metadata {
        /// When.
        now: Instant,
        /// What is playing.
        now_playing: NowPlaying,
    },
    /// End the stream now.
    End {
        /// When.
        now: Instant,
    },
    /// Time passed (a deadline given by [`Output::Timeout`] was reached, or earlier).
    Timeout {
        /// Now.
        now: Instant,
    },
}

/// What a live stream asks its driver to do or know.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// Something happened.
    Event(Event),
    /// Nothing more to do: call `handle_input(Input::Timeout)` at this instant (`None`: no
    /// deadline pending).
    Timeout(Option<Instant>),
}

/// Things that happened to a live stream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The first source connected: the stream is live.
    Started {
        /// When.
        at: Instant,
    },
    /// The source dropped; the stream waits for it until `deadline`.
    Interrupted {
        /// When.
        at: Instant,
        /// The end of the grace period.
        deadline: Instant,
    },
    /// The source came back within the grace period: the same stream goes on.
    Resumed {
        /// When.
        at: Instant,
        /// How long the source was away.
        gap: Duration,
    },
    /// The stream ended.
    Ended {
        /// When.
        at: Instant,
        /// Why.
        reason: EndReason,
    },
    /// New chunks are in the ring: listeners waiting for data can read.
    ChunksReady {
        /// The newest sequence number.
        head: Seq,
    },
    /// A listener fell behind and was moved forward.
    ListenerSkipped {
        /// The listener.
        listener: ListenerId,
        /// The chunk it would have read.
        from: Seq,
        /// The chunk it reads now.
        to: Seq,
        /// Audio skipped.
        skipped: Duration,
    },
    /// Now-playing metadata changed.
    MetadataChanged(NowPlaying),
    /// The source sent bytes that are not in its declared format; they were dropped.
    BadSourceData(FrameError),
}

/// Why an input or a listener operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A source is already connected to this stream. Remedy: disconnect it first (HTTP 409).
    #[error("a source is already connected to this stream")]
    SourceBusy,
    /// The stream has ended and takes no source or listener. Remedy: create a new stream (HTTP 410).
    #[error("the stream has ended")]
    Ended,
    /// Data arrived with no source connected. Remedy: send `SourceConnected` first.
    #[error("no source is connected")]
    NoSource,
    /// The listener limit of the stream is reached (HTTP 503).
    #[error("the stream has reached its limit of {0} listeners")]
    TooManyListeners(usize),
    /// No listener has this id (it left, or never joined).
    #[error("unknown listener")]
    UnknownListener,
    /// The PCM could not be encoded.
    #[error("PCM ingest failed: {0}")]
    Encode(String),
}

/// One chunk of the ring: whole frames, never a partial one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Sequence number (consecutive, from 0).
    pub seq: Seq,
    /// The frames' bytes.
    pub data: Bytes,
    /// Media time of the first sample.
    pub start: MediaTime,
    /// Samples per channel in the chunk.
    pub samples: u32,
    /// Frames in the chunk.
    pub frames: u32,
}

impl Chunk {
    /// Media time just past the chunk's last sample.
    pub fn end(&self) -> MediaTime {
        self.start.add_samples(u64::from(self.samples))
    }
}

/// The shared chunk ring: a window of consecutive chunks with a byte and a duration budget.
/// Pushing past a budget drops the oldest chunks.
#[derive(Debug)]
pub struct Ring {
    chunks: VecDeque<Chunk>,
    first: Seq,
    bytes: usize,
    max_bytes: usize,
    max_duration: Duration,
}

impl Ring {
    /// An empty ring with these budgets.
    pub fn new(max_bytes: usize, max_duration: Duration) -> Self {
        Self {
            chunks: VecDeque::new(),
            first: Seq(0),
            bytes: 0,
            max_bytes,
            max_duration,
        }
    }

    /// Sequence number of the oldest chunk held (or of the next chunk when empty).
    pub fn first_seq(&self) -> Seq {
        self.first
    }

    /// Sequence number the next pushed chunk gets.
    pub fn next_seq(&self) -> Seq {
        Seq(self.first.0 + self.chunks.len() as u64)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Chunks held.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// True when no chunk is held.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Audio held, from the oldest chunk's start to the newest chunk's end.
    pub fn duration(&self) -> Duration {
        match (self.chunks.front(), self.chunks.back()) {
            (Some(a), Some(b)) => b.end().duration_since(a.start),
            _ => Duration::ZERO,
        }
    }

    /// The chunk with this sequence number, if still held. Does not allocate.
    pub fn get(&self, seq: Seq) -> Option<&Chunk> {
        let i = seq.0.checked_sub(self.first.0)?;
        self.chunks.get(usize::try_from(i).ok()?)
    }

    /// The newest chunk.
    pub fn last(&self) -> Option<&Chunk> {
        self.chunks.back()
    }

    /// Appends a chunk (its `seq` is overwritten with [`next_seq`](Self::next_seq)), then drops
    /// the oldest chunks while a budget is exceeded (the newest chunk always stays).
    pub fn push(&mut self, mut chunk: Chunk) -> Seq {
        let seq = self.next_seq();
        chunk.seq = seq;
        self.bytes += chunk.data.len();
        self.chunks.push_back(chunk);
        while self.chunks.len() > 1
            && (self.bytes > self.max_bytes || self.duration() > self.max_duration)
        {
            if let Some(old) = self.chunks.pop_front() {
                self.bytes -= old.data.len();
                self.first = Seq(self.first.0 + 1);
            }
        }
        seq
    }

    /// The sequence number of the oldest chunk whose audio ends within `back` of the newest
    /// chunk's end: where a listener starts to get `back` of audio at once. The live edge (the
    /// next chunk) when `back` is zero.
    pub fn seq_for_burst(&self, back: Duration) -> Seq {
        let Some(last) = self.chunks.back() else {
            return self.next_seq();
        };
        if back.is_zero() {
            return self.next_seq();
        }
        let edge = last.end();
        // Walk back from the newest chunk: the burst is short next to the ring.
        let mut seq = self.next_seq();
        for c in self.chunks.iter().rev() {
            if edge.duration_since(c.start) > back {
                break;
            }
            seq = c.seq;
        }
        if seq == self.next_seq() {
            // Even the newest chunk is longer than the burst: start with it.
            last.seq
        } else {
            seq
        }
    }
}

/// What [`LiveStream::next_chunk`] gives a listener.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Next {
    /// Bytes to send: stream headers (Ogg) or a chunk of whole frames.
    Data(Bytes),
    /// Nothing yet: wait for [`Event::ChunksReady`].
    Pending,
    /// The stream ended and the listener has everything: close its connection.
    Ended,
}

#[derive(Debug)]
struct Listener {
    generation: u32,
    cursor: Seq,
    /// Index of the next stream header to send out of band (Ogg).
    header_at: usize,
    /// The generation of stream headers this listener has received (0: none).
    has_headers: u64,
    bytes: u64,
    joined: Instant,
}

/// Per-listener figures, for analytics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerStats {
    /// Bytes handed out to the listener.
    pub bytes: u64,
    /// When the listener joined.
    pub joined: Instant,
    /// Chunks between the listener's cursor and the live edge.
    pub chunks_behind: u64,
}

/// A live stream's machine. See the [module docs](self).
pub struct LiveStream {
    config: LiveConfig,
    state: LiveState,
    splitter: FrameSplitter,
    ring: Ring,
    /// Frames of the chunk being assembled.
    pending: BytesMut,
    pending_samples: u32,
    pending_frames: u32,
    pending_start: MediaTime,
    /// Media time of the next frame.
    media_now: MediaTime,
    sample_rate: u32,
    channels: u8,
    /// Stream headers (Ogg identification/comment/setup pages) that new listeners need first.
    headers: Vec<Bytes>,
    headers_gen: u64,
    /// The chunk that carries the current headers in band.
    headers_seq: Seq,
    collecting_headers: bool,
    listeners: Vec<Option<Listener>>,
    free: Vec<u32>,
    listener_count: usize,
    events: VecDeque<Event>,
    interrupted_at: Option<Instant>,
    grace_deadline: Option<Instant>,
    started_at: Option<Instant>,
    now_playing: NowPlaying,
    pcm: Option<PcmIngest>,
    /// Media time (samples) of the ring's live edge, and the lag bound in samples.
    edge_samples: u64,
    max_lag_samples: u64,
}

impl std::fmt::Debug for LiveStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveStream")
            .field("state", &self.state)
            .field("ring_chunks", &self.ring.len())
            .field("listeners", &self.listener_count)
            .finish_non_exhaustive()
    }
}

struct PcmIngest {
    encoder: Box<dyn veza_audio::Encoder>,
    out: BytesMut,
}

impl LiveStream {
    /// A stream in [`LiveState::Created`], waiting for its source.
    pub fn new(config: LiveConfig, _now: Instant) -> Self {
        Self {
            splitter: FrameSplitter::new(config.format, config.splitter),
            ring: Ring::new(config.ring_max_bytes, config.ring_max_duration),
            config,
            state: LiveState::Created,
            pending: BytesMut::new(),
            pending_samples: 0,
            pending_frames: 0,
            pending_start: MediaTime::ZERO,
            media_now: MediaTime::ZERO,
            sample_rate: 0,
            channels: 0,
            headers: Vec::new(),
            headers_gen: 0,
            headers_seq: Seq(0),
            collecting_headers: false,
            listeners: Vec::new(),
            free: Vec::new(),
            listener_count: 0,
            events: VecDeque::new(),
            interrupted_at: None,
            grace_deadline: None,
            started_at: None,
            now_playing: NowPlaying::default(),
            pcm: None,
            edge_samples: 0,
            max_lag_samples: u64::MAX,
        }
    }

    /// A stream whose source sends PCM, encoded here with `encoder` (MP3, AAC ADTS or Ogg
    /// Vorbis; the stream's [`LiveConfig::format`] is set to match).
    ///
    /// # Errors
    /// [`StreamError::Encode`] when the encoder cannot be made or writes a format that cannot be
    /// streamed live (FLAC, M4A, WAV).
    pub fn with_pcm_encoder(
        mut config: LiveConfig,
        encoder: &veza_audio::EncoderConfig,
        now: Instant,
    ) -> Result<Self, StreamError> {
        use veza_audio::OutputFormat;
        config.format = match encoder.format {
            OutputFormat::Mp3 => FrameFormat::Mpeg,
            OutputFormat::Aac => FrameFormat::Adts,
            OutputFormat::Ogg => FrameFormat::Ogg,
            other => {
                return Err(StreamError::Encode(format!(
                    "{other:?} cannot be streamed live (use MP3, AAC or Ogg)"
                )));
            }
        };
        let enc =
            veza_audio::new_encoder(encoder).map_err(|e| StreamError::Encode(e.to_string()))?;
        let mut s = Self::new(config, now);
        s.pcm = Some(PcmIngest {
            encoder: enc,
            out: BytesMut::new(),
        });
        Ok(s)
    }

    /// The settings.
    pub fn config(&self) -> &LiveConfig {
        &self.config
    }

    /// Where the stream is in its life.
    pub fn state(&self) -> LiveState {
        self.state
    }

    /// When the first source connected.
    pub fn started_at(&self) -> Option<Instant> {
        self.started_at
    }

    /// The chunk ring (read-only).
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Current listeners.
    pub fn listener_count(&self) -> usize {
        self.listener_count
    }

    /// Sample rate of the source (0 until its first frame).
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Channels of the source (0 until its first frame).
    pub fn channels(&self) -> u8 {
        self.channels
    }

    /// Media time of the live edge (the end of the last frame ingested).
    pub fn media_time(&self) -> MediaTime {
        self.media_now
    }

    /// What is playing now.
    pub fn now_playing(&self) -> &NowPlaying {
        &self.now_playing
    }

    /// The stream headers a new listener gets first (Ogg only; empty otherwise).
    pub fn headers(&self) -> &[Bytes] {
        &self.headers
    }

    /// Feeds one input.
    ///
    /// # Errors
    /// [`StreamError::SourceBusy`] for a second source, [`StreamError::Ended`] for a source or
    /// data after the end, [`StreamError::NoSource`] for data with no source.
    pub fn handle_input(&mut self, input: Input) -> Result<(), StreamError> {
        match input {
            Input::SourceConnected { now } => self.source_connected(now),
            Input::Data { now: _, data } => {
                if self.state != LiveState::Live {
                    return Err(match self.state {
                        LiveState::Ended => StreamError::Ended,
                        _ => StreamError::NoSource,
                    });
                }
                self.splitter.push(&data);
                self.drain_frames();
                Ok(())
            }
            Input::SourceDisconnected { now } => {
                if self.state == LiveState::Live {
                    self.splitter.finish();
                    self.drain_frames();
                    self.flush_chunk();
                    self.splitter.reset();
                    let deadline = now + self.config.grace_period;
                    self.state = LiveState::Interrupted;
                    self.interrupted_at = Some(now);
                    self.grace_deadline = Some(deadline);
                    self.events
                        .push_back(Event::Interrupted { at: now, deadline });
                }
                Ok(())
            }
            Input::Metadata {
                now: _,
                now_playing,
            } => {
                if self.state == LiveState::Ended {
                    return Err(StreamError::Ended);
                }
                if now_playing != self.now_playing {
                    self.now_playing = now_playing.clone();
                    self.events.push_back(Event::MetadataChanged(now_playing));
                }
                Ok(())
            }
            Input::End { now } => {
                self.end(now, EndReason::Requested);
                Ok(())
            }
            Input::Timeout { now } => {
                if let Some(d) = self.grace_deadline {
                    if now >= d && self.state == LiveState::Interrupted {
                        self.end(now, EndReason::SourceLost);
                    }
                }
                Ok(())
            }
        }
    }

    /// Encodes PCM from a PCM source and ingests the frames the encoder produced.
    ///
    /// # Errors
    /// As [`handle_input`](Self::handle_input) for data, and [`StreamError::Encode`] when the
    /// stream was not made with [`with_pcm_encoder`](Self::with_pcm_encoder) or the PCM does not
    /// match the encoder's spec.
    pub fn handle_pcm(
        &mut self,
        _now: Instant,
        pcm: &veza_audio::PcmBuffer,
    ) -> Result<(), StreamError> {
        if self.state != LiveState::Live {
            return Err(match self.state {
                LiveState::Ended => StreamError::Ended,
                _ => StreamError::NoSource,
            });
        }
        let Some(p) = self.pcm.as_mut() else {
            return Err(StreamError::Encode(
                "this stream takes encoded data, not PCM".into(),
            ));
        };
        p.encoder
            .encode(pcm, &mut p.out)
            .map_err(|e| StreamError::Encode(e.to_string()))?;
        let bytes = p.out.split().freeze();
        self.splitter.push(&bytes);
        self.drain_frames();
        Ok(())
    }

    /// The next output. Call until it returns [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        Output::Timeout(match self.state {
            LiveState::Interrupted => self.grace_deadline,
            _ => None,
        })
    }

    fn source_connected(&mut self, now: Instant) -> Result<(), StreamError> {
        match self.state {
            LiveState::Live => Err(StreamError::SourceBusy),
            LiveState::Ended => Err(StreamError::Ended),
            LiveState::Created => {
                self.state = LiveState::Live;
                self.started_at = Some(now);
                self.events.push_back(Event::Started { at: now });
                Ok(())
            }
            LiveState::Interrupted => {
                self.state = LiveState::Live;
                let gap = self
                    .interrupted_at
                    .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                self.interrupted_at = None;
                self.grace_deadline = None;
                self.events.push_back(Event::Resumed { at: now, gap });
                Ok(())
            }
        }
    }

    fn end(&mut self, now: Instant, reason: EndReason) {
        if self.state == LiveState::Ended {
            return;
        }
        if self.state == LiveState::Live {
            if let Some(p) = self.pcm.as_mut() {
                if p.encoder.finish(&mut p.out).is_ok() {
                    let bytes = p.out.split().freeze();
                    self.splitter.push(&bytes);
                }
            }
            self.splitter.finish();
            self.drain_frames();
        }
        self.flush_chunk();
        self.state = LiveState::Ended;
        self.grace_deadline = None;
        self.events.push_back(Event::Ended { at: now, reason });
    }

    fn drain_frames(&mut self) {
        let before = self.ring.next_seq();
        loop {
            match self.splitter.next_frame() {
                Ok(Some(frame)) => self.ingest_frame(frame),
                Ok(None) => break,
                Err(e) => self.events.push_back(Event::BadSourceData(e)),
            }
        }
        if self.ring.next_seq() != before {
            self.events.push_back(Event::ChunksReady {
                head: Seq(self.ring.next_seq().0 - 1),
            });
        }
    }

    fn ingest_frame(&mut self, frame: Frame) {
        if frame.kind == FrameKind::Header {
            // A new set of stream headers (start, reconnection or chained Ogg link). Pending
            // audio goes out first so that the order of pages is kept.
            self.flush_chunk();
            if !self.collecting_headers {
                self.headers.clear();
                self.headers_gen += 1;
                self.headers_seq = self.ring.next_seq();
                self.collecting_headers = true;
            }
            self.headers.push(frame.data.clone());
            // Listeners already past the headers get the new ones in band, as in the source.
            self.pending.extend_from_slice(&frame.data);
            self.pending_frames += 1;
            return;
        }
        self.collecting_headers = false;
        if frame.sample_rate != 0 {
            self.sample_rate = frame.sample_rate;
            self.media_now.rate = frame.sample_rate;
        }
        if frame.channels != 0 {
            self.channels = frame.channels;
        }
        if self.pending_frames == 0 {
            self.pending_start = self.media_now;
        }
        self.pending.extend_from_slice(&frame.data);
        self.pending_samples = self.pending_samples.saturating_add(frame.samples);
        self.pending_frames += 1;
        self.media_now = self.media_now.add_samples(u64::from(frame.samples));
        let pending = MediaTime {
            samples: u64::from(self.pending_samples),
            rate: self.media_now.rate,
        };
        if pending.as_duration() >= self.config.chunk_duration {
            self.flush_chunk();
        }
    }

    fn flush_chunk(&mut self) {
        if self.pending_frames == 0 {
            return;
        }
        let data = self.pending.split().freeze();
        let mut start = self.pending_start;
        if self.pending_samples == 0 {
            start = self.media_now;
        }
        let chunk = Chunk {
            seq: Seq(0),
            data,
            start,
            samples: self.pending_samples,
            frames: self.pending_frames,
        };
        self.edge_samples = chunk.end().samples;
        if start.rate != 0 {
            self.max_lag_samples =
                (self.config.max_lag.as_nanos() * u128::from(start.rate) / 1_000_000_000) as u64;
        }
        self.ring.push(chunk);
        self.pending_samples = 0;
        self.pending_frames = 0;
    }

    /// Adds a listener that starts `burst` before the live edge (`None`: the configured burst).
    ///
    /// # Errors
    /// [`StreamError::Ended`] after the end, [`StreamError::TooManyListeners`] at the limit.
    pub fn add_listener(
        &mut self,
        now: Instant,
        burst: Option<Duration>,
    ) -> Result<ListenerId, StreamError> {
        if self.state == LiveState::Ended {
            return Err(StreamError::Ended);
        }
        if self.listener_count >= self.config.max_listeners {
            return Err(StreamError::TooManyListeners(self.config.max_listeners));
        }
        let mut cursor = self.ring.seq_for_burst(burst.unwrap_or(self.config.burst));
        if !self.headers.is_empty() && cursor < self.headers_seq {
            // Audio before the current stream headers needs the previous headers, which are
            // gone: start with the chunk that carries the current ones.
            cursor = self.headers_seq;
        }
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.listeners.push(None);
                u32::try_from(self.listeners.len() - 1).expect("fewer than 2^32 listener slots")
            }
        };
        let slot = &mut self.listeners[index as usize];
        let generation = slot.as_ref().map_or(0, |l| l.generation.wrapping_add(1));
        *slot = Some(Listener {
            generation,
            cursor,
            header_at: 0,
            has_headers: 0,
            bytes: 0,
            joined: now,
        });
        self.listener_count += 1;
        Ok(ListenerId::from_parts(index, generation))
    }

    /// Removes a listener, returning its figures.
    ///
    /// # Errors
    /// [`StreamError::UnknownListener`] when it is not there.
    pub fn remove_listener(&mut self, id: ListenerId) -> Result<ListenerStats, StreamError> {
        let head = self.ring.next_seq();
        let slot = self.slot_mut(id)?;
        let l = slot.as_mut().ok_or(StreamError::UnknownListener)?;
        let stats = ListenerStats {
            bytes: l.bytes,
            joined: l.joined,
            chunks_behind: head.0.saturating_sub(l.cursor.0),
        };
        // Keep the generation in a tombstone so a stale id stays unknown.
        l.generation = l.generation.wrapping_add(1);
        l.cursor = Seq(u64::MAX);
        self.free.push(id.index());
        self.listener_count -= 1;
        Ok(stats)
    }

    /// Figures of a listener.
    ///
    /// # Errors
    /// [`StreamError::UnknownListener`] when it is not there.
    pub fn listener_stats(&self, id: ListenerId) -> Result<ListenerStats, StreamError> {
        let l = self
            .listeners
            .get(id.index() as usize)
            .and_then(Option::as_ref)
            .filter(|l| l.generation == id.generation() && l.cursor != Seq(u64::MAX))
            .ok_or(StreamError::UnknownListener)?;
        Ok(ListenerStats {
            bytes: l.bytes,
            joined: l.joined,
            chunks_behind: self.ring.next_seq().0.saturating_sub(l.cursor.0),
        })
    }

    fn slot_mut(&mut self, id: ListenerId) -> Result<&mut Option<Listener>, StreamError> {
        let slot = self
            .listeners
            .get_mut(id.index() as usize)
            .ok_or(StreamError::UnknownListener)?;
        match slot {
            Some(l) if l.generation == id.generation() && l.cursor != Seq(u64::MAX) => Ok(slot),
            _ => Err(StreamError::UnknownListener),
        }
    }

    /// The next bytes for a listener: owed stream headers first, then the chunk at its cursor.
    /// A listener whose chunk left the ring, or that is more than [`LiveConfig::max_lag`] behind
    /// the live edge, is moved to the burst position first and [`Event::ListenerSkipped`] is
    /// queued. Does not allocate (it clones a `Bytes` handle).
    ///
    /// # Errors
    /// [`StreamError::UnknownListener`] when it is not there.
    pub fn next_chunk(&mut self, id: ListenerId) -> Result<Next, StreamError> {
        let headers_gen = self.headers_gen;
        let headers_seq = self.headers_seq;
        let l = match self.listeners.get_mut(id.index() as usize) {
            Some(Some(l)) if l.generation == id.generation() && l.cursor != Seq(u64::MAX) => l,
            _ => return Err(StreamError::UnknownListener),
        };
        if !self.headers.is_empty() && l.has_headers != headers_gen && l.cursor > headers_seq {
            // The chunk carrying the current headers in band is behind this listener (it
            // joined or skipped past it): send them out of band first.
            if let Some(h) = self.headers.get(l.header_at) {
                l.header_at += 1;
                l.bytes += h.len() as u64;
                return Ok(Next::Data(h.clone()));
            }
            l.has_headers = headers_gen;
            l.header_at = 0;
        }
        // Fast path: the chunk at the cursor is held and within the lag bound (compared in
        // samples: no division per call).
        let ring = &self.ring;
        let idx = l.cursor.0.wrapping_sub(ring.first.0);
        if let Some(c) = ring.chunks.get(idx as usize) {
            if self.edge_samples.saturating_sub(c.start.samples) <= self.max_lag_samples {
                if c.seq == headers_seq {
                    l.has_headers = headers_gen;
                }
                l.cursor = Seq(l.cursor.0 + 1);
                l.bytes += c.data.len() as u64;
                return Ok(Next::Data(c.data.clone()));
            }
        } else if l.cursor >= ring.next_seq() {
            return Ok(if self.state == LiveState::Ended {
                Next::Ended
            } else {
                Next::Pending
            });
        }
        Ok(self.skip_forward(id))
    }

    /// Moves a listener that fell behind to the burst position and reads from there.
    #[cold]
    fn skip_forward(&mut self, id: ListenerId) -> Next {
        let burst = self.config.burst;
        let headers_gen = self.headers_gen;
        let headers_seq = self.headers_seq;
        let ring = &self.ring;
        let Some(Some(l)) = self.listeners.get_mut(id.index() as usize) else {
            return Next::Pending;
        };
        let to = ring.seq_for_burst(burst);
        let from = l.cursor;
        let skipped = match (ring.get(from), ring.get(to)) {
            (Some(a), Some(b)) => b.start.duration_since(a.start),
            (None, Some(b)) => b.start.as_duration(),
            _ => Duration::ZERO,
        };
        l.cursor = to;
        let next = match ring.get(l.cursor) {
            Some(c) => {
                if c.seq == headers_seq {
                    l.has_headers = headers_gen;
                }
                l.cursor = Seq(l.cursor.0 + 1);
                l.bytes += c.data.len() as u64;
                Next::Data(c.data.clone())
            }
            None if self.state == LiveState::Ended => Next::Ended,
            None => Next::Pending,
        };
        self.events.push_back(Event::ListenerSkipped {
            listener: id,
            from,
            to,
            skipped,
        });
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp3_frame(fill: u8) -> Vec<u8> {
        let mut f = vec![fill; 417];
        f[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
        f
    }

    fn drain(s: &mut LiveStream) -> Vec<Event> {
        let mut out = Vec::new();
        while let Output::Event(e) = s.poll_output() {
            out.push(e);
        }
        out
    }

    #[test]
    fn chunks_are_whole_frames_of_the_target_duration() {
        let t0 = Instant::now();
        let mut cfg = LiveConfig::new(FrameFormat::Mpeg);
        cfg.chunk_duration = Duration::from_millis(100);
        let mut s = LiveStream::new(cfg, t0);
        s.handle_input(Input::SourceConnected { now: t0 }).unwrap();
        let mut all = Vec::new();
        for i in 0..40u8 {
            all.extend(mp3_frame(i));
        }
        for c in all.chunks(333) {
            s.handle_input(Input::Data {
                now: t0,
                data: Bytes::copy_from_slice(c),
            })
            .unwrap();
        }
        // 100 ms is 3.83 frames of 26.1 ms: chunks of 4 frames.
        let ring = s.ring();
        assert!(ring.len() >= 9);
        for seq in ring.first_seq().0..ring.next_seq().0 {
            let c = ring.get(Seq(seq)).unwrap();
            assert_eq!(c.frames, 4);
            assert_eq!(c.data.len(), 4 * 417);
            assert_eq!(c.start.samples, seq * 4 * 1152);
        }
        assert!(drain(&mut s).contains(&Event::Started { at: t0 }));
    }

    #[test]
    fn second_source_is_refused_and_grace_period_ends_the_stream() {
        let t0 = Instant::now();
        let mut s = LiveStream::new(LiveConfig::new(FrameFormat::Mpeg), t0);
        s.handle_input(Input::SourceConnected { now: t0 }).unwrap();
        assert_eq!(
            s.handle_input(Input::SourceConnected { now: t0 }),
            Err(StreamError::SourceBusy)
        );
        let t1 = t0 + Duration::from_secs(1);
        s.handle_input(Input::SourceDisconnected { now: t1 })
            .unwrap();
        drain(&mut s);
        assert_eq!(
            s.poll_output(),
            Output::Timeout(Some(t1 + Duration::from_secs(10)))
        );
        s.handle_input(Input::Timeout {
            now: t1 + Duration::from_secs(10),
        })
        .unwrap();
        assert_eq!(s.state(), LiveState::Ended);
        assert!(drain(&mut s).iter().any(|e| matches!(
            e,
            Event::Ended {
                reason: EndReason::SourceLost,
                ..
            }
        )));
        assert_eq!(
            s.handle_input(Input::SourceConnected { now: t1 }),
            Err(StreamError::Ended)
        );
    }

    #[test]
    fn stale_listener_ids_are_unknown() {
        let t0 = Instant::now();
        let mut s = LiveStream::new(LiveConfig::new(FrameFormat::Mpeg), t0);
        let a = s.add_listener(t0, None).unwrap();
        s.remove_listener(a).unwrap();
        let b = s.add_listener(t0, None).unwrap();
        assert_eq!(a.index(), b.index());
        assert_ne!(a, b);
        assert_eq!(s.next_chunk(a), Err(StreamError::UnknownListener));
        assert_eq!(s.remove_listener(a), Err(StreamError::UnknownListener));
        assert_eq!(s.next_chunk(b), Ok(Next::Pending));
        assert_eq!(s.listener_count(), 1);
    }
}
