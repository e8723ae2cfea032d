//! Audio files: upload (raw body or multipart, streamed to disk, size enforced while reading,
//! content validated by probing), metadata, delete, and streaming of the original with byte
//! ranges.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::auth::{Caller, ClientAddr, Role};
use crate::error::{ApiError, ErrorBody, ok};
use crate::events::Subject;
use crate::http::range::{self, RangeRequest};
use crate::metrics as m;
use crate::state::AppState;
use crate::storage::AudioRecord;

/// The audio routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/audio", post(upload))
        .route("/audio/{file_id}", get(metadata).delete(delete))
        .route("/audio/{file_id}/stream", get(stream))
}

/// Checks that an id from a URL is a UUID: nothing else reaches a file name or a query.
pub fn parse_id(id: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| ApiError::NotFound("audio file"))
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    /// The original file name (raw uploads).
    name: Option<String>,
    /// Visible to its owner only.
    private: Option<bool>,
}

/// The MIME type of a stored file.
pub fn content_type(container: &str, codec: &str) -> &'static str {
    match (container, codec) {
        ("mpeg", _) => "audio/mpeg",
        ("flac", _) => "audio/flac",
        ("adts", _) => "audio/aac",
        ("mp4", _) => "audio/mp4",
        ("ogg", "opus") => "audio/ogg; codecs=opus",
        ("ogg", _) => "audio/ogg",
        ("wav", _) => "audio/wav",
        ("aiff", _) => "audio/aiff",
        ("matroska", _) => "audio/webm",
        _ => "application/octet-stream",
    }
}

fn extension(container: &str) -> &'static str {
    match container {
        "mpeg" => "mp3",
        "flac" => "flac",
        "adts" => "aac",
        "mp4" => "m4a",
        "ogg" => "ogg",
        "wav" => "wav",
        "aiff" => "aiff",
        "matroska" => "mka",
        "caf" => "caf",
        _ => "bin",
    }
}

