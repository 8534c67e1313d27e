//! `localstripe` (PyPI), a third-party Stripe emulator: where it covers a test, it beats the
//! stand-in (`provider_api`).

use serde_json::Value;

use super::provider_api::STRIPE_KEY;

/// `localstripe` (PyPI, a third-party Stripe emulator that keeps real objects and lists their
/// events), installed by `scripts/services.sh` into `.local/venv`, on a port of its own.
pub struct Localstripe {
    pub port: u16,
    process: tokio::process::Child,
}

impl Localstripe {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let program = concat!(env!("CARGO_MANIFEST_DIR"), "/.local/venv/bin/localstripe");
        let process = tokio::process::Command::new(program)
            .args(["--port", &port.to_string(), "--from-scratch"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("localstripe (scripts/services.sh start installs it)");
        super::wait_listening("localstripe", port).await;
        Self { port, process }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates and confirms a PaymentIntent through the emulator's API, as a billing system
    /// would through Stripe's; localstripe then holds its `payment_intent.succeeded` event.
    pub async fn pay(&self, amount: i64, invoice_id: &str) -> String {
        let form = [
            ("amount", amount.to_string()),
            ("currency", "gbp".to_owned()),
            ("metadata[invoice_id]", invoice_id.to_owned()),
            ("payment_method", "pm_card_visa".to_owned()),
            ("confirm", "true".to_owned()),
        ];
        let response = self.post("/v1/payment_intents", &form).await;
        assert_eq!(response["status"], "succeeded", "{response}");
        response["id"].as_str().unwrap().to_owned()
    }
}

impl Localstripe {
    async fn post(&self, path: &str, form: &[(&str, String)]) -> Value {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.url()))
            .basic_auth(STRIPE_KEY, Some(""))
            .form(form)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        let body = response.bytes().await.unwrap();
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    }

    /// A customer with a card of Stripe's test `number` (`4242…` pays, `4000000000000341`
    /// attaches but declines every charge, `4000002760003184` always asks its holder to
    /// authenticate): settle's reference to it, `cus_…/pm_…`.
    pub async fn customer_with_card(&self, number: &str) -> String {
        let customer = self
            .post("/v1/customers", &[("name", "Acme Ltd".into())])
            .await;
        let customer = customer["id"].as_str().unwrap();
        self.attach_card(customer, number).await
    }

    /// Another card for the customer of `reference` (`cus_…/pm_…`): the new reference.
    pub async fn another_card(&self, reference: &str, number: &str) -> String {
        self.attach_card(reference.split('/').next().unwrap(), number)
            .await
    }

    /// A card of `number`, attached to `customer`: its reference.
    async fn attach_card(&self, customer: &str, number: &str) -> String {
        let card = self
            .post(
                "/v1/payment_methods",
                &[
                    ("type", "card".into()),
                    ("card[number]", number.into()),
                    ("card[exp_month]", "12".into()),
                    ("card[exp_year]", "2030".into()),
                    ("card[cvc]", "123".into()),
                ],
            )
            .await;
        let card = card["id"].as_str().unwrap();
        self.post(
            &format!("/v1/payment_methods/{card}/attach"),
            &[("customer", customer.to_owned())],
        )
        .await;
        format!("{customer}/{card}")
    }

    /// Posts every event to `url`, signed with `secret`, as Stripe's webhook endpoints do.
    pub async fn send_webhooks_to(&self, url: &str, secret: &str) {
        self.post(
            "/_config/webhooks/settle",
            &[("url", url.into()), ("secret", secret.into())],
        )
        .await;
    }

    /// The PaymentIntents localstripe holds for settle's invoice `invoice_id` (its metadata).
    pub async fn payment_intents_of(&self, invoice_id: &str) -> Vec<Value> {
        let list: Value = reqwest::Client::new()
            .get(format!("{}/v1/payment_intents?limit=100", self.url()))
            .basic_auth(STRIPE_KEY, Some(""))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|intent| intent["metadata"]["invoice_id"] == invoice_id)
            .cloned()
            .collect()
    }
}

impl Drop for Localstripe {
    fn drop(&mut self) {
        let _ = self.process.start_kill();
    }
}
