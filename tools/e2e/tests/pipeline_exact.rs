//! A generated workload through the real pipeline ends in exactly the usage computed
//! independently: ≥100,000 events, several orgs, 10% re-deliveries, child spans, failures, inline
//! and precomputed payloads, late events, and events on both sides of a month boundary.

use std::time::Duration;

use tally_e2e::{assert_usage_eventually, unique, Stack};
use tally_loadgen::send::Sender;
use tally_loadgen::WorkloadSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_workload_ends_in_exact_usage() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let api = stack.api();
    let orgs: Vec<String> = (0..6).map(|i| unique(&format!("exact{i}-"))).collect();
    for org in &orgs {
        api.ensure_org(org, "Exact test org").await?;
    }
    let key = api.create_service_key(None).await?;

    let now = chrono::Utc::now();
    let spec = WorkloadSpec {
        orgs: orgs.clone(),
        events: 100_000,
        duplicate_ratio: 0.10,
        inline_payload_ratio: 0.3,
        boundary_events: 2_000,
        late_events: 50,
        seed: 7,
        now,
        grace: chrono::Duration::hours(48),
        id_prefix: unique("exact-"),
    };
    let workload = spec.generate();
    assert!(workload.deliveries.len() >= 110_000);
    // The workload must cover what this test promises.
    let periods: std::collections::BTreeSet<_> =
        workload.expected.keys().map(|(_, p)| p.clone()).collect();
    assert!(periods.len() >= 2, "events on both sides of a month boundary: {periods:?}");
    assert!(workload.expected.values().any(|e| e.late > 0), "a late event");

    let sender = Sender::new(&stack.ingest_url(), &key);
    sender.send_all(&workload.deliveries, 1_000, 4).await?;
    assert_eq!(
        sender.accepted.load(std::sync::atomic::Ordering::Relaxed),
        workload.deliveries.len() as u64
    );

    assert_usage_eventually(&api, &workload.expected, Duration::from_secs(120)).await?;

    // The daily history adds up to the period totals, and late events are listed.
    let client = reqwest::Client::new();
    for ((org, period), want) in &workload.expected {
        let p: tally_metering::Period = period.parse()?;
        let daily: serde_json::Value = client
            .get(format!(
                "{}/v1/orgs/{org}/usage/daily?from={}&to={}",
                stack.api_url(),
                p.first_day(),
                p.last_day()
            ))
            .bearer_auth(&stack.admin_token)
            .send()
            .await?
            .json()
            .await?;
        let rows = daily["days"].as_array().unwrap();
        assert_eq!(rows.len() as i64, ((p.last_day() - p.first_day()).num_days() + 1) * 6);
        let traces: u64 = rows.iter().map(|r| r["traces"].as_u64().unwrap()).sum();
        let bytes: u64 = rows.iter().map(|r| r["payload_bytes"].as_u64().unwrap()).sum();
        assert_eq!(
            (traces, bytes),
            (want.traces, want.payload_bytes),
            "daily history of {org} {period}"
        );

        let late: serde_json::Value = client
            .get(format!("{}/v1/orgs/{org}/late-events?period={period}", stack.api_url()))
            .bearer_auth(&stack.admin_token)
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(
            late["late_events"].as_array().unwrap().len() as u64,
            want.late,
            "late events of {org} {period}"
        );
    }
    Ok(())
}
