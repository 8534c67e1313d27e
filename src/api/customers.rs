//! Customers: `POST /customers`, `GET /customers` (filters, keyset pages), `GET` and `PUT
//! /customers/{id}` (the seed's update-customer body), and `PATCH /customers/{id}` with
//! wallee's optimistic locking: a customer carries a `version`, one more at every update; a
//! `PATCH` names the version it read (in its body, or `If-Match`), and a stale one is refused
//! with 409 naming the current version. Every answer carrying a customer has its `ETag`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, unique_constraint};
use super::extract::{ApiBody, ApiJson, ApiQuery, Caller, parse_json};
use super::state::ApiState;
use super::validate::{self, MAX_LIST, MAX_SHORT, MAX_TEXT, MAX_URL};
use crate::repository::customers::{self as repo, CustomerRow, CustomerWrite};

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    pub country: Option<String>,
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub postcode: Option<String>,
    pub town: Option<String>,
    pub state: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExternalId {
    /// `Stripe` (value `cus_…`), `GoCardless` (value `CU…`) or any other system's name.
    pub key: String,
    pub value: String,
}

/// The seed's update-customer body; every field is optional and a field left out is unchanged.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerFields {
    pub address: Option<Address>,
    pub billing_emails: Option<Vec<String>>,
    pub contact_name: Option<String>,
    pub customer_aliases: Option<Vec<String>>,
    pub email: Option<String>,
    pub external_ids: Option<Vec<ExternalId>>,
    pub label: Option<String>,
    pub legal_name: Option<String>,
    pub tax_status: Option<String>,
    pub telephone: Option<String>,
    pub url: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// ISO 4217, as `GBP`.
    pub preferred_currency: Option<String>,
    /// A BCP 47 language tag, as `en-GB`.
    pub language: Option<String>,
    /// At most 50 keys of at most 40 characters, each value at most 500: replaces the whole map.
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
}

/// `POST /customers`: the customer's id and the same fields as an update.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateCustomer {
    pub id: String,
    #[serde(flatten)]
    pub fields: CustomerFields,
}

