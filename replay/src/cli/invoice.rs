//! `replay invoice` and `replay correct`.

use std::time::Duration;

use serde_json::json;
use tally_replay::correct;
use tally_replay::diff::{self, InvoiceDiff, Verdict};
use tally_store::invoices::billed_invoices;

use super::args::{failure, Args, Conclusion, Failure};
use super::{pool, run_recompute, setup, Setup};

/// `replay invoice` and `replay correct`.
pub(crate) async fn invoice(args: &Args, correct: bool) -> Result<Conclusion, Failure> {
    if correct {
        args.check_known(&["--org", "--period", "--reason", "--pricing"], &["--no-wait"])?;
    } else {
        args.check_known(&["--org", "--period", "--pricing"], &[])?;
    }
    let org = args.required("--org")?;
    let period = args.period()?;
    let ctx = setup(args)?;
    let pool = pool(&ctx.common).await?;
    let (recomputed, partitions, seconds) =
        run_recompute(&ctx, period, Some(&org), 1, args.json).await?;
    let stored = billed_invoices(
        &mut *pool.acquire().await.map_err(anyhow::Error::from)?,
        Some(&org),
        Some(&period.to_string()),
    )
    .await
    .map_err(anyhow::Error::from)?;
    let stored = stored.get(&(org.clone(), period.to_string()));
    let fresh = recomputed.invoices.get(&org);
    if stored.is_none() && fresh.is_none() {
        return Err(failure(
            "invoice_not_found",
            format!("neither the log nor the read models have an invoice of {org:?} for {period} (is the org id right?)"),
        ));
    }
    let d = diff::compare(&org, &period.to_string(), stored, fresh);
    let meta = json!({"partition": partitions[0], "records": recomputed.records, "elapsed_ms": (seconds * 1000.0) as u64});
    if !correct {
        if args.json {
            let mut out = serde_json::to_value(&d).expect("diffs serialise");
            out["replay"] = meta;
            println!("{out}");
        } else {
            print!("{}", diff::render(&d));
        }
        return Ok(if d.verdict == Verdict::Identical {
            Conclusion::Identical
        } else {
            Conclusion::Different
        });
    }
    apply_correction(args, &ctx, &pool, d, stored.map(|b| b.invoice()), fresh.cloned()).await
}

pub(crate) async fn apply_correction(
    args: &Args,
    ctx: &Setup,
    pool: &sqlx::PgPool,
    d: InvoiceDiff,
    stored: Option<tally_schemas::InvoiceV1>,
    fresh: Option<tally_schemas::InvoiceV1>,
) -> Result<Conclusion, Failure> {
    let (replaces, invoice) = match (d.verdict, stored, fresh) {
        (Verdict::Identical, _, _) => {
            if args.json {
                println!("{}", json!({"org_id": d.org_id, "period": d.period, "verdict": d.verdict, "correction": null}));
            } else {
                println!("invoice {} {}: identical to the log; nothing to correct", d.org_id, d.period);
            }
            return Ok(Conclusion::Identical);
        }
        (Verdict::MissingStored, _, _) => {
            return Err(failure(
                "invoice_not_stored",
                "the read models have no final invoice to correct: the projector may be behind, or the read models \
                 lost (replay rebuild)",
            ))
        }
        (Verdict::MissingRecomputed, _, _) => {
            return Err(failure("invoice_not_in_log", "the log finalizes no invoice for this org and period; a correction cannot remove one"))
        }
        (Verdict::Differs, Some(s), Some(f)) => (s, f),
        _ => return Err(failure("replay_failed", "inconsistent comparison")),
    };
    let reason =
        args.flag("--reason")?.unwrap_or_else(|| "recomputed from the log (replay correct)".into());
    let delta = invoice.total_cents - replaces.total_cents;
    let record = correct::correction(replaces, invoice, &reason, chrono::Utc::now());
    let (partition, offset) = correct::append(&ctx.common.kafka_brokers, &record).await?;
    let projected = if args.has("--no-wait") {
        None
    } else {
        Some(correct::wait_projected(pool, &record.correction_id, Duration::from_secs(60)).await?)
    };
    if args.json {
        println!(
            "{}",
            json!({
                "org_id": d.org_id, "period": d.period, "verdict": d.verdict, "differences": d.differences,
                "correction": {"correction_id": record.correction_id, "partition": partition, "offset": offset,
                               "projected": projected, "total_cents_change": delta}
            })
        );
    } else {
        print!("{}", diff::render(&d));
        println!(
            "appended correction {} to {} (partition {partition}, offset {offset}){}",
            record.correction_id,
            tally_schemas::Topic::Corrections,
            match projected {
                Some(true) => "; the projector has stored it",
                Some(false) => "; the projector has NOT stored it within 60 s",
                None => "",
            }
        );
        println!("invoice total changes by {}", tally_pricing::dollars(delta));
        if delta < 0 {
            println!(
                "this lowers the bill: Stripe's meters only add, so the billing reporter sends nothing for it; \
                 issue a credit note of {} in Stripe (docs/replay.md)",
                tally_pricing::dollars(-delta)
            );
        }
    }
    match projected {
        Some(false) => Err(failure("correction_not_projected", format!("correction {} was appended but not projected within 60 s: is the projector running?", record.correction_id))),
        _ => Ok(Conclusion::Identical),
    }
}
