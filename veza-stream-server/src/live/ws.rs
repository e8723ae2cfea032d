//! WebSocket ingest and listening, for browsers.
//!
//! # Ingest: `GET /api/v1/streams/{id}/ingest` (upgrade)
//! Credentials in the handshake: the owner's (or an admin's) token as for the rest of the API
//! (`Authorization`, or `?access_token=` since browsers cannot set WebSocket headers), or the
//! stream's ingest key as `?key=`. The query says what the binary messages carry:
//! - `format=mp3|aac|ogg` (default mp3): encoded bytes, cut anywhere (e.g. MediaRecorder output
//!   re-muxed, or an encoder in WebAssembly);
//! - `format=f32le|s16le` with `rate` (8000 to 192000) and `channels` (1 or 2): interleaved PCM
//!   frames, encoded here as `encode=mp3|aac|ogg` (default mp3) at `bitrate` kbit/s (default 128).
//!
//! Text messages: `{"type":"metadata","title":..,"artist":..,"url":..}` sets now-playing;
//! `{"type":"end"}` ends the stream. Closing the socket is a dropped source (the grace period
//! runs). The server answers `{"type":"live"}` once live, and an error message then a close for
//! refused input.
//!
//! # Listening: `GET /api/v1/streams/{id}/listen` (upgrade)
//! The first message is text: `{"type":"start","content_type":..,"now_playing":..}`; then binary
//! messages of whole frames of the stream, and `{"type":"metadata",..}` text messages when the
//! title changes. `?burst=MS` as for progressive listeners.
//!
//! With `?abr=true` the listener gets AAC (ADTS frames) from the live HLS ladder instead, and
//! the server picks the rung with the core's ABR controller from how fast the listener takes
//! the bytes; each switch is announced with `{"type":"rendition","name":..,"kbps":..}`.

use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::get;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use veza_audio::{AudioSpec, EncoderConfig, OutputFormat, PcmBuffer, RateControl};
use veza_stream_core::analytics::Protocol;
use veza_stream_core::frame::FrameFormat;
use veza_stream_core::metadata::NowPlaying;

use super::{ListenerCursor, SourceGuard, SourceInfo};
use crate::auth::{Caller, ClientAddr, Role};
use crate::error::ApiError;
use crate::state::AppState;

/// Largest WebSocket message accepted from a source.
const MAX_MESSAGE: usize = 1 << 20;

/// The WebSocket routes (under `/api/v1`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/streams/{stream_id}/ingest", get(ingest))
        .route("/streams/{stream_id}/listen", get(listen))
}

/// Query of the ingest handshake.
#[derive(Debug, Deserialize)]
struct IngestQuery {
    key: Option<String>,
    format: Option<String>,
    rate: Option<u32>,
    channels: Option<u16>,
    encode: Option<String>,
    bitrate: Option<u32>,
}

/// PCM sample encodings a browser source may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PcmKind {
    F32,
    S16,
}

struct PcmSource {
    kind: PcmKind,
    spec: AudioSpec,
    encoder: Box<dyn veza_audio::Encoder>,
    out: BytesMut,
}

fn parse_ingest(q: &IngestQuery) -> Result<(FrameFormat, Option<PcmSource>), ApiError> {
    let fmt = q.format.as_deref().unwrap_or("mp3").to_ascii_lowercase();
    let pcm = match fmt.as_str() {
        "mp3" | "audio/mpeg" => return Ok((FrameFormat::Mpeg, None)),
        "aac" | "adts" | "audio/aac" => return Ok((FrameFormat::Adts, None)),
        "ogg" | "audio/ogg" => return Ok((FrameFormat::Ogg, None)),
        "f32le" | "pcm" => PcmKind::F32,
        "s16le" => PcmKind::S16,
        other => {
            return Err(ApiError::Validation(format!(
                "`format` must be mp3, aac, ogg, f32le or s16le, not {other:?}"
            )));
        }
    };
    let rate = q.rate.unwrap_or(48_000);
    let channels = q.channels.unwrap_or(2);
    if !(8_000..=192_000).contains(&rate) || !(1..=2).contains(&channels) {
        return Err(ApiError::Validation(
            "PCM needs `rate` from 8000 to 192000 and `channels` 1 or 2".into(),
        ));
    }
    let spec = AudioSpec::new(rate, channels).map_err(|e| ApiError::Validation(e.to_string()))?;
    let (out_format, frame_format) = match q.encode.as_deref().unwrap_or("mp3") {
        "mp3" => (OutputFormat::Mp3, FrameFormat::Mpeg),
        "aac" => (OutputFormat::Aac, FrameFormat::Adts),
        "ogg" | "vorbis" => (OutputFormat::Ogg, FrameFormat::Ogg),
        other => {
            return Err(ApiError::Validation(format!(
                "`encode` must be mp3, aac or ogg, not {other:?}"
            )));
        }
    };
    let kbps = q.bitrate.unwrap_or(128);
    if !(16..=320).contains(&kbps) {
        return Err(ApiError::Validation(
            "`bitrate` must be 16 to 320 kbit/s".into(),
        ));
    }
    let mut cfg = EncoderConfig::new(out_format, spec);
    cfg.rate_control = match out_format {
        OutputFormat::Ogg => RateControl::Abr(veza_audio::Bitrate::kbps(kbps)),
        _ => RateControl::Cbr(veza_audio::Bitrate::kbps(kbps)),
    };
    let encoder = veza_audio::new_encoder(&cfg)
        .map_err(|e| ApiError::Validation(format!("cannot encode this PCM: {e}")))?;
    Ok((
        frame_format,
        Some(PcmSource {
            kind: pcm,
            spec,
            encoder,
            out: BytesMut::new(),
        }),
    ))
}

