//! GoCardless: its webhooks (`wire`), how its events read (`interpret`), its payout items
//! (`payout`) and its API (`api`), behind settle's `Rules` for a provider.

pub mod api;
pub mod charge;
mod dashboard;
pub mod interpret;
pub mod payout;
pub mod wire;

use secrecy::SecretString;
use serde_json::Value;

pub use self::wire::{MAX_BATCH, SIGNATURE_HEADER, sign};
use super::rules::{AccountIdShape, Acknowledgement, Rules, SignatureError};
use crate::config::{Settings, WebhookSettings};
use crate::provider::{GoCardlessCollectedAt, IncomingEvent, WireError};
use crate::reconcile::events::{DomainEvent, EventError, PayoutEvent};
use crate::reconcile::payout::Line;
use crate::reconcile::routing::Claimed;

pub struct GoCardless;

impl Rules for GoCardless {
    fn signature_header(&self) -> &'static str {
        SIGNATURE_HEADER
    }

    fn check_signature_header(&self, header: &str) -> Result<(), SignatureError> {
        wire::parse_signature_header(header).map(drop)
    }

    fn platform_secrets<'a>(&self, webhooks: &'a WebhookSettings) -> &'a [SecretString] {
        &webhooks.gocardless_secrets
    }

    fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        secrets: &[SecretString],
        _webhooks: &WebhookSettings,
        _now: i64,
    ) -> Result<(), SignatureError> {
        // No timestamp: replay protection is the worker's event-id dedupe.
        wire::verify(header, body, secrets)
    }

    fn invalid_signature_status(&self) -> u16 {
        498 // GoCardless's documented convention for a bad signature
    }

    fn acknowledgement(&self) -> Acknowledgement {
        Acknowledgement::NoContent
    }

    fn events(&self, body: &[u8]) -> Result<Vec<IncomingEvent>, WireError> {
        wire::events(body)
    }

    fn claimed(&self, body: &[u8]) -> Claimed {
        wire::claimed(body)
    }

    fn interpret(
        &self,
        event: &Value,
        collected_at: GoCardlessCollectedAt,
    ) -> Result<DomainEvent, EventError> {
        interpret::interpret(event, collected_at)
    }

    fn listed_payout(&self, payout: &Value) -> Result<Option<PayoutEvent>, EventError> {
        interpret::listed_payout(payout)
    }

    fn payout_line(&self, line: &Value) -> Result<Line, String> {
        payout::line_of(line)
    }

    fn account_id(&self) -> AccountIdShape {
        AccountIdShape {
            prefix: "OR",
            described: "a GoCardless organisation id (OR…)",
        }
    }

    fn payment_id_prefix(&self) -> &'static str {
        "PM"
    }

    fn object_ids(&self, event: &Value) -> Vec<String> {
        let mut ids = Vec::new();
        crate::providers::lookup::ids_at(event, &["id"], &mut ids);
        if let Some(links) = event.get("links") {
            let fields = [
                "payment",
                "mandate",
                "refund",
                "payout",
                "subscription",
                "customer",
            ];
            crate::providers::lookup::ids_at(links, &fields, &mut ids);
        }
        ids
    }

    fn dashboard_url(&self, event: &Value, test_mode: bool) -> Option<String> {
        dashboard::url(event, test_mode)
    }

    fn api_base<'a>(&self, settings: &'a Settings) -> &'a str {
        &settings.gocardless.api_base
    }

    fn platform_api_key<'a>(&self, settings: &'a Settings) -> &'a SecretString {
        &settings.gocardless.access_token
    }

    fn api_key_variable(&self) -> &'static str {
        "GOCARDLESS_ACCESS_TOKEN"
    }

    fn platform_key_reads_connections(&self) -> bool {
        false // a partner organisation is read with its own token
    }
}
