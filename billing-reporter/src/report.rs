//! The reporting cycle: every `TALLY_REPORT_INTERVAL_SECS`, for each (org, period, metric) that
//! Stripe does not have yet, plan the next meter event ([`crate::plan`]), write it to the ledger
//! as pending, send it, and record it as reported once Stripe accepts it.
//!
//! Why Stripe never counts twice: an event is in the ledger before it leaves, with its
//! identifier, value and timestamp; until Stripe's answer is recorded, every cycle sends exactly
//! that event again (same `identifier`, same `Idempotency-Key`). Stripe replays the first answer
//! to a repeated key and refuses a repeated identifier (`resource_already_exists`), which the
//! reporter takes as accepted. Both last 24 hours at Stripe; an event still pending after
//! [`UNKNOWN_OUTCOME_AFTER`] (when Stripe has forgotten both) is settled by reading Stripe's meter
//! summary instead of being sent blindly. A 5xx is never taken as a refusal: its outcome is
//! unknown, so the event stays pending.
//!
//! Why nothing is lost: usage only grows and the next event always carries `usage − reported`,
//! so whatever a cycle misses, the next one sends.
//!
//! One reporter reports at a time: a cycle runs under a PostgreSQL advisory lock, so extra
//! instances stand by (and take over at once if the active one dies, since its session's lock
//! goes with it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sqlx::PgPool;
use stripe_billing::billing_meter::ListBillingMeter;
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::billing_meter_event_summary::ListIdBillingMeterEventSummary;
use stripe_billing::BillingMeterStatus;
use stripe_client_core::{IdempotencyKey, RequestStrategy, StripeRequest};
use tally_pricing::stripe::meter_event_name;
use tally_stripe::{StripeCallError, StripeHttp};

use crate::ledger::{self, Due, Refusal};
use crate::metrics;
use crate::plan::{self, Pending, Step};

/// The advisory lock one reporting cycle holds (any fixed number; "tally-rp").
const CYCLE_LOCK: i64 = 0x7461_6c6c_792d_7270;
/// A pending event older than this is settled from Stripe's summary. Before it, resending is safe
/// (Stripe's duplicate checks on identifier and Idempotency-Key last 24 hours); after it, both
/// have expired, and a resend would count again if the first send had counted.
pub const UNKNOWN_OUTCOME_AFTER: Duration = Duration::from_secs(25 * 3600);

/// Whether `due`'s pending event is old enough to be settled from Stripe's summary.
fn settle_from_summary(due: &Due, now: i64) -> bool {
    due.row.pending.is_some()
        && due.pending_since.is_some_and(|s| now - s >= UNKNOWN_OUTCOME_AFTER.as_secs() as i64)
}

/// Stripe's active meters: id by event name.
pub async fn meter_ids(client: &StripeHttp) -> Result<HashMap<String, String>, StripeCallError> {
    let meters =
        ListBillingMeter::new().status(BillingMeterStatus::Active).limit(100).send(client).await?;
    Ok(meters.data.into_iter().map(|m| (m.event_name, m.id.to_string())).collect())
}

/// What one cycle did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// Another reporter held the lock; this one did nothing.
    pub standby: bool,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub unanswered: u64,
    pub ahead: u64,
}

