//! Merging one customer into another (`POST /customers/{id}/merge`): what the survivor keeps,
//! what it takes from the merged customer, and what refuses the merge. Pure: the repository reads
//! both sides, this decides, the repository writes.
//!
//! The survivor's own fields win. It takes the merged customer's external ids, aliases and
//! metadata keys it lacks, its Stripe or GoCardless customer id when it has none of that provider
//! (otherwise the merged row keeps the id and points at the survivor, so a provider event naming
//! it still finds the survivor), and its payment settings when it has none. Refused, with every
//! reason named: payment settings on both that differ, a different method on file on both, or
//! lists grown past the API's bounds.

use std::collections::BTreeMap;

use crate::provider::Provider;

/// A customer-level payment setting: the provider (`STRIPE`, `GOCARDLESS`, `NONE`) and auto-charge,
/// each `None` where the level leaves it to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub payment_provider: Option<String>,
    pub auto_charge: Option<bool>,
}

/// A customer's method on file: its id, gateway and reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnFile {
    pub id: String,
    pub gateway: String,
    pub reference_id: String,
}

/// What the merge reads of each customer.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub id: String,
    /// `{key, value}` pairs, as the API stores them.
    pub external_ids: Vec<(String, String)>,
    pub aliases: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub stripe_customer_id: Option<String>,
    pub gocardless_customer_id: Option<String>,
    pub settings: Option<Settings>,
    pub on_file: Option<OnFile>,
}

/// What happens to the merged customer's payment settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsMove {
    /// It had none.
    Nothing,
    /// The survivor had none: they become the survivor's.
    Move,
    /// Both had the same: the merged customer's go.
    Drop,
}

/// The merge to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub external_ids: Vec<(String, String)>,
    pub aliases: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// The providers whose customer id moves to the survivor (it had none of that provider).
    pub provider_ids_taken: Vec<Provider>,
    pub settings: SettingsMove,
}

/// The bounds the survivor's lists keep (the API's: `externalIds`, `customerAliases`, `metadata`).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub list: usize,
    pub metadata_keys: usize,
}

/// Decides the merge of `merged` into `survivor`, or every reason it is refused.
pub fn plan(survivor: &Side, merged: &Side, bounds: Bounds) -> Result<Plan, Vec<String>> {
    let mut refusals = Vec::new();
    let settings = match (&survivor.settings, &merged.settings) {
        (_, None) => SettingsMove::Nothing,
        (None, Some(_)) => SettingsMove::Move,
        (Some(kept), Some(other)) if kept == other => SettingsMove::Drop,
        (Some(kept), Some(other)) => {
            refusals.push(format!(
                "payment settings differ: customer {} has {}, customer {} has {}; make them the same first (PUT /payments/settings/customers/{})",
                survivor.id,
                describe(kept),
                merged.id,
                describe(other),
                merged.id,
            ));
            SettingsMove::Nothing
        }
    };
    if let (Some(kept), Some(other)) = (&survivor.on_file, &merged.on_file)
        && (kept.gateway != other.gateway || kept.reference_id != other.reference_id)
    {
        refusals.push(format!(
            "both have a method on file: customer {} has {} ({} {}), customer {} has {} ({} {}); remove one first (DELETE /customers/{{id}}/payment-methods/{{method}})",
            survivor.id,
            kept.id,
            kept.gateway,
            kept.reference_id,
            merged.id,
            other.id,
            other.gateway,
            other.reference_id,
        ));
    }
    let mut external_ids = survivor.external_ids.clone();
    let provider_key = |key: &str| match key {
        "Stripe" => Some(Provider::Stripe),
        "GoCardless" => Some(Provider::GoCardless),
        _ => None,
    };
    let mut provider_ids_taken = Vec::new();
    for (key, value) in &merged.external_ids {
        if external_ids.iter().any(|(k, v)| k == key && v == value) {
            continue;
        }
        match provider_key(key) {
            // The survivor has its own id of that provider: the merged row keeps this one.
            Some(_) if external_ids.iter().any(|(k, _)| k == key) => continue,
            Some(provider) => provider_ids_taken.push(provider),
            None => {}
        }
        external_ids.push((key.clone(), value.clone()));
    }
    // A provider id set on the row without an external id (none today) moves the same way.
    for (provider, kept, other) in [
        (
            Provider::Stripe,
            &survivor.stripe_customer_id,
            &merged.stripe_customer_id,
        ),
        (
            Provider::GoCardless,
            &survivor.gocardless_customer_id,
            &merged.gocardless_customer_id,
        ),
    ] {
        if kept.is_none() && other.is_some() && !provider_ids_taken.contains(&provider) {
            provider_ids_taken.push(provider);
        }
    }
    let mut aliases = survivor.aliases.clone();
    for alias in &merged.aliases {
        if !aliases.contains(alias) {
            aliases.push(alias.clone());
        }
    }
    let mut metadata = merged.metadata.clone();
    metadata.extend(survivor.metadata.clone());
    for (field, count, max) in [
        ("external ids", external_ids.len(), bounds.list),
        ("customer aliases", aliases.len(), bounds.list),
        ("metadata keys", metadata.len(), bounds.metadata_keys),
    ] {
        if count > max {
            refusals.push(format!(
                "together they would have {count} {field}, at most {max}; remove some first"
            ));
        }
    }
    if !refusals.is_empty() {
        return Err(refusals);
    }
    Ok(Plan {
        external_ids,
        aliases,
        metadata,
        provider_ids_taken,
        settings,
    })
}

