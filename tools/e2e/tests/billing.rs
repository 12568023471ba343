//! Prices through the real pipeline: drafts that follow usage and tier, the API's billing
//! endpoints, and a period close that finalizes each invoice exactly once while the aggregator
//! and projector are killed around it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tally_e2e::log::{read_topic, LogWriter};
use tally_e2e::{kafka_brokers, unique, Stack};
use tally_loadgen::send::Sender;
use tally_metering::Period;
use tally_schemas::{InvoiceV1, Metric, NotificationV1, Operation, ThresholdLevel, Tier, Topic};

const GB: u64 = 1_000_000_000;

async fn get(url: &str, token: &str) -> anyhow::Result<(u16, Value)> {
    let r = reqwest::Client::new().get(url).bearer_auth(token).send().await?;
    Ok((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
}

async fn send_json(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: &str,
) -> anyhow::Result<(u16, Value)> {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().await?;
    Ok((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
}

/// Notifications of `org` in a notifications topic.
fn notifications_of(topic: &str, org: &str) -> anyhow::Result<Vec<NotificationV1>> {
    read_topic(&kafka_brokers(), topic)?
        .into_iter()
        .filter(|(key, _)| key == org)
        .map(|(_, payload)| Ok(serde_json::from_slice(&payload)?))
        .collect()
}

fn threshold_keys(notifications: &[NotificationV1]) -> Vec<(Metric, ThresholdLevel)> {
    notifications
        .iter()
        .filter_map(|n| match n {
            NotificationV1::UsageThresholdCrossed(c) => Some((c.metric, c.level)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_follow_usage_and_tier_changes() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let api = stack.api();
    let base = stack.api_url();
    let admin = stack.admin_token.clone();
    let org = unique("bill-");
    api.ensure_org(&org, "Billing test org").await?;
    let ingest_key = api.create_key(&org, "ingest").await?;
    let read_key = api.create_key(&org, "read").await?;

    // 120 root traces of 100 MB (precomputed): 12 GB, 2 GB over starter's 10 GB.
    let ended = Utc::now() - chrono::Duration::seconds(5);
    let period = Period::containing(ended).to_string();
    let events: Vec<Value> = (0..120)
        .map(|i| {
            let mut e = tally_loadgen::generate::event(
                &format!("{org}-e{i}"),
                &org,
                &format!("t{i}"),
                "root",
                None,
                Operation::LlmCall,
                "success",
                ended,
            );
            e["payload_bytes"] = json!(100_000_000u64);
            e
        })
        .collect();
    Sender::new(&stack.ingest_url(), &ingest_key).send_all(&events, 60, 1).await?;
    let usage =
        api.wait_for_usage(&org, &period, Duration::from_secs(60), |u| u["traces"] == 120).await?;
    assert_eq!(usage["traces"], 120, "{usage}");
    assert_eq!(usage["tier"], "starter");
    assert_eq!(usage["included"], json!({"traces": 100_000, "payload_bytes": 10 * GB}));
    assert_eq!(usage["percent_used"], json!({"traces": 0.12, "payload_bytes": 120.0}));
    assert_eq!(
        usage["warnings"],
        json!([{"metric": "payload_bytes", "level": "exceeded", "percent_used": 120.0}])
    );
    // 25,000 base + 2,000,000,000 bytes × 0.00000005 = 100.
    let cost = &usage["cost"];
    assert_eq!(cost["currency"], "usd");
    assert_eq!(cost["total_cents"], 25_100, "{cost}");
    let lines: Vec<(Value, Value, Value, Value, Value)> = cost["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["kind"].clone(),
                l["metric"].clone(),
                l["quantity"].clone(),
                l["unit_amount_decimal"].clone(),
                l["amount_cents"].clone(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            (json!("base"), Value::Null, json!(1), json!("25000"), json!(25_000)),
            (json!("included"), json!("traces"), json!(120), json!("0"), json!(0)),
            (json!("included"), json!("payload_bytes"), json!(10 * GB), json!("0"), json!(0)),
            (
                json!("overage"),
                json!("payload_bytes"),
                json!(2 * GB),
                json!("0.00000005"),
                json!(100)
            ),
        ]
    );

    // The invoice endpoints show the same draft to the org's read key.
    let (status, invoice) =
        get(&format!("{base}/v1/orgs/{org}/invoices/{period}"), &read_key).await?;
    assert_eq!(status, 200, "{invoice}");
    let invoice: InvoiceV1 = serde_json::from_value(invoice)?;
    assert_eq!(
        (invoice.status, invoice.total_cents, invoice.tier),
        (tally_schemas::InvoiceStatusV1::Draft, 25_100, Tier::Starter)
    );
    assert_eq!(serde_json::to_value(&invoice.lines)?, cost["lines"]);
    assert_eq!(invoice.pricing_version, "2026-11");
    let (_, list) = get(&format!("{base}/v1/orgs/{org}/invoices"), &read_key).await?;
    assert_eq!(list["invoices"][0]["period"], period.as_str());
    assert_eq!(list["invoices"][0]["status"], "draft");

    // The estimator prices the same usage with the same code.
    let (status, estimate) = send_json(
        reqwest::Method::POST,
        &format!("{base}/v1/pricing/estimate"),
        None,
        &json!({"traces": 120, "payload_bytes": 12 * GB}).to_string(),
    )
    .await?;
    assert_eq!(status, 200, "{estimate}");
    assert_eq!(estimate["estimates"][0]["tier"], "starter");
    assert_eq!(estimate["estimates"][0]["total_cents"], 25_100);
    assert_eq!(estimate["estimates"][0]["lines"], cost["lines"]);
    assert_eq!(estimate["estimates"][1]["total_cents"], 50_000);
    assert_eq!(estimate["cheapest"], "starter");

    // Thresholds crossed on the way: 90% and 100% of the payload, once each.
    let notified = notifications_of(Topic::Notifications.name(), &org)?;
    assert_eq!(
        threshold_keys(&notified),
        [
            (Metric::PayloadBytes, ThresholdLevel::Approaching),
            (Metric::PayloadBytes, ThresholdLevel::Exceeded)
        ]
    );

    // A tier change reprices the open period.
    let (status, body) = send_json(
        reqwest::Method::PUT,
        &format!("{base}/v1/orgs/{org}/subscription"),
        Some(&admin),
        r#"{"tier": "growth"}"#,
    )
    .await?;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["tier"], "growth");
    assert_eq!(body["source"], "admin_api");
    let usage = api
        .wait_for_usage(&org, &period, Duration::from_secs(60), |u| u["tier"] == "growth")
        .await?;
    assert_eq!(usage["tier"], "growth", "{usage}");
    assert_eq!(usage["cost"]["total_cents"], 50_000);
    assert_eq!(usage["percent_used"]["payload_bytes"], 48.0);
    assert_eq!(usage["warnings"], json!([]));
    let (_, subscription) = get(&format!("{base}/v1/orgs/{org}/subscription"), &read_key).await?;
    assert_eq!(subscription["tier"], "growth");
    assert!(subscription["features"].as_array().unwrap().contains(&json!("rbac")));
    // No new notification: growth's thresholds (22.5 GB, 25 GB) are not reached.
    assert_eq!(threshold_keys(&notifications_of(Topic::Notifications.name(), &org)?).len(), 2);

    // Bad requests are refused with a code, and change nothing.
    let url = format!("{base}/v1/orgs/{org}/subscription");
    let (status, body) =
        send_json(reqwest::Method::PUT, &url, Some(&admin), r#"{"tier": "platinum"}"#).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_tier")));
    let (status, body) =
        send_json(reqwest::Method::PUT, &url, Some(&admin), r#"{"tier": "#).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_json")));
    let (status, _) =
        send_json(reqwest::Method::PUT, &url, Some(&read_key), r#"{"tier": "enterprise"}"#).await?;
    assert_eq!(status, 403);
    let (status, _) = send_json(
        reqwest::Method::PUT,
        &format!("{base}/v1/orgs/{}/subscription", unique("nobody-")),
        Some(&admin),
        r#"{"tier": "growth"}"#,
    )
    .await?;
    assert_eq!(status, 404);
    let (status, body) = send_json(
        reqwest::Method::POST,
        &format!("{base}/v1/pricing/estimate"),
        None,
        r#"{"traces": -1, "payload_bytes": 0}"#,
    )
    .await?;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_field")));
    let (status, body) = get(&format!("{base}/v1/orgs/{org}/invoices/2020-01"), &read_key).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("invoice_not_found")));
    let (status, body) = get(&format!("{base}/v1/orgs/{org}/invoices/2026-13"), &read_key).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_period")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        api.usage(&org, &period).await?["tier"],
        "growth",
        "refused changes recorded nothing"
    );

    // The price list is public.
    let pricing: Value = reqwest::get(format!("{base}/v1/pricing")).await?.json().await?;
    assert_eq!(pricing["version"], "2026-11");
    let tiers = pricing["tiers"].as_array().unwrap();
    assert_eq!(
        tiers.iter().map(|t| t["base_fee_cents"].as_i64().unwrap()).collect::<Vec<_>>(),
        [25_000, 50_000, 100_000, 300_000]
    );
    assert_eq!(tiers[3]["traces"]["bands"].as_array().unwrap().len(), 3);
    assert!(tiers[3]["features"].as_array().unwrap().contains(&json!("scim")));
    Ok(())
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn final_invoice(
    base: &str,
    admin: &str,
    org: &str,
    period: &str,
) -> anyhow::Result<Option<InvoiceV1>> {
    let (status, body) = get(&format!("{base}/v1/orgs/{org}/invoices/{period}"), admin).await?;
    if status != 200 || body["status"] != "final" {
        return Ok(None);
    }
    Ok(Some(serde_json::from_value(body)?))
}

/// September 2026, played from the log: usage, subscriptions before and after the end, the close
/// and its finalization while the aggregator and projector are killed and restarted around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_close_finalizes_each_invoice_once_across_crashes() -> anyhow::Result<()> {
    let namespace = unique("e2e-close-");
    let mut stack = Stack::start_services(
        &["api", "aggregator", "projector"],
        &[("TALLY_NAMESPACE", namespace.as_str())],
    )
    .await?;
    let api = stack.api();
    let base = stack.api_url();
    let admin = stack.admin_token.clone();
    let log = LogWriter::new(&kafka_brokers(), &namespace).await?;
    let (a, b, c) = (unique("close-a-"), unique("close-b-"), unique("close-c-"));
    for org in [&a, &b, &c] {
        api.ensure_org(org, "Close test org").await?;
    }

    // C subscribes to business on the 5th, B to growth on the 10th; usage arrives on the 15th.
    log.subscription(&c, Tier::Business, t("2026-09-05T09:00:00Z")).await?;
    log.subscription(&b, Tier::Growth, t("2026-09-10T09:00:00Z")).await?;
    let arrival = t("2026-09-15T10:00:00Z");
    for i in 0..120u32 {
        log.trace(
            &a,
            &format!("{a}-{i}"),
            arrival,
            100_000_000,
            arrival + chrono::Duration::milliseconds(i as i64),
        )
        .await?;
    }
    for i in 0..10u32 {
        // re-deliveries: counted once
        log.trace(
            &a,
            &format!("{a}-{i}"),
            arrival,
            100_000_000,
            arrival + chrono::Duration::seconds(1),
        )
        .await?;
    }
    for i in 0..300u32 {
        log.trace(
            &b,
            &format!("{b}-{i}"),
            arrival,
            100_000_000,
            arrival + chrono::Duration::milliseconds(i as i64),
        )
        .await?;
    }
    log.tick_all(t("2026-09-30T23:00:00Z")).await?;
    // After September's end, C moves to enterprise: that prices October, not September.
    log.subscription(&c, Tier::Enterprise, t("2026-10-01T00:00:30Z")).await?;

    // Drafts first.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, draft) = get(&format!("{base}/v1/orgs/{a}/invoices/2026-09"), &admin).await?;
        if draft["total_cents"] == 25_100 && draft["usage"]["traces"] == 120 {
            assert_eq!(draft["status"], "draft");
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "draft of {a}: {draft}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Crash both stages, then write the close: September ends plus 48 hours of grace.
    stack.kill9("aggregator");
    stack.kill9("projector");
    log.tick_all(t("2026-10-03T00:00:01Z")).await?;
    stack.restart("aggregator").await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stack.kill9("aggregator");
    stack.restart("aggregator").await?;
    stack.restart("projector").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.kill9("projector");
    // A late event and more time: neither may change a final invoice.
    log.trace(
        &a,
        &format!("{a}-late"),
        t("2026-09-30T12:00:00Z"),
        100_000_000,
        t("2026-10-03T00:05:00Z"),
    )
    .await?;
    log.tick_all(t("2026-10-04T00:00:00Z")).await?;
    stack.restart("projector").await?;
    stack.kill9("aggregator");
    stack.restart("aggregator").await?;

    let mut finals: BTreeMap<String, InvoiceV1> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while finals.len() < 3 {
        for org in [&a, &b, &c] {
            if let Some(invoice) = final_invoice(&base, &admin, org, "2026-09").await? {
                finals.insert(org.clone(), invoice);
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "final invoices after 90 s: {:?}",
            finals.keys()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A: starter, 12 GB: 25,000 + 2 GB × 50 = 25,100. B: growth, 30 GB: 50,000 + 5 GB × 45 =
    // 50,225. C: business, no usage: 100,000.
    let summary: Vec<(Tier, u64, u64, i64)> = [&a, &b, &c]
        .iter()
        .map(|o| {
            let i = &finals[*o];
            (i.tier, i.usage.traces, i.usage.payload_bytes, i.total_cents)
        })
        .collect();
    assert_eq!(
        summary,
        [
            (Tier::Starter, 120, 12 * GB, 25_100),
            (Tier::Growth, 300, 30 * GB, 50_225),
            (Tier::Business, 0, 0, 100_000)
        ]
    );
    for invoice in finals.values() {
        assert_eq!(
            invoice.finalized_at,
            Some(t("2026-10-03T00:00:00Z")),
            "end of September plus the grace"
        );
        assert_eq!(invoice.pricing_version, "2026-11");
    }
    let usage = api
        .wait_for_usage(&a, "2026-09", Duration::from_secs(30), |u| u["not_billed"]["late"] == 1)
        .await?;
    assert_eq!(
        (usage["not_billed"]["late"].as_u64(), usage["not_billed"]["duplicate"].as_u64()),
        (Some(1), Some(10))
    );
    assert_eq!(usage["period"]["state"], "closed");
    assert_eq!(usage["cost"]["status"], "final");
    // C's October exists on enterprise, as a draft.
    let (_, list) = get(&format!("{base}/v1/orgs/{c}/invoices"), &admin).await?;
    let periods: Vec<(Value, Value, Value)> = list["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["period"].clone(), i["status"].clone(), i["tier"].clone()))
        .collect();
    assert_eq!(
        periods,
        [
            (json!("2026-10"), json!("draft"), json!("enterprise")),
            (json!("2026-09"), json!("final"), json!("business"))
        ]
    );

    // Exactly one InvoiceFinalized per org, equal to the stored invoice; each threshold once.
    let topic = log.topic(Topic::Notifications);
    for org in [&a, &b, &c] {
        let notified = notifications_of(&topic, org)?;
        let finalized: Vec<&InvoiceV1> = notified
            .iter()
            .filter_map(|n| match n {
                NotificationV1::InvoiceFinalized(f) => Some(&f.invoice),
                _ => None,
            })
            .collect();
        assert_eq!(finalized, [&finals[org.as_str()]], "InvoiceFinalized of {org}");
        let expected = if org == &c {
            vec![]
        } else {
            vec![
                (Metric::PayloadBytes, ThresholdLevel::Approaching),
                (Metric::PayloadBytes, ThresholdLevel::Exceeded),
            ]
        };
        assert_eq!(threshold_keys(&notified), expected, "thresholds of {org}");
    }
    Ok(())
}
