//! The transactional loop: one batch of input records becomes one Kafka transaction.
//!
//! decode → apply to the pure fold → drain changes → write usage updates, notifications and
//! changelog records → send the consumed offsets → commit.
//!
//! The loop reads two co-partitioned logs: partition `p` of `tally.trace-events.v1` and partition
//! `p` of `tally.billing-events.v1` (same key, same partitioner, same partition count; the range
//! assignor hands both to the same member) feed the same fold. If anything fails, the transaction is aborted, every
//! partition's in-memory state is dropped (it is reloaded from the changelog on next use) and the
//! consumer is rewound to the committed offsets: nothing of the failed batch survives anywhere.
//!
//! Instances: each runs with its own `TALLY_INSTANCE_ID`, which names both its transactional id
//! (a restarted instance fences its previous incarnation and aborts its open transaction) and
//! its static group membership (a restarted instance takes its partitions back without waiting
//! for a session timeout). Offsets are committed with the consumer group's metadata, so a
//! member that lost its partitions in a rebalance can no longer commit for them.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tally_common::kafka::base_config;
use tally_common::probes::Readiness;
use tally_common::shutdown::Shutdown;
use tally_metering::{apply_record, Applied, Fold, Log, Outcome, PeriodKey};
use tally_schemas::{NotificationV1, Topic};

use crate::changelog::{self, ChunkRange};
use crate::metrics;
use crate::settings::Settings;

const GROUP_ID: &str = "tally-aggregator";
/// Part of the static group membership id. A static member that rejoins under a known id is
/// handed its previous assignment without a rebalance, even if its subscription changed; so the
/// id changes whenever the set of input topics does (v2: the billing log joined the trace log),
/// and an upgraded instance joins as a new member and gets both topics' partitions.
const MEMBERSHIP_VERSION: &str = "v2";
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
const CHANGELOG_LOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Notes rebalances so the loop can drop state it may no longer own.
#[derive(Default)]
pub struct RebalanceFlag(Arc<AtomicBool>);

impl ClientContext for RebalanceFlag {}

impl ConsumerContext for RebalanceFlag {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned");
                let mismatched = uncopartitioned(tpl);
                if !mismatched.is_empty() {
                    tracing::error!(
                        ?mismatched,
                        "assigned a partition of one input log without the same partition of the other: \
                         those partitions' invoices cannot be finalized (check partition.assignment.strategy \
                         and that both topics have as many partitions)"
                    );
                }
                metrics::UNCOPARTITIONED.set(mismatched.len() as i64);
            }
            Rebalance::Revoke(tpl) => tracing::info!(partitions = tpl.count(), "partitions revoked"),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Partitions assigned for one input log but not the other: the fold of partition `p` needs both.
fn uncopartitioned(assignment: &TopicPartitionList) -> Vec<i32> {
    let of = |topic: Topic| -> BTreeSet<i32> {
        assignment.elements().iter().filter(|e| e.topic() == topic.name()).map(|e| e.partition()).collect()
    };
    of(Topic::TraceEvents).symmetric_difference(&of(Topic::BillingEvents)).copied().collect()
}

/// One input partition's state in memory.
struct PartitionState {
    fold: Fold,
    chunks: HashMap<PeriodKey, ChunkRange>,
}

pub struct Aggregator {
    settings: Settings,
    consumer: BaseConsumer<RebalanceFlag>,
    rebalanced: Arc<AtomicBool>,
    /// Polled by this thread itself after each send; `commit_transaction` flushes it.
    producer: BaseProducer<DefaultProducerContext>,
    changelog_reader: BaseConsumer,
    partitions: HashMap<i32, PartitionState>,
    /// Whether a transaction is open: a failed batch must abort it before anything else.
    in_transaction: bool,
}

/// Outcome counts of a batch, published to metrics only once the batch commits.
#[derive(Default)]
struct BatchCounts {
    records: usize,
    ticks: u64,
    invalid: u64,
    outcomes: HashMap<Outcome, u64>,
    subscription_changes: u64,
    billing_ticks: u64,
}

