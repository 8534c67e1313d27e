//! `POST /customers/search`: wallee's entity query over the account's customers. A filter is a
//! tree: a `LEAF` compares one field with a value (`EQUALS`, `NOT_EQUALS`, `GREATER_THAN`,
//! `GREATER_THAN_OR_EQUAL`, `LESS_THAN`, `LESS_THAN_OR_EQUAL`, `CONTAINS`, `ISNULL`, `NOTNULL`),
//! `AND` and `OR` join their `children`; `orderBys` sort (then the id), `numberOfEntities` and
//! `startingEntity` page. Every part is bounded and every error names where it is
//! (`filter.children[1].fieldName`); what reaches SQL is the typed `repository::customers::Search`,
//! each value bound, never spliced.

use serde::Deserialize;
use utoipa::ToSchema;

use super::error::ApiError;
use crate::repository::customers::{Column, Condition, Op, Search, Value};

/// How deep a filter may nest, how many leaves it may have, how many orders, and the page.
const MAX_DEPTH: usize = 5;
const MAX_LEAVES: usize = 50;
const MAX_ORDERS: usize = 3;
const MAX_ENTITIES: i64 = 100;
const DEFAULT_ENTITIES: i64 = 50;
const MAX_STARTING: i64 = 10_000;
const MAX_VALUE: usize = 512;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntityQuery {
    pub filter: Option<QueryFilter>,
    #[serde(default)]
    pub order_bys: Vec<OrderBy>,
    /// 1 to 100 (default 50).
    pub number_of_entities: Option<i64>,
    /// How many matching customers to skip, 0 to 10,000.
    pub starting_entity: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryFilter {
    /// `LEAF`, `AND` or `OR`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A leaf's field: `id`, `legalName`, `givenName`, `familyName`, `email`,
    /// `preferredCurrency`, `language`, `externalId`, `createdAt`, `updatedAt`, `version`.
    pub field_name: Option<String>,
    pub operator: Option<String>,
    pub value: Option<serde_json::Value>,
    /// An `AND`'s or `OR`'s filters.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub children: Vec<QueryFilter>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderBy {
    /// `id`, `legalName`, `email`, `createdAt`, `updatedAt` or `version`.
    pub field_name: String,
    /// `ASC` (the default) or `DESC`.
    pub sorting: Option<String>,
}

fn column(name: &str) -> Option<Column> {
    Some(match name {
        "id" => Column::Id,
        "legalName" => Column::LegalName,
        "givenName" => Column::GivenName,
        "familyName" => Column::FamilyName,
        "email" => Column::Email,
        "preferredCurrency" => Column::PreferredCurrency,
        "language" => Column::Language,
        "externalId" => Column::ExternalId,
        "createdAt" => Column::CreatedAt,
        "updatedAt" => Column::UpdatedAt,
        "version" => Column::Version,
        _ => return None,
    })
}

fn operator(name: &str) -> Option<Op> {
    Some(match name {
        "EQUALS" => Op::Eq,
        "NOT_EQUALS" => Op::Ne,
        "GREATER_THAN" => Op::Gt,
        "GREATER_THAN_OR_EQUAL" => Op::Ge,
        "LESS_THAN" => Op::Lt,
        "LESS_THAN_OR_EQUAL" => Op::Le,
        "CONTAINS" => Op::Contains,
        "ISNULL" => Op::IsNull,
        "NOTNULL" => Op::NotNull,
        _ => return None,
    })
}

impl EntityQuery {
    /// The query checked and typed.
    pub fn into_search(self) -> Result<Search, ApiError> {
        let entities = self.number_of_entities.unwrap_or(DEFAULT_ENTITIES);
        if !(1..=MAX_ENTITIES).contains(&entities) {
            return Err(ApiError::validation(
                "numberOfEntities",
                format!("must be 1 to {MAX_ENTITIES}"),
            ));
        }
        let starting = self.starting_entity.unwrap_or(0);
        if !(0..=MAX_STARTING).contains(&starting) {
            return Err(ApiError::validation(
                "startingEntity",
                format!("must be 0 to {MAX_STARTING}"),
            ));
        }
        if self.order_bys.len() > MAX_ORDERS {
            return Err(ApiError::validation(
                "orderBys",
                format!("at most {MAX_ORDERS}"),
            ));
        }
        let mut order = Vec::new();
        for (i, by) in self.order_bys.iter().enumerate() {
            let field = format!("orderBys[{i}].fieldName");
            let column = column(&by.field_name)
                .filter(|c| {
                    matches!(
                        c,
                        Column::Id
                            | Column::LegalName
                            | Column::Email
                            | Column::CreatedAt
                            | Column::UpdatedAt
                            | Column::Version
                    )
                })
                .ok_or_else(|| {
                    ApiError::validation(
                        field,
                        "one of id, legalName, email, createdAt, updatedAt, version",
                    )
                })?;
            let descending = match by.sorting.as_deref() {
                None | Some("ASC") => false,
                Some("DESC") => true,
                Some(_) => {
                    return Err(ApiError::validation(
                        format!("orderBys[{i}].sorting"),
                        "ASC or DESC",
                    ));
                }
            };
            order.push((column, descending));
        }
        let mut leaves = 0;
        let condition = self
            .filter
            .map(|filter| condition(filter, "filter", 1, &mut leaves))
            .transpose()?;
        Ok(Search {
            condition,
            order,
            limit: entities,
            offset: starting,
        })
    }
}

fn condition(
    filter: QueryFilter,
    at: &str,
    depth: usize,
    leaves: &mut usize,
) -> Result<Condition, ApiError> {
    if depth > MAX_DEPTH {
        return Err(ApiError::validation(
            at,
            format!("filters nest at most {MAX_DEPTH} deep"),
        ));
    }
    match filter.kind.as_str() {
        "AND" | "OR" => {
            if filter.children.is_empty() {
                return Err(ApiError::validation(
                    format!("{at}.children"),
                    "an AND or OR needs at least one filter",
                ));
            }
            let mut children = Vec::with_capacity(filter.children.len());
            for (i, child) in filter.children.into_iter().enumerate() {
                children.push(condition(
                    child,
                    &format!("{at}.children[{i}]"),
                    depth + 1,
                    leaves,
                )?);
            }
            Ok(if filter.kind == "AND" {
                Condition::All(children)
            } else {
                Condition::Any(children)
            })
        }
        "LEAF" => {
            *leaves += 1;
            if *leaves > MAX_LEAVES {
                return Err(ApiError::validation(
                    at,
                    format!("a filter has at most {MAX_LEAVES} leaves"),
                ));
            }
            leaf(filter, at)
        }
        _ => Err(ApiError::validation(
            format!("{at}.type"),
            "LEAF, AND or OR",
        )),
    }
}

fn leaf(filter: QueryFilter, at: &str) -> Result<Condition, ApiError> {
    let field_at = format!("{at}.fieldName");
    let column = filter
        .field_name
        .as_deref()
        .and_then(column)
        .ok_or_else(|| {
            ApiError::validation(
                &field_at,
                "one of id, legalName, givenName, familyName, email, preferredCurrency, language, externalId, createdAt, updatedAt, version",
            )
        })?;
    let op = filter
        .operator
        .as_deref()
        .and_then(operator)
        .ok_or_else(|| {
            ApiError::validation(
                format!("{at}.operator"),
                "one of EQUALS, NOT_EQUALS, GREATER_THAN, GREATER_THAN_OR_EQUAL, LESS_THAN, LESS_THAN_OR_EQUAL, CONTAINS, ISNULL, NOTNULL",
            )
        })?;
    let value_at = format!("{at}.value");
    if column == Column::ExternalId && op != Op::Eq {
        return Err(ApiError::validation(
            format!("{at}.operator"),
            "externalId is compared with EQUALS only",
        ));
    }
    let value = match (op, filter.value) {
        (Op::IsNull | Op::NotNull, None | Some(serde_json::Value::Null)) => Value::None,
        (Op::IsNull | Op::NotNull, Some(_)) => {
            return Err(ApiError::validation(
                value_at,
                "ISNULL and NOTNULL take no value",
            ));
        }
        (_, None | Some(serde_json::Value::Null)) => {
            return Err(ApiError::validation(value_at, "is required"));
        }
        (_, Some(value)) => typed(column, op, value, &value_at)?,
    };
    Ok(Condition::Compare { column, op, value })
}

fn typed(column: Column, op: Op, value: serde_json::Value, at: &str) -> Result<Value, ApiError> {
    match column {
        Column::Version => value
            .as_i64()
            .map(Value::Integer)
            .ok_or_else(|| ApiError::validation(at, "a whole number")),
        Column::CreatedAt | Column::UpdatedAt => value
            .as_str()
            .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
            .map(|time| Value::Time(time.to_utc()))
            .ok_or_else(|| ApiError::validation(at, "an RFC 3339 time")),
        _ => {
            let text = value
                .as_str()
                .ok_or_else(|| ApiError::validation(at, "a string"))?;
            super::validate::at_most(text, MAX_VALUE).map_err(|m| ApiError::validation(at, m))?;
            if op == Op::Contains && text.is_empty() {
                return Err(ApiError::validation(
                    at,
                    "CONTAINS needs a non-empty string",
                ));
            }
            Ok(Value::Text(text.to_owned()))
        }
    }
}
