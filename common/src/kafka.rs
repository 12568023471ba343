//! Kafka clients as Tally configures them, the start-up check, topic creation, and what the
//! consuming stages share to stay in their group: the rebalance context ([`GroupContext`]), the
//! partitions held ([`Assignment`]) and end offsets for the backlog watchers ([`end_offsets`]); a
//! producer replaced after a fatal error ([`Renewable`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tally_schemas::Topic;

use crate::health::{Health, Phase};

/// Why Kafka could not be used at start-up.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("cannot reach Kafka at {brokers}: {source}")]
    Unreachable {
        brokers: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("cannot create topic {topic}: {message}")]
    CreateTopic { topic: &'static str, message: String },
    #[error("topic {topic} has {actual} partitions, {expected} expected")]
    Partitions { topic: &'static str, actual: usize, expected: usize },
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
}

/// The base configuration every Tally client starts from.
pub fn base_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("socket.keepalive.enable", "true")
        .set("log_level", "4");
    config
}

/// Fetches the cluster metadata once, so a service without a broker fails at start with one
/// clear line instead of retrying in silence.
pub fn check_reachable(brokers: &str) -> Result<(), KafkaSetupError> {
    let consumer: BaseConsumer = base_config(brokers).create()?;
    consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map(|_| ())
        .map_err(|source| KafkaSetupError::Unreachable { brokers: brokers.to_string(), source })
}

/// Number of partitions of a topic, from the broker's metadata.
pub fn partition_count(brokers: &str, topic: Topic) -> Result<usize, KafkaSetupError> {
    let consumer: BaseConsumer = base_config(brokers).create()?;
    let metadata = consumer
        .fetch_metadata(Some(topic.name()), Duration::from_secs(10))
        .map_err(|source| KafkaSetupError::Unreachable { brokers: brokers.to_string(), source })?;
    Ok(metadata.topics().first().map(|t| t.partitions().len()).unwrap_or(0))
}

