//! API keys for services (admins only): `POST /api/v1/api-keys` creates one and shows it once,
//! `GET /api/v1/api-keys` lists them (never the keys), `DELETE /api/v1/api-keys/{id}` revokes.

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Role, new_api_key};
use crate::error::{ApiError, ErrorBody, ok};
use crate::http::audio::now_ms;
use crate::state::AppState;
use crate::storage::{ApiKeyRecord, Store};

/// The API key routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api-keys", get(list).post(create))
        .route("/api-keys/{key_id}", delete(revoke))
}

/// `POST /api/v1/api-keys` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// 1 to 100 characters.
    pub name: String,
    /// listener, creator (default) or admin.
    pub role: Option<String>,
}

/// Creates a key in `store` and returns its record and the key (shown once). Used by the API and
/// by `veza-stream-server api-key create`.
///
/// # Errors
/// 422 for a bad name or role; database errors.
pub async fn create_key(
    store: &Store,
    name: &str,
    role: Option<&str>,
    created_by: Option<&str>,
) -> Result<(ApiKeyRecord, String), ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::Validation(
            "`name` must have 1 to 100 characters".into(),
        ));
    }
    let role: Role = role
        .unwrap_or("creator")
        .parse()
        .map_err(ApiError::Validation)?;
    let (key, hash) = new_api_key();
    let rec = ApiKeyRecord {
        id: uuid::Uuid::new_v4().hyphenated().to_string(),
        name: name.to_owned(),
        role: role.as_str().to_owned(),
        key_hash: hash,
        created_by: created_by.map(str::to_owned),
        created_at: now_ms(),
        revoked_at: None,
    };
    store.insert_api_key(&rec).await?;
    Ok((rec, key))
}

#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api keys",
    description = "Create an API key (admin). The key is in the answer only.",
    request_body = CreateKey,
    responses((status = 201, description = "created; `key` holds the key", body = crate::http::openapi::KeyEnvelope), (status = 403, description = "not an admin", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateKey>, JsonRejection>,
) -> Result<Response, ApiError> {
    let admin = caller.require(Role::Admin)?;
    let req = crate::error::json_body(body)?;
    let (rec, key) = create_key(
        state.store(),
        &req.name,
        req.role.as_deref(),
        Some(&admin.subject),
    )
    .await?;
    let mut doc = json!(rec);
    doc["key"] = json!(key);
    Ok((StatusCode::CREATED, ok(doc)).into_response())
}

#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api keys",
    responses((status = 200, description = "every key, never the keys themselves", body = crate::http::openapi::KeyListEnvelope), (status = 403, description = "not an admin", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    Ok(ok(state.store().list_api_keys().await?).into_response())
}

#[utoipa::path(delete, path = "/api/v1/api-keys/{key_id}", tag = "api keys",
    params(("key_id" = String, Path, description = "key id (UUID)")),
    responses((status = 204, description = "revoked"), (status = 404, description = "unknown or already revoked", body = ErrorBody), (status = 401, description = "bad or missing credentials", body = ErrorBody), (status = 429, description = "rate limited", body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| ApiError::NotFound("api key"))?
        .hyphenated()
        .to_string();
    if state.store().revoke_api_key(&id, now_ms()).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound("api key"))
    }
}
