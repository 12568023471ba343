//! `tally-loadgen demo` sends the sample workload and prints each org's usage and draft invoice;
//! `tally-loadgen bench` drives the running pipeline at full speed (see BENCHMARKS.md).

use std::time::Duration;

use anyhow::Context;
use tally_loadgen::api::Api;
use tally_loadgen::WorkloadSpec;
use tally_metering::Period;

mod bench;
mod bench_client;
mod bench_otlp;
mod bench_page;
mod month_log;
mod stripe_demo;

pub struct Endpoints {
    pub api: Api,
    pub ingest_url: String,
    pub api_url: String,
    pub admin_token: String,
}

fn endpoints() -> anyhow::Result<Endpoints> {
    let api_addr = std::env::var("TALLY_API_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let ingest_addr =
        std::env::var("TALLY_INGEST_ADDR").unwrap_or_else(|_| "127.0.0.1:4318".into());
    let token = match std::env::var("TALLY_ADMIN_TOKEN") {
        Ok(t) if !t.is_empty() => t,
        _ => std::fs::read_to_string(".tally/admin-token")
            .context(
                "TALLY_ADMIN_TOKEN is unset and .tally/admin-token is missing (run `make up`)",
            )?
            .trim()
            .to_string(),
    };
    Ok(Endpoints {
        api: Api::new(&format!("http://{api_addr}"), &token),
        ingest_url: format!("http://{ingest_addr}"),
        api_url: format!("http://{api_addr}"),
        admin_token: token,
    })
}

const DEMO_ORGS: [(&str, &str); 5] = [
    ("acme", "Acme Corp"),
    ("globex", "Globex"),
    ("initech", "Initech"),
    ("umbrella", "Umbrella"),
    ("hooli", "Hooli"),
];

async fn demo() -> anyhow::Result<()> {
    let ep = endpoints()?;
    for (id, name) in DEMO_ORGS {
        ep.api.ensure_org(id, name).await?;
    }
    // The demo's emitter sends for every demo org: a service key listing them.
    let demo_orgs: Vec<String> = DEMO_ORGS.iter().map(|(id, _)| id.to_string()).collect();
    let ingest_key = ep.api.create_service_key(Some(&demo_orgs)).await?;
    // acme buys the business tier through Stripe Checkout (on the stand-in `make up` runs).
    let stripe = stripe_demo::StripeDemo::connect(&ep.api_url, &ep.admin_token).await;
    let acme_customer = match &stripe {
        Some(s) => Some(s.subscribe("acme", "business").await?),
        None => {
            println!("(no Stripe stand-in on this stack: skipping Checkout and the meters)");
            None
        }
    };
    let now = chrono::Utc::now();
    let spec = WorkloadSpec {
        orgs: DEMO_ORGS.iter().map(|(id, _)| id.to_string()).collect(),
        events: 20_000,
        duplicate_ratio: 0.1,
        inline_payload_ratio: 0.5,
        boundary_events: 200,
        late_events: 5,
        seed: now.timestamp_millis() as u64,
        now,
        grace: tally_common::settings::grace()?,
        id_prefix: format!("demo-{}", now.timestamp_millis()),
    };
    let workload = spec.generate();
    println!(
        "sending {} deliveries ({} events, 10% re-delivered; all six operations, child spans, failures, late events)",
        workload.deliveries.len(),
        spec.events
    );
    let period = Period::containing(now).to_string();
    let mut before = std::collections::BTreeMap::new();
    for (org, _) in DEMO_ORGS {
        let usage = ep.api.usage(org, &period).await?;
        before.insert(org, usage["traces"].as_u64().unwrap_or(0));
    }
    // Sent the way a Rust service would: with tally-client, which batches, gzips and retries.
    let client = tally_client::Client::with_config(tally_client::Config {
        queue_capacity: workload.deliveries.len(),
        ..tally_client::Config::new(&ep.ingest_url, &ingest_key)
    })?;
    for delivery in &workload.deliveries {
        client.record(serde_json::from_value(delivery.clone()).context("a generated event")?);
    }
    client.flush_async().await;
    let stats = client.shutdown_async(Duration::from_secs(5)).await;
    anyhow::ensure!(
        stats.dropped == 0 && stats.rejected == 0,
        "tally-client dropped {} and ingest rejected {} events",
        stats.dropped,
        stats.rejected
    );

    println!(
        "\nusage for {period} (waiting until the pipeline has folded everything this demo sent):\n"
    );
    println!(
        "{:<10} {:>8} {:>14} {:>10} {:>11} {:>10} {:>6} {:>8} {:>12}",
        "org",
        "traces",
        "payload_bytes",
        "child_span",
        "not_success",
        "duplicate",
        "late",
        "tier",
        "draft (usd)"
    );
    for (org, _) in DEMO_ORGS {
        // Each org's usage grows by what this run sent; earlier runs may already be there.
        let expected =
            workload.expected.get(&(org.to_string(), period.clone())).cloned().unwrap_or_default();
        let target = before[org] + expected.traces;
        let usage = ep
            .api
            .wait_for_usage(org, &period, Duration::from_secs(60), |v| {
                v["traces"].as_u64() == Some(target)
            })
            .await?;
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        let nb = &usage["not_billed"];
        let cents = usage["cost"]["total_cents"].as_i64().unwrap_or(0);
        println!(
            "{:<10} {:>8} {:>14} {:>10} {:>11} {:>10} {:>6} {:>8} {:>12}",
            org,
            n(&usage["traces"]),
            n(&usage["payload_bytes"]),
            n(&nb["child_span"]),
            n(&nb["not_success"]),
            n(&nb["duplicate"]),
            n(&nb["late"]),
            usage["tier"].as_str().unwrap_or("?"),
            tally_pricing::dollars(cents)
        );
    }
    if let (Some(stripe), Some(customer)) = (&stripe, &acme_customer) {
        stripe.show_meters("acme", customer, Period::containing(now)).await?;
    }
    Ok(())
}

/// Prints a portal link for an org's people (the usage page, docs/page.md).
async fn portal_link(org: Option<String>) -> anyhow::Result<()> {
    let org = org.context("name the org: tally-loadgen portal-link ORG")?;
    println!("{}", endpoints()?.api.portal_link(&org).await?);
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let command = std::env::args().nth(1).unwrap_or_default();
    let result = match command.as_str() {
        "demo" => demo().await,
        "bench" => bench::run(endpoints()).await,
        "bench-otlp" => bench_otlp::run(endpoints()).await,
        "bench-page" => bench_page::run(endpoints()).await,
        "portal-link" => portal_link(std::env::args().nth(2)).await,
        "month-log" => tokio::task::spawn_blocking(month_log::run)
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("{e}"))),
        _ => {
            eprintln!(
                "usage: tally-loadgen demo | bench | bench-otlp | bench-page | portal-link ORG | month-log"
            );
            return std::process::ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tally-loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
