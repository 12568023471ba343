//! The stand-in over HTTP: keys, form bodies, idempotent replay, injected faults and the request
//! log, as the billing reporter's tests rely on them.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

async fn start() -> String {
    tally_stripe_standin::spawn_local("sk_test_standin_http").await.unwrap()
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = client
        .post(url)
        .bearer_auth("sk_test_standin_http")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

#[tokio::test]
async fn faults_replay_and_the_request_log() {
    let base = start().await;
    let client = reqwest::Client::new();
    let meter = post(
        &client,
        &format!("{base}/v1/billing/meters"),
        "display_name=T&event_name=t&default_aggregation[formula]=sum",
        None,
    )
    .await;
    assert_eq!(meter.0, 200, "{:?}", meter.2);

    // Only the configured key is accepted.
    let r = client
        .get(format!("{base}/v1/billing/meters"))
        .bearer_auth("sk_test_other")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(!body.to_string().contains("sk_test_other"));

    // Every request fails with 429 while the share is 1, and nothing is stored.
    let faults = |f: Value| {
        let client = client.clone();
        let url = format!("{base}/_standin/faults");
        async move { assert!(client.post(url).json(&f).send().await.unwrap().status().is_success()) }
    };
    faults(json!({"rate_429": 1.0})).await;
    let event = "event_name=t&payload[stripe_customer_id]=cus_1&payload[value]=5&identifier=ev-1";
    let (status, headers, body) =
        post(&client, &format!("{base}/v1/billing/meter_events"), event, Some("k-1")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limit")));
    assert_eq!(headers["stripe-should-retry"], "true");

    // A slow answer has done its work: the retry with the same key replays it.
    faults(json!({"rate_slow": 1.0, "slow_ms": 300})).await;
    let started = Instant::now();
    let (status, _, first) =
        post(&client, &format!("{base}/v1/billing/meter_events"), event, Some("k-1")).await;
    assert_eq!(status, 200, "{first}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    faults(json!({})).await;
    let (status, headers, again) =
        post(&client, &format!("{base}/v1/billing/meter_events"), event, Some("k-1")).await;
    assert_eq!((status, &again), (200, &first));
    assert_eq!(headers["idempotent-replayed"], "true");
    // Without the key, the identifier still protects against a double count.
    let (status, _, body) =
        post(&client, &format!("{base}/v1/billing/meter_events"), event, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("resource_already_exists")));

    // Bad shares are refused.
    let r = client
        .post(format!("{base}/_standin/faults"))
        .json(&json!({"rate_429": 0.8, "rate_500": 0.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);

    let log: Value =
        client.get(format!("{base}/_standin/requests")).send().await.unwrap().json().await.unwrap();
    let events: Vec<(u64, bool)> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/v1/billing/meter_events")
        .map(|r| (r["status"].as_u64().unwrap(), r["replayed"].as_bool().unwrap()))
        .collect();
    assert_eq!(events, [(429, false), (200, false), (200, true), (400, false)]);
    assert_eq!(log["requests"][0]["params"]["default_aggregation"]["formula"], "sum");
}
