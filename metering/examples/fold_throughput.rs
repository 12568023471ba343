//! How fast the pure fold applies trace events: 2,000,000 billable events over 500 orgs, one
//! thread, no I/O. `cargo run --release -p tally-metering --example fold_throughput`
//! (BENCHMARKS.md has the figure).

use chrono::{DateTime, Duration, Utc};
use tally_metering::{Fold, FoldConfig};
use tally_schemas::{Operation, Status, TraceCompletedRecordV1};
fn main() {
    let base: DateTime<Utc> = "2026-11-10T00:00:00Z".parse().unwrap();
    let n = 2_000_000usize;
    let events: Vec<TraceCompletedRecordV1> = (0..n)
        .map(|i| TraceCompletedRecordV1 {
            event_id: format!("evt-{i:012}-abcdef"),
            org_id: format!("org-{}", i % 500),
            trace_id: "t".into(),
            span_id: "s".into(),
            parent_span_id: None,
            operation: Operation::LlmCall,
            status: Status::Success,
            started_at: base,
            ended_at: base + Duration::seconds((i % 86400) as i64),
            payload_bytes: 2000 + (i % 1000) as u64,
            attributes: None,
        })
        .collect();
    let mut fold = Fold::new(FoldConfig::default());
    let start = std::time::Instant::now();
    for (i, e) in events.iter().enumerate() {
        fold.apply_event(e, base + Duration::milliseconds(i as i64));
        if i % 100_000 == 0 {
            fold.drain_changes();
        }
    }
    let el = start.elapsed();
    println!("{} events in {:?}: {:.0} events/s", n, el, n as f64 / el.as_secs_f64());
}
