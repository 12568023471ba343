//! Ingest's settings.

use std::net::SocketAddr;
use std::time::Duration;

use tally_common::settings::{addr, var_or, Common, SettingError};

#[derive(Debug, Clone)]
pub struct Settings {
    pub common: Common,
    /// `TALLY_INGEST_ADDR`: the HTTP API (`/v1/events`, `/v1/traces`).
    pub addr: SocketAddr,
    /// `TALLY_INGEST_OPS_ADDR`: `/healthz`, `/readyz`, `/metrics`, on a listener of their own
    /// (default 127.0.0.1:9104: they are for the platform, not for the services that send).
    pub ops_addr: SocketAddr,
    /// `TALLY_INGEST_MAX_BODY_BYTES`: the most a request body may hold, after decompression.
    pub max_body_bytes: usize,
    /// `TALLY_INGEST_MAX_EVENTS`: the most events one request may carry.
    pub max_events: usize,
    /// `TALLY_TICK_INTERVAL_SECS`: how often a tick is written to every partition.
    pub tick_interval: Duration,
    /// `TALLY_INGEST_KAFKA_TIMEOUT_MS`: how long Kafka may take to acknowledge before the request
    /// fails with 503.
    pub kafka_timeout: Duration,
}

impl Settings {
    pub fn from_env(common: Common) -> Result<Settings, SettingError> {
        Ok(Settings {
            common,
            addr: addr("TALLY_INGEST_ADDR", "127.0.0.1:4318")?,
            ops_addr: addr("TALLY_INGEST_OPS_ADDR", "127.0.0.1:9104")?,
            max_body_bytes: var_or("TALLY_INGEST_MAX_BODY_BYTES", "10485760")?,
            max_events: var_or("TALLY_INGEST_MAX_EVENTS", "10000")?,
            tick_interval: Duration::from_secs(var_or("TALLY_TICK_INTERVAL_SECS", "10")?),
            kafka_timeout: Duration::from_millis(var_or("TALLY_INGEST_KAFKA_TIMEOUT_MS", "10000")?),
        })
    }
}
