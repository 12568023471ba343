//! `billing-reporter reconcile [--period YYYY-MM]`: for every linked org and both meters, Tally's
//! usage, the ledger (what Stripe accepted, by Tally's account) and Stripe's own meter event
//! summary for the period, side by side. Any difference is drift.

use std::collections::HashMap;

use sqlx::PgPool;
use stripe_billing::billing_meter_event_summary::ListIdBillingMeterEventSummary;
use tally_metering::period::Period;
use tally_pricing::stripe::meter_event_name;
use tally_schemas::Metric;
use tally_stripe::{StripeCallError, StripeHttp};

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Line {
    pub org_id: String,
    pub customer_id: String,
    pub period: String,
    pub metric: &'static str,
    pub tally: u64,
    pub ledger: u64,
    /// `None` when Stripe's summary is not a whole number Tally can compare exactly.
    pub stripe: Option<u64>,
    pub status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// All three agree.
    Ok,
    /// The ledger is behind Tally's usage: the reporter has not sent it yet (or an event is
    /// pending). Expected for at most one cycle.
    Behind,
    /// A final refusal stopped this row (`billing-reporter status`).
    Failed,
    /// The ledger has more than Tally's usage (usage was corrected down).
    Ahead,
    /// Stripe's summary differs from what the ledger says Stripe accepted.
    StripeDiffers,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Behind => "behind",
            Status::Failed => "failed",
            Status::Ahead => "ahead",
            Status::StripeDiffers => "stripe_differs",
        }
    }
}

impl Line {
    pub fn drift(&self) -> bool {
        self.status != Status::Ok
    }
}

/// Stripe's summary as a whole number, if it is one (values are sums of whole numbers; above
/// 2^53 a float cannot be compared exactly).
fn whole(value: f64) -> Option<u64> {
    (value >= 0.0 && value.fract() == 0.0 && value <= 9_007_199_254_740_992.0)
        .then_some(value as u64)
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("PostgreSQL: {0}")]
    Db(#[from] sqlx::Error),
    #[error("Stripe: {0}")]
    Stripe(#[from] StripeCallError),
    #[error("Stripe has no active meter `{0}`: run `billing-reporter setup-stripe`")]
    NoMeter(&'static str),
}

/// The lines of `period`, for every linked org or only `org`.
pub async fn reconcile(
    pool: &PgPool,
    client: &StripeHttp,
    period: Period,
    org: Option<&str>,
) -> Result<Vec<Line>, ReconcileError> {
    let (mut usage, ledger) = crate::ledger::period_view(pool, period).await?;
    usage.retain(|(org_id, ..)| org.is_none_or(|o| o == org_id));
    let meters = crate::report::meter_ids(client).await?;
    let ledger: HashMap<(&str, &str), &crate::ledger::LedgerEntry> =
        ledger.iter().map(|e| ((e.org_id.as_str(), e.metric.as_str()), e)).collect();
    let (start, end) = (period.start().timestamp(), period.end().timestamp());
    let mut lines = Vec::new();
    for (org_id, linked_customer, traces, payload_bytes) in usage {
        for metric in Metric::ALL {
            let tally = if metric == Metric::Traces { traces } else { payload_bytes };
            let entry = ledger.get(&(org_id.as_str(), metric.as_str()));
            let customer_id = entry.map_or(linked_customer.clone(), |e| e.customer_id.clone());
            let event_name = meter_event_name(metric);
            let meter = meters.get(event_name).ok_or(ReconcileError::NoMeter(event_name))?;
            let summary = ListIdBillingMeterEventSummary::new(
                meter.as_str(),
                customer_id.as_str(),
                end,
                start,
            )
            .send(client)
            .await?;
            let stripe = whole(summary.data.iter().map(|s| s.aggregated_value).sum());
            let reported = entry.map_or(0, |e| e.reported);
            let status = if entry.is_some_and(|e| e.failed) {
                Status::Failed
            } else if stripe != Some(reported) {
                Status::StripeDiffers
            } else if reported < tally {
                Status::Behind
            } else if reported > tally {
                Status::Ahead
            } else {
                Status::Ok
            };
            lines.push(Line {
                org_id: org_id.clone(),
                customer_id,
                period: period.to_string(),
                metric: metric.as_str(),
                tally,
                ledger: reported,
                stripe,
                status,
            });
        }
    }
    Ok(lines)
}

/// The table, one line per (org, metric).
pub fn table(lines: &[Line]) -> String {
    let mut out = format!(
        "{:<24} {:<30} {:<8} {:<14} {:>16} {:>16} {:>16} {:>12}\n",
        "ORG", "CUSTOMER", "PERIOD", "METRIC", "TALLY", "LEDGER", "STRIPE", "DRIFT"
    );
    for l in lines {
        let stripe = l.stripe.map_or("?".to_string(), |s| s.to_string());
        let drift = match l.stripe {
            Some(s) => (s as i128 - l.tally as i128).to_string(),
            None => "?".into(),
        };
        out += &format!(
            "{:<24} {:<30} {:<8} {:<14} {:>16} {:>16} {:>16} {:>12}  {}\n",
            l.org_id,
            l.customer_id,
            l.period,
            l.metric,
            l.tally,
            l.ledger,
            stripe,
            drift,
            l.status.as_str()
        );
    }
    let drifting = lines.iter().filter(|l| l.drift()).count();
    out += &format!("{} lines, {} with drift\n", lines.len(), drifting);
    out
}