/// The id alone: `CreateCustomer` is read in two passes (id, then fields) because serde's
/// `flatten` hides which field failed, and errors must name it.
#[derive(Deserialize)]
struct CustomerId {
    id: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    pub id: String,
    pub sequence_account_id: String,
    pub legal_name: String,
    pub contact_name: Option<String>,
    pub email: Option<String>,
    pub billing_emails: Vec<String>,
    pub telephone: Option<String>,
    pub url: Option<String>,
    pub label: Option<String>,
    pub tax_status: Option<String>,
    pub address: Option<Address>,
    pub customer_aliases: Vec<String>,
    pub external_ids: Vec<ExternalId>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub preferred_currency: Option<String>,
    pub language: Option<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// One more at every update; `PATCH` must name it (the `ETag` carries it too).
    pub version: i32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<CustomerRow> for Customer {
    fn from(row: CustomerRow) -> Self {
        Self {
            id: row.id,
            sequence_account_id: row.account_id,
            legal_name: row.legal_name,
            contact_name: row.contact_name,
            email: row.email,
            billing_emails: row.billing_emails,
            telephone: row.telephone,
            url: row.url,
            label: row.label,
            tax_status: row.tax_status,
            address: row.address.and_then(|a| serde_json::from_value(a.0).ok()),
            customer_aliases: row.customer_aliases,
            external_ids: serde_json::from_value(row.external_ids.0).unwrap_or_default(),
            given_name: row.given_name,
            family_name: row.family_name,
            preferred_currency: row.preferred_currency.map(|c| c.as_str().to_owned()),
            language: row.language,
            metadata: serde_json::from_value(row.metadata.0).unwrap_or_default(),
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

impl CustomerFields {
    /// Validates every field and turns the request into the values to store.
    fn into_write(self) -> Result<CustomerWrite, ApiError> {
        let v = |field: &str, result: Result<(), String>| {
            result.map_err(|message| ApiError::validation(field, message))
        };
        let bounded = |field: &str, value: &Option<String>, max: usize| match value {
            Some(value) => v(field, validate::at_most(value, max)),
            None => Ok(()),
        };
        if let Some(name) = &self.legal_name {
            v("legalName", validate::non_empty(name, MAX_TEXT))?;
        }
        bounded("contactName", &self.contact_name, MAX_TEXT)?;
        bounded("telephone", &self.telephone, MAX_SHORT)?;
        bounded("url", &self.url, MAX_URL)?;
        bounded("label", &self.label, MAX_TEXT)?;
        bounded("taxStatus", &self.tax_status, MAX_SHORT)?;
        bounded("givenName", &self.given_name, MAX_TEXT)?;
        bounded("familyName", &self.family_name, MAX_TEXT)?;
        let preferred_currency = self
            .preferred_currency
            .as_deref()
            .map(|code| {
                crate::reconcile::money::Currency::parse(code)
                    .map_err(|message| ApiError::validation("preferredCurrency", message))
            })
            .transpose()?;
        if let Some(language) = &self.language {
            v("language", validate::at_most(language, MAX_SHORT))?;
            language_tags::LanguageTag::parse(language).map_err(|error| {
                ApiError::validation("language", format!("not a BCP 47 language tag: {error}"))
            })?;
        }
        if let Some(metadata) = &self.metadata {
            validate::metadata(metadata)?;
        }
        if let Some(email) = &self.email {
            v("email", validate::email(email))?;
        }
        if let Some(emails) = &self.billing_emails {
            v("billingEmails", validate::list_at_most(emails, MAX_LIST))?;
            for (i, email) in emails.iter().enumerate() {
                v(&format!("billingEmails[{i}]"), validate::email(email))?;
            }
        }
        if let Some(aliases) = &self.customer_aliases {
            v("customerAliases", validate::list_at_most(aliases, MAX_LIST))?;
            for (i, alias) in aliases.iter().enumerate() {
                v(
                    &format!("customerAliases[{i}]"),
                    validate::at_most(alias, MAX_TEXT),
                )?;
            }
        }
        if let Some(address) = &self.address {
            for (field, value) in [
                ("address.line1", &address.line1),
                ("address.line2", &address.line2),
                ("address.postcode", &address.postcode),
                ("address.town", &address.town),
                ("address.state", &address.state),
            ] {
                bounded(field, value, MAX_TEXT)?;
            }
            if let Some(country) = address.country.as_deref() {
                v("address.country", validate::country(country))?;
            }
        }
        let mut write = CustomerWrite::default();
        if let Some(external_ids) = &self.external_ids {
            v(
                "externalIds",
                validate::list_at_most(external_ids, MAX_LIST),
            )?;
            let mut stripe = None;
            let mut gocardless = None;
            for (i, external) in external_ids.iter().enumerate() {
                let field = format!("externalIds[{i}].value");
                v(
                    &format!("externalIds[{i}].key"),
                    validate::non_empty(&external.key, MAX_SHORT),
                )?;
                v(&field, validate::non_empty(&external.value, MAX_TEXT))?;
                let slot = match external.key.as_str() {
                    "Stripe" => {
                        if !external.value.starts_with("cus_") {
                            return Err(ApiError::validation(
                                field,
                                "a Stripe customer id starts with `cus_`",
                            ));
                        }
                        &mut stripe
                    }
                    "GoCardless" => {
                        if !external.value.starts_with("CU") {
                            return Err(ApiError::validation(
                                field,
                                "a GoCardless customer id starts with `CU`",
                            ));
                        }
                        &mut gocardless
                    }
                    _ => continue,
                };
                if slot.replace(external.value.clone()).is_some() {
                    return Err(ApiError::validation(
                        format!("externalIds[{i}].key"),
                        format!("`{}` appears more than once", external.key),
                    ));
                }
            }
            // The list replaces the old one, so an id left out is removed.
            write.stripe_customer_id = Some(stripe);
            write.gocardless_customer_id = Some(gocardless);
            write.external_ids = Some(json_value(external_ids)?);
        }
        write.legal_name = self.legal_name;
        write.contact_name = self.contact_name;
        write.email = self.email;
        write.billing_emails = self.billing_emails;
        write.telephone = self.telephone;
        write.url = self.url;
        write.label = self.label;
        write.tax_status = self.tax_status;
        write.address = self.address.as_ref().map(json_value).transpose()?;
        write.customer_aliases = self.customer_aliases;
        write.given_name = self.given_name;
        write.family_name = self.family_name;
        write.preferred_currency = preferred_currency;
        write.language = self.language;
        write.metadata = self.metadata.as_ref().map(json_value).transpose()?;
        Ok(write)
    }
}

/// A validated request part as the JSON the table stores.
fn json_value(value: &impl Serialize) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value).map_err(|error| ApiError::Internal(error.into()))
}

/// A provider customer id claimed by another customer is a conflict the caller can fix.
fn conflict_on_external_id(error: sqlx::Error) -> ApiError {
    match unique_constraint(&error) {
        Some("customers_pkey") => {
            ApiError::Conflict("a customer with this id already exists".into())
        }
        Some(_) => ApiError::Conflict(
            "another customer already has this Stripe or GoCardless customer id".into(),
        ),
        None => error.into(),
    }
}

/// Register a customer.
#[utoipa::path(post, path = "/customers", tag = "customers", request_body = CreateCustomer,
    responses((status = 201, body = Customer), (status = 400), (status = 401), (status = 409)))]
