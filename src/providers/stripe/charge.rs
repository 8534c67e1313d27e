//! Stripe: an automatic charge is a PaymentIntent created and confirmed off-session in one call
//! (`POST /v1/payment_intents` with `confirm=true`, `off_session=true`), on the customer and the
//! method on file, with the `Idempotency-Key` of the attempt (Stripe answers a repeat of the key
//! with the first answer, for 24 hours) and, for a connected account read with the platform's
//! key, `Stripe-Account`. The PaymentIntent's metadata names the invoice and the attempt, so its
//! webhooks find both before the answer is stored.

use reqwest::StatusCode;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;

use super::api::{Credentials, headers};
use crate::provider::Provider;
use crate::providers::charge::{ChargeAnswer, ChargeRequest, METADATA_CHARGE, METADATA_INVOICE};
use crate::providers::client::{ApiClient, Posted};
use crate::reconcile::payment_methods::MethodReference;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The form of the create call.
pub fn form(request: &ChargeRequest<'_>) -> Result<Vec<(String, String)>, String> {
    let mut form = vec![
        ("amount".to_owned(), request.amount.to_string()),
        (
            "currency".to_owned(),
            request.currency.as_str().to_ascii_lowercase(),
        ),
        ("confirm".to_owned(), "true".to_owned()),
        ("off_session".to_owned(), "true".to_owned()),
        (
            format!("metadata[{METADATA_INVOICE}]"),
            request.invoice_id.to_owned(),
        ),
        (
            format!("metadata[{METADATA_CHARGE}]"),
            request.idempotency_key.to_owned(),
        ),
    ];
    match MethodReference::parse(Provider::Stripe, request.method_reference)? {
        // The customer's default source pays.
        MethodReference::StripeCustomer { customer } => {
            form.push(("customer".to_owned(), customer));
        }
        MethodReference::StripeMethod {
            customer, method, ..
        } => {
            form.push(("customer".to_owned(), customer));
            form.push(("payment_method".to_owned(), method));
        }
        MethodReference::GoCardlessMandate { .. } => {
            return Err("a GoCardless mandate cannot pay at Stripe".into());
        }
    }
    Ok(form)
}

/// Creates and confirms the PaymentIntent; an error only when the request could not be built.
pub async fn create(
    client: &ApiClient,
    credentials: &Credentials<'_>,
    request: &ChargeRequest<'_>,
) -> ChargeAnswer {
    let form = match form(request) {
        Ok(form) => form,
        Err(detail) => return ChargeAnswer::Refused { detail },
    };
    let sent = async {
        let mut headers = headers(client, credentials)?;
        let key = HeaderValue::from_str(request.idempotency_key)
            .map_err(|_| client.shape("the idempotency key"))?;
        headers.insert(IDEMPOTENCY_KEY, key);
        client
            .post_once("/v1/payment_intents", headers, |r| r.form(&form))
            .await
    };
    match sent.await {
        Ok(posted) => answer(&posted),
        Err(error) => ChargeAnswer::unanswered(&error),
    }
}

