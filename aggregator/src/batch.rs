//! The transactional loop: one batch of input records becomes one Kafka transaction.
//!
//! decode → apply to the pure fold → drain changes → write usage updates, notifications and
//! changelog records → send the consumed offsets → commit.
//!
//! The loop reads two co-partitioned logs: partition `p` of `tally.trace-events.v1` and partition
//! `p` of `tally.billing-events.v1` (same key, same partitioner, same partition count; the range
//! assignor hands both to the same member) feed the same fold. If anything fails, the transaction
//! is aborted, every partition's in-memory state is dropped (it is reloaded from the changelog on
//! next use) and the consumer is rewound to the committed offsets: nothing of the failed batch
//! survives anywhere.
//!
//! Instances: each runs with its own `TALLY_INSTANCE_ID`, which names its transactional id (a
//! restarted instance fences its previous incarnation and aborts its open transaction). Group
//! membership is dynamic: a static member is fenced for good by its own rejoin after a broker
//! restart (docs/architecture.md, "Faults in Kafka"). Offsets are committed with the consumer
//! group's metadata, so a member that lost its partitions in a rebalance can no longer commit for
//! them.
//!
//! Faults: nothing here leaves a live process that does nothing. A failed batch is aborted and
//! rewound; a producer that cannot abort, or is fenced, is replaced by a new one under the same
//! transactional id (whose `init_transactions` aborts what the old one left open); a consumer
//! with a fatal error is replaced and rejoins the group. While the clients are being rebuilt, or
//! Kafka cannot be reached, the stage reports not ready ([`Health`]); it exits only when its
//! transactional id keeps being fenced by another live instance.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tally_common::health::Health;
use tally_common::kafka::{base_config, GroupContext};
use tally_common::retry::Failures;
use tally_common::shutdown::Shutdown;
use tally_metering::{apply_record, Applied, Decision, Fold, Log, PeriodKey};
use tally_schemas::{NotificationV1, Topic};

use crate::changelog::{self, ChunkRange};
use crate::metrics;
use crate::settings::Settings;

pub const GROUP_ID: &str = "tally-aggregator";
/// The longest one step of a commit (offsets, deliveries, commit) may take. Well below
/// `transaction.timeout.ms`, so a step fails on its own timeout before the broker could time the
/// transaction out and fence the producer.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);
/// Longer than everything an open transaction may wait for before it fails: the batch window
/// and the three commit steps. A killed instance's open transaction is aborted by its restart,
/// or by the broker after this long if it never comes back.
const TRANSACTION_TIMEOUT_MS: &str = "60000";
/// How long a recovery step (abort, rewind, reconnect) may block before it is tried again: short,
/// so the loop keeps turning and reporting while Kafka is away.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(10);
const REPLACING_PRODUCER: &str = "replacing the transactional producer";
const REPLACING_CONSUMER: &str = "replacing the consumer";
const CHANGELOG_LOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// A transactional id fenced this many times within [`FENCING_WINDOW`] is in use by another live
/// instance: replacing the producer again would only fence that one in turn. (A restarted
/// incarnation of this instance fences an old one once; the old one is gone by then.)
const FENCINGS_TO_EXIT: usize = 3;
const FENCING_WINDOW: Duration = Duration::from_secs(600);

