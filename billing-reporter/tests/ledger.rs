//! The reporting cycle against the real database and the Stripe stand-in: crashes between the
//! ledger and Stripe never count twice, a final refusal is recorded and not retried until an
//! operator says so, and only one reporter reports at a time.
//!
//! Usage rows are written straight into `usage_periods`, as the projector would: the reporter
//! reads nothing else.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_client_core::{IdempotencyKey, RequestStrategy, StripeRequest};
use tally_billing_reporter::ledger;
use tally_billing_reporter::plan::{self, Step};
use tally_billing_reporter::reconcile::{reconcile, table, Status};
use tally_billing_reporter::report::Reporter;
use tally_billing_reporter::setup::{setup_stripe, StripeSetup};
use tally_common::settings::Secret;
use tally_metering::period::Period;
use tally_pricing::Pricing;
use tally_schemas::Metric;
use tally_stripe::{RetryPolicy, StripeHttp};

const KEY: &str = "sk_test_ledger_0123";

fn database_url() -> String {
    std::env::var("TALLY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/tally_test".into())
}

struct World {
    pool: PgPool,
    client: StripeHttp,
    base: String,
    ids: StripeSetup,
    org: String,
    customer: String,
    period: Period,
}

async fn world() -> World {
    // The schema's owner migrates (the reporter's role could not); the test reads and writes as
    // the superuser, to set the scene the reporter then works in.
    let url = database_url();
    let (scheme, host) =
        url.split_once("://").and_then(|(s, r)| Some((s, r.split_once('@')?.1))).unwrap();
    tally_store::migrate(&Secret::new(format!("{scheme}://tally_owner@{host}")))
        .await
        .expect("the test database (make test starts it)");
    let pool = tally_store::connect(&Secret::new(url), 4)
        .await
        .expect("the test database (make test starts it)");
    let base = tally_stripe_standin::spawn_local(KEY).await.unwrap();
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        timeout: Duration::from_secs(5),
        max_rps: 1_000,
    };
    let client = StripeHttp::new(&base, Secret::new(KEY), policy);
    let ids = setup_stripe(&client, &Pricing::builtin()).await.unwrap();
    let org = format!("ledger-{:08x}", rand::random::<u32>());
    let customer = format!("cus_{org}");
    let period = Period::containing(chrono::Utc::now());
    sqlx::query("INSERT INTO stripe_customers (org_id, customer_id, subscription_id, subscription_status, linked_at) VALUES ($1, $2, 'sub_1', 'active', now() - interval '1 day')")
        .bind(&org)
        .bind(&customer)
        .execute(&pool)
        .await
        .unwrap();
    World { pool, client, base, ids, org, customer, period }
}

impl World {
    async fn usage(&self, traces: i64, payload_bytes: i64) {
        sqlx::query(
            "INSERT INTO usage_periods (org_id, period, version, state, traces, payload_bytes, not_billed_child_span,
                 not_billed_not_success, not_billed_duplicate, not_billed_late, updated_at, tier)
             VALUES ($1, $2, 1, 'open', $3, $4, 0, 0, 0, 0, now(), 'growth')
             ON CONFLICT (org_id, period) DO UPDATE SET traces = $3, payload_bytes = $4, version = usage_periods.version + 1",
        )
        .bind(&self.org)
        .bind(self.period.to_string())
        .bind(traces)
        .bind(payload_bytes)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// What Stripe counts for the org's customer this period.
    async fn stripe_total(&self, metric: Metric) -> u64 {
        let (start, end) = (self.period.start().timestamp(), self.period.end().timestamp());
        let meter = &self.ids.meters[metric.as_str()];
        let url = format!("{}/v1/billing/meters/{meter}/event_summaries?customer={}&start_time={start}&end_time={end}", self.base, self.customer);
        let page: Value = reqwest::Client::new()
            .get(url)
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        page["data"][0]["aggregated_value"].as_f64().unwrap() as u64
    }

