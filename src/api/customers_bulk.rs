//! `POST /customers/bulk`: up to 100 creates, updates and deletes in one request, each item
//! answered on its own with the status and body its single request would have had. Each item is
//! its own transaction (`customers::{create_one, update_one, delete_one}`, the single routes'
//! own functions): one refused item changes nothing of itself, and the others still apply.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::customers::{Customer, CustomerFields, create_one, delete_one, update_one};
use super::error::ApiError;
use super::extract::{ApiJson, Caller, parse_json};
use super::state::ApiState;

/// Items a request may carry.
const MAX_ITEMS: usize = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkRequest {
    /// 1 to 100 items, each `{"operation": "CREATE", "customer": {…}}`, `{"operation":
    /// "UPDATE", "id", "customer": {fields}, "version"?}` (with a version, as `PATCH`; without,
    /// as `PUT`) or `{"operation": "DELETE", "id"}`. An item is read on its own: one that is
    /// malformed is refused alone.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Value>,
}

/// One item, as read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Item {
    operation: String,
    id: Option<String>,
    version: Option<i32>,
    customer: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemResult {
    pub index: usize,
    /// The status the single request would have answered.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<Customer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemError>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResult {
    /// One per item, in the request's order.
    pub results: Vec<ItemResult>,
}

/// Create, update and delete customers in bulk, each item answered on its own.
#[utoipa::path(post, path = "/customers/bulk", tag = "customers", request_body = BulkRequest,
    responses((status = 200, body = BulkResult), (status = 400)))]
pub async fn bulk(
    caller: Caller,
    State(state): State<ApiState>,
    ApiJson(request): ApiJson<BulkRequest>,
) -> Result<axum::Json<BulkResult>, ApiError> {
    if request.items.is_empty() || request.items.len() > MAX_ITEMS {
        return Err(ApiError::validation(
            "items",
            format!("1 to {MAX_ITEMS} items"),
        ));
    }
    let mut results = Vec::with_capacity(request.items.len());
    for (index, item) in request.items.into_iter().enumerate() {
        let outcome = apply(&state, &caller.account_id, item, index).await;
        results.push(match outcome {
            Ok((status, customer)) => ItemResult {
                index,
                status: status.as_u16(),
                customer,
                error: None,
            },
            Err(error) => {
                let (status, code, message) = error.answer();
                ItemResult {
                    index,
                    status: status.as_u16(),
                    customer: None,
                    error: Some(ItemError {
                        code: code.to_owned(),
                        message,
                    }),
                }
            }
        });
    }
    Ok(axum::Json(BulkResult { results }))
}

/// An item's customer as the body of its single request, read by the same reader (errors name
/// the field as that request's would).
fn as_body(customer: serde_json::Value) -> Result<Bytes, ApiError> {
    Ok(Bytes::from(
        serde_json::to_vec(&customer).map_err(anyhow::Error::from)?,
    ))
}

/// One item, applied as its single request would be.
async fn apply(
    state: &ApiState,
    account: &str,
    item: serde_json::Value,
    index: usize,
) -> Result<(StatusCode, Option<Customer>), ApiError> {
    let at = |field: &str| format!("items[{index}].{field}");
    let item: Item = serde_json::from_value(item)
        .map_err(|error| ApiError::validation(format!("items[{index}]"), error.to_string()))?;
    let id = || {
        item.id
            .clone()
            .ok_or_else(|| ApiError::validation(at("id"), "is required"))
    };
    let customer = || {
        item.customer
            .clone()
            .ok_or_else(|| ApiError::validation(at("customer"), "is required"))
    };
    match item.operation.as_str() {
        "CREATE" => {
            let row = create_one(state, account, &as_body(customer()?)?).await?;
            Ok((StatusCode::CREATED, Some(row.into())))
        }
        "UPDATE" => {
            let fields: CustomerFields = parse_json(&as_body(customer()?)?)?;
            let row = update_one(state, account, &id()?, fields, item.version).await?;
            Ok((StatusCode::OK, Some(row.into())))
        }
        "DELETE" => {
            delete_one(state, account, &id()?).await?;
            Ok((StatusCode::NO_CONTENT, None))
        }
        _ => Err(ApiError::validation(
            at("operation"),
            "CREATE, UPDATE or DELETE",
        )),
    }
}
