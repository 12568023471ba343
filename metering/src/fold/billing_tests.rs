//! The fold's billing laws: the tier at a period's end prices it, each invoice is finalized once
//! and only from what the logs say, each threshold is notified once.

use super::*;
use chrono::{DateTime, Duration, Utc};
use tally_schemas::{
    InvoiceV1, Metric, NotificationV1, Operation, SubscriptionChangedV1, ThresholdLevel, Tier,
    TraceCompletedRecordV1,
};

use super::thresholds::threshold_usage;
use crate::decision::Decision;
use proptest::prelude::*;
use tally_pricing::levels_reached;
use tally_schemas::{InvoiceStatusV1, Status, SubscriptionSource};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn event(
    id: &str,
    org: &str,
    ended_at: DateTime<Utc>,
    payload_bytes: u64,
    operation: Operation,
) -> TraceCompletedRecordV1 {
    TraceCompletedRecordV1 {
        event_id: id.into(),
        org_id: org.into(),
        trace_id: "t".into(),
        span_id: "s".into(),
        parent_span_id: None,
        operation,
        status: Status::Success,
        started_at: ended_at,
        ended_at,
        payload_bytes,
        attributes: None,
    }
}

fn change(org: &str, tier: Tier) -> SubscriptionChangedV1 {
    SubscriptionChangedV1 {
        change_id: format!("{org}-{tier}"),
        org_id: org.into(),
        tier,
        source: SubscriptionSource::AdminApi,
        requested_at: at("2026-01-01T00:00:00Z"),
        stripe_event_id: None,
    }
}

fn invoices(changes: &[PeriodChange]) -> Vec<InvoiceV1> {
    changes.iter().filter_map(|c| c.update.as_ref()?.invoice.clone()).collect()
}

fn notifications(changes: &[PeriodChange]) -> Vec<NotificationV1> {
    changes.iter().flat_map(|c| c.notifications.clone()).collect()
}

#[test]
fn the_tier_at_the_end_prices_the_period_and_the_invoice_waits_for_the_billing_log() {
    let mut fold = Fold::new(FoldConfig::default());
    let nov: Period = "2026-11".parse().unwrap();
    for i in 0..101_500u32 {
        fold.apply_event(
            &event(&format!("e{i}"), "acme", at("2026-11-10T00:00:00Z"), 10, Operation::LlmCall),
            at("2026-11-10T00:00:01Z"),
        );
    }
    assert_eq!(fold.get("acme", nov).unwrap().tier, Tier::Starter);
    fold.apply_subscription(&change("acme", Tier::Growth), at("2026-11-20T00:00:00Z"));
    assert_eq!(
        fold.get("acme", nov).unwrap().tier,
        Tier::Growth,
        "an open period follows the tier now"
    );
    let changes = fold.drain_changes();
    assert_eq!(changes.last().unwrap().update.as_ref().unwrap().tier, Tier::Growth);
    // Recorded after November ended: it prices December, not November.
    fold.apply_subscription(&change("acme", Tier::Business), at("2026-12-01T00:30:00Z"));
    assert_eq!(fold.get("acme", nov).unwrap().tier, Tier::Growth);
    // December exists for the subscribed org, on the new tier, with no usage yet.
    assert_eq!(fold.get("acme", "2026-12".parse().unwrap()).unwrap().tier, Tier::Business);

    // The trace log closes November (end + 48 h), but a billing log that has not passed its end
    // could still hold a change: the invoice waits.
    let mut fold2 = Fold::new(FoldConfig::default());
    fold2.apply_event(
        &event("x", "acme", at("2026-11-10T00:00:00Z"), 10, Operation::LlmCall),
        at("2026-11-10T00:00:01Z"),
    );
    fold2.apply_billing_tick(at("2026-11-29T00:00:00Z"));
    fold2.apply_tick(at("2026-12-03T00:00:00Z"));
    let snap = fold2.get("acme", nov).unwrap();
    assert!(snap.closed_at.is_some() && !snap.finalized);
    assert!(invoices(&fold2.drain_changes()).is_empty());
    // A change recorded (late) in the billing log before November's end still counts.
    fold2.apply_subscription(&change("acme", Tier::Enterprise), at("2026-11-30T12:00:00Z"));
    fold2.apply_billing_tick(at("2026-12-01T00:00:00Z"));
    let issued = invoices(&fold2.drain_changes());
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].tier, Tier::Enterprise);
    assert_eq!(issued[0].status, InvoiceStatusV1::Final);
    assert_eq!(issued[0].finalized_at, Some(at("2026-12-03T00:00:00Z")));
    assert_eq!(issued[0].total_cents, 300_000);

    // Back to the first fold: close and finalize.
    fold.apply_tick(at("2026-12-03T00:00:00Z"));
    let changes = fold.drain_changes();
    let issued = invoices(&changes);
    assert_eq!(issued.len(), 1, "{issued:?}");
    let invoice = &issued[0];
    assert_eq!(
        (invoice.org_id.as_str(), invoice.period.as_str(), invoice.tier),
        ("acme", "2026-11", Tier::Growth)
    );
    assert_eq!(invoice.usage.traces, 101_500);
    assert_eq!(invoice.total_cents, 50_000, "101,500 traces are within growth's 250,000");
    let finalized: Vec<_> = notifications(&changes)
        .into_iter()
        .filter(|n| matches!(n, NotificationV1::InvoiceFinalized(_)))
        .collect();
    assert_eq!(finalized.len(), 1);
    // Nothing changes a final invoice: later changes, late events, more ticks.
    fold.apply_subscription(&change("acme", Tier::Starter), at("2026-12-04T00:00:00Z"));
    fold.apply_event(
        &event("late", "acme", at("2026-11-30T00:00:00Z"), 10, Operation::LlmCall),
        at("2026-12-04T00:00:00Z"),
    );
    fold.apply_tick(at("2026-12-04T00:00:01Z"));
    fold.apply_billing_tick(at("2026-12-04T00:00:01Z"));
    let changes = fold.drain_changes();
    assert!(invoices(&changes).is_empty());
    assert_eq!(fold.get("acme", nov).unwrap().tier, Tier::Growth);
}

