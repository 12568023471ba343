//! Tally's projector: keeps the PostgreSQL read models in step with `tally.usage.v1` and
//! `tally.corrections.v1`.
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
//! Layout: [`settings`], [`metrics`], [`store`] (the SQL), [`project`] (the loop and its recovery
//! from faults), [`backlog`] (the watcher that tells readiness whether input waits).

pub mod backlog;
pub mod metrics;
pub mod project;
pub mod settings;

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tally_common::kafka::GroupContext;
use tally_common::{kafka, probes, shutdown::Shutdown};
use tally_schemas::Topic;

pub use settings::Settings;

pub async fn run(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    kafka::ensure_topics(
        &settings.common.kafka_brokers,
        settings.common.kafka_partitions,
        settings.common.kafka_replication,
    )
    .await
    .context("kafka")?;
    let pool = tally_store::connect(&settings.common.database_url, 4).await?;
    check_not_ahead_of_the_log(&settings, &pool).await?;
    let health = settings.common.health("projector");
    let server = tokio::spawn(probes::serve(
        settings.addr,
        probes::router(health.clone()),
        settings.common.http.buffering(probes::PROBE_BODY_BYTES),
        shutdown.clone(),
    ));
    let group = GroupContext::new(health.clone());
    tokio::spawn(backlog::watch(
        backlog::Watcher::new(&settings, pool.clone(), group.assignment.clone(), health.clone())?,
        shutdown.clone(),
    ));
    let projector = project::Projector::start(&settings, pool, health.clone(), group)?;
    let result = tokio::select! {
        r = projector.run(shutdown.clone()) => r,
        r = server => r.context("probe server panicked")?,
    };
    health.down("stopped");
    result
}

/// Refuses to start when PostgreSQL remembers offsets beyond the end of `tally.usage.v1`: the log
/// was reset (or the database belongs to another cluster), and projecting would silently skip
/// everything up to the remembered offsets.
async fn check_not_ahead_of_the_log(
    settings: &Settings,
    pool: &sqlx::PgPool,
) -> anyhow::Result<()> {
    let stored: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT topic, partition, next_offset FROM projector_offsets WHERE topic = ANY($1)",
    )
    .bind(vec![Topic::Usage.name(), Topic::Corrections.name()])
    .fetch_all(pool)
    .await?;
    if stored.is_empty() {
        return Ok(());
    }
    let consumer: BaseConsumer = kafka::base_config(&settings.common.kafka_brokers).create()?;
    let ends =
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(String, i32, i64, i64)>> {
            stored
                .into_iter()
                .map(|(topic, partition, next)| {
                    let (_, high) = consumer
                        .fetch_watermarks(&topic, partition, std::time::Duration::from_secs(10))
                        .unwrap_or((0, -1));
                    Ok((topic, partition, next, high))
                })
                .collect()
        })
        .await??;
    for (topic, partition, next, high) in ends {
        if next > high {
            bail!(
                "the read models are ahead of {topic} (partition {partition}: projected up to offset {next}, \
                 the log ends at {high}); the log was reset: drop the database too (`make clean-data`)"
            );
        }
    }
    Ok(())
}
