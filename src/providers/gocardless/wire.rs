//! GoCardless webhooks: `Webhook-Signature` is the lowercase hex HMAC-SHA256 of the raw body. There
//! is no timestamp; replay protection is the worker's event-id dedupe. A body is a batch of up to
//! 250 events about unrelated resources, and each becomes its own message.

use secrecy::SecretString;
use serde_json::value::RawValue;

use crate::provider::{IncomingEvent, WireError};
use crate::providers::rules::SignatureError;
use crate::providers::signature::{any_secret_signs, hmac_sha256_hex};
use crate::reconcile::routing::Claimed;

pub const SIGNATURE_HEADER: &str = "Webhook-Signature";
/// The most events GoCardless puts in one webhook (its documented maximum): a larger batch is
/// not GoCardless's, and would be that many messages published for one request.
pub const MAX_BATCH: usize = 250;

pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
) -> Result<(), SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NotConfigured);
    }
    let received = parse_signature_header(header.ok_or(SignatureError::MissingHeader)?)?;
    if any_secret_signs(secrets, &[body], &[received]) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The signature in a `Webhook-Signature` header: 64 hex characters (surrounding spaces aside).
/// Checked before the body is read, so a request that cannot be signed costs no memory.
pub fn parse_signature_header(header: &str) -> Result<&str, SignatureError> {
    let signature = header.trim();
    if signature.len() == 64 && signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(signature)
    } else {
        Err(SignatureError::MalformedHeader(
            "not the 64 hex characters of an HMAC-SHA256",
        ))
    }
}

/// The `Webhook-Signature` header value GoCardless would send for `body`.
pub fn sign(secret: &SecretString, body: &[u8]) -> String {
    hmac_sha256_hex(secret, &[body])
}

#[derive(serde::Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

#[derive(serde::Deserialize)]
struct EventEnvelope {
    id: Option<String>,
    resource_type: Option<String>,
    action: Option<String>,
}

/// One event per element of `events`, each message body being that element's exact JSON. The
/// event type is `<resource_type>.<action>`, e.g. `payments.confirmed`.
pub fn events(body: &[u8]) -> Result<Vec<IncomingEvent>, WireError> {
    let batch: Batch<'_> =
        serde_json::from_slice(body).map_err(|e| WireError::MalformedJson(e.to_string()))?;
    if batch.events.len() > MAX_BATCH {
        return Err(WireError::TooManyEvents(MAX_BATCH));
    }
    batch
        .events
        .into_iter()
        .map(|raw| {
            let envelope: EventEnvelope = serde_json::from_str(raw.get())
                .map_err(|e| WireError::MalformedJson(e.to_string()))?;
            let id = envelope
                .id
                .filter(|id| !id.is_empty())
                .ok_or(WireError::MissingField("events[].id"))?;
            let resource_type = envelope
                .resource_type
                .filter(|t| !t.is_empty())
                .ok_or(WireError::MissingField("events[].resource_type"))?;
            let action = envelope
                .action
                .filter(|a| !a.is_empty())
                .ok_or(WireError::MissingField("events[].action"))?;
            Ok(IncomingEvent {
                id,
                event_type: format!("{resource_type}.{action}"),
                body: raw.get().as_bytes().to_vec(),
            })
        })
        .collect()
}

#[derive(serde::Deserialize)]
struct Addressing {
    links: Option<Links>,
}

#[derive(serde::Deserialize)]
struct Links {
    organisation: Option<String>,
}

