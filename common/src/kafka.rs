//! Kafka clients as Tally configures them, the start-up check, and topic creation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use tally_schemas::Topic;

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
            return Err(KafkaSetupError::Partitions { topic: topic.name(), actual, expected: input });
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
