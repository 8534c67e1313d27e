//! The table of providers: which folder knows each `Provider`.

use super::gocardless::GoCardless;
use super::rules::Rules;
use super::stripe::Stripe;
use crate::provider::Provider;

/// What settle knows of `provider`.
pub fn rules(provider: Provider) -> &'static dyn Rules {
    match provider {
        Provider::Stripe => &Stripe,
        Provider::GoCardless => &GoCardless,
    }
}
