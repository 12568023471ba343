//! `billing-reporter status`: the ledger at a glance and every final refusal still waiting for an
//! operator.

use sqlx::PgPool;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub linked_orgs: i64,
    pub ledger_rows: i64,
    pub pending_rows: i64,
    pub failed_rows: i64,
    /// The newest ledger change (RFC 3339), if any.
    pub last_change: Option<chrono::DateTime<chrono::Utc>>,
    pub failures: Vec<Failure>,
}

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Failure {
    pub id: i64,
    pub org_id: String,
    pub period: String,
    pub metric: String,
    pub identifier: String,
    pub total: i64,
    pub value: i64,
    pub status: Option<i32>,
    pub code: Option<String>,
    pub message: String,
    pub failed_at: chrono::DateTime<chrono::Utc>,
}

pub async fn status(pool: &PgPool) -> sqlx::Result<Status> {
    let linked_orgs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stripe_customers").fetch_one(pool).await?;
    let (ledger_rows, pending_rows, failed_rows, last_change): (i64, i64, i64, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE pending_total IS NOT NULL), count(*) FILTER (WHERE failed_at IS NOT NULL), max(updated_at)
         FROM stripe_meter_ledger",
    )
    .fetch_one(pool)
    .await?;
    let failures = sqlx::query_as::<_, Failure>(
        "SELECT id, org_id, period, metric, identifier, total, value, status, code, message, failed_at
         FROM stripe_report_failures WHERE resolved_at IS NULL ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    Ok(Status { linked_orgs, ledger_rows, pending_rows, failed_rows, last_change, failures })
}

pub fn render(s: &Status) -> String {
    let mut out = format!(
        "linked orgs: {}\nledger rows: {} ({} pending, {} failed)\nlast change: {}\n",
        s.linked_orgs,
        s.ledger_rows,
        s.pending_rows,
        s.failed_rows,
        s.last_change.map_or("never".to_string(), |t| t.to_rfc3339()),
    );
    if s.failures.is_empty() {
        out += "unresolved failures: none\n";
        return out;
    }
    out += &format!("unresolved failures: {} (after fixing the cause: billing-reporter retry-failed [--org ORG])\n", s.failures.len());
    out += &format!(
        "{:>6} {:<24} {:<8} {:<14} {:>14} {:>6} {:<24} {}\n",
        "ID", "ORG", "PERIOD", "METRIC", "VALUE", "HTTP", "CODE", "MESSAGE"
    );
    for f in &s.failures {
        out += &format!(
            "{:>6} {:<24} {:<8} {:<14} {:>14} {:>6} {:<24} {}\n",
            f.id,
            f.org_id,
            f.period,
            f.metric,
            f.value,
            f.status.map_or("-".to_string(), |s| s.to_string()),
            f.code.as_deref().unwrap_or("-"),
            f.message
        );
    }
    out
}
