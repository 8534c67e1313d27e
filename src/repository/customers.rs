//! Customers, as the billing system registers them, with the provider customer ids the worker
//! finds them by. A customer is the account's: every function takes the account and reads or
//! writes only its rows.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::types::Json;
use sqlx::{PgExecutor, Postgres};

use crate::provider::Provider;

/// Everything stored about a customer. `address` and `external_ids` are kept as the caller sent
/// them (validated); the two provider customer ids are also columns, for the worker's lookups.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CustomerRow {
    pub id: String,
    pub account_id: String,
    pub legal_name: String,
    pub contact_name: Option<String>,
    pub email: Option<String>,
    pub billing_emails: Vec<String>,
    pub telephone: Option<String>,
    pub url: Option<String>,
    pub label: Option<String>,
    pub tax_status: Option<String>,
    pub address: Option<Json<serde_json::Value>>,
    pub customer_aliases: Vec<String>,
    pub external_ids: Json<serde_json::Value>,
    pub stripe_customer_id: Option<String>,
    pub gocardless_customer_id: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub preferred_currency: Option<crate::reconcile::money::Currency>,
    pub language: Option<String>,
    pub metadata: Json<serde_json::Value>,
    /// One more at every update: a `PATCH` must name the version it read.
    pub version: i32,
    /// Set when the customer was deleted: its settled invoices still name it.
    pub deleted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Values to write; on update, `None` leaves a column as it is.
#[derive(Debug, Clone, Default)]
pub struct CustomerWrite {
    pub legal_name: Option<String>,
    pub contact_name: Option<String>,
    pub email: Option<String>,
    pub billing_emails: Option<Vec<String>>,
    pub telephone: Option<String>,
    pub url: Option<String>,
    pub label: Option<String>,
    pub tax_status: Option<String>,
    pub address: Option<serde_json::Value>,
    pub customer_aliases: Option<Vec<String>>,
    pub external_ids: Option<serde_json::Value>,
    /// `Some(None)` clears the column (the external id was removed).
    pub stripe_customer_id: Option<Option<String>>,
    pub gocardless_customer_id: Option<Option<String>>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub preferred_currency: Option<crate::reconcile::money::Currency>,
    pub language: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

pub(super) const COLUMNS: &str = "id, account_id, legal_name, contact_name, email, billing_emails, telephone, \
    url, label, tax_status, address, customer_aliases, external_ids, stripe_customer_id, \
    gocardless_customer_id, given_name, family_name, preferred_currency, language, metadata, \
    version, deleted_at, created_at, updated_at";

pub async fn insert(
    db: impl PgExecutor<'_>,
    account_id: &str,
    id: &str,
    write: &CustomerWrite,
) -> sqlx::Result<CustomerRow> {
    let insert = format!(
        "INSERT INTO customers (id, account_id, legal_name, contact_name, email, billing_emails,
             telephone, url, label, tax_status, address, customer_aliases, external_ids,
             stripe_customer_id, gocardless_customer_id, given_name, family_name,
             preferred_currency, language, metadata)
         VALUES ($1, $2, $3, $4, $5, COALESCE($6, '{{}}'), $7, $8, $9, $10, $11, COALESCE($12, '{{}}'),
             COALESCE($13, '[]'), CASE WHEN $14 THEN $15 END, CASE WHEN $16 THEN $17 END,
             $18, $19, $20, $21, COALESCE($22, '{{}}'))
         RETURNING {COLUMNS}"
    );
    bind_write(sqlx::query_as(&insert), account_id, id, write)
        .fetch_one(db)
        .await
}

/// Updates the customer; with `expected`, only if its version is still that one (optimistic
/// locking: the row is unchanged and `None` returned when another writer came first).
pub async fn update(
    db: impl PgExecutor<'_>,
    account_id: &str,
    id: &str,
    write: &CustomerWrite,
    expected: Option<i32>,
) -> sqlx::Result<Option<CustomerRow>> {
    let update = format!(
        "UPDATE customers SET
             legal_name = COALESCE($3, legal_name),
             contact_name = COALESCE($4, contact_name),
             email = COALESCE($5, email),
             billing_emails = COALESCE($6, billing_emails),
             telephone = COALESCE($7, telephone),
             url = COALESCE($8, url),
             label = COALESCE($9, label),
             tax_status = COALESCE($10, tax_status),
             address = COALESCE($11, address),
             customer_aliases = COALESCE($12, customer_aliases),
             external_ids = COALESCE($13, external_ids),
             stripe_customer_id = CASE WHEN $14 THEN $15 ELSE stripe_customer_id END,
             gocardless_customer_id = CASE WHEN $16 THEN $17 ELSE gocardless_customer_id END,
             given_name = COALESCE($18, given_name),
             family_name = COALESCE($19, family_name),
             preferred_currency = COALESCE($20, preferred_currency),
             language = COALESCE($21, language),
             metadata = COALESCE($22, metadata),
             version = version + 1,
             updated_at = now()
         WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL
           AND ($23::int IS NULL OR version = $23)
         RETURNING {COLUMNS}"
    );
    bind_write(sqlx::query_as(&update), account_id, id, write)
        .bind(expected)
        .fetch_optional(db)
        .await
}

