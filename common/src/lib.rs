//! Plumbing shared by Tally's services, kept small so each stage reads on its own.
//!
//! Layout:
//! - [`settings`]: reading typed settings from the environment; [`settings::Secret`] never prints.
//! - [`telemetry`]: logging setup.
//! - [`kafka`]: client configuration, the start-up broker check, topic creation.
//! - [`db`]: the PostgreSQL pool, the start-up check and the migrations (one schema for all stages).
//! - [`probes`]: `/healthz`, `/readyz` and `/metrics`, served by every service on its address.
//! - [`keys`]: how API keys are generated and hashed.
//! - [`shutdown`]: the signal every service stops on.

pub mod db;
pub mod kafka;
pub mod keys;
pub mod probes;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