/// Writes a body stream to `path`, hashing it, failing with 413 past `limit` bytes.
async fn save_stream<S, E>(mut body: S, path: &Path, limit: u64) -> Result<(u64, String), ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut file = tokio::fs::File::create(path).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("upload interrupted: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.sync_all().await?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Deletes a file when dropped, unless disarmed (a failed upload leaves nothing behind).
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[utoipa::path(post, path = "/api/v1/audio", tag = "audio",
    description = "Upload an audio file: raw body (`?name=`) or multipart field `file`. Streamed to disk; MAX_AUDIO_FILE_SIZE enforced while reading; content probed. Creator or admin.",
    params(("name" = Option<String>, Query, description = "original file name (raw uploads)"), ("private" = Option<bool>, Query, description = "visible to its owner only")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, description = "stored", body = crate::http::openapi::AudioEnvelope), (status = 413, description = "too large", body = ErrorBody), (status = 415, description = "not audio", body = ErrorBody), (status = 403, description = "not a creator", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<UploadQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let owner = caller.require(Role::Creator)?.subject.clone();
    let cfg = state.config();
    let limit = cfg.max_upload_bytes;
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        // A multipart body has some overhead over the file; raw bodies are exact.
        if len > limit.saturating_add(64 * 1024) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
    }
    tokio::fs::create_dir_all(&cfg.upload_dir).await?;
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    let tmp = cfg.upload_dir.join(format!(".{id}.part"));
    let mut guard = TempFile(Some(tmp.clone()));
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut original_name = q.name.clone();
    let (size, hash) = if is_multipart {
        let mut mp = Multipart::from_request(req, &state)
            .await
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let mut saved = None;
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|e| ApiError::BadRequest(e.to_string()))?
        {
            if field.name() == Some("file") || field.file_name().is_some() {
                if original_name.is_none() {
                    original_name = field.file_name().map(str::to_owned);
                }
                let stream = field.map(|r| r.map_err(|e| e.to_string()));
                saved = Some(save_stream(Box::pin(stream), &tmp, limit).await?);
                break;
            }
        }
        saved
            .ok_or_else(|| ApiError::Validation("the multipart body has no `file` field".into()))?
    } else {
        let stream = req.into_body().into_data_stream();
        save_stream(stream, &tmp, limit).await?
    };
    if size == 0 {
        return Err(ApiError::UnsupportedMedia("the body is empty".into()));
    }
    let new = NewAudio {
        id: id.clone(),
        owner: Some(owner),
        is_private: q.private.unwrap_or(false),
        original_name,
        title: None,
        size,
        content_hash: hash,
    };
    let record = store_file(&state, &tmp, new).await?;
    guard.0 = None;
    let mut resp = (StatusCode::CREATED, ok(&record)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/audio/{id}")) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// A new audio file: what its maker knows about it (the rest comes from probing).
#[derive(Debug, Clone)]
pub struct NewAudio {
    /// Its id (a UUID).
    pub id: String,
    /// Its owner (JWT subject); none: admins only.
    pub owner: Option<String>,
    /// Visible to its owner only.
    pub is_private: bool,
    /// The original file name (at most 255 characters are kept).
    pub original_name: Option<String>,
    /// A title that replaces the file's own title tag.
    pub title: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes, hex.
    pub content_hash: String,
}

/// Adds a complete file at `tmp` to the API's audio files, as an upload is added: probes it
/// (off the async runtime), moves it into the upload directory under its id, stores its record
/// and publishes `veza.audio.uploaded`. Uploads and live recordings both come through here.
///
/// # Errors
/// 415 when it is not audio, I/O and database errors. On error the file is left at `tmp`.
pub async fn store_file(
    state: &AppState,
    tmp: &Path,
    new: NewAudio,
) -> Result<AudioRecord, ApiError> {
    let started = std::time::Instant::now();
    let probe_path = tmp.to_path_buf();
    let probed = tokio::task::spawn_blocking(move || probe(&probe_path))
        .await
        .map_err(ApiError::internal)??;
    let ext = extension(&probed.container);
    let final_path = state.config().upload_dir.join(format!("{}.{ext}", new.id));
    move_file(tmp, &final_path).await?;
    let record = AudioRecord {
        id: new.id,
        owner: new.owner,
        is_private: new.is_private,
        original_name: new.original_name.map(|n| n.chars().take(255).collect()),
        path: final_path.display().to_string(),
        size_bytes: i64::try_from(new.size).unwrap_or(i64::MAX),
        content_hash: new.content_hash,
        created_at: now_ms(),
        title: new.title.or(probed.title.clone()),
        ..probed
    };
    if let Err(e) = state.store().insert_audio(&record).await {
        // Give the file back to the caller, who decides what to do with it.
        let _ = move_file(&final_path, tmp).await;
        return Err(e.into());
    }
    state
        .events()
        .publish(Subject::AudioUploaded, crate::events::audio_data(&record));
    metrics::counter!(m::AUDIO_FILES_PROCESSED).increment(1);
    metrics::histogram!(m::AUDIO_PROCESSING_DURATION).record(started.elapsed().as_secs_f64());
    Ok(record)
}

/// Renames a file, or copies and removes it when the two paths are on different file systems.
async fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match tokio::fs::rename(from, to).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            tokio::fs::copy(from, to).await?;
            tokio::fs::File::open(to).await?.sync_all().await?;
            tokio::fs::remove_file(from).await
        }
        Err(e) => Err(e),
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Decodes the whole file: metadata, exact duration and EBU R128 loudness. Not audio: 415.
pub fn probe(path: &Path) -> Result<AudioRecord, ApiError> {
    use veza_audio::decode::{Decoder, DecoderOptions};
    use veza_audio::loudness::LoudnessMeter;
    let not_audio = |e: veza_audio::AudioError| {
        ApiError::UnsupportedMedia(format!("not a readable audio file: {e}"))
    };
    let mut dec = Decoder::open_path(path, DecoderOptions::default()).map_err(not_audio)?;
    let info = dec.info().clone();
    let spec = dec.spec();
    let mut meter = LoudnessMeter::new(spec).map_err(not_audio)?;
    let mut frames = 0u64;
    while let Some(block) = dec.next_block().map_err(not_audio)? {
        frames += block.frames() as u64;
        if block.spec() == spec {
            meter.push(block).map_err(not_audio)?;
        }
    }
    if frames == 0 {
        return Err(ApiError::UnsupportedMedia("the file holds no audio".into()));
    }
    let loud = meter.report().ok();
    let rate = spec.sample_rate.hz();
    let duration_ms = i64::try_from(frames * 1000 / u64::from(rate)).unwrap_or(i64::MAX);
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let bitrate = info.bitrate.map(|b| i64::from(b.as_bps())).or_else(|| {
        (duration_ms > 0)
            .then(|| i64::try_from(file_len * 8 * 1000 / duration_ms as u64).unwrap_or(0))
    });
    Ok(AudioRecord {
        id: String::new(),
        owner: None,
        is_private: false,
        original_name: None,
        path: String::new(),
        size_bytes: 0,
        content_hash: String::new(),
        codec: info.codec.name().to_owned(),
        container: info.container.name().to_owned(),
        sample_rate: i64::from(rate),
        channels: i64::from(info.channels),
        bits_per_sample: info.bits_per_sample.map(i64::from),
        duration_ms: Some(duration_ms),
        bitrate,
        title: info.tags.title.clone(),
        artist: info.tags.artist.clone(),
        album: info.tags.album.clone(),
        loudness_lufs: loud.as_ref().and_then(|l| l.integrated_lufs),
        loudness_range_lu: loud.as_ref().map(|l| l.loudness_range_lu),
        true_peak_dbtp: loud.as_ref().and_then(|l| l.true_peak_dbtp),
        created_at: 0,
    })
}

/// The record of a file id from a URL (404 for anything that is not a known UUID). No access
/// check: see [`find_visible`].
pub async fn find(state: &AppState, id: &str) -> Result<AudioRecord, ApiError> {
    let id = parse_id(id)?;
    state
        .store()
        .get_audio(&id)
        .await?
        .ok_or(ApiError::NotFound("audio file"))
}

/// The record of a file id from a URL if `caller` may see it (a private file is visible to its
/// owner and admins only; others get 404).
pub async fn find_visible(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<AudioRecord, ApiError> {
    let r = find(state, id).await?;
    caller.check_see(r.owner.as_deref(), r.is_private, "audio file")?;
    Ok(r)
}

#[utoipa::path(get, path = "/api/v1/audio/{file_id}", tag = "audio",
    description = "Metadata: format, duration, rate, channels, loudness, tags.",
    params(("file_id" = String, Path, description = "audio file id (UUID)")),
    responses((status = 200, description = "the file", body = crate::http::openapi::AudioEnvelope), (status = 404, description = "unknown or private", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security((), ("bearer" = []), ("api_key" = [])))]
async fn metadata(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(file_id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let r = find_visible(&state, &caller, &file_id).await?;
    Ok(ok(&r).into_response())
}

#[utoipa::path(delete, path = "/api/v1/audio/{file_id}", tag = "audio",
    description = "Delete a file (owner or admin).",
    params(("file_id" = String, Path, description = "audio file id (UUID)")),
    responses((status = 204, description = "deleted"), (status = 403, description = "not the owner", body = ErrorBody), (status = 404, description = "unknown", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(file_id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let r = find(&state, &file_id).await?;
    caller.check_change(r.owner.as_deref(), r.is_private, "audio file")?;
    state.store().delete_audio(&r.id).await?;
    state
        .events()
        .publish(Subject::AudioDeleted, serde_json::json!({"file_id": r.id}));
    state.vod().forget(&r.id);
    match tokio::fs::remove_file(&r.path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
struct StreamQuery {
    /// Output format (mp3, flac, aac, m4a, ogg, wav); absent: the original.
    format: Option<String>,
    /// Output bitrate in kbit/s (lossy formats).
    bitrate: Option<u32>,
}

/// The MIME type of an output format.
pub fn output_content_type(f: veza_audio::OutputFormat) -> &'static str {
    use veza_audio::OutputFormat as F;
    match f {
        F::Mp3 => "audio/mpeg",
        F::Flac => "audio/flac",
        F::Aac => "audio/aac",
        F::M4a => "audio/mp4",
        F::Ogg => "audio/ogg",
        F::Wav => "audio/wav",
        _ => "application/octet-stream",
    }
}

#[utoipa::path(get, path = "/api/v1/audio/{file_id}/stream", tag = "audio",
    description = "The original, or a transcode (through the cache, `X-Cache: HIT|MISS`), with Content-Length and byte ranges (206, 416).",
    params(("file_id" = String, Path, description = "audio file id (UUID)"), ("format" = Option<String>, Query, description = "mp3, flac, aac, m4a, ogg, wav; absent: the original"), ("bitrate" = Option<u32>, Query, description = "kbit/s, 8 to 512"), ("Range" = Option<String>, Header, description = "one byte range")),
    responses((status = 200, description = "the audio", content_type = "audio/*", body = Vec<u8>), (status = 206, description = "a byte range", body = Vec<u8>), (status = 416, description = "range outside the resource", body = ErrorBody), (status = 404, description = "unknown or private", body = ErrorBody), (status = 422, description = "bad format or bitrate", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security((), ("bearer" = []), ("api_key" = [])))]
async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    UrlPath(file_id): UrlPath<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let r = find_visible(&state, &caller, &file_id).await?;
    let resp = stream_file(&state, &r, q, &headers).await?;
    // A response from the first byte is a play: a listening session lasting as long as the
    // transfer (continuation ranges add no play).
    let from_start = resp.status() == StatusCode::OK
        || resp
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("bytes 0-"));
    if !from_start {
        return Ok(resp);
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let session = state.analytics().join(
        format!("audio:{}", r.id),
        crate::analytics::listener_key(caller.subject(), addr.0, agent),
        veza_stream_core::analytics::Protocol::OnDemand,
        None,
        (!agent.is_empty()).then(|| agent.chars().take(100).collect()),
    );
    Ok(count_body(resp, session))
}

/// The response with its body counted into `session` (closed when the body is dropped).
fn count_body(resp: Response, session: crate::analytics::Session) -> Response {
    let (parts, body) = resp.into_parts();
    let counted = body.into_data_stream().map(move |chunk| {
        if let Ok(c) = &chunk {
            session.add_bytes(c.len() as u64);
        }
        chunk
    });
    Response::from_parts(parts, Body::from_stream(counted))
}

async fn stream_file(
    state: &AppState,
    r: &AudioRecord,
    q: StreamQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let chunk = state.config().stream_chunk_size;
    let Some(fmt) = q.format.as_deref() else {
        if q.bitrate.is_some() {
            return Err(ApiError::Validation("`bitrate` needs a `format`".into()));
        }
        let ct = content_type(&r.container, &r.codec);
        return serve_file(Path::new(&r.path), ct, headers, chunk).await;
    };
    let format: veza_audio::OutputFormat = fmt.parse().map_err(|_| {
        ApiError::Validation(format!(
            "unknown format {fmt:?} (mp3, flac, aac, m4a, ogg, wav)"
        ))
    })?;
    if let Some(b) = q.bitrate {
        if !(8..=512).contains(&b) {
            return Err(ApiError::Validation(
                "`bitrate` must be 8 to 512 kbit/s".into(),
            ));
        }
    }
    let key = veza_stream_core::cache::CacheKey::try_new(
        &r.content_hash,
        format,
        q.bitrate.map(veza_audio::Bitrate::kbps),
        None,
        None,
    )
    .map_err(ApiError::internal)?;
    let source = PathBuf::from(&r.path);
    let bitrate = q.bitrate;
    let (path, lookup) = state
        .cache()
        .get_or_make(&key, move |tmp| transcode_to(&source, tmp, format, bitrate))
        .await?;
    let mut resp = serve_file(&path, output_content_type(format), headers, chunk).await?;
    let tag = match lookup {
        crate::cache::Lookup::Hit => "HIT",
        crate::cache::Lookup::Miss => "MISS",
    };
    resp.headers_mut()
        .insert("x-cache", HeaderValue::from_static(tag));
    Ok(resp)
}

/// Transcodes `source` into `out` (blocking).
pub fn transcode_to(
    source: &Path,
    out: &Path,
    format: veza_audio::OutputFormat,
    kbps: Option<u32>,
) -> Result<(), ApiError> {
    use veza_audio::transcode::{OutputSettings, TranscodeOptions, transcode_path};
    let mut opts = TranscodeOptions::new(format);
    if let Some(k) = kbps {
        opts.output = Some(OutputSettings::new(format).with_kbps(k));
    }
    let started = std::time::Instant::now();
    transcode_path(source, out, &opts).map_err(|e| match e {
        veza_audio::AudioError::InvalidConfig(m) => ApiError::Validation(m),
        other => ApiError::internal(other),
    })?;
    metrics::counter!(m::AUDIO_FILES_PROCESSED).increment(1);
    metrics::histogram!(m::AUDIO_PROCESSING_DURATION).record(started.elapsed().as_secs_f64());
    Ok(())
}

/// Serves a file with `Accept-Ranges`, `Content-Length` and single byte ranges (206, 416).
pub async fn serve_file(
    path: &Path,
    content_type: &'static str,
    headers: &HeaderMap,
    chunk: usize,
) -> Result<Response, ApiError> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::NotFound("audio data"));
        }
        Err(e) => return Err(e.into()),
    };
    let size = file.metadata().await?.len();
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, len) = match range::parse(range_header, size) {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Partial { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { size }),
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start)).await?;
    }
    let reader = file.take(len);
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(reader, chunk));
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, len);
    if status == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    resp.body(body).map_err(ApiError::internal)
}
