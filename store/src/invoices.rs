//! Final invoices as the read models hold them: the stored invoice of (org, period) and, when
//! `replay correct` has corrected it, the newest correction, which is the invoice in effect.
//!
//! The api shows them, the billing reporter bills the usage they carry, and the replay tool
//! compares them with its recomputation; all three read them here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use tally_schemas::{BilledUsageV1, InvoiceStatusV1, InvoiceV1, LineItemV1, Tier};

/// Stored counts (PostgreSQL `bigint`s) as billed usage. The pipeline never writes a negative
/// count; a hand-edited one reads as 0.
pub fn billed_usage(traces: i64, payload_bytes: i64) -> BilledUsageV1 {
    let count_of = |v: i64| u64::try_from(v).unwrap_or(0);
    BilledUsageV1 { traces: count_of(traces), payload_bytes: count_of(payload_bytes) }
}

/// The columns an invoice is stored in, in `invoices` and (for the corrected invoice) in
/// `invoice_corrections`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvoiceRow {
    pub org_id: String,
    pub period: String,
    pub tier: String,
    pub pricing_version: String,
    pub currency: String,
    pub traces: i64,
    pub payload_bytes: i64,
    pub lines: sqlx::types::Json<Vec<LineItemV1>>,
    pub total_cents: i64,
    pub finalized_at: DateTime<Utc>,
}

const INVOICE_COLUMNS: &str =
    "org_id, period, tier, pricing_version, currency, traces, payload_bytes, lines, total_cents, finalized_at";

impl InvoiceRow {
    /// The stored tier, or the unreadable text itself.
    pub fn tier(&self) -> Result<Tier, String> {
        self.tier.parse().map_err(|_| self.tier.clone())
    }

    /// The invoice as published (`InvoiceV1`). A tier that is not one of the four (only a hand
    /// edit of the row can do that) reads as starter; [`InvoiceRow::tier`] tells it apart.
    pub fn to_invoice(&self) -> InvoiceV1 {
        InvoiceV1 {
            org_id: self.org_id.clone(),
            period: self.period.clone(),
            tier: self.tier().unwrap_or_default(),
            pricing_version: self.pricing_version.clone(),
            currency: self.currency.clone(),
            status: InvoiceStatusV1::Final,
            usage: billed_usage(self.traces, self.payload_bytes),
            lines: self.lines.0.clone(),
            total_cents: self.total_cents,
            finalized_at: Some(self.finalized_at),
        }
    }
}

/// Which correction replaced a stored invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorrectionRef {
    pub correction_id: String,
    /// The correction record's log time.
    pub corrected_at: DateTime<Utc>,
    pub reason: String,
    /// The total of the invoice it replaced.
    pub replaces_total_cents: i64,
}

/// The invoice in effect for one (org, period).
#[derive(Debug, Clone)]
pub struct BilledInvoice {
    /// The newest correction's invoice, or the stored invoice.
    pub row: InvoiceRow,
    /// `None` while the stored invoice has never been corrected.
    pub correction: Option<CorrectionRef>,
}

impl BilledInvoice {
    pub fn invoice(&self) -> InvoiceV1 {
        self.row.to_invoice()
    }
}

#[derive(sqlx::FromRow)]
struct CorrectionRow {
    #[sqlx(flatten)]
    row: InvoiceRow,
    correction_id: String,
    corrected_at: DateTime<Utc>,
    reason: String,
    replaces_total_cents: i64,
}

/// The rule "the invoice in effect for (org, period) is its newest correction" in one place: a
/// subquery with one row per corrected (org, period), the correction with the highest
/// `log_offset` (all of an org's corrections are in one partition). Every reader of corrections
/// (the api, the billing reporter, replay) selects from it, never from `invoice_corrections`.
pub const CORRECTIONS_IN_EFFECT: &str =
    "(SELECT DISTINCT ON (org_id, period) * FROM invoice_corrections \
     ORDER BY org_id, period, log_offset DESC)";

/// The invoices in effect, for one org or all (`org = None`) and one period or all
/// (`period = None`), keyed by (org, period). A correction of an invoice that is not (yet) in
/// `invoices` counts too: the rows come from two topics that are projected independently.
pub async fn billed_invoices(
    db: &mut PgConnection,
    org: Option<&str>,
    period: Option<&str>,
) -> sqlx::Result<BTreeMap<(String, String), BilledInvoice>> {
    let stored: Vec<InvoiceRow> = sqlx::query_as(&format!(
        "SELECT {INVOICE_COLUMNS} FROM invoices
         WHERE ($1::text IS NULL OR org_id = $1) AND ($2::text IS NULL OR period = $2)"
    ))
    .bind(org)
    .bind(period)
    .fetch_all(&mut *db)
    .await?;
    let corrected: Vec<CorrectionRow> = sqlx::query_as(&format!(
        "SELECT {INVOICE_COLUMNS}, correction_id, corrected_at, reason, replaces_total_cents
         FROM {CORRECTIONS_IN_EFFECT} k
         WHERE ($1::text IS NULL OR org_id = $1) AND ($2::text IS NULL OR period = $2)"
    ))
    .bind(org)
    .bind(period)
    .fetch_all(&mut *db)
    .await?;
    let mut out: BTreeMap<(String, String), BilledInvoice> = stored
        .into_iter()
        .map(|row| {
            ((row.org_id.clone(), row.period.clone()), BilledInvoice { row, correction: None })
        })
        .collect();
    for c in corrected {
        out.insert(
            (c.row.org_id.clone(), c.row.period.clone()),
            BilledInvoice {
                row: c.row,
                correction: Some(CorrectionRef {
                    correction_id: c.correction_id,
                    corrected_at: c.corrected_at,
                    reason: c.reason,
                    replaces_total_cents: c.replaces_total_cents,
                }),
            },
        );
    }
    Ok(out)
}

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
    db: &mut PgConnection,
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
    .fetch_all(&mut *db)
    .await
}
