//! Tally's way of talking to Stripe, shared by the billing reporter (meter events, setup,
//! reconciliation) and the api (Checkout Sessions).
//!
//! - [`client`]: [`StripeHttp`], async-stripe 1.0's request and response types over reqwest,
//!   with the caller's `Idempotency-Key` on every attempt, backoff with jitter and a rate cap.
//! - [`StripeSettings`]: the key and the API base (Stripe's, or the stand-in's on the local stack).

pub mod client;

pub use client::{RetryPolicy, StripeCallError, StripeHttp};

use tally_common::settings::{var_or, Secret, SettingError};

/// Where Stripe is and how to reach it.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// `TALLY_STRIPE_SECRET_KEY`: never printed.
    pub secret_key: Secret,
    /// `TALLY_STRIPE_API_BASE`: Stripe's API, or the stand-in's (`make up` points it there).
    pub api_base: String,
    /// `TALLY_STRIPE_MAX_RPS`: requests per second to Stripe, at most (default 20).
    pub max_rps: u32,
    /// `TALLY_STRIPE_TIMEOUT_MS`: how long one attempt waits for Stripe's answer before it is
    /// retried with the same Idempotency-Key (default 20000).
    pub timeout: std::time::Duration,
}

impl StripeSettings {
    /// The settings, or `None` when `TALLY_STRIPE_SECRET_KEY` is unset (Stripe not configured).
    pub fn from_env_optional() -> Result<Option<StripeSettings>, SettingError> {
        let Some(key) = std::env::var("TALLY_STRIPE_SECRET_KEY").ok().filter(|k| !k.is_empty())
        else {
            return Ok(None);
        };
        let settings = StripeSettings {
            secret_key: Secret::new(key),
            api_base: var_or("TALLY_STRIPE_API_BASE", "https://api.stripe.com")?,
            max_rps: var_or("TALLY_STRIPE_MAX_RPS", "20")?,
            timeout: std::time::Duration::from_millis(var_or("TALLY_STRIPE_TIMEOUT_MS", "20000")?),
        };
        if !(settings.api_base.starts_with("https://") || settings.api_base.starts_with("http://"))
        {
            return Err(SettingError {
                name: "TALLY_STRIPE_API_BASE",
                message: "must be an http(s) URL".into(),
            });
        }
        if settings.max_rps == 0 {
            return Err(SettingError {
                name: "TALLY_STRIPE_MAX_RPS",
                message: "must be at least 1".into(),
            });
        }
        Ok(Some(settings))
    }

    /// The settings; `TALLY_STRIPE_SECRET_KEY` is required.
    pub fn from_env() -> Result<StripeSettings, SettingError> {
        Self::from_env_optional()?
            .ok_or(SettingError { name: "TALLY_STRIPE_SECRET_KEY", message: "is required".into() })
    }

    /// Tally's Stripe client for these settings.
    pub fn client(&self) -> StripeHttp {
        let policy =
            RetryPolicy { max_rps: self.max_rps, timeout: self.timeout, ..Default::default() };
        StripeHttp::new(&self.api_base, self.secret_key.clone(), policy)
    }
}
