//! The figures of `GET /v1/pipeline` that PostgreSQL holds.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Where the projector resumes one partition (its source of truth for what it consumed).
#[derive(sqlx::FromRow)]
pub struct ProjectorOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

pub async fn projector_offsets(db: &mut PgConnection) -> sqlx::Result<Vec<ProjectorOffset>> {
    sqlx::query_as(
        "SELECT topic, partition, next_offset FROM projector_offsets ORDER BY topic, partition",
    )
    .fetch_all(&mut *db)
    .await
}

/// What the read models show of the current period.
#[derive(sqlx::FromRow)]
pub struct PeriodActivity {
    /// The newest update of a usage row of the period.
    pub last_record_at: Option<DateTime<Utc>>,
    /// Late events (of earlier periods) that arrived since `since`.
    pub late_events: i64,
}

pub async fn period_activity(
    db: &mut PgConnection,
    period: &str,
    since: DateTime<Utc>,
) -> sqlx::Result<PeriodActivity> {
    sqlx::query_as(
        "SELECT (SELECT max(updated_at) FROM usage_periods WHERE period = $1) AS last_record_at,
                (SELECT count(*) FROM late_events WHERE arrived_at >= $2) AS late_events",
    )
    .bind(period)
    .bind(since)
    .fetch_one(&mut *db)
    .await
}

/// The newest update of any usage row.
pub async fn newest_usage_update(db: &mut PgConnection) -> sqlx::Result<Option<DateTime<Utc>>> {
    let (newest,): (Option<DateTime<Utc>>,) =
        sqlx::query_as("SELECT max(updated_at) FROM usage_periods").fetch_one(&mut *db).await?;
    Ok(newest)
}

/// The billing reporter's ledger rows that failed, and that wait to be sent.
#[derive(sqlx::FromRow)]
pub struct LedgerCounts {
    pub failed_rows: i64,
    pub pending_rows: i64,
}

pub async fn meter_ledger_counts(db: &mut PgConnection) -> sqlx::Result<LedgerCounts> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE failed_at IS NOT NULL) AS failed_rows,
                count(*) FILTER (WHERE pending_total IS NOT NULL) AS pending_rows
         FROM stripe_meter_ledger",
    )
    .fetch_one(&mut *db)
    .await
}
