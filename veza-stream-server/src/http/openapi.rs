//! The OpenAPI document, generated from the handlers' annotations and the types' schemas
//! (utoipa), at `/api-docs/openapi.json`, and a reference page at `/api-docs`.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error::{ErrorBody, ErrorDetail};
use crate::http::{analytics, audio, hls, jobs, keys, ops, streams};
use crate::state::AppState;
use crate::storage::{ApiKeyRecord, AudioRecord, JobRecord, SeriesPoint, SessionStats};

/// `{"success": true, "data": <audio file>}`.
#[derive(ToSchema)]
pub struct AudioEnvelope {
    /// Always true.
    pub success: bool,
    /// The file.
    pub data: AudioRecord,
}

/// `{"success": true, "data": <job>}`.
#[derive(ToSchema)]
pub struct JobEnvelope {
    /// Always true.
    pub success: bool,
    /// The job.
    pub data: JobRecord,
}

/// A stream as the API shows it.
#[derive(ToSchema)]
pub struct StreamDocument {
    /// Id (UUID).
    pub id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// A source is sending.
    pub is_live: bool,
    /// Listeners now.
    pub viewer_count: i64,
    /// Where listeners tune in.
    pub stream_url: String,
    /// When it went live (RFC 3339).
    pub started_at: Option<String>,
    /// Visible to its owner only.
    pub is_private: bool,
    /// low, medium or high.
    pub quality: String,
    /// Record its live sessions (null: as `LIVE_RECORD_DEFAULT` says).
    pub record: Option<bool>,
    /// RFC 3339.
    pub created_at: String,
    /// The ingest key: in the creation answer only.
    pub ingest_key: Option<String>,
    /// The ingest URL: in the creation answer only.
    pub ingest_url: Option<String>,
}

/// `{"success": true, "data": <stream>}`.
#[derive(ToSchema)]
pub struct StreamEnvelope {
    /// Always true.
    pub success: bool,
    /// The stream.
    pub data: StreamDocument,
}

/// A page of streams.
#[derive(ToSchema)]
pub struct StreamPage {
    /// The streams.
    pub items: Vec<StreamDocument>,
    /// From 1.
    pub page: i64,
    /// Page size.
    pub per_page: i64,
    /// Streams in all.
    pub total: i64,
}

/// `{"success": true, "data": <page>}`.
#[derive(ToSchema)]
pub struct StreamPageEnvelope {
    /// Always true.
    pub success: bool,
    /// The page.
    pub data: StreamPage,
}

/// A recording as the API shows it.
#[derive(ToSchema)]
pub struct RecordingDocument {
    /// Id (UUID).
    pub id: String,
    /// The stream recorded.
    pub stream_id: String,
    /// The audio file it became (`/api/v1/audio/{audio_id}`), once finished or recovered.
    pub audio_id: Option<String>,
    /// `recording`, `finished`, `recovered`, `empty` or `failed`.
    pub state: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub ended_at: Option<String>,
}

/// `{"success": true, "data": [<recording>]}`.
#[derive(ToSchema)]
pub struct RecordingListEnvelope {
    /// Always true.
    pub success: bool,
    /// The recordings, newest first.
    pub data: Vec<RecordingDocument>,
}

/// An API key record, with the key itself in the creation answer only.
#[derive(ToSchema)]
pub struct KeyEnvelope {
    /// Always true.
    pub success: bool,
    /// The key's record (plus `key` when just created).
    pub data: ApiKeyRecord,
}

/// `{"success": true, "data": [<key>]}`.
#[derive(ToSchema)]
pub struct KeyListEnvelope {
    /// Always true.
    pub success: bool,
    /// The keys.
    pub data: Vec<ApiKeyRecord>,
}

/// `{"success": true, "data": <figures>}` (plus `plays`, `current_listeners`, `from`, `to`,
/// `interval`).
#[derive(ToSchema)]
pub struct StatsEnvelope {
    /// Always true.
    pub success: bool,
    /// The figures.
    pub data: SessionStats,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or API key")
                    .build(),
            ),
        );
        c.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Veza Stream API",
        description = "Audio files, on-demand streaming and HLS, processing jobs, live streams, analytics. Envelope: `{\"success\": true, \"data\": ...}`; errors `{\"success\": false, \"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        audio::upload, audio::metadata, audio::delete, audio::stream,
        jobs::transcode, jobs::compress, jobs::get_job,
        streams::create, streams::list, streams::read, streams::update, streams::remove,
        streams::recordings,
        keys::create, keys::list, keys::revoke,
        analytics::audio, analytics::stream,
        hls::master, hls::media, hls::segment,
        ops::health, ops::ready, ops::metrics,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, AudioRecord, JobRecord, ApiKeyRecord, SessionStats, SeriesPoint,
        StreamDocument, StreamPage, RecordingDocument,
    )),
    modifiers(&Security),
)]
pub struct ApiDoc;

/// The documentation routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api-docs/openapi.json", get(document))
        .route("/api-docs", get(page))
}

async fn document() -> impl IntoResponse {
    let json = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    ([(header::CONTENT_TYPE, "application/json")], json)
}

/// A self-contained reference page rendered from the document in the browser. Written here
/// rather than taken from a Swagger UI crate: those download their assets at build time or load
/// them from a CDN at run time, and this page must work on machines without either.
async fn page() -> impl IntoResponse {
    (
        [(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        )],
        Html(include_str!("api-docs.html")),
    )
}
