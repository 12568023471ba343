//! `replay`: recompute invoices from the log, verify them, correct them, rebuild read models.
//!
//! Exit status: 0 identical (or done), 1 different, 2 error (including a period the log does
//! not finalize yet). docs/replay.md is the manual.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use tally_common::invoices::billed_invoices;
use tally_common::settings::{grace, Common};
use tally_metering::{FoldConfig, Period};
use tally_replay::diff::{self, InvoiceDiff, Verdict};
use tally_replay::progress::{human, Progress};
use tally_replay::recompute::{self, Recomputed};
use tally_replay::{correct, rebuild, source};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: replay invoice --org ORG --period YYYY-MM [--pricing FILE] [--json]
       replay verify --period YYYY-MM [--pricing FILE] [--threads N] [--json]
       replay correct --org ORG --period YYYY-MM [--reason TEXT] [--pricing FILE] [--no-wait] [--json]
       replay rebuild [--into SCHEMA] [--json]
exit status: 0 identical (or done), 1 different, 2 error
settings: TALLY_KAFKA_BROKERS, TALLY_DATABASE_URL, TALLY_NAMESPACE, TALLY_GRACE_HOURS, TALLY_PRICING_FILE";

/// What a command concluded.
enum Conclusion {
    Identical,
    Different,
}

/// A failure with a stable code, for `--json` and for people.
#[derive(Debug)]
struct Failure {
    code: &'static str,
    message: String,
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure { code: "replay_failed", message: format!("{e:#}") }
    }
}

fn failure(code: &'static str, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into() }
}

struct Args {
    command: String,
    rest: Vec<String>,
    json: bool,
}

impl Args {
    fn flag(&self, name: &str) -> Result<Option<String>, Failure> {
        match self.rest.iter().position(|a| a == name) {
            None => Ok(None),
            Some(i) => match self.rest.get(i + 1) {
                Some(v) if !v.starts_with("--") => Ok(Some(v.clone())),
                _ => Err(failure("invalid_arguments", format!("{name} needs a value\n{USAGE}"))),
            },
        }
    }

    fn required(&self, name: &str) -> Result<String, Failure> {
        self.flag(name)?.ok_or_else(|| failure("invalid_arguments", format!("{name} is required\n{USAGE}")))
    }

    fn has(&self, name: &str) -> bool {
        self.rest.iter().any(|a| a == name)
    }

    fn period(&self) -> Result<Period, Failure> {
        self.required("--period")?
            .parse()
            .map_err(|e: tally_metering::period::ParsePeriodError| failure("invalid_period", e.to_string()))
    }

    /// Refuses flags the command does not know, so a typo never runs a different command.
    fn check_known(&self, valued: &[&str], switches: &[&str]) -> Result<(), Failure> {
        let mut i = 0;
        while i < self.rest.len() {
            let a = self.rest[i].as_str();
            if valued.contains(&a) {
                i += 2;
            } else if switches.contains(&a) || a == "--json" {
                i += 1;
            } else {
                return Err(failure("invalid_arguments", format!("unknown argument {a:?} for {}\n{USAGE}", self.command)));
            }
        }
        Ok(())
    }
}

/// What every command reads from the environment.
struct Setup {
    common: Common,
    config: FoldConfig,
}

fn setup(args: &Args) -> Result<Setup, Failure> {
    let mut common = Common::from_env().map_err(|e| failure("invalid_setting", e.to_string()))?;
    tally_schemas::set_namespace(&common.namespace).map_err(|m| failure("invalid_setting", format!("TALLY_NAMESPACE: {m}")))?;
    if let Some(file) = args.flag("--pricing")? {
        common.pricing_file = Some(file.into());
    }
    let pricing = common.pricing().map_err(|e| failure("invalid_pricing", e.to_string()))?;
    let grace = grace().map_err(|e| failure("invalid_setting", e.to_string()))?;
    Ok(Setup { common, config: FoldConfig { grace, pricing } })
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut all: Vec<String> = std::env::args().skip(1).collect();
    if all.is_empty() || all[0] == "--help" || all[0] == "-h" {
        eprintln!("{USAGE}");
        return ExitCode::from(if all.is_empty() { 2 } else { 0 });
    }
    let command = all.remove(0);
    let args = Args { json: all.iter().any(|a| a == "--json"), command, rest: all };
    if !args.json {
        tally_common::telemetry::init_tool();
    }
    let result = match args.command.as_str() {
        "invoice" => invoice(&args, false).await,
        "correct" => invoice(&args, true).await,
        "verify" => verify(&args).await,
        "rebuild" => rebuild_cmd(&args).await,
        other => Err(failure("invalid_arguments", format!("unknown command {other:?}\n{USAGE}"))),
    };
    match result {
        Ok(Conclusion::Identical) => ExitCode::SUCCESS,
        Ok(Conclusion::Different) => ExitCode::from(1),
        Err(f) => {
            if args.json {
                println!("{}", json!({"error": {"code": f.code, "message": f.message}}));
            } else {
                eprintln!("replay: {}", f.message);
            }
            ExitCode::from(2)
        }
    }
}

