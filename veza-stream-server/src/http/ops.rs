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
/// `/ready`: 200 while the database answers, 503 when it does not. Redis and NATS (when
/// configured) are optional: while one is down the server works on (local cache index, buffered
/// events), the body says `"degraded": true` and names it, and the status stays 200.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let db = state.store().ping().await;
    let backend = match state.store().backend() {
        crate::storage::Backend::Sqlite => "sqlite",
        crate::storage::Backend::Postgres => "postgres",
    };
    let mut deps = serde_json::Map::new();
    deps.insert(
        "database".into(),
        json!({"backend": backend, "up": db, "state": if db { "up" } else { "down" }}),
    );
    let mut degraded = Vec::new();
    if let Some(up) = state.cache().redis_up().await {
        if !up {
            degraded.push("redis");
        }
        deps.insert(
            "redis".into(),
            json!({
                "up": up,
                "state": if up { "up" } else { "degraded" },
                "role": "shared cache index",
                "note": (!up).then_some("serving from the local cache index; resync when Redis is back"),
            }),
        );
    }
    let ev = state.events().status();
    if ev.backend == "nats" {
        let up = ev.state == "up";
        if !up {
            degraded.push("nats");
        }
        deps.insert(
            "nats".into(),
            json!({
                "up": up,
                "state": if up { "up" } else { "degraded" },
                "role": "events",
                "mode": ev.mode,
                "buffered": ev.buffered,
                "dropped": ev.dropped,
                "last_error": ev.last_error,
                "note": (!up).then_some("events are buffered until NATS is back"),
            }),
        );
    }
    let body = json!({
        "success": db,
        "data": {
            "ready": db,
            "degraded": !degraded.is_empty(),
            "degraded_dependencies": degraded,
            "dependencies": deps,
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
