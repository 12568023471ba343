//! The billing reporter's settings.

use tally_common::settings::{secret, var_or, Secret, SettingError};

#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// `TALLY_STRIPE_SECRET_KEY`: required; never printed.
    pub secret_key: Secret,
    /// `TALLY_STRIPE_API_BASE`: Stripe's API, or the stand-in's (`make up` points it there).
    pub api_base: String,
}

impl StripeSettings {
    pub fn from_env() -> Result<StripeSettings, SettingError> {
        Ok(StripeSettings {
            secret_key: secret("TALLY_STRIPE_SECRET_KEY")?,
            api_base: var_or("TALLY_STRIPE_API_BASE", "https://api.stripe.com")?,
        })
    }

    /// An async-stripe client for these settings.
    pub fn client(&self) -> Result<stripe::Client, SettingError> {
        stripe::ClientBuilder::new(self.secret_key.expose())
            .url(self.api_base.as_str())
            .app_info("tally", Some(env!("CARGO_PKG_VERSION").to_string()), None)
            .build()
            .map_err(|e| SettingError { name: "TALLY_STRIPE_API_BASE", message: e.to_string() })
    }
}
