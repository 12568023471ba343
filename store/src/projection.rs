//! The projector's SQL: one function per thing it stores.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use tally_schemas::{InvoiceCorrectedV1, InvoiceV1, PeriodStateV1, Topic, UsageUpdateV1};

fn db_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The offset the projector resumes from for a partition of `tally.usage.v1` or
/// `tally.corrections.v1`.
pub async fn stored_offset(
    pool: &PgPool,
    topic: Topic,
    partition: i32,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT next_offset FROM projector_offsets WHERE topic = $1 AND partition = $2",
    )
    .bind(topic.name())
    .bind(partition)
    .fetch_optional(pool)
    .await
}

/// Every stored offset: (topic, partition) → the next offset to project.
pub async fn stored_offsets(pool: &PgPool) -> Result<Vec<(String, i32, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT topic, partition, next_offset FROM projector_offsets")
        .fetch_all(pool)
        .await
}

/// What a batch did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub applied: usize,
    pub stale: usize,
    /// Final invoices stored for the first time.
    pub invoices: usize,
    /// Invoice corrections stored for the first time.
    pub corrections: usize,
}

/// A record of `tally.corrections.v1` with its place and time in the log.
#[derive(Debug, Clone)]
pub struct LoggedCorrection {
    pub partition: i32,
    pub offset: i64,
    pub at: DateTime<Utc>,
    pub correction: InvoiceCorrectedV1,
}

/// Writes a batch of updates and corrections and the offsets after them in one transaction.
#[tracing::instrument(name = "commit", skip_all)]
pub async fn write_batch(
    pool: &PgPool,
    updates: &[UsageUpdateV1],
    corrections: &[LoggedCorrection],
    offsets: &[(Topic, i32, i64)],
) -> Result<Written, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut written = Written::default();
    for update in updates {
        if upsert_usage(&mut tx, update).await? {
            written.applied += 1;
        } else {
            written.stale += 1;
        }
        insert_late_events(&mut tx, update).await?;
        if let Some(invoice) = &update.invoice {
            if insert_invoice(&mut tx, invoice).await? {
                written.invoices += 1;
            }
        }
    }
    for logged in corrections {
        if insert_correction(&mut tx, logged).await? {
            written.corrections += 1;
        }
    }
    for (topic, partition, next_offset) in offsets {
        sqlx::query(
            "INSERT INTO projector_offsets (topic, partition, next_offset) VALUES ($1, $2, $3)
             ON CONFLICT (topic, partition) DO UPDATE
             SET next_offset = GREATEST(projector_offsets.next_offset, EXCLUDED.next_offset), updated_at = now()",
        )
        .bind(topic.name())
        .bind(partition)
        .bind(next_offset)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(written)
}

/// Stores an update unless an equal or newer version is stored; true when it was stored.
async fn upsert_usage(
    tx: &mut Transaction<'_, Postgres>,
    u: &UsageUpdateV1,
) -> Result<bool, sqlx::Error> {
    let state = match u.state {
        PeriodStateV1::Open => "open",
        PeriodStateV1::Closed => "closed",
    };
    let nb = &u.totals.not_billed;
    let result = sqlx::query(
        "INSERT INTO usage_periods (org_id, period, version, state, traces, payload_bytes,
             not_billed_child_span, not_billed_not_success, not_billed_duplicate, not_billed_late,
             updated_at, closed_at, tier)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (org_id, period) DO UPDATE SET
             version = EXCLUDED.version, state = EXCLUDED.state, traces = EXCLUDED.traces,
             payload_bytes = EXCLUDED.payload_bytes,
             not_billed_child_span = EXCLUDED.not_billed_child_span,
             not_billed_not_success = EXCLUDED.not_billed_not_success,
             not_billed_duplicate = EXCLUDED.not_billed_duplicate,
             not_billed_late = EXCLUDED.not_billed_late,
             updated_at = EXCLUDED.updated_at, closed_at = EXCLUDED.closed_at, tier = EXCLUDED.tier,
             projected_at = now()
         WHERE usage_periods.version < EXCLUDED.version",
    )
    .bind(&u.org_id)
    .bind(&u.period)
    .bind(db_int(u.version))
    .bind(state)
    .bind(db_int(u.totals.traces))
    .bind(db_int(u.totals.payload_bytes))
    .bind(db_int(nb.child_span))
    .bind(db_int(nb.not_success))
    .bind(db_int(nb.duplicate))
    .bind(db_int(nb.late))
    .bind(u.updated_at)
    .bind(u.closed_at)
    .bind(u.tier.as_str())
    .execute(&mut **tx)
    .await?;
    if result.rows_affected() == 0 {
        return Ok(false);
    }

    let (ops, traces, bytes): (Vec<&str>, Vec<i64>, Vec<i64>) = u
        .totals
        .by_operation
        .iter()
        .map(|(op, usage)| (op.as_str(), db_int(usage.traces), db_int(usage.payload_bytes)))
        .fold((vec![], vec![], vec![]), |(mut a, mut b, mut c), (x, y, z)| {
            a.push(x);
            b.push(y);
            c.push(z);
            (a, b, c)
        });
    sqlx::query(
        "INSERT INTO usage_by_operation (org_id, period, operation, traces, payload_bytes)
         SELECT $1, $2, o, t, b FROM UNNEST($3::text[], $4::bigint[], $5::bigint[]) AS x(o, t, b)
         ON CONFLICT (org_id, period, operation) DO UPDATE
         SET traces = EXCLUDED.traces, payload_bytes = EXCLUDED.payload_bytes",
    )
    .bind(&u.org_id)
    .bind(&u.period)
    .bind(ops)
    .bind(traces)
    .bind(bytes)
    .execute(&mut **tx)
    .await?;

    let days: Vec<chrono::NaiveDate> = u.daily.iter().map(|d| d.day).collect();
    let ops: Vec<&str> = u.daily.iter().map(|d| d.operation.as_str()).collect();
    let traces: Vec<i64> = u.daily.iter().map(|d| db_int(d.traces)).collect();
    let bytes: Vec<i64> = u.daily.iter().map(|d| db_int(d.payload_bytes)).collect();
    sqlx::query(
        "INSERT INTO usage_daily (org_id, day, operation, traces, payload_bytes)
         SELECT $1, d, o, t, b FROM UNNEST($2::date[], $3::text[], $4::bigint[], $5::bigint[]) AS x(d, o, t, b)
         ON CONFLICT (org_id, day, operation) DO UPDATE
         SET traces = EXCLUDED.traces, payload_bytes = EXCLUDED.payload_bytes",
    )
    .bind(&u.org_id)
    .bind(days)
    .bind(ops)
    .bind(traces)
    .bind(bytes)
    .execute(&mut **tx)
    .await?;
    Ok(true)
}