pub async fn create(
    caller: Caller,
    State(state): State<ApiState>,
    ApiBody(bytes): ApiBody,
) -> Result<(StatusCode, axum::Json<Customer>), ApiError> {
    let row = create_one(&state, &caller.account_id, &bytes).await?;
    Ok((StatusCode::CREATED, axum::Json(row.into())))
}

/// Creates the customer `bytes` describes (`CreateCustomer`) in one transaction: the API's and
/// a bulk item's one way.
pub(super) async fn create_one(
    state: &ApiState,
    account: &str,
    bytes: &axum::body::Bytes,
) -> Result<CustomerRow, ApiError> {
    let CustomerId { id } = parse_json(bytes)?;
    let fields: CustomerFields = parse_json(bytes)?;
    validate::id(&id).map_err(|m| ApiError::validation("id", m))?;
    if fields.legal_name.is_none() {
        return Err(ApiError::validation("legalName", "is required"));
    }
    let write = fields.into_write()?;
    let mut tx = state.db.begin().await?;
    crate::repository::ensure_account(&mut *tx, account).await?;
    let row = repo::insert(&mut *tx, account, &id, &write)
        .await
        .map_err(conflict_on_external_id)?;
    tx.commit().await?;
    Ok(row)
}

/// A customer with its version as a strong `ETag`, as `If-Match` gives it back.
type Tagged = ([(header::HeaderName, String); 1], axum::Json<Customer>);

fn tagged(row: CustomerRow) -> Tagged {
    let etag = format!("\"{}\"", row.version);
    ([(header::ETAG, etag)], axum::Json(row.into()))
}

/// Read a customer.
#[utoipa::path(get, path = "/customers/{id}", tag = "customers",
    params(("id" = String, Path)), responses((status = 200, body = Customer), (status = 404)))]
pub async fn get(
    caller: Caller,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Tagged, ApiError> {
    let row = repo::get(&state.db, &caller.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("customer", &id))?;
    Ok(tagged(row))
}

/// Update a customer with the seed's update-customer body, whatever its version.
#[utoipa::path(put, path = "/customers/{id}", tag = "customers", request_body = CustomerFields,
    params(("id" = String, Path)),
    responses((status = 200, body = Customer), (status = 400), (status = 404), (status = 409)))]
