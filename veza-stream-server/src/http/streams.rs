//! Live stream records: create (with an ingest key shown once), read (the architecture
//! document's shape), list with paging, update, delete. Live ingest and delivery build on these.

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody, ok};
use crate::events::Subject;
use crate::http::audio::now_ms;
use crate::metrics as m;
use crate::state::AppState;
use crate::storage::StreamRecord;

/// The stream routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/streams", get(list).post(create))
        .route(
            "/streams/{stream_id}",
            get(read).patch(update).delete(remove),
        )
        .route("/streams/{stream_id}/recordings", get(recordings))
}

/// `POST /api/v1/streams` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    /// 1 to 200 characters.
    pub title: String,
    /// At most 5000 characters.
    pub description: Option<String>,
    /// Default false.
    pub is_private: Option<bool>,
    /// low, medium or high (default high).
    pub quality: Option<String>,
    /// Record the live sessions (each becomes an audio file when it ends; read when the stream
    /// goes live); absent or null: as the server's `LIVE_RECORD_DEFAULT` says.
    pub record: Option<bool>,
}

/// `PATCH /api/v1/streams/{id}` body: the fields to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateStream {
    /// 1 to 200 characters.
    pub title: Option<String>,
    /// At most 5000 characters (an empty string clears it).
    pub description: Option<String>,
    /// Visibility.
    pub is_private: Option<bool>,
    /// low, medium or high.
    pub quality: Option<String>,
    /// Record the live sessions (from the next time the stream goes live); null: as the
    /// server's `LIVE_RECORD_DEFAULT` says.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<bool>)]
    pub record: Option<Option<bool>>,
}

/// A field that may be absent (`None`), null (`Some(None)`) or set.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<bool>>, D::Error> {
    Option::<bool>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
struct Paging {
    page: Option<i64>,
    per_page: Option<i64>,
}

fn check_title(t: &str) -> Result<String, ApiError> {
    let t = t.trim();
    if t.is_empty() || t.chars().count() > 200 {
        return Err(ApiError::Validation(
            "`title` must have 1 to 200 characters".into(),
        ));
    }
    Ok(t.to_owned())
}

fn check_description(d: Option<String>) -> Result<Option<String>, ApiError> {
    match d {
        Some(d) if d.chars().count() > 5000 => Err(ApiError::Validation(
            "`description` must have at most 5000 characters".into(),
        )),
        other => Ok(other),
    }
}

fn check_quality(q: &str) -> Result<String, ApiError> {
    let q = q.to_ascii_lowercase();
    if matches!(q.as_str(), "low" | "medium" | "high") {
        Ok(q)
    } else {
        Err(ApiError::Validation(
            "`quality` must be low, medium or high".into(),
        ))
    }
}

/// The document of the architecture: id, title, description, is_live, viewer_count,
/// stream_url, started_at (RFC 3339), plus is_private, quality, record and created_at.
pub(crate) fn document(s: &StreamRecord) -> Value {
    json!({
        "id": s.id,
        "title": s.title,
        "description": s.description,
        "is_live": s.is_live,
        "viewer_count": s.viewer_count,
        "stream_url": format!("/live/{}.m3u8", s.id),
        "started_at": s.started_at.map(rfc3339),
        "is_private": s.is_private,
        "quality": s.quality,
        "record": s.record,
        "created_at": rfc3339(s.created_at),
    })
}

/// An RFC 3339 time (milliseconds) of Unix milliseconds.
fn rfc3339(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

fn stream_id(id: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| ApiError::NotFound("stream"))
}

