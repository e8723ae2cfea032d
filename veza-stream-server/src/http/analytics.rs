//! Analytics of files and streams over time ranges (owner and admins only):
//! `GET /api/v1/audio/{file_id}/analytics` and `GET /api/v1/streams/{stream_id}/analytics`, with
//! `from` and `to` (RFC 3339 or Unix milliseconds; default the last 30 days) and `interval`
//! (`hour` or `day`, default `day`) for the series.

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, ok};
use crate::http::audio::{find, now_ms};
use crate::state::AppState;

/// The analytics routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/audio/{file_id}/analytics", get(audio))
        .route("/streams/{stream_id}/analytics", get(stream))
}

/// The query of both routes.
#[derive(Debug, Deserialize)]
pub struct Range {
    /// Start (RFC 3339 or Unix ms); default 30 days before `to`.
    pub from: Option<String>,
    /// End, exclusive (RFC 3339 or Unix ms); default now.
    pub to: Option<String>,
    /// `hour` or `day` (default).
    pub interval: Option<String>,
}

const DAY_MS: i64 = 86_400_000;

fn instant(name: &str, v: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(v)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| {
            ApiError::Validation(format!(
                "`{name}` must be RFC 3339 (2026-11-24T00:00:00Z) or Unix milliseconds"
            ))
        })
}

/// The range and interval of a query, validated (at most 400 days).
fn range(q: &Range) -> Result<(i64, i64, i64, &'static str), ApiError> {
    let to = q.to.as_deref().map_or(Ok(now_ms()), |v| instant("to", v))?;
    let from = q
        .from
        .as_deref()
        .map_or(Ok(to - 30 * DAY_MS), |v| instant("from", v))?;
    if from >= to {
        return Err(ApiError::Validation("`from` must be before `to`".into()));
    }
    if to - from > 400 * DAY_MS {
        return Err(ApiError::Validation("the range is at most 400 days".into()));
    }
    let (interval, name) = match q.interval.as_deref().unwrap_or("day") {
        "hour" => (3_600_000, "hour"),
        "day" => (DAY_MS, "day"),
        other => {
            return Err(ApiError::Validation(format!(
                "`interval` {other:?}: hour or day"
            )));
        }
    };
    Ok((from, to, interval, name))
}

fn rfc3339(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

#[utoipa::path(get, path = "/api/v1/audio/{file_id}/analytics", tag = "analytics",
    description = "Plays, unique listeners, listening time, bytes and a series over a range (owner or admin).",
    params(("file_id" = String, Path, description = "audio file id (UUID)"), ("from" = Option<String>, Query, description = "RFC 3339 or Unix ms; default 30 days before `to`"), ("to" = Option<String>, Query, description = "RFC 3339 or Unix ms, exclusive; default now"), ("interval" = Option<String>, Query, description = "hour or day (default)")),
    responses((status = 200, description = "figures", body = crate::http::openapi::StatsEnvelope), (status = 403, description = "not the owner", body = ErrorBody), (status = 422, description = "bad range", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
async fn audio(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(file_id): UrlPath<String>,
    Query(q): Query<Range>,
) -> Result<Response, ApiError> {
    let r = find(&state, &file_id).await?;
    caller.check_change(r.owner.as_deref(), r.is_private, "audio file")?;
    let (mut doc, _) = figures(&state, &format!("audio:{}", r.id), &q).await?;
    doc["file_id"] = json!(r.id);
    doc["plays"] = doc["sessions"].clone();
    Ok(ok(doc).into_response())
}

/// The stored figures of `target` over the query's range, with the live figures of this node
/// (`current_listeners`) and the range; also the live figures themselves.
async fn figures(
    state: &AppState,
    target: &str,
    q: &Range,
) -> Result<(serde_json::Value, veza_stream_core::analytics::Figures), ApiError> {
    let (from, to, interval, name) = range(q)?;
    let st = state
        .store()
        .session_stats(target, from, to, interval)
        .await?;
    let live = state.analytics().figures(target).unwrap_or_default();
    let mut doc = json!(st);
    doc["current_listeners"] = json!(live.current);
    doc["from"] = json!(rfc3339(from));
    doc["to"] = json!(rfc3339(to));
    doc["interval"] = json!(name);
    Ok((doc, live))
}

#[utoipa::path(get, path = "/api/v1/streams/{stream_id}/analytics", tag = "analytics",
    description = "Listeners, peak, unique listeners, listening time over a range, and current listeners (owner or admin).",
    params(("stream_id" = String, Path, description = "stream id (UUID)"), ("from" = Option<String>, Query, description = "RFC 3339 or Unix ms; default 30 days before `to`"), ("to" = Option<String>, Query, description = "RFC 3339 or Unix ms, exclusive; default now"), ("interval" = Option<String>, Query, description = "hour or day (default)")),
    responses((status = 200, description = "figures", body = crate::http::openapi::StatsEnvelope), (status = 403, description = "not the owner", body = ErrorBody), (status = 422, description = "bad range", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(stream_id): UrlPath<String>,
    Query(q): Query<Range>,
) -> Result<Response, ApiError> {
    let s = crate::http::streams::find(&state, &caller, &stream_id).await?;
    caller.check_change(s.owner.as_deref(), s.is_private, "stream")?;
    let (mut doc, live) = figures(&state, &format!("stream:{}", s.id), &q).await?;
    doc["stream_id"] = json!(s.id);
    doc["peak_listeners_since_start"] = json!(live.peak);
    Ok(ok(doc).into_response())
}
