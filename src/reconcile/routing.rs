//! Whose event is this? The address an event carries, read from the envelope the provider wraps
//! it in and from the endpoint it came through. Pure: the worker resolves the address to an
//! account against the stored connections (`repository::accounts::resolve`).
//!
//! | came through | the event says | address |
//! |---|---|---|
//! | `/webhooks/{provider}/{connection}` | anything | that connection |
//! | `/webhooks/stripe` (the platform's) | `account: acct_…` (Connect; current versions add `context`) | the connection for that Stripe account |
//! | `/webhooks/stripe` | no `account`, `context: acct_…` or `…/acct_…` (an organisation's account) | the connection for the last account in `context` |
//! | `/webhooks/stripe` | neither | the platform's own account (the configured default) |
//! | `/webhooks/gocardless` (the partner app's) | `links.organisation: OR…` | the connection for that organisation |
//! | `/webhooks/gocardless` | no organisation | the default account |
//!
//! Stripe stamps every event with `livemode`; the connection's mode must match it, or the event
//! is dead-lettered `livemode_mismatch` (a test-mode event must never move live money). A
//! GoCardless event names no mode (sandbox and live are separate hosts with separate ids), so
//! its connection's mode is not checked.

use serde::Deserialize;

use super::events::storable;
use crate::provider::Provider;

/// Where an event belongs, before it is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// The platform's own event: the default account.
    Platform,
    /// Through a connection's own endpoint.
    Connection(String),
    /// Through the platform endpoint, for a connected account (Stripe `acct_…`) or a partner
    /// organisation (GoCardless `OR…`).
    Connected(String),
}

/// An event's address and the mode it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressed {
    pub address: Address,
    /// Stripe's `livemode`; `None` when the event does not say (GoCardless).
    pub livemode: Option<bool>,
}

#[derive(Deserialize)]
struct StripeEnvelope {
    account: Option<String>,
    context: Option<String>,
    livemode: Option<bool>,
}

#[derive(Deserialize)]
struct GoCardlessEnvelope {
    links: Option<GoCardlessLinks>,
}

#[derive(Deserialize)]
struct GoCardlessLinks {
    organisation: Option<String>,
}

/// Reads the address of one event (its exact JSON), given the connection whose endpoint it came
/// through, if any. An envelope that does not parse is the interpreter's to refuse: it is
/// addressed to the platform here, and dead-lettered `unparseable` next.
pub fn address(provider: Provider, body: &[u8], connection: Option<&str>) -> Addressed {
    let non_empty = |value: Option<String>| value.filter(|v| !v.is_empty());
    let (connected, livemode) = match provider {
        Provider::Stripe => match serde_json::from_slice::<StripeEnvelope>(body) {
            Ok(envelope) => {
                let from_context = non_empty(envelope.context)
                    .and_then(|context| context.rsplit('/').next().map(str::to_owned))
                    .filter(|account| !account.is_empty());
                (
                    non_empty(envelope.account).or(from_context),
                    envelope.livemode,
                )
            }
            Err(_) => (None, None),
        },
        Provider::GoCardless => {
            let organisation = serde_json::from_slice::<GoCardlessEnvelope>(body)
                .ok()
                .and_then(|envelope| envelope.links?.organisation);
            (non_empty(organisation), None)
        }
    };
    let address = match (connection, connected) {
        // Looked up in the database, which refuses a NUL even in a query's parameter.
        (Some(connection), _) => Address::Connection(storable(connection).into_owned()),
        (None, Some(connected)) => Address::Connected(storable(&connected).into_owned()),
        (None, None) => Address::Platform,
    };
    Addressed { address, livemode }
}

/// A connection's mode as stored (`live` / `test`) against the event's `livemode`: whether the
/// event may be applied for it.
pub fn mode_matches(connection_mode: &str, livemode: Option<bool>) -> bool {
    match livemode {
        None => true,
        Some(live) => (connection_mode == "live") == live,
    }
}