/// Partitions assigned for one input log but not the other: the fold of partition `p` needs both.
fn uncopartitioned(assignment: &TopicPartitionList) -> Vec<i32> {
    let of = |topic: Topic| -> BTreeSet<i32> {
        assignment
            .elements()
            .iter()
            .filter(|e| e.topic() == topic.name())
            .map(|e| e.partition())
            .collect()
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
    health: Health,
    group: GroupContext,
    consumer: BaseConsumer<GroupContext>,
    /// Polled by this thread itself: after each send, and until nothing is in flight before a
    /// commit or an abort ([`drain`]).
    producer: BaseProducer<DefaultProducerContext>,
    changelog_reader: BaseConsumer,
    partitions: HashMap<i32, PartitionState>,
    /// Whether a transaction is open: a failed batch must abort it before anything else.
    in_transaction: bool,
    /// The consumer may be ahead of the committed state (a batch failed): rewind before polling.
    must_rewind: bool,
    /// When the producer was last fenced, to tell a transient fencing from a twin instance.
    fencings: VecDeque<Instant>,
}

/// Decision counts of a batch, published to metrics only once the batch commits.
#[derive(Default)]
struct BatchCounts {
    records: usize,
    ticks: u64,
    invalid: u64,
    decisions: HashMap<Decision, u64>,
    subscription_changes: u64,
    billing_ticks: u64,
}

impl Aggregator {
    /// Connects to Kafka and joins the group; retries with backoff (reporting not ready) until it
    /// can, or until shutdown (`None`).
    pub fn connect(
        settings: Settings,
        health: Health,
        group: GroupContext,
        shutdown: &Shutdown,
    ) -> Option<Aggregator> {
        let consumer =
            retry("creating the consumer", &health, shutdown, || consumer(&settings, &group))?;
        let producer = retry("initialising the transactional producer", &health, shutdown, || {
            producer(&settings)
        })?;
        let changelog_reader = retry("creating the changelog reader", &health, shutdown, || {
            changelog_reader(&settings)
        })?;
        tracing::info!(transactional_id = %settings.transactional_id(), "aggregator connected");
        group.settle();
        Some(Aggregator {
            settings,
            health,
            group,
            consumer,
            producer,
            changelog_reader,
            partitions: HashMap::new(),
            in_transaction: false,
            must_rewind: false,
            fencings: VecDeque::new(),
        })
    }

    /// Runs batches until shutdown. Returns an error only for what a restart of the process is
    /// the answer to (another live instance holds this transactional id).
    pub fn run(mut self, shutdown: &Shutdown) -> anyhow::Result<()> {
        // A run of failed batches is logged when it starts and when a batch succeeds again; the
        // stage stays not ready in between, whatever the rewinds and retries in the middle do.
        let mut failures = Failures::default();
        while !shutdown.is_requested() {
            self.health.turned();
            let rewinding = self.must_rewind;
            let result = if rewinding { self.rewind() } else { self.batch() };
            let failure = match result {
                Ok(()) if rewinding => continue,
                Ok(()) => {
                    if failures.succeeded() {
                        tracing::info!("batches succeed again");
                    }
                    // The loop alone says the stage works: up if it holds partitions.
                    self.group.settle();
                    continue;
                }
                Err(failure) => failure,
            };
            let wait = match failure {
                BatchError::Rebalanced => {
                    tracing::info!("the group rebalanced; starting again from the committed state");
                    Duration::ZERO
                }
                _ => {
                    let (first, wait) = failures.failed();
                    if first {
                        tracing::warn!(error = %failure, "batch failed; recovering");
                    } else {
                        tracing::debug!(error = %failure, "batch failed again");
                    }
                    self.health.down(failure.reason());
                    wait
                }
            };
            // Fenced while batches were succeeding: another producer took the transactional id.
            // (Fenced in the middle of an outage, the broker may have timed the transaction out.)
            if matches!(failure, BatchError::ProducerFatal(_))
                && failures.started_now()
                && self.producer_fenced()
            {
                self.note_fencing()?;
            }
            self.recover(&failure, shutdown)?;
            std::thread::sleep(wait);
        }
        tracing::info!("aggregator stopping");
        Ok(())
    }

    /// Leaves nothing of a failed batch: aborts its transaction (or replaces a producer that
    /// cannot), replaces a failed consumer, drops every partition's state and rewinds before the
    /// next poll.
    fn recover(&mut self, failure: &BatchError, shutdown: &Shutdown) -> anyhow::Result<()> {
        self.partitions.clear();
        metrics::FINGERPRINTS.set(0);
        self.must_rewind = true;
        if self.in_transaction {
            metrics::TRANSACTIONS.with_label_values(&["aborted"]).inc();
        }
        let mut replace_producer = matches!(failure, BatchError::ProducerFatal(_));
        if !replace_producer {
            if let Err(e) = self.abort() {
                tracing::warn!(error = %format!("{e:#}"), "cannot abort the transaction; replacing the producer, which aborts it");
                replace_producer = true;
            }
        }
        if replace_producer {
            // Every replacement is logged with its cause, also within a run of failures that
            // otherwise logs only its first.
            tracing::warn!(error = %failure, "replacing the transactional producer");
            self.health.down(REPLACING_PRODUCER);
            metrics::CLIENT_REBUILDS.with_label_values(&["producer"]).inc();
            let Some(producer) =
                retry("initialising the transactional producer", &self.health, shutdown, || {
                    producer(&self.settings)
                })
            else {
                return Ok(());
            };
            self.producer = producer;
            self.in_transaction = false;
        }
        if self.changelog_reader.client().fatal_error().is_some() {
            metrics::CLIENT_REBUILDS.with_label_values(&["changelog_reader"]).inc();
            let Some(reader) =
                retry("creating the changelog reader", &self.health, shutdown, || {
                    changelog_reader(&self.settings)
                })
            else {
                return Ok(());
            };
            self.changelog_reader = reader;
        }
        if matches!(failure, BatchError::ConsumerFatal(_)) {
            self.health.down(REPLACING_CONSUMER);
            metrics::CLIENT_REBUILDS.with_label_values(&["consumer"]).inc();
            let Some(consumer) = retry("creating the consumer", &self.health, shutdown, || {
                consumer(&self.settings, &self.group)
            }) else {
                return Ok(());
            };
            // The old consumer leaves the group as it is dropped; the new one joins.
            self.consumer = consumer;
            self.must_rewind = false;
        }
        Ok(())
    }

    fn producer_fenced(&self) -> bool {
        matches!(
            self.producer.client().fatal_error(),
            Some((RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced, _))
        )
    }

    /// Remembers that the producer was fenced; fenced again and again in a short time, the
    /// transactional id is in use by another live instance, which no replacement can fix.
    fn note_fencing(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        self.fencings.push_back(now);
        while self.fencings.front().is_some_and(|t| now.duration_since(*t) > FENCING_WINDOW) {
            self.fencings.pop_front();
        }
        if self.fencings.len() >= FENCINGS_TO_EXIT {
            anyhow::bail!(
                "the transactional id {} was fenced {} times in {} minutes: another live instance runs with \
                 TALLY_INSTANCE_ID={}; give each instance its own id",
                self.settings.transactional_id(),
                self.fencings.len(),
                FENCING_WINDOW.as_secs() / 60,
                self.settings.common.instance_id
            );
        }
        Ok(())
    }

    /// Aborts the open transaction, if any, once its outputs' delivery reports are served
    /// (librdkafka refuses to abort while they wait).
    fn abort(&mut self) -> anyhow::Result<()> {
        if self.in_transaction {
            drain(&self.producer, RECOVERY_TIMEOUT);
            self.producer
                .abort_transaction(RECOVERY_TIMEOUT)
                .context("aborting the transaction")?;
            self.in_transaction = false;
        }
        Ok(())
    }

    /// Rewinds the consumer to its committed offsets, so the next batch starts from exactly the
    /// committed state.
    fn rewind(&mut self) -> Result<(), BatchError> {
        let assignment = self.consumer.assignment().map_err(|e| self.consumer_error(e))?;
        if assignment.count() > 0 {
            let committed = self
                .consumer
                .committed_offsets(assignment, RECOVERY_TIMEOUT)
                .map_err(|e| self.consumer_error(e))?;
            let mut rewind = TopicPartitionList::new();
            for element in committed.elements() {
                // A partition whose committed offset could not be read is not rewound to the
                // beginning (that would fold its whole log again onto the restored state).
                if let Err(e) = element.error() {
                    return Err(BatchError::Retry(anyhow::anyhow!(
                        "the committed offset of {} [{}]: {e}",
                        element.topic(),
                        element.partition()
                    )));
                }
                let offset = match element.offset() {
                    Offset::Offset(o) => Offset::Offset(o),
                    // Nothing committed yet: the group starts at the beginning of the log.
                    _ => Offset::Beginning,
                };
                rewind
                    .add_partition_offset(element.topic(), element.partition(), offset)
                    .map_err(|e| BatchError::Retry(e.into()))?;
            }
            self.consumer
                .seek_partitions(rewind, RECOVERY_TIMEOUT)
                .map_err(|e| self.consumer_error(e))?;
        }
        self.must_rewind = false;
        Ok(())
    }

    /// A consumer error: fatal when the consumer itself says so.
    fn consumer_error(&self, e: KafkaError) -> BatchError {
        match self.consumer.client().fatal_error() {
            Some((code, reason)) => {
                BatchError::ConsumerFatal(anyhow::anyhow!("{code:?}: {reason} (after: {e})"))
            }
            None => BatchError::Retry(e.into()),
        }
    }

    /// A partition assignment arrived: check that both logs' partitions came together.
    fn assigned(&self) {
        let Ok(assignment) = self.consumer.assignment() else { return };
        let mismatched = uncopartitioned(&assignment);
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

    #[tracing::instrument(name = "batch", skip_all)]
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
            if self.group.rebalanced.swap(false, Ordering::SeqCst) {
                // Whatever this batch read may belong to partitions now owned elsewhere, and the
                // polled message may be from before the rebalance: start over from the commit.
                self.assigned();
                return Err(BatchError::Rebalanced);
            }
            let message = match polled {
                None if self.in_transaction => break,
                None => return Ok(()),
                Some(Err(e)) => match self.consumer_error(e) {
                    fatal @ BatchError::ConsumerFatal(_) => return Err(fatal),
                    BatchError::Retry(e) => {
                        tracing::debug!(error = %e, "consumer error");
                        continue;
                    }
                    other => return Err(other),
                },
                Some(Ok(message)) => message,
            };
            let partition = message.partition();
            let topic = if message.topic() == Topic::BillingEvents.name() {
                Topic::BillingEvents
            } else {
                Topic::TraceEvents
            };
            if !self.in_transaction {
                self.producer
                    .begin_transaction()
                    .map_err(|e| BatchError::from_producer(&self.producer, e))?;
                self.in_transaction = true;
            }
            offsets.insert((topic, partition), message.offset() + 1);
            counts.records += 1;
            let state =
                state_for(&mut self.partitions, &self.changelog_reader, &self.settings, partition)
                    .map_err(BatchError::Retry)?;
            let log = match topic {
                Topic::BillingEvents => Log::Billing,
                _ => Log::Trace,
            };
            match apply_record(
                &mut state.fold,
                log,
                message.timestamp().to_millis(),
                message.payload().unwrap_or_default(),
            ) {
                Applied::Event(decision) => *counts.decisions.entry(decision).or_default() += 1,
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

    #[tracing::instrument(name = "commit", skip_all, fields(partitions = offsets.len()))]
    fn commit(
        &mut self,
        offsets: HashMap<(Topic, i32), i64>,
        counts: BatchCounts,
    ) -> Result<(), BatchError> {
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
                    let payload =
                        serde_json::to_vec(notification).expect("notifications serialise");
                    send(
                        &self.producer,
                        BaseRecord::to(notifications_topic)
                            .key(notification.org_id())
                            .payload(&payload),
                    )?;
                    let kind = match notification {
                        NotificationV1::UsageThresholdCrossed(_) => "usage_threshold_crossed",
                        NotificationV1::InvoiceFinalized(_) => "invoice_finalized",
                    };
                    *notified.entry(kind).or_default() += 1;
                }
            }
            for (key, value) in changelog::writes_for(
                &changes,
                &subscriptions,
                &mut state.chunks,
                state.fold.watermarks(),
            ) {
                let mut record = BaseRecord::<String, Vec<u8>>::to(changelog_topic)
                    .key(&key)
                    .partition(partition);
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
        metrics::COMMIT_SECONDS
            .with_label_values(&["produce"])
            .observe(produce_started.elapsed().as_secs_f64());
        let offsets_started = Instant::now();
        let group = self
            .consumer
            .group_metadata()
            .ok_or_else(|| BatchError::Retry(anyhow::anyhow!("no consumer group metadata")))?;
        self.producer
            .send_offsets_to_transaction(&tpl, &group, KAFKA_TIMEOUT)
            .map_err(|e| BatchError::from_producer(&self.producer, e))?;
        metrics::COMMIT_SECONDS
            .with_label_values(&["offsets"])
            .observe(offsets_started.elapsed().as_secs_f64());
        let delivered_started = Instant::now();
        if !drain(&self.producer, KAFKA_TIMEOUT) {
            return Err(BatchError::Retry(anyhow::anyhow!(
                "the batch's outputs were not acknowledged within {KAFKA_TIMEOUT:?}"
            )));
        }
        metrics::COMMIT_SECONDS
            .with_label_values(&["deliveries"])
            .observe(delivered_started.elapsed().as_secs_f64());
        let commit_started = Instant::now();
        self.producer
            .commit_transaction(KAFKA_TIMEOUT)
            .map_err(|e| BatchError::from_producer(&self.producer, e))?;
        self.in_transaction = false;
        self.health.committed();
        metrics::COMMIT_SECONDS
            .with_label_values(&["commit"])
            .observe(commit_started.elapsed().as_secs_f64());

        metrics::TRANSACTIONS.with_label_values(&["committed"]).inc();
        metrics::BATCH_RECORDS.observe(counts.records as f64);
        metrics::TICKS.inc_by(counts.ticks);
        metrics::INVALID_RECORDS.inc_by(counts.invalid);
        for (decision, n) in counts.decisions {
            metrics::EVENTS.with_label_values(&[decision.as_str()]).inc_by(n);
        }
        metrics::FINGERPRINTS.set(fingerprints as i64);
        metrics::BILLING_RECORDS
            .with_label_values(&["subscription_changed"])
            .inc_by(counts.subscription_changes);
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
    let vacant = match partitions.entry(partition) {
        Entry::Occupied(held) => return Ok(held.into_mut()),
        Entry::Vacant(vacant) => vacant,
    };
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
    Ok(vacant.insert(PartitionState { fold: restored.fold, chunks: restored.chunks }))
}

fn send<K, P>(
    producer: &BaseProducer<DefaultProducerContext>,
    record: BaseRecord<'_, K, P>,
) -> Result<(), BatchError>
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
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                record = r;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(BatchError::from_producer(producer, e)),
        }
    }
}

