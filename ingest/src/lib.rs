//! Tally's ingest: the front door of the pipeline, with two entrances.
//!
//! The path of an event: an emitting service `POST`s Tally's own events to `/v1/events` (one
//! event, a JSON array or NDJSON) or OpenTelemetry spans to `/v1/traces` (OTLP/HTTP, protobuf or
//! JSON) ([`routes`]). The key is checked and the body read within its limits ([`request`]); the
//! format's decoder (`tally_formats`) reads it into items, one per event or span; each item is
//! validated, checked against the arrival window and its payload measured ([`accept`], pure);
//! then the orgs are checked against the registry and every accepted event is written to
//! `tally.trace-events.v1`, keyed by org, with the arrival time as the record timestamp
//! ([`admit`], [`publish`]). Ticks keep time moving in every partition ([`ticker`]).
//!
//! Delivery guarantee: ingest answers only after Kafka acknowledged every accepted event
//! (idempotent producer, `acks=all`); if Kafka cannot take them it answers 503 and reports none
//! as accepted, and the client's retry with the same event ids is deduplicated downstream. At
//! least once into the log, exactly once in the usage.

pub mod accept;
pub mod admit;
pub mod metrics;
pub mod otlp;
pub mod publish;
pub mod registry;
pub mod request;
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

    let rates = Arc::new(tally_common::rate::KeyRates::from_env()?);
    tokio::spawn(tally_common::rate::forget_idle_forever(rates.clone(), shutdown.clone()));
    let state = Arc::new(routes::AppState {
        settings: settings.clone(),
        registry,
        publisher: publisher.clone(),
        rates,
    });
    // Ingest reads its own bodies, within its own limits and the listener's deadline.
    let api = probes::serve(
        settings.addr,
        routes::router(state),
        settings.common.http.clone(),
        shutdown.clone(),
    );
    let ops = probes::serve(
        settings.ops_addr,
        probes::router(health),
        settings.common.http.buffering(probes::PROBE_BODY_BYTES),
        shutdown,
    );
    let served = tokio::try_join!(api, ops).map(drop);
    publisher.flush();
    served
}
