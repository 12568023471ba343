//! The periods whose invoice is still a draft (final invoices are read with
//! [`tally_common::invoices`]).

use sqlx::PgPool;

/// A period priced on read: its tier and billed usage.
#[derive(sqlx::FromRow)]
pub struct DraftPeriodRow {
    pub period: String,
    pub tier: String,
    pub traces: i64,
    pub payload_bytes: i64,
}

/// The org's periods without a final invoice that will get one, newest first, at most `limit`:
/// the open ones and the closed ones with billed usage (finalized within seconds of the close).
/// A closed period with nothing billed (only late events, say) and no final invoice has none and
/// never will.
pub async fn draft_periods(
    pool: &PgPool,
    org_id: &str,
    limit: i64,
) -> sqlx::Result<Vec<DraftPeriodRow>> {
    sqlx::query_as(
        "SELECT period, tier, traces, payload_bytes FROM usage_periods u WHERE org_id = $1
           AND (state = 'open' OR traces > 0 OR payload_bytes > 0)
           AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.org_id = u.org_id AND i.period = u.period)
         ORDER BY period DESC LIMIT $2",
    )
    .bind(org_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}
