//! The projector's loop: batches of usage updates and invoice corrections, each written in one
//! database transaction.
//!
//! Faults: a failed batch stores nothing; the projector reports not ready, backs off, and reads
//! its offsets from PostgreSQL again, for as long as PostgreSQL is away. A consumer with a fatal
//! error is replaced and rejoins the group. Membership is dynamic, for the reason the aggregator's
//! is (docs/architecture.md, "Faults in Kafka").

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use sqlx::PgPool;
use tally_common::health::Health;
use tally_common::kafka::{base_config, GroupContext};
use tally_common::retry::Failures;
use tally_common::shutdown::Shutdown;
use tally_schemas::{InvoiceCorrectedV1, Topic, UsageUpdateV1};

use crate::metrics;
use crate::settings::Settings;

pub const GROUP_ID: &str = "tally-projector";

pub struct Projector {
    settings: Settings,
    health: Health,
    group: GroupContext,
    consumer: StreamConsumer<GroupContext>,
    pool: PgPool,
    /// The next offset to project per (topic, partition), as stored in PostgreSQL.
    next_offsets: HashMap<(Topic, i32), i64>,
    /// A batch failed: seek back to the stored offsets before reading on.
    must_rewind: bool,
}

/// Why a batch did not complete.
enum Failure {
    /// The consumer can no longer be used: replace it.
    ConsumerFatal(anyhow::Error),
    /// PostgreSQL or Kafka failed: rewind to the stored offsets and try again.
    Retry(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Retry(e)
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Failure {
        Failure::Retry(anyhow::Error::new(e).context("PostgreSQL"))
    }
}

impl From<KafkaError> for Failure {
    fn from(e: KafkaError) -> Failure {
        Failure::Retry(e.into())
    }
}

fn consumer(
    settings: &Settings,
    group: &GroupContext,
) -> anyhow::Result<StreamConsumer<GroupContext>> {
    let consumer: StreamConsumer<GroupContext> = base_config(&settings.common.kafka_brokers)
        .set("group.id", tally_schemas::namespaced(GROUP_ID))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.wait.max.ms", "20")
        .create_with_context(group.clone())
        .context("creating the consumer")?;
    group.joining();
    consumer.subscribe(&[Topic::Usage.name(), Topic::Corrections.name()]).context("subscribing")?;
    Ok(consumer)
}

/// Keeps, per (org, period), the newest update of a batch, with the late events of all of them
/// and the final invoice any of them carried.
pub fn coalesce(updates: Vec<UsageUpdateV1>) -> Vec<UsageUpdateV1> {
    let mut newest: BTreeMap<(String, String), UsageUpdateV1> = BTreeMap::new();
    for update in updates {
        let key = (update.org_id.clone(), update.period.clone());
        match newest.get_mut(&key) {
            None => {
                newest.insert(key, update);
            }
            Some(held) => {
                let mut late = std::mem::take(&mut held.late_events);
                late.extend(update.late_events.iter().cloned());
                let invoice = held.invoice.take().or_else(|| update.invoice.clone());
                if update.version > held.version {
                    *held = update;
                }
                held.late_events = late;
                held.invoice = invoice;
            }
        }
    }
    newest.into_values().collect()
}

impl Projector {
    pub fn start(
        settings: &Settings,
        pool: PgPool,
        health: Health,
        group: GroupContext,
    ) -> anyhow::Result<Projector> {
        let consumer = consumer(settings, &group)?;
        Ok(Projector {
            settings: settings.clone(),
            health,
            group,
            consumer,
            pool,
            next_offsets: HashMap::new(),
            must_rewind: false,
        })
    }

