//! The broker restarts under Tally: gracefully and with SIGKILL, while events flow, and nobody
//! restarts any of Tally's services. Every stage resumes by itself with exact usage; a fenced
//! producer is replaced in the process; `/readyz` tells the truth while a stage cannot progress.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use tally_e2e::{
    assert_usage_eventually, assert_usage_eventually_resent, kafka_brokers, unique, Broker, Stack,
    SERVICES,
};
use tally_loadgen::api::Api;
use tally_loadgen::generate::event;
use tally_loadgen::send::Sender;
use tally_loadgen::{Expected, WorkloadSpec};
use tally_schemas::Operation;

/// Three graceful restarts and three SIGKILLs of the broker at varied moments while a workload
/// flows for about two minutes; the clients resend what got no 200. No Tally service is
/// restarted, and the usage ends exact for every org.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_exact_across_broker_restarts_and_kills() -> anyhow::Result<()> {
    let mut stack = Stack::start_with(&[("TALLY_TICK_INTERVAL_SECS", "2")]).await?;
    let api = stack.api();
    let orgs: Vec<String> = (0..4).map(|i| unique(&format!("brk{i}-"))).collect();
    for org in &orgs {
        api.ensure_org(org, "Broker restart test org").await?;
    }
    let key = api.create_service_key(None).await?;
    let now = chrono::Utc::now();
    let workload = WorkloadSpec {
        orgs,
        events: 120_000,
        duplicate_ratio: 0.10,
        inline_payload_ratio: 0.2,
        boundary_events: 500,
        late_events: 10,
        seed: 12,
        now,
        grace: chrono::Duration::hours(48),
        id_prefix: unique("brk-"),
    }
    .generate();

    // The workload in 80 slices, a second apart, so that events flow through every restart.
    let sender = Sender::new(&stack.ingest_url(), &key);
    let slices: Vec<Vec<Value>> = workload
        .deliveries
        .chunks(workload.deliveries.len().div_ceil(80))
        .map(<[Value]>::to_vec)
        .collect();
    let flow = tokio::spawn({
        let sender = sender.clone();
        async move {
            for slice in slices {
                sender.send_all(&slice, 500, 2).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            anyhow::Ok(())
        }
    });

    let broker = Broker::test();
    let seed = now.timestamp_millis() as u64;
    eprintln!("restart moments from seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for round in 0..6 {
        // Some restarts come right after the last one, while the stages are still rejoining their
        // groups and restoring state; others once they have been folding and committing again
        // for a while, so the broker goes away inside a batch or a commit.
        let pause = if rng.random_bool(0.5) {
            rng.random_range(200..1500)
        } else {
            rng.random_range(8000..16000)
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if round % 2 == 0 {
            broker.stop().await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
        } else {
            broker.kill9().await?;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..3000))).await;
        }
        broker.start().await?;
        eprintln!(
            "broker restart {} ({}) done",
            round + 1,
            if round % 2 == 0 { "graceful" } else { "SIGKILL" }
        );
    }
    let last_restart = Instant::now();
    flow.await??;
    let retries = sender.retries.load(std::sync::atomic::Ordering::Relaxed);

    // A request that timed out may have reached the log before the client resent it: its events
    // are then re-deliveries (not billed), at most 500 for each resend. Billed usage is exact.
    assert_usage_eventually_resent(
        &api,
        &workload.expected,
        retries * 500,
        Duration::from_secs(180),
    )
    .await?;
    eprintln!("usage exact {:?} after the last restart", last_restart.elapsed());
    for service in SERVICES {
        assert!(stack.running(service), "{service} is still the process the test started");
        stack.wait_readyz(service, 200, Duration::from_secs(60)).await?;
    }
    Ok(())
}

/// One org of a stack whose events all have one operation and one payload size: its events by
/// number, and the usage the first `n` of them make.
struct OneOrg {
    id: String,
    sender: Sender,
    operation: Operation,
    bytes: u64,
    now: chrono::DateTime<chrono::Utc>,
}

