//! How an operator finds an event again: the ids it names, bounded as the inbox stores them.
//! Each provider says which fields hold ids (`Rules::object_ids`); this keeps what is safe to
//! index and search by.

use serde_json::Value;

/// At most this many ids per event: an event names a handful (its own, its object's, the
/// payment, mandate, refund and payout it is about), and a tenant's event cannot make more.
pub const MAX_IDS: usize = 8;
/// An id longer than this is not one the providers write.
pub const MAX_ID_LEN: usize = 255;

/// The strings at `fields` of `object` that can be ids (non-empty, short, no control
/// characters: what the inbox stores and the console's search box can type), once each.
pub fn ids_at(object: &Value, fields: &[&str], into: &mut Vec<String>) {
    for field in fields {
        if into.len() == MAX_IDS {
            return;
        }
        if let Some(id) = object.get(*field).and_then(Value::as_str)
            && searchable(id)
            && !into.iter().any(|known| known == id)
        {
            into.push(id.to_owned());
        }
    }
}

/// Whether an operator could search by `id`.
pub fn searchable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_bounded_deduplicated_and_printable() {
        let object = json!({
            "id": "pi_1", "payment_intent": "pi_1", "charge": "ch_\u{0}1",
            "refund": "x".repeat(MAX_ID_LEN + 1), "payout": "", "mandate": 7, "customer": "cus_1",
        });
        let mut ids = Vec::new();
        ids_at(
            &object,
            &[
                "id",
                "payment_intent",
                "charge",
                "refund",
                "payout",
                "mandate",
                "customer",
            ],
            &mut ids,
        );
        assert_eq!(ids, ["pi_1", "cus_1"]);
    }

    #[test]
    fn no_event_names_more_than_the_bound() {
        let fields: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
        let object: serde_json::Map<String, Value> = fields
            .iter()
            .map(|field| (field.clone(), Value::String(format!("id_{field}"))))
            .collect();
        let names: Vec<&str> = fields.iter().map(String::as_str).collect();
        let mut ids = Vec::new();
        ids_at(&Value::Object(object), &names, &mut ids);
        assert_eq!(ids.len(), MAX_IDS);
    }
}