    pub async fn run(mut self, shutdown: Shutdown) -> anyhow::Result<()> {
        // A run of failed batches is logged when it starts and when a batch succeeds again; the
        // stage stays not ready in between.
        let mut failures = Failures::default();
        while !shutdown.is_requested() {
            self.health.turned();
            let rewinding = self.must_rewind;
            let result = if rewinding { self.rewind().await } else { self.batch().await };
            let failure = match result {
                Ok(()) if rewinding => continue,
                Ok(()) => {
                    if failures.succeeded() {
                        tracing::info!("projection succeeds again");
                    }
                    // The loop alone says the stage works: up if it holds partitions.
                    self.group.settle();
                    continue;
                }
                Err(failure) => failure,
            };
            let (first, wait) = failures.failed();
            match failure {
                Failure::Retry(e) => {
                    // Nothing of a failed batch was stored; its records are read again.
                    if first {
                        tracing::warn!(error = %format!("{e:#}"), "projection failed; retrying from the stored offsets");
                    } else {
                        tracing::debug!(error = %format!("{e:#}"), "projection failed again");
                    }
                    self.health.down("projection fails; retrying from the stored offsets");
                    self.next_offsets.clear();
                    self.must_rewind = true;
                }
                Failure::ConsumerFatal(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "the consumer failed for good; replacing it and rejoining the group");
                    self.health.down("replacing the consumer");
                    metrics::CLIENT_REBUILDS.inc();
                    // The old consumer leaves the group as it is dropped; the new one joins
                    // (pending until the group assigns it partitions) and starts from Kafka's
                    // hint, checked against the stored offsets per partition.
                    match consumer(&self.settings, &self.group) {
                        Ok(consumer) => {
                            self.consumer = consumer;
                            self.next_offsets.clear();
                            self.must_rewind = false;
                        }
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "cannot create a consumer yet")
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.clone().requested() => {}
            }
        }
        Ok(())
    }

    /// Seeks every assigned partition back to the offset stored in PostgreSQL.
    async fn rewind(&mut self) -> Result<(), Failure> {
        let assignment = self.consumer.assignment()?;
        let mut tpl = TopicPartitionList::new();
        for element in assignment.elements() {
            let Some(topic) = input_topic(element.topic()) else { continue };
            let offset = match tally_store::projection::stored_offset(
                &self.pool,
                topic,
                element.partition(),
            )
            .await?
            {
                Some(o) => Offset::Offset(o),
                None => Offset::Beginning,
            };
            tpl.add_partition_offset(element.topic(), element.partition(), offset)?;
        }
        if tpl.count() > 0 {
            self.consumer.seek_partitions(tpl, Duration::from_secs(10))?;
        }
        self.must_rewind = false;
        Ok(())
    }

    /// A consumer error: fatal when the consumer itself says so.
    fn consumer_error(&self, e: KafkaError) -> Option<Failure> {
        let (code, reason) = self.consumer.client().fatal_error()?;
        Some(Failure::ConsumerFatal(anyhow::anyhow!("{code:?}: {reason} (after: {e})")))
    }

