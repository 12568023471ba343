//! The fold's laws: order, batching, duplicates and restarts never change the totals.

use super::*;
use chrono::{DateTime, Duration, Utc};
use tally_schemas::{Operation, OperationUsageV1, TraceCompletedRecordV1};

use crate::decision::Decision;
use proptest::prelude::*;
use std::collections::HashSet;
use tally_schemas::Status;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn event(id: &str, org: &str, ended_at: &str) -> TraceCompletedRecordV1 {
    TraceCompletedRecordV1 {
        event_id: id.into(),
        org_id: org.into(),
        trace_id: "t".into(),
        span_id: "s".into(),
        parent_span_id: None,
        operation: Operation::LlmCall,
        status: Status::Success,
        started_at: at(ended_at),
        ended_at: at(ended_at),
        payload_bytes: 100,
        attributes: None,
    }
}

fn nov() -> Period {
    "2026-11".parse().unwrap()
}

#[test]
fn counts_each_reason_once() {
    let mut fold = Fold::new(FoldConfig::default());
    let arrival = at("2026-11-10T00:00:00Z");
    let root = event("e1", "acme", "2026-11-09T10:00:00Z");
    let mut child = event("e2", "acme", "2026-11-09T10:00:00Z");
    child.parent_span_id = Some("p".into());
    let mut failed = event("e3", "acme", "2026-11-09T10:00:00Z");
    failed.status = Status::Error;
    let mut tool = event("e4", "acme", "2026-11-09T23:00:00Z");
    tool.operation = Operation::ToolCall;
    tool.payload_bytes = 7;

    assert_eq!(fold.apply_event(&root, arrival), Decision::Billed);
    assert_eq!(fold.apply_event(&child, arrival), Decision::ChildSpan);
    assert_eq!(fold.apply_event(&failed, arrival), Decision::NotSuccess);
    assert_eq!(fold.apply_event(&root, arrival), Decision::Duplicate);
    assert_eq!(fold.apply_event(&tool, arrival), Decision::Billed);

    let snap = fold.get("acme", nov()).unwrap();
    assert_eq!(snap.totals.traces, 2);
    assert_eq!(snap.totals.payload_bytes, 107);
    assert_eq!(
        snap.totals.by_operation[&Operation::ToolCall],
        OperationUsageV1 { traces: 1, payload_bytes: 7 }
    );
    assert_eq!(snap.totals.not_billed.child_span, 1);
    assert_eq!(snap.totals.not_billed.not_success, 1);
    assert_eq!(snap.totals.not_billed.duplicate, 1);
    assert_eq!(snap.version, 5);

    let changes = fold.drain_changes();
    assert_eq!(changes.len(), 1);
    let update = changes[0].update.as_ref().unwrap();
    assert_eq!(update.period, "2026-11");
    assert_eq!(update.daily.len(), 2);
    assert_eq!(changes[0].new_fingerprints.len(), 4);
    assert!(fold.drain_changes().is_empty(), "a drain hands over each change once");
}

#[test]
fn periods_close_from_log_time_and_late_events_are_kept_visible() {
    let mut fold = Fold::new(FoldConfig::with_grace(Duration::hours(48)));
    let oct_event = event("o1", "acme", "2026-10-31T23:59:59Z");
    assert_eq!(fold.apply_event(&oct_event, at("2026-11-01T00:00:01Z")), Decision::Billed);
    fold.drain_changes();

    // Just before the close instant, still open.
    fold.apply_tick(at("2026-11-02T23:59:59.999Z"));
    assert!(fold.get("acme", "2026-10".parse().unwrap()).unwrap().closed_at.is_none());
    assert!(fold.drain_changes().is_empty());

    // A tick at the close instant closes it, without any event of acme.
    fold.apply_tick(at("2026-11-03T00:00:00Z"));
    let changes = fold.drain_changes();
    assert_eq!(changes.len(), 1);
    assert!(changes[0].fingerprints_cleared);
    let update = changes[0].update.as_ref().unwrap();
    assert_eq!(update.state, tally_schemas::PeriodStateV1::Closed);
    assert_eq!(update.totals.traces, 1);

    // A late event (even a re-delivery of a counted one) is counted as late, never billed.
    let late = event("o2", "acme", "2026-10-31T12:00:00Z");
    assert_eq!(fold.apply_event(&late, at("2026-11-04T00:00:00Z")), Decision::Late);
    assert_eq!(fold.apply_event(&late, at("2026-11-04T00:00:01Z")), Decision::Duplicate);
    assert_eq!(fold.apply_event(&oct_event, at("2026-11-04T00:00:02Z")), Decision::Late);
    let changes = fold.drain_changes();
    let update = changes[0].update.as_ref().unwrap();
    assert_eq!(update.totals.traces, 1);
    assert_eq!(update.totals.not_billed.late, 2);
    assert_eq!(update.late_events.len(), 2);
    assert!(update.late_events[0].billable);

    // A late event for a period Tally never saw is recorded too.
    let sept = event("s1", "globex", "2026-10-01T00:00:00Z");
    assert_eq!(fold.apply_event(&sept, at("2026-11-04T00:00:03Z")), Decision::Late);

    // 35 days after its end nothing can belong to October any more: its state is purged.
    fold.drain_changes();
    fold.apply_billing_tick(at("2026-12-06T00:00:00Z"));
    fold.apply_tick(at("2026-12-06T00:00:00Z"));
    let changes = fold.drain_changes();
    assert!(changes.iter().all(|c| c.purged), "{changes:?}");
    assert!(fold.get("acme", "2026-10".parse().unwrap()).is_none());
    assert!(fold.periods().is_empty());
}

