//! Writing accepted events to `tally.trace-events.v1`.
//!
//! The producer is idempotent with `acks=all`: a record is acknowledged once it is durable, and
//! librdkafka's retries never duplicate or reorder it. Records are keyed by `org_id` with the
//! Java-compatible murmur2 partitioner, so every event of an org lands in one partition (where
//! the aggregator deduplicates it) whichever client wrote it. The record timestamp is the arrival
//! time: the time every later decision about lateness is made from.
//!
//! A producer with a fatal error (librdkafka raises one when the idempotence guarantees can no
//! longer be kept) can never send again: the publisher replaces it with a new one, and the
//! requests that failed meanwhile got a 503 and are resent by their clients.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use serde::Serialize;
use tally_common::kafka::{base_config, Renewable};
use tally_schemas::{Topic, TraceCompletedRecordV1};
use tokio::sync::Notify;

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

/// The acknowledgements one request is waiting for. Every record of the request carries it as
/// its delivery opaque; the last acknowledgement wakes the request. (One shared counter instead
/// of a future per record: the per-record futures cost a tenth of ingest's CPU.)
struct BatchAck {
    remaining: AtomicUsize,
    error: Mutex<Option<KafkaError>>,
    done: Notify,
}

impl BatchAck {
    fn new(records: usize) -> Arc<BatchAck> {
        Arc::new(BatchAck {
            remaining: AtomicUsize::new(records),
            error: Mutex::new(None),
            done: Notify::new(),
        })
    }

    fn settle(&self, count: usize) {
        if self.remaining.fetch_sub(count, Ordering::AcqRel) == count {
            self.done.notify_one();
        }
    }
}

/// Routes librdkafka's delivery reports to the request that sent the record.
struct AckContext;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Arc<BatchAck>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Arc<BatchAck>) {
        if let Err((e, _)) = result {
            ack.error.lock().expect("ack lock").get_or_insert_with(|| e.clone());
        }
        ack.settle(1);
    }
}

type IngestProducer = ThreadedProducer<AckContext>;

#[derive(Clone)]
pub struct Publisher {
    /// The producer in use; replaced as a whole after a fatal error.
    producer: Arc<Renewable<IngestProducer>>,
    timeout: Duration,
    brokers: String,
}

fn producer(brokers: &str, timeout: Duration) -> Result<IngestProducer, KafkaError> {
    base_config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", timeout.as_millis().to_string())
        .create_with_context(AckContext)
}

impl Publisher {
    pub fn new(settings: &Settings) -> Result<Publisher, KafkaError> {
        let (brokers, timeout) = (settings.common.kafka_brokers.clone(), settings.kafka_timeout);
        let make = move || producer(&brokers, timeout);
        Ok(Publisher {
            producer: Arc::new(Renewable::new(make)?),
            timeout: settings.kafka_timeout,
            brokers: settings.common.kafka_brokers.clone(),
        })
    }

    /// Sends records built by `build` and waits until Kafka acknowledged every one.
    async fn send_and_wait<'a>(
        &self,
        count: usize,
        mut build: impl FnMut(usize, Arc<BatchAck>) -> BaseRecord<'a, str, Vec<u8>, Arc<BatchAck>>,
    ) -> Result<(), PublishError> {
        let producer = self.producer.current();
        let result = self.send_with(&producer, count, &mut build).await;
        if result.is_err()
            && self.producer.renew_if_fatal(&producer, producer.client().fatal_error())
        {
            crate::metrics::PRODUCER_REBUILDS.inc();
        }
        result
    }

    async fn send_with<'a>(
        &self,
        producer: &IngestProducer,
        count: usize,
        build: &mut impl FnMut(usize, Arc<BatchAck>) -> BaseRecord<'a, str, Vec<u8>, Arc<BatchAck>>,
    ) -> Result<(), PublishError> {
        let ack = BatchAck::new(count);
        for i in 0..count {
            if let Err((e, _)) = producer.send(build(i, ack.clone())) {
                // Records not sent will never be acknowledged: settle them now. Those already
                // sent may still land; the client's retry is deduplicated downstream.
                ack.settle(count - i);
                return Err(match e {
                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                        PublishError::QueueFull
                    }
                    e => e.into(),
                });
            }
        }
        tokio::time::timeout(self.timeout + Duration::from_secs(1), ack.done.notified())
            .await
            .map_err(|_| PublishError::Timeout(self.timeout))?;
        let error = ack.error.lock().expect("ack lock").take();
        match error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Writes every record and waits until Kafka acknowledged all of them.
    pub async fn publish_all(
        &self,
        records: &[&TraceCompletedRecordV1],
        arrival_ms: i64,
    ) -> Result<(), PublishError> {
        let payloads: Vec<Vec<u8>> = records.iter().map(|r| encode(r)).collect();
        let topic = Topic::TraceEvents.name();
        self.send_and_wait(records.len(), |i, ack| {
            BaseRecord::with_opaque_to(topic, ack)
                .key(records[i].org_id.as_str())
                .payload(&payloads[i])
                .timestamp(arrival_ms)
        })
        .await
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
        let billing_payload = serde_json::to_vec(&tally_schemas::BillingEventRecordV1::Tick)
            .expect("ticks serialise");
        // Both logs tick: the billing log's time must pass a period's end before its invoice
        // is finalized, whether or not any subscription changes.
        self.send_and_wait(2 * partitions, |i, ack| {
            if i < partitions {
                BaseRecord::with_opaque_to(Topic::TraceEvents.name(), ack)
                    .partition(i as i32)
                    .payload(&payload)
                    .timestamp(now_ms)
            } else {
                BaseRecord::with_opaque_to(Topic::BillingEvents.name(), ack)
                    .partition((i - partitions) as i32)
                    .payload(&billing_payload)
                    .timestamp(now_ms)
            }
        })
        .await?;
        Ok(partitions)
    }

    /// Waits for in-flight records before the process exits.
    pub fn flush(&self) {
        let _ = self.producer.current().flush(Duration::from_secs(5));
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