/// Why a batch did not commit, and so what recovering from it takes.
enum BatchError {
    /// Partitions moved: abort, rewind, go on.
    Rebalanced,
    /// Abort, rewind, try again.
    Retry(anyhow::Error),
    /// The producer can no longer be used (fenced, or a fatal idempotence error): replace it.
    ProducerFatal(anyhow::Error),
    /// The consumer can no longer be used (a fatal consumer error): replace it, rejoin.
    ConsumerFatal(anyhow::Error),
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Rebalanced => f.write_str("the group rebalanced"),
            BatchError::Retry(e) => write!(f, "{e:#}"),
            BatchError::ProducerFatal(e) => {
                write!(f, "the transactional producer failed for good: {e:#}")
            }
            BatchError::ConsumerFatal(e) => write!(f, "the consumer failed for good: {e:#}"),
        }
    }
}

impl BatchError {
    /// Why the stage is not working meanwhile, as `/readyz` says it: stable across retries, so
    /// that the health logs a change of state, not every attempt.
    fn reason(&self) -> &'static str {
        match self {
            BatchError::Rebalanced => "the group rebalanced",
            BatchError::Retry(_) => "batches fail; retrying from the committed state",
            BatchError::ProducerFatal(_) => REPLACING_PRODUCER,
            BatchError::ConsumerFatal(_) => REPLACING_CONSUMER,
        }
    }

    /// A producer error: fatal when the transaction API or the producer itself says so.
    fn from_producer(producer: &BaseProducer<DefaultProducerContext>, e: KafkaError) -> BatchError {
        let cause = producer.client().fatal_error();
        let fatal = matches!(&e, KafkaError::Transaction(t) if t.is_fatal())
            || e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal)
            || cause.is_some();
        if !fatal {
            return BatchError::Retry(e.into());
        }
        BatchError::ProducerFatal(match cause {
            Some((code, reason)) => anyhow::anyhow!("fatal producer error {code:?}: {reason}"),
            None => anyhow::Error::new(e).context("fatal producer error"),
        })
    }
}

