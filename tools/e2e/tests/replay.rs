//! The replay tool against the live pipeline: a month played through the real aggregator and
//! projector, then recomputed from the log by the `replay` binary.
//!
//! The test runs in a namespace (its own topics, with log times it chooses) and a database of its
//! own, so `replay verify` sees exactly this month's orgs and `replay rebuild` exactly its read
//! models.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tally_e2e::log::{read_topic, LogWriter};
use tally_e2e::{binary, database_url, kafka_brokers, unique, Stack};
use tally_schemas::{InvoiceV1, NotificationV1, Tier, Topic};

const GB: u64 = 1_000_000_000;
const PERIOD: &str = "2026-09";
/// Every read model the projector writes (replay/src/rebuild.rs).
const READ_MODELS: [&str; 7] = [
    "usage_periods",
    "usage_by_operation",
    "usage_daily",
    "late_events",
    "invoices",
    "invoice_corrections",
    "projector_offsets",
];

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A database of this test's own, next to `tally_test`.
async fn own_database() -> anyhow::Result<(String, String)> {
    let name = unique("tally_replay_").replace('-', "_");
    let url = tally_e2e::create_database(&name, true).await?;
    Ok((name, url))
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("replay printed no JSON ({e}): {}\n{}", self.stdout, self.stderr)
        })
    }
}

/// Runs the `replay` binary with the stack's namespace and database.
async fn replay(namespace: &str, db: &str, args: &[&str]) -> anyhow::Result<Run> {
    let out = tokio::process::Command::new(binary("replay"))
        .args(args)
        .env("TALLY_KAFKA_BROKERS", kafka_brokers())
        // replay rebuilds read models: it runs as the schema's owner.
        .env("TALLY_DATABASE_URL", tally_e2e::as_role(db, "tally_owner"))
        .env("TALLY_NAMESPACE", namespace)
        .env("NO_COLOR", "1")
        .output()
        .await?;
    Ok(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Every row of every read model in `schema`, as sorted JSON texts per table. Only the
/// projection's own wall-clock columns are left out.
async fn read_models(
    pool: &PgPool,
    schema: &str,
) -> anyhow::Result<BTreeMap<&'static str, Vec<String>>> {
    let mut out = BTreeMap::new();
    for table in READ_MODELS {
        let wall_clock = if table == "projector_offsets" { " - 'updated_at'" } else { "" };
        let mut rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT (to_jsonb(t) - 'projected_at'{wall_clock})::text FROM {schema}.{table} t"
        ))
        .fetch_all(pool)
        .await?;
        rows.sort();
        out.insert(table, rows);
    }
    Ok(out)
}

