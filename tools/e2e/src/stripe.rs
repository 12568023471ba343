//! The Stripe stand-in for end-to-end tests, and the settings that point a stack at it.

use std::process::Command;

use serde_json::Value;
use tally_metering::Period;

use crate::{binary, Stack};

/// A Stripe stand-in running in the test process.
pub struct Stripe {
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
}

impl Stripe {
    pub async fn start() -> anyhow::Result<Stripe> {
        let key = format!("sk_test_e2e_{:016x}", rand::random::<u64>());
        let base = tally_stripe_standin::spawn_local(&key).await?;
        Ok(Stripe { base, key, http: reqwest::Client::new() })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.key).send().await?;
        anyhow::ensure!(r.status().is_success(), "GET {path}: {}", r.status());
        Ok(r.json().await?)
    }

    /// A test-only call to the stand-in (`/_standin/...`).
    pub async fn standin(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self.http.post(format!("{}/_standin/{path}", self.base)).json(&body).send().await?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "POST /_standin/{path}: {status} {body}");
        Ok(body)
    }

    /// Stripe's summary of `customer` on `meter` over the period.
    pub async fn summary(
        &self,
        meter: &str,
        customer: &str,
        period: Period,
    ) -> anyhow::Result<u64> {
        let (start, end) = (period.start().timestamp(), period.end().timestamp());
        let page = self.get(&format!("/v1/billing/meters/{meter}/event_summaries?customer={customer}&start_time={start}&end_time={end}")).await?;
        Ok(page["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["aggregated_value"].as_f64().unwrap_or(0.0) as u64)
            .sum())
    }
}

/// The settings that point a stack at the stand-in.
pub fn stripe_env(stripe: &Stripe, webhook_secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TALLY_STRIPE_SECRET_KEY", stripe.key.clone()),
        ("TALLY_STRIPE_API_BASE", stripe.base.clone()),
        ("TALLY_STRIPE_WEBHOOK_SECRET", webhook_secret.to_string()),
        ("TALLY_REPORT_INTERVAL_SECS", "1".to_string()),
        ("TALLY_STRIPE_MAX_RPS", "200".to_string()),
        ("TALLY_STRIPE_TIMEOUT_MS", "1000".to_string()),
    ]
}

/// Runs a `billing-reporter` command with the stack's settings; (exit code, stdout).
pub fn reporter_command(stack: &Stack, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = Command::new(binary("billing-reporter"))
        .args(args)
        .envs(stack.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "error")
        .output()?;
    Ok((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned()))
}
