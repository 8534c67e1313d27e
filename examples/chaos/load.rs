//! The load: invoices registered through the API, then their payments' webhooks posted the way
//! the providers post them. Every non-2xx is retried with backoff (a fresh Stripe signature each
//! time, as Stripe signs each attempt), some deliveries are sent twice, and the order is shuffled.
//!
//! The events are the providers' example objects (`tests/fixtures`), changed only in the ids,
//! amounts and times a plan needs: a Stripe payment arrives as `payment_intent.succeeded`,
//! `charge.succeeded` and `checkout.session.completed` (one payment, three events); a declined
//! Stripe attempt as `payment_intent.payment_failed` (two mails: customer and business); a
//! GoCardless payment as `payments.confirmed` and `payments.paid_out`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio::time::Instant;

use crate::deployment::{API_KEY_ID, API_SECRET, Deployment, GOCARDLESS_SECRET, STRIPE_SECRET};
use crate::fixtures::{
    GoCardlessEvent, StripeEvent, declined_for_insufficient_funds, gocardless_batch,
};

/// What an invoice should end as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Paid,
    Failed,
}

#[derive(Debug, Clone)]
pub struct Invoice {
    pub id: String,
    pub amount: i64,
    pub expect: Expect,
    /// A GoCardless payment the billing service registers before collecting.
    pub gocardless_payment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Stripe,
    GoCardless,
}

/// One webhook request.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub provider: Provider,
    pub body: Vec<u8>,
    pub event_ids: Vec<String>,
    /// Posted to this connection's own endpoint, signed with its secret; `None`: the
    /// deployment's own endpoint and secret.
    pub connection: Option<Connection>,
}

/// A provider connection of another account: its endpoint's id and its webhook secret.
#[derive(Debug, Clone)]
pub struct Connection {
    pub id: String,
    pub secret: String,
}

