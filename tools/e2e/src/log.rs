//! Writing and reading Tally's logs directly, for tests that decide the log times themselves.
//!
//! The pipeline takes every time-dependent decision from record timestamps, so a test can play a
//! whole month (arrivals, subscription changes, the close) in seconds by writing records with the
//! times it wants, exactly as ingest and the api would have written them. Such a test runs in a
//! namespace of its own (`TALLY_NAMESPACE`): fresh topics, so its log times touch no other test.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tally_schemas::{
    BillingEventRecordV1, Operation, Status, SubscriptionChangedV1, SubscriptionSource, Tier,
    Topic, TraceCompletedRecordV1, TraceEventRecordV1,
};

/// A writer of records into a namespace's trace and billing logs.
pub struct LogWriter {
    namespace: String,
    producer: FutureProducer,
    partitions: i32,
}

impl LogWriter {
    pub async fn new(brokers: &str, namespace: &str) -> anyhow::Result<LogWriter> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Ingest's and the api's partitioner: an org's records land where theirs would.
            .set("partitioner", "murmur2_random")
            .create()?;
        let writer = LogWriter { namespace: namespace.to_string(), producer, partitions: 0 };
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", brokers).create()?;
        let topic = writer.topic(Topic::TraceEvents);
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len()) as i32;
        anyhow::ensure!(partitions > 0, "topic {topic} does not exist yet");
        Ok(LogWriter { partitions, ..writer })
    }

    pub fn topic(&self, topic: Topic) -> String {
        format!("{}{}", self.namespace, topic.base_name())
    }

    async fn send(
        &self,
        topic: Topic,
        key: Option<&str>,
        partition: Option<i32>,
        payload: Vec<u8>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let name = self.topic(topic);
        let mut record = FutureRecord::<str, Vec<u8>>::to(&name)
            .payload(&payload)
            .timestamp(at.timestamp_millis());
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .context("writing to the log")?;
        Ok(())
    }

    /// A successful root trace of `payload_bytes`, arrived at `arrival`.
    pub async fn trace(
        &self,
        org: &str,
        event_id: &str,
        ended_at: DateTime<Utc>,
        payload_bytes: u64,
        arrival: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let record = TraceEventRecordV1::TraceCompleted(TraceCompletedRecordV1 {
            event_id: event_id.into(),
            org_id: org.into(),
            trace_id: format!("t-{event_id}"),
            span_id: "root".into(),
            parent_span_id: None,
            operation: Operation::LlmCall,
            status: Status::Success,
            started_at: ended_at,
            ended_at,
            payload_bytes,
            attributes: None,
        });
        self.send(Topic::TraceEvents, Some(org), None, serde_json::to_vec(&record)?, arrival).await
    }

    /// Ticks at `at` in every partition of the trace log and of the billing log.
    pub async fn tick_all(&self, at: DateTime<Utc>) -> anyhow::Result<()> {
        for p in 0..self.partitions {
            self.send(
                Topic::TraceEvents,
                None,
                Some(p),
                serde_json::to_vec(&TraceEventRecordV1::Tick)?,
                at,
            )
            .await?;
            self.send(
                Topic::BillingEvents,
                None,
                Some(p),
                serde_json::to_vec(&BillingEventRecordV1::Tick)?,
                at,
            )
            .await?;
        }
        Ok(())
    }

    /// A subscription change recorded at `at`, as the api records one.
    pub async fn subscription(
        &self,
        org: &str,
        tier: Tier,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let record = BillingEventRecordV1::SubscriptionChanged(SubscriptionChangedV1 {
            change_id: format!("sub-{org}-{tier}-{}", at.timestamp_millis()),
            org_id: org.into(),
            tier,
            source: SubscriptionSource::AdminApi,
            requested_at: at,
            stripe_event_id: None,
        });
        self.send(Topic::BillingEvents, Some(org), None, serde_json::to_vec(&record)?, at).await
    }
}

/// Every committed record of a topic, from its beginning to its current end: (key, payload).
pub fn read_topic(brokers: &str, topic: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("tally-e2e-reader-{:08x}", rand::random::<u32>()))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0;
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            remaining += 1;
        }
    }
    if remaining == 0 {
        return Ok(Vec::new());
    }
    consumer.assign(&tpl)?;
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while remaining > 0 {
        anyhow::ensure!(std::time::Instant::now() < deadline, "reading {topic} took over 60 s");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => records.push((
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                m.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => remaining -= 1,
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Ok(records)
}
