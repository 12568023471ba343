//! The backlog watcher: whether input waits for this instance, for its readiness.
//!
//! Every few seconds it reads the offsets stored in PostgreSQL (what the projector has committed,
//! the source of truth) and asks the broker for the end offsets of the partitions this instance
//! holds. `tally.usage.v1` is written in transactions, so each of its partitions ends with a
//! commit marker that no consumer receives: a partition there has records waiting when its end is
//! more than one past the stored offset. `tally.corrections.v1` has no markers. The judgement is
//! [`tally_common::health::judge`]'s.
//!
//! Known limit: a partition whose last write was an aborted transaction (an aggregator fenced
//! mid-transaction after its successor had committed the same updates) ends with that
//! transaction's records and its abort marker, which no consumer receives either, and looks as if
//! they waited until the partition's next write. That is rare, visible as a reason in `/readyz`,
//! and clears by itself.
//!
//! It runs as a task beside the loop, with a Kafka client of its own; each look is bounded by a
//! timeout, so a database that does not answer is a failed look, not a silent one.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::BaseConsumer;
use sqlx::PgPool;
use tally_common::health::Health;
use tally_common::kafka::{base_config, end_offsets, Assignment};
use tally_common::shutdown::Shutdown;
use tally_schemas::Topic;

use crate::settings::Settings;

/// How often the watcher looks.
pub const EVERY: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Watcher {
    client: std::sync::Arc<BaseConsumer>,
    pool: PgPool,
    assignment: Assignment,
    health: Health,
}

impl Watcher {
    pub fn new(
        settings: &Settings,
        pool: PgPool,
        assignment: Assignment,
        health: Health,
    ) -> anyhow::Result<Watcher> {
        let client: BaseConsumer = base_config(&settings.common.kafka_brokers)
            .create()
            .context("creating the backlog watcher's client")?;
        Ok(Watcher { client: std::sync::Arc::new(client), pool, assignment, health })
    }

    async fn look(&self) -> anyhow::Result<Option<bool>> {
        let Some(partitions) = self.assignment.get() else { return Ok(None) };
        let stored: HashMap<(String, i32), i64> =
            tokio::time::timeout(TIMEOUT, tally_store::projection::stored_offsets(&self.pool))
                .await
                .context("reading the stored offsets: PostgreSQL did not answer")?
                .context("reading the stored offsets")?
                .into_iter()
                .map(|(topic, partition, next)| ((topic, partition), next))
                .collect();
        let client = self.client.clone();
        let asked = partitions.clone();
        let ends =
            tokio::task::spawn_blocking(move || end_offsets(&client, &asked, TIMEOUT)).await??;
        Ok(Some(partitions.iter().zip(ends).any(|(key, end)| {
            let markers = if key.0 == Topic::Usage.name() { 1 } else { 0 };
            end - stored.get(key).copied().unwrap_or(0) > markers
        })))
    }
}

/// Looks every [`EVERY`] until shutdown.
pub async fn watch(watcher: Watcher, shutdown: Shutdown) {
    loop {
        match watcher.look().await {
            Ok(Some(waiting)) => watcher.health.input_waiting(waiting),
            // Without an assignment nothing of ours waits; how long that lasts is the phase's
            // business.
            Ok(None) => {}
            Err(e) => watcher.health.check_failed(format!("{e:#}")),
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.clone().requested() => return,
        }
    }
}
