//! `make bench-page` (the api side; the browser side is `tools/e2e/browser/timing.mjs`): what the
//! usage page costs the api (BENCHMARKS.md, "The usage page").
//!
//! 1. 10,000 orgs (`TALLY_BENCH_ORGS`), each with its own usage this period, sent through ingest
//!    and waited for until the api shows every one of them.
//! 2. `GET /v1/orgs?sort=traces&order=desc&limit=50` (the operator's list sorted by usage): the
//!    first page, and pages deep in the list through their cursors; latency percentiles over
//!    `TALLY_BENCH_LIST_REQUESTS` requests, one at a time.
//! 3. `GET /v1/orgs/{org}/usage` with read keys at a fixed `TALLY_BENCH_USAGE_RATE` (2,000/s) for
//!    `TALLY_BENCH_USAGE_SECS` (20 s), open loop: a request is sent every 0.5 ms whatever the
//!    answers do (each in a task of its own), so a slow answer cannot hold back the requests
//!    behind it. Latency counts from the send; how late the sends ran against their schedule
//!    (the timer wakes each millisecond) is printed beside it.
//! 4. The page's files as the api serves them (gzip): their sizes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::future::join_all;
use serde_json::Value;
use tally_metering::Period;

use crate::Endpoints;
use tally_loadgen::send::Sender;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    format!(
        "n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    )
}

/// The benchmark's orgs: `bench-org-00000`..; org `i` gets `i % 97 + 1` traces this period.
fn org(i: u64) -> String {
    format!("bench-org-{i:05}")
}

