//! HLS VOD for uploaded files: `/api/v1/audio/{file_id}/hls/master.m3u8` lists a ladder of
//! renditions ([`crate::vod::LADDER`]); each rendition's playlist is planned from the file's
//! metadata and served at once, and its packed-audio segments (ID3 timestamp + ADTS or MP3
//! frames) come from one background encode of the file, each served as soon as it is made and
//! then from memory (see [`crate::vod`]).
//!
//! The master playlist starts the encode of the first rendition (the one players start with), so
//! by the time a player asks for its first segment the encoder is already at work.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use veza_stream_core::hls::{self, Rendition};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::error::ErrorBody;
use crate::http::audio::find_visible;
use crate::state::AppState;
use crate::vod::{LADDER, rung_index};

/// The HLS routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/audio/{file_id}/hls/master.m3u8", get(master))
        .route("/audio/{file_id}/hls/{rendition}/index.m3u8", get(media))
        .route("/audio/{file_id}/hls/{rendition}/{segment}", get(segment))
}

/// The playlists' content type.
pub(crate) const PLAYLIST: HeaderValue = HeaderValue::from_static("application/vnd.apple.mpegurl");
/// Segment `N` of a file's rendition never changes (files are immutable, encoders deterministic).
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");

fn playlist(body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    resp.headers_mut().insert(header::CONTENT_TYPE, PLAYLIST);
    resp
}

fn rung(name: &str) -> Result<usize, ApiError> {
    rung_index(name).ok_or(ApiError::NotFound("rendition"))
}

#[utoipa::path(get, path = "/api/v1/audio/{file_id}/hls/master.m3u8", tag = "hls",
    description = "HLS VOD master playlist: a ladder of renditions (BANDWIDTH, CODECS). Starts the first rendition's encode.",
    params(("file_id" = String, Path, description = "audio file id (UUID)")),
    responses((status = 200, description = "master playlist", content_type = "application/vnd.apple.mpegurl", body = String), (status = 404, description = "unknown or private", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security((), ("bearer" = []), ("api_key" = [])))]
async fn master(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(file_id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let record = find_visible(&state, &caller, &file_id).await?;
    // Players start with the first rendition: start its encode now.
    if let Err(e) = state.vod().get_or_start(&record, 0) {
        tracing::debug!(error = %e, "no VOD plan for the first rendition");
    }
    let renditions: Vec<Rendition> = LADDER
        .iter()
        .map(|r| Rendition {
            uri: format!("{}/index.m3u8", r.name),
            // Peak: the bitrate plus packed-audio and ID3 overhead.
            bandwidth: r.kbps * 1000 * 105 / 100,
            average_bandwidth: Some(r.kbps * 1000),
            codecs: r.codec.codecs().into(),
            name: Some(r.name.to_owned()),
        })
        .collect();
    Ok(playlist(hls::master_playlist(&renditions)))
}

#[utoipa::path(get, path = "/api/v1/audio/{file_id}/hls/{rendition}/index.m3u8", tag = "hls",
    description = "A rendition's VOD playlist, computed from the file's metadata (served before the encode finishes).",
    params(("file_id" = String, Path, description = "audio file id (UUID)"), ("rendition" = String, Path, description = "aac-64, aac-128 or mp3-128")),
    responses((status = 200, description = "media playlist", content_type = "application/vnd.apple.mpegurl", body = String), (status = 404, description = "unknown file or rendition", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security((), ("bearer" = []), ("api_key" = [])))]
async fn media(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath((file_id, name)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let index = rung(&name)?;
    let record = find_visible(&state, &caller, &file_id).await?;
    let r = state.vod().get_or_start(&record, index)?;
    Ok(playlist(r.playlist()))
}

/// The segment number in `seg{N}.{ext}`.
fn segment_number(name: &str, ext: &str) -> Option<usize> {
    let n = name
        .strip_prefix("seg")?
        .strip_suffix(ext)?
        .strip_suffix('.')?;
    if n.is_empty() || n.len() > 9 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// A segment (immutable).
pub(crate) fn segment_response(bytes: Bytes, content_type: &'static str) -> Response {
    let mut resp = Response::new(Body::from(bytes));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, IMMUTABLE);
    resp
}

#[utoipa::path(get, path = "/api/v1/audio/{file_id}/hls/{rendition}/{segment}", tag = "hls",
    description = "A packed-audio segment (ID3 timestamp + ADTS or MP3 frames), made on demand and cached; immutable.",
    params(("file_id" = String, Path, description = "audio file id (UUID)"), ("rendition" = String, Path, description = "aac-64, aac-128 or mp3-128"), ("segment" = String, Path, description = "seg<N>.aac or seg<N>.mp3")),
    responses((status = 200, description = "segment", content_type = "audio/aac", body = Vec<u8>), (status = 404, description = "unknown file, rendition or segment", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security((), ("bearer" = []), ("api_key" = [])))]
async fn segment(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath((file_id, name, seg)): UrlPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    let index = rung(&name)?;
    let codec = LADDER[index].codec;
    let n = segment_number(&seg, codec.extension()).ok_or(ApiError::NotFound("segment"))?;
    // Hot path: a public file's segment already in memory, without asking the store. (The id
    // is the store's own spelling of a UUID here; other spellings take the slow path.)
    if let Some(r) = state
        .vod()
        .cached(&file_id, index)
        .filter(|r| r.is_public())
    {
        if let Some(b) = r.ready_segment(n) {
            return Ok(segment_response(b, codec.content_type()));
        }
    }
    let record = find_visible(&state, &caller, &file_id).await?;
    let r = state.vod().get_or_start(&record, index)?;
    let bytes = r.segment(n).await?;
    Ok(segment_response(bytes, codec.content_type()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        assert_eq!(segment_number("seg0.aac", "aac"), Some(0));
        assert_eq!(segment_number("seg17.mp3", "mp3"), Some(17));
        for bad in [
            "seg.aac",
            "seg1.mp3",
            "seg-1.aac",
            "seg+1.aac",
            "x0.aac",
            "seg1aac",
            "seg99999999999.aac",
        ] {
            assert_eq!(segment_number(bad, "aac"), None, "{bad}");
        }
    }
}
