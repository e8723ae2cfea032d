//! Live HLS and low-latency HLS: each live channel's bitrate ladder (`LIVE_HLS_LADDER`), and the
//! routes that serve it.
//!
//! # The ladder of a channel
//! When a channel starts ([`start`], called by the channel's driver on `Event::Started`), a tap
//! task subscribes to the channel's taps and forwards every chunk, metadata change, gap and the
//! end, in order, through a bounded queue to one dedicated encoder thread per channel. That
//! thread decodes the source once ([`PushDecoder`]), converts it once to the ladder's output
//! spec (the source's rate when both encoders take it, else 48 kHz; mono or stereo), encodes
//! every rung (FDK AAC-LC in ADTS frames, LAME MP3) and feeds one core
//! [`Segmenter`] per rung: AAC rungs as fMP4 ([`Fmp4Track::aac_from_adts`]), the MP3 rung as
//! packed audio, with LL-HLS parts, `EXT-X-PROGRAM-DATE-TIME` from the wall clock, now-playing
//! titles as timed ID3, a discontinuity after each gap (a dropped source that returns, or taps
//! lost because the encoder fell behind) and `EXT-X-ENDLIST` at the end.
//!
//! Nothing here can slow ingest or ICY listeners: the taps are a broadcast that never waits for
//! its receivers. A slow encoder makes the bounded queue fill, the tap task then waits, the
//! broadcast drops its oldest messages for this receiver (`Lagged`), and the ladder resyncs at
//! the next chunk with a discontinuity. Source bytes that do not decode are skipped and counted
//! (`veza_live_hls_skipped_total`).
//!
//! The segmenters sit behind one short lock per rung: the encoder thread takes it to feed the
//! frames of one decoded block, the HTTP handlers to render a playlist or clone a segment's
//! `Bytes`. A blocking playlist request (`_HLS_msn`, `_HLS_part`) is registered in the
//! segmenter and answered when the encoder thread cuts the part (or when the request's limit
//! passes, with 503).
//!
//! # Routes (outside `/api/v1`)
//! - `GET /live/{id}.m3u8`: the master playlist (dispatched from the progressive `/live/{mount}`
//!   route, since the router cannot match a suffix);
//! - `GET /live/{id}/{rung}/index.m3u8`: a rung's media playlist, with blocking reload and
//!   delta updates;
//! - `GET /live/{id}/{rung}/{file}`: the fMP4 initialisation segment, segments and parts. The
//!   file names carry the ladder's start time, so a URL never names other bytes (a stream that
//!   goes live again gets new names) and segments are served as immutable.
//!
//! Private streams follow the progressive listeners' rule (Bearer, `X-API-Key` or
//! `?access_token=`); a token given in the query is carried into every URI of the playlists, so
//! players that only know the master's URL can follow it. A client (subject, or address and
//! user agent) that fetched a playlist or a segment in the last three target durations counts
//! as one viewer of the stream ([`Ladders::viewers`]) and has one analytics session
//! (`Protocol::Hls`), closed when it goes quiet.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::Response;
use axum::routing::get;
use bytes::{Bytes, BytesMut};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use veza_audio::decode::{DecoderOptions, PushDecoder};
use veza_audio::dsp::channels::ChannelMixer;
use veza_audio::dsp::resample::{ResampleQuality, Resampler};
use veza_audio::encode::aac::{self, FdkEncoder, Transport};
use veza_audio::encode::mp3::{self, Mp3Encoder};
use veza_audio::{AudioSpec, Bitrate, Encoder as _, EncoderConfig, OutputFormat, PcmBuffer};
use veza_audio::{RateControl, SampleRate};
use veza_stream_core::analytics::Protocol;
use veza_stream_core::frame::{FrameFormat, FrameSplitter, SplitterConfig};
use veza_stream_core::hls::{
    Fmp4Track, HlsError, Input, Output, PackedCodec, Rendition, Segmenter, SegmenterConfig,
    master_playlist,
};
use veza_stream_core::metadata::NowPlaying;

use super::{Channel, Tap};
use crate::analytics::Session;
use crate::auth::Caller;
use crate::config::{LiveCodec, LiveRung};
use crate::error::ApiError;
use crate::http::audio::now_ms;
use crate::http::hls::{PLAYLIST, segment_response};
use crate::metrics as m;
use crate::state::AppState;

/// Messages from the tap task to the encoder thread.
const QUEUE: usize = 64;
/// How long an ended ladder is still served (its last segments and `EXT-X-ENDLIST`).
const LINGER: Duration = Duration::from_secs(30);
/// How long the stream record's visibility is trusted before it is read again.
const ACCESS_TTL: Duration = Duration::from_secs(5);
/// Audio the ladder takes from the ring when it starts (the chunks before it subscribed).
const CATCH_UP: Duration = Duration::from_secs(10);

/// The ladders of this node's channels (and of those that ended in the last half minute), by
/// stream id. Cheap to clone.
#[derive(Clone, Default)]
pub struct Ladders {
    map: Arc<Mutex<HashMap<String, Arc<Ladder>>>>,
}

impl std::fmt::Debug for Ladders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ladders")
            .field("ladders", &self.lock().len())
            .finish()
    }
}

impl Ladders {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Ladder>>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The ladder of stream `id`, if it has one on this node.
    pub fn get(&self, id: &str) -> Option<Arc<Ladder>> {
        self.lock().get(id).cloned()
    }

    /// HLS viewers of stream `id` on this node now: clients that fetched a playlist or a
    /// segment within the last three target durations. Closes the analytics sessions of the
    /// clients that went quiet.
    pub fn viewers(&self, id: &str) -> usize {
        self.get(id).map_or(0, |l| l.viewers())
    }

    fn insert(&self, ladder: Arc<Ladder>) {
        self.lock().insert(ladder.id.clone(), ladder);
    }

    fn remove_if(&self, ladder: &Arc<Ladder>) {
        let mut map = self.lock();
        if map.get(&ladder.id).is_some_and(|l| Arc::ptr_eq(l, ladder)) {
            map.remove(&ladder.id);
        }
    }
}

/// One rung of a ladder: its settings and its segmenter.
struct Rung {
    name: String,
    rung: LiveRung,
    state: Mutex<RungState>,
    /// The rung's encoded frames as they are made (ADTS for AAC rungs), for WebSocket
    /// listeners adapted on the server (`live::ws`).
    frames: broadcast::Sender<Bytes>,
}

