//! Reading one partition of the two input logs, in the order the fold needs.
//!
//! Partition `p` of `tally.billing-events.v1` is read whole first (it is small: subscription
//! changes and ticks; and the tier in effect may come from a change made years ago), then
//! partition `p` of `tally.trace-events.v1` from the first record whose log time is at or after
//! `from` (Kafka's time index: `offsets_for_times`). The two are merged by log time, billing first
//! on a tie, each keeping its own order. The aggregator reads them interleaved in whatever order
//! Kafka delivers; its final invoices do not depend on that order (a property test of the fold
//! shows it), so any merge gives the same invoices and this one is reproducible.
//!
//! Reads stop at the high watermarks taken when the partition is opened: what is appended while
//! a replay runs is not part of it. Offsets are followed with the consumer's position, since
//! transaction markers take offsets of their own.

use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tally_common::kafka::base_config;
use tally_metering::Log;
use tally_schemas::Topic;

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a read may see nothing before it gives up on a range Kafka said exists.
const STALL: Duration = Duration::from_secs(60);

/// A consumer for replay: no group membership and no commits (partitions are assigned
/// directly), committed records only, large fetches.
pub fn consumer(brokers: &str) -> anyhow::Result<BaseConsumer> {
    base_config(brokers)
        .set("group.id", tally_schemas::namespaced("tally-replay"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("fetch.max.bytes", "67108864")
        .set("max.partition.fetch.bytes", "16777216")
        .set("fetch.wait.max.ms", "10")
        .set("queued.min.messages", "1000000")
        .set("queued.max.messages.kbytes", "1048576")
        .create()
        .context("creating a Kafka consumer")
}

/// One record of either log: its log time (milliseconds) and payload.
pub struct Record<'a> {
    pub log: Log,
    pub timestamp_ms: Option<i64>,
    pub payload: &'a [u8],
}

/// Where a partition's reads begin and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub partition: i32,
    /// The billing log, read whole: `[0, billing_high)`.
    pub billing_high: i64,
    /// The trace log: `[trace_from, trace_high)`.
    pub trace_from: i64,
    pub trace_high: i64,
}

impl Extent {
    /// Records at most in the extent (an estimate for the progress bar).
    pub fn records(&self) -> u64 {
        (self.billing_high.max(0) + (self.trace_high - self.trace_from).max(0)) as u64
    }
}

/// Finds the extent of partition `p` for a replay whose trace records begin at log time `from`.
/// Refuses when retention has removed records the replay needs.
pub fn extent(consumer: &BaseConsumer, partition: i32, from: DateTime<Utc>) -> anyhow::Result<Extent> {
    let (billing_low, billing_high) = consumer
        .fetch_watermarks(Topic::BillingEvents.name(), partition, KAFKA_TIMEOUT)
        .with_context(|| format!("reading the extent of {} partition {partition}", Topic::BillingEvents))?;
    if billing_low > 0 {
        bail!(
            "{} partition {partition} no longer starts at offset 0 (it starts at {billing_low}): retention removed \
             subscription changes a replay needs; the billing log must be kept whole (docs/operations.md)",
            Topic::BillingEvents
        );
    }
    let trace = Topic::TraceEvents.name();
    let (trace_low, trace_high) = consumer
        .fetch_watermarks(trace, partition, KAFKA_TIMEOUT)
        .with_context(|| format!("reading the extent of {trace} partition {partition}"))?;
    let mut query = TopicPartitionList::new();
    query.add_partition_offset(trace, partition, Offset::Offset(from.timestamp_millis()))?;
    let found = consumer.offsets_for_times(query, KAFKA_TIMEOUT).context("looking up offsets by time")?;
    let trace_from = match found.find_partition(trace, partition).map(|e| e.offset()) {
        Some(Offset::Offset(o)) => o,
        // No record at or after `from`: nothing of the trace log is needed.
        Some(Offset::End) | None => trace_high,
        Some(other) => bail!("unexpected offset {other:?} for {trace} partition {partition}"),
    };
    if trace_low > 0 && trace_from == trace_low {
        bail!(
            "{trace} partition {partition} starts at offset {trace_low}, after {from}: retention removed records \
             this replay needs (docs/operations.md says how long to keep the log)"
        );
    }
    Ok(Extent { partition, billing_high, trace_from, trace_high })
}