/// Binds a customer's write in the order `insert` and `update` number it: $1 the id, $2 the
/// account, $3 to $13 the values, $14 to $17 for each provider's customer id whether it is
/// written and what, $18 to $22 wallee's fields.
fn bind_write<'q>(
    query: QueryAs<'q, Postgres, CustomerRow, PgArguments>,
    account_id: &'q str,
    id: &'q str,
    write: &'q CustomerWrite,
) -> QueryAs<'q, Postgres, CustomerRow, PgArguments> {
    query
        .bind(id)
        .bind(account_id)
        .bind(&write.legal_name)
        .bind(&write.contact_name)
        .bind(&write.email)
        .bind(&write.billing_emails)
        .bind(&write.telephone)
        .bind(&write.url)
        .bind(&write.label)
        .bind(&write.tax_status)
        .bind(write.address.as_ref().map(Json))
        .bind(&write.customer_aliases)
        .bind(write.external_ids.as_ref().map(Json))
        .bind(write.stripe_customer_id.is_some())
        .bind(write.stripe_customer_id.clone().flatten())
        .bind(write.gocardless_customer_id.is_some())
        .bind(write.gocardless_customer_id.clone().flatten())
        .bind(&write.given_name)
        .bind(&write.family_name)
        .bind(write.preferred_currency)
        .bind(&write.language)
        .bind(write.metadata.as_ref().map(Json))
}

/// The customer, unless it was deleted.
pub async fn get(
    db: impl PgExecutor<'_>,
    account_id: &str,
    id: &str,
) -> sqlx::Result<Option<CustomerRow>> {
    Ok(get_even_deleted(db, account_id, id)
        .await?
        .filter(|row| row.deleted_at.is_none()))
}

/// The customer, deleted or not: an invoice's, whose mails still go to it.
pub async fn get_even_deleted(
    db: impl PgExecutor<'_>,
    account_id: &str,
    id: &str,
) -> sqlx::Result<Option<CustomerRow>> {
    super::rows::by_id(
        db,
        "customers",
        COLUMNS,
        account_id,
        id,
        super::rows::Read::Plain,
    )
    .await
}

/// Locks the customer for the rest of the transaction: every writer of a customer's payment
/// methods holds this lock, so their events (and the API) apply one at a time and an older event
/// cannot overtake a newer one.
pub async fn lock(tx: &mut sqlx::PgConnection, account_id: &str, id: &str) -> sqlx::Result<()> {
    sqlx::query_scalar!(
        "SELECT id FROM customers WHERE account_id = $1 AND id = $2 FOR UPDATE",
        account_id,
        id
    )
    .fetch_optional(tx)
    .await?;
    Ok(())
}

/// Whether the account has the customer, not deleted, holding it so for the rest of `tx`: a
/// delete or a merge (which lock it for update) waits until `tx` ends, and one that came first is
/// seen. Whatever `tx` attaches to the customer cannot land on a deleted one.
pub async fn hold(tx: &mut sqlx::PgConnection, account_id: &str, id: &str) -> sqlx::Result<bool> {
    let held: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM customers WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL
         FOR SHARE",
    )
    .bind(account_id)
    .bind(id)
    .fetch_optional(tx)
    .await?;
    Ok(held.is_some())
}

/// Whether the account has the customer, and it was not deleted.
pub async fn exists(db: impl PgExecutor<'_>, account_id: &str, id: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM customers
                        WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL)",
    )
    .bind(account_id)
    .bind(id)
    .fetch_one(db)
    .await
}

