//! The one error body every route answers with, and the 503 that says when to come back.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Seconds a caller is asked to wait before retrying after a 503.
pub(crate) const RETRY_AFTER_SECS: &str = "5";

/// The error body shared by every route: `{"error":{"code":…,"message":…}}`.
pub fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

/// A 503 that tells the caller (a provider, an internal service) when to come back.
pub fn unavailable(code: &str, message: &str) -> Response {
    let mut response = error_body(StatusCode::SERVICE_UNAVAILABLE, code, message);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    response
}
