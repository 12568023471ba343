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
use rdkafka::{Offset, TopicPartitionList};
use tally_common::kafka::base_config;
use tally_metering::Log;
use tally_schemas::Topic;

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a read may see nothing before it gives up on a range Kafka said exists.
const STALL: Duration = Duration::from_secs(60);

/// A consumer for replay: no group membership and no commits (partitions are assigned
/// directly), committed records only, large fetches.
pub fn consumer(brokers: &str) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = base_config(brokers)
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
        .context("creating a Kafka consumer")?;
    // A topic this consumer has not seen yet waits for a metadata refresh (about a second)
    // before its first fetch: learn both input logs now.
    for topic in [Topic::BillingEvents, Topic::TraceEvents] {
        consumer
            .fetch_metadata(Some(topic.name()), KAFKA_TIMEOUT)
            .with_context(|| format!("reading the metadata of {topic}"))?;
    }
    Ok(consumer)
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
pub fn extent(
    consumer: &BaseConsumer,
    partition: i32,
    from: DateTime<Utc>,
) -> anyhow::Result<Extent> {
    let (billing_low, billing_high) = consumer
        .fetch_watermarks(Topic::BillingEvents.name(), partition, KAFKA_TIMEOUT)
        .with_context(|| {
            format!("reading the extent of {} partition {partition}", Topic::BillingEvents)
        })?;
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
    let found =
        consumer.offsets_for_times(query, KAFKA_TIMEOUT).context("looking up offsets by time")?;
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
///
/// Records come from librdkafka's batch API (`rd_kafka_consume_batch_queue`): thousands per call
/// instead of one poll, one clock read and one queue lock per record, which is most of what
/// reading costs once the fold is fast (BENCHMARKS.md).
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
    let batch = Batch::of(consumer);
    let mut read = 0;
    let mut last_record = std::time::Instant::now();
    let result = 'reading: loop {
        // What has been fetched already, without waiting; only when nothing has, wait a little
        // (the batch call waits for a full batch or its timeout, whichever comes first).
        let mut messages = batch.next(Duration::ZERO);
        if messages.is_empty() {
            messages = batch.next(Duration::from_millis(5));
        }
        if messages.is_empty() {
            if position(consumer, topic, partition)? >= high {
                break Ok(read);
            }
            if last_record.elapsed() >= STALL {
                break Err(anyhow::anyhow!(
                    "{topic} partition {partition}: no records for {STALL:?} before offset {high}"
                ));
            }
            continue;
        }
        last_record = std::time::Instant::now();
        for message in messages.iter() {
            match message {
                Fetched::EndOfPartition => break 'reading Ok(read),
                Fetched::Error(e) => {
                    break 'reading Err(anyhow::anyhow!(
                        "reading {topic} partition {partition}: {e}"
                    ))
                }
                Fetched::Record { partition: p, .. } if p != partition => continue,
                Fetched::Record { offset, timestamp_ms, payload, .. } => {
                    if offset >= high {
                        break 'reading Ok(read);
                    }
                    read += 1;
                    if !each(offset, timestamp_ms, payload) || offset + 1 >= high {
                        break 'reading Ok(read);
                    }
                }
            }
        }
    };
    drop(batch);
    consumer.unassign().context("unassigning a partition")?;
    result
}

/// The consumer's queue, read in batches through librdkafka's C API.
struct Batch {
    queue: *mut rdkafka::bindings::rd_kafka_queue_t,
}

/// Up to this many records per call.
const BATCH: usize = 4096;

impl Batch {
    fn of(consumer: &BaseConsumer) -> Batch {
        // SAFETY: the client pointer is valid while `consumer` lives, and `Batch` does not
        // outlive the call that borrows it; the queue handle is released in `drop`.
        let queue = unsafe {
            rdkafka::bindings::rd_kafka_queue_get_consumer(consumer.client().native_ptr())
        };
        Batch { queue }
    }

    /// The next records, waiting up to `timeout` for the first.
    fn next(&self, timeout: Duration) -> Messages {
        let mut messages = Messages { ptrs: vec![std::ptr::null_mut(); BATCH], len: 0 };
        // SAFETY: `ptrs` has room for BATCH pointers; librdkafka fills the first `n` with
        // messages we own until `Messages` destroys them.
        let n = unsafe {
            rdkafka::bindings::rd_kafka_consume_batch_queue(
                self.queue,
                timeout.as_millis() as std::os::raw::c_int,
                messages.ptrs.as_mut_ptr(),
                BATCH,
            )
        };
        messages.len = n.max(0) as usize;
        messages
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: the handle came from rd_kafka_queue_get_consumer and is released once.
        unsafe { rdkafka::bindings::rd_kafka_queue_destroy(self.queue) }
    }
}

