//! Stripe: its webhooks (`wire`), how its events read (`interpret`), its payouts' balance
//! transactions (`payout`) and its API (`api`), behind settle's `Rules` for a provider.

pub mod api;
pub mod charge;
mod dashboard;
pub mod interpret;
pub mod payout;
pub mod wire;

use secrecy::SecretString;
use serde_json::Value;

pub use self::wire::{SIGNATURE_HEADER, sign};
use super::rules::{AccountIdShape, Acknowledgement, Rules, SignatureError};
use crate::config::{Settings, WebhookSettings};
use crate::provider::{GoCardlessCollectedAt, IncomingEvent, WireError};
use crate::reconcile::events::{DomainEvent, EventError, PayoutEvent};
use crate::reconcile::payout::Line;
use crate::reconcile::routing::Claimed;

pub struct Stripe;

impl Rules for Stripe {
    fn signature_header(&self) -> &'static str {
        SIGNATURE_HEADER
    }

    fn check_signature_header(&self, header: &str) -> Result<(), SignatureError> {
        wire::parse_signature_header(header).map(drop)
    }

    fn platform_secrets<'a>(&self, webhooks: &'a WebhookSettings) -> &'a [SecretString] {
        &webhooks.stripe_secrets
    }

    fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        secrets: &[SecretString],
        webhooks: &WebhookSettings,
        now: i64,
    ) -> Result<(), SignatureError> {
        wire::verify(header, body, secrets, webhooks.stripe_tolerance_secs, now)
    }

    fn invalid_signature_status(&self) -> u16 {
        400 // what Stripe's SDKs answer
    }

    fn acknowledgement(&self) -> Acknowledgement {
        Acknowledgement::Counted
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
        _collected_at: GoCardlessCollectedAt,
    ) -> Result<DomainEvent, EventError> {
        interpret::interpret(event)
    }

    fn listed_payout(&self, payout: &Value) -> Result<Option<PayoutEvent>, EventError> {
        interpret::listed_payout(payout)
    }

    fn payout_line(&self, line: &Value) -> Result<Line, String> {
        payout::line_of(line)
    }

    fn account_id(&self) -> AccountIdShape {
        AccountIdShape {
            prefix: "acct_",
            described: "a Stripe account id (acct_…)",
        }
    }

    fn payment_id_prefix(&self) -> &'static str {
        "pi_"
    }

    fn object_ids(&self, event: &Value) -> Vec<String> {
        let mut ids = Vec::new();
        crate::providers::lookup::ids_at(event, &["id"], &mut ids);
        if let Some(object) = event.pointer("/data/object") {
            let fields = ["id", "payment_intent", "charge", "latest_charge", "payout"];
            crate::providers::lookup::ids_at(object, &fields, &mut ids);
        }
        ids
    }

    fn dashboard_url(&self, event: &Value, test_mode: bool) -> Option<String> {
        dashboard::url(event, test_mode)
    }

    fn api_base<'a>(&self, settings: &'a Settings) -> &'a str {
        &settings.stripe.api_base
    }

    fn platform_api_key<'a>(&self, settings: &'a Settings) -> &'a SecretString {
        &settings.stripe.api_key
    }

    fn api_key_variable(&self) -> &'static str {
        "STRIPE_API_KEY"
    }

    fn platform_key_reads_connections(&self) -> bool {
        true // Stripe Connect: `Stripe-Account`
    }
}