#[test]
fn a_period_closes_only_once_even_when_purged_at_the_same_time() {
    let mut fold = Fold::new(FoldConfig::default());
    fold.apply_event(&event("a", "acme", "2026-10-15T00:00:00Z"), at("2026-10-16T00:00:00Z"));
    fold.drain_changes();
    fold.apply_billing_tick(at("2026-12-31T00:00:00Z"));
    fold.apply_tick(at("2027-01-01T00:00:00Z"));
    let changes = fold.drain_changes();
    assert_eq!(changes.len(), 1);
    assert!(changes[0].purged);
    let invoice =
        changes[0].update.as_ref().unwrap().invoice.as_ref().expect("finalized on the way out");
    assert_eq!(invoice.usage.traces, 1);
    assert_eq!(changes[0].update.as_ref().unwrap().state, tally_schemas::PeriodStateV1::Closed);
}

/// A period purged and then receiving an event gives the same state whether or not a drain (a
/// batch boundary) falls between the two.
#[test]
fn purge_then_event_does_not_depend_on_batch_boundaries() {
    let run = |drain_between: bool| {
        let mut fold = Fold::new(FoldConfig::default());
        fold.apply_event(&event("a", "acme", "2026-10-15T00:00:00Z"), at("2026-10-16T00:00:00Z"));
        let mut changes = fold.drain_changes();
        fold.apply_tick(at("2026-12-06T00:00:00Z"));
        if drain_between {
            changes.extend(fold.drain_changes());
        }
        // A record stamped a little earlier by another ingest clock, after the purge.
        assert_eq!(
            fold.apply_event(
                &event("b", "acme", "2026-10-31T00:00:00Z"),
                at("2026-12-05T23:59:00Z")
            ),
            Decision::Late
        );
        changes.extend(fold.drain_changes());
        let last = changes.last().unwrap().clone();
        (
            fold.periods().into_iter().map(|(k, s)| (k, s.clone())).collect::<Vec<_>>(),
            last.snapshot,
            changes.iter().filter(|c| c.purged).count(),
        )
    };
    assert_eq!(run(true), run(false));
}

/// One generated delivery: an event and whether the emitter sent it again.
#[derive(Debug, Clone)]
struct Gen {
    org: u8,
    root: bool,
    status: u8,
    op: usize,
    day: u32,
    payload: u64,
}

fn gen_event() -> impl Strategy<Value = Gen> {
    (0u8..4, any::<bool>(), 0u8..3, 0usize..6, 1u32..31, 0u64..5000).prop_map(
        |(org, root, status, op, day, payload)| Gen { org, root, status, op, day, payload },
    )
}

fn materialise(i: usize, g: &Gen) -> TraceCompletedRecordV1 {
    let ended = format!("2026-11-{:02}T12:00:00Z", g.day);
    let mut e = event(&format!("evt-{i}"), &format!("org{}", g.org), &ended);
    if !g.root {
        e.parent_span_id = Some("parent".into());
    }
    e.status = [Status::Success, Status::Error, Status::Cancelled][g.status as usize];
    e.operation = Operation::ALL[g.op];
    e.payload_bytes = g.payload;
    e
}

/// The expected totals, computed the obvious way from the unique events.
fn expected(events: &[TraceCompletedRecordV1]) -> BTreeMap<String, (u64, u64, u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64, u64, u64)> = BTreeMap::new();
    for e in events {
        let entry = out.entry(e.org_id.clone()).or_default();
        match (e.is_root(), e.status) {
            (true, Status::Success) => {
                entry.0 += 1;
                entry.1 += e.payload_bytes;
            }
            (false, _) => entry.2 += 1,
            _ => entry.3 += 1,
        }
    }
    out
}