/// What Stripe's answer means (see `ChargeAnswer`).
pub fn answer(posted: &Posted) -> ChargeAnswer {
    if posted.is_retryable() || posted.status == StatusCode::CONFLICT {
        // 409: the same key is being answered for another send right now; ask again.
        return ChargeAnswer::Later {
            after: posted.retry_after,
            detail: format!("Stripe answered {}: {}", posted.status, posted.excerpt()),
        };
    }
    let body: Value = serde_json::from_slice(&posted.body).unwrap_or(Value::Null);
    let text = |value: &Value, pointer: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if posted.status.is_success() {
        let Some(id) = text(&body, "/id") else {
            return ChargeAnswer::Later {
                after: None,
                detail: format!(
                    "Stripe answered a PaymentIntent without an id: {}",
                    posted.excerpt()
                ),
            };
        };
        return match text(&body, "/status").as_deref() {
            Some("requires_action") => ChargeAnswer::NeedsAuthentication {
                provider_payment_id: Some(id),
            },
            Some("requires_payment_method" | "canceled") => ChargeAnswer::Declined {
                provider_payment_id: Some(id),
                code: text(&body, "/last_payment_error/decline_code")
                    .or_else(|| text(&body, "/last_payment_error/code")),
                message: text(&body, "/last_payment_error/message"),
            },
            status => ChargeAnswer::Created {
                provider_payment_id: id,
                succeeded: status == Some("succeeded"),
            },
        };
    }
    // A card error (402) is a declined charge; the PaymentIntent it made is in the error.
    let error = body.get("error").cloned().unwrap_or(Value::Null);
    let intent = text(&error, "/payment_intent/id");
    let code = text(&error, "/decline_code").or_else(|| text(&error, "/code"));
    if posted.status == StatusCode::PAYMENT_REQUIRED {
        if code.as_deref() == Some("authentication_required") {
            return ChargeAnswer::NeedsAuthentication {
                provider_payment_id: intent,
            };
        }
        return ChargeAnswer::Declined {
            provider_payment_id: intent,
            code,
            message: text(&error, "/message"),
        };
    }
    ChargeAnswer::Refused {
        detail: format!(
            "Stripe answered {}: {}",
            posted.status,
            text(&error, "/message").unwrap_or_else(|| posted.excerpt())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::charge::examples::{answered as posted, request};

    #[test]
    fn the_request_confirms_off_session_on_the_method_on_file_and_names_invoice_and_attempt() {
        let request = request("cus_1/pm_2");
        let sent = form(&request).unwrap();
        for pair in [
            ("amount", "12500"),
            ("currency", "gbp"),
            ("confirm", "true"),
            ("off_session", "true"),
            ("customer", "cus_1"),
            ("payment_method", "pm_2"),
            ("metadata[invoice_id]", "inv_1"),
            ("metadata[settle_charge]", "settle-charge-0123"),
        ] {
            assert!(
                sent.iter().any(|(k, v)| (k.as_str(), v.as_str()) == pair),
                "{pair:?} in {sent:?}"
            );
        }
        let customer_only = ChargeRequest {
            method_reference: "cus_1",
            ..request.clone()
        };
        assert!(
            !form(&customer_only)
                .unwrap()
                .iter()
                .any(|(k, _)| k == "payment_method")
        );
        let mandate = ChargeRequest {
            method_reference: "MD123",
            ..request
        };
        assert!(form(&mandate).is_err());
    }

    #[test]
    fn answers_read_as_the_attempt_ends() {
        let fixture: Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/stripe-objects.json"))
                .unwrap();
        let mut intent = fixture["payment_intent"].clone();
        intent["id"] = "pi_charge_1".into();
        intent["status"] = "succeeded".into();
        let id = intent["id"].as_str().unwrap().to_owned();
        assert_eq!(
            answer(&posted(200, intent.clone())),
            ChargeAnswer::Created {
                provider_payment_id: id.clone(),
                succeeded: true
            }
        );
        let mut action = intent.clone();
        action["status"] = "requires_action".into();
        assert_eq!(
            answer(&posted(200, action)),
            ChargeAnswer::NeedsAuthentication {
                provider_payment_id: Some(id.clone())
            }
        );
        // Stripe's card error: the declined PaymentIntent is in the error.
        let mut declined = intent.clone();
        declined["status"] = "requires_payment_method".into();
        let card_error = serde_json::json!({"error": {
            "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.", "payment_intent": declined}});
        assert_eq!(
            answer(&posted(402, card_error)),
            ChargeAnswer::Declined {
                provider_payment_id: Some(id.clone()),
                code: Some("insufficient_funds".into()),
                message: Some("Your card has insufficient funds.".into())
            }
        );
        let authentication = serde_json::json!({"error": {
            "type": "card_error", "code": "authentication_required", "payment_intent": intent}});
        assert_eq!(
            answer(&posted(402, authentication)),
            ChargeAnswer::NeedsAuthentication {
                provider_payment_id: Some(id)
            }
        );
        for status in [429, 500, 503, 409] {
            assert!(
                matches!(
                    answer(&posted(status, Value::Null)),
                    ChargeAnswer::Later { .. }
                ),
                "{status}"
            );
        }
        let invalid = serde_json::json!({"error": {
            "type": "invalid_request_error", "message": "No such PaymentMethod: 'pm_x'"}});
        assert_eq!(
            answer(&posted(400, invalid)),
            ChargeAnswer::Refused {
                detail: "Stripe answered 400 Bad Request: No such PaymentMethod: 'pm_x'".into()
            }
        );
    }
}
