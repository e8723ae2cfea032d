//! Live broadcasting: the channels of the streams that are on air on this node.
//!
//! A [`Channel`] holds one live stream's core machine ([`veza_stream_core::live::LiveStream`]):
//! its ingest, its chunk ring and its listeners' cursors. The source's connection feeds it
//! ([`SourceGuard::push`]); listeners of every protocol read it through a [`ListenerCursor`],
//! which wakes when new chunks land (a `watch` channel bumped once per chunk, not per listener)
//! and takes every chunk it can in one short critical section. A chunk is a `Bytes` handle:
//! fan-out never copies audio.
//!
//! Consumers that need every chunk in order (the live HLS ladder, the recorder, the relay to
//! other nodes) subscribe to the channel's taps ([`Channel::taps`]) instead of being listeners.
//!
//! Each channel has a driver task: it runs the grace period of a dropped source, keeps the
//! stream record in step (`is_live`, `started_at`, `viewer_count`), publishes
//! `veza.stream.started` / `veza.stream.ended`, and updates the metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};
use veza_stream_core::frame::FrameFormat;
use veza_stream_core::live::{
    Chunk, EndReason, Event, Input, LiveConfig, LiveStream, Next, Output, StreamError,
};
use veza_stream_core::metadata::{IcyInterleaver, IcyMetadata, NowPlaying};
use veza_stream_core::{ListenerId, Seq};

use crate::error::ApiError;
use crate::events::Subject;
use crate::http::audio::now_ms;
use crate::metrics as m;
use crate::state::AppState;
use crate::storage::StreamRecord;

pub mod hls;
pub mod icecast;
pub mod record;
pub mod relay;
pub mod ws;

/// What the source said about itself (`ice-*` headers), shown to listeners as `icy-*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceInfo {
    /// `ice-name`.
    pub name: Option<String>,
    /// `ice-description`.
    pub description: Option<String>,
    /// `ice-genre`.
    pub genre: Option<String>,
    /// `ice-url`.
    pub url: Option<String>,
    /// `ice-bitrate` (kbit/s), or `ice-audio-info`'s `bitrate`.
    pub bitrate: Option<u32>,
    /// `ice-public`.
    pub public: bool,
    /// The source's content type.
    pub content_type: String,
}

/// What a channel's taps carry, in order.
#[derive(Debug, Clone)]
pub enum Tap {
    /// A chunk of whole frames (the ring's own chunk).
    Chunk(Chunk),
    /// New now-playing metadata.
    Metadata(NowPlaying),
    /// The source dropped (the next chunk may follow a gap).
    SourceLost,
    /// The stream ended: no more chunks.
    End,
}

/// The part of a channel behind its lock.
struct Core {
    stream: LiveStream,
    icy: IcyMetadata,
    /// The next sequence number to send to the taps.
    tapped: u64,
}

/// Messages to a channel's driver task.
#[derive(Debug)]
enum Drive {
    Event(Event),
    /// A listener joined or left (nothing to do at once: counts are written on the tick).
    Wake,
    /// The periodic tick: write the viewer count if it changed.
    Tick,
}

