//! Request extractors with errors in the API's shape: a JSON body whose errors name the field
//! (`paymentProvider: unknown variant …`), and Basic authentication.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::credentials::ConfiguredKey;
use super::error::ApiError;
use super::state::ApiState;

/// A JSON body, read under the configured body limit (413 in the API's shape past it).
/// Deserialization errors become 400s naming the path of the offending field.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<ApiState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, ApiError> {
        let ApiBody(bytes) = ApiBody::from_request(request, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The raw body, read under the configured body limit: for a handler that parses it more than
/// one way. Every JSON body comes through here (`ApiJson` too), so this is where a body that is
/// not sent as JSON is refused.
pub struct ApiBody(pub Bytes);

impl FromRequest<ApiState> for ApiBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = state.body_limit;
        axum::body::to_bytes(request.into_body(), limit)
            .await
            .map(ApiBody)
            .map_err(|_| ApiError::TooLarge(limit))
    }
}

/// Whether the body is declared JSON: `Content-Type: application/json`, the media type in any
/// case, with or without parameters (`; charset=utf-8`). A browser can send a cross-site form
/// (`text/plain`, `application/x-www-form-urlencoded`, `multipart/form-data`) without asking the
/// server first, and its body can be valid JSON; `application/json` it can only send after a
/// CORS preflight, which this API never grants. A request with no content type is refused too.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("application/json"))
}

pub fn parse_json<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.to_string();
        // serde's "at line 1 column 27" helps nobody reading an API error.
        let message = match message.rfind(" at line ") {
            Some(at) => message[..at].to_owned(),
            None => message,
        };
        if inner.is_syntax() || inner.is_eof() {
            ApiError::validation("body", format!("not valid JSON: {message}"))
        } else if let Some(field) = missing_field(&message) {
            let field = if path == "." {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            };
            ApiError::validation(field, "is required")
        } else if path == "." {
            ApiError::validation("body", message)
        } else {
            ApiError::validation(path, message)
        }
    })
}

/// serde's "missing field `x`" names the field only in its text.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// A query string. Errors become 400s in the API's shape, naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<ApiState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &ApiState) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|error| {
                let path = error.path().to_string();
                let message = error.into_inner().to_string();
                if path == "." {
                    ApiError::validation("query", message)
                } else {
                    ApiError::validation(path, message)
                }
            })
    }
}

/// The authenticated caller: the key id of the Basic credentials that matched, and the account
/// the key belongs to. Every handler reads and writes that account's rows only.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub account_id: String,
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let encoded = header
            .strip_prefix("Basic ")
            .ok_or(ApiError::Unauthorized)?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| ApiError::Unauthorized)?;
        let decoded = String::from_utf8(decoded).map_err(|_| ApiError::Unauthorized)?;
        let (key_id, secret) = decoded.split_once(':').ok_or(ApiError::Unauthorized)?;
        // The configured credentials (`SETTLE_API_CREDENTIALS`) are the default account's.
        let matched = ConfiguredKey::any_matches(&state.credentials, key_id, secret);
        let account_id = if matched {
            state.account_id.to_string()
        } else {
            stored_key_account(state, key_id, secret).await?
        };
        Ok(Caller {
            key_id: key_id.to_owned(),
            account_id,
        })
    }
}

/// The account of a key created with `settle api-keys create`, when `secret` is its secret and
/// it is not revoked. The hashes are compared in constant time.
async fn stored_key_account(
    state: &ApiState,
    key_id: &str,
    secret: &str,
) -> Result<String, ApiError> {
    // Every stored key's id has this prefix (`repository::new_id`): any other is refused without
    // a round trip, so a bad configured credential is 401 even while the database is down.
    if !key_id.starts_with(crate::repository::api_keys::ID_PREFIX) {
        return Err(ApiError::Unauthorized);
    }
    let stored = crate::repository::api_keys::find(&state.db, key_id)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let presented = crate::repository::api_keys::secret_hash(secret);
    let secret_ok = bool::from(presented.as_slice().ct_eq(&stored.secret_hash));
    if secret_ok && !stored.revoked {
        Ok(stored.account_id)
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// The seed API's optional `Sequence-Version` header: absent or `2024-07-30`.
pub struct SequenceVersion;

pub const SUPPORTED_SEQUENCE_VERSION: &str = "2024-07-30";

impl FromRequestParts<ApiState> for SequenceVersion {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &ApiState) -> Result<Self, ApiError> {
        match parts.headers.get("Sequence-Version") {
            None => Ok(Self),
            Some(value) if value.as_bytes() == SUPPORTED_SEQUENCE_VERSION.as_bytes() => Ok(Self),
            Some(value) => Err(ApiError::validation(
                "Sequence-Version",
                format!(
                    "unsupported version `{}`; the supported version is {SUPPORTED_SEQUENCE_VERSION}",
                    value.to_str().unwrap_or("<not text>")
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiCredential;

    fn configured(pairs: &[(&str, &str)]) -> Vec<ConfiguredKey> {
        pairs
            .iter()
            .map(|(id, secret)| {
                ConfiguredKey::from(&ApiCredential::try_from(format!("{id}:{secret}")).unwrap())
            })
            .collect()
    }

    #[test]
    fn only_json_is_json() {
        let with = |content_type: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
            is_json(&headers)
        };
        for json in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
            " application/json ",
        ] {
            assert!(with(json), "{json}");
        }
        for other in [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
            "application/problem+json",
            "text/json",
            "",
        ] {
            assert!(!with(other), "{other}");
        }
        assert!(!is_json(&HeaderMap::new()), "no content type");
    }

    #[test]
    fn a_configured_credential_matches_only_itself() {
        let keys = configured(&[("billing", "s3cret-one"), ("ops", "another-secret")]);
        assert!(ConfiguredKey::any_matches(&keys, "billing", "s3cret-one"));
        assert!(
            ConfiguredKey::any_matches(&keys, "ops", "another-secret"),
            "not only the first"
        );
        for (id, secret) in [
            ("billing", "s3cret-on"),
            ("billing", "s3cret-one-and-more"),
            ("billing", ""),
            ("billing", "another-secret"),
            ("billin", "s3cret-one"),
            ("", ""),
        ] {
            assert!(
                !ConfiguredKey::any_matches(&keys, id, secret),
                "{id}:{secret} is refused"
            );
        }
        assert!(!ConfiguredKey::any_matches(&[], "billing", "s3cret-one"));
    }
}