async fn pool(common: &Common) -> Result<sqlx::PgPool, Failure> {
    tally_common::db::connect(&common.database_url, 4).await.map_err(|e| failure("database_unavailable", e.to_string()))
}

/// Recomputes `period` on a blocking thread, with the progress bar: from `org`'s partition, or
/// from every partition.
async fn run_recompute(
    ctx: &Setup,
    period: Period,
    org: Option<&str>,
    threads: usize,
    json: bool,
) -> Result<(Recomputed, Vec<i32>, f64), Failure> {
    let brokers = ctx.common.kafka_brokers.clone();
    let config = ctx.config.clone();
    let org = org.map(str::to_string);
    let progress = Progress::new();
    let drawer = progress.draw(!json);
    let p = progress.clone();
    let result = tokio::task::spawn_blocking(move || -> anyhow::Result<(Recomputed, Vec<i32>)> {
        let consumer = source::consumer(&brokers)?;
        let count = source::partitions(&consumer)?;
        drop(consumer);
        let partitions = match org {
            Some(org) => vec![tally_schemas::partition_for_key(org.as_bytes(), count)],
            None => (0..count).collect(),
        };
        let recomputed = recompute::recompute(&brokers, &config, period, &partitions, threads, &p)?;
        Ok((recomputed, partitions))
    })
    .await
    .map_err(|e| failure("replay_failed", e.to_string()))?;
    drawer.finish();
    let (recomputed, partitions) = result?;
    let seconds = progress.elapsed().as_secs_f64();
    if !json {
        eprintln!(
            "replay: {} records from partition{} {:?} in {:.2} s ({}/s){}",
            human(recomputed.records),
            if partitions.len() == 1 { "" } else { "s" },
            partitions,
            seconds,
            human((recomputed.records as f64 / seconds.max(1e-9)) as u64),
            if recomputed.invalid > 0 { format!("; {} undecodable records skipped, as the aggregator skips them", recomputed.invalid) } else { String::new() }
        );
    }
    if !recomputed.unfinished.is_empty() {
        return Err(failure(
            "period_not_final",
            format!(
                "the log does not finalize {period} yet in partition(s) {:?}: its invoices are final once the trace log \
                 has passed {} (the end plus TALLY_GRACE_HOURS) and the billing log {}",
                recomputed.unfinished,
                period.closes_at(ctx.config.grace),
                period.end()
            ),
        ));
    }
    Ok((recomputed, partitions, seconds))
}

/// `replay invoice` and `replay correct`.
async fn invoice(args: &Args, correct: bool) -> Result<Conclusion, Failure> {
    if correct {
        args.check_known(&["--org", "--period", "--reason", "--pricing"], &["--no-wait"])?;
    } else {
        args.check_known(&["--org", "--period", "--pricing"], &[])?;
    }
    let org = args.required("--org")?;
    let period = args.period()?;
    let ctx = setup(args)?;
    let pool = pool(&ctx.common).await?;
    let (recomputed, partitions, seconds) = run_recompute(&ctx, period, Some(&org), 1, args.json).await?;
    let stored = billed_invoices(&pool, Some(&org), Some(&period.to_string())).await.map_err(anyhow::Error::from)?;
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
        return Ok(if d.verdict == Verdict::Identical { Conclusion::Identical } else { Conclusion::Different });
    }
    apply_correction(args, &ctx, &pool, d, stored.map(|b| b.invoice()), fresh.cloned()).await
}

async fn apply_correction(
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
    let reason = args.flag("--reason")?.unwrap_or_else(|| "recomputed from the log (replay correct)".into());
    let delta = invoice.total_cents - replaces.total_cents;
    let record = correct::correction(replaces, invoice, &reason, chrono::Utc::now());
    let (partition, offset) = correct::append(&ctx.common.kafka_brokers, &record).await?;
    let projected = if args.has("--no-wait") {
        None
    } else {
        Some(correct::wait_projected(pool, &record.correction_id, Duration::from_secs(60)).await?)
    };
    let money = |c: i64| format!("{}${}.{:02}", if c < 0 { "-" } else { "" }, c.abs() / 100, c.abs() % 100);
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
        println!("invoice total changes by {}", money(delta));
        if delta < 0 {
            println!(
                "this lowers the bill: Stripe's meters only add, so the billing reporter sends nothing for it; \
                 issue a credit note of {} in Stripe (docs/replay.md)",
                money(-delta)
            );
        }
    }
    match projected {
        Some(false) => Err(failure("correction_not_projected", format!("correction {} was appended but not projected within 60 s: is the projector running?", record.correction_id))),
        _ => Ok(Conclusion::Identical),
    }
}