/// Why the customer cannot be deleted now: each of its invoices not settled (any status but
/// `PAID`, or money in dispute) and each payment in flight (registered, pending, authorised),
/// at most `limit` of them, as sentences.
pub async fn deletion_blockers(
    db: impl PgExecutor<'_>,
    account_id: &str,
    id: &str,
    limit: i64,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT format('invoice %s is %s', i.id, i.status) FROM invoices i
         WHERE i.account_id = $1 AND i.customer_id = $2
           AND (i.status <> 'PAID' OR i.amount_in_dispute > 0)
         UNION ALL
         SELECT format('payment %s of invoice %s is %s', p.id, p.invoice_id, p.status)
         FROM payments p JOIN invoices i ON i.account_id = p.account_id AND i.id = p.invoice_id
         WHERE i.account_id = $1 AND i.customer_id = $2
           AND p.status IN ('REGISTERED', 'PENDING', 'AUTHORISED')
         ORDER BY 1 LIMIT $3",
    )
    .bind(account_id)
    .bind(id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Deletes the customer in `tx`: its payment methods and its own payment settings go, its
/// provider customer ids are released, and the row stays, hidden, for its settled invoices.
pub async fn delete(tx: &mut sqlx::PgConnection, account_id: &str, id: &str) -> sqlx::Result<bool> {
    sqlx::query("DELETE FROM payment_methods WHERE account_id = $1 AND customer_id = $2")
        .bind(account_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "DELETE FROM payment_settings
         WHERE account_id = $1 AND level = 'CUSTOMER' AND target_id = $2",
    )
    .bind(account_id)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    // The customers merged into it release the provider ids they kept for it, too.
    sqlx::query(
        "UPDATE customers SET stripe_customer_id = NULL, gocardless_customer_id = NULL
         WHERE account_id = $1 AND merged_into = $2",
    )
    .bind(account_id)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let deleted = sqlx::query(
        "UPDATE customers SET deleted_at = now(), stripe_customer_id = NULL,
             gocardless_customer_id = NULL, version = version + 1, updated_at = now()
         WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL",
    )
    .bind(account_id)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    Ok(deleted.rows_affected() == 1)
}

/// The customer a provider event refers to, by the provider's customer id: the customer holding
/// it, or the one it was merged into.
pub async fn find_by_provider_customer_id(
    db: impl PgExecutor<'_>,
    account_id: &str,
    provider: Provider,
    provider_customer_id: &str,
) -> sqlx::Result<Option<CustomerRow>> {
    let column = match provider {
        Provider::Stripe => "stripe_customer_id",
        Provider::GoCardless => "gocardless_customer_id",
    };
    sqlx::query_as(&format!(
        "SELECT {} FROM customers holder
         JOIN customers owner ON owner.account_id = holder.account_id
             AND owner.id = COALESCE(holder.merged_into, holder.id)
         WHERE holder.account_id = $1 AND holder.{column} = $2 AND owner.deleted_at IS NULL",
        super::rows::qualified(COLUMNS, "owner")
    ))
    .bind(account_id)
    .bind(provider_customer_id)
    .fetch_optional(db)
    .await
}

/// What `GET /customers` filters by; every filter given must hold.
#[derive(Debug, Clone, Default)]
pub struct Filters<'a> {
    /// The email, case-insensitively.
    pub email: Option<&'a str>,
    /// An external id's value: a provider's customer id or another system's.
    pub external_id: Option<&'a str>,
    /// The legal name's start, case-insensitively.
    pub name_prefix: Option<&'a str>,
    pub created_since: Option<DateTime<Utc>>,
}

/// A page of the account's customers in id order, after `after`: a customer inserted while a
/// caller pages is never seen twice, and none is skipped that was there all along.
pub async fn list(
    db: impl PgExecutor<'_>,
    account_id: &str,
    filters: &Filters<'_>,
    after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<CustomerRow>> {
    // A name prefix is matched literally: `%`, `_` and `\\` in it are escaped for LIKE.
    let prefix = filters.name_prefix.map(|prefix| {
        let escaped: String = prefix
            .to_lowercase()
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("{escaped}%")
    });
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM customers
         WHERE account_id = $1 AND deleted_at IS NULL
           AND ($2::text IS NULL OR lower(email) = lower($2))
           AND ($3::text IS NULL OR stripe_customer_id = $3 OR gocardless_customer_id = $3
                OR external_ids @> jsonb_build_array(jsonb_build_object('value', $3::text)))
           AND ($4::text IS NULL OR lower(legal_name) LIKE $4)
           AND ($5::timestamptz IS NULL OR created_at >= $5)
           AND ($6::text IS NULL OR id > $6)
         ORDER BY id
         LIMIT $7"
    ))
    .bind(account_id)
    .bind(filters.email)
    .bind(filters.external_id)
    .bind(prefix)
    .bind(filters.created_since)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A column `POST /customers/search` filters or orders by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Id,
    LegalName,
    GivenName,
    FamilyName,
    Email,
    PreferredCurrency,
    Language,
    /// A provider's customer id or another system's external id (`EQUALS` only).
    ExternalId,
    CreatedAt,
    UpdatedAt,
    Version,
}

