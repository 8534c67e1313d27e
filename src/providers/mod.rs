//! Each payment provider's knowledge, one folder per provider (`stripe/`, `gocardless/`): its
//! webhooks' signatures and wire format, how its events and payouts read, its ids, and its API
//! (what backfill and the payout lister read). `rules::Rules` is what a provider must say;
//! `table` names each provider's; `source` is where an account's API is read from and with
//! which key; `client` is the HTTP client all API reads share.
//!
//! Below its readers (ingress, the worker, backfill, payouts, the API and ops), above the core:
//! a provider's interpreter turns its JSON into the core's `DomainEvent`s.

pub mod charge;
pub mod client;
pub mod gocardless;
pub mod lookup;
pub mod rules;
pub mod signature;
pub mod source;
pub mod stripe;
pub mod table;

pub use self::client::{ApiClient, ProviderApiError, Window};
pub use self::rules::{Rules, SignatureError};
pub use self::table::rules;

use crate::provider::Provider;
use crate::reconcile::routing::{self, Addressed};

/// Whose event this is: what the event claims (its provider reads it), and the connection whose
/// endpoint it came through, if any.
pub fn address(provider: Provider, body: &[u8], connection: Option<&str>) -> Addressed {
    routing::address(rules(provider).claimed(body), connection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::routing::Address;

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
}
