//! Links into GoCardless's dashboard: `https://manage[-sandbox].gocardless.com/<page>/<id>`.

use serde_json::Value;

/// The page of the resource the event is about (`resource_type` and its link), else the event's.
/// GoCardless's events do not say sandbox or live: the connection's mode does (`test_mode`).
pub fn url(event: &Value, test_mode: bool) -> Option<String> {
    let resource = event.get("resource_type").and_then(Value::as_str);
    let linked = resource.and_then(|resource| {
        let (page, link) = match resource {
            "payments" => ("payments", "payment"),
            "mandates" => ("mandates", "mandate"),
            "refunds" => ("refunds", "refund"),
            "payouts" => ("payouts", "payout"),
            "subscriptions" => ("subscriptions", "subscription"),
            _ => return None,
        };
        Some((page, event.pointer(&format!("/links/{link}"))?.as_str()?))
    });
    let (page, id) = match linked {
        Some(linked) => linked,
        None => ("events", event.get("id")?.as_str()?),
    };
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let host = if test_mode {
        "manage-sandbox.gocardless.com"
    } else {
        "manage.gocardless.com"
    };
    Some(format!("https://{host}/{page}/{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn links_the_resource_in_the_connection_mode() {
        let event = json!({"id": "EV1", "resource_type": "payments", "links": {"payment": "PM9"}});
        assert_eq!(
            url(&event, true).as_deref(),
            Some("https://manage-sandbox.gocardless.com/payments/PM9")
        );
        let other = json!({"id": "EV2", "resource_type": "creditors", "links": {}});
        assert_eq!(
            url(&other, false).as_deref(),
            Some("https://manage.gocardless.com/events/EV2")
        );
        let hostile =
            json!({"id": "EV3", "resource_type": "payments", "links": {"payment": "../x"}});
        assert_eq!(url(&hostile, false), None);
    }
}
