//! Stripe webhooks: the `Stripe-Signature` header and the one event of each request.
//!
//! Signed payload: the timestamp exactly as written in the header, `.`, the raw body; HMAC-SHA256
//! keyed with the whole secret string (`whsec_…` included), lowercase hex, scheme `v1`. The header
//! is parsed as the official SDKs parse it: split on `,`, then on the first `=`; an item whose key
//! is not exactly `t` or `v1` (say ` v1` after a space) belongs to an unknown scheme and is ignored.

use secrecy::SecretString;

use crate::provider::{IncomingEvent, WireError};
use crate::providers::rules::SignatureError;
use crate::providers::signature::{any_secret_signs, hmac_sha256_hex};
use crate::reconcile::routing::Claimed;

pub const SIGNATURE_HEADER: &str = "Stripe-Signature";

/// The parts of a `Stripe-Signature` header that settle uses.
#[derive(Debug, PartialEq, Eq)]
pub struct SignatureHeader<'a> {
    /// The timestamp as written: the signed payload uses these exact bytes.
    pub timestamp_text: &'a str,
    pub timestamp: i64,
    /// Every `v1` signature, in order: during a secret rotation Stripe sends one per secret.
    pub v1_signatures: Vec<&'a str>,
}

pub fn parse_signature_header(header: &str) -> Result<SignatureHeader<'_>, SignatureError> {
    let mut timestamp_text = None;
    let mut v1_signatures = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.split_once('=') else {
            continue;
        };
        match key {
            "t" if timestamp_text.is_some() => {
                return Err(SignatureError::MalformedHeader("more than one timestamp"));
            }
            "t" => timestamp_text = Some(value),
            "v1" => v1_signatures.push(value),
            _ => {} // v0 and unknown schemes are ignored, as the SDKs do.
        }
    }
    let timestamp_text =
        timestamp_text.ok_or(SignatureError::MalformedHeader("no timestamp (t=)"))?;
    let timestamp = timestamp_text
        .parse::<i64>()
        .map_err(|_| SignatureError::MalformedHeader("timestamp is not an integer"))?;
    if v1_signatures.is_empty() {
        return Err(SignatureError::MalformedHeader("no v1 signature"));
    }
    Ok(SignatureHeader {
        timestamp_text,
        timestamp,
        v1_signatures,
    })
}

/// Verifies a request: some `v1` signature matches some configured secret, and the timestamp is
/// within `tolerance_secs` of `now` in either direction (the SDKs only check the past; a timestamp
/// far in the future is as suspect as a stale one).
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
    tolerance_secs: u64,
    now: i64,
) -> Result<(), SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NotConfigured);
    }
    let header = parse_signature_header(header.ok_or(SignatureError::MissingHeader)?)?;
    let signed = [header.timestamp_text.as_bytes(), b".", body];
    if !any_secret_signs(secrets, &signed, &header.v1_signatures) {
        return Err(SignatureError::Mismatch);
    }
    if now.abs_diff(header.timestamp) > tolerance_secs {
        return Err(SignatureError::OutsideTolerance);
    }
    Ok(())
}

/// The `Stripe-Signature` header value for `body` at `timestamp`, as Stripe would send it.
/// Used by tests, the load generator and anyone sending a test webhook.
pub fn sign(secret: &SecretString, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let mac = hmac_sha256_hex(secret, &[timestamp.as_bytes(), b".", body]);
    format!("t={timestamp},v1={mac}")
}

#[derive(serde::Deserialize)]
struct EventEnvelope {
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
}

/// A Stripe request carries one event; the message body is the raw request body, byte for byte.
pub fn events(body: &[u8]) -> Result<Vec<IncomingEvent>, WireError> {
    let envelope: EventEnvelope =
        serde_json::from_slice(body).map_err(|e| WireError::MalformedJson(e.to_string()))?;
    let id = envelope
        .id
        .filter(|id| !id.is_empty())
        .ok_or(WireError::MissingField("id"))?;
    let event_type = envelope
        .event_type
        .filter(|t| !t.is_empty())
        .ok_or(WireError::MissingField("type"))?;
    Ok(vec![IncomingEvent {
        id,
        event_type,
        body: body.to_vec(),
    }])
}