async fn prepare(ep: &Endpoints, orgs: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    for chunk in (0..orgs).collect::<Vec<_>>().chunks(64) {
        join_all(
            chunk.iter().map(|&i| async move {
                ep.api.ensure_org(&org(i), &format!("Bench org {i}")).await
            }),
        )
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    }
    println!("bench-page: {orgs} orgs registered in {:.1} s", started.elapsed().as_secs_f64());
    let period = Period::containing(chrono::Utc::now());
    let ended_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // Unique per org and count, so a second run adds nothing (the ids are the same).
    let mut events = Vec::new();
    for i in 0..orgs {
        for n in 0..(i % 97 + 1) {
            events.push(serde_json::json!({
                "event_id": format!("bench-page-{}-{i}-{n}", period), "org_id": org(i), "trace_id": format!("t{i}-{n}"),
                "span_id": "s", "operation": "llm_call", "status": "success",
                "started_at": ended_at, "ended_at": ended_at, "payload_bytes": 1000 + i * 7 + n,
            }));
        }
    }
    let key = ep.api.create_service_key(None).await?;
    Sender::new(&ep.ingest_url, &key).send_all(&events, 1000, 8).await?;
    // Every org's count, as the api shows it.
    let period = period.to_string();
    for chunk in (0..orgs).collect::<Vec<_>>().chunks(64) {
        let waits = chunk.iter().map(|&i| {
            let want = i % 97 + 1;
            let period = period.clone();
            async move {
                let usage = ep
                    .api
                    .wait_for_usage(&org(i), &period, Duration::from_secs(300), |u| {
                        u["traces"].as_u64() == Some(want)
                    })
                    .await?;
                if usage["traces"].as_u64() != Some(want) {
                    bail!("org {} shows {} traces, not {want}", org(i), usage["traces"]);
                }
                Ok(())
            }
        });
        join_all(waits).await.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    }
    println!(
        "bench-page: {} events sent and folded in {:.1} s",
        events.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn list_latency(ep: &Endpoints, requests: u64) -> anyhow::Result<(String, String)> {
    let client = reqwest::Client::new();
    let url = |cursor: Option<&str>| {
        let mut u = format!("{}/v1/orgs?sort=traces&order=desc&limit=50", ep.api_url);
        if let Some(c) = cursor {
            u.push_str("&cursor=");
            u.push_str(c);
        }
        u
    };
    // Cursors deep in the list: walk it once.
    let mut cursors: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page: Value = client
            .get(url(cursor.as_deref()))
            .bearer_auth(&ep.admin_token)
            .send()
            .await?
            .json()
            .await?;
        match page["next_cursor"].as_str() {
            Some(c) => {
                cursors.push(c.to_string());
                cursor = Some(c.to_string());
            }
            None => break,
        }
    }
    // The last page may be short; every other holds 50.
    cursors.pop();
    let (mut first, mut deep) = (Vec::new(), Vec::new());
    for n in 0..requests {
        let deep_page = n % 2 == 1 && !cursors.is_empty();
        let target = if deep_page {
            url(Some(&cursors[(n as usize * 7919) % cursors.len()]))
        } else {
            url(None)
        };
        let t = Instant::now();
        let r = client.get(target).bearer_auth(&ep.admin_token).send().await?;
        if !r.status().is_success() {
            bail!("GET /v1/orgs: {}", r.status());
        }
        let body: Value = r.json().await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if body["orgs"].as_array().map_or(0, Vec::len) != 50 {
            bail!("a page of the list did not hold 50 orgs");
        }
        if deep_page {
            deep.push(ms)
        } else {
            first.push(ms)
        };
    }
    Ok((summary(first), format!("{} ({} pages in the list)", summary(deep), cursors.len() + 2)))
}

async fn usage_latency(ep: &Endpoints, orgs: u64, rate: u64, secs: u64) -> anyhow::Result<String> {
    let readers = orgs.min(200);
    let mut keys = Vec::new();
    for i in 0..readers {
        keys.push((org(i), ep.api.create_key(&org(i), "read").await?));
    }
    let keys = Arc::new(keys);
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let period = Period::containing(chrono::Utc::now()).to_string();
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let total = rate * secs;
    let start = Instant::now() + Duration::from_millis(100);
    let mut handles = Vec::with_capacity(total as usize);
    for n in 0..total {
        let due = start + interval * n as u32;
        tokio::time::sleep_until(due.into()).await;
        let (client, keys, base, period) =
            (client.clone(), keys.clone(), ep.api_url.clone(), period.clone());
        handles.push(tokio::spawn(async move {
            let (org, key) = &keys[(n % keys.len() as u64) as usize];
            let sent = Instant::now();
            let r = client
                .get(format!("{base}/v1/orgs/{org}/usage?period={period}"))
                .bearer_auth(key)
                .send()
                .await;
            let ok = match r {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            };
            (
                sent.elapsed().as_secs_f64() * 1000.0,
                sent.duration_since(due).as_secs_f64() * 1000.0,
                ok,
            )
        }));
    }
    let mut ms = Vec::with_capacity(handles.len());
    let mut lag = Vec::with_capacity(handles.len());
    let mut failed = 0;
    for h in handles {
        let (latency, late, ok) = h.await?;
        ms.push(latency);
        lag.push(late);
        if !ok {
            failed += 1;
        }
    }
    lag.sort_by(f64::total_cmp);
    let lag = format!(
        "sends behind schedule p99 {:.2} ms, max {:.2} ms",
        percentile(&lag, 0.99),
        lag.last().copied().unwrap_or(0.0)
    );
    let achieved = ms.len() as f64 / (start.elapsed().as_secs_f64());
    if failed > 0 {
        bail!("{failed} of {} usage requests failed", ms.len());
    }
    Ok(format!(
        "{} at {rate}/s offered ({achieved:.0}/s completed, {readers} orgs' read keys; {lag})",
        summary(ms)
    ))
}

async fn page_bytes(ep: &Endpoints) -> anyhow::Result<String> {
    let client = reqwest::Client::builder().no_gzip().build()?;
    let plain = client.get(format!("{}/app/", ep.api_url)).send().await?.text().await?;
    let mut total = 0u64;
    let mut parts = Vec::new();
    for asset in plain
        .split('"')
        .filter(|s| s.starts_with("/app/assets/") && (s.ends_with(".js") || s.ends_with(".css")))
    {
        let r = client
            .get(format!("{}{asset}", ep.api_url))
            .header("accept-encoding", "gzip")
            .send()
            .await?;
        let gz = r.headers().get("content-encoding").is_some_and(|v| v == "gzip");
        let n = r.bytes().await?.len() as u64;
        total += n;
        parts.push(format!("{asset} {n} B{}", if gz { " gzip" } else { "" }));
    }
    if parts.is_empty() {
        bail!("the page at /app/ names no script or stylesheet");
    }
    Ok(format!("{total} bytes gzipped ({})", parts.join(", ")))
}

pub async fn run(ep: anyhow::Result<Endpoints>) -> anyhow::Result<()> {
    let ep = ep?;
    let orgs = env_u64("TALLY_BENCH_ORGS", 10_000);
    prepare(&ep, orgs).await.context("preparing the orgs")?;
    let (first, deep) = list_latency(&ep, env_u64("TALLY_BENCH_LIST_REQUESTS", 2_000)).await?;
    println!("bench-page: GET /v1/orgs sorted by traces, first page: {first}");
    println!("bench-page: GET /v1/orgs sorted by traces, deep pages: {deep}");
    let usage = usage_latency(
        &ep,
        orgs,
        env_u64("TALLY_BENCH_USAGE_RATE", 2_000),
        env_u64("TALLY_BENCH_USAGE_SECS", 20),
    )
    .await?;
    println!("bench-page: GET /v1/orgs/{{org}}/usage: {usage}");
    println!("bench-page: the page's JavaScript and CSS: {}", page_bytes(&ep).await?);
    Ok(())
}
