//! The billing reporter's settings.

use tally_common::settings::{secret, var_or, Secret, SettingError};

#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// `TALLY_STRIPE_SECRET_KEY`: required; never printed.
    pub secret_key: Secret,
    /// `TALLY_STRIPE_API_BASE`: Stripe's API, or the stand-in's (`make up` points it there).
    pub api_base: String,
    /// `TALLY_STRIPE_MAX_RPS`: requests per second to Stripe, at most (default 20).
    pub max_rps: u32,
}

impl StripeSettings {
    pub fn from_env() -> Result<StripeSettings, SettingError> {
        Ok(StripeSettings {
            secret_key: secret("TALLY_STRIPE_SECRET_KEY")?,
            api_base: var_or("TALLY_STRIPE_API_BASE", "https://api.stripe.com")?,
            max_rps: var_or("TALLY_STRIPE_MAX_RPS", "20")?,
        })
    }

    /// Tally's Stripe client for these settings.
    pub fn client(&self) -> Result<crate::client::StripeHttp, SettingError> {
        if !(self.api_base.starts_with("https://") || self.api_base.starts_with("http://")) {
            return Err(SettingError { name: "TALLY_STRIPE_API_BASE", message: "must be an http(s) URL".into() });
        }
        let policy = crate::client::RetryPolicy { max_rps: self.max_rps, ..Default::default() };
        Ok(crate::client::StripeHttp::new(&self.api_base, self.secret_key.clone(), policy))
    }
}
