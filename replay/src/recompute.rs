//! Folding partitions of the log until a period's invoices are final.
//!
//! What decides (org, P)'s invoice, and so what a replay must read:
//! - Its usage: the events of P, deduplicated per (org, P), and whether each arrived before P
//!   closed. A period closes when the partition's trace watermark (the newest arrival of *any*
//!   org in the partition) reaches `P.end + grace`, so the whole partition is folded, not only
//!   the org's records.
//! - Where to start: ingest refuses an event that ends more than 5 minutes after it arrives, so
//!   no record that arrived before `P.start - 5 min` belongs to P, and the trace log is read from
//!   there (the org's partition, from the offsets where the period's arrivals begin).
//! - Its tier: the billing log, whole.
//! - When it is final: once the trace watermark has reached `P.end + grace` and the billing
//!   watermark `P.end`; the fold then issues the invoice exactly as the aggregator did, and the
//!   read stops there.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tally_metering::rules::MAX_EVENT_FUTURE;
use tally_metering::{apply_record, Fold, FoldConfig, Period};
use tally_schemas::InvoiceV1;

use crate::progress::Progress;
use crate::source::{self, Extent};

/// How many records between two drains of the fold's changes.
const DRAIN_EVERY: u64 = 1 << 16;

/// The log time from which the trace log is read for `period`.
pub fn trace_start(period: Period) -> DateTime<Utc> {
    period.start() - MAX_EVENT_FUTURE - chrono::Duration::milliseconds(1)
}

/// When a fold has seen enough of the logs for a period's invoices to be final: the trace
/// watermark at the period's close (end plus grace), the billing watermark at its end.
#[derive(Debug, Clone, Copy)]
pub struct FinalAt {
    trace: DateTime<Utc>,
    billing: DateTime<Utc>,
}

impl FinalAt {
    pub fn new(period: Period, grace: chrono::Duration) -> FinalAt {
        FinalAt { trace: period.closes_at(grace), billing: period.end() }
    }

    pub fn reached(&self, fold: &Fold) -> bool {
        let w = fold.watermarks();
        w.trace.is_some_and(|t| t >= self.trace) && w.billing.is_some_and(|b| b >= self.billing)
    }
}

/// What a replay of one partition found.
#[derive(Debug, Clone)]
pub struct PartitionResult {
    pub partition: i32,
    /// The period's final invoices, by org.
    pub invoices: BTreeMap<String, InvoiceV1>,
    /// The log ended before the period was final.
    pub unfinished: bool,
    /// Records folded.
    pub records: u64,
    /// Records that could not be decoded (they change nothing, as in the aggregator).
    pub invalid: u64,
}

/// Folds one partition, from an empty fold, until `period` is final or the extent ends.
pub fn replay_partition(
    consumer: &rdkafka::consumer::BaseConsumer,
    config: &FoldConfig,
    period: Period,
    extent: &Extent,
    progress: &Progress,
) -> anyhow::Result<PartitionResult> {
    let mut fold = Fold::new(config.clone());
    let mut invoices = BTreeMap::new();
    let mut invalid = 0;
    let mut since_drain = 0u64;
    let mut finished = false;
    let final_at = FinalAt::new(period, config.grace);
    let collect = |fold: &mut Fold, invoices: &mut BTreeMap<String, InvoiceV1>| {
        for change in fold.drain_changes() {
            if change.key.period != period {
                continue;
            }
            if let Some(invoice) = change.update.and_then(|u| u.invoice) {
                invoices.insert(invoice.org_id.clone(), invoice);
            }
        }
    };
    let records = source::read_partition(consumer, extent, |record| {
        if let tally_metering::Applied::Invalid(_) =
            apply_record(&mut fold, record.log, record.timestamp_ms, record.payload)
        {
            invalid += 1;
        }
        since_drain += 1;
        if since_drain == DRAIN_EVERY {
            progress.add(since_drain);
            since_drain = 0;
            collect(&mut fold, &mut invoices);
        }
        if final_at.reached(&fold) {
            finished = true;
            return false;
        }
        true
    })?;
    progress.add(since_drain);
    collect(&mut fold, &mut invoices);
    Ok(PartitionResult {
        partition: extent.partition,
        invoices,
        unfinished: !finished,
        records,
        invalid,
    })
}

/// What a replay of several partitions found.
#[derive(Debug, Clone, Default)]
pub struct Recomputed {
    /// The period's final invoices, by org.
    pub invoices: BTreeMap<String, InvoiceV1>,
    /// Partitions whose log ended before the period was final.
    pub unfinished: Vec<i32>,
    pub records: u64,
    pub invalid: u64,
}

/// Replays `partitions` for `period` on `threads` threads, each with its own consumer.
pub fn recompute(
    brokers: &str,
    config: &FoldConfig,
    period: Period,
    partitions: &[i32],
    threads: usize,
    progress: &Arc<Progress>,
) -> anyhow::Result<Recomputed> {
    let probe = source::consumer(brokers)?;
    let extents: Vec<Extent> = partitions
        .iter()
        .map(|&p| source::extent(&probe, p, trace_start(period)))
        .collect::<anyhow::Result<_>>()?;
    drop(probe);
    for extent in &extents {
        progress.expect(extent.records());
    }
    // Largest first, so the threads finish together.
    let mut queue = extents;
    queue.sort_by_key(|e| std::cmp::Reverse(e.records()));
    let queue = Mutex::new(queue);
    let results: Mutex<Vec<PartitionResult>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    let consumer = source::consumer(brokers)?;
                    loop {
                        let Some(extent) = queue.lock().expect("queue lock").pop() else {
                            return Ok(());
                        };
                        let result =
                            replay_partition(&consumer, config, period, &extent, progress)?;
                        results.lock().expect("results lock").push(result);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().map_err(|_| anyhow::anyhow!("a replay thread panicked"))??;
        }
        Ok(())
    })?;
    let mut out = Recomputed::default();
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|r| r.partition);
    for r in results {
        out.records += r.records;
        out.invalid += r.invalid;
        if r.unfinished {
            out.unfinished.push(r.partition);
        }
        out.invoices.extend(r.invoices);
    }
    Ok(out)
}
