//! Tally's HTTP client for Stripe: async-stripe's request and response types over reqwest, with
//! the retry policy money needs.
//!
//! async-stripe's own client retries without the caller's idempotency key and hides response
//! headers. This one implements async-stripe's `StripeClient` trait and:
//! - sends every POST with an `Idempotency-Key` (the caller's, from
//!   `RequestStrategy::Idempotent`, or one made for the call), the same on every attempt;
//! - retries 409, 429, 5xx, timeouts and connection errors with exponential backoff and full
//!   jitter, and follows `Stripe-Should-Retry` when Stripe sends it;
//! - gives up on any other 4xx at once, returning Stripe's error (type, code, message);
//! - caps the request rate (`TALLY_STRIPE_MAX_RPS`) across all callers;
//! - keeps connections alive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use stripe_client_core::{
    CustomizedStripeRequest, RequestStrategy, StripeClient, StripeClientErr, StripeMethod,
};
use tally_common::settings::Secret;
use tokio::sync::Mutex;

/// Why a call to Stripe did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StripeCallError {
    /// A final refusal: retrying the same request cannot succeed.
    #[error("Stripe answered {status} {kind}{}: {message}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Rejected { status: u16, kind: String, code: Option<String>, message: String },
    /// Retryable failures until the attempts ran out.
    #[error("no answer from Stripe after {attempts} attempts; last: {last}")]
    GaveUp { attempts: u32, last: String },
    /// Stripe's answer did not parse into async-stripe's type.
    #[error("could not read Stripe's answer: {0}")]
    Parse(String),
}

impl StripeClientErr for StripeCallError {
    fn deserialize_err(msg: impl std::fmt::Display) -> Self {
        StripeCallError::Parse(msg.to_string())
    }
}

/// How calls are retried and paced.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Per attempt.
    pub timeout: Duration,
    /// Requests per second, over all calls of this client.
    pub max_rps: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
            timeout: Duration::from_secs(20),
            max_rps: 20,
        }
    }
}

/// Paces requests: at most `rps` start per second.
#[derive(Debug)]
struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    async fn wait(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }
}

#[derive(Clone)]
pub struct StripeHttp {
    http: reqwest::Client,
    base: String,
    key: Secret,
    policy: RetryPolicy,
    pacer: Arc<Pacer>,
}

impl StripeHttp {
    pub fn new(base: &str, key: Secret, policy: RetryPolicy) -> StripeHttp {
        let interval = Duration::from_secs(1) / policy.max_rps.max(1);
        StripeHttp {
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            base: base.trim_end_matches('/').to_string(),
            key,
            pacer: Arc::new(Pacer { interval, next: Mutex::new(Instant::now()) }),
            policy,
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.policy.base_delay.saturating_mul(1u32 << attempt.min(16));
        let cap = exp.min(self.policy.max_delay);
        cap.mul_f64(rand::rng().random::<f64>())
    }

    async fn call(&self, req: CustomizedStripeRequest) -> Result<Bytes, StripeCallError> {
        let (request, config) = req.into_pieces();
        let method = match request.method {
            StripeMethod::Get => reqwest::Method::GET,
            StripeMethod::Post => reqwest::Method::POST,
            StripeMethod::Delete => reqwest::Method::DELETE,
        };
        let mut url = format!("{}/v1{}", self.base, request.path);
        if let Some(query) = &request.query {
            url.push('?');
            url.push_str(query);
        }
        let idempotency_key = match &config.request_strategy {
            Some(RequestStrategy::Idempotent(key)) => Some(key.as_str().to_string()),
            _ if method == reqwest::Method::POST => {
                Some(format!("tally-{:032x}", rand::rng().random::<u128>()))
            }
            _ => None,
        };
        let timeout = config.timeout.unwrap_or(self.policy.timeout);
        let mut last = String::new();
        for attempt in 0..self.policy.max_attempts {
            if attempt > 0 {
                tokio::time::sleep(self.backoff(attempt - 1)).await;
            }
            self.pacer.wait().await;
            let mut builder = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(self.key.expose())
                .timeout(timeout);
            if let Some(key) = &idempotency_key {
                builder = builder.header("Idempotency-Key", key);
            }
            if let Some(body) = &request.body {
                builder = builder
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body.clone());
            }
            let response = match builder.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = if e.is_timeout() {
                        "timed out".into()
                    } else {
                        format!("connection error: {e}")
                    };
                    continue;
                }
            };
            let status = response.status().as_u16();
            let should_retry = response
                .headers()
                .get("stripe-should-retry")
                .and_then(|v| v.to_str().ok())
                .map(|v| v == "true");
            let body = match response.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last = format!("reading the answer: {e}");
                    continue;
                }
            };
            if (200..300).contains(&status) {
                return Ok(body);
            }
            let error: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let e = &error["error"];
            let text = |v: &serde_json::Value| v.as_str().map(String::from);
            let rejected = StripeCallError::Rejected {
                status,
                kind: text(&e["type"]).unwrap_or_else(|| "unknown".into()),
                code: text(&e["code"]),
                message: text(&e["message"]).unwrap_or_default(),
            };
            let retry = should_retry.unwrap_or(status == 409 || status == 429 || status >= 500);
            if !retry {
                return Err(rejected);
            }
            last = rejected.to_string();
        }
        Err(StripeCallError::GaveUp { attempts: self.policy.max_attempts, last })
    }
}

impl StripeClient for StripeHttp {
    type Err = StripeCallError;

    fn execute(
        &self,
        req: CustomizedStripeRequest,
    ) -> impl std::future::Future<Output = Result<Bytes, Self::Err>> + Send {
        let this = self.clone();
        async move { this.call(req).await }
    }
}