async fn insert_late_events(
    tx: &mut Transaction<'_, Postgres>,
    u: &UsageUpdateV1,
) -> Result<(), sqlx::Error> {
    for late in &u.late_events {
        sqlx::query(
            "INSERT INTO late_events (org_id, period, event_id, operation, ended_at, arrived_at, billable, payload_bytes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&u.org_id)
        .bind(&u.period)
        .bind(&late.event_id)
        .bind(late.operation.as_str())
        .bind(late.ended_at)
        .bind(late.arrived_at)
        .bind(late.billable)
        .bind(db_int(late.payload_bytes))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Stores a final invoice. It is written once and never changed: a re-delivered or re-projected
/// finalization finds it there and changes nothing. True when it was stored now.
async fn insert_invoice(
    tx: &mut Transaction<'_, Postgres>,
    invoice: &InvoiceV1,
) -> Result<bool, sqlx::Error> {
    let query = sqlx::query(
        "INSERT INTO invoices (org_id, period, tier, pricing_version, currency, traces, payload_bytes,
             lines, total_cents, finalized_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (org_id, period) DO NOTHING",
    )
    .bind(&invoice.org_id)
    .bind(&invoice.period);
    let result = bind_invoice(query, invoice).bind(invoice.finalized_at).execute(&mut **tx).await?;
    Ok(result.rows_affected() == 1)
}

/// Stores a correction. Like an invoice it is never changed; the same correction read again
/// (a re-projection, a second `replay correct` with the same result) changes nothing.
async fn insert_correction(
    tx: &mut Transaction<'_, Postgres>,
    logged: &LoggedCorrection,
) -> Result<bool, sqlx::Error> {
    let c = &logged.correction;
    let invoice = &c.invoice;
    let query = sqlx::query(
        "INSERT INTO invoice_corrections (org_id, period, correction_id, log_partition, log_offset, corrected_at,
             reason, tier, pricing_version, currency, traces, payload_bytes, lines, total_cents, finalized_at,
             replaces_traces, replaces_payload_bytes, replaces_total_cents)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
         ON CONFLICT (org_id, period, correction_id) DO NOTHING",
    )
    .bind(&c.org_id)
    .bind(&c.period)
    .bind(&c.correction_id)
    .bind(logged.partition)
    .bind(logged.offset)
    .bind(logged.at)
    .bind(&c.reason);
    let result = bind_invoice(query, invoice)
        .bind(invoice.finalized_at.unwrap_or(logged.at))
        .bind(db_int(c.replaces.usage.traces))
        .bind(db_int(c.replaces.usage.payload_bytes))
        .bind(c.replaces.total_cents)
        .execute(&mut **tx)
        .await?;
    Ok(result.rows_affected() == 1)
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Binds an invoice's columns in the order `invoices` and `invoice_corrections` both list them:
/// tier, pricing_version, currency, traces, payload_bytes, lines, total_cents.
fn bind_invoice<'q>(query: PgQuery<'q>, invoice: &'q InvoiceV1) -> PgQuery<'q> {
    query
        .bind(invoice.tier.as_str())
        .bind(&invoice.pricing_version)
        .bind(&invoice.currency)
        .bind(db_int(invoice.usage.traces))
        .bind(db_int(invoice.usage.payload_bytes))
        .bind(sqlx::types::Json(&invoice.lines))
        .bind(invoice.total_cents)
}