impl OneOrg {
    async fn new(
        stack: &Stack,
        prefix: &str,
        operation: Operation,
        bytes: u64,
    ) -> anyhow::Result<OneOrg> {
        let api = stack.api();
        let id = unique(prefix);
        api.ensure_org(&id, "Broker faults test org").await?;
        let key = api.create_key(&id, "ingest").await?;
        Ok(OneOrg {
            sender: Sender::new(&stack.ingest_url(), &key),
            id,
            operation,
            bytes,
            now: chrono::Utc::now(),
        })
    }

    /// Events `from..from + n`, sent until ingest accepted them.
    async fn send(&self, from: usize, n: usize) -> anyhow::Result<()> {
        let events: Vec<Value> = (from..from + n)
            .map(|i| {
                let id = &self.id;
                let mut e = event(
                    &format!("{id}-e{i}"),
                    id,
                    &format!("t{i}"),
                    "s",
                    None,
                    self.operation,
                    "success",
                    self.now,
                );
                e["payload_bytes"] = json!(self.bytes);
                e
            })
            .collect();
        self.sender.send_all(&events, n, 1).await
    }

    fn expect(&self, n: u64) -> BTreeMap<(String, String), Expected> {
        let mut want = Expected { traces: n, payload_bytes: self.bytes * n, ..Default::default() };
        want.by_operation.insert(self.operation, (n, self.bytes * n));
        let period = tally_metering::Period::containing(self.now).to_string();
        [((self.id.clone(), period), want)].into()
    }
}

/// A producer that takes the aggregator's transactional id, as a twin instance would.
fn fence_the_aggregator() -> anyhow::Result<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("transactional.id", "tally-aggregator-0")
        .create()?;
    producer.init_transactions(Duration::from_secs(30))?;
    Ok(())
}

