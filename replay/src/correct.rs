//! `replay correct`: the record that makes the billed invoice the recomputed one.
//!
//! Repairs go through the log, never by editing rows: an [`InvoiceCorrectedV1`] is appended to
//! `tally.corrections.v1` (keyed by org, like every billing record), the projector stores it in
//! `invoice_corrections`, the api shows the corrected invoice, and the billing reporter bills the
//! corrected usage. The record carries absolute targets and an id derived from its content, so
//! running `correct` twice appends nothing new in effect.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tally_schemas::{InvoiceCorrectedV1, InvoiceV1, Topic};

/// The id of a correction: the same invoice replaced by the same recomputation has the same id.
pub fn correction_id(replaces: &InvoiceV1, invoice: &InvoiceV1) -> String {
    let mut hash = Sha256::new();
    hash.update(serde_json::to_vec(replaces).expect("invoices serialise"));
    hash.update(b"\n");
    hash.update(serde_json::to_vec(invoice).expect("invoices serialise"));
    format!("corr_{}", &hex::encode(hash.finalize())[..24])
}

/// The correction of `replaces` to `invoice`.
pub fn correction(
    replaces: InvoiceV1,
    invoice: InvoiceV1,
    reason: &str,
    requested_at: DateTime<Utc>,
) -> InvoiceCorrectedV1 {
    InvoiceCorrectedV1 {
        correction_id: correction_id(&replaces, &invoice),
        org_id: invoice.org_id.clone(),
        period: invoice.period.clone(),
        replaces,
        invoice,
        reason: reason.to_string(),
        requested_at,
    }
}

/// Appends a correction; returns its partition and offset. The producer is idempotent and waits
/// for every in-sync replica, and it partitions by org with murmur2, as ingest and the api do.
pub async fn append(brokers: &str, correction: &InvoiceCorrectedV1) -> anyhow::Result<(i32, i64)> {
    let producer: FutureProducer = tally_common::kafka::base_config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "30000")
        .create()
        .context("creating the corrections producer")?;
    let payload = serde_json::to_vec(correction).expect("corrections serialise");
    let delivered = producer
        .send(
            FutureRecord::to(Topic::Corrections.name()).key(&correction.org_id).payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| {
            anyhow::Error::new(e).context(format!("appending to {}", Topic::Corrections))
        })?;
    Ok((delivered.partition, delivered.offset))
}

/// Waits until the projector has stored the correction; false after `timeout`.
pub async fn wait_projected(
    pool: &PgPool,
    correction_id: &str,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM invoice_corrections WHERE correction_id = $1 LIMIT 1",
        )
        .bind(correction_id)
        .fetch_optional(pool)
        .await?;
        if found.is_some() {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_pricing::Pricing;
    use tally_schemas::{BilledUsageV1, Tier};

    #[test]
    fn the_id_depends_on_what_is_replaced_and_by_what() {
        let at = "2026-11-03T00:00:00Z".parse().unwrap();
        let p = Pricing::builtin();
        let a = p.invoice(
            "acme",
            "2026-10",
            Tier::Starter,
            BilledUsageV1 { traces: 101_500, payload_bytes: 0 },
            Some(at),
        );
        let b = p.invoice(
            "acme",
            "2026-10",
            Tier::Starter,
            BilledUsageV1 { traces: 101_000, payload_bytes: 0 },
            Some(at),
        );
        assert_eq!(correction_id(&a, &b), correction_id(&a, &b));
        assert_ne!(correction_id(&a, &b), correction_id(&b, &a));
        let c = correction(a, b.clone(), "ticket 1", at);
        assert_eq!(c.invoice, b);
        assert!(c.correction_id.starts_with("corr_"));
    }
}
