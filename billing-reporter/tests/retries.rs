//! Tally's Stripe client against the stand-in with injected faults: every meter event is counted
//! exactly once although a third of the answers are 429s, 500s or too slow to wait for; a final
//! refusal is not retried; the request rate stays under the cap.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::billing_meter_event_summary::ListIdBillingMeterEventSummary;
use stripe_client_core::{IdempotencyKey, RequestStrategy, StripeRequest};
use tally_billing_reporter::client::{RetryPolicy, StripeCallError, StripeHttp};
use tally_billing_reporter::setup::setup_stripe;
use tally_common::settings::Secret;
use tally_pricing::Pricing;

const KEY: &str = "sk_test_retries_0123";

async fn standin() -> String {
    tally_stripe_standin::spawn_local(KEY).await.unwrap()
}

async fn faults(base: &str, f: Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/_standin/faults"))
        .json(&f)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

fn policy(max_rps: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts: 30,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        timeout: Duration::from_millis(150),
        max_rps,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_counts_once_through_faults() {
    let base = standin().await;
    let client = StripeHttp::new(&base, Secret::new(KEY), policy(1_000));
    let ids =
        setup_stripe(&client, &Pricing::builtin()).await.expect("setup through Tally's client");
    let customer = "cus_retries";
    // A third of the answers fail: 429s and 500s before any work, and slow answers after the work
    // (longer than the client waits, so it retries something that was done).
    faults(&base, json!({"rate_429": 0.1, "rate_500": 0.1, "rate_slow": 0.15, "slow_ms": 400}))
        .await;
    let hour = chrono::Utc::now().timestamp() / 3600 * 3600;
    let mut expected = 0u64;
    for i in 0..60u64 {
        let value = 1_000 + i;
        expected += value;
        let identifier = format!("acme/2026-11/traces/{i}");
        let payload = HashMap::from([
            ("stripe_customer_id".to_string(), customer.to_string()),
            ("value".to_string(), value.to_string()),
        ]);
        CreateBillingMeterEvent::new("tally_traces", payload)
            .identifier(identifier.as_str())
            .timestamp(hour + 1)
            .customize()
            .request_strategy(RequestStrategy::Idempotent(
                IdempotencyKey::new(&identifier).unwrap(),
            ))
            .send(&client)
            .await
            .unwrap_or_else(|e| panic!("event {i}: {e}"));
    }
    faults(&base, json!({})).await;
    let summary = ListIdBillingMeterEventSummary::new(
        ids.meters["traces"].as_str(),
        customer,
        hour + 3600,
        hour,
    )
    .send(&client)
    .await
    .unwrap();
    assert_eq!(summary.data[0].aggregated_value, expected as f64, "each event counted once");

    let log: Value =
        reqwest::get(format!("{base}/_standin/requests")).await.unwrap().json().await.unwrap();
    let events: Vec<&Value> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/v1/billing/meter_events")
        .collect();
    assert!(events.len() > 60, "faults forced retries ({} requests)", events.len());
    assert!(
        events.iter().any(|r| r["replayed"] == true),
        "a retry after a slow answer was replayed"
    );
    assert!(events.iter().all(|r| r["idempotency_key"]
        .as_str()
        .is_some_and(|k| k.starts_with("acme/2026-11/traces/"))));

    // A final refusal is returned at once, with Stripe's code.
    let before = events.len();
    let payload = HashMap::from([
        ("stripe_customer_id".to_string(), customer.to_string()),
        ("value".to_string(), "1.5".to_string()),
    ]);
    let refused =
        CreateBillingMeterEvent::new("tally_traces", payload).send(&client).await.unwrap_err();
    match refused {
        StripeCallError::Rejected { status: 400, code, .. } => {
            assert_eq!(code.as_deref(), Some("parameter_invalid"))
        }
        other => panic!("expected a refusal, got {other}"),
    }
    let log: Value =
        reqwest::get(format!("{base}/_standin/requests")).await.unwrap().json().await.unwrap();
    let after = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/v1/billing/meter_events")
        .count();
    assert_eq!(after, before + 1, "not retried");

    // Always failing: the client gives up after its attempts.
    faults(&base, json!({"rate_500": 1.0})).await;
    let short =
        StripeHttp::new(&base, Secret::new(KEY), RetryPolicy { max_attempts: 3, ..policy(1_000) });
    let payload = HashMap::from([
        ("stripe_customer_id".to_string(), customer.to_string()),
        ("value".to_string(), "1".to_string()),
    ]);
    match CreateBillingMeterEvent::new("tally_traces", payload).send(&short).await {
        Err(StripeCallError::GaveUp { attempts: 3, .. }) => {}
        other => panic!("expected to give up, got {other:?}"),
    }
}

#[tokio::test]
async fn the_request_rate_is_capped() {
    let base = standin().await;
    let client = StripeHttp::new(&base, Secret::new(KEY), policy(20));
    let started = Instant::now();
    for _ in 0..21 {
        stripe_billing::billing_meter::ListBillingMeter::new().send(&client).await.unwrap();
    }
    // 21 requests at 20 per second: the last starts no earlier than a second after the first.
    assert!(started.elapsed() >= Duration::from_millis(990), "{:?}", started.elapsed());
}
