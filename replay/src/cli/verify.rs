//! `replay verify`.

use serde_json::json;
use tally_replay::diff::{self, InvoiceDiff, Verdict};
use tally_store::invoices::billed_invoices;

use super::args::{failure, Args, Conclusion, Failure};
use super::{pool, render, run_recompute, setup};

/// `replay verify`.
pub(crate) async fn verify(args: &Args) -> Result<Conclusion, Failure> {
    args.check_known(&["--period", "--pricing", "--threads"], &[])?;
    let period = args.period()?;
    let threads: usize = match args.flag("--threads")? {
        Some(n) => n
            .parse()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .ok_or_else(|| failure("invalid_arguments", "--threads: 1-64"))?,
        None => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let ctx = setup(args)?;
    let pool = pool(&ctx.common).await?;
    let (recomputed, _, seconds) = run_recompute(&ctx, period, None, threads, args.json).await?;
    let stored = billed_invoices(
        &mut *pool.acquire().await.map_err(anyhow::Error::from)?,
        None,
        Some(&period.to_string()),
    )
    .await
    .map_err(anyhow::Error::from)?;
    let mut orgs: Vec<String> =
        stored.keys().map(|(o, _)| o.clone()).chain(recomputed.invoices.keys().cloned()).collect();
    orgs.sort();
    orgs.dedup();
    let diffs: Vec<InvoiceDiff> = orgs
        .iter()
        .map(|org| {
            diff::compare(
                org,
                &period.to_string(),
                stored.get(&(org.clone(), period.to_string())),
                recomputed.invoices.get(org),
            )
        })
        .collect();
    let different = diffs.iter().filter(|d| d.verdict != Verdict::Identical).count();
    if args.json {
        let results: Vec<serde_json::Value> = diffs
            .iter()
            .map(|d| {
                json!({
                    "org_id": d.org_id, "verdict": d.verdict, "correction_id": d.correction_id,
                    "stored_total_cents": d.stored.as_ref().map(|v| v["total_cents"].clone()),
                    "recomputed_total_cents": d.recomputed.as_ref().map(|v| v["total_cents"].clone()),
                    "differences": d.differences,
                })
            })
            .collect();
        println!(
            "{}",
            json!({"period": period.to_string(), "orgs": diffs.len(), "identical": diffs.len() - different,
                   "different": different, "records": recomputed.records, "elapsed_ms": (seconds * 1000.0) as u64,
                   "results": results})
        );
    } else {
        print!("{}", render::verify_table(&period, &diffs));
    }
    Ok(if different == 0 { Conclusion::Identical } else { Conclusion::Different })
}