impl Aggregator {
    pub fn start(settings: Settings, readiness: Readiness) -> anyhow::Result<Aggregator> {
        let brokers = settings.common.kafka_brokers.clone();
        let flag = RebalanceFlag::default();
        let rebalanced = flag.0.clone();
        let consumer: BaseConsumer<RebalanceFlag> = base_config(&brokers)
            .set("group.id", tally_schemas::namespaced(GROUP_ID))
            .set(
                "group.instance.id",
                tally_schemas::namespaced(&format!("{GROUP_ID}-{MEMBERSHIP_VERSION}-{}", settings.common.instance_id)),
            )
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("partition.assignment.strategy", "range")
            .set("fetch.wait.max.ms", "20")
            .set("max.partition.fetch.bytes", "8388608")
            .set("fetch.max.bytes", "67108864")
            .set("queued.max.messages.kbytes", "262144")
            .create_with_context(flag)
            .context("creating the consumer")?;
        let producer: BaseProducer<DefaultProducerContext> = base_config(&brokers)
            .set("transactional.id", settings.transactional_id())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("transaction.timeout.ms", "15000")
            .set("linger.ms", "1")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .context("creating the transactional producer")?;
        producer
            .init_transactions(KAFKA_TIMEOUT)
            .context("initialising transactions (is another instance using the same TALLY_INSTANCE_ID?)")?;
        let changelog_reader: BaseConsumer = base_config(&brokers)
            .set("group.id", tally_schemas::namespaced(&format!("{GROUP_ID}-changelog-reader")))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.max.bytes", "52428800")
            .create()
            .context("creating the changelog reader")?;
        consumer
            .subscribe(&[Topic::TraceEvents.name(), Topic::BillingEvents.name()])
            .context("subscribing")?;
        readiness.set(true);
        tracing::info!(transactional_id = %settings.transactional_id(), "aggregator ready");
        Ok(Aggregator {
            settings,
            consumer,
            rebalanced,
            producer,
            changelog_reader,
            partitions: HashMap::new(),
            in_transaction: false,
        })
    }

