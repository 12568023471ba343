//! Webhook deliveries as Stripe makes them: `POST <url>` with the event as the JSON body and
//! `Stripe-Signature: t=<unix secs>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, a fresh signature
//! on every attempt. One sender delivers every event in order, each retried with backoff until it
//! gets a 2xx or runs out of attempts. The secret is never logged nor shown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::mpsc;

/// Attempts per delivery.
pub const ATTEMPTS: u32 = 5;
/// Each attempt's time limit.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// The wait after failed attempt `n` (1-based): 0.5 s, 1 s, 2 s, 4 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500 << (attempt.saturating_sub(1)).min(4))
}

/// Where events go, and the secret they are signed with.
#[derive(Clone)]
pub struct Endpoint {
    pub url: String,
    pub secret: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("url", &self.url).field("secret", &"<redacted>").finish()
    }
}

impl Endpoint {
    /// Checks a configured endpoint: an `http://` URL (the stand-in speaks no TLS) and a
    /// non-empty secret.
    pub fn new(url: &str, secret: &str) -> Result<Endpoint, String> {
        if !url.starts_with("http://") {
            return Err(format!(
                "webhook url {url:?} must start with http:// (the stand-in delivers without TLS)"
            ));
        }
        if secret.is_empty() {
            return Err("the webhook secret must not be empty".into());
        }
        Ok(Endpoint { url: url.to_string(), secret: secret.to_string() })
    }
}

/// The `v1` signature: hex HMAC-SHA256 keyed with the whole secret (`whsec_...`) over
/// `"<timestamp>.<body>"`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The `Stripe-Signature` header's value.
pub fn signature_header(secret: &str, timestamp: i64, body: &str) -> String {
    format!("t={timestamp},v1={}", signature(secret, timestamp, body))
}

/// One delivery of one event, as `GET /_standin/webhook/deliveries` shows it (and the state file
/// keeps it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    pub attempts: u32,
    /// The status of the last answer, `None` if none came (connection refused, timeout).
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered: bool,
    /// A redelivery asked for with `POST /_standin/events/{id}/resend`.
    pub resend: bool,
}

/// An event to deliver: its body is fixed when it is queued.
pub struct Job {
    pub delivery: usize,
    pub event_id: String,
    pub body: String,
    pub endpoint: Endpoint,
}

/// What the sender reports back after each attempt.
pub trait Record: Send + 'static {
    fn attempted(
        &self,
        delivery: usize,
        attempt: u32,
        status: Option<u16>,
        error: Option<String>,
        delivered: bool,
    );
    fn delivered(&self, event_id: &str);
}

/// Delivers jobs one after another, in the order queued, until the queue closes.
pub async fn sender(mut jobs: mpsc::UnboundedReceiver<Job>, record: impl Record) {
    let client =
        reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build().expect("an http client");
    while let Some(job) = jobs.recv().await {
        for attempt in 1..=ATTEMPTS {
            let t = chrono::Utc::now().timestamp();
            let result = client
                .post(&job.endpoint.url)
                .header("content-type", "application/json")
                .header("user-agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
                .header("stripe-signature", signature_header(&job.endpoint.secret, t, &job.body))
                .body(job.body.clone())
                .send()
                .await;
            let (status, error) = match result {
                Ok(r) => (Some(r.status().as_u16()), None),
                Err(e) => (None, Some(e.without_url().to_string())),
            };
            let ok = status.is_some_and(|s| (200..300).contains(&s));
            record.attempted(job.delivery, attempt, status, error, ok);
            if ok {
                record.delivered(&job.event_id);
                break;
            }
            if attempt == ATTEMPTS {
                tracing::warn!(event = %job.event_id, url = %job.endpoint.url, ?status, "webhook not delivered after {ATTEMPTS} attempts");
            } else {
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
}

/// The queue of deliveries; the sender starts with the first job (inside the runtime).
pub struct DeliveryQueue {
    tx: mpsc::UnboundedSender<Job>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
}

impl Default for DeliveryQueue {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        DeliveryQueue { tx, rx: Mutex::new(Some(rx)) }
    }
}

impl DeliveryQueue {
    pub fn push(self: &Arc<Self>, job: Job, record: impl Record) {
        if let Some(rx) = self.rx.lock().expect("webhook queue lock").take() {
            tokio::spawn(sender(rx, record));
        }
        // The receiver lives as long as the sender task, which ends only when the queue drops.
        let _ = self.tx.send(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
        mac.update(b"1700000000.{\"id\":\"evt_1\"}");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(signature("whsec_test", 1_700_000_000, "{\"id\":\"evt_1\"}"), expected);
        assert_eq!(
            signature_header("whsec_test", 1_700_000_000, "{\"id\":\"evt_1\"}"),
            format!("t=1700000000,v1={expected}")
        );
        assert_ne!(
            signature("whsec_test", 1_700_000_001, "{}"),
            signature("whsec_test", 1_700_000_000, "{}")
        );
        assert!(!format!("{:?}", Endpoint::new("http://x", "whsec_secret").unwrap())
            .contains("whsec_secret"));
        assert!(Endpoint::new("https://x", "whsec_1").is_err());
        assert!(Endpoint::new("http://x", "").is_err());
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(4), Duration::from_secs(4));
    }
}