async fn wait_invoices(pool: &PgPool, n: i64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let have: i64 = sqlx::query_scalar("SELECT count(*) FROM invoices WHERE period = $1")
            .bind(PERIOD)
            .fetch_one(pool)
            .await?;
        if have == n {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{have} of {n} invoices after 90 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_agrees_with_the_live_pipeline_finds_an_altered_invoice_corrects_it_and_rebuilds(
) -> anyhow::Result<()> {
    let namespace = unique("e2e-replay-");
    let (db_name, db) = own_database().await?;
    let mut stack = Stack::start_services(
        &["api", "aggregator", "projector"],
        &[("TALLY_NAMESPACE", namespace.as_str()), ("TALLY_DATABASE_URL", db.as_str())],
    )
    .await?;
    let pool = PgPool::connect(&db).await?;
    let api = stack.api();
    let log = LogWriter::new(&kafka_brokers(), &namespace).await?;
    let (a, b, c, d) = (unique("rp-a-"), unique("rp-b-"), unique("rp-c-"), unique("rp-d-"));
    for org in [&a, &b, &c, &d] {
        api.ensure_org(org, "Replay test org").await?;
    }

    // September 2026. C subscribes to business on the 5th; B to growth on the 10th and to
    // business on the 20th (the tier at the end prices the month); D never subscribes.
    log.subscription(&c, Tier::Business, t("2026-09-05T09:00:00Z")).await?;
    log.subscription(&b, Tier::Growth, t("2026-09-10T09:00:00Z")).await?;
    log.subscription(&b, Tier::Business, t("2026-09-20T09:00:00Z")).await?;
    for day in [3u32, 12, 21, 29] {
        let arrival = t(&format!("2026-09-{day:02}T10:00:00Z"));
        for i in 0..40u32 {
            let ms = chrono::Duration::milliseconds(i as i64);
            log.trace(&a, &format!("{a}-{day}-{i}"), arrival, 100_000_000, arrival + ms).await?;
            log.trace(&b, &format!("{b}-{day}-{i}"), arrival, 900_000_000, arrival + ms).await?;
        }
        for i in 0..7u32 {
            // D's events end a little before they arrive; some are retried (duplicates).
            let ended = arrival - chrono::Duration::seconds(30);
            log.trace(&d, &format!("{d}-{day}-{i}"), ended, 1_000 + i as u64, arrival).await?;
            log.trace(
                &d,
                &format!("{d}-{day}-{i}"),
                ended,
                1_000 + i as u64,
                arrival + chrono::Duration::seconds(2),
            )
            .await?;
        }
    }
    // A's retries of the 3rd, days later: duplicates.
    for i in 0..10u32 {
        log.trace(
            &a,
            &format!("{a}-3-{i}"),
            t("2026-09-03T10:00:00Z"),
            100_000_000,
            t("2026-09-04T08:00:00Z"),
        )
        .await?;
    }
    log.tick_all(t("2026-09-30T23:00:00Z")).await?;
    // October begins: C moves to enterprise (prices October, not September), A sends events of
    // October and one of September's last day, inside the grace.
    log.subscription(&c, Tier::Enterprise, t("2026-10-01T00:00:30Z")).await?;
    log.trace(
        &a,
        &format!("{a}-oct-1"),
        t("2026-10-01T08:00:00Z"),
        5_000,
        t("2026-10-01T08:00:01Z"),
    )
    .await?;
    log.trace(
        &a,
        &format!("{a}-sep-30"),
        t("2026-09-30T23:59:00Z"),
        100_000_000,
        t("2026-10-02T12:00:00Z"),
    )
    .await?;
    // The close (end plus 48 hours), then a late event of September: not billed.
    log.tick_all(t("2026-10-03T00:00:01Z")).await?;
    log.trace(
        &a,
        &format!("{a}-late"),
        t("2026-09-30T12:00:00Z"),
        100_000_000,
        t("2026-10-03T00:05:00Z"),
    )
    .await?;
    log.tick_all(t("2026-10-04T00:00:00Z")).await?;
    wait_invoices(&pool, 4).await?;

    // 1. The live pipeline and replay agree, invoice by invoice, byte for byte with what the
    //    aggregator published when it finalized each one.
    let notified: BTreeMap<String, InvoiceV1> =
        read_topic(&kafka_brokers(), &log.topic(Topic::Notifications))?
            .into_iter()
            .filter_map(|(_, payload)| {
                match serde_json::from_slice::<NotificationV1>(&payload).ok()? {
                    NotificationV1::InvoiceFinalized(f) if f.invoice.period == PERIOD => {
                        Some((f.invoice.org_id.clone(), f.invoice))
                    }
                    _ => None,
                }
            })
            .collect();
    assert_eq!(notified.len(), 4, "{notified:?}");
    for org in [&a, &b, &c, &d] {
        let run = replay(&namespace, &db, &["invoice", "--org", org, "--period", PERIOD, "--json"])
            .await?;
        let out = run.json();
        assert_eq!(
            (run.code, &out["verdict"]),
            (0, &Value::from("identical")),
            "{org}: {}\n{}",
            run.stdout,
            run.stderr
        );
        let recomputed: InvoiceV1 = serde_json::from_value(out["recomputed"].clone())?;
        assert_eq!(
            serde_json::to_vec(&recomputed)?,
            serde_json::to_vec(&notified[org.as_str()])?,
            "{org}"
        );
        assert!(run.stderr.is_empty(), "--json prints nothing else: {}", run.stderr);
    }
    let summary: Vec<(Tier, u64, u64, i64)> = [&a, &b, &c, &d]
        .iter()
        .map(|o| {
            let i = &notified[o.as_str()];
            (i.tier, i.usage.traces, i.usage.payload_bytes, i.total_cents)
        })
        .collect();
    // A: starter, 161 traces of 100 MB (16.1 GB: 6.1 GB over, 305 cents); B: business (its tier
    // at the end), 160 × 900 MB = 144 GB; C: business, nothing used; D: starter, 28 traces.
    assert_eq!(summary[0], (Tier::Starter, 161, 16_100_000_000, 25_305));
    assert_eq!((summary[1].0, summary[1].1, summary[1].2), (Tier::Business, 160, 144 * GB));
    assert_eq!(summary[2], (Tier::Business, 0, 0, 100_000));
    assert_eq!((summary[3].0, summary[3].1), (Tier::Starter, 28));

    let run = replay(&namespace, &db, &["verify", "--period", PERIOD]).await?;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("4 orgs: 4 identical, 0 different"), "{}", run.stdout);

    // Errors: a period the log has not finalized yet, an org with no invoice, a bad period.
    let run =
        replay(&namespace, &db, &["invoice", "--org", &a, "--period", "2026-10", "--json"]).await?;
    assert_eq!(
        (run.code, &run.json()["error"]["code"]),
        (2, &Value::from("period_not_final")),
        "{}",
        run.stdout
    );
    let run =
        replay(&namespace, &db, &["invoice", "--org", "nobody-here", "--period", PERIOD, "--json"])
            .await?;
    assert_eq!(
        (run.code, &run.json()["error"]["code"]),
        (2, &Value::from("invoice_not_found")),
        "{}",
        run.stdout
    );
    let run = replay(&namespace, &db, &["verify", "--period", "2026-13", "--json"]).await?;
    assert_eq!(
        (run.code, &run.json()["error"]["code"]),
        (2, &Value::from("invalid_period")),
        "{}",
        run.stdout
    );

    // 2. A stored invoice altered in PostgreSQL: verify names exactly that org and that line.
    let altered = sqlx::query(
        "UPDATE invoices SET lines = jsonb_set(lines, '{1,quantity}', to_jsonb((lines->1->>'quantity')::bigint - 1))
         WHERE org_id = $1 AND period = $2",
    )
    .bind(&b)
    .bind(PERIOD)
    .execute(&pool)
    .await?;
    assert_eq!(altered.rows_affected(), 1);
    let run = replay(&namespace, &db, &["verify", "--period", PERIOD, "--json"]).await?;
    let out = run.json();
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!((out["identical"].as_u64(), out["different"].as_u64()), (Some(3), Some(1)));
    let different: Vec<&Value> =
        out["results"].as_array().unwrap().iter().filter(|r| r["verdict"] != "identical").collect();
    assert_eq!(different.len(), 1);
    assert_eq!(different[0]["org_id"], b.as_str());
    assert_eq!(different[0]["verdict"], "differs");
    assert_eq!(
        different[0]["differences"],
        serde_json::json!([{"field": "lines[1].quantity", "stored": 159, "recomputed": 160}])
    );
    let run = replay(&namespace, &db, &["verify", "--period", PERIOD]).await?;
    assert_eq!(run.code, 1);
    let b_row = run.stdout.lines().find(|l| l.starts_with(b.as_str())).unwrap_or_default();
    assert!(b_row.contains("DIFFERENT") && b_row.contains("lines[1].quantity"), "{}", run.stdout);
    assert!(run.stdout.contains("4 orgs: 3 identical, 1 different"), "{}", run.stdout);
    let run = replay(&namespace, &db, &["invoice", "--org", &b, "--period", PERIOD]).await?;
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("! line 2 included traces"), "{}", run.stdout);
    assert!(!run.stdout.contains("! line 1") && !run.stdout.contains("! total"), "{}", run.stdout);

    // 3. `replay correct` appends a correction; the projector applies it; verify agrees again.
    let run = replay(
        &namespace,
        &db,
        &["correct", "--org", &b, "--period", PERIOD, "--reason", "e2e: altered row", "--json"],
    )
    .await?;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let correction = run.json()["correction"].clone();
    assert_eq!(correction["projected"], true, "{correction}");
    let run = replay(&namespace, &db, &["verify", "--period", PERIOD]).await?;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("4 orgs: 4 identical, 0 different"), "{}", run.stdout);
    let (status, shown) = {
        let r = reqwest::Client::new()
            .get(format!("{}/v1/orgs/{b}/invoices/{PERIOD}", stack.api_url()))
            .bearer_auth(&stack.admin_token)
            .send()
            .await?;
        (r.status().as_u16(), r.json::<Value>().await?)
    };
    assert_eq!(status, 200);
    assert_eq!(shown["correction"]["correction_id"], correction["correction_id"], "{shown}");
    assert_eq!(shown["lines"][1]["quantity"], 160);
    // Nothing left to correct: nothing is appended.
    let run = replay(&namespace, &db, &["correct", "--org", &b, "--period", PERIOD]).await?;
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("nothing to correct"), "{}", run.stdout);
    assert_eq!(read_topic(&kafka_brokers(), &log.topic(Topic::Corrections))?.len(), 1);

    // 4. Rebuild beside the live tables. The rebuilt invoice of B is the one the log finalized,
    //    not the hand-edited row; with the hand edit undone, every row of every table is the same.
    let run = replay(&namespace, &db, &["rebuild", "--into", "rebuild_check"]).await?;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let quantity = "SELECT (lines->1->>'quantity')::bigint FROM {schema}.invoices WHERE org_id = $1 AND period = $2";
    let rebuilt: i64 = sqlx::query_scalar(&quantity.replace("{schema}", "rebuild_check"))
        .bind(&b)
        .bind(PERIOD)
        .fetch_one(&pool)
        .await?;
    assert_eq!(rebuilt, 160);
    sqlx::query("UPDATE invoices SET lines = jsonb_set(lines, '{1,quantity}', '160') WHERE org_id = $1 AND period = $2")
        .bind(&b)
        .bind(PERIOD)
        .execute(&pool)
        .await?;
    let live = read_models(&pool, "public").await?;
    assert!(live.values().all(|rows| !rows.is_empty()), "every read model has rows: {live:?}");
    assert_eq!(read_models(&pool, "rebuild_check").await?, live);
    // From nothing: the read models are lost; rebuild swaps rebuilt tables in.
    stack.kill9("projector");
    let lost = READ_MODELS.map(|t| format!("public.{t}")).join(", ");
    sqlx::query(&format!("TRUNCATE {lost}")).execute(&pool).await?;
    let run = replay(&namespace, &db, &["rebuild", "--json"]).await?;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.json()["replaced"].as_str().is_some_and(|s| s.starts_with("tally_replaced_")),
        "{}",
        run.stdout
    );
    assert_eq!(read_models(&pool, "public").await?, live);
    let run = replay(&namespace, &db, &["verify", "--period", PERIOD]).await?;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    // The live projector carries on in the swapped-in tables.
    stack.restart("projector").await?;
    log.trace(
        &a,
        &format!("{a}-oct-2"),
        t("2026-10-04T08:00:00Z"),
        5_000,
        t("2026-10-04T08:00:01Z"),
    )
    .await?;
    let usage =
        api.wait_for_usage(&a, "2026-10", Duration::from_secs(60), |u| u["traces"] == 2).await?;
    assert_eq!(usage["traces"], 2, "{usage}");

    drop(stack);
    pool.close().await;
    if let Ok(admin) = PgPool::connect(&database_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .execute(&admin)
            .await;
    }
    Ok(())
}
