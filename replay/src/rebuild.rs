//! `replay rebuild`: every read model re-projected from the log into fresh tables, then swapped
//! in atomically (or, with `--into SCHEMA`, left beside the live ones for comparison).
//!
//! The read models are projections of `tally.usage.v1` (usage, per-operation and daily usage,
//! late events, final invoices) and `tally.corrections.v1` (corrections). Re-projecting those two
//! logs from their first offset with the projector's own code gives the same rows, whatever the
//! batching: updates are cumulative and versioned, invoices and corrections are written once.
//! (Refolding the trace log would reproduce invoices but not the versions and times of open
//! periods, which depend on how the aggregator's batches fell; the usage log records them.)
//!
//! The swap: in one transaction, lock the live tables (the live projector waits), project what
//! the log gained meanwhile into the new tables, move the live tables to a schema
//! `tally_replaced_<time>` and the new ones into `public`. Readers see the old tables or the new
//! ones, never a mix. The registry (orgs, keys) and the Stripe tables are not projections and are
//! left alone.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context};
use rdkafka::consumer::Consumer;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};
use tally_projector::project::{coalesce, decode_record, Decoded};
use tally_schemas::{Topic, UsageUpdateV1};
use tally_store::projection::{self, LoggedCorrection};

use crate::progress::Progress;
use crate::source;

/// Every table the projector writes, in the order they are created and moved.
pub const READ_MODELS: [&str; 7] = [
    "usage_periods",
    "usage_by_operation",
    "usage_daily",
    "late_events",
    "invoices",
    "invoice_corrections",
    "projector_offsets",
];

/// Records per database transaction while rebuilding.
const BATCH: usize = 5_000;

/// What a rebuild did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rebuilt {
    /// Where the rebuilt tables are: `public` once swapped in, else the `--into` schema.
    pub schema: String,
    /// Where the replaced tables were moved (kept for inspection; drop it when satisfied).
    pub replaced: Option<String>,
    pub records: u64,
    pub rows: BTreeMap<String, i64>,
}

/// A schema name Tally will create: lower-case letters, digits and `_`, starting with a letter.
pub fn check_schema_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 50
        && name.as_bytes()[0].is_ascii_lowercase()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name != "public"
        && !name.starts_with("pg_");
    if !ok {
        bail!("{name:?} is not a schema name replay will create (a-z, 0-9 and _, starting with a letter; not public)");
    }
    Ok(())
}

/// A pool whose connections resolve unqualified table names in `schema`: the projector's SQL,
/// unchanged, writes the new tables.
async fn pool_in(options: &PgConnectOptions, schema: &str) -> anyhow::Result<PgPool> {
    let options = options.clone().options([("search_path", schema)]);
    Ok(PgPoolOptions::new().max_connections(2).connect_with(options).await?)
}

/// Projects `[from, high)` of every partition of `topic` into the tables `pool` writes.
async fn project(
    brokers: &str,
    pool: &PgPool,
    topic: Topic,
    ranges: Vec<(i32, i64, i64)>,
    progress: &Progress,
) -> anyhow::Result<u64> {
    struct Item {
        partition: i32,
        offset: i64,
        ts: Option<i64>,
        payload: Vec<u8>,
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(BATCH * 2);
    let brokers = brokers.to_string();
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let consumer = source::consumer(&brokers)?;
        let mut read = 0;
        for (partition, from, high) in ranges {
            read += source::read_range(
                &consumer,
                topic.name(),
                partition,
                from,
                high,
                |offset, ts, payload| {
                    tx.blocking_send(Item { partition, offset, ts, payload: payload.to_vec() })
                        .is_ok()
                },
            )?;
        }
        Ok(read)
    });
    let mut updates: Vec<UsageUpdateV1> = Vec::new();
    let mut corrections: Vec<LoggedCorrection> = Vec::new();
    let mut offsets: HashMap<i32, i64> = HashMap::new();
    let mut pending = 0usize;
    // The stored offset of a partition is the one after its last record, as the projector
    // stores it (not the high watermark, which counts a transaction's commit marker too).
    while let Some(Item { partition, offset, ts, payload }) = rx.recv().await {
        pending += 1;
        progress.add(1);
        offsets.insert(partition, offset + 1);
        match decode_record(topic, partition, offset, ts, &payload) {
            Some(Decoded::Update(update)) => updates.push(update),
            Some(Decoded::Correction(correction)) => corrections.push(correction),
            None => {}
        }
        if pending >= BATCH {
            write(pool, topic, &mut updates, &mut corrections, &mut offsets).await?;
            pending = 0;
        }
    }
    write(pool, topic, &mut updates, &mut corrections, &mut offsets).await?;
    reader.await.context("the log reader panicked")?
}