#[derive(Clone)]
pub struct Reporter {
    pool: PgPool,
    client: StripeHttp,
    concurrency: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error("PostgreSQL: {0}")]
    Db(#[from] sqlx::Error),
    #[error("Stripe: {0}")]
    Stripe(#[from] StripeCallError),
}

/// What reporting one (org, period, metric) came to in a cycle.
enum ReportOutcome {
    Accepted,
    Duplicate,
    Rejected,
    Unanswered,
    TooOld,
    Ahead,
    Nothing,
}

impl Reporter {
    pub fn new(pool: PgPool, client: StripeHttp, concurrency: usize) -> Reporter {
        Reporter { pool, client, concurrency: concurrency.max(1) }
    }

    /// One reporting cycle.
    #[tracing::instrument(name = "reporting_cycle", skip_all)]
    pub async fn cycle(&self) -> Result<CycleReport, CycleError> {
        let mut lock = self.pool.acquire().await?;
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(CYCLE_LOCK)
            .fetch_one(&mut *lock)
            .await?;
        if !held {
            return Ok(CycleReport { standby: true, ..Default::default() });
        }
        let result = self.cycle_locked().await;
        // Closing the lock's session releases the lock whatever happened to it meanwhile; the
        // connection never goes back to the pool still holding it.
        let _ = sqlx::Connection::close(lock.detach()).await;
        result
    }

    async fn cycle_locked(&self) -> Result<CycleReport, CycleError> {
        let due = ledger::due(&self.pool).await?;
        let now = chrono::Utc::now().timestamp();
        // Stripe's meter ids are needed only to settle an event pending for too long.
        let meters = if due.iter().any(|d| settle_from_summary(d, now)) {
            meter_ids(&self.client).await?
        } else {
            HashMap::new()
        };
        let meters = &meters;
        let outcomes: Vec<Result<ReportOutcome, CycleError>> = futures::stream::iter(due)
            .map(|d| async move { self.report(d, now, meters).await })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut report = CycleReport::default();
        let mut first_error = None;
        for outcome in outcomes {
            match outcome {
                Ok(ReportOutcome::Accepted) => report.accepted += 1,
                Ok(ReportOutcome::Duplicate) => report.duplicates += 1,
                Ok(ReportOutcome::Rejected | ReportOutcome::TooOld) => report.rejected += 1,
                Ok(ReportOutcome::Unanswered) => report.unanswered += 1,
                Ok(ReportOutcome::Ahead) => report.ahead += 1,
                Ok(ReportOutcome::Nothing) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.update_gauges().await?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    async fn report(
        &self,
        due: Due,
        now: i64,
        meters: &HashMap<String, String>,
    ) -> Result<ReportOutcome, CycleError> {
        let step = plan::next_step(&due.org_id, due.period, due.metric, due.usage, &due.row, now);
        let outcome = match step {
            Step::Nothing => ReportOutcome::Nothing,
            Step::Ahead { usage, reported } => {
                tracing::warn!(org_id = %due.org_id, period = %due.period, metric = due.metric.as_str(), usage, reported,
                    "Stripe has more usage than Tally; nothing can be sent (see `billing-reporter reconcile`)");
                ReportOutcome::Ahead
            }
            Step::TooOld { total, value, identifier } => {
                let refusal = Refusal {
                    identifier,
                    total,
                    value,
                    status: None,
                    code: Some("period_too_old".into()),
                    message: format!("period {} ended more than {} days ago; Stripe accepts meter events up to 35 days old", due.period, 35 - plan::AGE_MARGIN_SECS / 86_400),
                };
                ledger::record_failure(&self.pool, &due, &refusal, None).await?;
                tracing::error!(org_id = %due.org_id, period = %due.period, metric = due.metric.as_str(), "usage too old for Stripe; recorded as a failure");
                ReportOutcome::TooOld
            }
            Step::Send { pending, value } => {
                if !ledger::record_pending(&self.pool, &due, &pending).await? {
                    return Ok(ReportOutcome::Nothing);
                }
                self.send(&due, &pending, value).await?
            }
            Step::Resend { pending, value } => {
                if settle_from_summary(&due, now) {
                    self.settle(&due, &pending, value, meters).await?
                } else {
                    self.send(&due, &pending, value).await?
                }
            }
        };
        let label = match outcome {
            ReportOutcome::Accepted => "accepted",
            ReportOutcome::Duplicate => "duplicate",
            ReportOutcome::Rejected => "rejected",
            ReportOutcome::Unanswered => "unanswered",
            ReportOutcome::TooOld => "too_old",
            ReportOutcome::Ahead | ReportOutcome::Nothing => return Ok(outcome),
        };
        metrics::METER_EVENTS.with_label_values(&[label]).inc();
        Ok(outcome)
    }

    /// Sends one meter event and records Stripe's answer.
    async fn send(
        &self,
        due: &Due,
        pending: &Pending,
        value: u64,
    ) -> Result<ReportOutcome, CycleError> {
        let payload = HashMap::from([
            ("stripe_customer_id".to_string(), due.customer_id.clone()),
            ("value".to_string(), value.to_string()),
        ]);
        let key = IdempotencyKey::new(pending.identifier.as_str())
            .map_err(|e| StripeCallError::Parse(format!("idempotency key: {e:?}")))?;
        let sent = CreateBillingMeterEvent::new(meter_event_name(due.metric), payload)
            .identifier(pending.identifier.as_str())
            .timestamp(pending.timestamp)
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await;
        match sent {
            // A 2xx that did not parse was still accepted: Stripe created the event.
            Ok(_) | Err(StripeCallError::Parse(_)) => {
                self.accepted(due, pending, value).await?;
                Ok(ReportOutcome::Accepted)
            }
            Err(StripeCallError::Rejected { code: Some(code), .. })
                if code == "resource_already_exists" =>
            {
                self.accepted(due, pending, value).await?;
                Ok(ReportOutcome::Duplicate)
            }
            // A 5xx that Stripe says not to retry: whether it counted is unknown, so the event
            // stays pending, to be resent (and deduplicated) or settled from the summary.
            Err(e @ StripeCallError::Rejected { status: 500.., .. }) => {
                tracing::warn!(org_id = %due.org_id, period = %due.period, metric = due.metric.as_str(), error = %e, "meter event outcome unknown; resent next cycle");
                Ok(ReportOutcome::Unanswered)
            }
            Err(StripeCallError::Rejected { status, code, message, .. }) => {
                let refusal = Refusal {
                    identifier: pending.identifier.clone(),
                    total: pending.total,
                    value,
                    status: Some(status),
                    code,
                    message,
                };
                tracing::error!(org_id = %due.org_id, period = %due.period, metric = due.metric.as_str(), status,
                    code = refusal.code.as_deref().unwrap_or(""), "Stripe refused a meter event; recorded, not retried");
                ledger::record_failure(&self.pool, due, &refusal, Some(pending)).await?;
                Ok(ReportOutcome::Rejected)
            }
            Err(e @ StripeCallError::GaveUp { .. }) => {
                tracing::warn!(org_id = %due.org_id, period = %due.period, metric = due.metric.as_str(), error = %e, "meter event unanswered; resent next cycle");
                Ok(ReportOutcome::Unanswered)
            }
        }
    }

    async fn accepted(&self, due: &Due, pending: &Pending, value: u64) -> Result<(), CycleError> {
        if ledger::record_accepted(&self.pool, due, pending).await? {
            metrics::REPORTED_UNITS.with_label_values(&[due.metric.as_str()]).inc_by(value);
        }
        Ok(())
    }

    /// A pending event older than Stripe's duplicate checks: Stripe's summary for the period
    /// tells whether it counted (summary = reported + value), did not (summary = reported: Stripe
    /// has forgotten the identifier and key, so sending it now counts it once), or something else
    /// happened (a failure for an operator).
    async fn settle(
        &self,
        due: &Due,
        pending: &Pending,
        value: u64,
        meters: &HashMap<String, String>,
    ) -> Result<ReportOutcome, CycleError> {
        let Some(meter) = meters.get(meter_event_name(due.metric)) else {
            return Err(StripeCallError::Parse(format!(
                "no active Stripe meter {}",
                meter_event_name(due.metric)
            ))
            .into());
        };
        let (start, end) = (due.period.start().timestamp(), due.period.end().timestamp());
        let summary = ListIdBillingMeterEventSummary::new(
            meter.as_str(),
            due.customer_id.as_str(),
            end,
            start,
        )
        .send(&self.client)
        .await?;
        let counted = summary.data.iter().map(|s| s.aggregated_value).sum::<f64>();
        if counted == (pending.total) as f64 {
            self.accepted(due, pending, value).await?;
            return Ok(ReportOutcome::Duplicate);
        }
        if counted == due.row.reported as f64 {
            return self.send(due, pending, value).await;
        }
        let refusal = Refusal {
            identifier: pending.identifier.clone(),
            total: pending.total,
            value,
            status: None,
            code: Some("outcome_unknown".into()),
            message: format!(
                "the event stayed pending for more than 25 hours and Stripe's summary ({counted}) is neither the ledger's total ({}) nor the event's ({})",
                due.row.reported, pending.total
            ),
        };
        ledger::record_failure(&self.pool, due, &refusal, Some(pending)).await?;
        Ok(ReportOutcome::Rejected)
    }

    async fn update_gauges(&self) -> Result<(), CycleError> {
        let (failed, pending): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE failed_at IS NOT NULL), count(*) FILTER (WHERE pending_total IS NOT NULL) FROM stripe_meter_ledger",
        )
        .fetch_one(&self.pool)
        .await?;
        metrics::FAILED_ROWS.set(failed);
        metrics::PENDING_ROWS.set(pending);
        Ok(())
    }

    /// Runs cycles until shutdown. A failed cycle is logged and the next one tries again; the
    /// reporter is ready while its last cycle succeeded (or stood by).
    pub async fn run(
        self,
        interval: Duration,
        health: tally_common::health::Health,
        shutdown: tally_common::shutdown::Shutdown,
    ) {
        loop {
            let started = Instant::now();
            match self.cycle().await {
                Ok(report) if report.standby => {
                    metrics::CYCLES.with_label_values(&["standby"]).inc();
                    health.up();
                }
                Ok(report) => {
                    health.committed();
                    health.up();
                    metrics::CYCLES.with_label_values(&["ok"]).inc();
                    metrics::AHEAD_ROWS.set(report.ahead as i64);
                    metrics::LAST_SUCCESS.set(chrono::Utc::now().timestamp());
                    if report != CycleReport::default() {
                        tracing::info!(?report, "reporting cycle");
                    }
                }
                Err(e) => {
                    metrics::CYCLES.with_label_values(&["error"]).inc();
                    tracing::error!(error = %e, "reporting cycle failed; retrying next cycle");
                    health.down(format!("the last reporting cycle failed: {e}"));
                }
            }
            metrics::CYCLE_SECONDS.observe(started.elapsed().as_secs_f64());
            tokio::select! {
                _ = tokio::time::sleep(interval.saturating_sub(started.elapsed())) => {}
                _ = shutdown.clone().requested() => return,
            }
        }
    }
}

/// The billing reporter as a service: probes, then cycles until shutdown.
pub async fn run(
    settings: crate::settings::Settings,
    shutdown: tally_common::shutdown::Shutdown,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let pool = tally_store::connect(
        &settings.common.database_url,
        (settings.concurrency as u32 + 2).min(16),
    )
    .await?;
    let health = settings.common.health("billing-reporter");
    let server = tokio::spawn(tally_common::probes::serve(
        settings.addr,
        tally_common::probes::router(health.clone()),
        settings.common.http.buffering(tally_common::probes::PROBE_BODY_BYTES),
        shutdown.clone(),
    ));
    let reporter = Reporter::new(pool, settings.stripe.client(), settings.concurrency);
    // Ready from the start (PostgreSQL was reached); the first cycle confirms or refutes it.
    health.up();
    tracing::info!(api_base = %settings.stripe.api_base, interval_secs = settings.interval.as_secs(), "billing reporter started");
    tokio::select! {
        _ = reporter.run(settings.interval, health.clone(), shutdown.clone()) => {}
        r = server => r.context("probe server panicked")??,
    }
    health.down("stopped");
    Ok(())
}
