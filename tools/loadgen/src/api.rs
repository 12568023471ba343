//! Reading Tally's API: the small client the demo, the benchmark and the tests share.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    admin_token: String,
}

impl Api {
    pub fn new(base: &str, admin_token: &str) -> Api {
        Api {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
            base: base.trim_end_matches('/').to_string(),
            admin_token: admin_token.to_string(),
        }
    }

    /// Creates an org, or leaves it if it exists.
    pub async fn ensure_org(&self, org_id: &str, name: &str) -> anyhow::Result<()> {
        let response = self
            .client
            .post(format!("{}/v1/orgs", self.base))
            .bearer_auth(&self.admin_token)
            .json(&json!({"org_id": org_id, "name": name}))
            .send()
            .await?;
        match response.status().as_u16() {
            201 | 409 => Ok(()),
            s => bail!("creating org {org_id}: {s} {}", response.text().await.unwrap_or_default()),
        }
    }

    /// Creates a key (`read`, `billing` or `ingest`) for an org and returns it.
    pub async fn create_key(&self, org_id: &str, scope: &str) -> anyhow::Result<String> {
        let response = self
            .client
            .post(format!("{}/v1/orgs/{org_id}/keys", self.base))
            .bearer_auth(&self.admin_token)
            .json(&json!({"scope": scope}))
            .send()
            .await?;
        if response.status().as_u16() != 201 {
            bail!("creating a key: {}", response.status());
        }
        let value: Value = response.json().await?;
        let key = value["key"].as_str().context("key in answer")?;
        crate::secrets::remember(key);
        Ok(key.to_string())
    }

    /// Creates a service key, for the company's own emitters, that sends for `orgs`, or for all
    /// orgs when `None`, and returns it.
    pub async fn create_service_key(&self, orgs: Option<&[String]>) -> anyhow::Result<String> {
        let body = match orgs {
            Some(orgs) => json!({"name": "tally tools", "orgs": orgs}),
            None => json!({"name": "tally tools", "all_orgs": true}),
        };
        let response = self
            .client
            .post(format!("{}/v1/service-keys", self.base))
            .bearer_auth(&self.admin_token)
            .json(&body)
            .send()
            .await?;
        if response.status().as_u16() != 201 {
            bail!("creating a service key: {}", response.status());
        }
        let value: Value = response.json().await?;
        let key = value["key"].as_str().context("key in answer")?;
        crate::secrets::remember(key);
        Ok(key.to_string())
    }

    /// A portal link that signs `org_id`'s people into the usage page (docs/page.md).
    pub async fn portal_link(&self, org_id: &str) -> anyhow::Result<String> {
        let response = self
            .client
            .post(format!("{}/v1/orgs/{org_id}/portal-sessions", self.base))
            .bearer_auth(&self.admin_token)
            .json(&json!({}))
            .send()
            .await?;
        if response.status().as_u16() != 201 {
            bail!("creating a portal link: {}", response.status());
        }
        let value: Value = response.json().await?;
        let url = value["url"].as_str().context("url in answer")?;
        if let Some((_, token)) = url.split_once('#') {
            crate::secrets::remember(token);
        }
        Ok(url.to_string())
    }

    /// `GET /v1/pipeline` (admin): the stages' readiness and the consumers' lag.
    pub async fn pipeline(&self) -> anyhow::Result<Value> {
        let response = self
            .client
            .get(format!("{}/v1/pipeline", self.base))
            .bearer_auth(&self.admin_token)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("the pipeline's status: {}", response.status());
        }
        Ok(response.json().await?)
    }

    /// The usage answer. Like a careful dashboard, it asks again for up to 30 s while the api
    /// answers 5xx or not at all (PostgreSQL restarting, say); a 4xx is final.
    pub async fn usage(&self, org_id: &str, period: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut backoff = Duration::from_millis(100);
        loop {
            let sent = self
                .client
                .get(format!("{}/v1/orgs/{org_id}/usage?period={period}", self.base))
                .bearer_auth(&self.admin_token)
                .send()
                .await;
            let failure = match sent {
                Ok(response) if response.status().is_success() => {
                    return Ok(response.json().await?)
                }
                Ok(response) if response.status().is_client_error() => {
                    bail!("usage of {org_id} {period}: {}", response.status())
                }
                Ok(response) => {
                    anyhow::anyhow!("usage of {org_id} {period}: {}", response.status())
                }
                Err(e) => anyhow::Error::new(e).context(format!("usage of {org_id} {period}")),
            };
            if Instant::now() > deadline {
                return Err(failure);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Polls `usage` until `done` holds for it or `timeout` passes; returns the last answer.
    pub async fn wait_for_usage(
        &self,
        org_id: &str,
        period: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let usage = self.usage(org_id, period).await?;
            if done(&usage) || Instant::now() > deadline {
                return Ok(usage);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