/// Records owned from librdkafka, destroyed on drop.
struct Messages {
    ptrs: Vec<*mut rdkafka::bindings::rd_kafka_message_t>,
    len: usize,
}

enum Fetched<'a> {
    Record { partition: i32, offset: i64, timestamp_ms: Option<i64>, payload: &'a [u8] },
    EndOfPartition,
    Error(String),
}

impl Messages {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn iter(&self) -> impl Iterator<Item = Fetched<'_>> {
        self.ptrs[..self.len].iter().map(|&ptr| {
            // SAFETY: every pointer in `..len` is a valid message until `self` is dropped, and
            // the payload slice borrows `self`.
            let m = unsafe { &*ptr };
            if m.err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF {
                return Fetched::EndOfPartition;
            }
            if m.err != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                let text =
                    unsafe { std::ffi::CStr::from_ptr(rdkafka::bindings::rd_kafka_err2str(m.err)) };
                return Fetched::Error(text.to_string_lossy().into_owned());
            }
            let payload = if m.payload.is_null() {
                &[][..]
            } else {
                unsafe { std::slice::from_raw_parts(m.payload as *const u8, m.len) }
            };
            let mut kind =
                rdkafka::bindings::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
            let ts = unsafe { rdkafka::bindings::rd_kafka_message_timestamp(ptr, &mut kind) };
            // As rdkafka's `Timestamp::to_millis`, which the aggregator uses: none when
            // unavailable or -1.
            let timestamp_ms = (kind
                != rdkafka::bindings::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
                && ts != -1)
                .then_some(ts);
            Fetched::Record { partition: m.partition, offset: m.offset, timestamp_ms, payload }
        })
    }
}

impl Drop for Messages {
    fn drop(&mut self) {
        for &ptr in &self.ptrs[..self.len] {
            // SAFETY: each message is destroyed exactly once.
            unsafe { rdkafka::bindings::rd_kafka_message_destroy(ptr) }
        }
    }
}

fn position(consumer: &BaseConsumer, topic: &str, partition: i32) -> anyhow::Result<i64> {
    let positions = consumer.position()?;
    Ok(match positions.find_partition(topic, partition).map(|e| e.offset()) {
        Some(Offset::Offset(o)) => o,
        _ => -1,
    })
}

/// A billing-log record held in memory for the merge.
struct BufferedBillingRecord {
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
    let mut billing: Vec<BufferedBillingRecord> = Vec::new();
    read_range(
        consumer,
        Topic::BillingEvents.name(),
        extent.partition,
        0,
        extent.billing_high,
        |_, timestamp_ms, payload| {
            billing.push(BufferedBillingRecord { timestamp_ms, payload: payload.to_vec() });
            true
        },
    )?;
    let mut next_billing = 0;
    let mut stopped = false;
    let mut handed = 0u64;
    read_range(
        consumer,
        Topic::TraceEvents.name(),
        extent.partition,
        extent.trace_from,
        extent.trace_high,
        |_, timestamp_ms, payload| {
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
                if !each(Record {
                    log: Log::Billing,
                    timestamp_ms: held.timestamp_ms,
                    payload: &held.payload,
                }) {
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
        },
    )?;
    if !stopped {
        for held in &billing[next_billing..] {
            handed += 1;
            if !each(Record {
                log: Log::Billing,
                timestamp_ms: held.timestamp_ms,
                payload: &held.payload,
            }) {
                break;
            }
        }
    }
    Ok(handed)
}

/// The partition count of the trace log (the billing log has as many; the aggregator checks).
pub fn partitions(consumer: &BaseConsumer) -> anyhow::Result<i32> {
    let topic = Topic::TraceEvents.name();
    let metadata =
        consumer.fetch_metadata(Some(topic), KAFKA_TIMEOUT).context("reading topic metadata")?;
    let count =
        metadata.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len());
    if count == 0 {
        bail!("{topic} does not exist on this cluster (is TALLY_NAMESPACE right?)");
    }
    Ok(count as i32)
}
