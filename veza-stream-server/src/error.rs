//! `ApiError`: every failure of the API, its HTTP status and its JSON body
//! `{"success": false, "error": {"code", "message"}}`. 5xx bodies are generic; the cause is
//! logged.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A failure of the API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The resource does not exist, or is private to someone else (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is well formed but its content is not acceptable (422).
    #[error("{0}")]
    Validation(String),
    /// The request cannot be parsed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The request conflicts with the resource's state (409).
    #[error("{0}")]
    Conflict(String),
    /// The resource existed and is over (410), e.g. an ended live stream.
    #[error("{0}")]
    Gone(String),
    /// No or bad credentials (401).
    #[error("authentication required")]
    Unauthorized,
    /// Authenticated, not allowed (403).
    #[error("not allowed")]
    Forbidden,
    /// The body exceeds the limit (413).
    #[error("the body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The content is not audio we can read (415).
    #[error("{0}")]
    UnsupportedMedia(String),
    /// The byte range is outside the resource (416).
    #[error("range not satisfiable for a resource of {size} bytes")]
    RangeNotSatisfiable {
        /// The resource's size.
        size: u64,
    },
    /// Too many requests (429).
    #[error("too many requests")]
    TooManyRequests {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// A dependency is down (503).
    #[error("{what} is unavailable")]
    Unavailable {
        /// Which dependency.
        what: &'static str,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// Anything else (500); the cause is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable snake_case code of the body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Validation(_) => "validation_failed",
            Self::BadRequest(_) => "bad_request",
            Self::Conflict(_) => "conflict",
            Self::Gone(_) => "gone",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMedia(_) => "unsupported_media_type",
            Self::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            Self::TooManyRequests { .. } => "rate_limited",
            Self::Unavailable { .. } => "service_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    /// An internal error from any error value (logged when turned into a response).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => Self::NotFound("record"),
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::Unavailable {
                    what: "database",
                    retry_after: 5,
                }
            }
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                Self::Conflict("the record already exists".into())
            }
            other => Self::internal(other),
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        Self::internal(e)
    }
}

impl ApiError {
    /// The JSON error body (`{"success": false, "error": {"code", "message"}}`); server errors
    /// other than 503 are logged and say only "internal error".
    pub fn body(&self) -> serde_json::Value {
        let message =
            if self.status().is_server_error() && !matches!(self, Self::Unavailable { .. }) {
                tracing::error!(error = %self, "request failed");
                "internal error".to_owned()
            } else {
                self.to_string()
            };
        json!({"success": false, "error": {"code": self.code(), "message": message}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = self.body();
        let mut resp = (status, Json(body)).into_response();
        let h = resp.headers_mut();
        match &self {
            Self::Unauthorized => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooManyRequests { retry_after } | Self::Unavailable { retry_after, .. } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                    h.insert(header::RETRY_AFTER, v);
                }
            }
            Self::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    h.insert(header::CONTENT_RANGE, v);
                }
            }
            _ => {}
        }
        resp
    }
}

/// The error body of every failure (documentation schema).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Always false.
    pub success: bool,
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` member of [`ErrorBody`].
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code (`not_found`, `validation_failed`, `unauthorized`, `forbidden`,
    /// `rate_limited`, `payload_too_large`, `unsupported_media_type`, ...).
    pub code: String,
    /// For people.
    pub message: String,
}

/// The success envelope `{"success": true, "data": ...}`.
pub fn ok<T: serde::Serialize>(data: T) -> Json<serde_json::Value> {
    Json(json!({"success": true, "data": data}))
}

/// Most bytes of a JSON request body.
pub const JSON_BODY_LIMIT: usize = 64 * 1024;

/// The body of a JSON request, or the error to answer: 413 past [`JSON_BODY_LIMIT`], 415 without
/// a JSON content type, 422 for JSON that does not fit the request's shape.
///
/// # Errors
/// As above.
pub fn json_body<T>(
    body: Result<axum::Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    match body {
        Ok(axum::Json(v)) => Ok(v),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::PayloadTooLarge {
            limit: JSON_BODY_LIMIT as u64,
        }),
        Err(e) if e.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            Err(ApiError::UnsupportedMedia(e.body_text()))
        }
        Err(e) => Err(ApiError::Validation(e.body_text())),
    }
}
