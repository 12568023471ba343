//! Several aggregator and projector instances share the work; when one dies its partitions move
//! to the others, and the usage stays exact.

use std::time::Duration;

use tally_e2e::{assert_usage_eventually, unique, Stack};
use tally_loadgen::send::Sender;
use tally_loadgen::WorkloadSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_per_stage_and_a_failover_stay_exact() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.start_instance("aggregator", 1).await?;
    stack.start_instance("projector", 1).await?;
    let api = stack.api();
    let orgs: Vec<String> = (0..8).map(|i| unique(&format!("inst{i}-"))).collect();
    for org in &orgs {
        api.ensure_org(org, "Instances test org").await?;
    }
    let key = api.create_service_key(None).await?;
    let now = chrono::Utc::now();
    let workload = WorkloadSpec {
        orgs,
        events: 60_000,
        duplicate_ratio: 0.10,
        inline_payload_ratio: 0.2,
        boundary_events: 500,
        late_events: 10,
        seed: 5,
        now,
        grace: chrono::Duration::hours(48),
        id_prefix: unique("inst-"),
    }
    .generate();
    let sender = Sender::new(&stack.ingest_url(), &key);
    let deliveries = workload.deliveries.clone();
    let flow = tokio::spawn({
        let sender = sender.clone();
        async move { sender.send_all(&deliveries, 200, 2).await }
    });
    // Instance 1 of each stage dies for good mid-flow: the group moves its partitions to
    // instance 0 after the session timeout, and instance 0 restores their state.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stack.kill9_instance("aggregator", 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.kill9_instance("projector", 1);
    flow.await??;
    assert_usage_eventually(&api, &workload.expected, Duration::from_secs(180)).await?;
    Ok(())
}
