//! Secrets at rest. Provider webhook secrets and API keys stored in PostgreSQL are sealed with
//! XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`: an AEAD with a random 24-byte nonce per
//! seal, so no nonce bookkeeping) under a key from the environment, never stored in clear.
//!
//! `SETTLE_SECRET_KEYS` (`secrets.keys`) lists `<key id>:<base64 of 32 bytes>`, comma-separated.
//! The first key seals; every listed key opens. A sealed value is `v1.<key id>.<base64 of nonce
//! and ciphertext>`, and it is bound to what it belongs to (a connection's id and the field) as
//! associated data, so a sealed value copied onto another row does not open.
//!
//! Rotating the key: put the new key first and keep the old one after it (both open); re-seal
//! what was sealed under the old key (`settle connections reseal`); then remove it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

const VERSION: &str = "v1";
const NONCE_BYTES: usize = 24;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error(
        "no secret key is configured (SETTLE_SECRET_KEYS): settle cannot store or read provider secrets"
    )]
    NoKey,
    #[error("SETTLE_SECRET_KEYS: {0}")]
    BadKeyList(String),
    #[error("a sealed secret is not in settle's format (`v1.<key id>.<data>`)")]
    Malformed,
    #[error("a secret is sealed under key `{0}`, which SETTLE_SECRET_KEYS does not list")]
    UnknownKey(String),
    #[error("a sealed secret does not open with key `{0}`: altered, or sealed for another row")]
    DoesNotOpen(String),
}

/// The MAC key for queued events, derived from a sealing key (HMAC-SHA256 of a fixed label):
/// the same bytes are never used by two algorithms.
fn derive_mac_key(key: &[u8]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(mac_of(key, &[b"settle queued-event seal v1"]))
}

fn mac_of(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    #[expect(clippy::expect_used, reason = "HMAC takes keys of any length")]
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The keys secrets are sealed and opened with. The default is the empty keyring (no key).
#[derive(Clone, Default)]
pub struct Keyring {
    keys: Vec<(String, XChaCha20Poly1305)>,
    /// Each key's MAC key for queued events (`mac`), derived from it so one key list serves
    /// both, in the same order.
    mac_keys: Vec<(String, Zeroizing<[u8; 32]>)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

impl Keyring {
    /// Parses `<key id>:<base64 of 32 bytes>,…`. An empty list is a keyring that seals nothing.
    pub fn parse(list: &SecretString) -> Result<Self, SealError> {
        let mut keys = Vec::new();
        let mut mac_keys = Vec::new();
        for entry in list
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            // Errors name the key id at most, never the key.
            let (id, key) = entry
                .split_once(':')
                .filter(|(id, _)| !id.is_empty() && !id.contains('.'))
                .ok_or_else(|| {
                    SealError::BadKeyList(
                        "each entry is `<key id>:<base64 of 32 bytes>` (the id without dots)"
                            .into(),
                    )
                })?;
            // Decoded into a buffer wiped on drop, whether the key is kept, refused for its
            // length or half-decoded when the base64 is bad: the cipher keeps its own copy.
            let mut bytes = Zeroizing::new(Vec::new());
            if STANDARD.decode_vec(key, &mut bytes).is_err() || bytes.len() != 32 {
                return Err(SealError::BadKeyList(format!(
                    "key `{id}` is not the base64 of 32 bytes"
                )));
            }
            if keys.iter().any(|(existing, _)| existing == id) {
                return Err(SealError::BadKeyList(format!("key `{id}` is listed twice")));
            }
            let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
                .map_err(|_| SealError::BadKeyList(format!("key `{id}` is not 32 bytes")))?;
            keys.push((id.to_owned(), cipher));
            mac_keys.push((id.to_owned(), derive_mac_key(&bytes)));
        }
        Ok(Self { keys, mac_keys })
    }

    /// Whether the keyring holds no key (then nothing is sealed, and nothing is checked).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The MAC of `parts` under the first key, as `<key id>.<hex>`; `None` with no key. Each part
    /// is length-prefixed, so no two different lists of parts give the same input.
    pub fn mac(&self, parts: &[&[u8]]) -> Option<String> {
        let (id, key) = self.mac_keys.first()?;
        Some(format!(
            "{id}.{}",
            hex::encode(mac_of(key.as_slice(), parts))
        ))
    }

    /// Whether `seal` (`<key id>.<hex>`, as `mac` made it) is the MAC of `parts` under the key it
    /// names, which must still be in the keyring (rotation: every listed key checks).
    pub fn verifies(&self, parts: &[&[u8]], seal: &str) -> bool {
        use subtle::ConstantTimeEq;
        let Some((id, mac)) = seal.split_once('.') else {
            return false;
        };
        let Some((_, key)) = self.mac_keys.iter().find(|(known, _)| known == id) else {
            return false;
        };
        let Ok(mac) = hex::decode(mac) else {
            return false;
        };
        bool::from(mac.as_slice().ct_eq(&mac_of(key.as_slice(), parts)))
    }

    /// Seals `secret` for `context` (what it belongs to) under the first key.
    pub fn seal(&self, secret: &SecretString, context: &str) -> Result<String, SealError> {
        let (id, cipher) = self.keys.first().ok_or(SealError::NoKey)?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: secret.expose_secret().as_bytes(),
            aad: context.as_bytes(),
        };
        // Encryption fails only for messages beyond the cipher's limit (far beyond a secret).
        let sealed = cipher
            .encrypt(&nonce, payload)
            .map_err(|_| SealError::DoesNotOpen(id.clone()))?;
        let mut data = nonce.to_vec();
        data.extend(sealed);
        Ok(format!("{VERSION}.{id}.{}", STANDARD.encode(data)))
    }

    /// Opens what `seal` sealed for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<SecretString, SealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(VERSION), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Malformed);
        };
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(key_id, _)| key_id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let data = STANDARD.decode(data).map_err(|_| SealError::Malformed)?;
        if data.len() < NONCE_BYTES {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = data.split_at(NONCE_BYTES);
        let payload = Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        // The plaintext is wiped when dropped, also when it is not UTF-8; what is returned is a
        // copy in a `SecretString`, which wipes itself.
        let opened = Zeroizing::new(
            cipher
                .decrypt(XNonce::from_slice(nonce), payload)
                .map_err(|_| SealError::DoesNotOpen(id.to_owned()))?,
        );
        std::str::from_utf8(&opened)
            .map(SecretString::from)
            .map_err(|_| SealError::DoesNotOpen(id.to_owned()))
    }

    /// Seals `sealed` again under the first key, unless it already is: the value and whether it
    /// changed.
    pub fn reseal(&self, sealed: &str, context: &str) -> Result<(String, bool), SealError> {
        if key_id_of(sealed).is_some() && key_id_of(sealed) == self.sealing_key_id() {
            return Ok((sealed.to_owned(), false));
        }
        Ok((self.seal(&self.open(sealed, context)?, context)?, true))
    }

    /// The id of the key that seals, if any.
    pub fn sealing_key_id(&self) -> Option<&str> {
        self.keys.first().map(|(id, _)| id.as_str())
    }
}

