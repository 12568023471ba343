//! The aggregator's settings.

use std::net::SocketAddr;
use std::time::Duration;

use tally_common::settings::{addr, var_or, Common, SettingError};
use tally_metering::FoldConfig;
use tally_pricing::Pricing;

#[derive(Debug, Clone)]
pub struct Settings {
    pub common: Common,
    /// `TALLY_AGGREGATOR_ADDR`: probes and metrics.
    pub addr: SocketAddr,
    /// `TALLY_GRACE_HOURS`: how long after its end a period accepts events. Part of what the log
    /// means: the replay tool must be given the same value. With the prices of
    /// `TALLY_PRICING_FILE` (the built-in file by default).
    pub fold: FoldConfig,
    /// `TALLY_AGGREGATOR_MAX_BATCH`: the most records in one transaction.
    pub max_batch: usize,
    /// `TALLY_AGGREGATOR_MAX_BATCH_MS`: the longest a transaction stays open collecting records;
    /// bounds how stale the published usage can be. A commit costs about 100 ms on the local
    /// broker whatever its size (BENCHMARKS.md), so batches are large.
    pub max_batch_wait: Duration,
}

impl Settings {
    pub fn from_env(common: Common) -> Result<Settings, SettingError> {
        let fold = FoldConfig {
            grace: common.grace,
            pricing: common.pricing_file.load(Pricing::configured)?,
        };
        Ok(Settings {
            common,
            addr: addr("TALLY_AGGREGATOR_ADDR", "127.0.0.1:9101")?,
            fold,
            max_batch: var_or("TALLY_AGGREGATOR_MAX_BATCH", "100000")?,
            max_batch_wait: Duration::from_millis(var_or("TALLY_AGGREGATOR_MAX_BATCH_MS", "250")?),
        })
    }

    pub fn transactional_id(&self) -> String {
        tally_schemas::namespaced(&format!("tally-aggregator-{}", self.common.instance_id))
    }
}