    #[tracing::instrument(name = "batch", skip_all)]
    async fn batch(&mut self) -> Result<(), Failure> {
        let mut updates = Vec::new();
        let mut corrections = Vec::new();
        let mut offsets: HashMap<(Topic, i32), i64> = HashMap::new();
        let deadline = Instant::now() + self.settings.max_batch_wait;
        let mut read = 0;
        while read < self.settings.max_batch {
            let timeout = if read == 0 {
                Duration::from_millis(200)
            } else {
                match deadline.checked_duration_since(Instant::now()) {
                    Some(t) => t,
                    None => break,
                }
            };
            let message = match tokio::time::timeout(timeout, self.consumer.recv()).await {
                Err(_elapsed) => break,
                Ok(Err(e)) => {
                    if let Some(fatal) = self.consumer_error(e.clone()) {
                        return Err(fatal);
                    }
                    tracing::debug!(error = %e, "consumer error");
                    break;
                }
                Ok(Ok(message)) => message,
            };
            read += 1;
            if self.group.rebalanced.swap(false, Ordering::SeqCst) {
                self.next_offsets.clear();
            }
            let Some(topic) = input_topic(message.topic()) else { continue };
            let partition = message.partition();
            let next = match self.next_offsets.get(&(topic, partition)) {
                Some(next) => *next,
                None => {
                    let stored =
                        tally_store::projection::stored_offset(&self.pool, topic, partition)
                            .await?
                            .unwrap_or(0);
                    self.next_offsets.insert((topic, partition), stored);
                    if message.offset() > stored {
                        // Kafka's hint is ahead of the stored truth (the read models were rebuilt
                        // or restored): go back to what PostgreSQL holds.
                        tracing::info!(%topic, partition, from = message.offset(), to = stored, "rewinding to the stored offset");
                        self.consumer.seek(
                            topic.name(),
                            partition,
                            Offset::Offset(stored),
                            Duration::from_secs(10),
                        )?;
                        continue;
                    }
                    stored
                }
            };
            if message.offset() < next {
                metrics::UPDATES.with_label_values(&["skipped"]).inc();
                continue;
            }
            offsets.insert((topic, partition), message.offset() + 1);
            let (timestamp_ms, payload) =
                (message.timestamp().to_millis(), message.payload().unwrap_or_default());
            match decode_record(topic, partition, message.offset(), timestamp_ms, payload) {
                Some(Decoded::Update(update)) => updates.push(update),
                Some(Decoded::Correction(correction)) => corrections.push(correction),
                None => metrics::UPDATES.with_label_values(&["invalid"]).inc(),
            }
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let updates = coalesce(updates);
        let started = Instant::now();
        let offsets_list: Vec<(Topic, i32, i64)> =
            offsets.iter().map(|((t, p), o)| (*t, *p, *o)).collect();
        let written =
            tally_store::projection::write_batch(&self.pool, &updates, &corrections, &offsets_list)
                .await
                .context("writing to PostgreSQL")?;
        self.health.committed();
        metrics::BATCH_SECONDS.observe(started.elapsed().as_secs_f64());
        metrics::UPDATES.with_label_values(&["applied"]).inc_by(written.applied as u64);
        metrics::UPDATES.with_label_values(&["stale"]).inc_by(written.stale as u64);
        metrics::INVOICES.inc_by(written.invoices as u64);
        metrics::CORRECTIONS.inc_by(written.corrections as u64);
        let now = chrono::Utc::now();
        for update in &updates {
            metrics::FRESHNESS_SECONDS
                .observe((now - update.updated_at).num_milliseconds().max(0) as f64 / 1000.0);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in offsets {
            self.next_offsets.insert((topic, partition), next);
            tpl.add_partition_offset(topic.name(), partition, Offset::Offset(next))?;
        }
        // A hint for a restart; the stored offsets are the truth.
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "offset hint not committed");
        }
        Ok(())
    }
}

/// A record of the projector's input topics.
pub enum Decoded {
    Update(UsageUpdateV1),
    Correction(tally_store::projection::LoggedCorrection),
}

/// Decodes a record of `tally.usage.v1` or `tally.corrections.v1` (its log time dates a
/// correction). An undecodable record is logged and skipped (`None`): it stays in the log for
/// inspection. The projector and `replay rebuild` both read the log through this.
pub fn decode_record(
    topic: Topic,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    payload: &[u8],
) -> Option<Decoded> {
    let decoded = match topic {
        Topic::Corrections => {
            serde_json::from_slice::<InvoiceCorrectedV1>(payload).map(|correction| {
                let at = timestamp_ms
                    .and_then(|ms| {
                        chrono::TimeZone::timestamp_millis_opt(&chrono::Utc, ms).single()
                    })
                    .unwrap_or(correction.requested_at);
                Decoded::Correction(tally_store::projection::LoggedCorrection {
                    partition,
                    offset,
                    at,
                    correction,
                })
            })
        }
        _ => serde_json::from_slice::<UsageUpdateV1>(payload).map(Decoded::Update),
    };
    decoded
        .inspect_err(|e| tracing::warn!(%topic, partition, offset, error = %e, "skipping an undecodable record"))
        .ok()
}

/// The projector's input topics, by name.
fn input_topic(name: &str) -> Option<Topic> {
    [Topic::Usage, Topic::Corrections].into_iter().find(|t| t.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_keeps_the_newest_and_every_late_event() {
        let base: UsageUpdateV1 =
            serde_json::from_str(include_str!("../../schemas/examples/usage-update.v1.json"))
                .unwrap();
        let mut older = base.clone();
        older.version = 3;
        older.totals.traces = 1;
        let mut newer = base.clone();
        newer.late_events.clear();
        let mut other = base.clone();
        other.org_id = "globex".into();
        let out = coalesce(vec![newer.clone(), older, other]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].org_id, "acme");
        assert_eq!(out[0].version, 7);
        assert_eq!(out[0].totals.traces, 3);
        assert_eq!(out[0].late_events.len(), 1);
    }
}
