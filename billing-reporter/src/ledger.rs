//! The reporter's SQL: what is due, and the ledger's three writes (pending, accepted, failed).
//! Each write is guarded by what the reporter read, so a write based on a stale read changes
//! nothing.

use sqlx::PgPool;
use tally_metering::period::Period;
use tally_schemas::Metric;
use tally_store::invoices::CORRECTIONS_IN_EFFECT;

use crate::plan::{LedgerRow, Pending};

/// One (org, period, metric) whose usage Stripe does not have yet, or whose last event's outcome
/// is unknown.
#[derive(Debug, Clone)]
pub struct Due {
    pub org_id: String,
    pub period: Period,
    pub metric: Metric,
    /// The ledger's customer once a row exists (events of a row never change customer), else the
    /// org's linked customer.
    pub customer_id: String,
    pub usage: u64,
    pub row: LedgerRow,
    /// When the pending event was first planned (unix seconds).
    pub pending_since: Option<i64>,
}

pub fn metric_from_str(s: &str) -> Option<Metric> {
    Metric::ALL.into_iter().find(|m| m.as_str() == s)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One row of [`due`]'s query, as PostgreSQL gives it.
#[derive(sqlx::FromRow)]
struct DueRow {
    org_id: String,
    period: String,
    metric: String,
    customer_id: String,
    usage: i64,
    reported: i64,
    pending_total: Option<i64>,
    pending_identifier: Option<String>,
    pending_timestamp: Option<i64>,
    /// Seconds since the epoch.
    pending_since: Option<i64>,
}

/// Every (org, period, metric) of a linked org that needs a meter event: usage differs from what
/// Stripe accepted, or an event is pending. The usage of a period whose invoice was corrected
/// (`replay correct`) is the corrected invoice's. Periods that ended before the org was linked are
/// not reported, nor rows waiting for an operator.
pub async fn due(pool: &PgPool) -> sqlx::Result<Vec<Due>> {
    let rows: Vec<DueRow> = sqlx::query_as(&format!(
        "SELECT u.org_id, u.period, m.metric, COALESCE(l.customer_id, c.customer_id) AS customer_id,
                CASE m.metric WHEN 'traces' THEN u.traces ELSE u.payload_bytes END AS usage,
                COALESCE(l.reported, 0) AS reported, l.pending_total, l.pending_identifier,
                l.pending_timestamp, extract(epoch FROM l.pending_since)::bigint AS pending_since
         FROM (SELECT p.org_id, p.period, COALESCE(k.traces, p.traces) AS traces,
                      COALESCE(k.payload_bytes, p.payload_bytes) AS payload_bytes
               FROM usage_periods p
               LEFT JOIN {CORRECTIONS_IN_EFFECT} k
                      ON k.org_id = p.org_id AND k.period = p.period) u
         JOIN stripe_customers c ON c.org_id = u.org_id
         CROSS JOIN (VALUES ('traces'), ('payload_bytes')) AS m (metric)
         LEFT JOIN stripe_meter_ledger l ON l.org_id = u.org_id AND l.period = u.period AND l.metric = m.metric
         WHERE (to_date(u.period, 'YYYY-MM') + interval '1 month')::timestamp AT TIME ZONE 'UTC' > c.linked_at
           AND l.failed_at IS NULL
           AND (l.pending_total IS NOT NULL
                OR CASE m.metric WHEN 'traces' THEN u.traces ELSE u.payload_bytes END <> COALESCE(l.reported, 0))
         ORDER BY u.period, u.org_id, m.metric"
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let pending = match (row.pending_total, row.pending_identifier, row.pending_timestamp) {
                (Some(total), Some(identifier), Some(timestamp)) => {
                    Some(Pending { total: to_u64(total), identifier, timestamp })
                }
                _ => None,
            };
            Some(Due {
                period: row.period.parse().ok()?,
                metric: metric_from_str(&row.metric)?,
                org_id: row.org_id,
                customer_id: row.customer_id,
                usage: to_u64(row.usage),
                row: LedgerRow { reported: to_u64(row.reported), pending, failed: false },
                pending_since: row.pending_since,
            })
        })
        .collect())
}

/// Records `pending` as on its way, if the ledger is still as `due` read it. False when another
/// writer got there first (the row is then left for the next cycle).
pub async fn record_pending(pool: &PgPool, due: &Due, pending: &Pending) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO stripe_meter_ledger
             (org_id, period, metric, customer_id, reported, pending_total, pending_identifier, pending_timestamp, pending_since)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
         ON CONFLICT (org_id, period, metric) DO UPDATE
             SET pending_total = EXCLUDED.pending_total,
                 pending_identifier = EXCLUDED.pending_identifier,
                 pending_timestamp = EXCLUDED.pending_timestamp,
                 pending_since = now(),
                 updated_at = now()
             WHERE stripe_meter_ledger.pending_total IS NULL
               AND stripe_meter_ledger.failed_at IS NULL
               AND stripe_meter_ledger.reported = EXCLUDED.reported",
    )
    .bind(&due.org_id)
    .bind(due.period.to_string())
    .bind(due.metric.as_str())
    .bind(&due.customer_id)
    .bind(to_i64(due.row.reported))
    .bind(to_i64(pending.total))
    .bind(&pending.identifier)
    .bind(pending.timestamp)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stripe has the pending event: its total becomes what Stripe accepted.
