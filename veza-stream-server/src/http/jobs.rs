//! Processing: `POST /api/v1/audio/transcode` and `POST /api/v1/audio/compress` create a job
//! (202, `Location: /api/v1/jobs/{id}`); `GET /api/v1/jobs/{id}` gives its state and progress and,
//! when done, the id of the file it made.

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody, ok};
use crate::events::Subject;
use crate::http::audio::{now_ms, parse_id};
use crate::jobs::JobSpec;
use crate::state::AppState;
use crate::storage::JobRecord;

/// The job routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/audio/transcode", post(transcode))
        .route("/audio/compress", post(compress))
        .route("/jobs/{job_id}", get(get_job))
}

/// `POST /api/v1/audio/transcode` body (architecture document).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TranscodeRequest {
    /// The source file.
    pub file_id: String,
    /// The source's format, as the caller believes it (checked against the file).
    pub input_format: Option<String>,
    /// Output format: mp3, flac, aac, m4a, ogg, wav.
    pub output_format: String,
    /// kbit/s.
    pub bitrate: Option<u32>,
}

/// `POST /api/v1/audio/compress` body (architecture document).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompressRequest {
    /// The source file.
    pub file_id: String,
    /// Output format (default: keep the codec).
    pub format: Option<String>,
    /// kbit/s, overriding the preset's.
    pub bitrate: Option<u32>,
    /// low, medium (default) or high.
    pub quality: Option<String>,
}

fn check_format(f: &str) -> Result<(), ApiError> {
    f.parse::<veza_audio::OutputFormat>()
        .map(|_| ())
        .map_err(|_| {
            ApiError::Validation(format!(
                "unknown format {f:?} (mp3, flac, aac, m4a, ogg, wav)"
            ))
        })
}

fn check_bitrate(b: Option<u32>) -> Result<(), ApiError> {
    match b {
        Some(b) if !(8..=512).contains(&b) => Err(ApiError::Validation(
            "`bitrate` must be 8 to 512 kbit/s".into(),
        )),
        _ => Ok(()),
    }
}

/// Does the stored codec/container match what the caller calls its format?
fn format_matches(claimed: &str, codec: &str, container: &str) -> bool {
    let c = claimed.to_ascii_lowercase();
    c == codec
        || c == container
        || matches!(
            (c.as_str(), codec, container),
            ("m4a" | "mp4", "aac" | "alac", "mp4")
                | ("aac", "aac", _)
                | ("ogg" | "vorbis", "vorbis", _)
                | ("wav" | "wave", _, "wav")
                | ("mp3" | "mpeg", "mp3", _)
        )
}

async fn create(
    state: &AppState,
    owner: &str,
    file_id: &str,
    kind: &str,
    spec: JobSpec,
) -> Result<Response, ApiError> {
    let now = now_ms();
    let job = JobRecord {
        id: uuid::Uuid::new_v4().hyphenated().to_string(),
        kind: kind.to_owned(),
        owner: Some(owner.to_owned()),
        file_id: file_id.to_owned(),
        params: serde_json::to_string(&spec).map_err(ApiError::internal)?,
        state: "queued".into(),
        progress: 0.0,
        result_file_id: None,
        note: None,
        error: None,
        created_at: now,
        updated_at: now,
    };
    state.store().insert_job(&job).await?;
    state.jobs().submit(&job.id);
    state
        .events()
        .publish(Subject::JobQueued, crate::events::job_data(&job));
    let mut resp = (StatusCode::ACCEPTED, ok(&job)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/jobs/{}", job.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// The source file of a job, if the caller may see it.
async fn source(
    state: &AppState,
    caller: &Caller,
    file_id: &str,
) -> Result<crate::storage::AudioRecord, ApiError> {
    let id = parse_id(file_id).map_err(|_| ApiError::NotFound("file"))?;
    let r = state
        .store()
        .get_audio(&id)
        .await?
        .ok_or(ApiError::NotFound("file"))?;
    caller.check_see(r.owner.as_deref(), r.is_private, "file")?;
    Ok(r)
}

#[utoipa::path(post, path = "/api/v1/audio/transcode", tag = "jobs",
    description = "Start a transcode job (creator or admin); its result is a new file.",
    request_body = TranscodeRequest,
    responses((status = 202, description = "queued; Location: /api/v1/jobs/{id}", body = crate::http::openapi::JobEnvelope), (status = 404, description = "unknown source", body = ErrorBody), (status = 422, description = "bad request body", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
async fn transcode(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<TranscodeRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let owner = caller.require(Role::Creator)?.subject.clone();
    let req = crate::error::json_body(body)?;
    check_format(&req.output_format)?;
    check_bitrate(req.bitrate)?;
    let src = source(&state, &caller, &req.file_id).await?;
    if let Some(f) = &req.input_format {
        if !format_matches(f, &src.codec, &src.container) {
            return Err(ApiError::Validation(format!(
                "input_format {f:?} does not match the file, which is {} in {}",
                src.codec, src.container
            )));
        }
    }
    let spec = JobSpec::Transcode {
        output_format: req.output_format.to_ascii_lowercase(),
        bitrate: req.bitrate,
    };
    create(&state, &owner, &src.id, "transcode", spec).await
}

#[utoipa::path(post, path = "/api/v1/audio/compress", tag = "jobs",
    description = "Start a compression job (quality preset low/medium/high); passes the source through when it already fits.",
    request_body = CompressRequest,
    responses((status = 202, description = "queued", body = crate::http::openapi::JobEnvelope), (status = 404, description = "unknown source", body = ErrorBody), (status = 422, description = "bad request body", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
async fn compress(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CompressRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let owner = caller.require(Role::Creator)?.subject.clone();
    let req = crate::error::json_body(body)?;
    if let Some(f) = &req.format {
        check_format(f)?;
    }
    check_bitrate(req.bitrate)?;
    let quality = req
        .quality
        .unwrap_or_else(|| "medium".into())
        .to_ascii_lowercase();
    if !matches!(quality.as_str(), "low" | "medium" | "high") {
        return Err(ApiError::Validation(
            "`quality` must be low, medium or high".into(),
        ));
    }
    let src = source(&state, &caller, &req.file_id).await?;
    let spec = JobSpec::Compress {
        format: req.format.map(|f| f.to_ascii_lowercase()),
        bitrate: req.bitrate,
        quality,
    };
    create(&state, &owner, &src.id, "compress", spec).await
}

#[utoipa::path(get, path = "/api/v1/jobs/{job_id}", tag = "jobs",
    description = "A job's state (queued, running, done, failed), progress and result file.",
    params(("job_id" = String, Path, description = "job id (UUID)")),
    responses((status = 200, description = "the job", body = crate::http::openapi::JobEnvelope), (status = 404, description = "unknown, or someone else's", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(job_id): UrlPath<String>,
) -> Result<Response, ApiError> {
    caller.principal()?;
    let id = uuid::Uuid::parse_str(&job_id)
        .map_err(|_| ApiError::NotFound("job"))?
        .hyphenated()
        .to_string();
    let mut job = state
        .store()
        .get_job(&id)
        .await?
        .ok_or(ApiError::NotFound("job"))?;
    // A job is its creator's (and admins'); others are told it does not exist.
    caller.check_see(job.owner.as_deref(), true, "job")?;
    if job.state == "running" {
        if let Some(p) = state.jobs().progress(&id) {
            job.progress = p;
        }
    }
    Ok(ok(&job).into_response())
}
