//! Live relay between nodes through NATS (core NATS: live audio is not worth persisting).
//!
//! The node that ingests a stream publishes each chunk of whole frames on
//! `veza.live.{id}.audio` and metadata and the end on `veza.live.{id}.meta`, and answers
//! `veza.live.{id}.info` requests (format, `ice-*` details, now playing, Ogg stream headers and
//! the last few seconds of chunks for a fast start). Another node that gets a listener for a
//! stream it does not carry subscribes to the audio first, then asks for the info, and runs a
//! relayed [`Channel`] fed with what arrives (chunks are numbered, so none is fed twice across the
//! catch-up). Its listeners are served exactly like local ones. The relayed channel ends when the
//! stream ends, when the source node stays silent past the grace period, or a while after its
//! last listener left (it unsubscribes then).
//!
//! Every node publishes its listener count per stream on `veza.live.listeners` every two
//! seconds; every node adds the others' counts to its own, so `viewer_count` is the same on
//! all nodes and each listener is counted once (analytics sessions are opened only by the node
//! that serves the listener).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use veza_stream_core::frame::FrameFormat;
use veza_stream_core::live::{Chunk, Input};
use veza_stream_core::metadata::NowPlaying;

use super::{Channel, SourceInfo, Tap, new_channel};
use crate::state::AppState;

/// How long a relayed channel stays after its last listener left.
const IDLE_LINGER: Duration = Duration::from_secs(10);
/// Audio sent with the info reply so that a relayed listener starts with a burst.
const CATCH_UP: Duration = Duration::from_secs(4);
/// How long to wait for the ingesting node to answer.
const INFO_TIMEOUT: Duration = Duration::from_secs(2);
/// The subject of listener counts.
const LISTENERS_SUBJECT: &str = "veza.live.listeners";

/// The relay of one node: its NATS connection and node id.
#[derive(Clone)]
pub struct Relay {
    client: async_nats::Client,
    node: u64,
    /// One relay subscription per stream is set up at a time (two listeners arriving together
    /// share it).
    setup: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("node", &format_args!("{:016x}", self.node))
            .finish_non_exhaustive()
    }
}

fn audio_subject(id: &str) -> String {
    format!("veza.live.{id}.audio")
}

fn meta_subject(id: &str) -> String {
    format!("veza.live.{id}.meta")
}

fn info_subject(id: &str) -> String {
    format!("veza.live.{id}.info")
}

/// The info reply of the ingesting node.
#[derive(Debug, Serialize, Deserialize)]
struct InfoReply {
    content_type: String,
    name: Option<String>,
    description: Option<String>,
    genre: Option<String>,
    url: Option<String>,
    bitrate: Option<u32>,
    public: bool,
    title: Option<String>,
    artist: Option<String>,
    song_url: Option<String>,
    /// Ogg stream headers, base64.
    headers: Vec<String>,
    /// Recent chunks: (seq, base64 data).
    recent: Vec<(u64, String)>,
}

/// Metadata messages.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Meta {
    NowPlaying {
        title: Option<String>,
        artist: Option<String>,
        url: Option<String>,
    },
    End,
}

/// A chunk on the wire: its sequence number (8 bytes, big-endian), then its bytes.
fn encode_chunk(c: &Chunk) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + c.data.len());
    b.put_u64(c.seq.0);
    b.put_slice(&c.data);
    b.freeze()
}

fn decode_chunk(mut payload: Bytes) -> Option<(u64, Bytes)> {
    if payload.len() < 8 {
        return None;
    }
    let head = payload.split_to(8);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&head);
    Some((u64::from_be_bytes(seq), payload))
}

