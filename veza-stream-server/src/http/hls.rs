//! HLS VOD for uploaded files: `/api/v1/audio/{file_id}/hls/master.m3u8` lists a ladder of
//! renditions; each rendition's playlist and packed-audio segments (ID3 timestamp + ADTS or MP3
//! frames, cut on frame boundaries by `veza-stream-core`'s VOD planner) come from the rendition's
//! transcode in the cache, made on the first request.

use std::path::PathBuf;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use veza_audio::{Bitrate, OutputFormat};
use veza_stream_core::cache::CacheKey;
use veza_stream_core::frame::{FrameFormat, FrameSplitter, SplitterConfig};
use veza_stream_core::hls::{self, PackedCodec, Rendition, VodSegment};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::audio::{find_visible, transcode_to};
use crate::state::AppState;

/// Target segment duration of VOD playlists.
const SEGMENT: std::time::Duration = std::time::Duration::from_secs(6);

/// The VOD ladder: name, format, kbit/s.
const LADDER: [(&str, OutputFormat, u32); 3] = [
    ("aac-64", OutputFormat::Aac, 64),
    ("aac-128", OutputFormat::Aac, 128),
    ("mp3-128", OutputFormat::Mp3, 128),
];

/// The HLS routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/audio/{file_id}/hls/master.m3u8", get(master))
        .route("/audio/{file_id}/hls/{rendition}/index.m3u8", get(media))
        .route("/audio/{file_id}/hls/{rendition}/{segment}", get(segment))
}

fn rung(name: &str) -> Result<(OutputFormat, u32, PackedCodec), ApiError> {
    LADDER
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, f, k)| {
            let codec = match f {
                OutputFormat::Mp3 => PackedCodec::Mp3,
                _ => PackedCodec::AacLc,
            };
            (f, k, codec)
        })
        .ok_or(ApiError::NotFound("rendition"))
}

fn playlist(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/vnd.apple.mpegurl")],
        body,
    )
        .into_response()
}

async fn master(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(file_id): UrlPath<String>,
) -> Result<Response, ApiError> {
    find_visible(&state, &caller, &file_id).await?;
    let renditions: Vec<Rendition> = LADDER
        .iter()
        .map(|&(name, f, k)| Rendition {
            uri: format!("{name}/index.m3u8"),
            // Peak: the bitrate plus packed-audio and ID3 overhead.
            bandwidth: k * 1000 * 105 / 100,
            average_bandwidth: Some(k * 1000),
            codecs: match f {
                OutputFormat::Mp3 => PackedCodec::Mp3.codecs().into(),
                _ => PackedCodec::AacLc.codecs().into(),
            },
            name: Some(name.to_owned()),
        })
        .collect();
    Ok(playlist(hls::master_playlist(&renditions)))
}

/// The rendition's file (transcoded through the cache) and its frames cut into segments.
async fn plan(
    state: &AppState,
    caller: &Caller,
    file_id: &str,
    name: &str,
) -> Result<(Vec<u8>, Vec<(usize, usize)>, Vec<VodSegment>, PackedCodec), ApiError> {
    let r = find_visible(state, caller, file_id).await?;
    let (format, kbps, codec) = rung(name)?;
    let key = CacheKey::try_new(
        &r.content_hash,
        format,
        Some(Bitrate::kbps(kbps)),
        None,
        None,
    )
    .map_err(ApiError::internal)?;
    let source = PathBuf::from(&r.path);
    let (path, _) = state
        .cache()
        .get_or_make(&key, move |tmp| {
            transcode_to(&source, tmp, format, Some(kbps))
        })
        .await?;
    let data = tokio::fs::read(&path).await?;
    tokio::task::spawn_blocking(move || {
        let framing = match codec {
            PackedCodec::Mp3 => FrameFormat::Mpeg,
            _ => FrameFormat::Adts,
        };
        let mut split = FrameSplitter::new(framing, SplitterConfig::default());
        split.push(&data);
        split.finish();
        // (offset, length) of each frame in the file, and its samples.
        let mut spans = Vec::new();
        let mut samples = Vec::new();
        let mut rate = 0;
        let mut pos = 0usize;
        let mut skipped = 0u64;
        while let Ok(Some(f)) = split.next_frame() {
            let now_skipped = split.stats().skipped_bytes;
            pos += (now_skipped - skipped) as usize;
            skipped = now_skipped;
            spans.push((pos, f.data.len()));
            pos += f.data.len();
            samples.push(f.samples);
            rate = f.sample_rate;
        }
        if spans.is_empty() || rate == 0 {
            return Err(ApiError::internal("the rendition has no frames"));
        }
        let segments = hls::plan_vod(samples, rate, SEGMENT);
        Ok((data, spans, segments, codec))
    })
    .await
    .map_err(ApiError::internal)?
}

async fn media(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath((file_id, name)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let (_, _, segments, codec) = plan(&state, &caller, &file_id, &name).await?;
    Ok(playlist(hls::vod_playlist(
        &segments,
        "seg",
        codec.extension(),
    )))
}

async fn segment(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath((file_id, name, seg)): UrlPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    let (_, _, codec) = rung(&name)?;
    let index: usize = seg
        .strip_prefix("seg")
        .and_then(|s| s.strip_suffix(&format!(".{}", codec.extension())))
        .and_then(|n| n.parse().ok())
        .ok_or(ApiError::NotFound("segment"))?;
    let (data, spans, segments, codec) = plan(&state, &caller, &file_id, &name).await?;
    let s = segments.get(index).ok_or(ApiError::NotFound("segment"))?;
    let first = spans[s.first_frame];
    let last = spans[s.first_frame + s.frames - 1];
    let mut body = hls::id3_tag(s.start, None);
    body.extend_from_slice(&data[first.0..last.0 + last.1]);
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codec.content_type()),
    );
    Ok(resp)
}