fn describe(settings: &Settings) -> String {
    format!(
        "paymentProvider {} and autoCharge {}",
        settings.payment_provider.as_deref().unwrap_or("unset"),
        settings
            .auto_charge
            .map_or("unset".to_owned(), |on| on.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        list: 3,
        metadata_keys: 2,
    };

    fn side(id: &str) -> Side {
        Side {
            id: id.into(),
            ..Side::default()
        }
    }

    fn ids(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_survivor_takes_what_it_lacks_and_keeps_its_own() {
        let mut kept = side("a");
        kept.external_ids = ids(&[("Stripe", "cus_A"), ("crm", "1")]);
        kept.stripe_customer_id = Some("cus_A".into());
        kept.metadata = BTreeMap::from([("tier".into(), "gold".into())]);
        let mut merged = side("b");
        merged.external_ids = ids(&[("Stripe", "cus_B"), ("GoCardless", "CU1"), ("crm", "1")]);
        merged.stripe_customer_id = Some("cus_B".into());
        merged.gocardless_customer_id = Some("CU1".into());
        merged.metadata = BTreeMap::from([("tier".into(), "silver".into())]);
        merged.settings = Some(Settings {
            payment_provider: Some("GOCARDLESS".into()),
            auto_charge: Some(true),
        });
        let plan = plan(&kept, &merged, BOUNDS).unwrap();
        assert_eq!(
            plan.external_ids,
            ids(&[("Stripe", "cus_A"), ("crm", "1"), ("GoCardless", "CU1")])
        );
        assert_eq!(plan.provider_ids_taken, vec![Provider::GoCardless]);
        assert_eq!(plan.metadata["tier"], "gold");
        assert_eq!(plan.settings, SettingsMove::Move);
    }

    #[test]
    fn differing_settings_and_two_methods_on_file_are_both_named() {
        let settings = |provider: &str| {
            Some(Settings {
                payment_provider: Some(provider.into()),
                auto_charge: None,
            })
        };
        let on_file = |id: &str, reference: &str| {
            Some(OnFile {
                id: id.into(),
                gateway: "stripe".into(),
                reference_id: reference.into(),
            })
        };
        let mut kept = side("a");
        kept.settings = settings("STRIPE");
        kept.on_file = on_file("pm_1", "cus_A/pm_1");
        let mut merged = side("b");
        merged.settings = settings("GOCARDLESS");
        merged.on_file = on_file("pm_2", "cus_B/pm_2");
        let refusals = plan(&kept, &merged, BOUNDS).unwrap_err();
        assert_eq!(refusals.len(), 2, "{refusals:?}");
        assert!(
            refusals[0].contains("paymentProvider STRIPE"),
            "{refusals:?}"
        );
        assert!(refusals[1].contains("pm_1") && refusals[1].contains("pm_2"));
        // The same settings and the same method are no conflict.
        merged.settings = settings("STRIPE");
        merged.on_file = on_file("pm_9", "cus_A/pm_1");
        assert_eq!(
            plan(&kept, &merged, BOUNDS).unwrap().settings,
            SettingsMove::Drop
        );
    }

    #[test]
    fn lists_past_their_bounds_refuse_the_merge() {
        let mut kept = side("a");
        kept.aliases = vec!["x".into(), "y".into()];
        let mut merged = side("b");
        merged.aliases = vec!["y".into(), "z".into(), "w".into()];
        let refusals = plan(&kept, &merged, BOUNDS).unwrap_err();
        assert!(refusals[0].contains("4 customer aliases, at most 3"));
    }
}