impl Relay {
    /// Connects to NATS at `url` (in the background: NATS may be down now and come later) and
    /// starts the listener-count exchange.
    ///
    /// # Errors
    /// When the URL cannot be used.
    pub async fn start(state: &AppState, url: &str) -> Result<Self, async_nats::ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .name("veza-stream live relay")
            .connect(url)
            .await?;
        let relay = Self {
            client,
            node: rand::random(),
            setup: Arc::default(),
        };
        tokio::spawn(exchange_counts(state.clone(), relay.clone()));
        Ok(relay)
    }

    /// This node's id.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// Publishes an ingested channel to the other nodes until it ends.
    pub fn publish(&self, ch: Arc<Channel>) {
        let relay = self.clone();
        tokio::spawn(async move {
            if let Err(e) = relay.publish_loop(&ch).await {
                tracing::warn!(stream = %ch.id(), error = %e, "live relay publisher stopped");
            }
        });
    }

    async fn publish_loop(&self, ch: &Arc<Channel>) -> Result<(), async_nats::SubscribeError> {
        let id = ch.id().to_owned();
        let mut taps = ch.taps();
        let mut info = self.client.subscribe(info_subject(&id)).await?;
        let audio = audio_subject(&id);
        let meta = meta_subject(&id);
        loop {
            tokio::select! {
                tap = taps.recv() => match tap {
                    Ok(Tap::Chunk(c)) => {
                        let _ = self.client.publish(audio.clone(), encode_chunk(&c)).await;
                    }
                    Ok(Tap::Metadata(np)) => {
                        let m = Meta::NowPlaying { title: np.title, artist: np.artist, url: np.url };
                        if let Ok(b) = serde_json::to_vec(&m) {
                            let _ = self.client.publish(meta.clone(), b.into()).await;
                        }
                    }
                    Ok(Tap::SourceLost) => {}
                    Ok(Tap::End) | Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        if let Ok(b) = serde_json::to_vec(&Meta::End) {
                            let _ = self.client.publish(meta.clone(), b.into()).await;
                        }
                        let _ = self.client.flush().await;
                        return Ok(());
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(stream = %id, missed = n, "live relay publisher fell behind");
                    }
                },
                req = info.next() => {
                    let Some(req) = req else { return Ok(()) };
                    let Some(reply) = req.reply else { continue };
                    let body = info_reply(ch);
                    if let Ok(b) = serde_json::to_vec(&body) {
                        let _ = self.client.publish(reply, b.into()).await;
                    }
                }
            }
        }
    }

    /// A relayed channel of stream `id`, set up when some node ingests it; `None` when none
    /// answers.
    pub async fn subscribe(&self, state: &AppState, id: &str) -> Option<Arc<Channel>> {
        let rec = state.store().get_stream(id).await.ok().flatten()?;
        // The ingesting node records the stream live in the shared database a moment after it
        // starts answering: a stream not (yet) recorded live gets a short wait only, so that
        // listeners of streams off air are not held.
        let limit = if rec.is_live {
            INFO_TIMEOUT
        } else {
            Duration::from_millis(500)
        };
        let gate = {
            let mut m = self
                .setup
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            m.retain(|_, g| Arc::strong_count(g) > 1);
            m.entry(id.to_owned()).or_default().clone()
        };
        let _one = gate.lock().await;
        if let Some(c) = state.live().get(id).filter(|c| !c.is_ended()) {
            return Some(c);
        }
        // Audio first, so nothing published after the info reply is missed.
        let mut audio = self.client.subscribe(audio_subject(id)).await.ok()?;
        let meta = self.client.subscribe(meta_subject(id)).await.ok()?;
        // The ingesting node may be a moment away from answering (it subscribes when the
        // stream starts): ask again until INFO_TIMEOUT.
        let t0 = Instant::now();
        let reply = loop {
            let left = limit.saturating_sub(t0.elapsed());
            match tokio::time::timeout(left, self.client.request(info_subject(id), Bytes::new()))
                .await
            {
                Ok(Ok(r)) => break r,
                Ok(Err(_)) if t0.elapsed() + Duration::from_millis(100) < limit => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => return None,
            }
        };
        let info: InfoReply = serde_json::from_slice(&reply.payload).ok()?;
        let format = FrameFormat::from_content_type(&info.content_type)?;
        let ch = new_channel(state, &rec, format, true);
        if let Ok(mut i) = ch.info.lock() {
            *i = SourceInfo {
                name: info.name.clone(),
                description: info.description.clone(),
                genre: info.genre.clone(),
                url: info.url.clone(),
                bitrate: info.bitrate,
                public: info.public,
                content_type: info.content_type.clone(),
            };
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let now = Instant::now();
        ch.feed(Input::SourceConnected { now }).ok()?;
        for h in &info.headers {
            if let Ok(d) = b64.decode(h) {
                let _ = ch.feed(Input::Data {
                    now,
                    data: d.into(),
                });
            }
        }
        let mut last = None;
        for (seq, data) in &info.recent {
            if let Ok(d) = b64.decode(data) {
                let _ = ch.feed(Input::Data {
                    now,
                    data: d.into(),
                });
                last = Some(*seq);
            }
        }
        if info.title.is_some() || info.artist.is_some() {
            let _ = ch.set_metadata(NowPlaying {
                title: info.title,
                artist: info.artist,
                url: info.song_url,
            });
        }
        // Chunks that arrived while the info was on its way and that the reply already held.
        while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(1), audio.next()).await
        {
            feed_relayed(&ch, &mut last, msg.payload);
        }
        {
            let mut map = state.live().map();
            if let Some(existing) = map.get(id).filter(|c| !c.is_ended()) {
                // A source connected here meanwhile: use it.
                let existing = existing.clone();
                drop(map);
                ch.end();
                return Some(existing);
            }
            map.insert(id.to_owned(), ch.clone());
        }
        tracing::info!(stream = %id, "relaying a stream ingested on another node");
        tokio::spawn(relay_loop(ch.clone(), audio, meta, last));
        Some(ch)
    }
}

