//! `make bench`: drives the running pipeline at full speed and measures it (see BENCHMARKS.md).
//!
//! 1. Throughput with precomputed `payload_bytes`: unique events plus 10% re-deliveries, sent
//!    for `TALLY_BENCH_SECS` (default 60) as fast as ingest takes them; the clock stops when the
//!    API shows every event folded. The totals are checked, not assumed.
//! 2. The same with 1 KiB inline payloads (ingest compresses each one to measure it).
//! 3. Freshness at a paced 50,000 events/s: probe events, one at a time, from ingest's 200 to
//!    the moment the API shows them; p50 and p99.
//! 4. Raw Kafka on the same machine: the same records produced (idempotent, acks=all) and
//!    consumed with no processing, for the ratio.
//! 5. A service sending with `tally-client` (`bench_client.rs`): the cost of `record` to the
//!    caller, and the events end to end (run before phase 4).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::future::join_all;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tally_metering::Period;

use crate::Endpoints;
use tally_loadgen::api::Api;
use tally_loadgen::send::Sender;

pub(crate) const BATCH: usize = 1000;
const CONCURRENCY: usize = 8;
pub(crate) const ORGS: usize = 16;

pub(crate) fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What a phase sends: bodies of `BATCH` deliveries (90% new events, 10% re-deliveries of the
/// previous batch's), to one of ingest's doors.
pub(crate) trait Bodies: Send + Sync {
    /// The body of batch number `batch_no`, and how many new events it holds.
    fn body(&self, batch_no: u64) -> (Vec<u8>, u64);
    fn path(&self) -> &'static str;
    fn content_type(&self) -> &'static str;
    fn orgs(&self) -> &[String];
    /// Fails unless the answer accepted every delivery of the body.
    fn check(&self, answer: &[u8]) -> anyhow::Result<()>;
}

/// New events in a batch.
pub(crate) const FRESH: u64 = BATCH as u64 * 9 / 10;

/// Builds request bodies fast: a fixed template with the id, org and time filled in.
pub(crate) struct BodyMaker {
    pub(crate) run: String,
    pub(crate) orgs: Vec<String>,
    pub(crate) ended_at: String,
    pub(crate) inline_payload: Option<String>,
}

impl Bodies for BodyMaker {
    fn body(&self, batch_no: u64) -> (Vec<u8>, u64) {
        let (body, fresh) = self.events(batch_no * FRESH);
        (body.into_bytes(), fresh)
    }

    fn path(&self) -> &'static str {
        "/v1/events"
    }

    fn content_type(&self) -> &'static str {
        "application/json"
    }

    fn orgs(&self) -> &[String] {
        &self.orgs
    }

    fn check(&self, answer: &[u8]) -> anyhow::Result<()> {
        let answer: serde_json::Value = serde_json::from_slice(answer)?;
        if answer["rejected"].as_u64() != Some(0) {
            bail!("ingest rejected events: {answer}");
        }
        Ok(())
    }
}

