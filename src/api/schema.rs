//! The OpenAPI schemas of the core's types that appear in the API's JSON. The core knows nothing
//! of HTTP; the API describes its types here, from the types' own names (strum's list of
//! variants, the same names serde writes), so a schema can never list a value the API would not
//! take or give.

use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use crate::provider::{PaymentProvider, Provider};
use crate::reconcile::dispute::DisputeStatus;
use crate::reconcile::invoice::InvoiceStatus;
use crate::reconcile::ledger::{MovementKind, RefundState};
use crate::reconcile::payment::PaymentStatus;
use crate::reconcile::payment_methods::{Gateway, MethodStatus, MethodType};
use crate::reconcile::payout::PayoutStatus;
use crate::reconcile::refund::RefundStatus;
use crate::reconcile::settings::{EffectiveSettings, SettingsSource, Sourced};

/// A string schema listing the type's names.
macro_rules! names_schema {
    ($($ty:ty),* $(,)?) => {$(
        impl utoipa::PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                let names = <$ty as strum::VariantArray>::VARIANTS
                    .iter()
                    .map(|variant| -> &'static str { (*variant).into() });
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(names))
                    .into()
            }
        }
        impl ToSchema for $ty {}
    )*};
}

names_schema!(
    Provider,
    PaymentProvider,
    PaymentStatus,
    InvoiceStatus,
    MethodType,
    MethodStatus,
    Gateway,
    SettingsSource,
    MovementKind,
    RefundState,
    RefundStatus,
    DisputeStatus,
    PayoutStatus,
);

/// The effective payment settings of an invoice, each field with the level it came from.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectivePaymentSettings {
    pub payment_provider: SourcedValue<PaymentProvider>,
    pub auto_charge: SourcedValue<bool>,
}

/// A value and where it came from: `INVOICE`, `BILLING_SCHEDULE`, `CUSTOMER` or
/// `ACCOUNT_DEFAULT`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourcedValue<T> {
    pub value: T,
    pub source: SettingsSource,
}

impl<T> From<Sourced<T>> for SourcedValue<T> {
    fn from(sourced: Sourced<T>) -> Self {
        Self {
            value: sourced.value,
            source: sourced.source,
        }
    }
}

impl From<EffectiveSettings> for EffectivePaymentSettings {
    fn from(effective: EffectiveSettings) -> Self {
        Self {
            payment_provider: effective.payment_provider.into(),
            auto_charge: effective.auto_charge.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema's names are the ones serde writes, for every enum the API shows.
    fn names_match_serde<T>()
    where
        T: strum::VariantArray + Into<&'static str> + Copy + Serialize,
    {
        for variant in T::VARIANTS.iter().copied() {
            let name: &'static str = variant.into();
            assert_eq!(serde_json::to_value(variant).unwrap(), name);
        }
    }

    #[test]
    fn every_schema_lists_the_names_serde_writes() {
        names_match_serde::<Provider>();
        names_match_serde::<PaymentProvider>();
        names_match_serde::<MovementKind>();
        names_match_serde::<RefundState>();
        names_match_serde::<RefundStatus>();
        names_match_serde::<DisputeStatus>();
        names_match_serde::<PaymentStatus>();
        names_match_serde::<InvoiceStatus>();
        names_match_serde::<MethodType>();
        names_match_serde::<MethodStatus>();
        names_match_serde::<Gateway>();
        names_match_serde::<SettingsSource>();
        names_match_serde::<PayoutStatus>();
    }
}
