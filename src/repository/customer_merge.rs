//! Writes a merge of one customer into another, as `reconcile::customer_merge` plans it, in the
//! caller's transaction: the merged customer's invoices (their payments with them), billing
//! schedules, payment methods and payment settings become the survivor's, and it is deleted,
//! pointing at the survivor.

use std::collections::BTreeMap;

use sqlx::PgConnection;
use sqlx::types::Json;

use super::customers::{self, CustomerRow};
use crate::provider::Provider;
use crate::reconcile::customer_merge::{self, Bounds, OnFile, Plan, Settings, SettingsMove, Side};

/// What moved to the survivor.
#[derive(Debug, Clone)]
pub struct Merged {
    pub survivor: CustomerRow,
    pub invoice_ids: Vec<String>,
    pub billing_schedule_ids: Vec<String>,
    pub payment_method_ids: Vec<String>,
    pub settings_moved: bool,
}

/// Why a merge cannot happen.
#[derive(Debug)]
pub enum Refused {
    /// Either customer is not the account's (or was deleted).
    NotFound(String),
    /// Conflicts the caller can resolve, each named.
    Conflicts(Vec<String>),
}

/// Merges `merged_id` into `survivor_id`. Both are locked first, in id order, as every writer of
/// a customer's methods locks it, so a provider event for either waits for the merge.
pub async fn merge(
    tx: &mut PgConnection,
    account_id: &str,
    survivor_id: &str,
    merged_id: &str,
    bounds: Bounds,
) -> sqlx::Result<Result<Merged, Refused>> {
    let mut ids = [survivor_id, merged_id];
    ids.sort_unstable();
    for id in ids {
        customers::lock(tx, account_id, id).await?;
    }
    let mut sides = Vec::with_capacity(2);
    for id in [survivor_id, merged_id] {
        match customers::get(&mut *tx, account_id, id).await? {
            Some(row) => sides.push(side(tx, row).await?),
            None => return Ok(Err(Refused::NotFound(id.to_owned()))),
        }
    }
    let (survivor, merged) = (&sides[0], &sides[1]);
    let plan = match customer_merge::plan(&survivor.0, &merged.0, bounds) {
        Ok(plan) => plan,
        Err(conflicts) => return Ok(Err(Refused::Conflicts(conflicts))),
    };
    let merged_row = &merged.1;
    let payment_method_ids = move_methods(tx, account_id, survivor_id, merged_id).await?;
    let settings_moved =
        move_settings(tx, account_id, survivor_id, merged_id, plan.settings).await?;
    let invoice_ids = repoint(tx, "invoices", account_id, survivor_id, merged_id).await?;
    let billing_schedule_ids =
        repoint(tx, "billing_schedules", account_id, survivor_id, merged_id).await?;
    let survivor = write_customers(tx, account_id, survivor_id, merged_row, &plan).await?;
    Ok(Ok(Merged {
        survivor,
        invoice_ids: sorted(invoice_ids),
        billing_schedule_ids: sorted(billing_schedule_ids),
        payment_method_ids: sorted(payment_method_ids),
        settings_moved,
    }))
}

