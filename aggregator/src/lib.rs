//! Tally's aggregator: folds `tally.trace-events.v1` into per-(org, period) usage, exactly once.
//!
//! Delivery guarantee: exactly once. Each batch's usage updates (`tally.usage.v1`), the state
//! changes that produced them (`tally.aggregator-changelog.v1`) and the consumed input offsets are
//! committed in one Kafka transaction; consumers read with `read_committed`. A crash at any point
//! leaves either all of a batch or none of it, and a restart resumes from the committed offsets
//! with the committed state.
//!
//! The shape of a batch ([`batch`]): poll records → decode → apply to the partition's pure
//! [`tally_metering::Fold`] → drain the changes → write updates and changelog records → send the
//! offsets → commit. State for a partition is loaded from its changelog partition the first time
//! a record of that partition arrives after an assignment ([`changelog`]), never by re-reading
//! the input.
//!
//! Layout: [`settings`], [`metrics`], [`changelog`] (state codec and recovery), [`batch`] (the
//! transactional loop and its recovery from faults), [`backlog`] (the watcher that tells
//! readiness whether input waits), [`run`] (start-up and probes).

pub mod backlog;
pub mod batch;
pub mod changelog;
pub mod metrics;
pub mod settings;

use anyhow::Context;
use tally_common::kafka::GroupContext;
use tally_common::{kafka, probes, shutdown::Shutdown};

pub use settings::Settings;

/// Starts the aggregator and runs it until shutdown, or until a fault that only a restart of the
/// process can fix (docs/architecture.md, "Faults in Kafka").
pub async fn run(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    kafka::ensure_topics(
        &settings.common.kafka_brokers,
        settings.common.kafka_partitions,
        settings.common.kafka_replication,
    )
    .await
    .context("kafka")?;
    let health = settings.common.health("aggregator");
    let server = tokio::spawn(probes::serve(
        settings.addr,
        probes::router(health.clone()),
        settings.common.http.buffering(probes::PROBE_BODY_BYTES),
        shutdown.clone(),
    ));
    let group = GroupContext::new(health.clone());
    backlog::spawn(&settings, group.assignment.clone(), health.clone(), shutdown.clone())?;

    let loop_shutdown = shutdown.clone();
    let loop_health = health.clone();
    let worker = tokio::task::spawn_blocking(move || {
        match batch::Aggregator::connect(settings, loop_health, group, &loop_shutdown) {
            Some(aggregator) => aggregator.run(&loop_shutdown),
            None => Ok(()),
        }
    });
    let result = tokio::select! {
        r = worker => r.context("aggregator loop panicked")?,
        r = server => r.context("probe server panicked")?,
    };
    health.down("stopped");
    result
}
