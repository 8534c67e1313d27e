//! Keyset pages by id: the cursor a list answers with (`nextCursor`) is the last id it listed,
//! base64url, and the next page starts after it.

use base64::Engine;

use super::error::ApiError;

/// The cursor after `id`.
pub fn cursor(id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

/// The id a `cursor` names, if one was given; a cursor this API did not write is refused.
pub fn after(cursor: Option<&str>) -> Result<Option<String>, ApiError> {
    cursor
        .map(|cursor| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(cursor)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| ApiError::validation("cursor", "not a cursor returned by this API"))
        })
        .transpose()
}

/// A page of `rows` fetched with one more than `limit`: the first `limit`, and the cursor after
/// the last of them when that extra row says another page follows.
pub fn cut<R>(mut rows: Vec<R>, limit: i64, id: impl Fn(&R) -> &str) -> (Vec<R>, Option<String>) {
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next = rows.last().filter(|_| more).map(|last| cursor(id(last)));
    (rows, next)
}