pub async fn record_accepted(pool: &PgPool, due: &Due, pending: &Pending) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE stripe_meter_ledger
         SET reported = pending_total, pending_total = NULL, pending_identifier = NULL,
             pending_timestamp = NULL, pending_since = NULL, updated_at = now()
         WHERE org_id = $1 AND period = $2 AND metric = $3 AND pending_identifier = $4",
    )
    .bind(&due.org_id)
    .bind(due.period.to_string())
    .bind(due.metric.as_str())
    .bind(&pending.identifier)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What Stripe (or Tally, for a period too old) refused for good.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub identifier: String,
    pub total: u64,
    pub value: u64,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: String,
}

/// Records a final refusal: a failure row, and the ledger row marked failed with its pending
/// event cleared, so nothing is sent for it until an operator retries. Only if the ledger still
/// holds the refused event (`pending`, or none for a refusal made before sending): a write based
/// on a stale read changes nothing. Returns whether it was recorded.
pub async fn record_failure(
    pool: &PgPool,
    due: &Due,
    refusal: &Refusal,
    pending: Option<&Pending>,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let marked = sqlx::query(
        "INSERT INTO stripe_meter_ledger (org_id, period, metric, customer_id, reported, failed_at)
         VALUES ($1, $2, $3, $4, $5, now())
         ON CONFLICT (org_id, period, metric) DO UPDATE
             SET failed_at = now(), pending_total = NULL, pending_identifier = NULL,
                 pending_timestamp = NULL, pending_since = NULL, updated_at = now()
             WHERE stripe_meter_ledger.pending_identifier IS NOT DISTINCT FROM $6
               AND stripe_meter_ledger.reported = EXCLUDED.reported",
    )
    .bind(&due.org_id)
    .bind(due.period.to_string())
    .bind(due.metric.as_str())
    .bind(&due.customer_id)
    .bind(to_i64(due.row.reported))
    .bind(pending.map(|p| p.identifier.as_str()))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if marked == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO stripe_report_failures (org_id, period, metric, identifier, total, value, status, code, message)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&due.org_id)
    .bind(due.period.to_string())
    .bind(due.metric.as_str())
    .bind(&refusal.identifier)
    .bind(to_i64(refusal.total))
    .bind(to_i64(refusal.value))
    .bind(refusal.status.map(i32::from))
    .bind(&refusal.code)
    .bind(&refusal.message)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// `billing-reporter retry-failed`: rows waiting for an operator are reported again; their
/// failures are marked resolved. Returns how many rows were released.
pub async fn retry_failed(pool: &PgPool, org_id: Option<&str>) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    let released = sqlx::query("UPDATE stripe_meter_ledger SET failed_at = NULL, updated_at = now() WHERE failed_at IS NOT NULL AND ($1::text IS NULL OR org_id = $1)")
        .bind(org_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("UPDATE stripe_report_failures SET resolved_at = now() WHERE resolved_at IS NULL AND ($1::text IS NULL OR org_id = $1)")
        .bind(org_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(released)
}

/// The ledger row of (org, period, metric) with its customer, for reconciliation.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub org_id: String,
    pub period: String,
    pub metric: String,
    pub customer_id: String,
    pub reported: u64,
    pub pending: bool,
    pub failed: bool,
}

/// Linked orgs' usage (corrected, where `replay correct` corrected it) and ledger for `period`:
/// (org, customer, traces, payload_bytes) and the ledger rows.
pub async fn period_view(
    pool: &PgPool,
    period: Period,
) -> sqlx::Result<(Vec<(String, String, u64, u64)>, Vec<LedgerEntry>)> {
    let usage: Vec<(String, String, i64, i64)> = sqlx::query_as(&format!(
        "SELECT c.org_id, c.customer_id, COALESCE(k.traces, u.traces, 0), COALESCE(k.payload_bytes, u.payload_bytes, 0)
         FROM stripe_customers c
         LEFT JOIN usage_periods u ON u.org_id = c.org_id AND u.period = $1
         LEFT JOIN {CORRECTIONS_IN_EFFECT} k ON k.org_id = c.org_id AND k.period = $1
         WHERE (to_date($1, 'YYYY-MM') + interval '1 month')::timestamp AT TIME ZONE 'UTC' > c.linked_at
         ORDER BY c.org_id"),

    )
    .bind(period.to_string())
    .fetch_all(pool)
    .await?;
    let ledger: Vec<(String, String, String, String, i64, bool, bool)> = sqlx::query_as(
        "SELECT org_id, period, metric, customer_id, reported, pending_total IS NOT NULL, failed_at IS NOT NULL
         FROM stripe_meter_ledger WHERE period = $1 ORDER BY org_id, metric",
    )
    .bind(period.to_string())
    .fetch_all(pool)
    .await?;
    Ok((
        usage.into_iter().map(|(o, c, t, b)| (o, c, to_u64(t), to_u64(b))).collect(),
        ledger
            .into_iter()
            .map(|(org_id, period, metric, customer_id, reported, pending, failed)| LedgerEntry {
                org_id,
                period,
                metric,
                customer_id,
                reported: to_u64(reported),
                pending,
                failed,
            })
            .collect(),
    ))
}
