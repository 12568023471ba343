//! The projector's loop: batches of usage updates and invoice corrections, each written in one
//! database transaction.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use sqlx::PgPool;
use tally_common::kafka::base_config;
use tally_common::shutdown::Shutdown;
use tally_schemas::{InvoiceCorrectedV1, Topic, UsageUpdateV1};

use crate::metrics;
use crate::settings::Settings;
use crate::store;

const GROUP_ID: &str = "tally-projector";

/// Notes rebalances so the stored offsets of newly assigned partitions are read again.
#[derive(Default)]
pub struct RebalanceFlag(Arc<AtomicBool>);

impl ClientContext for RebalanceFlag {}

impl ConsumerContext for RebalanceFlag {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, _rebalance: &Rebalance<'_>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub struct Projector {
    consumer: StreamConsumer<RebalanceFlag>,
    rebalanced: Arc<AtomicBool>,
    pool: PgPool,
    max_batch: usize,
    max_batch_wait: Duration,
    /// The next offset to project per (topic, partition), as stored in PostgreSQL.
    next_offsets: HashMap<(Topic, i32), i64>,
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
    pub fn start(settings: &Settings, pool: PgPool) -> anyhow::Result<Projector> {
        let flag = RebalanceFlag::default();
        let rebalanced = flag.0.clone();
        let consumer: StreamConsumer<RebalanceFlag> = base_config(&settings.common.kafka_brokers)
            .set("group.id", tally_schemas::namespaced(GROUP_ID))
            .set("group.instance.id", tally_schemas::namespaced(&format!("{GROUP_ID}-{}", settings.common.instance_id)))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", "20")
            .create_with_context(flag)
            .context("creating the consumer")?;
        consumer.subscribe(&[Topic::Usage.name(), Topic::Corrections.name()]).context("subscribing")?;
        Ok(Projector {
            consumer,
            rebalanced,
            pool,
            max_batch: settings.max_batch,
            max_batch_wait: settings.max_batch_wait,
            next_offsets: HashMap::new(),
        })
    }

    pub async fn run(mut self, shutdown: Shutdown) -> anyhow::Result<()> {
        while !shutdown.is_requested() {
            if let Err(e) = self.batch().await {
                // Nothing of a failed batch was stored; its records are read again.
                tracing::warn!(error = %format!("{e:#}"), "projection batch failed; retrying from the stored offsets");
                self.next_offsets.clear();
                self.rewind().await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Ok(())
    }

    /// Seeks every assigned partition back to the offset stored in PostgreSQL.
    async fn rewind(&mut self) -> anyhow::Result<()> {
        let assignment = self.consumer.assignment()?;
        let mut tpl = TopicPartitionList::new();
        for element in assignment.elements() {
            let Some(topic) = input_topic(element.topic()) else { continue };
            let offset = match store::stored_offset(&self.pool, topic, element.partition()).await? {
                Some(o) => Offset::Offset(o),
                None => Offset::Beginning,
            };
            tpl.add_partition_offset(element.topic(), element.partition(), offset)?;
        }
        if tpl.count() > 0 {
            self.consumer.seek_partitions(tpl, Duration::from_secs(10))?;
        }
        Ok(())
    }

    async fn batch(&mut self) -> anyhow::Result<()> {
        let mut updates = Vec::new();
        let mut corrections = Vec::new();
        let mut offsets: HashMap<(Topic, i32), i64> = HashMap::new();
        let deadline = Instant::now() + self.max_batch_wait;
        let mut read = 0;
        while read < self.max_batch {
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
                    tracing::warn!(error = %e, "consumer error");
                    break;
                }
                Ok(Ok(message)) => message,
            };
            read += 1;
            if self.rebalanced.swap(false, Ordering::SeqCst) {
                self.next_offsets.clear();
            }
            let Some(topic) = input_topic(message.topic()) else { continue };
            let partition = message.partition();
            let next = match self.next_offsets.get(&(topic, partition)) {
                Some(next) => *next,
                None => {
                    let stored = store::stored_offset(&self.pool, topic, partition).await?.unwrap_or(0);
                    self.next_offsets.insert((topic, partition), stored);
                    if message.offset() > stored {
                        // Kafka's hint is ahead of the stored truth (the read models were rebuilt
                        // or restored): go back to what PostgreSQL holds.
                        tracing::info!(%topic, partition, from = message.offset(), to = stored, "rewinding to the stored offset");
                        self.consumer.seek(topic.name(), partition, Offset::Offset(stored), Duration::from_secs(10))?;
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
            let (timestamp_ms, payload) = (message.timestamp().to_millis(), message.payload().unwrap_or_default());
            match decode(topic, partition, message.offset(), timestamp_ms, payload) {
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
        let offsets_list: Vec<(Topic, i32, i64)> = offsets.iter().map(|((t, p), o)| (*t, *p, *o)).collect();
        let written = store::write_batch(&self.pool, &updates, &corrections, &offsets_list)
            .await
            .context("writing to PostgreSQL")?;
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
    Correction(store::LoggedCorrection),
}

/// Decodes a record of `tally.usage.v1` or `tally.corrections.v1` (its log time dates a
/// correction). An undecodable record is logged and skipped (`None`): it stays in the log for
/// inspection. The projector and `replay rebuild` both read the log through this.
pub fn decode(topic: Topic, partition: i32, offset: i64, timestamp_ms: Option<i64>, payload: &[u8]) -> Option<Decoded> {
    let decoded = match topic {
        Topic::Corrections => serde_json::from_slice::<InvoiceCorrectedV1>(payload).map(|correction| {
            let at = timestamp_ms
                .and_then(|ms| chrono::TimeZone::timestamp_millis_opt(&chrono::Utc, ms).single())
                .unwrap_or(correction.requested_at);
            Decoded::Correction(store::LoggedCorrection { partition, offset, at, correction })
        }),
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
            serde_json::from_str(include_str!("../../schemas/examples/usage-update.v1.json")).unwrap();
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
