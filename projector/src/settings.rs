//! The projector's settings.

use std::net::SocketAddr;
use std::time::Duration;

use tally_common::settings::{addr, var_or, Common, SettingError};

#[derive(Debug, Clone)]
pub struct Settings {
    pub common: Common,
    /// `TALLY_PROJECTOR_ADDR`: probes and metrics.
    pub addr: SocketAddr,
    /// `TALLY_PROJECTOR_MAX_BATCH`: the most usage updates in one database transaction.
    pub max_batch: usize,
    /// `TALLY_PROJECTOR_MAX_BATCH_MS`: the longest a batch collects before it is written.
    pub max_batch_wait: Duration,
}

impl Settings {
    pub fn from_env(common: Common) -> Result<Settings, SettingError> {
        Ok(Settings {
            common,
            addr: addr("TALLY_PROJECTOR_ADDR", "127.0.0.1:9102")?,
            max_batch: var_or("TALLY_PROJECTOR_MAX_BATCH", "2000")?,
            max_batch_wait: Duration::from_millis(var_or("TALLY_PROJECTOR_MAX_BATCH_MS", "50")?),
        })
    }
}