/// Reads `[from, high)` of one topic partition, handing each record (offset, log time in
/// milliseconds, payload) to `each` until it returns false. Returns the records handed over.
pub fn read_range(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: i64,
    high: i64,
    mut each: impl FnMut(i64, Option<i64>, &[u8]) -> bool,
) -> anyhow::Result<u64> {
    if from >= high {
        return Ok(0);
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(from))?;
    consumer.assign(&assignment).context("assigning a partition")?;
    let mut read = 0;
    let mut idle = Duration::ZERO;
    let result = loop {
        match consumer.poll(Duration::from_millis(500)) {
            None => {
                idle += Duration::from_millis(500);
                if position(consumer, topic, partition)? >= high {
                    break Ok(read);
                }
                if idle >= STALL {
                    break Err(anyhow::anyhow!("{topic} partition {partition}: no records for {STALL:?} before offset {high}"));
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break Ok(read),
            Some(Err(e)) => break Err(anyhow::Error::new(e).context(format!("reading {topic} partition {partition}"))),
            Some(Ok(message)) => {
                idle = Duration::ZERO;
                let offset = message.offset();
                if offset >= high {
                    break Ok(read);
                }
                read += 1;
                if !each(offset, message.timestamp().to_millis(), message.payload().unwrap_or_default()) || offset + 1 >= high {
                    break Ok(read);
                }
            }
        }
    };
    consumer.unassign().context("unassigning a partition")?;
    result
}

fn position(consumer: &BaseConsumer, topic: &str, partition: i32) -> anyhow::Result<i64> {
    let positions = consumer.position()?;
    Ok(match positions.find_partition(topic, partition).map(|e| e.offset()) {
        Some(Offset::Offset(o)) => o,
        _ => -1,
    })
}

/// A billing-log record held in memory for the merge.
struct Held {
    timestamp_ms: Option<i64>,
    payload: Vec<u8>,
}

/// Reads the partition's extent and hands every record to `each`, merged by log time (billing
/// first on a tie), until `each` returns false. Returns the records handed over.
pub fn read_partition(
    consumer: &BaseConsumer,
    extent: &Extent,
    mut each: impl FnMut(Record<'_>) -> bool,
) -> anyhow::Result<u64> {
    let mut billing: Vec<Held> = Vec::new();
    read_range(consumer, Topic::BillingEvents.name(), extent.partition, 0, extent.billing_high, |_, timestamp_ms, payload| {
        billing.push(Held { timestamp_ms, payload: payload.to_vec() });
        true
    })?;
    let mut next_billing = 0;
    let mut stopped = false;
    let mut handed = 0u64;
    read_range(consumer, Topic::TraceEvents.name(), extent.partition, extent.trace_from, extent.trace_high, |_, timestamp_ms, payload| {
        // Billing records due at or before this record's time go first. A record without a
        // time (invalid) waits for no one.
        while let Some(held) = billing.get(next_billing) {
            let due = match (held.timestamp_ms, timestamp_ms) {
                (Some(b), Some(t)) => b <= t,
                (None, _) => true,
                (Some(_), None) => false,
            };
            if !due {
                break;
            }
            next_billing += 1;
            handed += 1;
            if !each(Record { log: Log::Billing, timestamp_ms: held.timestamp_ms, payload: &held.payload }) {
                stopped = true;
                return false;
            }
        }
        handed += 1;
        if !each(Record { log: Log::Trace, timestamp_ms, payload }) {
            stopped = true;
            return false;
        }
        true
    })?;
    if !stopped {
        for held in &billing[next_billing..] {
            handed += 1;
            if !each(Record { log: Log::Billing, timestamp_ms: held.timestamp_ms, payload: &held.payload }) {
                break;
            }
        }
    }
    Ok(handed)
}

/// The partition count of the trace log (the billing log has as many; the aggregator checks).
pub fn partitions(consumer: &BaseConsumer) -> anyhow::Result<i32> {
    let topic = Topic::TraceEvents.name();
    let metadata = consumer.fetch_metadata(Some(topic), KAFKA_TIMEOUT).context("reading topic metadata")?;
    let count = metadata.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len());
    if count == 0 {
        bail!("{topic} does not exist on this cluster (is TALLY_NAMESPACE right?)");
    }
    Ok(count as i32)
}
