//! Writing accepted events to `tally.trace-events.v1`.
//!
//! The producer is idempotent with `acks=all`: a record is acknowledged once it is durable, and
//! librdkafka's retries never duplicate or reorder it. Records are keyed by `org_id` with the
//! Java-compatible murmur2 partitioner, so every event of an org lands in one partition (where
//! the aggregator deduplicates it) whichever client wrote it. The record timestamp is the arrival
//! time: the time every later decision about lateness is made from.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Serialize;
use tally_common::kafka::base_config;
use tally_schemas::{TraceCompletedRecordV1, Topic};

use crate::settings::Settings;

/// Why a batch could not be written. Every variant is a 503 for the client: retry later.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the producer queue is full")]
    QueueFull,
    #[error("kafka did not acknowledge within {0:?}")]
    Timeout(Duration),
    #[error("kafka refused the write: {0}")]
    Kafka(#[from] KafkaError),
}

/// `TraceEventRecordV1::TraceCompleted` by reference: the same JSON without a copy.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum RecordRef<'a> {
    TraceCompleted(&'a TraceCompletedRecordV1),
    Tick,
}

pub fn encode(record: &TraceCompletedRecordV1) -> Vec<u8> {
    serde_json::to_vec(&RecordRef::TraceCompleted(record)).expect("records serialise")
}

#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    timeout: Duration,
    brokers: String,
}

impl Publisher {
    pub fn new(settings: &Settings) -> Result<Publisher, KafkaError> {
        let producer = base_config(&settings.common.kafka_brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("message.timeout.ms", settings.kafka_timeout.as_millis().to_string())
            .create()?;
        Ok(Publisher {
            producer,
            timeout: settings.kafka_timeout,
            brokers: settings.common.kafka_brokers.clone(),
        })
    }

    /// Writes every record and waits until Kafka acknowledged all of them.
    pub async fn publish_all(
        &self,
        records: &[&TraceCompletedRecordV1],
        arrival_ms: i64,
    ) -> Result<(), PublishError> {
        let mut deliveries = Vec::with_capacity(records.len());
        for record in records {
            let payload = encode(record);
            let message = FutureRecord::to(Topic::TraceEvents.name())
                .key(record.org_id.as_str())
                .payload(&payload)
                .timestamp(arrival_ms);
            match self.producer.send_result(message) {
                Ok(delivery) => deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(PublishError::QueueFull)
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        let results = tokio::time::timeout(self.timeout + Duration::from_secs(1), join_all(deliveries))
            .await
            .map_err(|_| PublishError::Timeout(self.timeout))?;
        for result in results {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_canceled) => return Err(PublishError::Timeout(self.timeout)),
            }
        }
        Ok(())
    }

    /// Writes a tick to every partition of the trace-event log, timestamped now.
    pub async fn tick_all_partitions(&self) -> Result<usize, PublishError> {
        let brokers = self.brokers.clone();
        let partitions = tokio::task::spawn_blocking(move || {
            tally_common::kafka::partition_count(&brokers, Topic::TraceEvents)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or(PublishError::Timeout(self.timeout))?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let payload = serde_json::to_vec(&RecordRef::Tick).expect("ticks serialise");
        let mut deliveries = Vec::new();
        for partition in 0..partitions as i32 {
            let message = FutureRecord::<(), _>::to(Topic::TraceEvents.name())
                .partition(partition)
                .payload(&payload)
                .timestamp(now_ms);
            match self.producer.send_result(message) {
                Ok(delivery) => deliveries.push(delivery),
                Err((e, _)) => return Err(e.into()),
            }
        }
        for result in join_all(deliveries).await {
            if let Ok(Err((e, _))) = result {
                return Err(e.into());
            }
        }
        Ok(partitions)
    }

    /// Waits for in-flight records before the process exits.
    pub fn flush(&self) {
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_schemas::TraceEventRecordV1;

    #[test]
    fn borrowed_encoding_is_the_published_record_format() {
        let golden = include_str!("../../schemas/examples/trace-event-record.v1.json");
        let owned: TraceEventRecordV1 = serde_json::from_str(golden).unwrap();
        let TraceEventRecordV1::TraceCompleted(record) = &owned else { panic!("not an event") };
        let ours: TraceEventRecordV1 = serde_json::from_slice(&encode(record)).unwrap();
        assert_eq!(ours, owned);
        let tick: TraceEventRecordV1 =
            serde_json::from_slice(&serde_json::to_vec(&RecordRef::Tick).unwrap()).unwrap();
        assert_eq!(tick, TraceEventRecordV1::Tick);
    }
}
