//! The configured API credentials, kept so that checking one takes the same time whichever it is.

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::config::ApiCredential;

/// A configured credential (`SETTLE_API_CREDENTIALS`), kept as the SHA-256 digests of its key id
/// and secret. Comparing digests, which all have the same length, keeps the comparison constant
/// time: `ct_eq` on the raw strings returns early when the lengths differ, which tells a caller
/// the length of a configured id or secret. The digests are taken once, when the API is built.
#[derive(Clone)]
pub struct ConfiguredKey {
    key_id: [u8; 32],
    secret: [u8; 32],
}

impl From<&ApiCredential> for ConfiguredKey {
    fn from(credential: &ApiCredential) -> Self {
        let (key_id, secret) = credential.parts();
        Self {
            key_id: digest(key_id),
            secret: digest(secret.expose_secret()),
        }
    }
}

impl ConfiguredKey {
    /// Whether `key_id:secret` is one of `configured`. Every credential is compared, whichever
    /// matches, so the time taken does not say which one did.
    pub(super) fn any_matches(configured: &[Self], key_id: &str, secret: &str) -> bool {
        let (key_id, secret) = (digest(key_id), digest(secret));
        let matched = configured
            .iter()
            .fold(Choice::from(0), |matched, expected| {
                matched | (expected.key_id.ct_eq(&key_id) & expected.secret.ct_eq(&secret))
            });
        matched.into()
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}
