//! How fast replay's reader alone goes: every partition's records of a period, merged as replay
//! merges them, with no decoding and no fold. Compare with `replay verify` to see what the fold
//! costs. Settings as for `replay` (TALLY_KAFKA_BROKERS, TALLY_NAMESPACE); argument: the period.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let namespace = std::env::var("TALLY_NAMESPACE").unwrap_or_default();
    tally_schemas::set_namespace(&namespace).map_err(anyhow::Error::msg)?;
    let brokers = std::env::var("TALLY_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let period: tally_metering::Period =
        std::env::args().nth(1).unwrap_or_else(|| "2026-10".into()).parse()?;
    let threads: usize = std::env::var("THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let probe = tally_replay::source::consumer(&brokers)?;
    let n = tally_replay::source::partitions(&probe)?;
    let extents: Vec<_> = (0..n)
        .map(|p| {
            tally_replay::source::extent(&probe, p, tally_replay::recompute::trace_start(period))
        })
        .collect::<anyhow::Result<_>>()?;
    if std::env::var_os("PROBE").is_some() {
        let c = tally_replay::source::consumer(&brokers)?;
        for e in &extents {
            let t0 = Instant::now();
            let n = tally_replay::source::read_range(
                &c,
                tally_schemas::Topic::BillingEvents.name(),
                e.partition,
                0,
                e.billing_high,
                |_, _, _| true,
            )?;
            eprintln!("billing {}: {n} of {} in {:?}", e.partition, e.billing_high, t0.elapsed());
        }
    }
    let queue = std::sync::Mutex::new(extents);
    let total = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let consumer = tally_replay::source::consumer(&brokers).unwrap();
                while let Some(extent) = queue.lock().unwrap().pop() {
                    let mut b = 0u64;
                    let t0 = Instant::now();
                    let mut first = None;
                    let read = tally_replay::source::read_partition(&consumer, &extent, |r| {
                        b += r.payload.len() as u64;
                        if first.is_none() && r.log == tally_metering::Log::Trace {
                            first = Some(t0.elapsed());
                        }
                        true
                    })
                    .unwrap();
                    if std::env::var_os("VERBOSE").is_some() {
                        eprintln!(
                            "partition {}: {read} records in {:?}, first trace record after {:?}",
                            extent.partition,
                            t0.elapsed(),
                            first
                        );
                    }
                    total.fetch_add(read, Ordering::Relaxed);
                    bytes.fetch_add(b, Ordering::Relaxed);
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let total = total.load(Ordering::Relaxed);
    println!(
        "read {total} records ({} MB) in {secs:.2} s: {:.0} records/s",
        bytes.load(Ordering::Relaxed) / 1_000_000,
        total as f64 / secs
    );
    Ok(())
}
