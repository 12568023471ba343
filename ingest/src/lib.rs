//! Tally's ingest: the front door of the pipeline.
//!
//! The path of an event: an emitting service `POST`s one event, a JSON array or NDJSON to
//! `/v1/events` ([`routes`]). The body is read within its limits and split into elements
//! ([`body`]); each element is decoded, validated, checked against the arrival window and the org
//! registry, and its payload measured ([`accept`], pure). Every accepted event is written to
//! `tally.trace-events.v1`, keyed by org, with the arrival time as the record timestamp
//! ([`publish`]). Ticks keep time moving in every partition ([`ticker`]).
//!
//! Delivery guarantee: ingest answers only after Kafka acknowledged every accepted event
//! (idempotent producer, `acks=all`); if Kafka cannot take them it answers 503 and reports none
//! as accepted, and the client's retry with the same event ids is deduplicated downstream. At
//! least once into the log, exactly once in the usage.

pub mod accept;
pub mod body;
pub mod metrics;
pub mod publish;
pub mod registry;
pub mod routes;
pub mod settings;
pub mod ticker;

use std::sync::Arc;

use anyhow::Context;
use tally_common::{kafka, probes, shutdown::Shutdown};

pub use settings::Settings;

/// Starts ingest and runs it until shutdown.
pub async fn run(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    kafka::ensure_topics(
        &settings.common.kafka_brokers,
        settings.common.kafka_partitions,
        settings.common.kafka_replication,
    )
    .await
    .context("kafka")?;
    let pool = tally_store::connect(&settings.common.database_url, 4).await?;
    let registry = registry::Registry::load(pool).await.context("loading the org registry")?;
    let publisher = publish::Publisher::new(&settings)?;
    let health = settings.common.health("ingest");

    tokio::spawn(registry.clone().refresh_forever(shutdown.clone()));
    // Ingest is ready once Kafka acknowledged its first ticks (ticker.rs).
    tokio::spawn(ticker::run(
        publisher.clone(),
        settings.tick_interval,
        health.clone(),
        shutdown.clone(),
    ));

    let state = Arc::new(routes::AppState {
        settings: settings.clone(),
        registry,
        publisher: publisher.clone(),
    });
    let router = routes::router(state).merge(probes::router(health));
    let served = probes::serve(settings.addr, router, shutdown).await;
    publisher.flush();
    served
}
