//! The usage page in a real browser (Debian's chromium, driven by playwright-core): after a
//! known workload through ingest, the customer's and the operator's pages show what the api says,
//! to the unit and the cent; Checkout and a tier change go through the Stripe stand-in and its
//! webhooks; portal links are single-use, short-lived and tamper-proof; one org's session reads
//! nothing of another's; no secret appears in a URL; axe-core finds no serious violation.
//!
//! This test prepares the stack and the data, then runs `tools/e2e/browser/page.test.mjs`, which
//! drives the browser and compares every figure with the api's own answer.

use std::process::Stdio;
use std::time::Duration;

use chrono::{Duration as Span, Utc};
use serde_json::{json, Value};
use tally_e2e::stripe::{reporter_command, stripe_env, Stripe};
use tally_e2e::{unique, Stack};
use tally_loadgen::generate::event;
use tally_loadgen::send::Sender;
use tally_metering::Period;
use tally_schemas::Operation;

/// Orgs beside the three named ones, so that the operator's list has more than one page of 50.
const QUIET_ORGS: usize = 57;

/// `n` root traces of `org` spread over the current period so far and over the six operations,
/// `bytes` payload bytes in all (each event's share precomputed, as an emitter that stores its
/// payloads sends it).
fn root_events(org: &str, n: usize, bytes: u64, tag: &str) -> Vec<Value> {
    let now = Utc::now();
    let start = Period::containing(now).start();
    let span = (now - start).num_seconds().max(60);
    (0..n)
        .map(|i| {
            let op = Operation::ALL[i % Operation::ALL.len()];
            let ended_at = start + Span::seconds(span * (i as i64 + 1) / (n as i64 + 1));
            let mut e = event(
                &format!("{tag}-{org}-{i}"),
                org,
                &format!("t-{tag}-{i}"),
                &format!("s-{i}"),
                None,
                op,
                "success",
                ended_at,
            );
            let share = bytes / n as u64 + u64::from((i as u64) < bytes % n as u64);
            e["payload_bytes"] = share.into();
            e
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_what_the_api_says() -> anyhow::Result<()> {
    let stripe = Stripe::start().await?;
    let webhook_secret = format!("whsec_{:032x}", rand::random::<u128>());
    let mut env = stripe_env(&stripe, &webhook_secret);
    env.push(("TALLY_GRACE_HOURS", "0".to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut stack = Stack::start_with(&env).await?;
    stack.start_service("billing-reporter").await?;
    let (code, out) = reporter_command(&stack, &["setup-stripe"])?;
    assert_eq!(code, 0, "setup-stripe: {out}");
    let base = stack.api_url();
    stripe
        .standin(
            "webhook",
            json!({"url": format!("{base}/v1/stripe/webhooks"), "secret": webhook_secret}),
        )
        .await?;
    let api = stack.api();

    // The orgs: `near` past 90% of its included payload, `over` past 100%, `buyer` without a
    // subscription, and quiet ones, all under one prefix the operator searches for.
    let prefix = unique("page-");
    let org = |name: &str| format!("{prefix}-{name}");
    let (near, over, buyer) = (org("near"), org("over"), org("buyer"));
    for (id, name) in
        [(&near, "Near Limits Ltd"), (&over, "Over Quota Inc"), (&buyer, "Buyer & Co")]
    {
        api.ensure_org(id, name).await?;
    }
    let quiet: Vec<String> = (0..QUIET_ORGS).map(|i| org(&format!("quiet-{i:02}"))).collect();
    for (i, id) in quiet.iter().enumerate() {
        api.ensure_org(id, &format!("Quiet org {i}")).await?;
    }
    // The workload's emitter sends for every org of the test: a service key for all orgs.
    let ingest_key = api.create_service_key(None).await?;
    let over_billing_key = api.create_key(&over, "billing").await?;
    let near_read_key = api.create_key(&near, "read").await?;
    let over_read_key = api.create_key(&over, "read").await?;
    let ingest_key_of_other = api.create_key(&over, "ingest").await?;

    // Included payload on starter: 10 GB. 92% and 105%.
    let mut events = root_events(&near, 240, 9_200_000_000, "a");
    events.extend(root_events(&over, 300, 10_500_000_000, "a"));
    events.extend(root_events(&buyer, 36, 120_000_000, "a"));
    for (i, id) in quiet.iter().enumerate() {
        events.extend(root_events(id, (i % 7) + 1, 1_000_000 * (i as u64 + 1), "a"));
    }
    // Re-deliveries (counted once) and child spans (not billed) for `over`.
    events.extend(root_events(&over, 20, 10_500_000_000 / 300 * 20, "a").into_iter().take(20));
    for i in 0..25 {
        let ended_at = Utc::now() - Span::minutes(1);
        events.push(event(
            &format!("child-{over}-{i}"),
            &over,
            &format!("t-a-{i}"),
            &format!("c-{i}"),
            Some("s-0"),
            Operation::ToolCall,
            "success",
            ended_at,
        ));
    }
    // Late: events of the previous period, which closed at its end (no grace in this stack),
    // within ingest's 35-day window.
    let closed = Period::containing(Utc::now()).prev();
    let late_at = closed.start().max(Utc::now() - Span::days(34)) + Span::minutes(1);
    for i in 0..3 {
        let mut e = event(
            &format!("late-{near}-{i}"),
            &near,
            &format!("t-late-{i}"),
            "s-0",
            None,
            Operation::LlmCall,
            "success",
            late_at,
        );
        e["payload_bytes"] = 1000.into();
        events.push(e);
    }
    Sender::new(&stack.ingest_url(), &ingest_key).send_all(&events, 500, 2).await?;
    let _ = ingest_key_of_other;

    let period = Period::containing(Utc::now()).to_string();
    let (near_traces, over_traces) = (240u64, 300u64);
    api.wait_for_usage(&near, &period, Duration::from_secs(60), |u| u["traces"] == near_traces)
        .await?;
    api.wait_for_usage(&over, &period, Duration::from_secs(60), |u| {
        u["traces"] == over_traces && u["not_billed"]["child_span"] == 25
    })
    .await?;
    for id in quiet.iter().chain([&buyer]) {
        api.wait_for_usage(id, &period, Duration::from_secs(60), |u| {
            u["traces"].as_u64().unwrap_or(0) > 0
        })
        .await?;
    }
    api.wait_for_usage(&near, &closed.to_string(), Duration::from_secs(60), |u| {
        u["not_billed"]["late"] == 3
    })
    .await?;

    // `over` is a subscribed customer (on starter) before the browser starts: it changes tier
    // there.
    let http = reqwest::Client::new();
    let session: Value = http
        .post(format!("{base}/v1/orgs/{over}/checkout"))
        .bearer_auth(&over_billing_key)
        .json(&json!({"tier": "starter", "success_url": format!("{base}/app/"), "cancel_url": format!("{base}/app/")}))
        .send()
        .await?
        .json()
        .await?;
    let session_id = session["session_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no checkout session: {session}"))?;
    stripe.standin(&format!("checkout/sessions/{session_id}/complete"), json!({})).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s: Value = http
            .get(format!("{base}/v1/orgs/{over}/subscription"))
            .bearer_auth(&over_read_key)
            .send()
            .await?
            .json()
            .await?;
        if s["stripe"]["status"] == "active" {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the checkout webhook did not link {over}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The browser's part.
    let config = json!({
        "api": base,
        "admin_token": stack.admin_token,
        "prefix": prefix,
        "period": period,
        "late_period": closed.to_string(),
        "orgs": {"near": near, "over": over, "buyer": buyer, "quiet": quiet},
        "read_keys": {"near": near_read_key, "over": over_read_key},
        "ingest_key": ingest_key,
        "results": tally_e2e::logs_dir().join("page").display().to_string(),
    });
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/page.test.mjs");
    let mut child = tokio::process::Command::new("node")
        .arg(&script)
        .env("TALLY_PAGE_TEST", config.to_string())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let status = tokio::time::timeout(Duration::from_secs(600), child.wait()).await??;
    assert!(
        status.success(),
        "the browser test failed ({status}); its output is above, screenshots in {}",
        config["results"]
    );

    // A session lasts only while the read key it was opened with holds: revoked in PostgreSQL,
    // the key and its session stop working within the api's 5 s memory of them.
    let cookie = tally_e2e::sign_in(&base, &near_read_key).await?;
    let current = |cookie: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            anyhow::Ok(
                http.get(format!("{base}/v1/sessions/current"))
                    .header("cookie", cookie)
                    .send()
                    .await?
                    .status()
                    .as_u16(),
            )
        }
    };
    assert_eq!(current(cookie.clone()).await?, 200);
    let pool = sqlx::PgPool::connect(&tally_e2e::database_url()).await?;
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE org_id = $1 AND scope = 'read'")
        .bind(&near)
        .execute(&pool)
        .await?;
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    assert_eq!(current(cookie).await?, 401, "the revoked key's session is over");
    let bearer =
        http.get(format!("{base}/v1/orgs/{near}/usage")).bearer_auth(&near_read_key).send().await?;
    assert_eq!(bearer.status(), 401, "the revoked key is refused");
    Ok(())
}
