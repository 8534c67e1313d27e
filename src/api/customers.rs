//! Customers: `POST /customers`, `GET` and `PUT /customers/{id}` (the seed's update-customer body).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, unique_constraint};
use super::extract::{ApiBody, ApiJson, Caller, parse_json};
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
    let CustomerId { id } = parse_json(&bytes)?;
    let fields: CustomerFields = parse_json(&bytes)?;
    validate::id(&id).map_err(|m| ApiError::validation("id", m))?;
    if fields.legal_name.is_none() {
        return Err(ApiError::validation("legalName", "is required"));
    }
    let write = fields.into_write()?;
    let account = &caller.account_id;
    let mut tx = state.db.begin().await?;
    crate::repository::ensure_account(&mut *tx, account).await?;
    let row = repo::insert(&mut *tx, account, &id, &write)
        .await
        .map_err(conflict_on_external_id)?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(row.into())))
}

/// Read a customer.
#[utoipa::path(get, path = "/customers/{id}", tag = "customers",
    params(("id" = String, Path)), responses((status = 200, body = Customer), (status = 404)))]
pub async fn get(
    caller: Caller,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Customer>, ApiError> {
    let row = repo::get(&state.db, &caller.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("customer", &id))?;
    Ok(axum::Json(row.into()))
}

/// Update a customer with the seed's update-customer body.
#[utoipa::path(put, path = "/customers/{id}", tag = "customers", request_body = CustomerFields,
    params(("id" = String, Path)),
    responses((status = 200, body = Customer), (status = 400), (status = 404), (status = 409)))]
pub async fn update(
    caller: Caller,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(fields): ApiJson<CustomerFields>,
) -> Result<axum::Json<Customer>, ApiError> {
    let write = fields.into_write()?;
    let row = repo::update(&state.db, &caller.account_id, &id, &write)
        .await
        .map_err(conflict_on_external_id)?
        .ok_or_else(|| ApiError::not_found("customer", &id))?;
    Ok(axum::Json(row.into()))
}