/// The id of the key a sealed value was sealed under (without opening it).
pub fn key_id_of(sealed: &str) -> Option<&str> {
    let mut parts = sealed.splitn(3, '.');
    match (parts.next(), parts.next()) {
        (Some(VERSION), Some(id)) => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(list: &str) -> Keyring {
        Keyring::parse(&SecretString::from(list)).unwrap()
    }

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:HxYdHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

    #[test]
    fn a_reseal_moves_a_value_to_the_first_key_once() {
        let old = keyring(K1);
        let sealed = old.seal(&SecretString::from("whsec_x"), "ctx").unwrap();
        assert_eq!(key_id_of(&sealed), Some("k1"));
        let rotating = keyring(&format!("{K2},{K1}"));
        let (resealed, changed) = rotating.reseal(&sealed, "ctx").unwrap();
        assert!(changed);
        assert_eq!(key_id_of(&resealed), Some("k2"));
        assert_eq!(
            rotating.reseal(&resealed, "ctx").unwrap(),
            (resealed.clone(), false)
        );
        // The old key can go: the new one alone opens it.
        let new = keyring(K2);
        assert_eq!(
            new.open(&resealed, "ctx").unwrap().expose_secret(),
            "whsec_x"
        );
        assert!(rotating.reseal(&sealed, "another row").is_err());
    }

    #[test]
    fn a_sealed_secret_opens_for_its_row_only_and_never_shows_the_secret() {
        let ring = keyring(K1);
        let secret = SecretString::from("whsec_abc");
        let sealed = ring.seal(&secret, "conn_1/webhook_secret").unwrap();
        assert!(sealed.starts_with("v1.k1."), "{sealed}");
        assert!(!sealed.contains("whsec_abc"));
        assert_ne!(
            sealed,
            ring.seal(&secret, "conn_1/webhook_secret").unwrap(),
            "a fresh nonce"
        );
        let opened = ring.open(&sealed, "conn_1/webhook_secret").unwrap();
        assert_eq!(opened.expose_secret(), "whsec_abc");
        assert_eq!(
            ring.open(&sealed, "conn_2/webhook_secret").unwrap_err(),
            SealError::DoesNotOpen("k1".into())
        );
        let mut altered = sealed.clone();
        altered.pop();
        altered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(ring.open(&altered, "conn_1/webhook_secret").is_err());
    }

    #[test]
    fn rotation_seals_with_the_first_key_and_opens_with_any() {
        let old = keyring(K1).seal(&SecretString::from("s"), "c").unwrap();
        let rotated = keyring(&format!("{K2},{K1}"));
        assert_eq!(rotated.sealing_key_id(), Some("k2"));
        assert_eq!(rotated.open(&old, "c").unwrap().expose_secret(), "s");
        assert!(
            rotated
                .seal(&SecretString::from("s"), "c")
                .unwrap()
                .starts_with("v1.k2.")
        );
        assert_eq!(
            keyring(K2).open(&old, "c").unwrap_err(),
            SealError::UnknownKey("k1".into())
        );
    }

    #[test]
    fn a_bad_key_list_is_refused_naming_the_key_never_showing_it() {
        for (list, expected) in [
            ("k1", "each entry is"),
            ("k1:c2hvcnQ=", "key `k1` is not the base64 of 32 bytes"),
            (&format!("{K1},{K1}"), "key `k1` is listed twice"),
        ] {
            let error = Keyring::parse(&SecretString::from(list))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{list}: {error}");
            assert!(!error.contains("c2hvcnQ"), "{error}");
        }
        assert_eq!(
            keyring("").seal(&SecretString::from("s"), "c").unwrap_err(),
            SealError::NoKey
        );
        assert_eq!(
            keyring(K1).open("plain", "c").unwrap_err(),
            SealError::Malformed
        );
    }
}