/// Creates Tally's topics that do not exist yet (idempotent; any instance of any stage may run
/// it), then checks that the aggregator's changelog and the billing log have as many partitions as
/// the trace log.
pub async fn ensure_topics(
    brokers: &str,
    partitions: i32,
    replication: i32,
) -> Result<(), KafkaSetupError> {
    check_reachable(brokers)?;
    let admin: AdminClient<DefaultClientContext> = base_config(brokers).create()?;
    let new_topics: Vec<NewTopic> = Topic::ALL
        .iter()
        .map(|topic| {
            topic.configs().iter().fold(
                NewTopic::new(topic.name(), partitions, TopicReplication::Fixed(replication)),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new_topics, &options).await? {
        if let Err((name, code)) = result {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                let topic = Topic::ALL.into_iter().find(|t| t.name() == name).map(|t| t.name());
                return Err(KafkaSetupError::CreateTopic {
                    topic: topic.unwrap_or("unknown"),
                    message: code.to_string(),
                });
            }
        }
    }
    // The aggregator reads partition p of the trace and billing logs together and keeps their
    // state in partition p of its changelog: the three must have as many partitions.
    let input = wait_for_partitions(brokers, Topic::TraceEvents).await?;
    for topic in [Topic::AggregatorChangelog, Topic::BillingEvents] {
        let actual = wait_for_partitions(brokers, topic).await?;
        if actual != input {
            return Err(KafkaSetupError::Partitions {
                topic: topic.name(),
                actual,
                expected: input,
            });
        }
    }
    Ok(())
}

/// A freshly created topic may take a moment to show its partitions in the metadata.
async fn wait_for_partitions(brokers: &str, topic: Topic) -> Result<usize, KafkaSetupError> {
    for _ in 0..50 {
        let n = partition_count(brokers, topic)?;
        if n > 0 {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(KafkaSetupError::Partitions { topic: topic.name(), actual: 0, expected: 1 })
}

/// The partitions a group member holds, as its rebalance callbacks report them, shared with the
/// stage's backlog watcher. `None` while it holds none: before its first assignment and between a
/// revocation and the next assignment. (`Some(empty)`: the group has more members than partitions.)
#[derive(Clone, Default)]
pub struct Assignment(Arc<Mutex<Option<Vec<TopicPartition>>>>);

/// A partition by its topic's name and its number.
pub type TopicPartition = (String, i32);

impl Assignment {
    pub fn get(&self) -> Option<Vec<TopicPartition>> {
        self.0.lock().expect("assignment lock").clone()
    }

    fn set(&self, partitions: Option<Vec<TopicPartition>>) {
        *self.0.lock().expect("assignment lock") = partitions;
    }
}

/// The context of a consuming stage's group consumer: on every rebalance it raises `rebalanced`
/// (the loop then drops what it read from partitions it may no longer own), records the
/// [`Assignment`], and on a revocation tells the stage's [`Health`] that it waits for partitions.
/// It never says the stage works: only the loop does, after a batch succeeded
/// ([`GroupContext::settle`]).
#[derive(Clone)]
pub struct GroupContext {
    pub rebalanced: Arc<AtomicBool>,
    pub assignment: Assignment,
    health: Health,
}

/// Why a stage waits between a revocation and an assignment (a [`Phase::Pending`]).
const WAITING_FOR_PARTITIONS: &str = "waiting for a partition assignment";

impl GroupContext {
    pub fn new(health: Health) -> GroupContext {
        GroupContext { rebalanced: Arc::default(), assignment: Assignment::default(), health }
    }

    /// A new consumer is about to join: it holds nothing until the group assigns it partitions.
    pub fn joining(&self) {
        self.assignment.set(None);
        self.health.set(Phase::Pending(WAITING_FOR_PARTITIONS.into()));
    }

    /// The stage's loop works (a batch succeeded, or its clients are connected): it is up if it
    /// holds an assignment, and waits for one otherwise.
    pub fn settle(&self) {
        match self.assignment.get() {
            Some(_) => self.health.up(),
            None => self.health.set(Phase::Pending(WAITING_FOR_PARTITIONS.into())),
        }
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned");
                let held =
                    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                self.assignment.set(Some(held));
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                self.joining();
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
        self.rebalanced.store(true, Ordering::SeqCst);
    }
}

/// The end offset (high watermark) of each partition, asked of the broker.
pub fn end_offsets(
    client: &BaseConsumer,
    partitions: &[(String, i32)],
    timeout: Duration,
) -> KafkaResult<Vec<i64>> {
    partitions
        .iter()
        .map(|(topic, partition)| {
            client.fetch_watermarks(topic, *partition, timeout).map(|(_, high)| high)
        })
        .collect()
}

/// The offsets `group` has committed for `partitions` (0 where it has none), asked of the broker.
/// `client` must be configured with that `group.id`; it needs no membership to ask.
pub fn committed_offsets(
    client: &BaseConsumer,
    partitions: &[(String, i32)],
    timeout: Duration,
) -> KafkaResult<Vec<i64>> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in partitions {
        tpl.add_partition(topic, *partition);
    }
    let committed = client.committed_offsets(tpl, timeout)?;
    Ok(partitions
        .iter()
        .map(|(topic, partition)| {
            match committed.find_partition(topic, *partition).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            }
        })
        .collect())
}

/// A producer that is replaced as a whole after a fatal error (librdkafka raises one when it can
/// no longer keep a producer's idempotence guarantees; such a producer never sends again). Each
/// send takes [`Renewable::current`]; a failed send hands the producer back to
/// [`Renewable::renew_if_fatal`]. Requests that failed meanwhile got an error and are retried by
/// their callers.
pub struct Renewable<P> {
    current: RwLock<Arc<P>>,
    make: Box<dyn Fn() -> KafkaResult<P> + Send + Sync>,
}

impl<P> Renewable<P> {
    pub fn new(
        make: impl Fn() -> KafkaResult<P> + Send + Sync + 'static,
    ) -> KafkaResult<Renewable<P>> {
        let first = make()?;
        Ok(Renewable { current: RwLock::new(Arc::new(first)), make: Box::new(make) })
    }

    pub fn current(&self) -> Arc<P> {
        self.current.read().expect("producer lock").clone()
    }

    /// Replaces `failed` when `fatal` (its `client().fatal_error()`) is set and it is still the
    /// producer in use; whether it was replaced.
    pub fn renew_if_fatal(
        &self,
        failed: &Arc<P>,
        fatal: Option<(RDKafkaErrorCode, String)>,
    ) -> bool {
        let Some((code, reason)) = fatal else { return false };
        let mut current = self.current.write().expect("producer lock");
        if !Arc::ptr_eq(&current, failed) {
            return false;
        }
        match (self.make)() {
            Ok(fresh) => {
                tracing::warn!(?code, %reason, "the producer failed for good; replaced it");
                *current = Arc::new(fresh);
                true
            }
            Err(e) => {
                tracing::warn!(?code, %reason, error = %e, "the producer failed for good and cannot be replaced yet");
                false
            }
        }
    }
}
