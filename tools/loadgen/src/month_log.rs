//! `tally-loadgen month-log`: writes a month of trace and billing records straight into the logs
//! of a namespace, as ingest and the api would have written them (same record format, key,
//! partitioner and log times), for the replay benchmark (`make bench-replay`, BENCHMARKS.md).
//!
//! The month: `TALLY_MONTH_EVENTS` deliveries (10,000,000 by default) from `TALLY_MONTH_ORGS`
//! orgs (1,000), arriving evenly through October 2026 in log-time order; 10% are re-deliveries
//! of an earlier event, 5% child spans, 2% failures. A tenth of the orgs subscribe to growth in
//! September and a fiftieth move to business on 15 October. Both logs tick every hour in every
//! partition, and once more after the close (the end plus 48 hours of grace).

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use tally_schemas::{
    BillingEventRecordV1, Operation, Status, SubscriptionChangedV1, SubscriptionSource, Tier,
    TraceCompletedRecordV1, TraceEventRecordV1,
};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Writer {
    producer: BaseProducer,
    namespace: String,
    sent: u64,
}

impl Writer {
    fn send(
        &mut self,
        topic: &str,
        key: Option<&str>,
        partition: Option<i32>,
        payload: &[u8],
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let name = format!("{}{topic}", self.namespace);
        let mut record =
            BaseRecord::<str, [u8]>::to(&name).payload(payload).timestamp(at.timestamp_millis());
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        self.sent += 1;
        if self.sent.is_multiple_of(1024) {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    fn tick_all(&mut self, partitions: i32, at: DateTime<Utc>) -> anyhow::Result<()> {
        let trace = serde_json::to_vec(&TraceEventRecordV1::Tick)?;
        let billing = serde_json::to_vec(&BillingEventRecordV1::Tick)?;
        for p in 0..partitions {
            self.send("tally.trace-events.v1", None, Some(p), &trace, at)?;
            self.send("tally.billing-events.v1", None, Some(p), &billing, at)?;
        }
        Ok(())
    }

    fn subscription(&mut self, org: &str, tier: Tier, at: DateTime<Utc>) -> anyhow::Result<()> {
        let record = BillingEventRecordV1::SubscriptionChanged(SubscriptionChangedV1 {
            change_id: format!("bench-{org}-{tier}"),
            org_id: org.into(),
            tier,
            source: SubscriptionSource::AdminApi,
            requested_at: at,
            stripe_event_id: None,
        });
        self.send("tally.billing-events.v1", Some(org), None, &serde_json::to_vec(&record)?, at)
    }
}

pub fn run() -> anyhow::Result<()> {
    let brokers = std::env::var("TALLY_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let namespace = std::env::var("TALLY_NAMESPACE")
        .context("TALLY_NAMESPACE: the month is written into a namespace of its own")?;
    anyhow::ensure!(!namespace.is_empty(), "TALLY_NAMESPACE must not be empty");
    let partitions = env_u64("TALLY_KAFKA_PARTITIONS", 8) as i32;
    let events = env_u64("TALLY_MONTH_EVENTS", 10_000_000);
    let org_count = env_u64("TALLY_MONTH_ORGS", 1_000).max(1);
    let orgs: Vec<String> = (0..org_count).map(|i| format!("org{i:05}")).collect();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()?;
    let mut w = Writer { producer, namespace, sent: 0 };
    let started = Instant::now();
    let start = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap();
    let end = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    // Subscriptions before the month, and tier changes inside it.
    w.tick_all(partitions, start - chrono::Duration::days(12))?;
    for org in orgs.iter().step_by(10) {
        w.subscription(org, Tier::Growth, start - chrono::Duration::days(10))?;
    }
    let span_ms = (end - start).num_milliseconds();
    let mut rng = rand::rngs::StdRng::seed_from_u64(202610); // the month, 2026-10
    let mut next_tick = start;
    let mut changed = false;
    let operations = Operation::ALL;
    for i in 0..events {
        let arrival = start + chrono::Duration::milliseconds(span_ms * i as i64 / events as i64);
        while next_tick <= arrival {
            w.tick_all(partitions, next_tick)?;
            next_tick += chrono::Duration::hours(1);
        }
        if !changed && arrival >= start + chrono::Duration::days(14) {
            for org in orgs.iter().step_by(50) {
                w.subscription(org, Tier::Business, arrival)?;
            }
            changed = true;
        }
        // A re-delivery repeats an event sent shortly before (same id, same content).
        let n =
            if i > 1_000 && rng.random_ratio(1, 10) { i - rng.random_range(1..1_000) } else { i };
        let mut ev = rand::rngs::StdRng::seed_from_u64(n);
        let org = &orgs[ev.random_range(0..orgs.len())];
        let ended_at = start + chrono::Duration::milliseconds(span_ms * n as i64 / events as i64)
            - chrono::Duration::milliseconds(ev.random_range(0..30_000));
        let record = TraceEventRecordV1::TraceCompleted(TraceCompletedRecordV1 {
            event_id: format!("evt-{n:010}"),
            org_id: org.clone(),
            trace_id: format!("{:032x}", ev.random::<u128>()),
            span_id: format!("{:016x}", ev.random::<u64>()),
            parent_span_id: ev.random_ratio(1, 20).then(|| format!("{:016x}", ev.random::<u64>())),
            operation: operations[ev.random_range(0..operations.len())],
            status: if ev.random_ratio(1, 50) { Status::Error } else { Status::Success },
            started_at: ended_at - chrono::Duration::milliseconds(ev.random_range(10..5_000)),
            ended_at,
            payload_bytes: ev.random_range(200..200_000),
            attributes: None,
        });
        w.send(
            "tally.trace-events.v1",
            Some(org),
            None,
            &serde_json::to_vec(&record)?,
            arrival.max(ended_at),
        )?;
        if i % 1_000_000 == 0 && i > 0 {
            eprintln!(
                "month-log: {i} records, {:.0}/s",
                i as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    while next_tick <= end + chrono::Duration::hours(49) {
        w.tick_all(partitions, next_tick)?;
        next_tick += chrono::Duration::hours(1);
    }
    let remaining = w.producer.flush(Duration::from_secs(300));
    remaining.context("flushing the month")?;
    println!(
        "month-log: {} records ({} deliveries) written in {:.1} s",
        w.sent,
        events,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