/// Serves the producer's delivery reports until nothing is in flight, for at most `timeout`;
/// whether everything was delivered. `commit_transaction` would flush by polling in 100 ms slices
/// that never end early, and `abort_transaction` refuses to run while reports wait to be served;
/// polling here, 1 ms at a time, serves both.
fn drain(producer: &BaseProducer<DefaultProducerContext>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        producer.poll(Duration::from_millis(1));
    }
    true
}

/// Runs `attempt` until it succeeds, reporting `what` as the stage's reason for not being ready
/// meanwhile (one log line per change) and backing off between attempts. `None` on shutdown.
fn retry<T>(
    what: &str,
    health: &Health,
    shutdown: &Shutdown,
    mut attempt: impl FnMut() -> anyhow::Result<T>,
) -> Option<T> {
    let mut failures = Failures::default();
    while !shutdown.is_requested() {
        match attempt() {
            Ok(value) => return Some(value),
            Err(e) => {
                let (first, wait) = failures.failed();
                if first {
                    tracing::warn!(error = %format!("{e:#}"), "{what} failed; retrying");
                    health.down(what);
                } else {
                    tracing::debug!(error = %format!("{e:#}"), "{what} failed again");
                }
                std::thread::sleep(wait);
            }
        }
    }
    None
}

fn consumer(
    settings: &Settings,
    group: &GroupContext,
) -> anyhow::Result<BaseConsumer<GroupContext>> {
    let consumer: BaseConsumer<GroupContext> = base_config(&settings.common.kafka_brokers)
        .set("group.id", tally_schemas::namespaced(GROUP_ID))
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
        .create_with_context(group.clone())
        .context("creating the consumer")?;
    group.joining();
    consumer
        .subscribe(&[Topic::TraceEvents.name(), Topic::BillingEvents.name()])
        .context("subscribing")?;
    Ok(consumer)
}

/// The transactional producer; `init_transactions` fences any earlier producer with the same
/// transactional id and aborts the transaction it left open.
fn producer(settings: &Settings) -> anyhow::Result<BaseProducer<DefaultProducerContext>> {
    let producer: BaseProducer<DefaultProducerContext> =
        base_config(&settings.common.kafka_brokers)
            .set("transactional.id", settings.transactional_id())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)
            .set("linger.ms", "1")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .context("creating the transactional producer")?;
    producer.init_transactions(RECOVERY_TIMEOUT).context("initialising transactions")?;
    Ok(producer)
}

fn changelog_reader(settings: &Settings) -> anyhow::Result<BaseConsumer> {
    base_config(&settings.common.kafka_brokers)
        .set("group.id", tally_schemas::namespaced(&format!("{GROUP_ID}-changelog-reader")))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.max.bytes", "52428800")
        // A restore waits for the end of a partition; librdkafka's default 500 ms fetch wait made
        // every empty partition's restore take half a second.
        .set("fetch.wait.max.ms", "10")
        .create()
        .context("creating the changelog reader")
}
