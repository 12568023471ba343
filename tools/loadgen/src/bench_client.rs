//! `make bench`, phase 5: a service that sends with `tally-client`. Four threads record events at
//! a paced rate (`TALLY_BENCH_CLIENT_RATE`, default 10,000/s, for `TALLY_BENCH_CLIENT_SECS`,
//! default 20 s), timing every `record` call; then the client flushes and the clock stops when
//! the API shows every event that was not dropped. What the service pays is the cost of
//! `record`; the rest happens on the client's own thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tally_client::{Client, Config, Recorded};
use tally_metering::Period;
use tally_schemas::{Operation, Status, TraceCompletedV1};

use crate::Endpoints;

const THREADS: u64 = 4;

pub(crate) struct ClientRun {
    pub recorded: u64,
    pub dropped: u64,
    pub record_secs: f64,
    pub e2e_secs: f64,
    /// Every `record` call's cost, in nanoseconds, sorted.
    pub costs: Vec<u64>,
}

pub(crate) async fn run(
    ep: &Endpoints,
    key: &str,
    orgs: &[String],
    run: &str,
    secs: u64,
    rate: u64,
    baseline: u64,
) -> anyhow::Result<ClientRun> {
    let client = Arc::new(Client::with_config(Config {
        queue_capacity: 100_000,
        batch_size: 1_000,
        batch_age: Duration::from_millis(100),
        ..Config::new(&ep.ingest_url, key)
    })?);
    let ended_at = chrono::Utc::now();
    let started = Instant::now();
    let per_thread = (rate / THREADS).max(1);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (client, orgs, run) = (client.clone(), orgs.to_vec(), run.to_string());
            std::thread::spawn(move || {
                let mut costs = Vec::with_capacity((per_thread * secs) as usize);
                let mut dropped = 0u64;
                for k in 0..per_thread * secs {
                    let due = started + Duration::from_secs_f64(k as f64 / per_thread as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let n = k * THREADS + t;
                    let event = TraceCompletedV1 {
                        event_id: format!("{run}-client-{n}"),
                        org_id: orgs[(n % orgs.len() as u64) as usize].clone(),
                        trace_id: format!("c{n}"),
                        span_id: format!("c{n}"),
                        parent_span_id: None,
                        operation: Operation::LlmCall,
                        status: Status::Success,
                        started_at: ended_at,
                        ended_at,
                        payload: None,
                        payload_bytes: Some(1024),
                        attributes: None,
                    };
                    let before = Instant::now();
                    let recorded = client.record(event);
                    costs.push(before.elapsed().as_nanos() as u64);
                    if recorded == Recorded::Dropped {
                        dropped += 1;
                    }
                }
                (costs, dropped)
            })
        })
        .collect();
    let mut costs = Vec::new();
    let mut dropped = 0;
    for thread in threads {
        let (c, d) = thread.join().map_err(|_| anyhow::anyhow!("a recording thread panicked"))?;
        costs.extend(c);
        dropped += d;
    }
    let record_secs = started.elapsed().as_secs_f64();
    let recorded = costs.len() as u64;
    let client = Arc::into_inner(client).expect("the recording threads are done");
    let stats = tokio::task::spawn_blocking(move || {
        let _ = client.flush(Duration::from_secs(300));
        client.shutdown(Duration::from_secs(5))
    })
    .await?;
    if stats.dropped != dropped || stats.rejected != 0 {
        bail!("tally-client: {stats:?}, but {dropped} record calls answered Dropped");
    }
    let target = baseline + recorded - dropped;
    let period = Period::containing(ended_at).to_string();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let mut total = 0;
        for org in orgs {
            total += ep.api.usage(org, &period).await?["traces"].as_u64().unwrap_or(0);
        }
        if total == target {
            break;
        }
        if total > target || Instant::now() > deadline {
            bail!("tally-client phase: the API shows {total} traces, {target} expected");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    costs.sort_unstable();
    Ok(ClientRun {
        recorded,
        dropped,
        record_secs,
        e2e_secs: started.elapsed().as_secs_f64(),
        costs,
    })
}