#[test]
fn each_threshold_is_notified_once() {
    const GB: u64 = 1_000_000_000;
    let mut fold = Fold::new(FoldConfig::default());
    let t = at("2026-11-10T00:00:00Z");
    let mut crossings = Vec::new();
    for i in 0..12 {
        let e = event(&format!("e{i}"), "acme", t, GB, Operation::Embedding);
        fold.apply_event(&e, t + Duration::seconds(i));
        fold.apply_event(&e, t + Duration::seconds(i)); // a re-delivery changes nothing
        for n in notifications(&fold.drain_changes()) {
            let NotificationV1::UsageThresholdCrossed(c) = n else { panic!("no invoice yet") };
            crossings.push((i, c.metric, c.level, c.used, c.percent_used));
        }
    }
    // Starter includes 10 GB: the 9th GB (event 8) reaches 90%, the 10th (event 9) 100%.
    assert_eq!(
        crossings,
        [
            (8, Metric::PayloadBytes, ThresholdLevel::Approaching, 9 * GB, "90.00".to_string()),
            (9, Metric::PayloadBytes, ThresholdLevel::Exceeded, 10 * GB, "100.00".to_string()),
        ]
    );
    // A bigger tier lowers the percentage; crossing 90% of it again is not a new notification.
    fold.apply_subscription(&change("acme", Tier::Growth), at("2026-11-11T00:00:00Z"));
    for i in 12..24 {
        fold.apply_event(
            &event(&format!("e{i}"), "acme", t, GB, Operation::Embedding),
            at("2026-11-11T00:00:01Z"),
        );
    }
    assert!(notifications(&fold.drain_changes()).is_empty());
    // Jumping past both thresholds in one record notifies both, lowest first.
    let big = event("big", "globex", t, 30 * GB, Operation::Embedding);
    fold.apply_event(&big, at("2026-11-11T00:00:02Z"));
    let levels: Vec<_> = notifications(&fold.drain_changes())
        .into_iter()
        .map(|n| match n {
            NotificationV1::UsageThresholdCrossed(c) => (c.org_id, c.level),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        levels,
        [
            ("globex".into(), ThresholdLevel::Approaching),
            ("globex".into(), ThresholdLevel::Exceeded)
        ]
    );
}

/// One record of either log, with its log time.
#[derive(Debug, Clone)]
enum Rec {
    Trace(TraceCompletedRecordV1, DateTime<Utc>),
    TraceTick(DateTime<Utc>),
    Sub(SubscriptionChangedV1, DateTime<Utc>),
    BillingTick(DateTime<Utc>),
}

fn apply(fold: &mut Fold, rec: &Rec) {
    match rec {
        Rec::Trace(e, t) => {
            fold.apply_event(e, *t);
        }
        Rec::TraceTick(t) => fold.apply_tick(*t),
        Rec::Sub(c, t) => fold.apply_subscription(c, *t),
        Rec::BillingTick(t) => fold.apply_billing_tick(*t),
    }
}

fn gen_logs() -> impl Strategy<Value = (Vec<Rec>, Vec<Rec>)> {
    let base = at("2026-10-20T00:00:00Z");
    let trace = prop::collection::vec(
        (0u32..6, 0i64..3_600 * 24 * 45, 0u8..3, 1u64..3_000_000_000, 0u8..4),
        0..120,
    );
    // The billing log runs on for months past the trace log, as when an aggregator catches up
    // and reads the small billing log far ahead.
    let billing =
        prop::collection::vec((0u32..6, 0i64..3_600 * 24 * 160, 0usize..4, any::<bool>()), 0..25);
    (trace, billing).prop_map(move |(trace, billing)| {
        // Arrival times increase along each log, as in a partition written by synchronised clocks.
        let mut trace: Vec<_> = trace;
        trace.sort_by_key(|t| t.1);
        let mut trace_log: Vec<Rec> = trace
            .into_iter()
            .enumerate()
            .map(|(i, (org, secs, lag_days, bytes, op))| {
                let arrival = base + Duration::seconds(secs);
                let ended = arrival - Duration::days(lag_days as i64) - Duration::hours(1);
                let op = [
                    Operation::LlmCall,
                    Operation::ToolCall,
                    Operation::Retrieval,
                    Operation::Embedding,
                ][op as usize];
                // Every fifth event is a re-delivery of the one before.
                let id = if i % 5 == 4 { format!("e{}", i - 1) } else { format!("e{i}") };
                Rec::Trace(event(&id, &format!("org{org}"), ended, bytes, op), arrival)
            })
            .collect();
        // Past the close (end plus the grace) of every period an event can end in (October to
        // December), so that each is final.
        trace_log.push(Rec::TraceTick(base + Duration::days(80)));
        let mut billing: Vec<_> = billing;
        billing.sort_by_key(|b| b.1);
        let mut billing_log: Vec<Rec> = billing
            .into_iter()
            .map(|(org, secs, tier, tick)| {
                let t = base + Duration::seconds(secs);
                if tick {
                    Rec::BillingTick(t)
                } else {
                    Rec::Sub(change(&format!("org{org}"), Tier::ALL[tier]), t)
                }
            })
            .collect();
        billing_log.push(Rec::BillingTick(base + Duration::days(161)));
        (trace_log, billing_log)
    })
}

/// Applies both logs interleaved as `picks` says (true: the trace log's next record), draining
/// every seventh record; the final invoices issued, sorted.
fn run(trace: &[Rec], billing: &[Rec], picks: &[bool]) -> Vec<InvoiceV1> {
    run_with_restarts(trace, billing, picks, &[])
}

/// What the aggregator's changelog holds, kept from the drained changes as the changelog keeps it:
/// per (org, period) the snapshot and the fingerprints still needed, the tier histories and both
/// watermarks.
#[derive(Default)]
struct Persisted {
    periods: std::collections::BTreeMap<PeriodKey, (PeriodSnapshot, Vec<u128>)>,
    subscriptions: std::collections::BTreeMap<String, TierHistory>,
}

impl Persisted {
    fn drain(&mut self, fold: &mut Fold) -> Vec<InvoiceV1> {
        let changes = fold.drain_changes();
        for change in &changes {
            if change.purged {
                self.periods.remove(&change.key);
                continue;
            }
            let entry = self
                .periods
                .entry(change.key.clone())
                .or_insert_with(|| (change.snapshot.clone(), Vec::new()));
            entry.0 = change.snapshot.clone();
            if change.fingerprints_cleared {
                entry.1.clear();
            }
            entry.1.extend(&change.new_fingerprints);
        }
        self.subscriptions.extend(fold.drain_subscription_changes());
        invoices(&changes)
    }

    fn restore(&self, watermarks: Watermarks) -> Fold {
        Fold::restore_all(
            FoldConfig::default(),
            watermarks,
            self.subscriptions.clone(),
            self.periods.iter().map(|(k, (s, f))| (k.clone(), s.clone(), f.clone())),
        )
    }
}

/// As [`run`], also restarting from the persisted state wherever `restarts` says: what a crashed
/// and restarted aggregator would do.
fn run_with_restarts(
    trace: &[Rec],
    billing: &[Rec],
    picks: &[bool],
    restarts: &[bool],
) -> Vec<InvoiceV1> {
    let mut fold = Fold::new(FoldConfig::default());
    let mut persisted = Persisted::default();
    let (mut i, mut j) = (0, 0);
    let mut issued = Vec::new();
    let mut k = 0;
    while i < trace.len() || j < billing.len() {
        let take_trace =
            j == billing.len() || (i < trace.len() && picks.get(k).copied().unwrap_or(true));
        if take_trace {
            apply(&mut fold, &trace[i]);
            i += 1;
        } else {
            apply(&mut fold, &billing[j]);
            j += 1;
        }
        k += 1;
        if restarts.get(k - 1).copied().unwrap_or(false) {
            issued.extend(persisted.drain(&mut fold));
            fold = persisted.restore(fold.watermarks());
        } else if k % 7 == 0 {
            issued.extend(persisted.drain(&mut fold));
        }
    }
    issued.extend(persisted.drain(&mut fold));
    issued.sort_by(|a, b| (&a.org_id, &a.period).cmp(&(&b.org_id, &b.period)));
    issued
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// However the records of the two logs interleave on the way in, the final invoices are the
    /// same, and there is at most one per (org, period).
    #[test]
    fn final_invoices_do_not_depend_on_interleaving((trace, billing) in gen_logs(), picks_a in prop::collection::vec(any::<bool>(), 0..200), picks_b in prop::collection::vec(any::<bool>(), 0..200)) {
        let all_trace_first = run(&trace, &billing, &[true; 0]);
        let all_billing_first = run(&trace, &billing, &vec![false; trace.len() + billing.len()]);
        let a = run(&trace, &billing, &picks_a);
        let b = run(&trace, &billing, &picks_b);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(&a, &all_trace_first);
        prop_assert_eq!(&a, &all_billing_first);
        if trace.len() > 1 {
            prop_assert!(!a.is_empty(), "every period with events is invoiced");
        }
        let mut keys: Vec<_> = a.iter().map(|i| (i.org_id.clone(), i.period.clone())).collect();
        keys.dedup();
        prop_assert_eq!(keys.len(), a.len());
    }

    /// Restarting from the persisted state (tier histories, both watermarks, snapshots and
    /// fingerprints) at any points gives the same final invoices as never restarting. (Dropping
    /// the tier histories from the restored state makes it fail at once.)
    #[test]
    fn final_invoices_survive_restarts_from_the_persisted_state((trace, billing) in gen_logs(), picks in prop::collection::vec(any::<bool>(), 0..200), restarts in prop::collection::vec(prop::bool::weighted(0.1), 0..200)) {
        let straight = run(&trace, &billing, &picks);
        let restarted = run_with_restarts(&trace, &billing, &picks, &restarts);
        prop_assert_eq!(straight, restarted);
    }

    /// Splitting the same usage across operations changes nothing on the invoice.
    #[test]
    fn splitting_usage_across_operations_does_not_change_the_invoice(sizes in prop::collection::vec((1u64..5_000_000_000, 0u8..4), 1..60)) {
        let finalize = |spread: bool| {
            let mut fold = Fold::new(FoldConfig::default());
            for (i, (bytes, op)) in sizes.iter().enumerate() {
                let op = if spread { [Operation::LlmCall, Operation::ToolCall, Operation::Retrieval, Operation::Embedding][*op as usize] } else { Operation::LlmCall };
                fold.apply_event(&event(&format!("e{i}"), "acme", at("2026-11-05T00:00:00Z"), *bytes, op), at("2026-11-05T00:00:01Z"));
            }
            fold.apply_billing_tick(at("2026-12-01T00:00:00Z"));
            fold.apply_tick(at("2026-12-03T00:00:00Z"));
            invoices(&fold.drain_changes())
        };
        let one = finalize(false);
        prop_assert_eq!(one.len(), 1);
        prop_assert_eq!(one, finalize(true));
    }
}

proptest! {
    /// The cached threshold positions agree with the pricing crate's definition of the levels.
    #[test]
    fn threshold_positions_agree_with_levels(included in prop_oneof![0u64..1_000, any::<u64>()], used in 0..u64::MAX) {
        for level in [ThresholdLevel::Approaching, ThresholdLevel::Exceeded] {
            let reached = levels_reached(used, included).contains(&level);
            let expected = used >= threshold_usage(level, included);
            prop_assert_eq!(reached, expected, "{:?} used {} included {}", level, used, included);
        }
    }
}

#[test]
fn late_events_alone_issue_no_invoice_unless_a_subscription_claims_the_period() {
    for subscribed in [false, true] {
        let mut fold = Fold::new(FoldConfig::default());
        fold.apply_billing_tick(at("2026-11-04T00:00:00Z"));
        fold.apply_tick(at("2026-11-04T00:00:00Z"));
        // October closed on Nov 3: an October event for an org never seen is late.
        let outcome = fold.apply_event(
            &event("l1", "acme", at("2026-10-31T10:00:00Z"), 10, Operation::LlmCall),
            at("2026-11-04T00:00:01Z"),
        );
        assert_eq!(outcome, Decision::Late);
        if subscribed {
            // Recorded (late) in the billing log before October ended: October is invoiced.
            let mut lagging = Fold::new(FoldConfig::default());
            lagging.apply_tick(at("2026-11-04T00:00:00Z"));
            lagging.apply_event(
                &event("l1", "acme", at("2026-10-31T10:00:00Z"), 10, Operation::LlmCall),
                at("2026-11-04T00:00:01Z"),
            );
            lagging.apply_subscription(&change("acme", Tier::Growth), at("2026-10-20T00:00:00Z"));
            lagging.apply_billing_tick(at("2026-11-04T00:00:00Z"));
            let issued = invoices(&lagging.drain_changes());
            assert_eq!(issued.len(), 1);
            assert_eq!(
                (issued[0].tier, issued[0].usage.traces, issued[0].total_cents),
                (Tier::Growth, 0, 50_000)
            );
        } else {
            fold.apply_billing_tick(at("2026-11-05T00:00:00Z"));
            fold.apply_tick(at("2026-11-05T00:00:00Z"));
            let changes = fold.drain_changes();
            assert!(invoices(&changes).is_empty(), "no usage, no subscription: no invoice");
            assert_eq!(
                fold.get("acme", "2026-10".parse().unwrap()).unwrap().totals.not_billed.late,
                1
            );
        }
    }
}

/// Catching up after an outage (or rebuilding from the log), the small billing log can be read
/// months ahead of the trace log. The tier history a period still needs must survive until the
/// trace log has closed that period, however far ahead the billing log is.
#[test]
fn a_billing_log_read_far_ahead_of_the_trace_log_keeps_the_tiers_open_periods_need() {
    let mut fold = Fold::new(FoldConfig::default());
    let jan: Period = "2026-01".parse().unwrap();
    fold.apply_event(
        &event("e1", "acme", at("2026-01-10T00:00:00Z"), 10, Operation::LlmCall),
        at("2026-01-10T00:00:01Z"),
    );
    fold.apply_subscription(&change("acme", Tier::Growth), at("2026-01-05T00:00:00Z"));
    fold.apply_subscription(&change("acme", Tier::Enterprise), at("2026-02-10T00:00:00Z"));
    // Four months ahead of the trace log.
    fold.apply_subscription(&change("acme", Tier::Business), at("2026-06-01T00:00:00Z"));
    fold.apply_billing_tick(at("2026-06-02T00:00:00Z"));
    // The trace log closes January: growth was in effect at its end.
    fold.apply_tick(at("2026-02-04T00:00:00Z"));
    let issued = invoices(&fold.drain_changes());
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!((issued[0].period.as_str(), issued[0].tier), ("2026-01", Tier::Growth));
    assert_eq!(fold.get("acme", jan).unwrap().tier, Tier::Growth);
}

#[test]
fn a_subscribed_org_is_invoiced_for_every_month_even_when_the_billing_log_lags_by_months() {
    let run = |trace_first: bool| {
        let mut fold = Fold::new(FoldConfig::default());
        let trace = |fold: &mut Fold| fold.apply_tick(at("2026-04-15T00:00:00Z"));
        fold.apply_billing_tick(at("2026-01-01T00:00:00Z"));
        fold.apply_subscription(&change("globex", Tier::Growth), at("2026-01-05T00:00:00Z"));
        if trace_first {
            // The trace log runs on to mid-April before the billing log's next records are read.
            trace(&mut fold);
        }
        for t in [
            "2026-02-01T00:00:01Z",
            "2026-03-01T00:00:01Z",
            "2026-04-01T00:00:01Z",
            "2026-04-15T00:00:00Z",
        ] {
            fold.apply_billing_tick(at(t));
        }
        if !trace_first {
            trace(&mut fold);
        }
        let issued = invoices(&fold.drain_changes());
        issued.iter().map(|i| (i.period.clone(), i.tier, i.total_cents)).collect::<Vec<_>>()
    };
    let expected: Vec<(String, Tier, i64)> = ["2026-01", "2026-02", "2026-03"]
        .iter()
        .map(|p| (p.to_string(), Tier::Growth, 50_000))
        .collect();
    assert_eq!(run(false), expected, "the logs read in time order");
    // February's end is more than 35 days behind the trace log when the billing log enters it:
    // it is invoiced all the same.
    assert_eq!(run(true), expected, "the billing log read months behind the trace log");
}
