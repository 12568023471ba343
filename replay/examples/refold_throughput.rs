//! How fast the replay tool re-folds, without Kafka: records as ingest writes them (a month of
//! trace events for 1,000 orgs, 10% re-deliveries, 5% child spans), held in memory, then decoded
//! and folded by `tally_metering::apply_record`: one fold per partition (8, by murmur2 of the org),
//! partitions spread over `THREADS` threads (2), as `replay verify` does. Also reports one thread
//! alone, and decoding alone.
//!
//!     cargo run --release -p tally-replay --example refold_throughput [records]

use std::time::Instant;

use chrono::{TimeZone, Utc};
use tally_metering::{apply_record, Fold, FoldConfig, Log};
use tally_schemas::{
    partition_for_key, Operation, Status, TraceCompletedRecordV1, TraceEventRecordRef,
    TraceEventRecordV1,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    let start = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap();
    let span_ms = 31 * 24 * 3_600_000i64;
    let mut records: Vec<(i64, Vec<u8>)> = Vec::with_capacity(n as usize);
    for i in 0..n {
        // A re-delivery repeats an earlier record's event (deterministic, no RNG needed).
        let e = if i > 1_000 && i % 10 == 0 { i - 1 - (i * 7919) % 1_000 } else { i };
        let arrival = start + chrono::Duration::milliseconds(span_ms * i as i64 / n as i64);
        let ended_at = start + chrono::Duration::milliseconds(span_ms * e as i64 / n as i64);
        let record = TraceEventRecordV1::TraceCompleted(TraceCompletedRecordV1 {
            event_id: format!("evt-{e:010}"),
            org_id: format!("org{:05}", (e * 2_654_435_761) % 1_000),
            trace_id: format!("{:032x}", e * 0x9e37_79b9_7f4a_7c15),
            span_id: format!("{:016x}", e.wrapping_mul(31)),
            parent_span_id: (e % 20 == 0).then(|| "00f067aa0ba902b7".to_string()),
            operation: Operation::ALL[(e % 6) as usize],
            status: if e % 50 == 0 { Status::Error } else { Status::Success },
            started_at: ended_at - chrono::Duration::milliseconds(250),
            ended_at,
            payload_bytes: 200 + e % 200_000,
            attributes: None,
        });
        records.push((arrival.timestamp_millis(), serde_json::to_vec(&record).unwrap()));
    }
    // Decoding alone, one thread.
    let started = Instant::now();
    let mut decoded = 0u64;
    for (_, payload) in &records {
        decoded += TraceEventRecordV1::from_json_borrowed(payload).is_ok() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "decoded {decoded} records (one thread) in {secs:.2} s: {:.0} records/s",
        n as f64 / secs
    );

    // Partitioned as the log is.
    let mut partitions: Vec<Vec<(i64, Vec<u8>)>> = vec![Vec::new(); 8];
    for (ts, payload) in records {
        let org = match TraceEventRecordV1::from_json_borrowed(&payload).unwrap() {
            TraceEventRecordRef::TraceCompleted(e) => e.org_id.into_owned(),
            TraceEventRecordRef::Tick => unreachable!(),
        };
        partitions[partition_for_key(org.as_bytes(), 8) as usize].push((ts, payload));
    }
    let fold_partition = |records: &[(i64, Vec<u8>)]| {
        let mut fold = Fold::new(FoldConfig::default());
        for (i, (ts, payload)) in records.iter().enumerate() {
            apply_record(&mut fold, Log::Trace, Some(*ts), payload);
            if i % 65_536 == 0 {
                fold.drain_changes();
            }
        }
        fold.drain_changes();
    };
    let started = Instant::now();
    fold_partition(&partitions[0]);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "re-folded partition 0, {} records (decode + fold, one thread) in {secs:.2} s: {:.0} records/s",
        partitions[0].len(),
        partitions[0].len() as f64 / secs
    );
    let threads: usize = std::env::var("THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let queue = std::sync::Mutex::new((0..partitions.len()).collect::<Vec<_>>());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let Some(p) = queue.lock().unwrap().pop() else { return };
                fold_partition(&partitions[p]);
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    println!("re-folded {n} records in 8 partitions on {threads} threads in {secs:.2} s: {:.0} records/s", n as f64 / secs);
}
