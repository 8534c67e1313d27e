//! Errors of the HTTP API: what the caller can act on (400 naming the field, 401, 404, 409, 413,
//! 415 for a body not sent as JSON, 503 when the database is unavailable) and everything else as
//! an opaque 500 whose cause chain goes to the log. Body: `{"error":{"code":…,"message":…}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::http::{error_body, unavailable};
use crate::repository::DbFailure;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("{what} `{id}` does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the request body must be JSON, sent with `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("the database is unavailable; retry later")]
    DatabaseUnavailable(#[source] sqlx::Error),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            what,
            id: id.into(),
        }
    }

    /// The status, code and message an answer carries: a bulk request's items are answered in
    /// the body, each as the single request would have been. An internal failure is logged.
    pub fn answer(&self) -> (StatusCode, &'static str, String) {
        let (status, code) = self.status_and_code();
        if let Self::Internal(error) = self {
            tracing::error!(error = format!("{error:#}"), "API request item failed");
        }
        let message = match self {
            Self::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        (status, code, message)
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Validation { .. } => (StatusCode::BAD_REQUEST, "validation_failed"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::DatabaseUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
            }
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

/// Database errors, classified as the worker classifies them (`repository::classify`): one that
/// may pass is the caller's "retry later"; a unique violation a handler did not anticipate is a
/// conflict; the rest is internal.
/// An event a registration applied (the unmatched events waiting for it) could not be: the
/// database's failure is the API's; anything else is a bug of the registration.
impl From<crate::worker::apply::ApplyError> for ApiError {
    fn from(failure: crate::worker::apply::ApplyError) -> Self {
        match failure {
            crate::worker::apply::ApplyError::Database(error) => error.into(),
            other => Self::Internal(anyhow::Error::new(other).context("applying unmatched events")),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match crate::repository::classify(&error) {
            DbFailure::Unavailable => Self::DatabaseUnavailable(error),
            DbFailure::UniqueViolation => Self::Conflict(format!(
                "already exists ({})",
                unique_constraint(&error).unwrap_or("unique")
            )),
            DbFailure::Permanent => {
                Self::Internal(anyhow::Error::new(error).context("database query"))
            }
        }
    }
}

/// The unique constraint a database error names, for handlers that turn one into a precise
/// conflict message.
pub fn unique_constraint(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) if db.is_unique_violation() => db.constraint(),
        _ => None,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "API request failed")
            }
            Self::DatabaseUnavailable(error) => {
                tracing::warn!(error = %error, "database unavailable")
            }
            _ => {}
        }
        let message = self.to_string();
        match self {
            Self::DatabaseUnavailable(_) => unavailable(code, &message),
            // A 401 carries no `WWW-Authenticate`: with `Basic` a browser prompts, then caches the
            // credentials and sends them with every later request to this origin, a cross-site
            // form's included. The API's callers are services, which send credentials unasked.
            _ => error_body(status, code, &message),
        }
    }
}
