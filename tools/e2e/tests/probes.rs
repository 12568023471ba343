//! Every service serves /healthz, /readyz and Prometheus /metrics on its own address (ingest and
//! the api on a listener apart from their API, loopback by default), and the metrics count what
//! happened (with no org ids or secrets in them).

use std::time::Duration;

use tally_e2e::{unique, Stack, SERVICES};
use tally_loadgen::generate::event;
use tally_schemas::Operation;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_has_probes_and_metrics() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let api = stack.api();
    let org = unique("probe-");
    api.ensure_org(&org, "Probes").await?;
    let key = api.create_key(&org, "ingest").await?;
    let mut e = event(
        &format!("{org}-1"),
        &org,
        "t",
        "s",
        None,
        Operation::Embedding,
        "success",
        chrono::Utc::now(),
    );
    e["payload_bytes"] = 5.into();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/events", stack.ingest_url()))
        .bearer_auth(&key)
        .json(&e)
        .send()
        .await?;
    assert!(r.status().is_success());
    let period = tally_metering::Period::containing(chrono::Utc::now()).to_string();
    api.wait_for_usage(&org, &period, Duration::from_secs(30), |u| u["traces"] == 1).await?;

    let expected_metric = [
        ("api", "tally_api_requests_total{route=\"/v1/orgs/{org_id}/usage\",status=\"200\"}"),
        ("ingest", "tally_ingest_events_total{outcome=\"accepted\"}"),
        ("aggregator", "tally_aggregator_events_total{outcome=\"billed\"}"),
        ("projector", "tally_projector_updates_total{result=\"applied\"}"),
    ];
    for service in SERVICES {
        let base = format!("http://{}", stack.ops[service]);
        for path in ["/healthz", "/readyz"] {
            let r = http.get(format!("{base}{path}")).send().await?;
            assert_eq!(r.status(), 200, "{service}{path}");
        }
        let metrics = http.get(format!("{base}/metrics")).send().await?.text().await?;
        let (_, wanted) = expected_metric.iter().find(|(s, _)| *s == service).unwrap();
        assert!(metrics.contains(wanted), "{service} /metrics lacks {wanted}:\n{metrics}");
        assert!(!metrics.contains(&org), "{service} /metrics names an org");
        assert!(!metrics.contains(&stack.admin_token), "{service} /metrics shows the admin token");
        assert!(!metrics.contains(&key), "{service} /metrics shows a key");
    }
    // The API listeners serve the API only: no probes, no metrics.
    for service in ["ingest", "api"] {
        assert_ne!(stack.ops[service], stack.addrs[service]);
        for path in ["/metrics", "/readyz"] {
            let r = http.get(format!("http://{}{path}", stack.addrs[service])).send().await?;
            assert_eq!(r.status(), 404, "{service}{path} on the API listener");
        }
    }
    Ok(())
}
