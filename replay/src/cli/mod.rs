//! What every command shares: the settings, the database, and the recomputation of a period with
//! its progress bar.

use tally_common::settings::{Common, PricingPath};
use tally_metering::{FoldConfig, Period};
use tally_replay::progress::{human, Progress};
use tally_replay::recompute::{self, Recomputed};
use tally_replay::source;

use args::{failure, Args, Failure};

pub(crate) mod args;
pub(crate) mod invoice;
pub(crate) mod rebuild;
pub(crate) mod render;
pub(crate) mod verify;

/// What every command reads from the environment.
pub(crate) struct Setup {
    pub(crate) common: Common,
    pub(crate) config: FoldConfig,
}

pub(crate) fn setup(args: &Args) -> Result<Setup, Failure> {
    let mut common =
        Common::from_env("replay").map_err(|e| failure("invalid_setting", e.to_string()))?;
    tally_schemas::set_namespace(&common.namespace)
        .map_err(|m| failure("invalid_setting", format!("TALLY_NAMESPACE: {m}")))?;
    if let Some(file) = args.flag("--pricing")? {
        common.pricing_file = PricingPath(Some(file.into()));
    }
    let pricing = common
        .pricing_file
        .load(tally_pricing::Pricing::configured)
        .map_err(|e| failure("invalid_pricing", e.to_string()))?;
    Ok(Setup { config: FoldConfig { grace: common.grace, pricing }, common })
}

pub(crate) async fn pool(common: &Common) -> Result<sqlx::PgPool, Failure> {
    tally_store::connect(&common.database_url, 4)
        .await
        .map_err(|e| failure("database_unavailable", e.to_string()))
}

/// Recomputes `period` on a blocking thread, with the progress bar: from `org`'s partition, or
/// from every partition.
pub(crate) async fn run_recompute(
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
            if recomputed.invalid > 0 {
                format!(
                    "; {} undecodable records skipped, as the aggregator skips them",
                    recomputed.invalid
                )
            } else {
                String::new()
            }
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