async fn ingest(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<IngestQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| ApiError::NotFound("stream"))?
        .hyphenated()
        .to_string();
    let rec = state
        .store()
        .get_stream(&id)
        .await?
        .ok_or(ApiError::NotFound("stream"))?;
    match &q.key {
        Some(key) => {
            let hash = hex::encode(Sha256::digest(key.as_bytes()));
            if hash != rec.ingest_key_hash {
                return Err(ApiError::Unauthorized);
            }
        }
        None => {
            caller.require(Role::Creator)?;
            caller.check_see(rec.owner.as_deref(), rec.is_private, "stream")?;
            caller.check_change(rec.owner.as_deref(), rec.is_private, "stream")?;
        }
    }
    let (format, pcm) = parse_ingest(&q)?;
    let info = SourceInfo {
        content_type: format.content_type().to_owned(),
        bitrate: pcm.as_ref().map(|_| q.bitrate.unwrap_or(128)),
        ..SourceInfo::default()
    };
    let guard = state.live().connect_source(&state, &rec, format, info)?;
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| run_ingest(socket, guard, pcm)))
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    Metadata {
        title: Option<String>,
        artist: Option<String>,
        url: Option<String>,
    },
    End,
}

fn pcm_of(kind: PcmKind, spec: AudioSpec, data: &[u8]) -> Option<PcmBuffer> {
    let samples: Vec<f32> = match kind {
        PcmKind::F32 => {
            if !data.len().is_multiple_of(4) {
                return None;
            }
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).clamp(-1.0, 1.0))
                .map(|x| if x.is_finite() { x } else { 0.0 })
                .collect()
        }
        PcmKind::S16 => {
            if !data.len().is_multiple_of(2) {
                return None;
            }
            data.chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
                .collect()
        }
    };
    if !samples.len().is_multiple_of(usize::from(spec.channels)) {
        return None;
    }
    Some(PcmBuffer::from_interleaved(spec, &samples))
}