    /// Runs batches until shutdown. A fatal Kafka error (for instance, this instance was fenced
    /// by a newer one) ends the loop with an error: the process exits and its supervisor
    /// restarts it, which is always safe.
    pub fn run(mut self, shutdown: &Shutdown) -> anyhow::Result<()> {
        while !shutdown.is_requested() {
            match self.batch() {
                Ok(()) => {}
                Err(BatchError::Fatal(e)) => return Err(e),
                Err(BatchError::Retry(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "batch aborted; rewinding to the committed state");
                    metrics::TRANSACTIONS.with_label_values(&["aborted"]).inc();
                    // A producer that cannot abort cannot be trusted with another transaction:
                    // exit, and the restarted instance fences this one.
                    self.abort()?;
                    self.reset().map_err(|e| e.context("rewinding after an aborted batch"))?;
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        tracing::info!("aggregator stopping");
        Ok(())
    }

    /// Aborts the open transaction, if any.
    fn abort(&mut self) -> anyhow::Result<()> {
        if self.in_transaction {
            self.producer.abort_transaction(KAFKA_TIMEOUT).context("aborting the transaction")?;
            self.in_transaction = false;
        }
        Ok(())
    }

    /// Drops all in-memory state and rewinds the consumer to its committed offsets.
    fn reset(&mut self) -> anyhow::Result<()> {
        self.partitions.clear();
        metrics::FINGERPRINTS.set(0);
        let assignment = self.consumer.assignment()?;
        if assignment.count() == 0 {
            return Ok(());
        }
        let committed = self.consumer.committed_offsets(assignment, KAFKA_TIMEOUT)?;
        let mut rewind = TopicPartitionList::new();
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            rewind.add_partition_offset(element.topic(), element.partition(), offset)?;
        }
        self.consumer.seek_partitions(rewind, KAFKA_TIMEOUT)?;
        Ok(())
    }

    fn batch(&mut self) -> Result<(), BatchError> {
        let mut offsets: HashMap<(Topic, i32), i64> = HashMap::new();
        let mut counts = BatchCounts::default();
        let started = Instant::now();
        let mut wait = Duration::from_millis(100);
        while counts.records < self.settings.max_batch {
            // Reading the clock for every record costs more than folding it: look every 64.
            if self.in_transaction && counts.records % 64 == 1 {
                match self.settings.max_batch_wait.checked_sub(started.elapsed()) {
                    Some(w) => wait = w,
                    None => break,
                }
            }
            let polled = self.consumer.poll(wait);
            if self.rebalanced.swap(false, Ordering::SeqCst) {
                // Whatever this batch read may belong to partitions now owned elsewhere, and the
                // polled message may be from before the rebalance: start over from the commit.
                self.abort().map_err(BatchError::Fatal)?;
                self.reset().map_err(BatchError::Retry)?;
                return Ok(());
            }
            let message = match polled {
                None if self.in_transaction => break,
                None => return Ok(()),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    continue;
                }
                Some(Ok(message)) => message,
            };
            let partition = message.partition();
            let topic = if message.topic() == Topic::BillingEvents.name() {
                Topic::BillingEvents
            } else {
                Topic::TraceEvents
            };
            if !self.in_transaction {
                self.producer.begin_transaction().map_err(BatchError::from_kafka)?;
                self.in_transaction = true;
            }
            offsets.insert((topic, partition), message.offset() + 1);
            counts.records += 1;
            let state = state_for(&mut self.partitions, &self.changelog_reader, &self.settings, partition)
                .map_err(BatchError::Retry)?;
            let log = match topic {
                Topic::BillingEvents => Log::Billing,
                _ => Log::Trace,
            };
            match apply_record(&mut state.fold, log, message.timestamp().to_millis(), message.payload().unwrap_or_default()) {
                Applied::Event(outcome) => *counts.outcomes.entry(outcome).or_default() += 1,
                Applied::Tick => counts.ticks += 1,
                Applied::SubscriptionChanged => counts.subscription_changes += 1,
                Applied::BillingTick => counts.billing_ticks += 1,
                Applied::Invalid(reason) => {
                    // Ingest and the api write only valid records; anything else was written
                    // around them. It stays in the log for inspection and is counted, never
                    // silently dropped.
                    tracing::warn!(topic = %topic, partition, offset = message.offset(), %reason, "skipping an undecodable input record");
                    counts.invalid += 1;
                }
            }
        }
        if !self.in_transaction {
            return Ok(());
        }
        metrics::BATCH_SECONDS.observe(started.elapsed().as_secs_f64());
        self.commit(offsets, counts)
    }

    fn commit(&mut self, offsets: HashMap<(Topic, i32), i64>, counts: BatchCounts) -> Result<(), BatchError> {
        let produce_started = Instant::now();
        let usage_topic = Topic::Usage.name();
        let changelog_topic = Topic::AggregatorChangelog.name();
        let notifications_topic = Topic::Notifications.name();
        let touched: BTreeSet<i32> = offsets.keys().map(|(_, p)| *p).collect();
        let mut fingerprints = 0;
        let mut notified: HashMap<&'static str, u64> = HashMap::new();
        for (&partition, state) in self.partitions.iter_mut() {
            fingerprints += state.fold.fingerprint_count();
            if !touched.contains(&partition) {
                continue;
            }
            let changes = state.fold.drain_changes();
            let subscriptions = state.fold.drain_subscription_changes();
            for change in &changes {
                if let Some(update) = &change.update {
                    let key = update.key();
                    let payload = serde_json::to_vec(update).expect("updates serialise");
                    send(&self.producer, BaseRecord::to(usage_topic).key(&key).payload(&payload))?;
                }
                for notification in &change.notifications {
                    let payload = serde_json::to_vec(notification).expect("notifications serialise");
                    send(
                        &self.producer,
                        BaseRecord::to(notifications_topic).key(notification.org_id()).payload(&payload),
                    )?;
                    let kind = match notification {
                        NotificationV1::UsageThresholdCrossed(_) => "usage_threshold_crossed",
                        NotificationV1::InvoiceFinalized(_) => "invoice_finalized",
                    };
                    *notified.entry(kind).or_default() += 1;
                }
            }
            for (key, value) in
                changelog::writes_for(&changes, &subscriptions, &mut state.chunks, state.fold.watermarks())
            {
                let mut record = BaseRecord::<String, Vec<u8>>::to(changelog_topic).key(&key).partition(partition);
                if let Some(value) = &value {
                    record = record.payload(value);
                }
                send(&self.producer, record)?;
            }
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &offsets {
            tpl.add_partition_offset(topic.name(), *partition, Offset::Offset(*next))
                .map_err(|e| BatchError::Retry(e.into()))?;
        }
        metrics::COMMIT_SECONDS.with_label_values(&["produce"]).observe(produce_started.elapsed().as_secs_f64());
        let offsets_started = Instant::now();
        let group = self
            .consumer
            .group_metadata()
            .ok_or_else(|| BatchError::Retry(anyhow::anyhow!("no consumer group metadata")))?;
        self.producer
            .send_offsets_to_transaction(&tpl, &group, KAFKA_TIMEOUT)
            .map_err(BatchError::from_kafka)?;
        metrics::COMMIT_SECONDS.with_label_values(&["offsets"]).observe(offsets_started.elapsed().as_secs_f64());
        let commit_started = Instant::now();
        self.producer.commit_transaction(KAFKA_TIMEOUT).map_err(BatchError::from_kafka)?;
        self.in_transaction = false;
        metrics::COMMIT_SECONDS.with_label_values(&["commit"]).observe(commit_started.elapsed().as_secs_f64());

        metrics::TRANSACTIONS.with_label_values(&["committed"]).inc();
        metrics::BATCH_RECORDS.observe(counts.records as f64);
        metrics::TICKS.inc_by(counts.ticks);
        metrics::INVALID_RECORDS.inc_by(counts.invalid);
        for (outcome, n) in counts.outcomes {
            metrics::EVENTS.with_label_values(&[outcome.as_str()]).inc_by(n);
        }
        metrics::FINGERPRINTS.set(fingerprints as i64);
        metrics::BILLING_RECORDS.with_label_values(&["subscription_changed"]).inc_by(counts.subscription_changes);
        metrics::BILLING_RECORDS.with_label_values(&["tick"]).inc_by(counts.billing_ticks);
        for (kind, n) in notified {
            metrics::NOTIFICATIONS.with_label_values(&[kind]).inc_by(n);
        }
        Ok(())
    }
}

/// The state of `partition`, loaded from the changelog on first use.
fn state_for<'a>(
    partitions: &'a mut HashMap<i32, PartitionState>,
    changelog_reader: &BaseConsumer,
    settings: &Settings,
    partition: i32,
) -> anyhow::Result<&'a mut PartitionState> {
    if !partitions.contains_key(&partition) {
        let loaded = Instant::now();
        let restored = changelog::load_partition(
            changelog_reader,
            settings.fold.clone(),
            partition,
            CHANGELOG_LOAD_TIMEOUT,
        )?;
        metrics::STATE_LOADS.inc();
        tracing::info!(
            partition,
            periods = restored.fold.periods().len(),
            fingerprints = restored.fold.fingerprint_count(),
            elapsed_ms = loaded.elapsed().as_millis() as u64,
            "partition state restored from the changelog"
        );
        partitions.insert(partition, PartitionState { fold: restored.fold, chunks: restored.chunks });
    }
    Ok(partitions.get_mut(&partition).expect("just inserted"))
}

fn send<K, P>(producer: &BaseProducer<DefaultProducerContext>, record: BaseRecord<'_, K, P>) -> Result<(), BatchError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    let mut record = record;
    loop {
        match producer.send(record) {
            Ok(()) => {
                producer.poll(Duration::ZERO);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(BatchError::from_kafka(e)),
        }
    }
}

enum BatchError {
    /// Abort, rewind, try again.
    Retry(anyhow::Error),
    /// This producer can no longer be used.
    Fatal(anyhow::Error),
}

impl BatchError {
    fn from_kafka(e: KafkaError) -> BatchError {
        let fatal = match &e {
            KafkaError::Transaction(t) => t.is_fatal(),
            _ => false,
        };
        if fatal {
            BatchError::Fatal(anyhow::Error::new(e).context("fatal transaction error"))
        } else {
            BatchError::Retry(e.into())
        }
    }
}
