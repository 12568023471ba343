//! The demo's Stripe part: one org subscribes through Checkout (completed on the Stripe stand-in,
//! as a customer would on Stripe's page), and its usage is then read back from Stripe's meters.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tally_metering::Period;

pub struct StripeDemo {
    http: reqwest::Client,
    api_base: String,
    admin_token: String,
    stripe_base: String,
    stripe_key: String,
}

impl StripeDemo {
    /// The stand-in `make up` started, if it is there (real Stripe is never driven by the demo).
    pub async fn connect(api_base: &str, admin_token: &str) -> Option<StripeDemo> {
        let stripe_base = std::env::var("TALLY_STRIPE_API_BASE")
            .unwrap_or_else(|_| "http://127.0.0.1:12111".into());
        let stripe_key = match std::env::var("TALLY_STRIPE_SECRET_KEY") {
            Ok(k) if !k.is_empty() => k,
            _ => std::fs::read_to_string(".tally/stripe-secret-key").ok()?.trim().to_string(),
        };
        let http = reqwest::Client::new();
        let up = http
            .get(format!("{stripe_base}/_standin/healthz"))
            .send()
            .await
            .ok()?
            .status()
            .is_success();
        up.then(|| StripeDemo {
            http,
            api_base: api_base.to_string(),
            admin_token: admin_token.to_string(),
            stripe_base,
            stripe_key,
        })
    }

    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api_base))
            .bearer_auth(&self.admin_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status} {body}");
        }
        Ok(body)
    }

    /// Subscribes `org` to `tier` through Checkout unless it is linked already; returns its Stripe
    /// customer id.
    pub async fn subscribe(&self, org: &str, tier: &str) -> anyhow::Result<String> {
        let link = &self
            .api(reqwest::Method::GET, &format!("/v1/orgs/{org}/subscription"), None)
            .await?["stripe"];
        if let Some(customer) = link["customer_id"].as_str() {
            return Ok(customer.to_string());
        }
        let body = json!({"tier": tier, "success_url": "https://example.com/subscribed", "cancel_url": "https://example.com/cancelled"});
        let session = self
            .api(reqwest::Method::POST, &format!("/v1/orgs/{org}/checkout"), Some(body))
            .await?;
        let id = session["session_id"].as_str().context("a session id")?;
        println!(
            "{org}: Checkout Session {id} for {tier}: {}",
            session["url"].as_str().unwrap_or("")
        );
        let done = self
            .http
            .post(format!("{}/_standin/checkout/sessions/{id}/complete", self.stripe_base))
            .json(&json!({}))
            .send()
            .await?;
        if !done.status().is_success() {
            bail!("completing {id} on the stand-in: {}", done.status());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let sub = self
                .api(reqwest::Method::GET, &format!("/v1/orgs/{org}/subscription"), None)
                .await?;
            if let Some(customer) = sub["stripe"]["customer_id"].as_str() {
                println!("{org}: subscribed (Stripe customer {customer}; the webhook linked it and recorded the tier)");
                return Ok(customer.to_string());
            }
            if Instant::now() > deadline {
                bail!(
                    "the checkout webhook did not link {org} within 30 s (see .tally/logs/api.log)"
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until Stripe's meters show `org`'s usage for `period`, and prints both.
    pub async fn show_meters(
        &self,
        org: &str,
        customer: &str,
        period: Period,
    ) -> anyhow::Result<()> {
        let setup: Value = serde_json::from_str(
            &std::fs::read_to_string(".tally/stripe-setup.json")
                .context(".tally/stripe-setup.json (make up writes it)")?,
        )?;
        let (start, end) = (period.start().timestamp(), period.end().timestamp());
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let usage = self
                .api(reqwest::Method::GET, &format!("/v1/orgs/{org}/usage?period={period}"), None)
                .await?;
            let mut stripe = Vec::new();
            for metric in ["traces", "payload_bytes"] {
                let meter = setup["meters"][metric].as_str().context("meter ids")?;
                let url = format!("{}/v1/billing/meters/{meter}/event_summaries?customer={customer}&start_time={start}&end_time={end}", self.stripe_base);
                let page: Value =
                    self.http.get(url).bearer_auth(&self.stripe_key).send().await?.json().await?;
                stripe.push(page["data"][0]["aggregated_value"].as_f64().unwrap_or(0.0) as u64);
            }
            let tally = [
                usage["traces"].as_u64().unwrap_or(0),
                usage["payload_bytes"].as_u64().unwrap_or(0),
            ];
            if stripe == tally {
                println!("\nStripe's meters for {org} ({customer}), {period}: traces {}, payload bytes {}: equal to Tally's usage", stripe[0], stripe[1]);
                println!(
                    "(billing-reporter reconcile --period {period} compares every linked org)"
                );
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("Stripe's meters for {org} show {stripe:?}, Tally {tally:?}, after 90 s (see .tally/logs/billing-reporter.log)");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
