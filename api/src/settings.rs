//! The api's settings.

use std::net::SocketAddr;

use tally_common::settings::{addr, secret, var_or, Common, Secret, SettingError};

#[derive(Debug, Clone)]
pub struct Settings {
    pub common: Common,
    /// `TALLY_API_ADDR`.
    pub addr: SocketAddr,
    /// `TALLY_ADMIN_TOKEN`: required; `make up` generates one into `.tally/admin-token`.
    pub admin_token: Secret,
    /// `TALLY_GRACE_HOURS`: tells whether a period without any usage yet is open or closed.
    pub grace: chrono::Duration,
    /// Stripe, for Checkout (`TALLY_STRIPE_SECRET_KEY`, `TALLY_STRIPE_API_BASE`); `None` when no
    /// key is set, and Checkout answers 503 `stripe_not_configured`.
    pub stripe: Option<tally_stripe::StripeSettings>,
    /// `TALLY_STRIPE_WEBHOOK_SECRET` (`whsec_...`): verifies Stripe's webhooks; without it the
    /// webhook endpoint answers 503 `webhooks_not_configured`.
    pub stripe_webhook_secret: Option<Secret>,
}

impl Settings {
    pub fn from_env(common: Common) -> Result<Settings, SettingError> {
        let admin_token = secret("TALLY_ADMIN_TOKEN")?;
        if admin_token.expose().len() < 16 {
            return Err(SettingError { name: "TALLY_ADMIN_TOKEN", message: "must be at least 16 characters".into() });
        }
        Ok(Settings {
            common,
            addr: addr("TALLY_API_ADDR", "127.0.0.1:8080")?,
            admin_token,
            grace: chrono::Duration::hours(var_or("TALLY_GRACE_HOURS", "48")?),
            stripe: tally_stripe::StripeSettings::from_env_optional()?,
            stripe_webhook_secret: std::env::var("TALLY_STRIPE_WEBHOOK_SECRET").ok().filter(|s| !s.is_empty()).map(Secret::new),
        })
    }
}