pub async fn update(
    caller: Caller,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(fields): ApiJson<CustomerFields>,
) -> Result<Tagged, ApiError> {
    let row = update_one(&state, &caller.account_id, &id, fields, None).await?;
    Ok(tagged(row))
}

/// Updates the customer with `fields`; with `expected`, only if it is still at that version
/// (409 naming the current one otherwise). `PUT`'s, `PATCH`'s and a bulk item's one way.
pub(super) async fn update_one(
    state: &ApiState,
    account: &str,
    id: &str,
    fields: CustomerFields,
    expected: Option<i32>,
) -> Result<CustomerRow, ApiError> {
    let write = fields.into_write()?;
    if let Some(row) = repo::update(&state.db, account, id, &write, expected)
        .await
        .map_err(conflict_on_external_id)?
    {
        return Ok(row);
    }
    match (expected, repo::get(&state.db, account, id).await?) {
        (Some(expected), Some(current)) => Err(ApiError::Conflict(format!(
            "customer {id} is at version {}, not {expected}: read it again and send that version",
            current.version
        ))),
        _ => Err(ApiError::not_found("customer", id)),
    }
}

/// `PATCH /customers/{id}`: the version read, and the fields to change.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchCustomer {
    /// The version the caller read; `If-Match` may carry it instead.
    pub version: Option<i64>,
    #[serde(flatten)]
    pub fields: CustomerFields,
}

/// The version alone: read in its own pass, as `CreateCustomer`'s id is.
#[derive(Deserialize)]
struct VersionOnly {
    version: Option<serde_json::Value>,
}

/// The version `If-Match` names: `"3"` (a strong tag, as this API's `ETag`s are).
fn if_match(headers: &HeaderMap) -> Result<Option<i32>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| {
            text.trim()
                .strip_prefix('"')?
                .strip_suffix('"')?
                .parse()
                .ok()
        })
        .map(Some)
        .ok_or_else(|| {
            ApiError::validation("If-Match", "a customer's ETag, as `\"3\"` (its version)")
        })
}

/// Update a customer with optimistic locking: only if it is still at the version the caller
/// read; otherwise 409, naming the current version.
#[utoipa::path(patch, path = "/customers/{id}", tag = "customers", request_body = PatchCustomer,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "the customer's ETag: its version")),
    responses((status = 200, body = Customer), (status = 400), (status = 404), (status = 409)))]
pub async fn patch(
    caller: Caller,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiBody(bytes): ApiBody,
) -> Result<Tagged, ApiError> {
    let VersionOnly { version } = parse_json(&bytes)?;
    let in_body = match version {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(number)) => Some(
            number
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    ApiError::validation("version", "a customer's version: 1 or more")
                })?,
        ),
        Some(_) => return Err(ApiError::validation("version", "a number")),
    };
    let expected = match (in_body, if_match(&headers)?) {
        (Some(body), Some(header)) if body != header => {
            return Err(ApiError::validation(
                "version",
                format!("the body says {body}, If-Match says {header}"),
            ));
        }
        (Some(version), _) | (None, Some(version)) => version,
        (None, None) => {
            return Err(ApiError::validation(
                "version",
                "is required (or If-Match): the version of the customer you read",
            ));
        }
    };
    let fields: CustomerFields = parse_json(&bytes)?;
    let row = update_one(&state, &caller.account_id, &id, fields, Some(expected)).await?;
    Ok(tagged(row))
}

/// What `POST /customers/search` found.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerSearchResult {
    pub data: Vec<Customer>,
}

/// Search the account's customers with wallee's entity query: a filter tree of `LEAF`s joined by
/// `AND` and `OR`, orders, and a page (`numberOfEntities`, `startingEntity`).
#[utoipa::path(post, path = "/customers/search", tag = "customers",
    request_body = super::customer_search::EntityQuery,
    responses((status = 200, body = CustomerSearchResult), (status = 400)))]