impl Webhook {
    /// One Stripe event, to `connection`'s endpoint or the deployment's own.
    pub fn stripe(event: &StripeEvent, connection: Option<Connection>) -> Self {
        Self {
            provider: Provider::Stripe,
            event_ids: vec![event.json()["id"].as_str().unwrap_or_default().to_owned()],
            body: event.to_bytes(),
            connection,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub invoices: Vec<Invoice>,
    pub webhooks: Vec<Webhook>,
}

/// A pseudo-random number from the OS's entropy (through a v4 UUID): enough to shuffle a load.
pub fn random(below: usize) -> usize {
    (uuid::Uuid::new_v4().as_u128() % below.max(1) as u128) as usize
}

pub fn shuffle<T>(items: &mut [T]) {
    for i in (1..items.len()).rev() {
        items.swap(i, random(i + 1));
    }
}

impl Plan {
    /// `count` invoices named after `tag`: half paid by Stripe, a quarter by GoCardless, a
    /// quarter declined by Stripe. GoCardless events go `per_batch` to a webhook.
    pub fn new(tag: &str, count: usize, per_batch: usize) -> Self {
        let t0 = chrono::Utc::now().timestamp() - 3600;
        let mut plan = Self::default();
        let mut gocardless = Vec::new();
        for i in 0..count {
            let id = format!("inv_{tag}_{i}");
            let amount = 1000 + (i as i64 % 50) * 10;
            let intent = format!("pi_{tag}_{i}");
            let stripe = |kind: &str, suffix: &str| {
                StripeEvent::new(kind, &format!("evt_{tag}_{i}_{suffix}"))
                    .created(t0 + i as i64)
                    .payment(&intent, amount, "gbp")
                    .invoice_id(&id)
            };
            let (expect, gocardless_payment) = match i % 4 {
                0 | 1 => {
                    for (kind, suffix) in [
                        ("payment_intent.succeeded", "pi"),
                        ("charge.succeeded", "ch"),
                        ("checkout.session.completed", "cs"),
                    ] {
                        plan.stripe(stripe(kind, suffix));
                    }
                    (Expect::Paid, None)
                }
                2 => {
                    let payment = format!("PM{}{i}", tag.to_uppercase().replace('_', ""));
                    for (action, offset) in [("confirmed", 0), ("paid_out", 2)] {
                        let at = chrono::DateTime::from_timestamp(t0 + i as i64, 0)
                            .unwrap_or_default()
                            + chrono::Duration::days(offset);
                        gocardless.push(
                            GoCardlessEvent::payment(
                                &format!("EV{payment}{action}"),
                                action,
                                &payment,
                            )
                            .created_at(&at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                        );
                    }
                    (Expect::Paid, Some(payment))
                }
                _ => {
                    plan.stripe(
                        stripe("payment_intent.payment_failed", "failed")
                            .object(declined_for_insufficient_funds),
                    );
                    (Expect::Failed, None)
                }
            };
            plan.invoices.push(Invoice {
                id,
                amount,
                expect,
                gocardless_payment,
            });
        }
        for batch in gocardless.chunks(per_batch.max(1)) {
            plan.webhooks.push(Webhook {
                provider: Provider::GoCardless,
                event_ids: batch
                    .iter()
                    .map(|e| e.json()["id"].as_str().unwrap_or_default().to_owned())
                    .collect(),
                body: gocardless_batch(batch.iter().cloned()),
                connection: None,
            });
        }
        shuffle(&mut plan.webhooks);
        plan
    }

    fn stripe(&mut self, event: StripeEvent) {
        self.webhooks.push(Webhook::stripe(&event, None));
    }

    pub fn event_ids(&self) -> BTreeSet<String> {
        self.webhooks
            .iter()
            .flat_map(|w| w.event_ids.clone())
            .collect()
    }

    /// Mails the plan should cause: the customer and the business, for each declined invoice.
    pub fn mails(&self) -> usize {
        2 * self
            .invoices
            .iter()
            .filter(|i| i.expect == Expect::Failed)
            .count()
    }
}

/// The internal API, as the billing service calls it.
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(deployment: &Deployment) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: deployment.url(""),
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<()> {
        // Registrations are retried too: the API answers 503 while the database is away.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let response = self
                .http
                .post(format!("{}{path}", self.base))
                .basic_auth(API_KEY_ID, Some(API_SECRET))
                .json(&body)
                .send()
                .await;
            match response {
                Ok(r) if r.status().is_success() || r.status() == 409 => return Ok(()),
                Ok(r) if r.status().is_client_error() => {
                    anyhow::bail!(
                        "POST {path}: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )
                }
                _ if Instant::now() > deadline => anyhow::bail!("POST {path}: no answer in 300 s"),
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// The customer, its invoices and the GoCardless payments, as the billing service does before
    /// collecting.
    pub async fn register(&self, plan: &Plan) -> anyhow::Result<()> {
        self.post(
            "/customers",
            json!({
                "id": "acme",
                "legalName": "Acme Ltd",
                "email": "acme@example.com",
                "billingEmails": ["billing+acme@example.com"],
            }),
        )
        .await?;
        let registrations = plan.invoices.iter().map(|invoice| async move {
            self.post(
                "/invoices",
                json!({
                    "id": invoice.id,
                    "customerId": "acme",
                    "number": format!("INV-{}", invoice.id),
                    "currency": "GBP",
                    "amountDue": invoice.amount,
                    "dueDate": "2026-12-31",
                }),
            )
            .await?;
            if let Some(payment) = &invoice.gocardless_payment {
                self.post(
                    &format!("/invoices/{}/payments", invoice.id),
                    json!({"provider": "GOCARDLESS", "providerPaymentId": payment, "amount": invoice.amount, "currency": "GBP"}),
                )
                .await?;
            }
            anyhow::Ok(())
        });
        // A few at a time: the billing service is one caller among many.
        let mut pending = futures_util::stream::iter(registrations).buffer_unordered(16);
        while let Some(result) = pending.next().await {
            result?;
        }
        Ok(())
    }
}

/// How the provider-like sender behaves.
#[derive(Debug, Clone, Copy)]
pub struct Sending {
    /// Webhook requests started per second.
    pub rate: f64,
    /// Fraction of webhooks the provider delivers a second time, later.
    pub duplicates: f64,
    /// Copies of every webhook posted at once (a provider's retry storm).
    pub copies: usize,
    /// Give up a webhook that got no 2xx by then (a provider's retry horizon, scaled down).
    pub give_up_after: Duration,
}

impl Default for Sending {
    fn default() -> Self {
        Self {
            rate: 60.0,
            duplicates: 0.1,
            copies: 1,
            give_up_after: Duration::from_secs(900),
        }
    }
}

/// What the sender saw.
#[derive(Debug, Default)]
pub struct Sent {
    pub acked: BTreeSet<String>,
    pub posts: usize,
    pub refused: usize,
}

/// The provider: posts each webhook to the `serve` processes in turn, as a load balancer in
/// front of them would.
pub struct Sender {
    http: reqwest::Client,
    /// Each `serve` process's base URL.
    bases: Vec<String>,
    next: std::sync::atomic::AtomicUsize,
}

pub fn stripe_signature(body: &[u8], timestamp: i64) -> String {
    settle::providers::stripe::sign(&STRIPE_SECRET.to_owned().into(), timestamp, body)
}

impl Sender {
    pub fn new(deployment: &Deployment) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            bases: deployment.urls(""),
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Posts once; the status (0: no answer).
    pub async fn post(&self, webhook: &Webhook) -> u16 {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = &self.bases[turn % self.bases.len()];
        let provider = match webhook.provider {
            Provider::Stripe => "stripe",
            Provider::GoCardless => "gocardless",
        };
        let url = match &webhook.connection {
            Some(connection) => format!("{base}/webhooks/{provider}/{}", connection.id),
            None => format!("{base}/webhooks/{provider}"),
        };
        let secret = webhook.connection.as_ref().map_or_else(
            || match webhook.provider {
                Provider::Stripe => STRIPE_SECRET,
                Provider::GoCardless => GOCARDLESS_SECRET,
            },
            |connection| connection.secret.as_str(),
        );
        let secret = secret.to_owned().into();
        let request = match webhook.provider {
            Provider::Stripe => self.http.post(url).header(
                "Stripe-Signature",
                settle::providers::stripe::sign(
                    &secret,
                    chrono::Utc::now().timestamp(),
                    &webhook.body,
                ),
            ),
            Provider::GoCardless => self.http.post(url).header(
                "Webhook-Signature",
                settle::providers::gocardless::sign(&secret, &webhook.body),
            ),
        };
        match request.body(webhook.body.clone()).send().await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Delivers until a 2xx or the horizon, backing off from 0.5 s to 20 s.
    async fn deliver(&self, webhook: &Webhook, horizon: Instant, sent: &Mutex<Sent>) {
        let mut pause = Duration::from_millis(500);
        loop {
            let status = self.post(webhook).await;
            let ok = (200..300).contains(&status);
            {
                let mut sent = sent.lock().unwrap_or_else(|e| e.into_inner());
                sent.posts += 1;
                if ok {
                    sent.acked.extend(webhook.event_ids.iter().cloned());
                    return;
                }
                sent.refused += 1;
            }
            if Instant::now() + pause > horizon {
                return;
            }
            let jitter = Duration::from_millis(random(250) as u64);
            tokio::time::sleep(pause + jitter).await;
            pause = (pause * 2).min(Duration::from_secs(20));
        }
    }

    /// Sends every webhook of the plan at `sending.rate`, and returns once each got its 2xx (or
    /// its horizon passed).
    pub async fn send(self: Arc<Self>, webhooks: Vec<Webhook>, sending: Sending) -> Sent {
        let sent = Arc::new(Mutex::new(Sent::default()));
        let horizon = Instant::now() + sending.give_up_after;
        let interval = Duration::from_secs_f64(1.0 / sending.rate.max(0.1));
        let mut tasks = tokio::task::JoinSet::new();
        let mut next = Instant::now();
        for webhook in webhooks {
            tokio::time::sleep_until(next).await;
            next += interval;
            let duplicate = (random(1000) as f64) < sending.duplicates * 1000.0;
            for copy in 0..sending.copies + usize::from(duplicate) {
                let (sender, webhook, sent) = (self.clone(), webhook.clone(), sent.clone());
                // A duplicate comes a little later, as a provider's second delivery does.
                let delay = if copy >= sending.copies {
                    Duration::from_millis(200 + random(3000) as u64)
                } else {
                    Duration::ZERO
                };
                tasks.spawn(async move {
                    tokio::time::sleep(delay).await;
                    sender.deliver(&webhook, horizon, &sent).await;
                });
            }
        }
        while tasks.join_next().await.is_some() {}
        Arc::try_unwrap(sent)
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .unwrap_or_default()
    }
}
