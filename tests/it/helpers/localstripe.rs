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
        let response: Value = reqwest::Client::new()
            .post(format!("{}/v1/payment_intents", self.url()))
            .basic_auth(STRIPE_KEY, Some(""))
            .form(&form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(response["status"], "succeeded", "{response}");
        response["id"].as_str().unwrap().to_owned()
    }
}

impl Drop for Localstripe {
    fn drop(&mut self) {
        let _ = self.process.start_kill();
    }
}