pub async fn search(
    caller: Caller,
    State(state): State<ApiState>,
    ApiJson(query): ApiJson<super::customer_search::EntityQuery>,
) -> Result<axum::Json<CustomerSearchResult>, ApiError> {
    let search = query.into_search()?;
    let rows = repo::search(state.reads.pool(), &caller.account_id, &search).await?;
    Ok(axum::Json(CustomerSearchResult {
        data: rows.into_iter().map(Customer::from).collect(),
    }))
}

/// How many reasons a refused deletion names.
const BLOCKERS_NAMED: i64 = 10;

/// Delete a customer: refused with 409 while one of its invoices is not settled or one of its
/// payments is in flight (the answer says which); otherwise its payment methods and payment
/// settings go with it, and its settled invoices keep their figures.
#[utoipa::path(delete, path = "/customers/{id}", tag = "customers",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404), (status = 409)))]
pub async fn delete(
    caller: Caller,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete_one(&state, &caller.account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes the customer in one transaction, unless money is owed or in flight: the API's and a
/// bulk item's one way.
pub(super) async fn delete_one(state: &ApiState, account: &str, id: &str) -> Result<(), ApiError> {
    let id = id.to_owned();
    let mut tx = state.db.begin().await?;
    // Payment-method writers and the worker's method events hold this lock too.
    repo::lock(&mut tx, account, &id).await?;
    if !repo::exists(&mut *tx, account, &id).await? {
        return Err(ApiError::not_found("customer", &id));
    }
    let blockers = repo::deletion_blockers(&mut *tx, account, &id, BLOCKERS_NAMED).await?;
    if !blockers.is_empty() {
        return Err(ApiError::Conflict(format!(
            "customer {id} cannot be deleted yet: {}",
            blockers.join("; ")
        )));
    }
    repo::delete(&mut tx, account, &id).await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct CustomerQuery {
    /// The email, case-insensitively.
    pub email: Option<String>,
    /// An external id's value (`cus_…`, `CU…`, another system's).
    pub external_id: Option<String>,
    /// The legal name's start, case-insensitively.
    pub name_prefix: Option<String>,
    /// Created at or after: an RFC 3339 time.
    pub created_since: Option<chrono::DateTime<chrono::Utc>>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerPage {
    pub data: Vec<Customer>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// List the account's customers in id order, filtered, with cursor pagination: a customer
/// created while a caller pages is never listed twice, and none that was there is skipped.
#[utoipa::path(get, path = "/customers", tag = "customers", params(CustomerQuery),
    responses((status = 200, body = CustomerPage), (status = 400)))]
pub async fn list(
    caller: Caller,
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<CustomerQuery>,
) -> Result<axum::Json<CustomerPage>, ApiError> {
    let limit = validate::page_limit(query.limit)?;
    for (field, value) in [
        ("email", &query.email),
        ("externalId", &query.external_id),
        ("namePrefix", &query.name_prefix),
    ] {
        if let Some(value) = value {
            validate::at_most(value, MAX_TEXT).map_err(|m| ApiError::validation(field, m))?;
        }
    }
    let after = super::pages::after(query.cursor.as_deref())?;
    let filters = repo::Filters {
        email: query.email.as_deref(),
        external_id: query.external_id.as_deref(),
        name_prefix: query.name_prefix.as_deref(),
        created_since: query.created_since,
    };
    // One extra row tells whether another page follows.
    let rows = repo::list(
        state.reads.pool(),
        &caller.account_id,
        &filters,
        after.as_deref(),
        limit + 1,
    )
    .await?;
    let (rows, next_cursor) = super::pages::cut(rows, limit, |row| &row.id);
    Ok(axum::Json(CustomerPage {
        data: rows.into_iter().map(Customer::from).collect(),
        next_cursor,
    }))
}