/// Gives the merged customer's rows of `table` (its invoices, its billing schedules) to the
/// survivor; their ids.
async fn repoint(
    tx: &mut PgConnection,
    table: &str,
    account_id: &str,
    survivor_id: &str,
    merged_id: &str,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(&format!(
        "UPDATE {table} SET customer_id = $2 WHERE account_id = $1 AND customer_id = $3
         RETURNING id"
    ))
    .bind(account_id)
    .bind(survivor_id)
    .bind(merged_id)
    .fetch_all(&mut *tx)
    .await
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// What the plan reads of a customer: its row, its own settings and its method on file.
async fn side(tx: &mut PgConnection, row: CustomerRow) -> sqlx::Result<(Side, CustomerRow)> {
    let settings = sqlx::query_as::<_, (Option<String>, Option<bool>)>(
        "SELECT payment_provider, auto_charge FROM payment_settings
         WHERE account_id = $1 AND level = 'CUSTOMER' AND target_id = $2",
    )
    .bind(&row.account_id)
    .bind(&row.id)
    .fetch_optional(&mut *tx)
    .await?
    .map(|(payment_provider, auto_charge)| Settings {
        payment_provider,
        auto_charge,
    });
    let on_file = sqlx::query_as::<_, (String, String, String)>(
        "SELECT id, gateway, reference_id FROM payment_methods
         WHERE account_id = $1 AND customer_id = $2 AND on_file",
    )
    .bind(&row.account_id)
    .bind(&row.id)
    .fetch_optional(&mut *tx)
    .await?
    .map(|(id, gateway, reference_id)| OnFile {
        id,
        gateway,
        reference_id,
    });
    let external_ids = row
        .external_ids
        .0
        .as_array()
        .map(|pairs| {
            pairs
                .iter()
                .filter_map(|pair| {
                    Some((
                        pair.get("key")?.as_str()?.to_owned(),
                        pair.get("value")?.as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let metadata: BTreeMap<String, String> =
        serde_json::from_value(row.metadata.0.clone()).unwrap_or_default();
    let side = Side {
        id: row.id.clone(),
        external_ids,
        aliases: row.customer_aliases.clone(),
        metadata,
        stripe_customer_id: row.stripe_customer_id.clone(),
        gocardless_customer_id: row.gocardless_customer_id.clone(),
        settings,
        on_file,
    };
    Ok((side, row))
}

/// Moves the merged customer's methods; one both hold (the same gateway and reference) stays
/// the survivor's, on file if either had it there.
async fn move_methods(
    tx: &mut PgConnection,
    account_id: &str,
    survivor_id: &str,
    merged_id: &str,
) -> sqlx::Result<Vec<String>> {
    sqlx::query(
        "WITH twins AS (
             DELETE FROM payment_methods o USING payment_methods s
             WHERE o.account_id = $1 AND o.customer_id = $3 AND s.account_id = $1
               AND s.customer_id = $2 AND s.gateway = o.gateway
               AND s.reference_id = o.reference_id
             RETURNING s.id AS kept, o.on_file, o.last_event_at)
         UPDATE payment_methods s SET on_file = s.on_file OR twins.on_file,
             on_file_since = CASE WHEN twins.on_file AND NOT s.on_file THEN now()
                 ELSE s.on_file_since END,
             last_event_at = GREATEST(s.last_event_at, twins.last_event_at), updated_at = now()
         FROM twins WHERE s.account_id = $1 AND s.id = twins.kept",
    )
    .bind(account_id)
    .bind(survivor_id)
    .bind(merged_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query_scalar(
        "UPDATE payment_methods SET customer_id = $2, updated_at = now()
         WHERE account_id = $1 AND customer_id = $3 RETURNING id",
    )
    .bind(account_id)
    .bind(survivor_id)
    .bind(merged_id)
    .fetch_all(&mut *tx)
    .await
}

/// Moves or drops the merged customer's own payment settings; whether they moved.
async fn move_settings(
    tx: &mut PgConnection,
    account_id: &str,
    survivor_id: &str,
    merged_id: &str,
    settings: SettingsMove,
) -> sqlx::Result<bool> {
    let query = match settings {
        SettingsMove::Nothing => return Ok(false),
        SettingsMove::Move => sqlx::query(
            "UPDATE payment_settings SET target_id = $3, updated_at = now()
             WHERE account_id = $1 AND level = 'CUSTOMER' AND target_id = $2",
        )
        .bind(account_id)
        .bind(merged_id)
        .bind(survivor_id),
        SettingsMove::Drop => sqlx::query(
            "DELETE FROM payment_settings
             WHERE account_id = $1 AND level = 'CUSTOMER' AND target_id = $2",
        )
        .bind(account_id)
        .bind(merged_id),
    };
    query.execute(&mut *tx).await?;
    Ok(settings == SettingsMove::Move)
}

/// Deletes the merged customer, pointing it (and the customers merged into it before) at the
/// survivor, and gives the survivor the plan's lists and the provider ids it takes.
async fn write_customers(
    tx: &mut PgConnection,
    account_id: &str,
    survivor_id: &str,
    merged: &CustomerRow,
    plan: &Plan,
) -> sqlx::Result<CustomerRow> {
    let takes = |provider| plan.provider_ids_taken.contains(&provider);
    let stripe = takes(Provider::Stripe)
        .then(|| merged.stripe_customer_id.clone())
        .flatten();
    let gocardless = takes(Provider::GoCardless)
        .then(|| merged.gocardless_customer_id.clone())
        .flatten();
    // The ids it hands over are released first: each is unique within the account.
    sqlx::query(
        "UPDATE customers SET deleted_at = now(), merged_into = $2, version = version + 1,
             updated_at = now(),
             stripe_customer_id = CASE WHEN $4 THEN NULL ELSE stripe_customer_id END,
             gocardless_customer_id = CASE WHEN $5 THEN NULL ELSE gocardless_customer_id END
         WHERE account_id = $1 AND id = $3",
    )
    .bind(account_id)
    .bind(survivor_id)
    .bind(&merged.id)
    .bind(stripe.is_some())
    .bind(gocardless.is_some())
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE customers SET merged_into = $2 WHERE account_id = $1 AND merged_into = $3")
        .bind(account_id)
        .bind(survivor_id)
        .bind(&merged.id)
        .execute(&mut *tx)
        .await?;
    let external_ids: Vec<serde_json::Value> = plan
        .external_ids
        .iter()
        .map(|(key, value)| serde_json::json!({ "key": key, "value": value }))
        .collect();
    sqlx::query_as(&format!(
        "UPDATE customers SET external_ids = $3, customer_aliases = $4, metadata = $5,
             stripe_customer_id = COALESCE(stripe_customer_id, $6),
             gocardless_customer_id = COALESCE(gocardless_customer_id, $7),
             version = version + 1, updated_at = now()
         WHERE account_id = $1 AND id = $2
         RETURNING {}",
        customers::COLUMNS
    ))
    .bind(account_id)
    .bind(survivor_id)
    .bind(Json(external_ids))
    .bind(&plan.aliases)
    .bind(Json(&plan.metadata))
    .bind(stripe)
    .bind(gocardless)
    .fetch_one(&mut *tx)
    .await
}
