//! The api's one write to Kafka: subscription changes (from an admin, or from Stripe's webhooks)
//! recorded in `tally.billing-events.v1`, where the aggregator prices periods from.

use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tally_common::kafka::Renewable;
use tally_schemas::{BillingEventRecordV1, SubscriptionChangedV1, Topic};

use crate::error::ApiError;

/// The producer of subscription changes: idempotent, `acks=all`, and keyed by org with the same
/// murmur2 partitioner as ingest, so an org's billing records share its trace records' partition.
/// Replaced as a whole after a fatal error.
pub fn billing_producer(brokers: &str) -> anyhow::Result<Renewable<FutureProducer>> {
    let brokers = brokers.to_string();
    Ok(Renewable::new(move || {
        tally_common::kafka::base_config(&brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", "10000")
            .create()
    })?)
}

/// Writes a subscription change to the billing log and waits for Kafka's acknowledgement;
/// returns the record's log time.
pub async fn record_subscription_change(
    producers: &Renewable<FutureProducer>,
    change: &SubscriptionChangedV1,
) -> Result<DateTime<Utc>, ApiError> {
    let producer = producers.current();
    let payload = serde_json::to_vec(&BillingEventRecordV1::SubscriptionChanged(change.clone()))
        .expect("billing records serialise");
    let now = Utc::now();
    let record = FutureRecord::to(Topic::BillingEvents.name())
        .key(change.org_id.as_str())
        .payload(&payload)
        .timestamp(now.timestamp_millis());
    match producer.send(record, Duration::from_secs(10)).await {
        Ok(_) => Ok(now),
        Err((e, _)) => {
            tracing::warn!(error = %e, "could not record a subscription change");
            producers.renew_if_fatal(&producer, producer.client().fatal_error());
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "kafka_unavailable",
                "the billing log is unavailable; nothing was recorded, retry",
            ))
        }
    }
}
