//! HMAC-SHA256 helpers shared by the provider verifiers. Both providers sign with HMAC-SHA256 and
//! send the MAC as lowercase hex; comparing hex strings in constant time is what their SDKs do.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Lowercase hex HMAC-SHA256 of `parts` concatenated, keyed with the secret's bytes as written.
#[expect(clippy::expect_used, reason = "HMAC takes keys of any length")]
pub fn hmac_sha256_hex(secret: &SecretString, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time equality of two signatures. The length is not secret (it is always 64 hex
/// characters), so a length mismatch may return early.
pub fn signatures_match(expected: &str, received: &str) -> bool {
    expected.len() == received.len() && bool::from(expected.as_bytes().ct_eq(received.as_bytes()))
}

/// True when any received signature matches the MAC under any configured secret: several secrets
/// are configured while rotating, and a provider may send several signatures at once.
pub fn any_secret_signs(secrets: &[SecretString], parts: &[&[u8]], received: &[&str]) -> bool {
    // Every pair is compared, with no early exit, so timing does not tell which secret matched.
    let mut matched = false;
    for secret in secrets {
        let expected = hmac_sha256_hex(secret, parts);
        for candidate in received {
            matched |= signatures_match(&expected, candidate);
        }
    }
    matched
}
