//! Operations: `/health` (liveness), `/ready` (each dependency's state), `/metrics` (Prometheus).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::state::AppState;

/// The operations routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

#[utoipa::path(get, path = "/health", tag = "operations", description = "Liveness.", responses((status = 200, description = "alive")))]
async fn health() -> impl IntoResponse {
    crate::error::ok(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/ready", tag = "operations", description = "Readiness: each dependency's state.", responses((status = 200, description = "ready"), (status = 503, description = "a required dependency is down")))]
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let db = state.store().ping().await;
    let backend = match state.store().backend() {
        crate::storage::Backend::Sqlite => "sqlite",
        crate::storage::Backend::Postgres => "postgres",
    };
    let body = json!({
        "success": db,
        "data": {
            "ready": db,
            "dependencies": {
                "database": {"backend": backend, "up": db},
            }
        }
    });
    let status = if db {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

#[utoipa::path(get, path = "/metrics", tag = "operations", description = "Prometheus text format.", responses((status = 200, description = "metrics", content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::metrics::update_process_gauges(state.config());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics().render(),
    )
}
