//! Tally and Stripe end to end, with the Stripe stand-in: Checkout and its webhooks link orgs to
//! Stripe customers; usage flows through the real pipeline into Stripe's meters exactly once,
//! through injected faults and a billing reporter killed with SIGKILL; Stripe's invoice comes
//! back on a webhook and equals Tally's to the cent; bad webhooks change nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::{json, Value};
use sha2::Sha256;
use tally_e2e::log::read_topic;
use tally_e2e::stripe::{reporter_command, stripe_env, Stripe};
use tally_e2e::{database_url, eventually, kafka_brokers, unique, Stack};
use tally_loadgen::send::Sender;
use tally_metering::Period;
use tally_schemas::{BillingEventRecordV1, Operation, Topic};

async fn request(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut r = reqwest::Client::new().request(method, url).bearer_auth(token);
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await?;
    Ok((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
}

fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The subscription changes recorded in the billing log for `org`.
fn subscription_changes(org: &str) -> anyhow::Result<Vec<tally_schemas::SubscriptionChangedV1>> {
    Ok(read_topic(&kafka_brokers(), Topic::BillingEvents.name())?
        .into_iter()
        .filter(|(key, _)| key == org)
        .filter_map(|(_, payload)| match serde_json::from_slice(&payload) {
            Ok(BillingEventRecordV1::SubscriptionChanged(c)) => Some(c),
            _ => None,
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reaches_stripe_exactly_once_through_faults_and_kills() -> anyhow::Result<()> {
    let stripe = Stripe::start().await?;
    let webhook_secret = format!("whsec_{:032x}", rand::random::<u128>());
    let env = stripe_env(&stripe, &webhook_secret);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut stack = Stack::start_with(&env).await?;
    let api = stack.api();
    let base = stack.api_url();

    // setup-stripe creates the meters, products and prices.
    let (code, out) = reporter_command(&stack, &["setup-stripe"])?;
    assert_eq!(code, 0, "setup-stripe: {out}");
    let ids: Value = serde_json::from_str(&out)?;
    let meters = ids["meters"].clone();
    stripe
        .standin(
            "webhook",
            json!({"url": format!("{base}/v1/stripe/webhooks"), "secret": webhook_secret}),
        )
        .await?;

    // Checkout refuses what it cannot sell, with a code, and asks Stripe for nothing.
    let other = unique("stripe-other-");
    api.ensure_org(&other, "Another org").await?;
    let other_key = api.create_key(&other, "billing").await?;
    let other_read = api.create_key(&other, "read").await?;
    let other_ingest = api.create_key(&other, "ingest").await?;
    let checkout = |key: String, body: Value| {
        let url = format!("{base}/v1/orgs/{other}/checkout");
        async move { request(reqwest::Method::POST, &url, &key, Some(body)).await }
    };
    let ok_urls = json!({"success_url": "https://example.com/ok", "cancel_url": "https://example.com/cancel"});
    let with = |extra: Value| {
        let mut b = ok_urls.clone();
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    for (name, key, body, status, code) in [
        ("unknown tier", other_key.clone(), with(json!({"tier": "platinum"})), 422, "invalid_tier"),
        (
            "bad url",
            other_key.clone(),
            json!({"tier": "growth", "success_url": "javascript:alert(1)", "cancel_url": "https://example.com"}),
            422,
            "invalid_field",
        ),
        (
            "unknown field",
            other_key.clone(),
            with(json!({"tier": "growth", "price": 1})),
            422,
            "invalid_field",
        ),
        ("ingest key", other_ingest.clone(), with(json!({"tier": "growth"})), 403, "forbidden"),
        ("read key", other_read.clone(), with(json!({"tier": "growth"})), 403, "forbidden"),
    ] {
        let (got, body) = checkout(key, body).await?;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{name}: {body}");
    }
    let sessions = stripe.get("/v1/checkout/sessions").await?;
    assert_eq!(sessions["data"].as_array().map(Vec::len), Some(0), "no session was created");

    // Three orgs buy a tier through Checkout; the completed session reaches the api as a
    // webhook, which links each org to its Stripe customer and records the tier.
    let mut orgs = BTreeMap::new();
    for tier in ["starter", "growth", "business"] {
        let org = unique(&format!("stripe-{tier}-"));
        api.ensure_org(&org, "Stripe test org").await?;
        let billing_key = api.create_key(&org, "billing").await?;
        let ingest_key = api.create_key(&org, "ingest").await?;
        let (status, session) = request(
            reqwest::Method::POST,
            &format!("{base}/v1/orgs/{org}/checkout"),
            &billing_key,
            Some(json!({"tier": tier, "success_url": "https://example.com/ok", "cancel_url": "https://example.com/cancel"})),
        )
        .await?;
        assert_eq!(status, 201, "{session}");
        assert!(session["url"].as_str().is_some_and(|u| u.starts_with("http")), "{session}");
        let session_id = session["session_id"].as_str().unwrap().to_string();
        let created = stripe.get(&format!("/v1/checkout/sessions/{session_id}")).await?;
        assert_eq!(created["client_reference_id"], org.as_str());
        assert_eq!(created["mode"], "subscription");
        stripe.standin(&format!("checkout/sessions/{session_id}/complete"), json!({})).await?;
        let link =
            eventually("the checkout webhook links the org", Duration::from_secs(30), || async {
                let (_, s) = request(
                    reqwest::Method::GET,
                    &format!("{base}/v1/orgs/{org}/subscription"),
                    &billing_key,
                    None,
                )
                .await?;
                Ok(s["stripe"]["customer_id"].as_str().is_some().then(|| s["stripe"].clone()))
            })
            .await?;
        orgs.insert(org.clone(), (tier, billing_key, ingest_key, link));
    }
    let (org, (_, billing_key, ..)) = orgs.iter().next().unwrap();
    let (status, body) = request(
        reqwest::Method::POST,
        &format!("{base}/v1/orgs/{org}/checkout"),
        billing_key,
        Some(with(json!({"tier": "enterprise"}))),
    )
    .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_subscribed")),
        "a second subscription would bill twice: {body}"
    );
    // Three Checkouts of one org started at once: each expires the org's earlier open one in
    // Stripe before it opens its own, so only one can be paid, and the org ends with one
    // subscription.
    let racer = unique("stripe-race-");
    api.ensure_org(&racer, "Checkout race org").await?;
    let racer_key = api.create_key(&racer, "billing").await?;
    let racer_url = format!("{base}/v1/orgs/{racer}/checkout");
    let start = || {
        request(
            reqwest::Method::POST,
            &racer_url,
            &racer_key,
            Some(with(json!({"tier": "growth"}))),
        )
    };
    let (one, two, three) = tokio::join!(start(), start(), start());
    let mut sessions = Vec::new();
    for (status, body) in [one?, two?, three?] {
        assert_eq!(status, 201, "{body}");
        sessions.push(body["session_id"].as_str().unwrap().to_string());
    }
    let mut paid = Vec::new();
    for id in &sessions {
        if stripe.standin(&format!("checkout/sessions/{id}/complete"), json!({})).await.is_ok() {
            paid.push(id.clone());
        }
    }
    assert_eq!(paid.len(), 1, "only the last Checkout can be paid: {sessions:?}");
    let raced = eventually("the raced Checkout links its org", Duration::from_secs(30), || async {
        let (_, s) = request(
            reqwest::Method::GET,
            &format!("{base}/v1/orgs/{racer}/subscription"),
            &racer_key,
            None,
        )
        .await?;
        Ok(s["stripe"]["customer_id"].as_str().is_some().then(|| s["stripe"].clone()))
    })
    .await?;
    let subscriptions = stripe
        .get(&format!("/v1/subscriptions?customer={}", raced["customer_id"].as_str().unwrap()))
        .await?;
    assert_eq!(subscriptions["data"].as_array().map(Vec::len), Some(1), "{subscriptions}");
    assert_eq!(subscription_changes(&racer)?.len(), 1);

    for (org, (tier, ..)) in &orgs {
        let changes = subscription_changes(org)?;
        assert_eq!(changes.len(), 1, "one change per completed checkout: {changes:?}");
        assert_eq!(
            (changes[0].tier.as_str(), changes[0].source),
            (*tier, tally_schemas::SubscriptionSource::Stripe)
        );
    }

    // Usage flows while Stripe fails 30% of requests (429s, 500s, and answers slower than the
    // reporter waits, after the work is done) and the reporter is killed at random moments.
    stripe
        .standin(
            "faults",
            json!({"rate_429": 0.1, "rate_500": 0.1, "rate_slow": 0.1, "slow_ms": 1500}),
        )
        .await?;
    stack.start_service("billing-reporter").await?;
    let ended = Utc::now() - chrono::Duration::seconds(5);
    let period = Period::containing(ended);
    let mut rng = rand::rng();
    let mut sent: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    // The faults stay on until they have hit some meter events: at least four rounds of usage and
    // reporter kills, then more rounds while every meter event so far happened to pass (each round
    // gives the reporter new usage to send, so each is another chance for a fault).
    let faults_hit_meter_events = || async {
        let log = stripe
            .http
            .get(format!("{}/_standin/requests", stripe.base))
            .send()
            .await?
            .json::<Value>()
            .await?;
        let hit = log["requests"].as_array().unwrap().iter().any(|r| {
            r["path"] == "/v1/billing/meter_events" && (r["status"] != 200 || r["replayed"] == true)
        });
        anyhow::Ok(hit)
    };
    let mut round = 0;
    loop {
        for (org, (_, _, ingest_key, _)) in &orgs {
            let n = rng.random_range(20..60);
            let events: Vec<Value> = (0..n)
                .map(|i| {
                    let mut e = tally_loadgen::generate::event(
                        &format!("{org}-r{round}-e{i}"),
                        org,
                        &format!("t{round}-{i}"),
                        "root",
                        None,
                        Operation::LlmCall,
                        "success",
                        ended,
                    );
                    e["payload_bytes"] = json!(rng.random_range(1_000u64..5_000_000));
                    e
                })
                .collect();
            let total = sent.entry(org.clone()).or_default();
            total.0 += n;
            total.1 += events.iter().map(|e| e["payload_bytes"].as_u64().unwrap()).sum::<u64>();
            Sender::new(&stack.ingest_url(), ingest_key).send_all(&events, 50, 1).await?;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..2_500))).await;
        stack.restart("billing-reporter").await?;
        round += 1;
        if round >= 4 {
            let hit = eventually(
                "the reporter sends this round's usage",
                Duration::from_secs(20),
                || async { Ok(faults_hit_meter_events().await?.then_some(Value::Null)) },
            )
            .await
            .is_ok();
            if hit {
                break;
            }
            assert!(round < 30, "in {round} rounds no fault ever hit a meter event; the stand-in's faults are not reaching the reporter");
        }
    }

    // Once the faults stop, Stripe's totals equal Tally's usage exactly, for every customer.
    stripe.standin("faults", json!({})).await?;
    for (org, (_, _, _, link)) in &orgs {
        let customer = link["customer_id"].as_str().unwrap().to_string();
        let (traces, bytes) = sent[org];
        api.wait_for_usage(org, &period.to_string(), Duration::from_secs(60), |u| {
            u["traces"].as_u64() == Some(traces)
        })
        .await?;
        let usage = api.usage(org, &period.to_string()).await?;
        assert_eq!(
            (usage["traces"].as_u64(), usage["payload_bytes"].as_u64()),
            (Some(traces), Some(bytes)),
            "Tally counted what was sent"
        );
        eventually(
            &format!("Stripe's meters equal Tally's usage for {org}"),
            Duration::from_secs(90),
            || async {
                let t =
                    stripe.summary(meters["traces"].as_str().unwrap(), &customer, period).await?;
                let b = stripe
                    .summary(meters["payload_bytes"].as_str().unwrap(), &customer, period)
                    .await?;
                anyhow::ensure!(
                    t <= traces && b <= bytes,
                    "Stripe counted more than Tally: {t} traces, {b} bytes"
                );
                Ok((t == traces && b == bytes).then_some(Value::Null))
            },
        )
        .await?;
        // The ledger catches up in the same cycle that sent the last event.
        eventually("reconcile shows no drift", Duration::from_secs(30), || async {
            let (code, table) = reporter_command(
                &stack,
                &["reconcile", "--period", &period.to_string(), "--org", org],
            )?;
            Ok((code == 0).then_some(Value::String(table)))
        })
        .await?;
    }
    // The reporter serves its probes, and its metrics count what it did without naming an org,
    // a customer or a secret.
    let reporter = format!("http://{}", stack.addrs["billing-reporter"]);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            reqwest::get(format!("{reporter}{path}")).await?.status(),
            200,
            "billing-reporter{path}"
        );
    }
    let metrics = reqwest::get(format!("{reporter}/metrics")).await?.text().await?;
    // (This instance started after the last kill; what it sent depends on when that was, so the
    // check is on what every cycle records.)
    for wanted in [
        "tally_billing_reporter_cycles_total{result=\"ok\"}",
        "tally_billing_reporter_failed_rows 0",
        "tally_billing_reporter_cycle_duration_seconds_count",
    ] {
        assert!(metrics.contains(wanted), "billing-reporter /metrics lacks {wanted}:\n{metrics}");
    }
    for (org, (_, _, _, link)) in &orgs {
        assert!(
            !metrics.contains(org.as_str())
                && !metrics.contains(link["customer_id"].as_str().unwrap()),
            "an org or customer in the metrics"
        );
    }
    assert!(!metrics.contains(&stripe.key) && !metrics.contains(&webhook_secret));
    let (code, status) = reporter_command(&stack, &["status", "--json"])?;
    assert_eq!(code, 0);
    let status: Value = serde_json::from_str(&status)?;
    let ours: Vec<&Value> = status["failures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| orgs.contains_key(f["org_id"].as_str().unwrap_or("")))
        .collect();
    assert!(ours.is_empty(), "no final refusals: {ours:?}");

    // Every meter event carried its identifier as its Idempotency-Key, and faults made the
    // reporter repeat some (answered by replay or refused as duplicates, never counted twice).
    let log = stripe
        .http
        .get(format!("{}/_standin/requests", stripe.base))
        .send()
        .await?
        .json::<Value>()
        .await?;
    let events: Vec<&Value> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/v1/billing/meter_events")
        .collect();
    assert!(!events.is_empty());
    for e in &events {
        assert_eq!(e["idempotency_key"], e["params"]["identifier"], "{e}");
        let ts = e["params"]["timestamp"].as_str().and_then(|t| t.parse::<i64>().ok()).unwrap();
        assert!(
            ts >= period.start().timestamp() && ts < period.end().timestamp(),
            "timestamp inside the period: {e}"
        );
    }

    // Stripe invoices the period from its meters and graduated prices; the invoice comes back on
    // a webhook and sits beside Tally's, equal to the cent.
    for (org, (_, billing_key, _, link)) in &orgs {
        let subscription = link["subscription_id"].as_str().unwrap();
        let invoice = stripe
            .standin("invoices", json!({"subscription": subscription, "period_start": period.start().timestamp(), "period_end": period.end().timestamp()}))
            .await?;
        let shown =
            eventually("Stripe's invoice reaches Tally", Duration::from_secs(30), || async {
                let (_, i) = request(
                    reqwest::Method::GET,
                    &format!("{base}/v1/orgs/{org}/invoices/{period}"),
                    billing_key,
                    None,
                )
                .await?;
                Ok(i["stripe"]["invoice_id"].is_string().then_some(i))
            })
            .await?;
        assert_eq!(shown["stripe"]["invoice_id"], invoice["id"]);
        assert_eq!(shown["status"], "draft", "Tally's own invoice is untouched: {shown}");
        assert_eq!(
            shown["stripe"]["total_cents"], shown["total_cents"],
            "Stripe's invoice equals Tally's: {shown}"
        );
        assert_eq!(invoice["total"], shown["total_cents"]);
        stripe
            .standin(&format!("invoices/{}/pay", invoice["id"].as_str().unwrap()), json!({}))
            .await?;
        eventually("the paid status reaches Tally", Duration::from_secs(30), || async {
            let (_, i) = request(
                reqwest::Method::GET,
                &format!("{base}/v1/orgs/{org}/invoices/{period}"),
                billing_key,
                None,
            )
            .await?;
            Ok((i["stripe"]["status"] == "paid").then_some(i))
        })
        .await?;
    }

    // Neither the Stripe key nor the webhook secret appears in any service's log.
    drop(stack);
    let logs = std::env::var("TALLY_TEST_LOGS")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../.tally/test/logs").into());
    for entry in std::fs::read_dir(logs)? {
        let path = entry?.path();
        // The services' logs; other tests keep folders of their own here (the page test's
        // screenshots), and the run's ledger of secrets (tests/zz_secrets.rs) is here too.
        if !path.is_file() || path == tally_e2e::secrets_ledger() {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path)?).into_owned();
        assert!(
            !text.contains(&stripe.key) && !text.contains(&webhook_secret),
            "a secret in {}",
            path.display()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_verified_and_each_event_is_processed_once() -> anyhow::Result<()> {
    let stripe = Stripe::start().await?;
    let secret = format!("whsec_{:032x}", rand::random::<u128>());
    let env = stripe_env(&stripe, &secret);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let stack = Stack::start_with(&env).await?;
    let api = stack.api();
    let url = format!("{}/v1/stripe/webhooks", stack.api_url());
    let org = unique("webhook-");
    api.ensure_org(&org, "Webhook test org").await?;
    let read_key = api.create_key(&org, "read").await?;
    let pool = sqlx::PgPool::connect(&database_url()).await?;
    let http = reqwest::Client::new();
    let post = |body: String, signature: Option<String>| {
        let mut r = http.post(&url).header("content-type", "application/json").body(body);
        if let Some(s) = signature {
            r = r.header("Stripe-Signature", s);
        }
        async move {
            let r = r.send().await?;
            Ok::<_, anyhow::Error>((
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            ))
        }
    };
    let stored = |id: String| {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM stripe_webhook_events WHERE event_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await?;
            Ok::<_, anyhow::Error>(n)
        }
    };
    let event = |id: &str, kind: &str, object: Value| {
        json!({"id": id, "object": "event", "type": kind, "created": Utc::now().timestamp(), "data": {"object": object}, "livemode": false, "api_version": "2026-08-26.dahlia"}).to_string()
    };
    let now = Utc::now().timestamp();
    let customer = format!("cus_{}", unique("w"));
    let session_id = format!("cs_test_{}", unique("w"));
    let completed_id = format!("evt_{}", unique("completed"));
    let completed = event(
        &completed_id,
        "checkout.session.completed",
        json!({
            "id": session_id, "object": "checkout.session", "client_reference_id": org, "customer": customer,
            "subscription": "sub_w1", "metadata": {"tally_org_id": org, "tally_tier": "business"}, "mode": "subscription", "status": "complete"
        }),
    );

    // Refused with 400 and no side effect: no signature, tampered body, wrong secret, stale.
    let good = sign(&secret, now, completed.as_bytes());
    let tampered = completed.replace("business", "enterprise");
    for (name, body, signature, code) in [
        ("unsigned", completed.clone(), None, "missing_signature"),
        ("tampered", tampered.clone(), Some(format!("t={now},v1={good}")), "invalid_signature"),
        (
            "wrong secret",
            completed.clone(),
            Some(format!("t={now},v1={}", sign("whsec_wrong", now, completed.as_bytes()))),
            "invalid_signature",
        ),
        (
            "stale",
            completed.clone(),
            Some(format!("t={},v1={}", now - 301, sign(&secret, now - 301, completed.as_bytes()))),
            "stale_signature",
        ),
        ("no v1", completed.clone(), Some(format!("t={now},v0={good}")), "invalid_signature"),
    ] {
        let (status, body) = post(body, signature).await?;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some(code)), "{name}: {body}");
    }
    assert_eq!(stored(completed_id.clone()).await?, 0, "a refused webhook stores nothing");

    // The session is one Tally created for the org (as `POST .../checkout` records it).
    sqlx::query(
        "INSERT INTO checkout_sessions (session_id, org_id, tier) VALUES ($1, $2, 'business')",
    )
    .bind(&session_id)
    .bind(&org)
    .execute(&pool)
    .await?;

    // Several signatures, one of them valid (as while a secret is rolled): accepted.
    let (status, body) =
        post(completed.clone(), Some(format!("t={now},v1={},v1={good}", "ab".repeat(32)))).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["duplicate"], false);
    let link = eventually("the org is linked", Duration::from_secs(30), || async {
        let (_, s) = request(
            reqwest::Method::GET,
            &format!("{}/v1/orgs/{org}/subscription", stack.api_url()),
            &read_key,
            None,
        )
        .await?;
        Ok(s["stripe"]["customer_id"].is_string().then(|| s["stripe"].clone()))
    })
    .await?;
    assert_eq!(
        link,
        json!({"customer_id": customer, "subscription_id": "sub_w1", "status": "active"})
    );

    // Redelivered: 200, and nothing happens again.
    let t2 = Utc::now().timestamp();
    let (status, body) = post(
        completed.clone(),
        Some(format!("t={t2},v1={}", sign(&secret, t2, completed.as_bytes()))),
    )
    .await?;
    assert_eq!((status, body["duplicate"].clone()), (200, json!(true)));
    assert_eq!(stored(completed_id.clone()).await?, 1);

    // The subscription is updated to growth, then deleted: the billing log records business
    // (checkout), growth, and starter, once each, whatever the redeliveries.
    let price = |tier: &str| json!({"id": format!("price_{tier}"), "object": "price", "lookup_key": format!("tally_2026_11_{tier}_base"), "product": format!("tally_{tier}")});
    let updated_id = format!("evt_{}", unique("updated"));
    let updated = event(
        &updated_id,
        "customer.subscription.updated",
        json!({
            "id": "sub_w1", "object": "subscription", "customer": customer, "status": "active",
            "metadata": {"tally_org_id": org}, "items": {"object": "list", "data": [{"id": "si_1", "price": price("growth")}]}
        }),
    );
    let deleted_id = format!("evt_{}", unique("deleted"));
    let deleted = event(
        &deleted_id,
        "customer.subscription.deleted",
        json!({
            "id": "sub_w1", "object": "subscription", "customer": customer, "status": "canceled",
            "metadata": {"tally_org_id": org}, "items": {"object": "list", "data": [{"id": "si_1", "price": price("growth")}]}
        }),
    );
    let processed = |id: String| {
        let pool = pool.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let outcome: Option<Option<String>> = sqlx::query_scalar(
                    "SELECT outcome FROM stripe_webhook_events WHERE event_id = $1",
                )
                .bind(&id)
                .fetch_optional(&pool)
                .await?;
                if let Some(Some(outcome)) = outcome {
                    return Ok::<_, anyhow::Error>(outcome);
                }
                anyhow::ensure!(Instant::now() < deadline, "{id} not processed within 30 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(processed(completed_id.clone()).await?, "linked");
    // A completed session Tally did not create (made elsewhere in the account), and one Tally
    // created for another org but naming this one: neither links anything.
    let other_org = unique("webhook-other-");
    api.ensure_org(&other_org, "Another webhook org").await?;
    let theirs = format!("cs_test_{}", unique("theirs"));
    sqlx::query(
        "INSERT INTO checkout_sessions (session_id, org_id, tier) VALUES ($1, $2, 'enterprise')",
    )
    .bind(&theirs)
    .bind(&other_org)
    .execute(&pool)
    .await?;
    for foreign in [format!("cs_test_{}", unique("elsewhere")), theirs] {
        let id = format!("evt_{}", unique("foreign"));
        let body = event(
            &id,
            "checkout.session.completed",
            json!({
                "id": foreign, "object": "checkout.session", "client_reference_id": org, "customer": format!("cus_{}", unique("x")),
                "subscription": "sub_foreign", "metadata": {"tally_org_id": org, "tally_tier": "enterprise"}, "mode": "subscription", "status": "complete"
            }),
        );
        let t = Utc::now().timestamp();
        let (status, _) =
            post(body.clone(), Some(format!("t={t},v1={}", sign(&secret, t, body.as_bytes()))))
                .await?;
        assert_eq!(status, 200);
        assert_eq!(processed(id).await?, "unknown_session");
    }
    // Another subscription of the same customer, while the linked one is live: not Tally's bill.
    let other_id = format!("evt_{}", unique("other"));
    let other = event(
        &other_id,
        "customer.subscription.updated",
        json!({
            "id": "sub_other", "object": "subscription", "customer": customer, "status": "active",
            "metadata": {"tally_org_id": org}, "items": {"object": "list", "data": [{"id": "si_9", "price": price("enterprise")}]}
        }),
    );
    // A late update of the subscription after its deletion (same second): canceled stays canceled.
    let late_id = format!("evt_{}", unique("late"));
    let late = event(
        &late_id,
        "customer.subscription.updated",
        json!({
            "id": "sub_w1", "object": "subscription", "customer": customer, "status": "active",
            "metadata": {"tally_org_id": org}, "items": {"object": "list", "data": [{"id": "si_1", "price": price("enterprise")}]}
        }),
    );
    for (id, body, outcome) in [
        (&updated_id, &updated, "tier_recorded"),
        (&updated_id, &updated, "tier_recorded"),
        (&other_id, &other, "other_subscription"),
        (&deleted_id, &deleted, "tier_recorded"),
        (&late_id, &late, "superseded"),
    ] {
        let t = Utc::now().timestamp();
        let (status, _) =
            post(body.clone(), Some(format!("t={t},v1={}", sign(&secret, t, body.as_bytes()))))
                .await?;
        assert_eq!(status, 200);
        assert_eq!(processed(id.clone()).await?, outcome, "{id}");
    }
    let changes = serde_json::to_value(subscription_changes(&org)?)?;
    let tiers: Vec<&str> =
        changes.as_array().unwrap().iter().map(|c| c["tier"].as_str().unwrap()).collect();
    assert_eq!(tiers, ["business", "growth", "starter"], "{changes}");
    let ids: Vec<&str> = changes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["stripe_event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [completed_id.as_str(), updated_id.as_str(), deleted_id.as_str()]);
    let usage_tier = eventually("the org is back on starter", Duration::from_secs(30), || async {
        let (_, s) = request(
            reqwest::Method::GET,
            &format!("{}/v1/orgs/{org}/subscription", stack.api_url()),
            &read_key,
            None,
        )
        .await?;
        Ok((s["stripe"]["status"] == "canceled").then_some(s))
    })
    .await?;
    assert_eq!(usage_tier["stripe"]["subscription_id"], "sub_w1");

    // An invoice event is stored beside Tally's invoice for its period.
    let period = Period::containing(Utc::now());
    let invoice_id = format!("in_{}", unique("w"));
    let finalized = event(
        &format!("evt_{}", unique("inv")),
        "invoice.finalized",
        json!({
            "id": invoice_id, "object": "invoice", "customer": customer, "status": "open", "total": 12_345, "currency": "usd",
            "period_start": period.start().timestamp(), "period_end": period.end().timestamp(),
            "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_w1", "metadata": {"tally_org_id": org}}}
        }),
    );
    let t = Utc::now().timestamp();
    let (status, _) = post(
        finalized.clone(),
        Some(format!("t={t},v1={}", sign(&secret, t, finalized.as_bytes()))),
    )
    .await?;
    assert_eq!(status, 200);
    let shown = eventually("Stripe's invoice beside Tally's", Duration::from_secs(30), || async {
        let (_, i) = request(
            reqwest::Method::GET,
            &format!("{}/v1/orgs/{org}/invoices/{period}", stack.api_url()),
            &read_key,
            None,
        )
        .await?;
        Ok(i["stripe"].is_object().then_some(i))
    })
    .await?;
    assert_eq!(
        shown["stripe"],
        json!({"invoice_id": invoice_id, "status": "open", "total_cents": 12_345, "currency": "usd"})
    );

    // An event the sweeper gave up on (50 failed attempts) waits for an operator: listed, counted
    // by a metric, and processed when retried.
    let stuck_id = format!("evt_{}", unique("stuck"));
    let stuck: Value = serde_json::from_str(&event(
        &stuck_id,
        "customer.subscription.updated",
        json!({
            "id": "sub_w1", "object": "subscription", "customer": customer, "status": "canceled",
            "metadata": {"tally_org_id": org}, "items": {"object": "list", "data": []}
        }),
    ))?;
    sqlx::query(
        "INSERT INTO stripe_webhook_events (event_id, type, created, payload, attempts, last_error)
         VALUES ($1, 'customer.subscription.updated', now(), $2, 50, 'the billing log: timed out')",
    )
    .bind(&stuck_id)
    .bind(&stuck)
    .execute(&pool)
    .await?;
    let admin = stack.admin_token.clone();
    let base = stack.api_url();
    let (status, failed) = request(
        reqwest::Method::GET,
        &format!("{base}/v1/stripe/webhook-events/failed"),
        &admin,
        None,
    )
    .await?;
    assert_eq!(status, 200, "{failed}");
    let listed: Vec<&str> = failed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [stuck_id.as_str()], "{failed}");
    assert_eq!(failed["events"][0]["last_error"], "the billing log: timed out");
    assert_eq!(stack.metric("api", "tally_api_stripe_events_failed").await, Some(1.0));
    let (status, _) = request(
        reqwest::Method::GET,
        &format!("{base}/v1/stripe/webhook-events/failed"),
        &read_key,
        None,
    )
    .await?;
    assert_eq!(status, 403, "an operator's job");
    let (status, retried) = request(
        reqwest::Method::POST,
        &format!("{base}/v1/stripe/webhook-events/retry"),
        &admin,
        Some(json!({})),
    )
    .await?;
    assert_eq!(
        (status, retried["retried"].as_u64(), retried["processed"].as_u64()),
        (200, Some(1), Some(1)),
        "{retried}"
    );
    assert_eq!(processed(stuck_id).await?, "superseded", "the subscription was canceled already");
    let (_, failed) = request(
        reqwest::Method::GET,
        &format!("{base}/v1/stripe/webhook-events/failed"),
        &admin,
        None,
    )
    .await?;
    assert_eq!(failed["events"], json!([]));
    assert_eq!(stack.metric("api", "tally_api_stripe_events_failed").await, Some(0.0));
    Ok(())
}
