//! `usage_periods`, `usage_by_operation`, `usage_daily` and `late_events`: the projector's read
//! models of usage.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgConnection;

/// The row of `usage_periods` for (org, period).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageRow {
    pub state: String,
    pub tier: String,
    pub traces: i64,
    pub payload_bytes: i64,
    pub not_billed_child_span: i64,
    pub not_billed_not_success: i64,
    pub not_billed_duplicate: i64,
    pub not_billed_late: i64,
    pub updated_at: DateTime<Utc>,
}

/// One (org, period) as [`read_period`] finds it.
pub struct StoredPeriod {
    /// `None` while the pipeline has no row for it.
    pub row: Option<UsageRow>,
    /// When there is no row: the tier of the org's latest earlier period, if any.
    pub earlier_tier: Option<String>,
    /// (operation, traces, payload bytes), for the operations with usage.
    pub by_operation: Vec<(String, i64, i64)>,
}

/// The columns of [`read_period`]'s statement: a [`UsageRow`] when `state` is there.
#[derive(sqlx::FromRow)]
struct PeriodColumns {
    state: Option<String>,
    tier: Option<String>,
    traces: Option<i64>,
    payload_bytes: Option<i64>,
    not_billed_child_span: Option<i64>,
    not_billed_not_success: Option<i64>,
    not_billed_duplicate: Option<i64>,
    not_billed_late: Option<i64>,
    updated_at: Option<DateTime<Utc>>,
    earlier_tier: Option<String>,
    by_operation: sqlx::types::Json<Vec<(String, i64, i64)>>,
}

impl PeriodColumns {
    fn usage_row(&self) -> Option<UsageRow> {
        Some(UsageRow {
            state: self.state.clone()?,
            tier: self.tier.clone()?,
            traces: self.traces?,
            payload_bytes: self.payload_bytes?,
            not_billed_child_span: self.not_billed_child_span?,
            not_billed_not_success: self.not_billed_not_success?,
            not_billed_duplicate: self.not_billed_duplicate?,
            not_billed_late: self.not_billed_late?,
            updated_at: self.updated_at?,
        })
    }
}

/// Reads (org, period) in one statement: its usage row, its usage by operation and, when it has
/// no row, the tier its latest earlier period ended on.
pub async fn read_period(
    db: &mut PgConnection,
    org_id: &str,
    period: &str,
) -> sqlx::Result<StoredPeriod> {
    let columns: PeriodColumns = sqlx::query_as(
        "SELECT u.state, u.tier, u.traces, u.payload_bytes, u.not_billed_child_span, u.not_billed_not_success,
                u.not_billed_duplicate, u.not_billed_late, u.updated_at,
                CASE WHEN u.org_id IS NULL THEN
                    (SELECT e.tier FROM usage_periods e WHERE e.org_id = $1 AND e.period < $2 ORDER BY e.period DESC LIMIT 1)
                END AS earlier_tier,
                coalesce((SELECT json_agg(json_build_array(o.operation, o.traces, o.payload_bytes))
                          FROM usage_by_operation o WHERE o.org_id = $1 AND o.period = $2), '[]'::json) AS by_operation
         FROM (SELECT 1) AS one LEFT JOIN usage_periods u ON u.org_id = $1 AND u.period = $2",
    )
    .bind(org_id)
    .bind(period)
    .fetch_one(&mut *db)
    .await?;
    Ok(StoredPeriod {
        row: columns.usage_row(),
        earlier_tier: columns.earlier_tier,
        by_operation: columns.by_operation.0,
    })
}

/// One day and operation of `usage_daily`.
#[derive(sqlx::FromRow)]
pub struct DailyRow {
    pub day: NaiveDate,
    pub operation: String,
    pub traces: i64,
    pub payload_bytes: i64,
}

/// The org's stored days from `from` to `to` (inclusive); days without usage have no row.
pub async fn daily(
    db: &mut PgConnection,
    org_id: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> sqlx::Result<Vec<DailyRow>> {
    sqlx::query_as(
        "SELECT day, operation, traces, payload_bytes FROM usage_daily
         WHERE org_id = $1 AND day BETWEEN $2 AND $3",
    )
    .bind(org_id)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *db)
    .await
}

/// One period of an org, in brief.
#[derive(sqlx::FromRow)]
pub struct PeriodSummaryRow {
    pub period: String,
    pub state: String,
    pub tier: String,
    pub traces: i64,
    pub payload_bytes: i64,
    pub not_billed_late: i64,
}

/// The org's newest `limit` periods, newest first.
pub async fn periods(
    db: &mut PgConnection,
    org_id: &str,
    limit: i64,
) -> sqlx::Result<Vec<PeriodSummaryRow>> {
    sqlx::query_as(
        "SELECT period, state, tier, traces, payload_bytes, not_billed_late FROM usage_periods
         WHERE org_id = $1 ORDER BY period DESC LIMIT $2",
    )
    .bind(org_id)
    .bind(limit)
    .fetch_all(&mut *db)
    .await
}

/// An event that arrived after its period closed. Serialised as `GET .../late-events` shows it.
#[derive(sqlx::FromRow, Serialize)]
pub struct LateEventRow {
    pub event_id: String,
    pub operation: String,
    pub ended_at: DateTime<Utc>,
    pub arrived_at: DateTime<Utc>,
    pub billable: bool,
    pub payload_bytes: i64,
}

/// The period's late events, newest arrival first, at most `limit`.
pub async fn late_events(
    db: &mut PgConnection,
    org_id: &str,
    period: &str,
    limit: i64,
) -> sqlx::Result<Vec<LateEventRow>> {
    sqlx::query_as(
        "SELECT event_id, operation, ended_at, arrived_at, billable, payload_bytes FROM late_events
         WHERE org_id = $1 AND period = $2 ORDER BY arrived_at DESC, event_id LIMIT $3",
    )
    .bind(org_id)
    .bind(period)
    .bind(limit)
    .fetch_all(&mut *db)
    .await
}
