//! Every key that holds money includes the account (issue 28, deliverable 1): a tenant signs any
//! event for its own connection, and none of them reads, changes or announces another account's
//! rows, even with that account's ids.

use crate::helpers::*;

const T0: i64 = 1_790_000_000;

/// L3: a signed `payment_method.detached` whose id is `%` detaches that id only (none), not
/// every Stripe method of the account.
#[tokio::test]
async fn a_method_event_whose_id_is_a_like_wildcard_detaches_nothing_else() {
    let app = spawn_worker(Retries::PATIENT).await;
    for n in 1..=2 {
        app.create_customer(&format!("c{n}")).await; // Stripe customer cus_c{n}
        let event_id = format!("evt_att{n}");
        app.deliver_stripe(
            &StripeEvent::new("payment_method.attached", &event_id)
                .created(T0)
                .object_id(&format!("pm_card{n}"))
                .customer(Some(&format!("cus_c{n}")))
                .to_bytes(),
        )
        .await;
        assert_eq!(app.wait_processed("STRIPE", &event_id).await, "applied");
    }
    for (event_id, id) in [("evt_percent", "%"), ("evt_underscore", "pm_card_")] {
        app.deliver_stripe(
            &StripeEvent::new("payment_method.detached", event_id)
                .created(T0 + 10)
                .object_id(id)
                .customer(None)
                .to_bytes(),
        )
        .await;
        assert_eq!(app.wait_processed("STRIPE", event_id).await, "ignored");
    }
    for n in 1..=2 {
        let (_, methods) = app
            .api_get(&format!("/customers/c{n}/payment-methods"))
            .await;
        assert_eq!(methods[0]["status"], "ACTIVE", "{methods}");
        assert_eq!(methods[0]["onFile"], true, "{methods}");
    }
    app.stop().await;
}
