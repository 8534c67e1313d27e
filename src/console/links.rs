//! The console's links, each built in one place: ids are anyone's text (a tenant signs any id),
//! so every one goes into a query string encoded.

fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        query.append_pair(name, value);
    }
    format!("{path}?{}", query.finish())
}

/// One event's page.
pub fn event(provider: &str, event_id: &str) -> String {
    with_query(
        "/console/event",
        &[("provider", provider), ("id", event_id)],
    )
}

/// The events that name an id, in an account.
pub fn events_naming(id: &str, account_id: &str) -> String {
    with_query("/console/events", &[("q", id), ("account", account_id)])
}

/// An invoice's page in its account.
pub fn invoice(account_id: &str, invoice_id: &str) -> String {
    with_query(
        "/console/invoice",
        &[("account", account_id), ("id", invoice_id)],
    )
}

/// A customer's page in its account.
pub fn customer(account_id: &str, customer_id: &str) -> String {
    with_query(
        "/console/customer",
        &[("account", account_id), ("id", customer_id)],
    )
}

/// A payout's page in its account.
pub fn payout(account_id: &str, payout_id: &str) -> String {
    with_query(
        "/console/payout",
        &[("account", account_id), ("id", payout_id)],
    )
}
