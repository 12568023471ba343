//! Tally's projector: keeps the PostgreSQL read models in step with `tally.usage.v1`.
//!
//! Delivery guarantee: exactly once in effect. Each batch's rows and the consumed offsets are
//! written in one PostgreSQL transaction; the offsets in `projector_offsets` are what the
//! projector resumes from (records below them are skipped), and Kafka's committed offsets are
//! only a hint. Updates are cumulative with a growing version and a row is only replaced by a
//! newer version, so several projector instances, a rebalance or a re-projection can never
//! move usage backwards or count anything twice.
//!
//! The shape of a batch ([`project`]): poll updates → keep the newest per (org, period) →
//! one transaction: upsert usage, per-operation and daily rows, insert late events, advance
//! offsets → commit.
//!
//! Layout: [`settings`], [`metrics`], [`store`] (the SQL), [`project`] (the loop).

pub mod metrics;
pub mod project;
pub mod settings;
pub mod store;

use anyhow::Context;
use tally_common::{kafka, probes, shutdown::Shutdown};

pub use settings::Settings;

pub async fn run(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    kafka::ensure_topics(&settings.common.kafka_brokers, settings.common.kafka_partitions, 1)
        .await
        .context("kafka")?;
    let pool = tally_common::db::connect(&settings.common.database_url, 4).await?;
    let readiness = probes::Readiness::default();
    let server = tokio::spawn(probes::serve(settings.addr, probes::router(readiness.clone()), shutdown.clone()));
    let projector = project::Projector::start(&settings, pool)?;
    readiness.set(true);
    let result = tokio::select! {
        r = projector.run(shutdown.clone()) => r,
        r = server => r.context("probe server panicked")?,
    };
    readiness.set(false);
    result
}
