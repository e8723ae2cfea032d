//! The HTTP API: one module per resource, assembled by [`router`].

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::state::AppState;

pub mod analytics;
pub mod audio;
pub mod hls;
pub mod jobs;
pub mod keys;
pub mod openapi;
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
        .merge(keys::routes())
        .merge(analytics::routes())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(DefaultBodyLimit::max(crate::error::JSON_BODY_LIMIT));
    let api = Router::new()
        .merge(audio::routes())
        .merge(hls::routes())
        .merge(crate::live::ws::routes())
        // Uploads stream to disk and enforce MAX_AUDIO_FILE_SIZE themselves.
        .layer(DefaultBodyLimit::disable())
        .merge(json_routes)
        // Credentials and rate limits for the whole API (operations endpoints are exempt).
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authenticate,
        ));
    let tls = state.config().tls_cert_file.is_some();
    let cors = cors(&state.config().cors_allowed_origins);
    let router = Router::new()
        .nest("/api/v1", api)
        .merge(ops::routes())
        .merge(crate::live::icecast::routes())
        .merge(crate::live::hls::routes())
        .merge(openapi::routes())
        // Preflight requests are answered before authentication.
        .layer(cors)
        .layer(middleware::from_fn(track_metrics));
    let router = if tls {
        router.layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("strict-transport-security"),
            HeaderValue::from_static("max-age=31536000"),
        ))
    } else {
        router
    };
    router
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

/// The CORS policy of `CORS_ALLOWED_ORIGINS`: `*` (any origin; no cookies are used, tokens go in
/// headers) or a list of origins. Players need `Range` and read `Content-Range`.
fn cors(origins: &[String]) -> CorsLayer {
    use axum::http::{Method, header};
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::RANGE,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("icy-metadata"),
        ])
        .expose_headers([
            header::CONTENT_LENGTH,
            header::CONTENT_RANGE,
            header::ACCEPT_RANGES,
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static("x-cache"),
        ])
        .max_age(std::time::Duration::from_secs(3600));
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        layer.allow_origin(AllowOrigin::list(list))
    }
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