/// Waits until the api's `GET /v1/pipeline` shows the aggregator with no lag on either input log.
/// With nothing more being written (ingest stopped), the aggregator then holds no open transaction.
async fn wait_until_the_aggregator_has_committed_everything(
    api: &Api,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let pipeline = api.pipeline().await?;
        let lags: Vec<Option<i64>> = pipeline["consumer_lag"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["group"] == "tally-aggregator")
            .map(|l| l["lag"].as_i64())
            .collect();
        if !lags.is_empty() && lags.iter().all(|l| *l == Some(0)) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the aggregator still lags after {timeout:?}: {}",
            pipeline["consumer_lag"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A fenced transactional producer is replaced inside the running aggregator, which goes on
/// counting exactly. Fenced again and again within minutes (a twin instance with the same
/// `TALLY_INSTANCE_ID`), the aggregator exits non-zero with one clear line instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_aggregator_replaces_its_producer_and_exits_when_a_twin_keeps_fencing_it(
) -> anyhow::Result<()> {
    let mut stack = Stack::start_with(&[("TALLY_TICK_INTERVAL_SECS", "1")]).await?;
    let api = stack.api();
    let org = OneOrg::new(&stack, "fence-", Operation::ToolCall, 7).await?;
    let rebuilds = "tally_aggregator_client_rebuilds_total{client=\"producer\"}";

    org.send(0, 100).await?;
    assert_usage_eventually(&api, &org.expect(100), Duration::from_secs(60)).await?;

    // The twin takes the id while the aggregator has no open transaction: ingest, which writes the
    // ticks, is stopped until then. (Taking it during one, the twin's InitProducerId waits for the
    // coordinator to abort that transaction and is retried; a replacement made by the aggregator
    // in between is fenced by the retry, which is a second fencing, not a second answer to one.)
    stack.kill9("ingest");
    wait_until_the_aggregator_has_committed_everything(&api, Duration::from_secs(30)).await?;
    tokio::task::spawn_blocking(fence_the_aggregator).await??;
    stack.start_service("ingest").await?;
    org.send(100, 100).await?;
    assert_usage_eventually(&api, &org.expect(200), Duration::from_secs(60)).await?;
    assert_eq!(
        stack.metric("aggregator", rebuilds).await,
        Some(1.0),
        "the fenced producer was replaced once"
    );
    assert!(stack.running("aggregator"));
    stack.wait_readyz("aggregator", 200, Duration::from_secs(30)).await?;

    // A twin keeps taking the id: the third fencing within ten minutes ends the process.
    let mut status = None;
    for _ in 0..2 {
        tokio::task::spawn_blocking(fence_the_aggregator).await??;
        status = stack.wait_exit("aggregator", Duration::from_secs(20)).await;
        if status.is_some() {
            break;
        }
    }
    let status = status.expect("the aggregator exits when its transactional id keeps being fenced");
    assert_eq!(status.code(), Some(1));
    let line = stack.last_log_line("aggregator");
    assert!(
        line.starts_with("aggregator: ") && line.contains("TALLY_INSTANCE_ID=0"),
        "one clear last line: {line}"
    );
    Ok(())
}

/// `/readyz` fails while a stage cannot progress and recovers when it can: the projector hung on a
/// locked table; every Kafka stage while the broker is away. Nothing is lost meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_a_stage_cannot_progress() -> anyhow::Result<()> {
    let mut stack =
        Stack::start_with(&[("TALLY_STALL_SECS", "5"), ("TALLY_TICK_INTERVAL_SECS", "1")]).await?;
    let api = stack.api();
    let org = OneOrg::new(&stack, "stall-", Operation::Retrieval, 3).await?;
    // The pipeline works (every stage holds its partitions): the first events are counted.
    org.send(0, 25).await?;
    assert_usage_eventually(&api, &org.expect(25), Duration::from_secs(60)).await?;
    for service in SERVICES {
        stack.wait_readyz(service, 200, Duration::from_secs(30)).await?;
    }

    // The projector hangs on PostgreSQL: a session holds its offsets table locked.
    let pool = sqlx::PgPool::connect(&tally_e2e::database_url()).await?;
    let mut lock = pool.begin().await?;
    sqlx::query("LOCK TABLE projector_offsets IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await?;
    org.send(25, 25).await?;
    // The bound is 5 s; the loop stamps every turn, so the verdict needs no watcher.
    let started = Instant::now();
    let reason = stack.wait_readyz("projector", 503, Duration::from_secs(10)).await?;
    eprintln!("projector not ready {:?} after the lock: {reason}", started.elapsed());
    assert!(reason.contains("has not turned"), "{reason}");
    lock.rollback().await?;
    stack.wait_readyz("projector", 200, Duration::from_secs(30)).await?;
    assert_usage_eventually(&api, &org.expect(50), Duration::from_secs(30)).await?;

    // The broker goes away: every stage that needs it says so, and comes back with it.
    let broker = Broker::test();
    broker.kill9().await?;
    // Within the bound (5 s) plus two watcher periods (10 s), and for ingest its 10 s Kafka
    // timeout plus a tick: 25 s with room to spare.
    let started = Instant::now();
    for service in ["aggregator", "projector", "ingest"] {
        let reason = stack
            .wait_readyz(service, 503, Duration::from_secs(25).saturating_sub(started.elapsed()))
            .await?;
        eprintln!("{service} not ready {:?} after the broker died: {reason}", started.elapsed());
    }
    let late = tokio::spawn(async move {
        org.send(50, 50).await?;
        anyhow::Ok(org)
    });
    broker.start().await?;
    for service in SERVICES {
        stack.wait_readyz(service, 200, Duration::from_secs(90)).await?;
        assert!(stack.running(service), "{service} was not restarted");
    }
    let org = late.await??;
    // Sent while the broker was away, the last batch may have reached the log before a resend.
    let resent = org.sender.retries.load(std::sync::atomic::Ordering::Relaxed) * 50;
    assert_usage_eventually_resent(&api, &org.expect(100), resent, Duration::from_secs(60)).await?;
    for service in SERVICES {
        let sample = format!("tally_stage_ready{{stage=\"{service}\"}}");
        assert_eq!(
            stack.metric(service, &sample).await,
            Some(1.0),
            "{service} exports that it is ready"
        );
    }
    Ok(())
}