/// `replay verify`.
async fn verify(args: &Args) -> Result<Conclusion, Failure> {
    args.check_known(&["--period", "--pricing", "--threads"], &[])?;
    let period = args.period()?;
    let threads: usize = match args.flag("--threads")? {
        Some(n) => n.parse().ok().filter(|n| (1..=64).contains(n)).ok_or_else(|| failure("invalid_arguments", "--threads: 1-64"))?,
        None => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let ctx = setup(args)?;
    let pool = pool(&ctx.common).await?;
    let (recomputed, _, seconds) = run_recompute(&ctx, period, None, threads, args.json).await?;
    let stored = billed_invoices(&pool, None, Some(&period.to_string())).await.map_err(anyhow::Error::from)?;
    let mut orgs: Vec<String> = stored.keys().map(|(o, _)| o.clone()).chain(recomputed.invoices.keys().cloned()).collect();
    orgs.sort();
    orgs.dedup();
    let diffs: Vec<InvoiceDiff> = orgs
        .iter()
        .map(|org| diff::compare(org, &period.to_string(), stored.get(&(org.clone(), period.to_string())), recomputed.invoices.get(org)))
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
        print!("{}", verify_table(&period, &diffs));
    }
    Ok(if different == 0 { Conclusion::Identical } else { Conclusion::Different })
}

fn verify_table(period: &Period, diffs: &[InvoiceDiff]) -> String {
    let money = |v: &Option<serde_json::Value>| {
        v.as_ref().and_then(|v| v["total_cents"].as_i64()).map_or("-".to_string(), |c| format!("${}.{:02}", c / 100, c % 100))
    };
    let mut out = format!("verify {period}\n{:<28} {:>14} {:>14}  {:<20} {}\n", "org", "stored", "recomputed", "result", "differences");
    for d in diffs {
        let verdict = match d.verdict {
            Verdict::Identical => "identical",
            Verdict::Differs => "DIFFERENT",
            Verdict::MissingStored => "MISSING (stored)",
            Verdict::MissingRecomputed => "MISSING (log)",
        };
        let fields: Vec<&str> = d.differences.iter().map(|x| x.field.as_str()).take(4).collect();
        let more = d.differences.len().saturating_sub(4);
        out.push_str(&format!(
            "{:<28} {:>14} {:>14}  {:<20} {}{}\n",
            d.org_id,
            money(&d.stored),
            money(&d.recomputed),
            verdict,
            fields.join(", "),
            if more > 0 { format!(" (+{more})") } else { String::new() }
        ));
    }
    let different = diffs.iter().filter(|d| d.verdict != Verdict::Identical).count();
    out.push_str(&format!("{} orgs: {} identical, {} different\n", diffs.len(), diffs.len() - different, different));
    out
}

/// `replay rebuild`.
async fn rebuild_cmd(args: &Args) -> Result<Conclusion, Failure> {
    args.check_known(&["--into"], &[])?;
    let into = args.flag("--into")?;
    let ctx = setup(args)?;
    let pool = pool(&ctx.common).await?;
    let options: sqlx::postgres::PgConnectOptions =
        ctx.common.database_url.expose().parse().map_err(|e: sqlx::Error| failure("invalid_setting", format!("TALLY_DATABASE_URL: {e}")))?;
    let progress = Progress::new();
    let drawer = progress.draw(!args.json);
    let rebuilt = rebuild::rebuild(&pool, &options, &ctx.common.kafka_brokers, into.as_deref(), &progress).await;
    drawer.finish();
    let rebuilt = rebuilt?;
    if args.json {
        println!("{}", serde_json::to_string(&rebuilt).expect("serialises"));
    } else {
        println!("rebuilt the read models from {} records of the log, in schema {}", rebuilt.records, rebuilt.schema);
        for (table, n) in &rebuilt.rows {
            println!("  {table:<22} {n:>10} rows");
        }
        if let Some(old) = &rebuilt.replaced {
            println!("the replaced tables are in schema {old}; drop it when satisfied: DROP SCHEMA {old} CASCADE");
        }
    }
    Ok(Conclusion::Identical)
}
