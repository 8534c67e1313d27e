//! A customer: who it is, its invoices with their figures, and its payment methods (the one on
//! file first), each invoice linking to its timeline.

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use serde::Deserialize;

use super::filters;
use super::page::{Chrome, Refusal, money};
use super::session::Signed;
use super::state::ConsoleState;
use crate::repository::customers::CustomerRow;
use crate::repository::payment_methods::PaymentMethodRow;
use crate::repository::{customers, invoices, payment_methods};

/// Invoices shown on a customer's page, in id order.
const SHOWN: i64 = 200;

#[derive(Debug, Deserialize)]
pub struct WhichCustomer {
    account: String,
    id: String,
}

struct InvoiceLine {
    href: String,
    number: String,
    status: String,
    due: String,
    paid: String,
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "customer.html")]
struct CustomerPage {
    chrome: Chrome,
    customer: CustomerRow,
    invoices: Vec<InvoiceLine>,
    methods: Vec<PaymentMethodRow>,
}

pub async fn show(
    State(state): State<ConsoleState>,
    signed: Signed,
    Query(which): Query<WhichCustomer>,
) -> Result<impl IntoResponse, Refusal> {
    let not_found = || Refusal::NotFound(format!("no customer {}", which.id));
    if !signed.may_read(&which.account) {
        return Err(not_found());
    }
    let customer = customers::get(state.reads.pool(), &which.account, &which.id)
        .await?
        .ok_or_else(not_found)?;
    let invoices = invoices::list(
        state.reads.pool(),
        &which.account,
        Some(&which.id),
        None,
        None,
        SHOWN,
    )
    .await?
    .into_iter()
    .map(|row| InvoiceLine {
        href: super::links::invoice(&row.account_id, &row.id),
        number: row.number,
        status: super::page::label(&row.status),
        due: money(row.amount_due, row.currency.as_str()),
        paid: money(row.amount_paid, row.currency.as_str()),
    })
    .collect();
    let methods =
        payment_methods::for_customer(state.reads.pool(), &which.account, &which.id).await?;
    Ok(CustomerPage {
        chrome: signed.chrome(),
        customer,
        invoices,
        methods,
    })
}
