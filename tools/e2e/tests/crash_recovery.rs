//! kill -9 the aggregator and the projector, separately and several times at random moments,
//! while a workload flows; after restarts the usage is still exact.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use tally_e2e::{assert_usage_eventually, unique, Stack};
use tally_loadgen::send::Sender;
use tally_loadgen::WorkloadSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_exact_after_repeated_kill_9() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    let api = stack.api();
    let orgs: Vec<String> = (0..5).map(|i| unique(&format!("crash{i}-"))).collect();
    for org in &orgs {
        api.ensure_org(org, "Crash test org").await?;
    }
    let key = api.create_service_key(None).await?;
    let now = chrono::Utc::now();
    let workload = WorkloadSpec {
        orgs,
        events: 100_000,
        duplicate_ratio: 0.10,
        inline_payload_ratio: 0.3,
        boundary_events: 1_000,
        late_events: 20,
        seed: 11,
        now,
        grace: chrono::Duration::hours(48),
        id_prefix: unique("crash-"),
    }
    .generate();

    let sender = Sender::new(&stack.ingest_url(), &key);
    let deliveries = workload.deliveries.clone();
    let flow = tokio::spawn({
        let sender = sender.clone();
        async move { sender.send_all(&deliveries, 250, 2).await }
    });

    // Kill while events flow, and a few times more after, alternating the two stages.
    let mut rng = rand::rngs::StdRng::seed_from_u64(now.timestamp_millis() as u64);
    let mut kills = 0;
    while kills < 8 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        let victim = if kills % 2 == 0 { "aggregator" } else { "projector" };
        stack.kill9(victim);
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
        stack.restart(victim).await?;
        kills += 1;
    }
    flow.await??;
    assert_eq!(stack.restarts["aggregator"], 4);
    assert_eq!(stack.restarts["projector"], 4);

    assert_usage_eventually(&api, &workload.expected, Duration::from_secs(180)).await?;
    Ok(())
}
