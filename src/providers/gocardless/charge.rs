//! GoCardless: an automatic charge is a payment created against the mandate on file
//! (`POST /payments`: amount, currency, the mandate, a description, and metadata naming the
//! invoice and the attempt, which its events carry back as `resource_metadata`), with the
//! attempt's `Idempotency-Key`. GoCardless answers a repeat of the key with 409
//! `idempotent_creation_conflict` naming the payment the first send created: that payment is
//! the attempt's. No `charge_date`: GoCardless takes the earliest the scheme allows. No
//! `reference`: a custom bank reference needs a GoCardless plan that allows it, and without one
//! it is refused; GoCardless makes its own.

use reqwest::StatusCode;
use reqwest::header::{HeaderName, HeaderValue};
use secrecy::SecretString;
use serde_json::{Value, json};

use super::api::headers;
use crate::provider::Provider;
use crate::providers::charge::{ChargeAnswer, ChargeRequest, METADATA_CHARGE, METADATA_INVOICE};
use crate::providers::client::{ApiClient, Posted};
use crate::reconcile::payment_methods::MethodReference;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The body of the create call.
pub fn body(request: &ChargeRequest<'_>) -> Result<Value, String> {
    let MethodReference::GoCardlessMandate { mandate } =
        MethodReference::parse(Provider::GoCardless, request.method_reference)?
    else {
        return Err("only a GoCardless mandate pays at GoCardless".into());
    };
    Ok(json!({"payments": {
        "amount": request.amount,
        "currency": request.currency.as_str(),
        "description": format!("Invoice {}", request.invoice_number),
        "metadata": {
            METADATA_INVOICE: request.invoice_id,
            METADATA_CHARGE: request.idempotency_key,
        },
        "links": {"mandate": mandate},
    }}))
}

/// Creates the payment.
pub async fn create(
    client: &ApiClient,
    access_token: &SecretString,
    request: &ChargeRequest<'_>,
) -> ChargeAnswer {
    let body = match body(request) {
        Ok(body) => body,
        Err(detail) => return ChargeAnswer::Refused { detail },
    };
    let sent = async {
        let mut headers = headers(access_token)?;
        let key = HeaderValue::from_str(request.idempotency_key)
            .map_err(|_| client.shape("the idempotency key"))?;
        headers.insert(IDEMPOTENCY_KEY, key);
        client
            .post_once("/payments", headers, |r| r.json(&body))
            .await
    };
    match sent.await {
        Ok(posted) => answer(&posted),
        Err(error) => ChargeAnswer::unanswered(&error),
    }
}

/// What GoCardless's answer means (see `ChargeAnswer`).
pub fn answer(posted: &Posted) -> ChargeAnswer {
    if posted.is_retryable() {
        return ChargeAnswer::Later {
            after: posted.retry_after,
            detail: format!(
                "GoCardless answered {}: {}",
                posted.status,
                posted.excerpt()
            ),
        };
    }
    let body: Value = serde_json::from_slice(&posted.body).unwrap_or(Value::Null);
    let text = |pointer: &str| {
        body.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if posted.status.is_success()
        && let Some(id) = text("/payments/id")
    {
        return ChargeAnswer::Created {
            provider_payment_id: id,
            succeeded: false,
        };
    }
    let conflict = body
        .pointer("/error/errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|error| error["reason"] == "idempotent_creation_conflict")
        .and_then(|error| error.pointer("/links/conflicting_resource_id"))
        .and_then(Value::as_str);
    if posted.status == StatusCode::CONFLICT
        && let Some(id) = conflict
    {
        return ChargeAnswer::Created {
            provider_payment_id: id.to_owned(),
            succeeded: false,
        };
    }
    ChargeAnswer::Refused {
        detail: format!(
            "GoCardless answered {}: {}",
            posted.status,
            text("/error/message").unwrap_or_else(|| posted.excerpt())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::charge::examples::{answered as posted, request};

    #[test]
    fn a_payment_is_created_against_the_mandate_and_a_repeated_key_names_the_first() {
        let request = request("MD0001");
        let body = body(&request).unwrap();
        assert_eq!(body["payments"]["links"]["mandate"], "MD0001");
        assert_eq!(body["payments"]["amount"], 12_500);
        assert_eq!(body["payments"]["currency"], "GBP");
        assert_eq!(
            body["payments"]["metadata"]["settle_charge"],
            "settle-charge-0123"
        );
        // The documented answers: 201 with the payment; 409 naming the first one.
        let created = json!({"payments": {"id": "PM0001", "status": "pending_submission",
            "amount": 12_500, "currency": "GBP", "links": {"mandate": "MD0001"}}});
        let first = ChargeAnswer::Created {
            provider_payment_id: "PM0001".into(),
            succeeded: false,
        };
        assert_eq!(answer(&posted(201, created)), first);
        let conflict = json!({"error": {"type": "invalid_state", "code": 409,
            "message": "A resource has already been created with this idempotency key",
            "errors": [{"reason": "idempotent_creation_conflict",
                "message": "A resource has already been created with this idempotency key",
                "links": {"conflicting_resource_id": "PM0001"}}]}});
        assert_eq!(answer(&posted(409, conflict)), first);
        assert!(matches!(
            answer(&posted(429, Value::Null)),
            ChargeAnswer::Later { .. }
        ));
        let inactive = json!({"error": {"type": "invalid_state", "code": 422,
            "message": "Mandate is inactive",
            "errors": [{"reason": "mandate_is_inactive", "message": "Mandate is inactive"}]}});
        assert_eq!(
            answer(&posted(422, inactive)),
            ChargeAnswer::Refused {
                detail: "GoCardless answered 422 Unprocessable Entity: Mandate is inactive".into()
            }
        );
    }
}