fn observed(fold: &Fold) -> BTreeMap<String, (u64, u64, u64, u64)> {
    fold.periods()
        .into_iter()
        .map(|(k, s)| {
            let t = &s.totals;
            (
                k.org_id,
                (t.traces, t.payload_bytes, t.not_billed.child_span, t.not_billed.not_success),
            )
        })
        .collect()
}

/// Persists drained changes the way the aggregator's changelog does, and restores from them.
#[derive(Default)]
struct Store {
    snapshots: BTreeMap<PeriodKey, PeriodSnapshot>,
    fingerprints: BTreeMap<PeriodKey, Vec<u128>>,
    watermark: Option<DateTime<Utc>>,
}

impl Store {
    fn persist(&mut self, fold: &mut Fold) {
        for change in fold.drain_changes() {
            let fps = self.fingerprints.entry(change.key.clone()).or_default();
            if change.fingerprints_cleared {
                fps.clear();
            }
            fps.extend(change.new_fingerprints);
            self.snapshots.insert(change.key.clone(), change.snapshot);
            if change.purged {
                self.snapshots.remove(&change.key);
                self.fingerprints.remove(&change.key);
            }
        }
        self.watermark = fold.watermark();
    }

    fn restore(&self) -> Fold {
        Fold::restore(
            FoldConfig::default(),
            self.watermark,
            self.snapshots.iter().map(|(k, s)| {
                (k.clone(), s.clone(), self.fingerprints.get(k).cloned().unwrap_or_default())
            }),
        )
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any order, any batching, any re-deliveries and any number of crash-restores give the
    /// totals computed from the unique events.
    #[test]
    fn totals_are_independent_of_order_batching_duplicates_and_restarts(
        gens in prop::collection::vec(gen_event(), 1..200),
        redeliver in prop::collection::vec(any::<prop::sample::Index>(), 0..100),
        shuffle_seed in any::<u64>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        crash_at in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
    ) {
        let unique: Vec<_> = gens.iter().enumerate().map(|(i, g)| materialise(i, g)).collect();
        let mut deliveries = unique.clone();
        for idx in &redeliver {
            deliveries.push(unique[idx.index(unique.len())].clone());
        }
        // A deterministic shuffle from the seed (Fisher–Yates with an LCG).
        let mut state = shuffle_seed | 1;
        for i in (1..deliveries.len()).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            deliveries.swap(i, (state >> 33) as usize % (i + 1));
        }
        let cuts: HashSet<usize> = cuts.iter().map(|c| c.index(deliveries.len())).collect();
        let crashes: HashSet<usize> = crash_at.iter().map(|c| c.index(deliveries.len())).collect();

        let arrival = at("2026-11-30T00:00:00Z");
        let mut store = Store::default();
        let mut fold = Fold::new(FoldConfig::default());
        let mut duplicates = 0;
        for (i, e) in deliveries.iter().enumerate() {
            if cuts.contains(&i) {
                store.persist(&mut fold);
            }
            if crashes.contains(&i) {
                // Whatever was applied since the last persist is lost, as after a kill -9; the
                // caller (the aggregator) re-reads the log from the persisted offset.
                store.persist(&mut fold);
                fold = store.restore();
            }
            if fold.apply_event(e, arrival) == Decision::Duplicate {
                duplicates += 1;
            }
        }
        prop_assert_eq!(observed(&fold), expected(&unique));
        prop_assert_eq!(duplicates, redeliver.len() as u64);
    }

    /// Re-applying the records after the last persisted point to a restored fold ends in the
    /// same state as never crashing: what the aggregator relies on after a kill -9.
    #[test]
    fn restore_then_reapply_equals_no_crash(
        gens in prop::collection::vec(gen_event(), 1..100),
        persisted_upto in any::<prop::sample::Index>(),
        crash_upto in any::<prop::sample::Index>(),
    ) {
        let events: Vec<_> = gens.iter().enumerate().map(|(i, g)| materialise(i % 70, g)).collect();
        let p = persisted_upto.index(events.len());
        let c = p + crash_upto.index(events.len() - p);
        let arrival = at("2026-11-30T00:00:00Z");

        let mut clean = Fold::new(FoldConfig::default());
        for e in &events { clean.apply_event(e, arrival); }

        let mut crashed = Fold::new(FoldConfig::default());
        let mut store = Store::default();
        for e in &events[..p] { crashed.apply_event(e, arrival); }
        store.persist(&mut crashed);
        for e in &events[p..c] { crashed.apply_event(e, arrival); } // lost in the crash
        let mut restored = store.restore();
        for e in &events[p..] { restored.apply_event(e, arrival); }

        let a: Vec<_> = clean.periods().into_iter().map(|(k, s)| (k, s.clone())).collect();
        let b: Vec<_> = restored.periods().into_iter().map(|(k, s)| (k, s.clone())).collect();
        prop_assert_eq!(a, b);
    }
}
