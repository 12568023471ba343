//! Delivering events to ingest the way a careful emitter does: in batches, retrying a batch
//! that got a 5xx or no answer with the same event ids (so nothing is lost and nothing counted
//! twice), and giving up only on a 4xx.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::stream::{self, StreamExt};
use serde_json::Value;

#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    base: String,
    key: String,
    pub accepted: Arc<AtomicU64>,
    pub rejected: Arc<AtomicU64>,
    pub retries: Arc<AtomicU64>,
}

impl Sender {
    pub fn new(ingest_base: &str, ingest_key: &str) -> Sender {
        Sender {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(64)
                .build()
                .expect("http client"),
            base: ingest_base.trim_end_matches('/').to_string(),
            key: ingest_key.to_string(),
            accepted: Arc::default(),
            rejected: Arc::default(),
            retries: Arc::default(),
        }
    }

    /// Sends one batch (a JSON array body) to `/v1/events` until ingest answers 200. Returns the
    /// answer.
    pub async fn send_body(&self, body: Vec<u8>) -> anyhow::Result<Value> {
        let answer = self.send_to("/v1/events", "application/json", body).await?;
        let value: Value = serde_json::from_slice(&answer).context("ingest answer")?;
        self.accepted.fetch_add(value["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
        self.rejected.fetch_add(value["rejected"].as_u64().unwrap_or(0), Ordering::Relaxed);
        Ok(value)
    }

    /// Sends one body to `path` until ingest answers 200; a 5xx, a timeout or a dropped
    /// connection is retried with the same body, a 4xx is an error. Returns the answer's bytes.
    pub async fn send_to(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<bytes::Bytes> {
        let url = format!("{}{path}", self.base);
        let mut backoff = Duration::from_millis(100);
        for _ in 0..60 {
            let result = self
                .client
                .post(&url)
                .bearer_auth(&self.key)
                .header("content-type", content_type)
                .body(body.clone())
                .send()
                .await;
            match result {
                Ok(response) if response.status().is_success() => {
                    return response.bytes().await.context("ingest answer");
                }
                Ok(response) if response.status().is_client_error() => {
                    let status = response.status();
                    bail!(
                        "ingest refused a batch with {status}: {}",
                        response.text().await.unwrap_or_default()
                    );
                }
                Ok(_) | Err(_) => {
                    // 5xx, a timeout or a dropped connection: the same events again, later.
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        bail!("ingest did not accept a batch after 60 attempts")
    }

    /// Sends events in batches of `batch`, `concurrency` requests at a time.
    pub async fn send_all(
        &self,
        events: &[Value],
        batch: usize,
        concurrency: usize,
    ) -> anyhow::Result<()> {
        let bodies: Vec<Vec<u8>> =
            events.chunks(batch).map(|chunk| serde_json::to_vec(chunk).expect("json")).collect();
        let results: Vec<anyhow::Result<Value>> = stream::iter(bodies)
            .map(|body| self.send_body(body))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for result in results {
            let value = result?;
            if value["rejected"].as_u64().unwrap_or(0) > 0 {
                let first = value["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["status"] == "rejected");
                bail!("ingest rejected events: {}", first.cloned().unwrap_or_default());
            }
        }
        Ok(())
    }
}
