//! What settle knows of a payment provider, as one trait: each provider's folder
//! (`providers::stripe`, `providers::gocardless`) implements it, and `providers::table` names
//! the implementation of each `Provider`. Adding a provider is adding a folder and a line there.

use secrecy::SecretString;
use serde_json::Value;

use crate::config::{Settings, WebhookSettings};
use crate::provider::{GoCardlessCollectedAt, IncomingEvent, WireError};
use crate::reconcile::events::{DomainEvent, EventError, PayoutEvent};
use crate::reconcile::payout::Line;
use crate::reconcile::routing::Claimed;

/// Why a signature was refused. The categories are safe to show the caller: none reveals secret
/// material or how close a forgery came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is missing")]
    MissingHeader,
    #[error("the signature header is malformed: {0}")]
    MalformedHeader(&'static str),
    #[error("no signature matches a configured secret")]
    Mismatch,
    #[error("the signature timestamp is outside the tolerance")]
    OutsideTolerance,
    #[error("no webhook secret is configured for this provider")]
    NotConfigured,
}

impl SignatureError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader => "missing_signature",
            Self::MalformedHeader(_) => "malformed_signature",
            Self::Mismatch => "signature_mismatch",
            Self::OutsideTolerance => "timestamp_outside_tolerance",
            Self::NotConfigured => "not_configured",
        }
    }
}

/// How a provider's webhook is answered once every event is queued.
pub enum Acknowledgement {
    /// 200 with `{"queued": n}` (Stripe's SDKs read any 2xx).
    Counted,
    /// 204 (GoCardless documents it for a processed batch).
    NoContent,
}

/// A provider's account id as the provider writes it (`acct_…`, `OR…`).
pub struct AccountIdShape {
    pub prefix: &'static str,
    /// For the error that refuses another: "a Stripe account id (acct_…)".
    pub described: &'static str,
}

/// One provider's knowledge: its webhooks (signature, wire format, answers), how its events
/// read (interpretation, routing, payouts), its ids, and where its API key is configured.
pub trait Rules: Sync {
    // Webhooks.
    /// The header that carries the signature.
    fn signature_header(&self) -> &'static str;
    /// The header's shape, checked before the body is read.
    fn check_signature_header(&self, header: &str) -> Result<(), SignatureError>;
    /// The secrets the platform's endpoint (`/webhooks/{provider}`) verifies with.
    fn platform_secrets<'a>(&self, webhooks: &'a WebhookSettings) -> &'a [SecretString];
    /// Verifies a body against `secrets` at `now` (Unix seconds).
    fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        secrets: &[SecretString],
        webhooks: &WebhookSettings,
        now: i64,
    ) -> Result<(), SignatureError>;
    /// The HTTP status a refused signature is answered with.
    fn invalid_signature_status(&self) -> u16;
    fn acknowledgement(&self) -> Acknowledgement;
    /// A webhook body (or one listed event) split into its events.
    fn events(&self, body: &[u8]) -> Result<Vec<IncomingEvent>, WireError>;

    // Events.
    /// Whose account an event says it is for, and the mode it claims.
    fn claimed(&self, body: &[u8]) -> Claimed;
    /// One event (its exact JSON) as settle reads it.
    fn interpret(
        &self,
        event: &Value,
        collected_at: GoCardlessCollectedAt,
    ) -> Result<DomainEvent, EventError>;
    /// A payout as the provider's payout list returns it, read as the event its state stands
    /// for; `None` while it is not paid yet.
    fn listed_payout(&self, payout: &Value) -> Result<Option<PayoutEvent>, EventError>;
    /// One line of a payout as the provider lists it.
    fn payout_line(&self, line: &Value) -> Result<Line, String>;

    // Ids.
    fn account_id(&self) -> AccountIdShape;
    /// The prefix of the provider's payment ids (`pi_`, `PM`).
    fn payment_id_prefix(&self) -> &'static str;
    /// The ids an operator finds an event by (`lookup`): its own, its object's, and the
    /// payment, mandate, refund or payout it names.
    fn object_ids(&self, event: &Value) -> Vec<String>;
    /// The provider's dashboard page of what an event is about (its object, else the event);
    /// `test_mode` for an event whose connection is in test mode, when the event does not say.
    fn dashboard_url(&self, event: &Value, test_mode: bool) -> Option<String>;

    // The API.
    /// The API's base URL in the settings.
    fn api_base<'a>(&self, settings: &'a Settings) -> &'a str;
    /// The platform's API key in the settings (empty when none is configured).
    fn platform_api_key<'a>(&self, settings: &'a Settings) -> &'a SecretString;
    /// The variable that configures it, for the error that says none is.
    fn api_key_variable(&self) -> &'static str;
    /// Whether the platform's key reads a connected account's API (Stripe Connect's
    /// `Stripe-Account`), so a connection needs no key of its own.
    fn platform_key_reads_connections(&self) -> bool;
}
