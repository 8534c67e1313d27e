//! Links into Stripe's dashboard: `https://dashboard.stripe.com/[acct_…/][test/]<page>/<id>`.

use serde_json::Value;

use crate::providers::lookup::searchable;

const BASE: &str = "https://dashboard.stripe.com";

/// The page of the event's object when the dashboard has one for its kind, else the event's.
/// The event's `livemode` says test or live; `test_mode` stands in when it is missing.
pub fn url(event: &Value, test_mode: bool) -> Option<String> {
    let object_id = event.pointer("/data/object/id").and_then(Value::as_str);
    let (page, id) = match object_id.and_then(page_of) {
        Some(page) => (page, object_id?),
        None => ("events", event.get("id")?.as_str()?),
    };
    if !searchable(id) || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let mut url = BASE.to_owned();
    if let Some(account) = event.get("account").and_then(Value::as_str)
        && account.starts_with("acct_")
        && account[5..].chars().all(|c| c.is_ascii_alphanumeric())
    {
        url += &format!("/{account}");
    }
    let live = event
        .get("livemode")
        .and_then(Value::as_bool)
        .unwrap_or(!test_mode);
    if !live {
        url += "/test";
    }
    Some(format!("{url}/{page}/{id}"))
}

/// The dashboard's page for an object id's kind.
fn page_of(id: &str) -> Option<&'static str> {
    let prefix = id.split('_').next()?;
    Some(match prefix {
        "pi" | "ch" | "py" => "payments",
        "re" | "pyr" => "refunds",
        "dp" | "du" => "disputes",
        "po" => "payouts",
        "cus" => "customers",
        "pm" => "payment_methods",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn links_the_object_in_its_mode_and_account() {
        let event = json!({"id": "evt_1", "livemode": false, "account": "acct_1Ab",
                           "data": {"object": {"id": "pi_3Abc", "object": "payment_intent"}}});
        assert_eq!(
            url(&event, false).as_deref(),
            Some("https://dashboard.stripe.com/acct_1Ab/test/payments/pi_3Abc")
        );
        let live = json!({"id": "evt_1", "livemode": true, "data": {"object": {"id": "re_9"}}});
        assert_eq!(
            url(&live, true).as_deref(),
            Some("https://dashboard.stripe.com/refunds/re_9")
        );
    }

    #[test]
    fn falls_back_to_the_event_and_refuses_what_is_not_an_id() {
        let event = json!({"id": "evt_2", "livemode": true, "data": {"object": {"id": "txn_1"}}});
        assert_eq!(
            url(&event, false).as_deref(),
            Some("https://dashboard.stripe.com/events/evt_2")
        );
        let hostile = json!({"id": "evt_2/../x", "data": {"object": {"id": "pi_<script>"}}});
        assert_eq!(url(&hostile, false), None);
    }
}