/// A rung's segmenter and the blocking playlist requests waiting on it.
#[derive(Default)]
struct RungState {
    /// Made at the first encoded frame (an fMP4 track is described from it).
    seg: Option<Segmenter>,
    next_request: u64,
    waiters: HashMap<u64, oneshot::Sender<Result<String, HlsError>>>,
    /// The encoder of this rung failed for good.
    failed: bool,
}

impl RungState {
    /// Feeds one input and drains the outputs; true when a part or a segment was cut.
    fn feed(&mut self, input: Input) -> bool {
        let Some(seg) = self.seg.as_mut() else {
            return false;
        };
        seg.handle_input(input);
        let mut progressed = false;
        loop {
            match seg.poll_output() {
                Output::Timeout(_) => return progressed,
                Output::PartReady { .. } | Output::SegmentReady { .. } => progressed = true,
                Output::Playlist { id, result } => {
                    if let Some(tx) = self.waiters.remove(&id) {
                        let _ = tx.send(result);
                    }
                }
                Output::FrameRejected { error } => {
                    metrics::counter!(m::LIVE_HLS_SKIPPED, "reason" => "frame_rejected")
                        .increment(1);
                    tracing::debug!(error = %error, "live HLS frame rejected");
                }
                _ => {}
            }
        }
    }
}

/// Who may see the stream, as last read from its record.
#[derive(Debug, Clone)]
struct Access {
    owner: Option<String>,
    private: bool,
    read_at: Instant,
}

/// A client that fetched from the ladder recently.
struct Viewer {
    last: Instant,
    session: Session,
}

/// The live HLS ladder of one channel: its rungs' segmenters, its viewers.
pub struct Ladder {
    id: String,
    /// The channel, told how many HLS viewers it has.
    channel: std::sync::Weak<Channel>,
    /// Segment target duration (`LIVE_HLS_SEGMENT`).
    target: Duration,
    /// File name prefix of this ladder's segments (unique per start).
    prefix: String,
    rungs: Vec<Rung>,
    /// Bumped when a part or segment is cut, a segmenter is made, or the ladder ends.
    progress: watch::Sender<u64>,
    ended: AtomicBool,
    viewers: Mutex<HashMap<u64, Viewer>>,
    access: Mutex<Option<Access>>,
}

impl std::fmt::Debug for Ladder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ladder")
            .field("id", &self.id)
            .field("rungs", &self.rungs.len())
            .finish_non_exhaustive()
    }
}

impl Ladder {
    fn rung(&self, name: &str) -> Option<&Rung> {
        self.rungs.iter().find(|r| r.name == name)
    }

    fn bump(&self) {
        self.progress.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// True once a rung has a complete segment.
    fn has_segment(&self) -> bool {
        self.rungs.iter().any(|r| {
            lock(&r.state)
                .seg
                .as_ref()
                .is_some_and(|s| s.next_msn() > 0 || s.is_ended())
        })
    }

    /// How long a client stays a viewer after its last request.
    fn viewer_window(&self) -> Duration {
        self.target * 3
    }

    /// The AAC rungs a server-adapted listener can switch between (their ADTS frames line up:
    /// one decode feeds them all): (index, name, kbit/s), lowest first.
    pub fn adaptive_rungs(&self) -> Vec<(usize, String, u32)> {
        let mut v: Vec<(usize, String, u32)> = self
            .rungs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.rung.codec == LiveCodec::Aac)
            .map(|(i, r)| (i, r.name.clone(), r.rung.kbps))
            .collect();
        v.sort_by_key(|r| r.2);
        v
    }

    /// The encoded frames of rung `index` from now on (ADTS for AAC rungs).
    pub fn subscribe_frames(&self, index: usize) -> Option<broadcast::Receiver<Bytes>> {
        self.rungs.get(index).map(|r| r.frames.subscribe())
    }

    /// True once the ladder has ended.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Viewers now; closes the sessions of clients that went quiet, and tells the channel
    /// ([`Channel::set_hls_viewers`]).
    pub fn viewers(&self) -> usize {
        let window = self.viewer_window();
        let n = {
            let mut v = lock(&self.viewers);
            v.retain(|_, viewer| viewer.last.elapsed() < window);
            v.len()
        };
        if let Some(ch) = self.channel.upgrade() {
            ch.set_hls_viewers(n);
        }
        n
    }

    /// Notes a request of `key`: opens its analytics session if it is new, counts `bytes`.
    fn touch(&self, state: &AppState, key: u64, rung: Option<&str>, agent: &str, bytes: u64) {
        if self.ended.load(Ordering::Acquire) {
            return;
        }
        let mut v = lock(&self.viewers);
        let before = v.len();
        let viewer = v.entry(key).or_insert_with(|| Viewer {
            last: Instant::now(),
            session: state.analytics().join(
                format!("stream:{}", self.id),
                key,
                Protocol::Hls,
                rung.map(str::to_owned),
                Some(agent.chars().take(64).collect()),
            ),
        });
        viewer.last = Instant::now();
        viewer.session.add_bytes(bytes);
        let n = v.len();
        drop(v);
        if n != before {
            if let Some(ch) = self.channel.upgrade() {
                ch.set_hls_viewers(n);
            }
        }
    }

    /// The stream's owner and privacy, read from the store at most every few seconds.
    async fn access(&self, state: &AppState) -> Result<(Option<String>, bool), ApiError> {
        if let Some(a) = lock(&self.access)
            .as_ref()
            .filter(|a| a.read_at.elapsed() < ACCESS_TTL)
        {
            return Ok((a.owner.clone(), a.private));
        }
        let rec = state
            .store()
            .get_stream(&self.id)
            .await?
            .ok_or(ApiError::NotFound("stream"))?;
        *lock(&self.access) = Some(Access {
            owner: rec.owner.clone(),
            private: rec.is_private,
            read_at: Instant::now(),
        });
        Ok((rec.owner, rec.is_private))
    }