fn feed_relayed(ch: &Channel, last: &mut Option<u64>, payload: Bytes) {
    let Some((seq, data)) = decode_chunk(payload) else {
        return;
    };
    if last.is_some_and(|l| seq <= l) {
        return;
    }
    *last = Some(seq);
    let _ = ch.feed(Input::Data {
        now: Instant::now(),
        data,
    });
}

/// Feeds a relayed channel until the stream ends, the source node goes silent past the grace
/// period, or nobody has listened for a while.
async fn relay_loop(
    ch: Arc<Channel>,
    mut audio: async_nats::Subscriber,
    mut meta: async_nats::Subscriber,
    mut last: Option<u64>,
) {
    let silence = Duration::from_secs(3);
    let mut connected = true;
    let mut idle_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            msg = tokio::time::timeout(silence, audio.next()) => match msg {
                Ok(Some(m)) => {
                    if !connected {
                        connected = ch.feed(Input::SourceConnected { now: Instant::now() }).is_ok();
                    }
                    feed_relayed(&ch, &mut last, m.payload);
                }
                Ok(None) => break,
                Err(_) => {
                    // The source node went quiet: as if the source dropped (the grace period
                    // of the relayed channel runs; it ends the stream if nothing comes back).
                    if connected {
                        connected = false;
                        let _ = ch.feed(Input::SourceDisconnected { now: Instant::now() });
                    }
                }
            },
            m = meta.next() => match m.map(|m| serde_json::from_slice::<Meta>(&m.payload)) {
                Some(Ok(Meta::NowPlaying { title, artist, url })) => {
                    let _ = ch.set_metadata(NowPlaying { title, artist, url });
                }
                Some(Ok(Meta::End)) | None => {
                    ch.end();
                    break;
                }
                Some(Err(_)) => {}
            },
            _ = tick.tick() => {
                if ch.is_ended() {
                    break;
                }
                if ch.listeners() == 0 && ch.hls_idle() {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= IDLE_LINGER {
                        tracing::info!(stream = %ch.id(), "no listener left: relay unsubscribed");
                        ch.end();
                        break;
                    }
                } else {
                    idle_since = None;
                }
            }
        }
    }
    let _ = audio.unsubscribe().await;
    let _ = meta.unsubscribe().await;
}

fn info_reply(ch: &Channel) -> InfoReply {
    let b64 = base64::engine::general_purpose::STANDARD;
    let i = ch.info();
    let np = ch.now_playing();
    let mut recent: Vec<(u64, String)> = Vec::new();
    let mut budget = 512 * 1024usize;
    let chunks = ch.recent_chunks(CATCH_UP);
    for c in chunks.iter().rev() {
        if c.data.len() > budget {
            break;
        }
        budget -= c.data.len();
        recent.push((c.seq.0, b64.encode(&c.data)));
    }
    recent.reverse();
    InfoReply {
        content_type: if i.content_type.is_empty() {
            ch.format().content_type().to_owned()
        } else {
            i.content_type
        },
        name: i.name,
        description: i.description,
        genre: i.genre,
        url: i.url,
        bitrate: i.bitrate,
        public: i.public,
        title: np.title,
        artist: np.artist,
        song_url: np.url,
        headers: ch.stream_headers().iter().map(|h| b64.encode(h)).collect(),
        recent,
    }
}

/// Publishes this node's listener counts every two seconds and takes the other nodes'.
async fn exchange_counts(state: AppState, relay: Relay) {
    let mut sub = loop {
        match relay.client.subscribe(LISTENERS_SUBJECT).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let counts: Vec<(String, usize)> = state
                    .live()
                    .map()
                    .values()
                    .map(|c| (c.id().to_owned(), c.listeners() + c.hls_viewers()))
                    .collect();
                for (id, n) in counts {
                    let msg = json!({"stream": id, "node": relay.node, "listeners": n});
                    let _ = relay
                        .client
                        .publish(LISTENERS_SUBJECT, msg.to_string().into())
                        .await;
                }
            }
            m = sub.next() => {
                let Some(m) = m else { return };
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) else { continue };
                let (Some(id), Some(node), Some(n)) =
                    (v["stream"].as_str(), v["node"].as_u64(), v["listeners"].as_u64())
                else {
                    continue;
                };
                if node != relay.node {
                    state.live().report_remote(id, node, usize::try_from(n).unwrap_or(usize::MAX));
                }
            }
        }
    }
}