    async fn meter_event_requests(&self) -> usize {
        let log: Value = reqwest::get(format!("{}/_standin/requests", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        log["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["path"] == "/v1/billing/meter_events")
            .count()
    }

    async fn due(&self, metric: Metric) -> Option<ledger::Due> {
        ledger::due(&self.pool)
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.org_id == self.org && d.metric == metric)
    }

    fn reporter(&self) -> Reporter {
        Reporter::new(self.pool.clone(), self.client.clone(), 4)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_between_the_ledger_and_stripe_never_count_twice() {
    let w = world().await;
    w.usage(100, 1_000).await;
    w.reporter().cycle().await.unwrap();
    assert_eq!(
        (w.stripe_total(Metric::Traces).await, w.stripe_total(Metric::PayloadBytes).await),
        (100, 1_000)
    );
    assert!(w.due(Metric::Traces).await.is_none(), "nothing left to send");

    // Died after writing the pending event, before sending it: the next cycle sends exactly
    // that event, although usage has grown again meanwhile.
    w.usage(150, 1_000).await;
    let due = w.due(Metric::Traces).await.unwrap();
    let Step::Send { pending, .. } = plan::next_step(
        &w.org,
        w.period,
        Metric::Traces,
        due.usage,
        &due.row,
        chrono::Utc::now().timestamp(),
    ) else {
        panic!()
    };
    assert!(ledger::record_pending(&w.pool, &due, &pending).await.unwrap());
    w.usage(170, 1_000).await;
    w.reporter().cycle().await.unwrap();
    assert_eq!(w.stripe_total(Metric::Traces).await, 150, "the pending event, as written");
    w.reporter().cycle().await.unwrap();
    assert_eq!(w.stripe_total(Metric::Traces).await, 170, "then the growth");

    // Stripe accepted the event, the reporter died before recording it: the next cycle sends it
    // again with the same Idempotency-Key and identifier, and Stripe does not count it again.
    w.usage(200, 1_000).await;
    let due = w.due(Metric::Traces).await.unwrap();
    let Step::Send { pending, value } = plan::next_step(
        &w.org,
        w.period,
        Metric::Traces,
        due.usage,
        &due.row,
        chrono::Utc::now().timestamp(),
    ) else {
        panic!()
    };
    assert!(ledger::record_pending(&w.pool, &due, &pending).await.unwrap());
    let payload = HashMap::from([
        ("stripe_customer_id".to_string(), w.customer.clone()),
        ("value".to_string(), value.to_string()),
    ]);
    CreateBillingMeterEvent::new("tally_traces", payload)
        .identifier(pending.identifier.as_str())
        .timestamp(pending.timestamp)
        .customize()
        .request_strategy(RequestStrategy::Idempotent(
            IdempotencyKey::new(pending.identifier.as_str()).unwrap(),
        ))
        .send(&w.client)
        .await
        .unwrap();
    assert_eq!(w.stripe_total(Metric::Traces).await, 200);
    w.reporter().cycle().await.unwrap();
    assert_eq!(w.stripe_total(Metric::Traces).await, 200, "the resend was not counted again");
    assert!(w.due(Metric::Traces).await.is_none(), "and the ledger caught up");

    // The same, when Stripe no longer has the first answer to replay (another key, same
    // identifier): the duplicate identifier is refused, and taken as accepted.
    w.usage(260, 1_000).await;
    let due = w.due(Metric::Traces).await.unwrap();
    let Step::Send { pending, value } = plan::next_step(
        &w.org,
        w.period,
        Metric::Traces,
        due.usage,
        &due.row,
        chrono::Utc::now().timestamp(),
    ) else {
        panic!()
    };
    assert!(ledger::record_pending(&w.pool, &due, &pending).await.unwrap());
    let payload = HashMap::from([
        ("stripe_customer_id".to_string(), w.customer.clone()),
        ("value".to_string(), value.to_string()),
    ]);
    CreateBillingMeterEvent::new("tally_traces", payload)
        .identifier(pending.identifier.as_str())
        .timestamp(pending.timestamp)
        .send(&w.client)
        .await
        .unwrap();
    let report = w.reporter().cycle().await.unwrap();
    assert!(report.duplicates >= 1, "{report:?}");
    assert_eq!(w.stripe_total(Metric::Traces).await, 260);
    let lines = reconcile(&w.pool, &w.client, w.period, Some(&w.org)).await.unwrap();
    assert!(lines.iter().all(|l| !l.drift()), "{}", table(&lines));

    // Something else sends Stripe usage for this customer: reconcile shows the drift.
    let payload = HashMap::from([
        ("stripe_customer_id".to_string(), w.customer.clone()),
        ("value".to_string(), "7".to_string()),
    ]);
    CreateBillingMeterEvent::new("tally_traces", payload).send(&w.client).await.unwrap();
    let lines = reconcile(&w.pool, &w.client, w.period, Some(&w.org)).await.unwrap();
    assert_eq!(
        (lines[0].status, lines[0].stripe),
        (Status::StripeDiffers, Some(267)),
        "{}",
        table(&lines)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_refusal_is_recorded_and_waits_for_an_operator() {
    let w = world().await;
    w.usage(10, 10).await;
    // An event Stripe must refuse for good: its timestamp is outside Stripe's 35 days.
    let due = w.due(Metric::Traces).await.unwrap();
    let Step::Send { mut pending, .. } = plan::next_step(
        &w.org,
        w.period,
        Metric::Traces,
        due.usage,
        &due.row,
        chrono::Utc::now().timestamp(),
    ) else {
        panic!()
    };
    pending.timestamp -= 40 * 86_400;
    assert!(ledger::record_pending(&w.pool, &due, &pending).await.unwrap());
    w.reporter().cycle().await.unwrap();
    let status = tally_billing_reporter::status::status(&w.pool).await.unwrap();
    let failure =
        status.failures.iter().find(|f| f.org_id == w.org).expect("the refusal is recorded");
    assert_eq!(
        (failure.metric.as_str(), failure.status, failure.code.as_deref(), failure.value),
        ("traces", Some(400), Some("parameter_invalid"), 10)
    );
    assert!(tally_billing_reporter::status::render(&status).contains(&w.org));
    assert_eq!(w.stripe_total(Metric::PayloadBytes).await, 10, "the other meter is not held up");
    let lines = reconcile(&w.pool, &w.client, w.period, Some(&w.org)).await.unwrap();
    let statuses: Vec<(&str, Status, u64, u64, Option<u64>)> =
        lines.iter().map(|l| (l.metric, l.status, l.tally, l.ledger, l.stripe)).collect();
    assert_eq!(
        statuses,
        [
            ("traces", Status::Failed, 10, 0, Some(0)),
            ("payload_bytes", Status::Ok, 10, 10, Some(10))
        ]
    );
    assert!(lines[0].drift() && !lines[1].drift());
    assert!(table(&lines).contains("1 with drift"));

    // Not retried: further cycles send nothing for it.
    let sent = w.meter_event_requests().await;
    w.usage(20, 10).await;
    w.reporter().cycle().await.unwrap();
    w.reporter().cycle().await.unwrap();
    assert_eq!(w.meter_event_requests().await, sent);
    assert_eq!(w.stripe_total(Metric::Traces).await, 0);

    // The operator retries: a fresh event, with a timestamp of now, carries everything.
    assert_eq!(ledger::retry_failed(&w.pool, Some(&w.org)).await.unwrap(), 1);
    w.reporter().cycle().await.unwrap();
    assert_eq!(w.stripe_total(Metric::Traces).await, 20);
    let status = tally_billing_reporter::status::status(&w.pool).await.unwrap();
    assert!(status.failures.iter().all(|f| f.org_id != w.org), "resolved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reporter_reports_at_a_time() {
    let w = world().await;
    w.usage(5, 5).await;
    // Another reporter holds the cycle lock (on its own connection): this one stands by.
    let mut other = w.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(0x7461_6c6c_792d_7270_i64)
        .execute(&mut *other)
        .await
        .unwrap();
    let report = w.reporter().cycle().await.unwrap();
    assert!(report.standby);
    assert_eq!(w.stripe_total(Metric::Traces).await, 0);
    // It goes when the other's session ends (as when that process dies).
    drop(other.detach());
    let mut report = w.reporter().cycle().await.unwrap();
    for _ in 0..100 {
        if !report.standby {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        report = w.reporter().cycle().await.unwrap();
    }
    assert!(!report.standby);
    assert_eq!(w.stripe_total(Metric::Traces).await, 5);
}

impl World {
    /// A correction of the period's invoice, as the projector stores one from
    /// `tally.corrections.v1` (only the columns the reporter reads matter here).
    async fn correction(&self, offset: i64, traces: i64, payload_bytes: i64) {
        sqlx::query(
            "INSERT INTO invoice_corrections (org_id, period, correction_id, log_partition, log_offset, corrected_at,
                 reason, tier, pricing_version, currency, traces, payload_bytes, lines, total_cents, finalized_at,
                 replaces_traces, replaces_payload_bytes, replaces_total_cents)
             VALUES ($1, $2, $3, 0, $4, now(), 'test', 'growth', '2026-11', 'usd', $5, $6, '[]', 0, now(), 0, 0, 0)",
        )
        .bind(&self.org)
        .bind(self.period.to_string())
        .bind(format!("corr_{offset}"))
        .bind(offset)
        .bind(traces)
        .bind(payload_bytes)
        .execute(&self.pool)
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrected_invoice_is_billed_and_a_lower_one_is_not_taken_back() {
    let w = world().await;
    w.usage(100, 1_000).await;
    w.reporter().cycle().await.unwrap();
    assert_eq!(w.stripe_total(Metric::Traces).await, 100);

    // `replay correct` raised the period's usage: the difference goes to Stripe as a new event.
    w.correction(1, 130, 1_000).await;
    w.reporter().cycle().await.unwrap();
    assert_eq!(
        (w.stripe_total(Metric::Traces).await, w.stripe_total(Metric::PayloadBytes).await),
        (130, 1_000)
    );
    let lines = reconcile(&w.pool, &w.client, w.period, Some(&w.org)).await.unwrap();
    assert!(lines.iter().all(|l| !l.drift()), "{}", table(&lines));
    // The projector's usage row moving on does not undo the correction: the newest correction
    // is what is billed.
    w.usage(101, 1_000).await;
    assert!(w.due(Metric::Traces).await.is_none());

    // A newer correction lowers it: a sum meter cannot go down, so nothing is sent, and
    // reconcile shows the row ahead (the credit note is the operator's, docs/replay.md).
    w.correction(2, 120, 1_000).await;
    let sent = w.meter_event_requests().await;
    w.reporter().cycle().await.unwrap();
    assert_eq!(w.meter_event_requests().await, sent);
    assert_eq!(w.stripe_total(Metric::Traces).await, 130);
    let lines = reconcile(&w.pool, &w.client, w.period, Some(&w.org)).await.unwrap();
    let traces = lines.iter().find(|l| l.metric == Metric::Traces.as_str()).unwrap();
    assert_eq!(traces.status, Status::Ahead, "{}", table(&lines));
}
