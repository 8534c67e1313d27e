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

use super::events::storable;

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

/// What an event itself says about whose it is, read by its provider's wire format
/// (`providers::*::wire::claimed`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// The provider account it names: a Stripe Connect `acct_…` (from `account`, or the last
    /// account of `context`), a GoCardless partner organisation `OR…`.
    pub account: Option<String>,
    /// Stripe's `livemode`; `None` when the event does not say (GoCardless).
    pub livemode: Option<bool>,
}

/// The address of one event, from what it claims and the connection whose endpoint it came
/// through, if any. An envelope that does not parse claims nothing: it is addressed to the
/// platform here, and the interpreter dead-letters it `unparseable` next.
pub fn address(claimed: Claimed, connection: Option<&str>) -> Addressed {
    let connected = claimed.account.filter(|account| !account.is_empty());
    let address = match (connection, connected) {
        // Looked up in the database, which refuses a NUL even in a query's parameter.
        (Some(connection), _) => Address::Connection(storable(connection).into_owned()),
        (None, Some(connected)) => Address::Connected(storable(&connected).into_owned()),
        (None, None) => Address::Platform,
    };
    Addressed {
        address,
        livemode: claimed.livemode,
    }
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