    /// Waits until `ready` holds or `limit` passes; returns whether it holds.
    async fn wait_for(&self, limit: Duration, mut ready: impl FnMut(&Self) -> bool) -> bool {
        let mut rx = self.progress.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            rx.borrow_and_update();
            if ready(self) {
                return true;
            }
            if self.ended.load(Ordering::Acquire) {
                return ready(self);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return ready(self),
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Starting a ladder
// ---------------------------------------------------------------------------------------------

/// Starts the live HLS ladder of `ch` (nothing when `LIVE_HLS_LADDER` is off): a tap task and
/// an encoder thread, registered in the hub's [`Ladders`]. Called once per channel, when it
/// starts.
pub fn start(state: &AppState, ch: &Arc<Channel>) {
    let cfg = &state.config().live;
    if cfg.hls_ladder.is_empty() {
        return;
    }
    // AAC rungs first: players start with the first rendition.
    let mut rungs: Vec<LiveRung> = cfg.hls_ladder.clone();
    rungs.sort_by_key(|r| match r.codec {
        LiveCodec::Aac => 0,
        LiveCodec::Mp3 => 1,
    });
    let (progress, _) = watch::channel(0u64);
    let ladder = Arc::new(Ladder {
        id: ch.id().to_owned(),
        channel: Arc::downgrade(ch),
        target: cfg.hls_segment,
        prefix: format!("{:x}-", unix_ms()),
        rungs: rungs
            .into_iter()
            .map(|r| Rung {
                name: r.name(),
                rung: r,
                state: Mutex::new(RungState::default()),
                frames: broadcast::channel(512).0,
            })
            .collect(),
        progress,
        ended: AtomicBool::new(false),
        viewers: Mutex::new(HashMap::new()),
        access: Mutex::new(None),
    });
    let taps = ch.taps();
    let (tx, rx) = mpsc::channel(QUEUE);
    let ladders = state.live().hls().clone();
    let pipeline = Pipeline::new(ladder.clone(), ch.clone());
    let runtime = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new()
        .name("veza-live-hls".into())
        .spawn(move || pipeline.run(rx, runtime, ladders));
    if let Err(e) = spawned {
        tracing::warn!(stream = %ch.id(), error = %e, "cannot start the live HLS encoder thread");
        return;
    }
    let ladder_for_taps = ladder.clone();
    state.live().hls().insert(ladder);
    tokio::spawn(tap_task(ch.clone(), ladder_for_taps, taps, tx));
}

/// What the tap task hands the encoder thread.
#[derive(Debug)]
enum Work {
    /// Source bytes (whole frames), with their arrival time (Unix ms).
    Chunk(Bytes, u64),
    /// New now-playing metadata.
    Metadata(NowPlaying),
    /// Audio is missing before the next chunk (the source dropped, or taps were lost).
    Gap,
    /// No more audio.
    End,
}

/// Forwards the channel's taps, in order, to the encoder thread; the chunks still in the ring
/// first (those before the subscription), without repeating any. Every segment duration, it
/// also lets the viewers that went quiet go.
async fn tap_task(
    ch: Arc<Channel>,
    ladder: Arc<Ladder>,
    mut taps: broadcast::Receiver<Tap>,
    tx: mpsc::Sender<Work>,
) {
    let mut tick = tokio::time::interval(ladder.target);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seq: Option<u64> = None;
    let np = ch.now_playing();
    if np != NowPlaying::default() && tx.send(Work::Metadata(np)).await.is_err() {
        return;
    }
    for c in ch.recent_chunks(CATCH_UP) {
        last_seq = Some(c.seq.0);
        if tx.send(Work::Chunk(c.data, unix_ms())).await.is_err() {
            return;
        }
    }
    loop {
        let tapped = tokio::select! {
            t = taps.recv() => t,
            _ = tick.tick() => {
                ladder.viewers();
                continue;
            }
        };
        let work = match tapped {
            Ok(Tap::Chunk(c)) => {
                if last_seq.is_some_and(|l| c.seq.0 <= l) {
                    continue;
                }
                last_seq = Some(c.seq.0);
                Work::Chunk(c.data, unix_ms())
            }
            Ok(Tap::Metadata(np)) => Work::Metadata(np),
            Ok(Tap::SourceLost) => Work::Gap,
            Ok(Tap::End) | Err(broadcast::error::RecvError::Closed) => {
                let _ = tx.send(Work::End).await;
                return;
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                metrics::counter!(m::LIVE_HLS_SKIPPED, "reason" => "lagged").increment(n);
                tracing::debug!(stream = %ch.id(), lost = n, "live HLS fell behind the source; resyncing");
                Work::Gap
            }
        };
        if tx.send(work).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The encoder thread
// ---------------------------------------------------------------------------------------------

/// The wall clock in Unix milliseconds.
fn unix_ms() -> u64 {
    u64::try_from(now_ms()).unwrap_or(0)
}

/// The sample rates both encoders take.
fn shared_rate(hz: u32) -> bool {
    aac::SUPPORTED_SAMPLE_RATES.contains(&hz) && mp3::SUPPORTED_RATES.contains(&hz)
}

/// A rung's encoder, in the thread.
enum RungEncoder {
    Aac(FdkEncoder),
    Mp3 {
        enc: Mp3Encoder,
        out: BytesMut,
        split: FrameSplitter,
    },
}

/// A rung's encoder and what its segmenter must hear before the next frame.
struct RungWork {
    enc: Option<RungEncoder>,
    /// Unix ms of the next frame's first sample, once per decode run.
    anchor: Option<u64>,
    /// The next frame follows a gap.
    discontinuity: bool,
    /// Encoded frames waiting to go to the segmenter: bytes, samples.
    frames: Vec<(Bytes, u32)>,
    buf: BytesMut,
    failed: bool,
}

/// Decode once, convert once, encode every rung, segment.
struct Pipeline {
    ladder: Arc<Ladder>,
    ch: Arc<Channel>,
    dec: Option<PushDecoder>,
    /// Ogg: the header pages already pushed into the decoder, to skip when they also arrive in
    /// band.
    ogg_headers: Vec<u8>,
    /// Bytes of the current decode run pushed so far.
    pushed: u64,
    out: Option<AudioSpec>,
    conv: Option<Conv>,
    mixed: PcmBuffer,
    resampled: PcmBuffer,
    rungs: Vec<RungWork>,
    metadata: Option<NowPlaying>,
    /// A gap happened: the next decode run starts with a discontinuity.
    gap: bool,
}

/// Conversion from the decoder's spec to the ladder's output spec.
struct Conv {
    from: AudioSpec,
    mixer: Option<ChannelMixer>,
    resampler: Option<Resampler>,
}

impl Pipeline {
    fn new(ladder: Arc<Ladder>, ch: Arc<Channel>) -> Self {
        let rungs = ladder
            .rungs
            .iter()
            .map(|_| RungWork {
                enc: None,
                anchor: None,
                discontinuity: false,
                frames: Vec::new(),
                buf: BytesMut::new(),
                failed: false,
            })
            .collect();
        Self {
            ladder,
            ch,
            dec: None,
            ogg_headers: Vec::new(),
            pushed: 0,
            out: None,
            conv: None,
            // Reset to the right spec at their first use.
            mixed: PcmBuffer::new(AudioSpec::new(48_000, 2).expect("48 kHz stereo is valid")),
            resampled: PcmBuffer::new(AudioSpec::new(48_000, 2).expect("48 kHz stereo is valid")),
            rungs,
            metadata: None,
            gap: false,
        }
    }

    fn run(
        mut self,
        mut rx: mpsc::Receiver<Work>,
        runtime: tokio::runtime::Handle,
        ladders: Ladders,
    ) {
        lower_priority();
        while let Some(work) = rx.blocking_recv() {
            match work {
                Work::Chunk(data, at) => self.chunk(&data, at),
                Work::Metadata(np) => {
                    for r in &self.ladder.rungs {
                        lock(&r.state).feed(Input::Metadata {
                            now: Instant::now(),
                            now_playing: np.clone(),
                        });
                    }
                    self.metadata = Some(np);
                }
                Work::Gap => {
                    self.flush();
                    self.gap = true;
                }
                Work::End => break,
            }
        }
        self.flush();
        for r in &self.ladder.rungs {
            let mut st = lock(&r.state);
            st.feed(Input::End {
                now: Instant::now(),
            });
        }
        self.ladder.ended.store(true, Ordering::Release);
        // The viewers' sessions close now.
        lock(&self.ladder.viewers).clear();
        self.ch.set_hls_viewers(0);
        self.ladder.bump();
        tracing::debug!(stream = %self.ladder.id, "live HLS ladder ended");
        let ladder = self.ladder.clone();
        runtime.spawn(async move {
            tokio::time::sleep(LINGER).await;
            ladders.remove_if(&ladder);
        });
    }

    /// Source bytes: into the decoder (a new one after a gap), then decode what is ready.
    fn chunk(&mut self, data: &[u8], at: u64) {
        if self.dec.is_none() {
            let mut dec = PushDecoder::new(DecoderOptions {
                // The smallest look-ahead: the decoder waits for this many bytes ahead.
                push_lookahead: 8 << 10,
                ..DecoderOptions::default()
            });
            self.ogg_headers.clear();
            if self.ch.format() == FrameFormat::Ogg {
                for h in self.ch.stream_headers() {
                    self.ogg_headers.extend_from_slice(&h);
                }
                let _ = dec.push(&self.ogg_headers);
            }
            self.dec = Some(dec);
            self.pushed = 0;
            for r in &mut self.rungs {
                r.anchor = Some(at);
                r.discontinuity = self.gap;
            }
            self.gap = false;
        }
        let mut data = data;
        if self.pushed == 0 && !self.ogg_headers.is_empty() && data.starts_with(&self.ogg_headers) {
            // The header pages came in band too: they were pushed already.
            data = &data[self.ogg_headers.len()..];
        }
        self.pushed += data.len() as u64;
        if let Some(dec) = self.dec.as_mut() {
            if dec.push(data).is_err() {
                return;
            }
        }
        self.decode();
    }

    /// Decodes every block that is ready and encodes it.
    fn decode(&mut self) {
        let Some(mut dec) = self.dec.take() else {
            return;
        };
        loop {
            match dec.next_block() {
                Ok(Some(block)) => self.block(block),
                Ok(None) => break,
                Err(e) if e.is_recoverable() => {
                    metrics::counter!(m::LIVE_HLS_SKIPPED, "reason" => "undecodable").increment(1);
                    tracing::debug!(stream = %self.ladder.id, error = %e, "skipped undecodable source data");
                }
                Err(e) => {
                    // The decoder cannot go on: a new one starts at the next chunk, after a
                    // discontinuity.
                    metrics::counter!(m::LIVE_HLS_SKIPPED, "reason" => "decoder_reset")
                        .increment(1);
                    tracing::info!(stream = %self.ladder.id, error = %e, "live HLS decoder reset");
                    self.finish_encoders();
                    self.gap = true;
                    return;
                }
            }
        }
        self.dec = Some(dec);
    }

    /// Ends the current decode run: the decoder's last bytes and the encoders' tails.
    fn flush(&mut self) {
        if let Some(dec) = self.dec.as_mut() {
            dec.finish();
        }
        self.decode();
        self.dec = None;
        self.finish_encoders();
    }

    fn finish_encoders(&mut self) {
        for i in 0..self.rungs.len() {
            let Some(enc) = self.rungs[i].enc.take() else {
                continue;
            };
            let r = &mut self.rungs[i];
            let result = match enc {
                RungEncoder::Aac(mut e) => {
                    let (frames, buf) = (&mut r.frames, &mut r.buf);
                    e.finish(|unit| {
                        buf.extend_from_slice(unit);
                        frames.push((buf.split().freeze(), aac::FRAME_LENGTH));
                    })
                }
                RungEncoder::Mp3 {
                    mut enc,
                    mut out,
                    mut split,
                } => {
                    let res = enc.finish(&mut out);
                    split.push(&out);
                    split.finish();
                    while let Ok(Some(f)) = split.next_frame() {
                        r.frames.push((f.data, f.samples));
                    }
                    res
                }
            };
            if let Err(e) = result {
                tracing::debug!(stream = %self.ladder.id, error = %e, "live HLS encoder flush failed");
            }
            deliver(&self.ladder, i, r, self.out, self.metadata.as_ref());
        }
    }

    /// Converts one decoded block to the output spec and encodes it for every rung.
    fn block(&mut self, block: &PcmBuffer) {
        if block.is_empty() {
            return;
        }
        let out_spec = Some(*self.out.get_or_insert_with(|| {
            let hz = block.sample_rate().hz();
            let rate = if shared_rate(hz) {
                block.sample_rate()
            } else {
                SampleRate::new(48_000).unwrap_or_else(|_| block.sample_rate())
            };
            AudioSpec {
                sample_rate: rate,
                channels: if block.channels() >= 2 { 2 } else { 1 },
            }
        }));
        let Some(out) = out_spec else {
            return;
        };
        if self.conv.as_ref().is_none_or(|c| c.from != block.spec()) {
            let from = block.spec();
            let mixer = (from.channels != out.channels)
                .then(|| ChannelMixer::new(usize::from(from.channels), usize::from(out.channels)))
                .transpose();
            let resampler = (from.sample_rate != out.sample_rate)
                .then(|| {
                    Resampler::new(
                        from.sample_rate,
                        out.sample_rate,
                        usize::from(out.channels),
                        ResampleQuality::Balanced,
                    )
                })
                .transpose();
            match (mixer, resampler) {
                (Ok(mixer), Ok(resampler)) => {
                    self.conv = Some(Conv {
                        from,
                        mixer,
                        resampler,
                    });
                }
                (Err(e), _) | (_, Err(e)) => {
                    metrics::counter!(m::LIVE_HLS_SKIPPED, "reason" => "unsupported_spec")
                        .increment(1);
                    tracing::debug!(stream = %self.ladder.id, error = %e, "cannot convert the source for live HLS");
                    return;
                }
            }
        }
        let Some(conv) = self.conv.as_mut() else {
            return;
        };
        let mut pcm = block;
        if let Some(mixer) = conv.mixer.as_mut() {
            self.mixed.clear();
            if mixer.process(pcm, &mut self.mixed).is_err() {
                return;
            }
            pcm = &self.mixed;
        }
        if let Some(rs) = conv.resampler.as_mut() {
            self.resampled.clear();
            if rs.process(pcm, &mut self.resampled).is_err() {
                return;
            }
            pcm = &self.resampled;
        }
        if pcm.is_empty() {
            return;
        }
        for i in 0..self.rungs.len() {
            let rung = self.ladder.rungs[i].rung;
            let r = &mut self.rungs[i];
            if r.failed {
                continue;
            }
            if r.enc.is_none() {
                match new_encoder(rung, out) {
                    Ok(e) => r.enc = Some(e),
                    Err(e) => {
                        tracing::warn!(stream = %self.ladder.id, rung = %rung.name(), error = %e, "cannot encode this rung");
                        r.failed = true;
                        lock(&self.ladder.rungs[i].state).failed = true;
                        continue;
                    }
                }
            }
            let result = match r.enc.as_mut() {
                Some(RungEncoder::Aac(e)) => {
                    let (frames, buf) = (&mut r.frames, &mut r.buf);
                    e.encode(pcm, |unit| {
                        buf.extend_from_slice(unit);
                        frames.push((buf.split().freeze(), aac::FRAME_LENGTH));
                    })
                }
                Some(RungEncoder::Mp3 { enc, out, split }) => {
                    let res = enc.encode(pcm, out);
                    split.push(out);
                    out.clear();
                    loop {
                        match split.next_frame() {
                            Ok(Some(f)) => r.frames.push((f.data, f.samples)),
                            Ok(None) => break,
                            Err(_) => {}
                        }
                    }
                    res
                }
                None => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(stream = %self.ladder.id, rung = %rung.name(), error = %e, "live HLS encoder failed; it restarts at the next block");
                r.enc = None;
                r.discontinuity = true;
                r.anchor = None;
            }
            deliver(&self.ladder, i, r, out_spec, self.metadata.as_ref());
        }
    }
}

/// Hands rung `i`'s encoded frames to its segmenter (made at its first frame).
fn deliver(
    ladder: &Ladder,
    i: usize,
    r: &mut RungWork,
    out: Option<AudioSpec>,
    metadata: Option<&NowPlaying>,
) {
    if r.frames.is_empty() {
        return;
    }
    let Some(out) = out else {
        r.frames.clear();
        return;
    };
    let rate = out.sample_rate.hz();
    let Some(rung) = ladder.rungs.get(i) else {
        return;
    };
    let mut st = lock(&rung.state);
    let mut progressed = false;
    if st.seg.is_none() {
        let mut cfg = match rung.rung.codec {
            LiveCodec::Aac => match Fmp4Track::aac_from_adts(&r.frames[0].0) {
                Ok(track) => SegmenterConfig::fmp4(track),
                Err(e) => {
                    tracing::warn!(stream = %ladder.id, rung = %rung.name, error = %e, "cannot describe the AAC track");
                    r.frames.clear();
                    return;
                }
            },
            LiveCodec::Mp3 => SegmenterConfig::new(PackedCodec::Mp3),
        };
        cfg.target_duration = ladder.target;
        cfg.part_target = Some(part_target(ladder.target));
        // At least 30 s listed, for players that start further back.
        cfg.window = (30.0 / ladder.target.as_secs_f64()).ceil().max(6.0) as usize;
        cfg.uri_prefix.clone_from(&ladder.prefix);
        st.seg = Some(Segmenter::new(cfg, Instant::now()));
        if let Some(np) = metadata {
            st.feed(Input::Metadata {
                now: Instant::now(),
                now_playing: np.clone(),
            });
        }
        r.discontinuity = false;
        progressed = true;
    }
    let now = Instant::now();
    if std::mem::take(&mut r.discontinuity) {
        progressed |= st.feed(Input::Discontinuity {
            now,
            unix_ms: r.anchor.take(),
        });
    } else if let Some(ms) = r.anchor.take() {
        st.feed(Input::WallClock { now, unix_ms: ms });
    }
    let tap = &ladder.rungs[i].frames;
    if tap.receiver_count() > 0 {
        for (data, _) in &r.frames {
            let _ = tap.send(data.clone());
        }
    }
    for (data, samples) in r.frames.drain(..) {
        progressed |= st.feed(Input::Frame {
            now,
            data,
            samples,
            sample_rate: rate,
        });
    }
    drop(st);
    if progressed {
        ladder.bump();
    }
}

/// LL-HLS part duration for a segment target: a quarter of it, at least 200 ms.
fn part_target(target: Duration) -> Duration {
    (target / 4).max(Duration::from_millis(200))
}

fn new_encoder(rung: LiveRung, spec: AudioSpec) -> veza_audio::Result<RungEncoder> {
    let rc = RateControl::Cbr(Bitrate::kbps(rung.kbps));
    match rung.codec {
        LiveCodec::Aac => {
            let cfg = EncoderConfig::new(OutputFormat::Aac, spec).with_rate_control(rc);
            Ok(RungEncoder::Aac(FdkEncoder::new(&cfg, Transport::Adts)?))
        }
        LiveCodec::Mp3 => {
            let cfg = EncoderConfig::new(OutputFormat::Mp3, spec).with_rate_control(rc);
            Ok(RungEncoder::Mp3 {
                enc: Mp3Encoder::new(&cfg)?,
                out: BytesMut::with_capacity(16 << 10),
                split: FrameSplitter::new(FrameFormat::Mpeg, SplitterConfig::default()),
            })
        }
    }
}

/// Encoding yields to serving: the encoder thread runs at a lower priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: `gettid` and `setpriority` take plain integers and touch no memory of ours.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid);
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 5);
    }
}

// ---------------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------------

/// The live HLS routes: media playlists, initialisation segments, segments and parts. (The
/// master playlist, `/live/{id}.m3u8`, is reached through the progressive route; see
/// [`master`].)
pub fn routes() -> Router<AppState> {
    Router::new().route("/live/{id}/{rung}/{file}", get(rung_file))
}

const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

fn playlist_response(text: String) -> Response {
    let mut resp = Response::new(Body::from(text));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, PLAYLIST);
    h.insert(header::CACHE_CONTROL, NO_CACHE);
    resp
}

/// The stream id of a path segment (a UUID, in the store's spelling).
fn stream_id(raw: &str) -> Result<String, ApiError> {
    Ok(uuid::Uuid::parse_str(raw)
        .map_err(|_| ApiError::NotFound("stream"))?
        .hyphenated()
        .to_string())
}

/// An `access_token` from the query, when it is safe to copy into URIs as it is.
fn query_token(uri: &Uri) -> Option<&str> {
    uri.query()?.split('&').find_map(|kv| {
        let t = kv.strip_prefix("access_token=")?;
        (!t.is_empty()
            && t.len() <= 4096
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%+".contains(&b)))
        .then_some(t)
    })
}

/// The request's client: its credential's subject, address and user agent.
struct Client {
    key: u64,
    agent: String,
}

/// Resolves the caller and checks they may see the stream; returns the ladder and the client.
async fn authorize(
    state: &AppState,
    id: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    ip: Option<IpAddr>,
) -> Result<(Arc<Ladder>, Client), ApiError> {
    let caller = match crate::auth::credential(method, uri, headers) {
        Some(c) => Caller(Some(crate::auth::resolve(state, &c).await?)),
        None => Caller(None),
    };
    let ladder = match state.live().hls().get(id) {
        Some(l) => l,
        None => wait_for_ladder(state, id).await?,
    };
    let (owner, private) = ladder.access(state).await?;
    caller.check_see(owner.as_deref(), private, "stream")?;
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let ip = if state.config().trust_proxy_headers {
        headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
            .or(ip)
    } else {
        ip
    };
    let key = crate::analytics::listener_key(caller.subject(), ip, &agent);
    Ok((ladder, Client { key, agent }))
}

/// The ladder of a stream on air whose ladder is not registered yet (it is starting, or the
/// stream is relayed from another node on this first request): waits a little for it.
async fn wait_for_ladder(state: &AppState, id: &str) -> Result<Arc<Ladder>, ApiError> {
    let not_on_air = || ApiError::NotFound("live stream (it is not on air)");
    if state.config().live.hls_ladder.is_empty() {
        return Err(ApiError::NotFound("live HLS (LIVE_HLS_LADDER is off)"));
    }
    let on_air = match state.live().get(id).filter(|c| !c.is_ended()) {
        Some(c) => Some(c),
        None => state.live().relay_for(state, id).await,
    };
    if on_air.is_none() {
        // Unknown streams are 404 too, but say which.
        return match state.store().get_stream(id).await? {
            Some(_) => Err(not_on_air()),
            None => Err(ApiError::NotFound("stream")),
        };
    }
    let deadline = Instant::now() + state.config().live.hls_segment;
    loop {
        if let Some(l) = state.live().hls().get(id) {
            return Ok(l);
        }
        if Instant::now() >= deadline {
            return Err(not_on_air());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|a| a.0.ip())
}

/// `GET /live/{id}.m3u8`: the master playlist of the stream's ladder, AAC rungs first. While
/// the stream is live but has no segment yet, waits (up to one segment duration) for the
/// first one.
///
/// # Errors
/// 404 when the stream is unknown or not on air (or HLS is off), 401/403 as for progressive
/// listeners of a private stream.
pub async fn master(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let path = req.uri().path();
    let raw = path
        .strip_prefix("/live/")
        .and_then(|p| p.strip_suffix(".m3u8"))
        .ok_or(ApiError::NotFound("playlist"))?;
    let id = stream_id(raw)?;
    let (ladder, client) = authorize(
        state,
        &id,
        req.method(),
        req.uri(),
        req.headers(),
        client_ip(&req),
    )
    .await?;
    if !ladder.has_segment() {
        ladder.wait_for(ladder.target, Ladder::has_segment).await;
    }
    ladder.touch(state, client.key, None, &client.agent, 0);
    let token = query_token(req.uri());
    let renditions: Vec<Rendition> = ladder
        .rungs
        .iter()
        .filter(|r| !lock(&r.state).failed)
        .map(|r| {
            let bps = r.rung.kbps * 1000;
            let codecs = match r.rung.codec {
                LiveCodec::Aac => "mp4a.40.2",
                LiveCodec::Mp3 => PackedCodec::Mp3.codecs(),
            };
            let mut uri = format!("{id}/{}/index.m3u8", r.name);
            if let Some(t) = token {
                uri.push_str("?access_token=");
                uri.push_str(t);
            }
            Rendition {
                uri,
                // Peak: the bitrate plus container (fMP4 boxes, ID3) overhead.
                bandwidth: bps.saturating_mul(110) / 100,
                average_bandwidth: Some(bps),
                codecs: codecs.to_owned(),
                name: Some(r.name.clone()),
            }
        })
        .collect();
    Ok(playlist_response(master_playlist(&renditions)))
}

/// The blocking-reload parameters of a media playlist request.
#[derive(Debug, Default, PartialEq, Eq)]
struct Reload {
    msn: Option<u64>,
    part: Option<u32>,
    skip: bool,
}

/// Reads `_HLS_msn`, `_HLS_part` and `_HLS_skip` (400 for values that do not parse).
fn parse_reload(uri: &Uri) -> Result<Reload, ApiError> {
    let mut r = Reload::default();
    for kv in uri.query().unwrap_or("").split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let bad = |what: &str| {
            ApiError::BadRequest(format!(
                "{what} must be {}",
                if what == "_HLS_skip" {
                    "YES, v2 or NO"
                } else {
                    "a non-negative integer"
                }
            ))
        };
        match k {
            "_HLS_msn" => r.msn = Some(v.parse().map_err(|_| bad("_HLS_msn"))?),
            "_HLS_part" => r.part = Some(v.parse().map_err(|_| bad("_HLS_part"))?),
            "_HLS_skip" => {
                r.skip = match v {
                    "YES" | "v2" => true,
                    "NO" => false,
                    _ => return Err(bad("_HLS_skip")),
                }
            }
            _ => {}
        }
    }
    if r.part.is_some() && r.msn.is_none() {
        return Err(ApiError::BadRequest("_HLS_part needs _HLS_msn".to_owned()));
    }
    Ok(r)
}

/// A media playlist or a segment file name of a rung.
#[derive(Debug, PartialEq, Eq)]
enum RungFile {
    Playlist,
    Init,
    Segment(u64),
    Part(u64, u32),
}

/// Parses `index.m3u8`, `{prefix}init.mp4`, `{prefix}{N}.{ext}`, `{prefix}{N}.{P}.{ext}`.
fn parse_file(name: &str, prefix: &str, ext: &str) -> Option<RungFile> {
    if name == "index.m3u8" {
        return Some(RungFile::Playlist);
    }
    let rest = name.strip_prefix(prefix)?;
    if rest == "init.mp4" {
        return Some(RungFile::Init);
    }
    let rest = rest.strip_suffix(ext)?.strip_suffix('.')?;
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match rest.split_once('.') {
        None => number(rest).map(RungFile::Segment),
        Some((n, p)) => Some(RungFile::Part(number(n)?, u32::try_from(number(p)?).ok()?)),
    }
}

/// `GET /live/{id}/{rung}/{file}`: a rung's media playlist (`index.m3u8`, with blocking
/// reload), its fMP4 initialisation segment, a segment or a part.
async fn rung_file(
    State(state): State<AppState>,
    UrlPath((raw, name, file)): UrlPath<(String, String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let id = stream_id(&raw)?;
    let (ladder, client) = authorize(
        &state,
        &id,
        req.method(),
        req.uri(),
        req.headers(),
        client_ip(&req),
    )
    .await?;
    let rung = ladder.rung(&name).ok_or(ApiError::NotFound("rendition"))?;
    let ext = match rung.rung.codec {
        LiveCodec::Aac => "m4s",
        LiveCodec::Mp3 => PackedCodec::Mp3.extension(),
    };
    let what = parse_file(&file, &ladder.prefix, ext).ok_or(ApiError::NotFound("segment"))?;
    match what {
        RungFile::Playlist => {
            let reload = parse_reload(req.uri())?;
            let text = media_playlist(&ladder, rung, &reload).await?;
            ladder.touch(&state, client.key, Some(&name), &client.agent, 0);
            let text = match query_token(req.uri()) {
                Some(t) => with_token(&text, t),
                None => text,
            };
            Ok(playlist_response(text))
        }
        RungFile::Init => {
            let init = lock(&rung.state)
                .seg
                .as_ref()
                .and_then(Segmenter::init_segment)
                .ok_or(ApiError::NotFound("segment"))?;
            ladder.touch(
                &state,
                client.key,
                Some(&name),
                &client.agent,
                init.len() as u64,
            );
            Ok(segment_response(init, "audio/mp4"))
        }
        RungFile::Segment(msn) => {
            let bytes = wait_media(&ladder, rung, msn, None).await?;
            ladder.touch(
                &state,
                client.key,
                Some(&name),
                &client.agent,
                bytes.len() as u64,
            );
            Ok(segment_response(bytes, content_type(rung)))
        }
        RungFile::Part(msn, part) => {
            let bytes = wait_media(&ladder, rung, msn, Some(part)).await?;
            ladder.touch(
                &state,
                client.key,
                Some(&name),
                &client.agent,
                bytes.len() as u64,
            );
            Ok(segment_response(bytes, content_type(rung)))
        }
    }
}

fn content_type(rung: &Rung) -> &'static str {
    match rung.rung.codec {
        LiveCodec::Aac => "audio/mp4",
        LiveCodec::Mp3 => PackedCodec::Mp3.content_type(),
    }
}

/// A segment or part; one that is about to be cut (the next ones) is waited for, up to three
/// target durations, as LL-HLS players ask for hinted parts before they exist.
async fn wait_media(
    ladder: &Ladder,
    rung: &Rung,
    msn: u64,
    part: Option<u32>,
) -> Result<Bytes, ApiError> {
    let get = || -> Option<Bytes> {
        let st = lock(&rung.state);
        let seg = st.seg.as_ref()?;
        match part {
            Some(p) => seg.part(msn, p),
            None => seg.segment(msn),
        }
    };
    if let Some(b) = get() {
        return Ok(b);
    }
    let soon = {
        let st = lock(&rung.state);
        st.seg
            .as_ref()
            .map_or(msn == 0, |s| !s.is_ended() && msn <= s.next_msn() + 1)
    };
    if !soon {
        return Err(ApiError::NotFound("segment"));
    }
    let mut found = None;
    ladder
        .wait_for(ladder.target * 3, |_| {
            found = get();
            found.is_some()
        })
        .await;
    found.ok_or(ApiError::NotFound("segment"))
}

/// A rung's media playlist, blocking per `_HLS_msn`/`_HLS_part` until the part is cut.
async fn media_playlist(ladder: &Ladder, rung: &Rung, reload: &Reload) -> Result<String, ApiError> {
    // A stream that has no complete segment yet: a plain request waits (up to two segments)
    // for the first one, since players take a playlist without segments for an error; without
    // a segmenter after that, 503.
    let has_segment = |_: &Ladder| {
        lock(&rung.state)
            .seg
            .as_ref()
            .is_some_and(|s| s.next_msn() > 0 || s.is_ended())
    };
    if reload.msn.is_none() && !has_segment(ladder) {
        ladder.wait_for(ladder.target * 2, has_segment).await;
    }
    if lock(&rung.state).seg.is_none() {
        return Err(ApiError::Unavailable {
            what: "the first segment of the live stream",
            retry_after: 1,
        });
    }
    let (tx, rx) = oneshot::channel();
    let id = {
        let mut st = lock(&rung.state);
        let id = st.next_request;
        st.next_request += 1;
        if st.waiters.len() >= 64 {
            st.waiters.retain(|_, tx| !tx.is_closed());
        }
        st.waiters.insert(id, tx);
        st.feed(Input::PlaylistRequest {
            now: Instant::now(),
            id,
            msn: reload.msn,
            part: reload.part,
            skip: reload.skip,
        });
        id
    };
    // The segmenter answers by its own limit (three target durations) on its next input; this
    // timer gives it that input when the stream is quiet.
    let limit = ladder.target * 3 + Duration::from_millis(100);
    let answer = match tokio::time::timeout(limit, rx).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(HlsError::Timeout),
        Err(_) => {
            let mut st = lock(&rung.state);
            st.feed(Input::Timeout {
                now: Instant::now(),
            });
            st.waiters.remove(&id);
            Err(HlsError::Timeout)
        }
    };
    answer.map_err(hls_error)
}

/// The HTTP error of a refused playlist request.
fn hls_error(e: HlsError) -> ApiError {
    match e {
        HlsError::TooFarAhead { .. } | HlsError::BadRequest(_) => {
            ApiError::BadRequest(e.to_string())
        }
        HlsError::Timeout => ApiError::Unavailable {
            what: "the requested part (it did not arrive in time)",
            retry_after: 1,
        },
        HlsError::Ended => ApiError::NotFound("segment (the stream ended before it)"),
        other => ApiError::BadRequest(other.to_string()),
    }
}

/// Appends `?access_token=` to every URI of a media playlist (segment lines and `URI="..."`
/// attributes).
fn with_token(playlist: &str, token: &str) -> String {
    let mut out = String::with_capacity(playlist.len() + playlist.len() / 4);
    for line in playlist.lines().filter(|l| !l.is_empty()) {
        if line.starts_with('#') {
            match line.find("URI=\"") {
                Some(at) => {
                    let start = at + 5;
                    let end = line[start..].find('"').map_or(line.len(), |e| start + e);
                    out.push_str(&line[..end]);
                    out.push_str("?access_token=");
                    out.push_str(token);
                    out.push_str(&line[end..]);
                }
                None => out.push_str(line),
            }
        } else {
            out.push_str(line);
            out.push_str("?access_token=");
            out.push_str(token);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_parse() {
        let p = "19a-";
        assert_eq!(parse_file("index.m3u8", p, "m4s"), Some(RungFile::Playlist));
        assert_eq!(parse_file("19a-init.mp4", p, "m4s"), Some(RungFile::Init));
        assert_eq!(
            parse_file("19a-12.m4s", p, "m4s"),
            Some(RungFile::Segment(12))
        );
        assert_eq!(
            parse_file("19a-12.3.m4s", p, "m4s"),
            Some(RungFile::Part(12, 3))
        );
        assert_eq!(
            parse_file("19a-7.mp3", p, "mp3"),
            Some(RungFile::Segment(7))
        );
        for bad in [
            "19b-12.m4s",
            "19a-12.mp3",
            "19a-.m4s",
            "19a-1.2.3.m4s",
            "19a-+1.m4s",
            "19a-1.99999999999.m4s",
            "19a-9999999999999.m4s",
            "init.mp4",
        ] {
            assert_eq!(parse_file(bad, p, "m4s"), None, "{bad}");
        }
    }

    #[test]
    fn reload_parameters_parse_or_are_refused() {
        let uri = |q: &str| -> Uri { format!("/x/index.m3u8?{q}").parse().unwrap() };
        assert_eq!(
            parse_reload(&uri("_HLS_msn=5&_HLS_part=2&_HLS_skip=YES&access_token=t")).unwrap(),
            Reload {
                msn: Some(5),
                part: Some(2),
                skip: true
            }
        );
        assert_eq!(parse_reload(&uri("")).unwrap(), Reload::default());
        for bad in [
            "_HLS_msn=-1",
            "_HLS_msn=x",
            "_HLS_part=1",
            "_HLS_msn=1&_HLS_part=a",
            "_HLS_skip=maybe",
        ] {
            assert!(parse_reload(&uri(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_carried_into_every_uri() {
        let pl = "#EXTM3U\n#EXT-X-MAP:URI=\"a-init.mp4\"\n#EXT-X-PART:DURATION=0.5,URI=\"a-0.0.m4s\",INDEPENDENT=YES\n#EXTINF:2.0,\na-0.m4s\n";
        let out = with_token(pl, "abc.def");
        assert!(
            out.contains("URI=\"a-init.mp4?access_token=abc.def\"\n"),
            "{out}"
        );
        assert!(
            out.contains("URI=\"a-0.0.m4s?access_token=abc.def\",INDEPENDENT=YES"),
            "{out}"
        );
        assert!(out.contains("\na-0.m4s?access_token=abc.def\n"), "{out}");
        let uri: Uri = "/live/x.m3u8?access_token=ab\"c"
            .parse()
            .unwrap_or_else(|_| "/live/x.m3u8?access_token=ab%22c".parse().unwrap());
        assert!(query_token(&uri).is_none_or(|t| !t.contains('"')));
        let uri: Uri = "/live/x.m3u8?a=1&access_token=eyJ.x-y_z".parse().unwrap();
        assert_eq!(query_token(&uri), Some("eyJ.x-y_z"));
    }
}
