//! The api's settings.

use std::net::SocketAddr;

use tally_common::settings::{addr, secret, Common, Secret, SettingError};

#[derive(Debug, Clone)]
pub struct Settings {
    pub common: Common,
    /// `TALLY_API_ADDR`.
    pub addr: SocketAddr,
    /// `TALLY_API_OPS_ADDR`: `/healthz`, `/readyz`, `/metrics`, on a listener of their own
    /// (default 127.0.0.1:9105: they are for the platform, not for the api's callers).
    pub ops_addr: SocketAddr,
    /// `TALLY_ADMIN_TOKEN`: required; `make up` generates one into `.tally/admin-token`.
    pub admin_token: Secret,
    /// `TALLY_ADMIN_TOKEN_PREVIOUS`: during a rotation, the token being retired, still accepted
    /// (with the sessions and portal links it opened) until it is unset (docs/security.md).
    pub previous_admin_token: Option<Secret>,
    /// Stripe, for Checkout (`TALLY_STRIPE_SECRET_KEY`, `TALLY_STRIPE_API_BASE`); `None` when no
    /// key is set, and Checkout answers 503 `stripe_not_configured`.
    pub stripe: Option<tally_stripe::StripeSettings>,
    /// `TALLY_STRIPE_WEBHOOK_SECRET` (`whsec_...`): verifies Stripe's webhooks; without it the
    /// webhook endpoint answers 503 `webhooks_not_configured`.
    pub stripe_webhook_secret: Option<Secret>,
    /// `TALLY_PUBLIC_URL`: where browsers reach this api (portal links point there; `https://`
    /// makes the session cookie `Secure`). Default `http://` + `TALLY_API_ADDR`.
    pub public_url: String,
    /// `TALLY_PIPELINE_STAGES`: `name=http://host:port,...`, the stages `GET /v1/pipeline` asks
    /// (default: the addresses `make up` uses).
    pub pipeline_stages: Vec<(String, String)>,
}

/// The stages `make up` runs, where it runs them.
pub const DEFAULT_PIPELINE_STAGES: &str =
    "ingest=http://127.0.0.1:9104,aggregator=http://127.0.0.1:9101,\
     projector=http://127.0.0.1:9102,billing-reporter=http://127.0.0.1:9103";

/// Parses `name=http://host:port,...`.
pub fn parse_stages(raw: &str) -> Result<Vec<(String, String)>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (name, url) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?}: expected name=http://host:port"))?;
            if name.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("{pair:?}: expected name=http://host:port"));
            }
            Ok((name.to_string(), url.trim_end_matches('/').to_string()))
        })
        .collect()
}

impl Settings {
    pub fn from_env(common: Common) -> Result<Settings, SettingError> {
        let admin_token = secret("TALLY_ADMIN_TOKEN")?;
        if admin_token.expose().len() < 16 {
            return Err(SettingError {
                name: "TALLY_ADMIN_TOKEN",
                message: "must be at least 16 characters".into(),
            });
        }
        let previous_admin_token = std::env::var("TALLY_ADMIN_TOKEN_PREVIOUS")
            .ok()
            .filter(|s| !s.is_empty())
            .map(Secret::new);
        if previous_admin_token.as_ref().is_some_and(|p| p.expose().len() < 16) {
            return Err(SettingError {
                name: "TALLY_ADMIN_TOKEN_PREVIOUS",
                message: "must be at least 16 characters".into(),
            });
        }
        let api_addr = addr("TALLY_API_ADDR", "127.0.0.1:8080")?;
        let public_url = std::env::var("TALLY_PUBLIC_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("http://{api_addr}"));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(SettingError {
                name: "TALLY_PUBLIC_URL",
                message: "must start with http:// or https://".into(),
            });
        }
        let stages = std::env::var("TALLY_PIPELINE_STAGES")
            .unwrap_or_else(|_| DEFAULT_PIPELINE_STAGES.to_string());
        let pipeline_stages = parse_stages(&stages)
            .map_err(|message| SettingError { name: "TALLY_PIPELINE_STAGES", message })?;
        Ok(Settings {
            common,
            addr: api_addr,
            ops_addr: addr("TALLY_API_OPS_ADDR", "127.0.0.1:9105")?,
            public_url: public_url.trim_end_matches('/').to_string(),
            pipeline_stages,
            admin_token,
            previous_admin_token,
            stripe: tally_stripe::StripeSettings::from_env_optional()?,
            stripe_webhook_secret: std::env::var("TALLY_STRIPE_WEBHOOK_SECRET")
                .ok()
                .filter(|s| !s.is_empty())
                .map(Secret::new),
        })
    }
}
