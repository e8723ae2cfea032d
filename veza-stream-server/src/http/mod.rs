//! The HTTP API: one module per resource, assembled by [`router`].

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::state::AppState;

pub mod audio;
pub mod hls;
pub mod jobs;
pub mod ops;
pub mod range;
pub mod streams;

/// The whole router.
pub fn router(state: AppState) -> Router {
    // JSON routes answer within REQUEST_TIMEOUT (408 past it); uploads and audio streams are
    // exempt (they last as long as the transfer).
    let timeout = state.config().request_timeout;
    let json_routes = Router::new()
        .merge(jobs::routes())
        .merge(streams::routes())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(DefaultBodyLimit::max(crate::error::JSON_BODY_LIMIT));
    let api = Router::new()
        .merge(audio::routes())
        .merge(hls::routes())
        // Uploads stream to disk and enforce MAX_AUDIO_FILE_SIZE themselves.
        .layer(DefaultBodyLimit::disable())
        .merge(json_routes);
    Router::new()
        .nest("/api/v1", api)
        .merge(ops::routes())
        .layer(middleware::from_fn(track_metrics))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-frame-options"),
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        ))
        .with_state(state)
}

/// Counts requests and their duration by method, matched route and status.
async fn track_metrics(req: Request, next: Next) -> Response {
    let start = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    let secs = start.elapsed().as_secs_f64();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("veza_http_requests_total", &labels).increment(1);
    metrics::histogram!("veza_http_request_duration_seconds", &labels).record(secs);
    resp
}