impl Column {
    fn sql(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::LegalName => "legal_name",
            Self::GivenName => "given_name",
            Self::FamilyName => "family_name",
            Self::Email => "email",
            Self::PreferredCurrency => "preferred_currency",
            Self::Language => "language",
            Self::ExternalId => "stripe_customer_id",
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
            Self::Version => "version",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    /// The text contains the value, case-insensitively.
    Contains,
    IsNull,
    NotNull,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Integer(i64),
    Time(DateTime<Utc>),
    None,
}

/// A filter tree, checked and typed by the API.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Compare {
        column: Column,
        op: Op,
        value: Value,
    },
}

/// A search of the account's customers: a condition, orders (then the id), a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    pub condition: Option<Condition>,
    /// Columns, and whether descending.
    pub order: Vec<(Column, bool)>,
    pub limit: i64,
    pub offset: i64,
}

fn push_condition(query: &mut sqlx::QueryBuilder<'_, Postgres>, condition: &Condition) {
    match condition {
        Condition::All(children) | Condition::Any(children) => {
            let joiner = if matches!(condition, Condition::All(_)) {
                " AND "
            } else {
                " OR "
            };
            query.push("(");
            for (i, child) in children.iter().enumerate() {
                if i > 0 {
                    query.push(joiner);
                }
                push_condition(query, child);
            }
            query.push(")");
        }
        Condition::Compare { column, op, value } => push_compare(query, *column, *op, value),
    }
}

fn push_compare(
    query: &mut sqlx::QueryBuilder<'_, Postgres>,
    column: Column,
    op: Op,
    value: &Value,
) {
    if column == Column::ExternalId {
        // Equality only (the API refuses the rest): a provider's column, or the list's values.
        let text = match value {
            Value::Text(text) => text.clone(),
            _ => String::new(),
        };
        query.push("(stripe_customer_id = ");
        query.push_bind(text.clone());
        query.push(" OR gocardless_customer_id = ");
        query.push_bind(text.clone());
        query.push(" OR external_ids @> jsonb_build_array(jsonb_build_object('value', ");
        query.push_bind(text);
        query.push("::text)))");
        return;
    }
    // Text columns compare as text (a currency's domain too).
    let sql = match column {
        Column::PreferredCurrency => "preferred_currency::text",
        other => other.sql(),
    };
    let comparison = match op {
        Op::IsNull => {
            query.push(format!("{sql} IS NULL"));
            return;
        }
        Op::NotNull => {
            query.push(format!("{sql} IS NOT NULL"));
            return;
        }
        Op::Contains => {
            query.push(format!("strpos(lower({sql}), lower("));
            push_value(query, value);
            query.push(")) > 0");
            return;
        }
        Op::Eq => "=",
        Op::Ne => "IS DISTINCT FROM",
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::Lt => "<",
        Op::Le => "<=",
    };
    query.push(format!("{sql} {comparison} "));
    push_value(query, value);
}

fn push_value(query: &mut sqlx::QueryBuilder<'_, Postgres>, value: &Value) {
    match value {
        Value::Text(text) => query.push_bind(text.clone()),
        Value::Integer(number) => query.push_bind(*number),
        Value::Time(time) => query.push_bind(*time),
        Value::None => query.push("NULL"),
    };
}

/// The account's customers that `search` finds, in its order.
pub async fn search(
    db: impl PgExecutor<'_>,
    account_id: &str,
    search: &Search,
) -> sqlx::Result<Vec<CustomerRow>> {
    let mut query = sqlx::QueryBuilder::<Postgres>::new(format!(
        "SELECT {COLUMNS} FROM customers WHERE deleted_at IS NULL AND account_id = "
    ));
    query.push_bind(account_id.to_owned());
    if let Some(condition) = &search.condition {
        query.push(" AND ");
        push_condition(&mut query, condition);
    }
    query.push(" ORDER BY ");
    for (column, descending) in &search.order {
        query.push(format!(
            "{} {}, ",
            column.sql(),
            if *descending { "DESC" } else { "ASC" }
        ));
    }
    query.push("id LIMIT ");
    query.push_bind(search.limit);
    query.push(" OFFSET ");
    query.push_bind(search.offset);
    query.build_query_as().fetch_all(db).await
}
