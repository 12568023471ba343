//! The billing reporter's settings.

use std::net::SocketAddr;
use std::time::Duration;

use tally_common::settings::{addr, var_or, Common, SettingError};
pub use tally_stripe::StripeSettings;

#[derive(Debug, Clone)]
pub struct Settings {
    pub common: Common,
    pub stripe: StripeSettings,
    /// `TALLY_BILLING_REPORTER_ADDR`: `/healthz`, `/readyz`, `/metrics` (default 127.0.0.1:9103).
    pub addr: SocketAddr,
    /// `TALLY_REPORT_INTERVAL_SECS`: time between two reporting cycles (default 60).
    pub interval: Duration,
    /// `TALLY_REPORT_CONCURRENCY`: meter events in flight at once (default 8); the request rate
    /// is capped by `TALLY_STRIPE_MAX_RPS` whatever this is.
    pub concurrency: usize,
}

impl Settings {
    pub fn from_env(common: Common) -> Result<Settings, SettingError> {
        let interval: u64 = var_or("TALLY_REPORT_INTERVAL_SECS", "60")?;
        if interval == 0 {
            return Err(SettingError {
                name: "TALLY_REPORT_INTERVAL_SECS",
                message: "must be at least 1".into(),
            });
        }
        let concurrency: usize = var_or("TALLY_REPORT_CONCURRENCY", "8")?;
        Ok(Settings {
            common,
            stripe: StripeSettings::from_env()?,
            addr: addr("TALLY_BILLING_REPORTER_ADDR", "127.0.0.1:9103")?,
            interval: Duration::from_secs(interval),
            concurrency: concurrency.clamp(1, 64),
        })
    }
}