impl BodyMaker {
    /// A batch of `BATCH` deliveries starting at event number `first`: 90% new events, 10%
    /// re-deliveries of events of the previous batch.
    fn events(&self, first: u64) -> (String, u64) {
        let mut s = String::with_capacity(BATCH * 400);
        s.push('[');
        let fresh = FRESH;
        for k in 0..BATCH as u64 {
            let n = if k < fresh { first + k } else { first.saturating_sub(1 + k - fresh) };
            if k > 0 {
                s.push(',');
            }
            let org = &self.orgs[(n % ORGS as u64) as usize];
            let _ = write!(
                s,
                r#"{{"event_id":"{run}-{n}","org_id":"{org}","trace_id":"t{n}","span_id":"s{n}","operation":"llm_call","status":"success","started_at":"{t}","ended_at":"{t}""#,
                run = self.run,
                t = self.ended_at
            );
            match &self.inline_payload {
                Some(p) => {
                    let _ = write!(s, r#","payload":{p}}}"#);
                }
                None => s.push_str(r#","payload_bytes":1024}"#),
            }
        }
        s.push(']');
        (s, fresh)
    }
}

pub(crate) struct Phase {
    pub(crate) name: &'static str,
    pub(crate) unique: u64,
    pub(crate) deliveries: u64,
    pub(crate) send_secs: f64,
    pub(crate) e2e_secs: f64,
}

/// Sends for `secs` seconds at most `rate` deliveries/s (0: unlimited), then waits until the API
/// shows all unique events. Returns the measurements.
pub(crate) async fn phase(
    name: &'static str,
    ep: &Endpoints,
    key: &str,
    maker: Arc<dyn Bodies>,
    secs: u64,
    rate: u64,
    baseline: u64,
) -> anyhow::Result<Phase> {
    let sender = Sender::new(&ep.ingest_url, key);
    let next = Arc::new(AtomicU64::new(0));
    let unique = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (sender, next, unique, delivered, maker) =
                (sender.clone(), next.clone(), unique.clone(), delivered.clone(), maker.clone());
            tokio::spawn(async move {
                while Instant::now() < stop_at {
                    let batch_no = next.fetch_add(1, Ordering::Relaxed);
                    if rate > 0 {
                        let due = started
                            + Duration::from_secs_f64(batch_no as f64 * BATCH as f64 / rate as f64);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let (body, fresh) = maker.body(batch_no);
                    let answer = sender.send_to(maker.path(), maker.content_type(), body).await?;
                    maker.check(&answer)?;
                    unique.fetch_add(fresh, Ordering::Relaxed);
                    delivered.fetch_add(BATCH as u64, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in join_all(tasks).await {
        t??;
    }
    let send_secs = started.elapsed().as_secs_f64();
    let unique = unique.load(Ordering::Relaxed);
    let deliveries = delivered.load(Ordering::Relaxed);
    // Done when the API shows every unique event of this phase, exactly.
    let target = baseline + unique;
    let period = Period::containing(chrono::Utc::now()).to_string();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let mut total = 0;
        for org in maker.orgs() {
            total += ep.api.usage(org, &period).await?["traces"].as_u64().unwrap_or(0);
        }
        if total == target {
            break;
        }
        if total > target {
            bail!(
                "{name}: the API shows {total} traces, more than the {target} sent: counted twice"
            );
        }
        if Instant::now() > deadline {
            bail!("{name}: the API shows {total} of {target} traces after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Phase { name, unique, deliveries, send_secs, e2e_secs: started.elapsed().as_secs_f64() })
}

pub(crate) async fn total_traces(api: &Api, orgs: &[String]) -> anyhow::Result<u64> {
    let period = Period::containing(chrono::Utc::now()).to_string();
    let mut total = 0;
    for org in orgs {
        total += api.usage(org, &period).await?["traces"].as_u64().unwrap_or(0);
    }
    Ok(total)
}

/// Probe events, one at a time, while load runs: accepted by ingest → visible in the API.
async fn freshness(
    ep: &Endpoints,
    key: &str,
    probe_org: &str,
    run: &str,
    until: Instant,
) -> anyhow::Result<Vec<f64>> {
    let sender = Sender::new(&ep.ingest_url, key);
    let period = Period::containing(chrono::Utc::now()).to_string();
    let mut seen = ep.api.usage(probe_org, &period).await?["traces"].as_u64().unwrap_or(0);
    let mut samples = Vec::new();
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = format!(
            r#"{{"event_id":"{run}-probe-{n}","org_id":"{probe_org}","trace_id":"p{n}","span_id":"p{n}","operation":"tool_call","status":"success","started_at":"{now}","ended_at":"{now}","payload_bytes":1}}"#
        );
        let answer = sender.send_body(body.into_bytes()).await?;
        if answer["accepted"] != 1 {
            bail!("ingest refused a probe event: {answer}");
        }
        let accepted = Instant::now();
        loop {
            let traces = ep.api.usage(probe_org, &period).await?["traces"].as_u64().unwrap_or(0);
            if traces > seen {
                seen = traces;
                samples.push(accepted.elapsed().as_secs_f64());
                break;
            }
            if accepted.elapsed() > Duration::from_secs(30) {
                bail!("a probe event was not visible after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(samples)
}

pub(crate) fn report(p: &Phase) {
    println!(
        "  {}: {} deliveries ({} unique) accepted in {:.1} s, all visible in the API after {:.1} s: {:.0} events/s end to end",
        p.name, p.deliveries, p.unique, p.send_secs, p.e2e_secs, p.deliveries as f64 / p.e2e_secs
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Raw Kafka: produce `count` records like ingest's and consume them back, no processing.
async fn raw_kafka(brokers: &str, maker: &BodyMaker, count: u64) -> anyhow::Result<(f64, f64)> {
    let topic = format!("tally-bench-raw-{}", maker.run);
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    admin
        .create_topics(
            &[rdkafka::admin::NewTopic::new(&topic, 8, rdkafka::admin::TopicReplication::Fixed(1))],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    // The same bytes ingest writes: one event's record, about 330 bytes.
    let (sample, _) = maker.events(0);
    let first: serde_json::Value = serde_json::from_str::<serde_json::Value>(&sample)?[0].clone();
    let record = serde_json::to_vec(
        &serde_json::json!({"kind": "trace_completed", "event_id": first["event_id"],
        "org_id": first["org_id"], "trace_id": first["trace_id"], "span_id": first["span_id"], "operation": "llm_call",
        "status": "success", "started_at": first["started_at"], "ended_at": first["ended_at"], "payload_bytes": 1024}),
    )?;
    let started = Instant::now();
    let mut inflight = Vec::with_capacity(10_000);
    for i in 0..count {
        let key = maker.orgs[(i % ORGS as u64) as usize].clone();
        loop {
            match producer.send_result(FutureRecord::to(&topic).key(&key).payload(&record)) {
                Ok(f) => {
                    inflight.push(f);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
        if inflight.len() >= 10_000 {
            for r in join_all(inflight.drain(..)).await {
                r.map_err(|_| anyhow::anyhow!("canceled"))?.map_err(|(e, _)| e)?;
            }
        }
    }
    for r in join_all(inflight.drain(..)).await {
        r.map_err(|_| anyhow::anyhow!("canceled"))?.map_err(|(e, _)| e)?;
    }
    let produce_rate = count as f64 / started.elapsed().as_secs_f64();

    let topic_for_consumer = topic.clone();
    let brokers = brokers.to_string();
    let consume_rate = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("{topic_for_consumer}-reader"))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..8 {
            tpl.add_partition_offset(&topic_for_consumer, p, rdkafka::Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let started = Instant::now();
        let mut n = 0u64;
        while n < count {
            match consumer.poll(Duration::from_secs(10)) {
                Some(Ok(_)) => n += 1,
                Some(Err(e)) => bail!("raw consume: {e}"),
                None => bail!("raw consume stalled at {n} of {count}"),
            }
        }
        Ok(count as f64 / started.elapsed().as_secs_f64())
    })
    .await??;
    admin.delete_topics(&[&topic], &rdkafka::admin::AdminOptions::new()).await?;
    Ok((produce_rate, consume_rate))
}

pub async fn run(endpoints: anyhow::Result<Endpoints>) -> anyhow::Result<()> {
    let ep = endpoints?;
    let secs = env_u64("TALLY_BENCH_SECS", 60);
    let inline_secs = env_u64("TALLY_BENCH_INLINE_SECS", 20);
    let fresh_secs = env_u64("TALLY_BENCH_FRESHNESS_SECS", 30);
    let fresh_rate = env_u64("TALLY_BENCH_FRESHNESS_RATE", 50_000);
    let brokers = std::env::var("TALLY_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let run = format!("bench{}", chrono::Utc::now().timestamp());
    let orgs: Vec<String> = (0..ORGS).map(|i| format!("{run}-o{i}")).collect();
    for org in &orgs {
        ep.api.ensure_org(org, "Benchmark org").await?;
    }
    let probe_org = format!("{run}-probe");
    ep.api.ensure_org(&probe_org, "Benchmark probe").await?;
    // One emitter sends the load and the probes: a service key for exactly those orgs.
    let key_orgs: Vec<String> = orgs.iter().cloned().chain([probe_org.clone()]).collect();
    let key = ep.api.create_service_key(Some(&key_orgs)).await?;
    let ended_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    let kib = serde_json::to_string(&tally_loadgen::generate::payload(&mut rng, 1024))?;

    println!("tally bench: run {run}; {ORGS} orgs, batches of {BATCH}, {CONCURRENCY} concurrent requests, 10% re-deliveries");
    let precomputed = Arc::new(BodyMaker {
        run: format!("{run}-a"),
        orgs: orgs.clone(),
        ended_at: ended_at.clone(),
        inline_payload: None,
    });
    let mut phases = Vec::new();
    println!("phase 1: {secs} s at full speed, precomputed payload_bytes ...");
    phases.push(
        phase("precomputed payload_bytes", &ep, &key, precomputed.clone(), secs, 0, 0).await?,
    );
    report(&phases[0]);
    let baseline = total_traces(&ep.api, &orgs).await?;
    println!(
        "phase 2: {inline_secs} s at full speed, 1 KiB inline payloads ({} bytes of JSON) ...",
        kib.len()
    );
    let inline = Arc::new(BodyMaker {
        run: format!("{run}-b"),
        orgs: orgs.clone(),
        ended_at: ended_at.clone(),
        inline_payload: Some(kib),
    });
    phases.push(phase("1 KiB inline payloads", &ep, &key, inline, inline_secs, 0, baseline).await?);
    report(&phases[1]);
    let baseline = total_traces(&ep.api, &orgs).await?;
    println!("phase 3: {fresh_secs} s paced at {fresh_rate} events/s, with freshness probes ...");
    let paced = Arc::new(BodyMaker {
        run: format!("{run}-c"),
        orgs: orgs.clone(),
        ended_at,
        inline_payload: None,
    });
    let until = Instant::now() + Duration::from_secs(fresh_secs);
    let (load, samples) = tokio::join!(
        phase("paced load", &ep, &key, paced, fresh_secs, fresh_rate, baseline),
        freshness(&ep, &key, &probe_org, &run, until)
    );
    let load = load?;
    let mut samples = samples?;
    samples.sort_by(f64::total_cmp);
    let client_secs = env_u64("TALLY_BENCH_CLIENT_SECS", 20);
    let client_rate = env_u64("TALLY_BENCH_CLIENT_RATE", 10_000);
    println!(
        "phase 5 (before 4, which needs a quiet broker): tally-client, {client_secs} s, 4 threads recording {client_rate} events/s ..."
    );
    let baseline = total_traces(&ep.api, &orgs).await?;
    let client =
        crate::bench_client::run(&ep, &key, &orgs, &run, client_secs, client_rate, baseline)
            .await?;
    println!("phase 4: raw Kafka, the same records, no processing ...");
    let raw_count = phases[0].deliveries.min(2_000_000);
    let (raw_produce, raw_consume) =
        raw_kafka(&brokers, &precomputed, raw_count).await.context("raw kafka")?;

    println!();
    println!("| phase | unique events | deliveries | ingest accepted/s | end to end (deliveries/s, until visible in the API) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for p in phases.iter().chain(std::iter::once(&load)) {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} |",
            p.name,
            p.unique,
            p.deliveries,
            p.deliveries as f64 / p.send_secs,
            p.deliveries as f64 / p.e2e_secs
        );
    }
    println!();
    println!(
        "freshness at {} events/s offered ({} probes): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        fresh_rate,
        samples.len(),
        percentile(&samples, 0.5) * 1000.0,
        percentile(&samples, 0.99) * 1000.0,
        samples.last().copied().unwrap_or(f64::NAN) * 1000.0
    );
    let e2e = phases[0].deliveries as f64 / phases[0].e2e_secs;
    println!(
        "raw Kafka on this machine ({raw_count} records): produce {raw_produce:.0}/s, consume {raw_consume:.0}/s; \
         Tally end to end = {:.1}% of raw produce",
        100.0 * e2e / raw_produce
    );
    let nanos = |p: f64| client.costs[((client.costs.len() - 1) as f64 * p).round() as usize];
    println!(
        "tally-client: {} events recorded in {:.1} s from 4 threads ({} dropped), all visible in the API after {:.1} s; \
         record(): p50 {} ns, p99 {} ns, p99.9 {} ns, max {} µs",
        client.recorded,
        client.record_secs,
        client.dropped,
        client.e2e_secs,
        nanos(0.5),
        nanos(0.99),
        nanos(0.999),
        client.costs.last().copied().unwrap_or_default() / 1_000
    );
    Ok(())
}