#[utoipa::path(post, path = "/api/v1/streams", tag = "streams",
    description = "Create a live stream (creator or admin). The answer holds the ingest key, shown once.",
    request_body = CreateStream,
    responses((status = 201, description = "created", body = crate::http::openapi::StreamEnvelope), (status = 422, description = "bad request body", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateStream>, JsonRejection>,
) -> Result<Response, ApiError> {
    let owner = caller.require(Role::Creator)?.subject.clone();
    let req = crate::error::json_body(body)?;
    let now = now_ms();
    // The ingest key: 32 random bytes, shown once; only its hash is stored.
    let key: [u8; 32] = rand::random();
    let key = hex::encode(key);
    let rec = StreamRecord {
        id: uuid::Uuid::new_v4().hyphenated().to_string(),
        owner: Some(owner),
        title: check_title(&req.title)?,
        description: check_description(req.description)?,
        is_private: req.is_private.unwrap_or(false),
        quality: check_quality(req.quality.as_deref().unwrap_or("high"))?,
        ingest_key_hash: hex::encode(Sha256::digest(key.as_bytes())),
        is_live: false,
        viewer_count: 0,
        started_at: None,
        created_at: now,
        updated_at: now,
        record: req.record,
    };
    state.store().insert_stream(&rec).await?;
    metrics::counter!(m::STREAMS_CREATED).increment(1);
    let mut doc = document(&rec);
    state.events().publish(Subject::StreamCreated, doc.clone());
    doc["ingest_key"] = json!(key);
    doc["ingest_url"] = json!(format!("/live/{}", rec.id));
    let mut resp = (StatusCode::CREATED, ok(doc)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/streams/{}", rec.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// The stream of an id from a URL if `caller` may see it (private streams: owner and admins).
pub async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<StreamRecord, ApiError> {
    let id = stream_id(id)?;
    let s = state
        .store()
        .get_stream(&id)
        .await?
        .ok_or(ApiError::NotFound("stream"))?;
    caller.check_see(s.owner.as_deref(), s.is_private, "stream")?;
    Ok(s)
}

#[utoipa::path(get, path = "/api/v1/streams/{stream_id}", tag = "streams",
    params(("stream_id" = String, Path, description = "stream id (UUID)")),
    responses((status = 200, description = "the stream", body = crate::http::openapi::StreamEnvelope), (status = 404, description = "unknown or private", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security((), ("bearer" = []), ("api_key" = [])))]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let mut s = find(&state, &caller, &id).await?;
    state.live().overlay(&state, &mut s);
    Ok(ok(document(&s)).into_response())
}

#[utoipa::path(get, path = "/api/v1/streams", tag = "streams",
    description = "Streams the caller may see, newest first.",
    params(("page" = Option<i64>, Query, description = "from 1"), ("per_page" = Option<i64>, Query, description = "1 to 100, default 20")),
    responses((status = 200, description = "a page: items, page, per_page, total", body = crate::http::openapi::StreamPageEnvelope), (status = 422, description = "bad paging", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security((), ("bearer" = []), ("api_key" = [])))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<Paging>,
) -> Result<Response, ApiError> {
    let page = p.page.unwrap_or(1);
    let per_page = p.per_page.unwrap_or(20);
    if page < 1 || !(1..=100).contains(&per_page) {
        return Err(ApiError::Validation(
            "`page` must be at least 1 and `per_page` 1 to 100".into(),
        ));
    }
    let offset = (page - 1).saturating_mul(per_page);
    let admin = caller.0.as_ref().is_some_and(|p| p.is_admin());
    let (items, total) = state
        .store()
        .list_streams(caller.subject(), admin, per_page, offset)
        .await?;
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut s| {
            state.live().overlay(&state, &mut s);
            document(&s)
        })
        .collect();
    Ok(
        ok(json!({"items": items, "page": page, "per_page": per_page, "total": total}))
            .into_response(),
    )
}

#[utoipa::path(patch, path = "/api/v1/streams/{stream_id}", tag = "streams",
    description = "Change a stream (owner or admin).",
    params(("stream_id" = String, Path, description = "stream id (UUID)")), request_body = UpdateStream,
    responses((status = 200, description = "the stream", body = crate::http::openapi::StreamEnvelope), (status = 403, description = "not the owner", body = ErrorBody), (status = 404, description = "unknown", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
    body: Result<Json<UpdateStream>, JsonRejection>,
) -> Result<Response, ApiError> {
    let mut s = find(&state, &caller, &id).await?;
    caller.check_change(s.owner.as_deref(), s.is_private, "stream")?;
    let req = crate::error::json_body(body)?;
    if let Some(t) = req.title {
        s.title = check_title(&t)?;
    }
    if let Some(d) = req.description {
        s.description = check_description((!d.is_empty()).then_some(d))?;
    }
    if let Some(p) = req.is_private {
        s.is_private = p;
    }
    if let Some(q) = req.quality {
        s.quality = check_quality(&q)?;
    }
    if let Some(r) = req.record {
        s.record = r;
    }
    s.updated_at = now_ms();
    state.store().update_stream(&s).await?;
    state.events().publish(Subject::StreamUpdated, document(&s));
    if let Some(c) = state.live().get(&s.id) {
        c.set_record(s.clone());
    }
    state.live().overlay(&state, &mut s);
    Ok(ok(document(&s)).into_response())
}

#[utoipa::path(delete, path = "/api/v1/streams/{stream_id}", tag = "streams",
    description = "Delete a stream (owner or admin).",
    params(("stream_id" = String, Path, description = "stream id (UUID)")),
    responses((status = 204, description = "deleted"), (status = 403, description = "not the owner", body = ErrorBody), (status = 404, description = "unknown", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let s = find(&state, &caller, &id).await?;
    caller.check_change(s.owner.as_deref(), s.is_private, "stream")?;
    if !state.store().delete_stream(&s.id).await? {
        return Err(ApiError::NotFound("stream"));
    }
    state
        .events()
        .publish(Subject::StreamDeleted, json!({"id": s.id}));
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/api/v1/streams/{stream_id}/recordings", tag = "streams",
    description = "The stream's recordings, newest first (owner or admin): each live session recorded, its state (`recording`, `finished`, `recovered` after a crash, `empty`, `failed`) and the audio file it became (`audio_id`: stream, transcode and share it as any upload).",
    params(("stream_id" = String, Path, description = "stream id (UUID)")),
    responses((status = 200, description = "the recordings", body = crate::http::openapi::RecordingListEnvelope), (status = 403, description = "not the owner", body = ErrorBody), (status = 404, description = "unknown or private", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
async fn recordings(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let s = find(&state, &caller, &id).await?;
    caller.check_change(s.owner.as_deref(), s.is_private, "stream")?;
    let list = state.store().list_recordings(&s.id, 1000).await?;
    let items: Vec<Value> = list
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "stream_id": r.stream_id,
                "audio_id": r.audio_id,
                "state": r.state,
                "started_at": rfc3339(r.started_at),
                "ended_at": r.ended_at.map(rfc3339),
            })
        })
        .collect();
    Ok(ok(items).into_response())
}