/// Writes what was collected, with the offsets after it, in one transaction.
async fn write(
    pool: &PgPool,
    topic: Topic,
    updates: &mut Vec<UsageUpdateV1>,
    corrections: &mut Vec<LoggedCorrection>,
    offsets: &mut HashMap<i32, i64>,
) -> anyhow::Result<()> {
    if updates.is_empty() && corrections.is_empty() && offsets.is_empty() {
        return Ok(());
    }
    let batch = coalesce(std::mem::take(updates));
    let logged = std::mem::take(corrections);
    let offs: Vec<(Topic, i32, i64)> = offsets.drain().map(|(p, o)| (topic, p, o)).collect();
    projection::write_batch(pool, &batch, &logged, &offs).await.context("writing rebuilt rows")?;
    Ok(())
}

/// `[stored offset, high)` of every partition of `topic`, for the tables `pool` writes.
async fn ranges_from(
    pool: &PgPool,
    brokers: &str,
    topic: Topic,
) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let brokers = brokers.to_string();
    let highs = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(i32, i64)>> {
        let consumer = source::consumer(&brokers)?;
        let metadata = consumer.fetch_metadata(Some(topic.name()), std::time::Duration::from_secs(30))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic.name())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        partitions
            .into_iter()
            .map(|p| {
                let (low, high) = consumer.fetch_watermarks(topic.name(), p, std::time::Duration::from_secs(30))?;
                if low > 0 {
                    bail!("{} partition {p} starts at offset {low}: retention removed records the read models need", topic.name());
                }
                Ok((p, high))
            })
            .collect()
    })
    .await??;
    let mut ranges = Vec::new();
    for (partition, high) in highs {
        let from = projection::stored_offset(pool, topic, partition).await?.unwrap_or(0);
        if from < high {
            ranges.push((partition, from, high));
        }
    }
    Ok(ranges)
}

/// Projects both logs from where the tables `pool` writes stand to their current ends.
async fn catch_up(pool: &PgPool, brokers: &str, progress: &Progress) -> anyhow::Result<u64> {
    let mut records = 0;
    for topic in [Topic::Usage, Topic::Corrections] {
        let ranges = ranges_from(pool, brokers, topic).await?;
        progress.expect(ranges.iter().map(|(_, from, high)| (high - from) as u64).sum());
        records += project(brokers, pool, topic, ranges, progress).await?;
    }
    Ok(records)
}

/// Rebuilds every read model from the log. With `into`, the tables are built in that schema
/// and left there; without, they are swapped in for the live ones.
pub async fn rebuild(
    pool: &PgPool,
    options: &PgConnectOptions,
    brokers: &str,
    into: Option<&str>,
    progress: &Progress,
) -> anyhow::Result<Rebuilt> {
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    let schema = into.map_or_else(|| format!("tally_rebuild_{stamp}"), str::to_string);
    check_schema_name(&schema)?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_namespace WHERE nspname = $1")
        .bind(&schema)
        .fetch_optional(pool)
        .await?;
    if exists.is_some() {
        bail!("schema {schema} exists already; drop it (DROP SCHEMA {schema} CASCADE) or name another");
    }
    let mut tx = pool.begin().await?;
    tx.execute(format!("CREATE SCHEMA {schema}").as_str()).await?;
    for table in READ_MODELS {
        tx.execute(
            format!("CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)").as_str(),
        )
        .await?;
    }
    // The same grants and row-level security as the live tables (store migration 0009): they
    // move with the tables when swapped in.
    sqlx::query("SELECT tally_secure_read_models($1)").bind(&schema).execute(&mut *tx).await?;
    tx.commit().await?;
    let new = pool_in(options, &schema).await?;
    let mut records = catch_up(&new, brokers, progress).await?;
    let mut replaced = None;
    if into.is_none() {
        let old = format!("tally_replaced_{stamp}");
        let mut tx = pool.begin().await?;
        let tables = READ_MODELS.map(|t| format!("public.{t}")).join(", ");
        tx.execute(format!("LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE").as_str()).await?;
        // Nothing is projected into the live tables now: catch the new ones up to the log's end.
        records += catch_up(&new, brokers, progress).await?;
        tx.execute(format!("CREATE SCHEMA {old}").as_str()).await?;
        for table in READ_MODELS {
            tx.execute(format!("ALTER TABLE public.{table} SET SCHEMA {old}").as_str()).await?;
            tx.execute(format!("ALTER TABLE {schema}.{table} SET SCHEMA public").as_str()).await?;
        }
        tx.execute(format!("DROP SCHEMA {schema}").as_str()).await?;
        tx.commit().await?;
        replaced = Some(old);
    }
    new.close().await;
    let shown = if into.is_some() { schema.clone() } else { "public".to_string() };
    let mut rows = BTreeMap::new();
    for table in READ_MODELS {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {shown}.{table}"))
            .fetch_one(pool)
            .await?;
        rows.insert(table.to_string(), n);
    }
    Ok(Rebuilt { schema: shown, replaced, records, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        check_schema_name("rebuild_check").unwrap();
        for bad in ["", "public", "Rebuild", "1x", "a;drop", "pg_x", "a-b"] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }
}