/// One live stream on air on this node. Shared by its source, listeners and driver.
pub struct Channel {
    id: String,
    format: FrameFormat,
    core: Mutex<Core>,
    /// Bumped when listeners may read more (new chunks, the end).
    head: watch::Sender<u64>,
    taps: broadcast::Sender<Tap>,
    info: Mutex<SourceInfo>,
    listeners: AtomicUsize,
    ended: AtomicBool,
    drive: mpsc::UnboundedSender<Drive>,
    /// Relayed from another node (no local source).
    relayed: bool,
    /// HLS clients seen recently (kept by the HLS delivery).
    hls_viewers: AtomicUsize,
    /// When the stream went live, Unix milliseconds (0: not yet).
    started_ms: AtomicI64,
    /// The stream's record as the channel started (owner, privacy, title for listeners'
    /// headers), kept current by updates, so that a joining listener costs no database query.
    record: Mutex<StreamRecord>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.id)
            .field("format", &self.format)
            .field("listeners", &self.listeners.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// The stream id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The source's framing.
    pub fn format(&self) -> FrameFormat {
        self.format
    }

    /// Listeners on this node now.
    pub fn listeners(&self) -> usize {
        self.listeners.load(Ordering::Relaxed)
    }

    /// The stream's record (as the channel started, with later updates).
    pub fn record(&self) -> StreamRecord {
        self.record
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Takes an updated record (title, privacy) for the listeners to come.
    pub fn set_record(&self, rec: StreamRecord) {
        if let Ok(mut r) = self.record.lock() {
            *r = rec;
        }
    }

    /// HLS clients that fetched a playlist or segment recently.
    pub fn hls_viewers(&self) -> usize {
        self.hls_viewers.load(Ordering::Relaxed)
    }

    /// Sets the number of recent HLS clients (by the HLS delivery).
    pub fn set_hls_viewers(&self, n: usize) {
        self.hls_viewers.store(n, Ordering::Relaxed);
    }

    /// True when no HLS client is watching.
    pub fn hls_idle(&self) -> bool {
        self.hls_viewers() == 0
    }

    /// True once the stream has ended.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// True when the audio comes from another node.
    pub fn is_relayed(&self) -> bool {
        self.relayed
    }

    /// What the source said about itself.
    pub fn info(&self) -> SourceInfo {
        self.info.lock().map(|i| i.clone()).unwrap_or_default()
    }

    /// Now-playing metadata.
    pub fn now_playing(&self) -> NowPlaying {
        self.lock().stream.now_playing().clone()
    }

    /// Subscribes to every chunk from now on (and metadata and the end), in order. A receiver
    /// that falls more than 256 messages behind loses the oldest (and learns it from `recv`).
    pub fn taps(&self) -> broadcast::Receiver<Tap> {
        self.taps.subscribe()
    }

    /// Chunks still in the ring from about `back` before the live edge, for a consumer that
    /// starts late (a relay or a ladder catching up).
    pub fn recent_chunks(&self, back: Duration) -> Vec<Chunk> {
        let core = self.lock();
        let ring = core.stream.ring();
        let from = ring.seq_for_burst(back);
        (from.0..ring.next_seq().0)
            .filter_map(|s| ring.get(Seq(s)).cloned())
            .collect()
    }

    /// The Ogg stream headers new consumers need first (empty for MP3 and AAC).
    pub fn stream_headers(&self) -> Vec<Bytes> {
        self.lock().stream.headers().to_vec()
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock cannot leave the machine half-updated in a way that
        // matters more than stopping the stream: go on with the inner value.
        self.core
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Feeds one input and handles what the machine says, with the lock held only for the
    /// machine itself.
    fn feed(&self, input: Input) -> Result<(), StreamError> {
        let mut events = Vec::new();
        let result = {
            let mut core = self.lock();
            let r = core.stream.handle_input(input);
            self.pump(&mut core, &mut events);
            r
        };
        self.after(events);
        result
    }

    fn pump(&self, core: &mut Core, events: &mut Vec<Event>) {
        while let Output::Event(e) = core.stream.poll_output() {
            match &e {
                Event::ChunksReady { head } => {
                    if self.taps.receiver_count() > 0 {
                        for s in core.tapped..=head.0 {
                            if let Some(c) = core.stream.ring().get(Seq(s)) {
                                let _ = self.taps.send(Tap::Chunk(c.clone()));
                            }
                        }
                    }
                    core.tapped = head.0 + 1;
                }
                Event::MetadataChanged(np) => {
                    core.icy.set(np);
                    let _ = self.taps.send(Tap::Metadata(np.clone()));
                }
                Event::Interrupted { .. } => {
                    let _ = self.taps.send(Tap::SourceLost);
                }
                Event::Ended { .. } => {
                    let _ = self.taps.send(Tap::End);
                }
                _ => {}
            }
            events.push(e);
        }
    }

    fn after(&self, events: Vec<Event>) {
        let mut wake = false;
        for e in events {
            match e {
                Event::ChunksReady { .. } => wake = true,
                Event::ListenerSkipped { .. } => {
                    metrics::counter!(m::LIVE_LISTENER_SKIPS).increment(1);
                }
                Event::BadSourceData(err) => {
                    metrics::counter!(m::LIVE_BAD_SOURCE_BYTES).increment(1);
                    tracing::debug!(stream = %self.id, error = %err, "source sent bytes that are not audio frames");
                }
                Event::MetadataChanged(_) => wake = true,
                Event::Ended { .. } => {
                    self.ended.store(true, Ordering::Release);
                    wake = true;
                    let _ = self.drive.send(Drive::Event(e));
                }
                other => {
                    let _ = self.drive.send(Drive::Event(other));
                }
            }
        }
        if wake {
            self.head.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Sets now-playing metadata (admin metadata update, or relayed).
    ///
    /// # Errors
    /// 410 when the stream ended.
    pub fn set_metadata(&self, now_playing: NowPlaying) -> Result<(), ApiError> {
        self.feed(Input::Metadata {
            now: Instant::now(),
            now_playing,
        })
        .map_err(stream_error)
    }

    /// Ends the stream now (its listeners get what is left, then the end).
    pub fn end(&self) {
        let _ = self.feed(Input::End {
            now: Instant::now(),
        });
    }
}

/// The HTTP error of a refused live operation.
pub fn stream_error(e: StreamError) -> ApiError {
    match e {
        StreamError::SourceBusy => ApiError::Conflict(
            "a source is already broadcasting to this stream; disconnect it first".into(),
        ),
        StreamError::Ended => ApiError::Gone("the stream has ended".into()),
        StreamError::NoSource => ApiError::Conflict("no source is connected".into()),
        StreamError::TooManyListeners(_) => ApiError::Unavailable {
            what: "listener capacity (LIVE_MAX_LISTENERS reached)",
            retry_after: 10,
        },
        other => ApiError::BadRequest(other.to_string()),
    }
}

/// The channels on air on this node. Cheap to clone.
#[derive(Clone, Default)]
pub struct LiveHub {
    channels: Arc<Mutex<HashMap<String, Arc<Channel>>>>,
    /// Listener counts other nodes report: stream -> node -> (count, when).
    remote: Arc<Mutex<RemoteCounts>>,
    relay: Arc<std::sync::OnceLock<relay::Relay>>,
    /// Work that must finish before the process exits (recordings being finalised).
    finishing: Arc<AtomicUsize>,
    /// The live HLS ladders.
    hls: hls::Ladders,
}

/// Counts a piece of work [`LiveHub::wait_finishing`] waits for, while it lives.
#[derive(Debug)]
pub struct FinishingGuard(Arc<AtomicUsize>);

impl Drop for FinishingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

type RemoteCounts = HashMap<String, HashMap<u64, (usize, Instant)>>;

impl std::fmt::Debug for LiveHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHub")
            .field("channels", &self.map().len())
            .finish()
    }
}

impl LiveHub {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Channel>>> {
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The channel of a stream on air here (ingested or relayed), if any.
    pub fn get(&self, id: &str) -> Option<Arc<Channel>> {
        self.map().get(id).cloned()
    }

    /// Marks work that a shutdown waits for (e.g. a recording), until the guard is dropped.
    pub fn finishing(&self) -> FinishingGuard {
        self.finishing.fetch_add(1, Ordering::AcqRel);
        FinishingGuard(self.finishing.clone())
    }

    /// Waits (at most `limit`) until the work marked with [`LiveHub::finishing`] is done.
    /// True when it is.
    pub async fn wait_finishing(&self, limit: Duration) -> bool {
        let t0 = Instant::now();
        while self.finishing.load(Ordering::Acquire) > 0 {
            if t0.elapsed() >= limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Ends every channel on this node (shutdown): listeners get what is left, then the end.
    pub fn end_all(&self) {
        let all: Vec<Arc<Channel>> = self.map().values().cloned().collect();
        for c in all {
            c.end();
        }
    }

    /// Streams ingested on this node now.
    pub fn live_count(&self) -> usize {
        self.map()
            .values()
            .filter(|c| !c.relayed && !c.is_ended())
            .count()
    }

    /// The live HLS ladders of this node's channels.
    pub fn hls(&self) -> &hls::Ladders {
        &self.hls
    }

    /// Listeners of `id` on this node (connections and recent HLS clients).
    pub fn local_listeners(&self, id: &str) -> usize {
        self.get(id).map_or(0, |c| c.listeners() + c.hls_viewers())
    }

    /// Sets the relay to other nodes (with `NATS_URL`).
    pub fn set_relay(&self, relay: relay::Relay) {
        let _ = self.relay.set(relay);
    }

    /// The relay to other nodes, if configured.
    pub fn relay(&self) -> Option<&relay::Relay> {
        self.relay.get()
    }

    /// Overlays the live figures on a stream record: `is_live` from the channel, `viewer_count`
    /// from the listeners now (this node's; all nodes' once the relay reports them).
    pub fn overlay(&self, state: &AppState, rec: &mut StreamRecord) {
        if let Some(c) = self.get(&rec.id) {
            if !c.is_ended() {
                rec.is_live = true;
                let started = c.started_ms.load(Ordering::Acquire);
                if started > 0 && !c.relayed {
                    rec.started_at = Some(started);
                }
            }
        }
        rec.viewer_count = if rec.is_live {
            i64::try_from(state.viewers(&rec.id)).unwrap_or(i64::MAX)
        } else {
            0
        };
    }

    /// Listeners of `id` on every node: this node's, plus the counts other nodes reported
    /// within the last 15 seconds.
    pub fn viewers(&self, id: &str) -> usize {
        let local = self.local_listeners(id);
        let remote = self
            .remote
            .lock()
            .map(|r| {
                r.get(id).map_or(0, |nodes| {
                    nodes
                        .values()
                        .filter(|(_, at)| at.elapsed() < Duration::from_secs(15))
                        .map(|(n, _)| *n)
                        .sum()
                })
            })
            .unwrap_or(0);
        local + remote
    }

    /// The channel of a stream that is on air on another node, relayed here (subscribing to it
    /// on the first listener); `None` when no relay is configured or no node carries it.
    pub async fn relay_for(&self, state: &AppState, id: &str) -> Option<Arc<Channel>> {
        self.relay()?.subscribe(state, id).await
    }

    /// Records the listener count another node reported for `id`.
    pub fn report_remote(&self, id: &str, node: u64, listeners: usize) {
        if let Ok(mut r) = self.remote.lock() {
            let e = r.entry(id.to_owned()).or_default();
            e.insert(node, (listeners, Instant::now()));
            e.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(60));
        }
    }

    fn remove_if(&self, id: &str, ch: &Arc<Channel>) {
        let mut map = self.map();
        if map.get(id).is_some_and(|c| Arc::ptr_eq(c, ch)) {
            map.remove(id);
        }
    }

    /// Connects a source to `rec`'s stream: continues the channel within its grace period, or
    /// starts a new one.
    ///
    /// # Errors
    /// 409 when a source is already connected, 503 past `MAX_CONCURRENT_STREAMS`, 409 when a
    /// returning source changes format.
    pub fn connect_source(
        &self,
        state: &AppState,
        rec: &StreamRecord,
        format: FrameFormat,
        info: SourceInfo,
    ) -> Result<SourceGuard, ApiError> {
        let now = Instant::now();
        let ch = {
            let mut map = self.map();
            match map.get(&rec.id) {
                Some(c) if !c.is_ended() && !c.relayed => {
                    if c.format != format {
                        return Err(ApiError::Conflict(format!(
                            "the stream is live as {}; a returning source must send the same format",
                            c.format.content_type()
                        )));
                    }
                    c.clone()
                }
                _ => {
                    let live = map.values().filter(|c| !c.relayed && !c.is_ended()).count();
                    if live >= state.config().max_concurrent_streams {
                        return Err(ApiError::Unavailable {
                            what: "a live stream slot (MAX_CONCURRENT_STREAMS reached)",
                            retry_after: 30,
                        });
                    }
                    let c = new_channel(state, rec, format, false);
                    if let Some(old) = map.insert(rec.id.clone(), c.clone()) {
                        // A relayed copy of the stream (the source moved to this node).
                        old.end();
                    }
                    c
                }
            }
        };
        // Before the source connects, so the driver records this same time.
        let _ = ch
            .started_ms
            .compare_exchange(0, now_ms(), Ordering::AcqRel, Ordering::Acquire);
        ch.feed(Input::SourceConnected { now })
            .map_err(stream_error)?;
        if let Ok(mut i) = ch.info.lock() {
            *i = info;
        }
        Ok(SourceGuard {
            ch,
            connected: true,
        })
    }

    /// Adds a listener to the stream `id` on air here.
    ///
    /// # Errors
    /// 404 when it is not on air, 410 when it ended, 503 at the listener limit.
    pub fn listen(
        &self,
        state: &AppState,
        id: &str,
        burst: Option<Duration>,
        icy: bool,
        session: Option<crate::analytics::Session>,
    ) -> Result<ListenerCursor, ApiError> {
        let ch = self
            .get(id)
            .filter(|c| !c.is_ended())
            .ok_or(ApiError::NotFound("live stream"))?;
        let (lid, icy_meta) = {
            let mut core = ch.lock();
            let lid = core
                .stream
                .add_listener(Instant::now(), burst)
                .map_err(stream_error)?;
            (lid, core.icy.clone())
        };
        let n = ch.listeners.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!(m::LIVE_LISTENERS).increment(1.0);
        let _ = ch.drive.send(Drive::Wake);
        tracing::trace!(stream = %id, listeners = n, "listener joined");
        let head = ch.head.subscribe();
        Ok(ListenerCursor {
            icy: icy.then(|| IcyInterleaver::new(state.config().live.icy_metaint)),
            icy_meta,
            ch,
            id: lid,
            head,
            session,
            done: false,
            low_latency: burst.unwrap_or(state.config().live.burst).is_zero(),
        })
    }
}

fn new_channel(
    state: &AppState,
    rec: &StreamRecord,
    format: FrameFormat,
    relayed: bool,
) -> Arc<Channel> {
    let s = &state.config().live;
    let mut cfg = LiveConfig::new(format);
    cfg.burst = s.burst;
    cfg.grace_period = s.grace_period;
    cfg.max_listeners = s.max_listeners;
    let (head, _) = watch::channel(0u64);
    let (taps, _) = broadcast::channel(256);
    let (drive, rx) = mpsc::unbounded_channel();
    let ch = Arc::new(Channel {
        id: rec.id.clone(),
        format,
        core: Mutex::new(Core {
            stream: LiveStream::new(cfg, Instant::now()),
            icy: IcyMetadata::new(),
            tapped: 0,
        }),
        head,
        taps,
        info: Mutex::new(SourceInfo::default()),
        listeners: AtomicUsize::new(0),
        ended: AtomicBool::new(false),
        drive,
        relayed,
        hls_viewers: AtomicUsize::new(0),
        started_ms: AtomicI64::new(0),
        record: Mutex::new(rec.clone()),
    });
    tokio::spawn(drive_channel(state.clone(), ch.clone(), rx));
    ch
}

/// The channel's driver: the grace-period timer, the stream record, events and metrics.
async fn drive_channel(state: AppState, ch: Arc<Channel>, mut rx: mpsc::UnboundedReceiver<Drive>) {
    let mut deadline: Option<Instant> = None;
    let mut last_viewers = usize::MAX;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            () = sleep_until(deadline) => {
                deadline = None;
                let _ = ch.feed(Input::Timeout { now: Instant::now() });
                continue;
            }
            _ = tick.tick() => Some(Drive::Tick),
        };
        let Some(msg) = msg else { return };
        match msg {
            Drive::Event(Event::Started { .. }) => {
                hls::start(&state, &ch);
                if !ch.relayed {
                    metrics::gauge!(m::STREAMS_ACTIVE).increment(1.0);
                    if let Some(r) = state.live().relay() {
                        r.publish(ch.clone());
                    }
                    record::on_started(&state, &ch);
                    mark_live(&state, &ch.id, true, ch.started_ms.load(Ordering::Acquire)).await;
                }
            }
            Drive::Event(Event::Interrupted { deadline: d, .. }) => {
                deadline = Some(d);
                tracing::info!(stream = %ch.id, "source dropped; waiting for it to return");
            }
            Drive::Event(Event::Resumed { gap, .. }) => {
                deadline = None;
                tracing::info!(stream = %ch.id, gap_ms = gap.as_millis() as u64, "source returned");
            }
            Drive::Event(Event::Ended { reason, .. }) => {
                state.live().remove_if(&ch.id, &ch);
                if !ch.relayed {
                    metrics::gauge!(m::STREAMS_ACTIVE).decrement(1.0);
                    metrics::counter!(m::STREAMS_ENDED).increment(1);
                    mark_live(&state, &ch.id, false, 0).await;
                    let why = match reason {
                        EndReason::Requested => "requested",
                        EndReason::SourceLost => "source_lost",
                        _ => "other",
                    };
                    tracing::info!(stream = %ch.id, reason = why, "stream ended");
                }
                return;
            }
            Drive::Event(_) | Drive::Wake => continue,
            Drive::Tick => {}
        }
        // At most one write per tick, whatever the churn of listeners (a join or a leave is
        // not worth a database write: the document reads the live count from the hub).
        let viewers = state.viewers(&ch.id);
        if viewers != last_viewers && !ch.relayed {
            last_viewers = viewers;
            let _ = state
                .store()
                .set_stream_viewers(&ch.id, i64::try_from(viewers).unwrap_or(i64::MAX))
                .await;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Records a stream going live or off air, and publishes the event.
async fn mark_live(state: &AppState, id: &str, live: bool, started_ms: i64) {
    let now = if live && started_ms > 0 {
        started_ms
    } else {
        now_ms()
    };
    if let Err(e) = state.store().set_stream_live(id, live, now).await {
        tracing::warn!(stream = %id, error = %e, "cannot update the stream record");
    }
    let Ok(Some(rec)) = state.store().get_stream(id).await else {
        return;
    };
    let mut data = crate::http::streams::document(&rec);
    if !live {
        data["ended_at"] =
            json!(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string());
    }
    state.events().publish(
        if live {
            Subject::StreamStarted
        } else {
            Subject::StreamEnded
        },
        data,
    );
}

/// A connected source. Dropping it disconnects the source (the grace period starts).
#[derive(Debug)]
pub struct SourceGuard {
    ch: Arc<Channel>,
    connected: bool,
}

impl SourceGuard {
    /// The channel.
    pub fn channel(&self) -> &Arc<Channel> {
        &self.ch
    }

    /// Ingests bytes from the source (cut anywhere).
    ///
    /// # Errors
    /// 410 when the stream ended meanwhile.
    pub fn push(&self, data: Bytes) -> Result<(), ApiError> {
        metrics::counter!(m::LIVE_INGEST_BYTES).increment(data.len() as u64);
        self.ch
            .feed(Input::Data {
                now: Instant::now(),
                data,
            })
            .map_err(stream_error)
    }

    /// Ends the stream (the source said it is done for good).
    pub fn end(mut self) {
        self.connected = false;
        self.ch.end();
    }
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        if self.connected {
            let _ = self.ch.feed(Input::SourceDisconnected {
                now: Instant::now(),
            });
        }
    }
}

/// A listener's position in a channel. Dropping it removes the listener.
pub struct ListenerCursor {
    ch: Arc<Channel>,
    id: ListenerId,
    head: watch::Receiver<u64>,
    icy: Option<IcyInterleaver>,
    icy_meta: IcyMetadata,
    session: Option<crate::analytics::Session>,
    done: bool,
    low_latency: bool,
}

impl std::fmt::Debug for ListenerCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerCursor")
            .field("stream", &self.ch.id)
            .field("listener", &self.id.as_u64())
            .finish_non_exhaustive()
    }
}

/// Most chunks taken in one critical section.
const BATCH: usize = 32;

impl ListenerCursor {
    /// The channel.
    pub fn channel(&self) -> &Arc<Channel> {
        &self.ch
    }

    /// Waits for the next bytes and appends them to `out` (audio, with ICY metadata blocks
    /// interleaved when asked). Returns false when the stream has ended and everything was
    /// given.
    pub async fn next_batch(&mut self, out: &mut Vec<Bytes>) -> bool {
        loop {
            if self.done {
                return false;
            }
            self.head.borrow_and_update();
            match self.take(out) {
                Taken::Data => return true,
                Taken::Ended => {
                    self.done = true;
                    return false;
                }
                Taken::Pending => {}
            }
            if self.head.changed().await.is_err() {
                self.done = true;
                return false;
            }
        }
    }

    /// True when the listener asked to start at the live edge (no burst): it wants each chunk
    /// as soon as it is cut.
    pub fn low_latency(&self) -> bool {
        self.low_latency
    }

    /// Appends what is ready now, without waiting (nothing when nothing is ready, or after the
    /// end).
    pub fn take_ready(&mut self, out: &mut Vec<Bytes>) {
        if !self.done && matches!(self.take(out), Taken::Ended) {
            // What was taken before is sent; the next `next_batch` says the end.
            self.done = true;
        }
    }

    /// Takes what is ready now (no waiting): up to [`BATCH`] chunks in one critical section.
    fn take(&mut self, out: &mut Vec<Bytes>) -> Taken {
        let from = out.len();
        let mut ended = false;
        {
            let mut core = self.ch.lock();
            while out.len() - from < BATCH {
                match core.stream.next_chunk(self.id) {
                    Ok(Next::Data(b)) => out.push(b),
                    Ok(Next::Pending) => break,
                    Ok(Next::Ended) | Err(_) => {
                        ended = true;
                        break;
                    }
                    Ok(_) => break,
                }
            }
            if self.icy.is_some() && core.icy.version() != self.icy_meta.version() {
                self.icy_meta = core.icy.clone();
            }
        }
        if out.len() == from {
            return if ended { Taken::Ended } else { Taken::Pending };
        }
        let bytes: u64 = out[from..].iter().map(|b| b.len() as u64).sum();
        if let Some(icy) = self.icy.as_mut() {
            let audio: Vec<Bytes> = out.drain(from..).collect();
            for b in audio {
                icy.interleave(b, &self.icy_meta, |p| out.push(p));
            }
        }
        if let Some(s) = &self.session {
            s.add_bytes(bytes);
        }
        metrics::counter!(m::LIVE_SENT_BYTES).increment(bytes);
        Taken::Data
    }
}

/// What [`ListenerCursor::take`] found.
enum Taken {
    Data,
    Pending,
    Ended,
}

impl Drop for ListenerCursor {
    fn drop(&mut self) {
        let _ = self.ch.lock().stream.remove_listener(self.id);
        self.ch.listeners.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(m::LIVE_LISTENERS).decrement(1.0);
        let _ = self.ch.drive.send(Drive::Wake);
    }
}