async fn run_ingest(socket: WebSocket, guard: SourceGuard, mut pcm: Option<PcmSource>) {
    let (mut tx, mut rx) = socket.split();
    let _ = tx
        .send(Message::Text(json!({"type": "live"}).to_string().into()))
        .await;
    let fail =
        |msg: String| Message::Text(json!({"type": "error", "message": msg}).to_string().into());
    loop {
        let msg = match tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
            Ok(Some(Ok(m))) => m,
            // Silence, a failed or a closed socket: the source dropped.
            _ => break,
        };
        match msg {
            Message::Binary(data) => {
                let bytes = match pcm.as_mut() {
                    None => data,
                    Some(p) => {
                        let Some(buf) = pcm_of(p.kind, p.spec, &data) else {
                            let _ = tx
                                .send(fail(
                                    "PCM messages must hold whole interleaved frames".into(),
                                ))
                                .await;
                            break;
                        };
                        if let Err(e) = p.encoder.encode(&buf, &mut p.out) {
                            let _ = tx.send(fail(format!("cannot encode: {e}"))).await;
                            break;
                        }
                        p.out.split().freeze()
                    }
                };
                if !bytes.is_empty() && guard.push(bytes).is_err() {
                    break;
                }
            }
            Message::Text(t) => match serde_json::from_str::<Control>(&t) {
                Ok(Control::Metadata { title, artist, url }) => {
                    let _ = guard
                        .channel()
                        .set_metadata(NowPlaying { title, artist, url });
                }
                Ok(Control::End) => {
                    if let Some(p) = pcm.as_mut() {
                        if p.encoder.finish(&mut p.out).is_ok() {
                            let _ = guard.push(p.out.split().freeze());
                        }
                    }
                    guard.end();
                    let _ = tx.send(Message::Close(None)).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(fail(format!("unknown control message: {e}"))).await;
                }
            },
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    drop(guard);
}

/// Query of the listen handshake.
#[derive(Debug, Deserialize)]
struct ListenQuery {
    burst: Option<u64>,
    /// `true`: AAC from the live ladder, its rung chosen by the server (core ABR).
    abr: Option<bool>,
}

async fn listen(
    State(state): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<ListenQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let rec = crate::http::streams::find(&state, &caller, &id).await?;
    if state.live().get(&rec.id).is_none_or(|c| c.is_ended())
        && state.live().relay_for(&state, &rec.id).await.is_none()
    {
        return Err(ApiError::NotFound("live stream (it is not on air)"));
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let session = state.analytics().join(
        format!("stream:{}", rec.id),
        crate::analytics::listener_key(caller.subject(), addr.0, agent),
        Protocol::WebSocket,
        None,
        Some(agent.chars().take(64).collect()),
    );
    let burst = q.burst.map(|ms| Duration::from_millis(ms.min(20_000)));
    let cursor = state
        .live()
        .listen(&state, &rec.id, burst, false, Some(session))?;
    if q.abr == Some(true) {
        // The ladder starts with the stream; give it up to a few seconds on a fresh stream.
        let t0 = std::time::Instant::now();
        loop {
            if let Some(l) = state.live().hls().get(&rec.id) {
                if !l.adaptive_rungs().is_empty() {
                    return Ok(ws.on_upgrade(move |socket| run_listen_abr(socket, cursor, l)));
                }
            }
            if t0.elapsed() > Duration::from_secs(3) {
                return Err(ApiError::Conflict(
                    "adaptive listening needs the live HLS ladder with an AAC rung (LIVE_HLS_LADDER)".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(ws.on_upgrade(move |socket| run_listen(socket, cursor)))
}

/// Media between two switch points of an adapted listener.
const SWITCH_INTERVAL: Duration = Duration::from_secs(2);
/// What a WebSocket player is assumed to buffer before it starts playing.
const CLIENT_START_BUFFER: Duration = Duration::from_secs(1);

/// Samples per second of an ADTS frame's header (the sampling-frequency index).
fn adts_rate(frame: &[u8]) -> Option<u32> {
    const RATES: [u32; 13] = [
        96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025,
        8_000, 7_350,
    ];
    let idx = (frame.get(2)? >> 2) & 0x0F;
    RATES.get(usize::from(idx)).copied()
}

/// An adapted listener: AAC frames of one ladder rung at a time, the rung chosen at each switch
/// point by the core's MPC controller from the measured send throughput (bytes over the time
/// the sends took: a client that reads slowly makes the sends wait) and the media sent ahead of
/// real time. A switch is announced with `{"type":"rendition",...}` before the new rung's
/// frames; the rungs come from one decode and encoder setup, so frames line up.
async fn run_listen_abr(
    socket: WebSocket,
    cursor: ListenerCursor,
    ladder: std::sync::Arc<super::hls::Ladder>,
) {
    use veza_stream_core::abr::{
        AbrConfig, AbrController, DecisionContext, Ladder as AbrLadder, TransferSample,
    };
    let rungs = ladder.adaptive_rungs();
    let Ok(abr_ladder) = AbrLadder::new(rungs.iter().map(|r| veza_audio::Bitrate::kbps(r.2)))
    else {
        return;
    };
    let Ok(mut ctl) = AbrController::new(AbrConfig::new(abr_ladder)) else {
        return;
    };
    let (mut tx, mut rx) = socket.split();
    let ch = cursor.channel().clone();
    let mut cur = 0usize;
    let Some(mut frames) = ladder.subscribe_frames(rungs[cur].0) else {
        return;
    };
    let rendition =
        |i: usize| json!({"type": "rendition", "name": rungs[i].1, "kbps": rungs[i].2}).to_string();
    let start = json!({
        "type": "start",
        "content_type": "audio/aac",
        "adaptive": true,
        "renditions": rungs.iter().map(|r| json!({"name": r.1, "kbps": r.2})).collect::<Vec<_>>(),
        "now_playing": metadata_message(&ch.now_playing()),
    });
    if tx
        .send(Message::Text(start.to_string().into()))
        .await
        .is_err()
        || tx.send(Message::Text(rendition(cur).into())).await.is_err()
    {
        return;
    }
    let mut np = ch.now_playing();
    let send = async {
        let t0 = std::time::Instant::now();
        let mut media = Duration::ZERO;
        let mut window_media = Duration::ZERO;
        let mut window_bytes = 0u64;
        let mut window_send = Duration::ZERO;
        loop {
            let frame = match tokio::time::timeout(Duration::from_millis(500), frames.recv()).await
            {
                Ok(Ok(f)) => f,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
                // The ladder ended (it has sent its last frames): the broadcast is over.
                Err(_) if ladder.is_ended() => break,
                Err(_) => continue,
            };
            let now_playing = ch.now_playing();
            if now_playing != np {
                np = now_playing;
                let m = metadata_message(&np).to_string();
                if tx.send(Message::Text(m.into())).await.is_err() {
                    return;
                }
            }
            let rate = adts_rate(&frame).unwrap_or(48_000);
            let dur = Duration::from_nanos(1_024 * 1_000_000_000 / u64::from(rate));
            let len = frame.len() as u64;
            let sent_at = std::time::Instant::now();
            let sent =
                tokio::time::timeout(Duration::from_secs(30), tx.send(Message::Binary(frame)))
                    .await;
            if !matches!(sent, Ok(Ok(()))) {
                return;
            }
            window_send += sent_at.elapsed();
            window_bytes += len;
            window_media += dur;
            media += dur;
            if window_media < SWITCH_INTERVAL {
                continue;
            }
            // The sends' own time (at least 1 ms a frame's worth, so an idle link does not
            // read as infinitely fast).
            let took = window_send.max(Duration::from_millis(2));
            let end = std::time::Instant::now();
            let begin = end.checked_sub(took).unwrap_or(end);
            if let Ok(sample) = TransferSample::new(window_bytes, begin, begin, end) {
                ctl.on_transfer(sample);
            }
            let ahead = (media + CLIENT_START_BUFFER).saturating_sub(t0.elapsed());
            let ctx = DecisionContext::for_progressive(ahead, Duration::ZERO, SWITCH_INTERVAL);
            if let Ok(d) = ctl.decide(&ctx) {
                if d.rung != cur && d.rung < rungs.len() {
                    if let Some(next) = ladder.subscribe_frames(rungs[d.rung].0) {
                        cur = d.rung;
                        frames = next;
                        if tx.send(Message::Text(rendition(cur).into())).await.is_err() {
                            return;
                        }
                    }
                }
            }
            window_media = Duration::ZERO;
            window_bytes = 0;
            window_send = Duration::ZERO;
        }
        let _ = tx.send(Message::Close(None)).await;
    };
    let hangup = async {
        while let Some(Ok(m)) = rx.next().await {
            if matches!(m, Message::Close(_)) {
                return;
            }
        }
    };
    tokio::select! {
        () = send => {},
        () = hangup => {},
    }
    drop(cursor);
}

fn metadata_message(np: &NowPlaying) -> serde_json::Value {
    json!({"type": "metadata", "title": np.title, "artist": np.artist, "url": np.url,
           "stream_title": np.stream_title()})
}

async fn run_listen(socket: WebSocket, mut cursor: ListenerCursor) {
    let (mut tx, mut rx) = socket.split();
    let ch = cursor.channel().clone();
    let mut np = ch.now_playing();
    let start = json!({
        "type": "start",
        "content_type": ch.format().content_type(),
        "now_playing": metadata_message(&np),
    });
    if tx
        .send(Message::Text(start.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let send = async {
        let mut batch: Vec<Bytes> = Vec::new();
        while cursor.next_batch(&mut batch).await {
            let now = ch.now_playing();
            if now != np {
                np = now;
                let m = metadata_message(&np).to_string();
                if tx.send(Message::Text(m.into())).await.is_err() {
                    return;
                }
            }
            let data: Bytes = if batch.len() == 1 {
                batch.pop().unwrap_or_default()
            } else {
                let mut all = BytesMut::new();
                for b in batch.drain(..) {
                    all.extend_from_slice(&b);
                }
                all.freeze()
            };
            batch.clear();
            let sent =
                tokio::time::timeout(Duration::from_secs(30), tx.send(Message::Binary(data))).await;
            if !matches!(sent, Ok(Ok(()))) {
                return;
            }
        }
        let _ = tx.send(Message::Close(None)).await;
    };
    let hangup = async {
        while let Some(Ok(m)) = rx.next().await {
            if matches!(m, Message::Close(_)) {
                return;
            }
        }
    };
    tokio::select! {
        () = send => {},
        () = hangup => {},
    }
}