/// The partner organisation a GoCardless event is for (`links.organisation`). GoCardless names
/// no mode: sandbox and live are separate hosts with separate ids.
pub fn claimed(body: &[u8]) -> Claimed {
    let organisation = serde_json::from_slice::<Addressing>(body)
        .ok()
        .and_then(|addressing| addressing.links?.organisation);
    Claimed {
        account: organisation,
        livemode: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"events":[{"id":"EV123","action":"confirmed","resource_type":"payments","links":{"payment":"PM123"}}]}"#;
    const VECTOR_SIGNATURE: &str =
        "d3774c7a6e18f9ff1188744f305e6c87ebd91104a9670db52121fcef2b669fe7";

    fn secrets() -> Vec<SecretString> {
        vec![SecretString::from("gc_secret")]
    }

    #[test]
    fn design_test_vector() {
        assert_eq!(sign(&secrets()[0], BODY), VECTOR_SIGNATURE);
        assert_eq!(verify(Some(VECTOR_SIGNATURE), BODY, &secrets()), Ok(()));
    }

    #[test]
    fn rotation_wrong_signature_missing_header_and_no_secrets() {
        let rotated = vec![
            SecretString::from("gc_new"),
            SecretString::from("gc_secret"),
        ];
        assert_eq!(verify(Some(VECTOR_SIGNATURE), BODY, &rotated), Ok(()));
        assert_eq!(
            verify(Some(&VECTOR_SIGNATURE.to_uppercase()), BODY, &secrets()),
            Err(SignatureError::Mismatch)
        );
        let mut tampered = BODY.to_vec();
        tampered[20] ^= 1;
        assert_eq!(
            verify(Some(VECTOR_SIGNATURE), &tampered, &secrets()),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(None, BODY, &secrets()),
            Err(SignatureError::MissingHeader)
        );
        for malformed in ["", "abc", &format!("{VECTOR_SIGNATURE}0"), &"g".repeat(64)] {
            assert!(
                matches!(
                    verify(Some(malformed), BODY, &secrets()),
                    Err(SignatureError::MalformedHeader(_))
                ),
                "{malformed}"
            );
        }
        assert_eq!(
            verify(Some(VECTOR_SIGNATURE), BODY, &[]),
            Err(SignatureError::NotConfigured)
        );
    }

    #[test]
    fn every_event_of_the_shared_fixture_batch_becomes_a_message() {
        let fixture = include_bytes!("../../../tests/fixtures/gocardless-webhook.json");
        let parsed: serde_json::Value = serde_json::from_slice(fixture).unwrap();
        let expected = parsed["events"].as_array().unwrap();
        let events = events(fixture).unwrap();
        assert_eq!(events.len(), expected.len());
        for (event, original) in events.iter().zip(expected) {
            assert_eq!(event.id, original["id"].as_str().unwrap());
            let reparsed: serde_json::Value = serde_json::from_slice(&event.body).unwrap();
            assert_eq!(&reparsed, original);
            assert_eq!(
                event.event_type,
                format!(
                    "{}.{}",
                    original["resource_type"].as_str().unwrap(),
                    original["action"].as_str().unwrap()
                )
            );
        }
    }

    #[test]
    fn a_batch_holds_at_most_the_documented_250_events() {
        let batch = |n: usize| {
            let events: Vec<String> = (0..n)
                .map(|i| {
                    format!(r#"{{"id":"EV{i}","resource_type":"payments","action":"confirmed"}}"#)
                })
                .collect();
            format!(r#"{{"events":[{}]}}"#, events.join(","))
        };
        assert_eq!(events(batch(250).as_bytes()).unwrap().len(), 250);
        assert_eq!(
            events(batch(251).as_bytes()).unwrap_err(),
            WireError::TooManyEvents(250)
        );
    }

    #[test]
    fn each_event_needs_id_resource_type_and_action() {
        assert_eq!(
            events(br#"{"events":[{"action":"confirmed","resource_type":"payments"}]}"#)
                .unwrap_err(),
            WireError::MissingField("events[].id")
        );
        assert_eq!(
            events(br#"{"events":[{"id":"EV1","resource_type":"payments"}]}"#).unwrap_err(),
            WireError::MissingField("events[].action")
        );
        assert!(matches!(
            events(br#"{"events":"nope"}"#).unwrap_err(),
            WireError::MalformedJson(_)
        ));
    }
}