/// Why an event has no account to be applied for. Either way it is dead-lettered, never
/// dropped: `settle dlq replay --reason …` applies it once the connection exists or is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrouted {
    /// No connection has that id, or is for that provider account.
    UnknownAccount,
    /// The connection is live and the event is a test-mode one, or the other way round.
    LivemodeMismatch,
}

impl Unrouted {
    /// The dead-letter reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::UnknownAccount => "unknown_account",
            Self::LivemodeMismatch => "livemode_mismatch",
        }
    }
}

/// Which of the connections found for an address (given by their modes) the event is applied
/// for: the one whose mode matches it.
pub fn choose(modes: &[&str], livemode: Option<bool>) -> Result<usize, Unrouted> {
    if modes.is_empty() {
        return Err(Unrouted::UnknownAccount);
    }
    modes
        .iter()
        .position(|mode| mode_matches(mode, livemode))
        .ok_or(Unrouted::LivemodeMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripe(body: &str) -> Addressed {
        address(Provider::Stripe, body.as_bytes(), None)
    }

    #[test]
    fn stripe_events_are_addressed_by_account_then_context() {
        let cases = [
            (r#"{"livemode":false}"#, Address::Platform, Some(false)),
            (
                r#"{"account":"acct_1","livemode":true}"#,
                Address::Connected("acct_1".into()),
                Some(true),
            ),
            (
                r#"{"account":"acct_1","context":"acct_1","livemode":false}"#,
                Address::Connected("acct_1".into()),
                Some(false),
            ),
            (
                r#"{"context":"acct_org/acct_2"}"#,
                Address::Connected("acct_2".into()),
                None,
            ),
            (r#"{"account":"","context":null}"#, Address::Platform, None),
            ("not json", Address::Platform, None),
        ];
        for (body, expected, livemode) in cases {
            let addressed = stripe(body);
            assert_eq!(addressed.address, expected, "{body}");
            assert_eq!(addressed.livemode, livemode, "{body}");
        }
    }

    #[test]
    fn gocardless_events_are_addressed_by_organisation() {
        let fixture = include_bytes!("../../tests/fixtures/gocardless-webhook.json");
        let batch: serde_json::Value = serde_json::from_slice(fixture).unwrap();
        let event = serde_json::to_vec(&batch["events"][0]).unwrap();
        assert_eq!(
            address(Provider::GoCardless, &event, None),
            Addressed {
                address: Address::Connected("OR00001JZWPCMA".into()),
                livemode: None
            }
        );
        assert_eq!(
            address(Provider::GoCardless, br#"{"links":{}}"#, None).address,
            Address::Platform
        );
    }

    #[test]
    fn a_connection_endpoint_decides_whatever_the_event_says() {
        let addressed = address(
            Provider::Stripe,
            br#"{"account":"acct_1","livemode":true}"#,
            Some("conn_1"),
        );
        assert_eq!(addressed.address, Address::Connection("conn_1".into()));
        assert_eq!(addressed.livemode, Some(true));
    }

    #[test]
    fn the_connection_in_the_events_mode_is_chosen() {
        assert_eq!(choose(&[], Some(true)), Err(Unrouted::UnknownAccount));
        assert_eq!(
            choose(&["live"], Some(false)),
            Err(Unrouted::LivemodeMismatch)
        );
        assert_eq!(choose(&["live", "test"], Some(false)), Ok(1));
        assert_eq!(choose(&["live", "test"], Some(true)), Ok(0));
        assert_eq!(choose(&["test"], None), Ok(0));
    }

    #[test]
    fn modes() {
        assert!(mode_matches("live", Some(true)));
        assert!(mode_matches("test", Some(false)));
        assert!(!mode_matches("live", Some(false)));
        assert!(!mode_matches("test", Some(true)));
        assert!(mode_matches("test", None));
    }
}