#[derive(serde::Deserialize)]
struct Addressing {
    account: Option<String>,
    context: Option<String>,
    livemode: Option<bool>,
}

/// The account a Stripe event is for: Connect's `account`, or else the last account of
/// `context` (current API versions; `acct_org/acct_2` for an organisation's account); and its
/// `livemode`. A body that does not parse claims nothing.
pub fn claimed(body: &[u8]) -> Claimed {
    let Ok(addressing) = serde_json::from_slice::<Addressing>(body) else {
        return Claimed::default();
    };
    let non_empty = |value: Option<String>| value.filter(|v| !v.is_empty());
    let from_context = non_empty(addressing.context)
        .and_then(|context| context.rsplit('/').next().map(str::to_owned))
        .filter(|account| !account.is_empty());
    Claimed {
        account: non_empty(addressing.account).or(from_context),
        livemode: addressing.livemode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BODY: &[u8] = br#"{"id":"evt_1","object":"event","type":"payment_intent.succeeded"}"#;
    const VECTOR_SIGNATURE: &str =
        "67da5088c63e080c71bd2bb0cb5c03d85a8fc6a21ce3aaf484df809654745b92";
    const T: i64 = 1_700_000_000;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s)
    }

    fn secrets() -> Vec<SecretString> {
        vec![secret("whsec_test_secret")]
    }

    #[test]
    fn design_test_vector_made_with_the_stripe_sdk() {
        assert_eq!(
            sign(&secret("whsec_test_secret"), T, BODY),
            format!("t={T},v1={VECTOR_SIGNATURE}")
        );
        let header = format!("t={T},v1={VECTOR_SIGNATURE}");
        assert_eq!(verify(Some(&header), BODY, &secrets(), 300, T), Ok(()));
    }

    #[test]
    fn any_of_several_v1_signatures_may_match_and_v0_is_ignored() {
        let other = "0".repeat(64);
        let header = format!("t={T},v0={VECTOR_SIGNATURE},v1={other},v1={VECTOR_SIGNATURE}");
        assert_eq!(verify(Some(&header), BODY, &secrets(), 300, T), Ok(()));
        // A v0 signature alone is not accepted even when it holds the right MAC.
        let header = format!("t={T},v0={VECTOR_SIGNATURE}");
        assert_eq!(
            verify(Some(&header), BODY, &secrets(), 300, T),
            Err(SignatureError::MalformedHeader("no v1 signature"))
        );
    }

    #[test]
    fn any_configured_secret_may_sign_during_rotation() {
        let rotated = vec![secret("whsec_new"), secret("whsec_test_secret")];
        let header = format!("t={T},v1={VECTOR_SIGNATURE}");
        assert_eq!(verify(Some(&header), BODY, &rotated, 300, T), Ok(()));
    }

    #[test]
    fn header_edge_cases() {
        let cases: &[(&str, SignatureError)] = &[
            (
                "v1=abc",
                SignatureError::MalformedHeader("no timestamp (t=)"),
            ),
            (
                "t=soon,v1=abc",
                SignatureError::MalformedHeader("timestamp is not an integer"),
            ),
            (
                "t=",
                SignatureError::MalformedHeader("timestamp is not an integer"),
            ),
            ("", SignatureError::MalformedHeader("no timestamp (t=)")),
            (
                "t=1,t=2,v1=abc",
                SignatureError::MalformedHeader("more than one timestamp"),
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(
                parse_signature_header(header).unwrap_err(),
                *expected,
                "header {header:?}"
            );
        }
    }

    #[test]
    fn a_space_before_a_key_makes_it_an_unknown_scheme() {
        let header = format!("t={T}, v1={VECTOR_SIGNATURE}");
        assert_eq!(
            verify(Some(&header), BODY, &secrets(), 300, T),
            Err(SignatureError::MalformedHeader("no v1 signature"))
        );
        let header = format!(" t={T},v1={VECTOR_SIGNATURE}");
        assert_eq!(
            verify(Some(&header), BODY, &secrets(), 300, T),
            Err(SignatureError::MalformedHeader("no timestamp (t=)"))
        );
    }

    #[test]
    fn uppercase_hex_and_wrong_lengths_do_not_match() {
        for candidate in [
            VECTOR_SIGNATURE.to_uppercase(),
            VECTOR_SIGNATURE[..63].to_owned(),
            format!("{VECTOR_SIGNATURE}0"),
            String::new(),
        ] {
            let header = format!("t={T},v1={candidate}");
            assert_eq!(
                verify(Some(&header), BODY, &secrets(), 300, T),
                Err(SignatureError::Mismatch),
                "candidate {candidate:?}"
            );
        }
    }

    #[test]
    fn timestamps_outside_the_tolerance_fail_in_both_directions() {
        let header = format!("t={T},v1={VECTOR_SIGNATURE}");
        for now in [T + 300, T - 300] {
            assert_eq!(verify(Some(&header), BODY, &secrets(), 300, now), Ok(()));
        }
        for now in [T + 301, T - 301] {
            assert_eq!(
                verify(Some(&header), BODY, &secrets(), 300, now),
                Err(SignatureError::OutsideTolerance),
                "now {now}"
            );
        }
    }

    #[test]
    fn missing_header_and_empty_secret_list_fail() {
        assert_eq!(
            verify(None, BODY, &secrets(), 300, T),
            Err(SignatureError::MissingHeader)
        );
        let header = format!("t={T},v1={VECTOR_SIGNATURE}");
        assert_eq!(
            verify(Some(&header), BODY, &[], 300, T),
            Err(SignatureError::NotConfigured)
        );
    }

    #[test]
    fn events_keep_the_raw_body_and_require_id_and_type() {
        let events = events(BODY).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id, "evt_1");
        assert_eq!(events[0].event_type, "payment_intent.succeeded");
        assert_eq!(events[0].body, BODY);
        assert_eq!(
            super::events(br#"{"type":"x"}"#).unwrap_err(),
            WireError::MissingField("id")
        );
        assert_eq!(
            super::events(br#"{"id":"evt_1"}"#).unwrap_err(),
            WireError::MissingField("type")
        );
        assert!(matches!(
            super::events(b"{not json").unwrap_err(),
            WireError::MalformedJson(_)
        ));
    }

    proptest! {
        #[test]
        fn any_single_byte_change_to_body_timestamp_or_secret_fails(
            position in any::<prop::sample::Index>(),
            delta in 1u8..=255,
            target in 0..3usize,
        ) {
            let mut body = BODY.to_vec();
            let mut timestamp = T.to_string().into_bytes();
            let mut key = b"whsec_test_secret".to_vec();
            let bytes = match target { 0 => &mut body, 1 => &mut timestamp, _ => &mut key };
            let i = position.index(bytes.len());
            bytes[i] = bytes[i].wrapping_add(delta);
            let timestamp = String::from_utf8_lossy(&timestamp).into_owned();
            let key = secret(&String::from_utf8_lossy(&key));

            // The genuine signature with a changed body or timestamp, and a signature made with a
            // changed secret over the genuine request: none may verify.
            let (header, checked_body) = match target {
                0 => (format!("t={T},v1={VECTOR_SIGNATURE}"), body),
                1 => (format!("t={timestamp},v1={VECTOR_SIGNATURE}"), BODY.to_vec()),
                _ => (sign(&key, T, BODY), BODY.to_vec()),
            };
            prop_assert!(verify(Some(&header), &checked_body, &secrets(), u64::MAX, T).is_err());
        }

        #[test]
        fn the_header_parser_never_panics(header in ".{0,200}") {
            let _ = parse_signature_header(&header);
        }

        #[test]
        fn the_header_parser_finds_every_v1(sigs in prop::collection::vec("[0-9a-f]{64}", 1..5)) {
            let header = format!("t=1,{}", sigs.iter().map(|s| format!("v1={s}")).collect::<Vec<_>>().join(","));
            let parsed = parse_signature_header(&header).unwrap();
            prop_assert_eq!(parsed.v1_signatures, sigs.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}
