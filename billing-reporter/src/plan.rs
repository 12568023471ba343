//! What to send Stripe next for one (org, period, metric): the pure decision, without I/O.
//!
//! The ledger remembers the cumulative total Stripe has accepted (`reported`) and, while a meter
//! event is on its way, the event itself (`pending`). Tally's usage only grows, so the next event
//! carries `usage − reported`. Its identifier and Idempotency-Key derive from (org, period,
//! metric, reported, new total): two different events never share one, and the same event
//! always has the same one, so a resend after a crash is refused by Stripe as a duplicate
//! instead of being counted again.

use sha2::{Digest, Sha256};
use tally_metering::period::Period;
use tally_schemas::Metric;

/// Stripe refuses meter events whose timestamp is more than 35 days old.
pub const STRIPE_MAX_EVENT_AGE_SECS: i64 = 35 * 24 * 3600;
/// Tally stays this far inside Stripe's window, so an event planned now is still acceptable when
/// it is resent after an outage of up to this long.
pub const AGE_MARGIN_SECS: i64 = 24 * 3600;
/// Stripe's longest identifier.
pub const MAX_IDENTIFIER_LEN: usize = 100;

/// A meter event written to the ledger before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The cumulative total Stripe will have accepted once this event counts.
    pub total: u64,
    pub identifier: String,
    /// Unix seconds, inside the period.
    pub timestamp: i64,
}

/// The ledger's row for one (org, period, metric).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerRow {
    pub reported: u64,
    pub pending: Option<Pending>,
    /// Stripe refused the last event for good; nothing is sent until an operator retries.
    pub failed: bool,
}

/// The next thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Stripe has everything, or the row waits for an operator.
    Nothing,
    /// Send (again) the event already in the ledger: its outcome is unknown.
    Resend { pending: Pending, value: u64 },
    /// Record this new event as pending, then send it.
    Send { pending: Pending, value: u64 },
    /// The period is too old for Stripe to accept an event in it: record a failure.
    TooOld { total: u64, value: u64, identifier: String },
    /// The ledger is ahead of Tally's usage (usage was corrected down): nothing can be sent; the
    /// drift is shown by `reconcile`.
    Ahead { usage: u64, reported: u64 },
}

/// The identifier (and Idempotency-Key) of the event that moves the reported total of (org,
/// period, metric) from `from` to `to`: readable when it fits Stripe's 100 characters, else the
/// same fields hashed.
pub fn identifier(org_id: &str, period: Period, metric: Metric, from: u64, to: u64) -> String {
    let readable = format!("tally:{org_id}:{period}:{}:{from}-{to}", metric.as_str());
    if readable.len() <= MAX_IDENTIFIER_LEN {
        return readable;
    }
    let digest = Sha256::digest(readable.as_bytes());
    format!("tally:{}", hex::encode(&digest[..24]))
}

/// The timestamp of an event for `period` sent at `now`: now while the period runs, the period's
/// last second once it has ended, `None` when Stripe would refuse it (the period is too old, or
/// has not begun).
pub fn event_timestamp(period: Period, now: i64) -> Option<i64> {
    let start = period.start().timestamp();
    let last = period.end().timestamp() - 1;
    if now < start {
        return None;
    }
    let at = now.min(last);
    (at >= now - STRIPE_MAX_EVENT_AGE_SECS + AGE_MARGIN_SECS).then_some(at)
}

/// Decides the next step for one row, given Tally's usage now.
pub fn next_step(
    org_id: &str,
    period: Period,
    metric: Metric,
    usage: u64,
    row: &LedgerRow,
    now: i64,
) -> Step {
    if row.failed {
        return Step::Nothing;
    }
    if let Some(pending) = &row.pending {
        // The event's parameters must not change: Stripe replays an Idempotency-Key only for the
        // same parameters.
        return Step::Resend { value: pending.total - row.reported, pending: pending.clone() };
    }
    if usage < row.reported {
        return Step::Ahead { usage, reported: row.reported };
    }
    if usage == row.reported {
        return Step::Nothing;
    }
    if now < period.start().timestamp() {
        // Usage of a period that has not begun on this clock (ingest accepts events a few
        // minutes ahead): it is sent once the period starts.
        return Step::Nothing;
    }
    let value = usage - row.reported;
    let identifier = identifier(org_id, period, metric, row.reported, usage);
    match event_timestamp(period, now) {
        Some(timestamp) => {
            Step::Send { pending: Pending { total: usage, identifier, timestamp }, value }
        }
        None => Step::TooOld { total: usage, value, identifier },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn nov() -> Period {
        "2026-11".parse().unwrap()
    }

    fn at(y: i32, m: u32, d: u32, h: u32) -> i64 {
        chrono::Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap().timestamp()
    }

    #[test]
    fn sends_the_difference_once_and_resends_the_same_event_until_accepted() {
        let now = at(2026, 11, 20, 12);
        let mut row = LedgerRow::default();
        let step = next_step("acme", nov(), Metric::Traces, 150, &row, now);
        let Step::Send { pending, value } = step else { panic!("{step:?}") };
        assert_eq!((value, pending.total, pending.timestamp), (150, 150, now));
        assert_eq!(pending.identifier, "tally:acme:2026-11:traces:0-150");

        // Sent, outcome unknown (crash, timeout): the next cycle sends exactly the same event,
        // even though usage has grown meanwhile.
        row.pending = Some(pending.clone());
        let again = next_step("acme", nov(), Metric::Traces, 175, &row, now + 3600);
        assert_eq!(again, Step::Resend { pending: pending.clone(), value: 150 });

        // Accepted: only the growth is sent, under a new identifier.
        row = LedgerRow { reported: 150, pending: None, failed: false };
        let Step::Send { pending, value } =
            next_step("acme", nov(), Metric::Traces, 175, &row, now + 3600)
        else {
            panic!()
        };
        assert_eq!((value, pending.identifier.as_str()), (25, "tally:acme:2026-11:traces:150-175"));
        assert_eq!(next_step("acme", nov(), Metric::Traces, 150, &row, now), Step::Nothing);
        assert_eq!(
            next_step("acme", nov(), Metric::Traces, 100, &row, now),
            Step::Ahead { usage: 100, reported: 150 }
        );
        let failed = LedgerRow { failed: true, ..row };
        assert_eq!(next_step("acme", nov(), Metric::Traces, 500, &failed, now), Step::Nothing);
    }

    #[test]
    fn timestamps_fall_inside_the_period_and_inside_stripes_window() {
        // While the period runs: now.
        assert_eq!(event_timestamp(nov(), at(2026, 11, 3, 0)), Some(at(2026, 11, 3, 0)));
        // After it ended (late usage, grace): its last second.
        assert_eq!(event_timestamp(nov(), at(2026, 12, 2, 0)), Some(at(2026, 12, 1, 0) - 1));
        // Up to 34 days after the end; Stripe's limit is 35.
        assert!(event_timestamp(nov(), at(2027, 1, 3, 0)).is_some());
        assert_eq!(event_timestamp(nov(), at(2027, 1, 5, 0)), None);
        // Not before the period starts.
        assert_eq!(event_timestamp(nov(), at(2026, 10, 31, 23)), None);
        let too_old = next_step(
            "acme",
            nov(),
            Metric::PayloadBytes,
            10,
            &LedgerRow::default(),
            at(2027, 2, 1, 0),
        );
        assert!(matches!(too_old, Step::TooOld { total: 10, value: 10, .. }), "{too_old:?}");
        // Usage stamped a little ahead of the reporter's clock waits for its period to begin.
        assert_eq!(
            next_step(
                "acme",
                nov(),
                Metric::Traces,
                10,
                &LedgerRow::default(),
                at(2026, 10, 31, 23)
            ),
            Step::Nothing
        );
    }

    #[test]
    fn long_org_ids_get_a_hashed_identifier_of_stripes_length() {
        let org = "o".repeat(64);
        let id = identifier(&org, nov(), Metric::PayloadBytes, u64::MAX - 1, u64::MAX);
        assert!(id.len() <= MAX_IDENTIFIER_LEN && id.starts_with("tally:"), "{id}");
        assert_ne!(id, identifier(&org, nov(), Metric::PayloadBytes, u64::MAX - 2, u64::MAX));
    }

    proptest! {
        /// Whatever the usage path and wherever the reporter crashes (after recording a pending
        /// event, or after Stripe accepted it but before the ledger says so), what Stripe
        /// counts is exactly the final usage, and no identifier is ever reused for a different
        /// event.
        #[test]
        fn stripe_counts_exactly_the_usage(
            growth in proptest::collection::vec(0u64..1_000, 1..30),
            crashes in proptest::collection::vec(0u8..3, 30),
        ) {
            let now = at(2026, 11, 15, 0);
            let mut row = LedgerRow::default();
            let mut stripe: std::collections::HashMap<String, (u64, i64)> = Default::default();
            let mut usage = 0;
            for (i, g) in growth.iter().enumerate() {
                usage += g;
                // Up to two cycles per usage step, each possibly cut short.
                for cycle in 0..2 {
                    let crash = if cycle == 0 { crashes[i] } else { 0 };
                    let (pending, value) = match next_step("acme", nov(), Metric::Traces, usage, &row, now) {
                        Step::Send { pending, value } => {
                            row.pending = Some(pending.clone());
                            (pending, value)
                        }
                        Step::Resend { pending, value } => (pending, value),
                        Step::Nothing => continue,
                        other => panic!("{other:?}"),
                    };
                    if crash == 1 {
                        continue; // died before sending
                    }
                    match stripe.get(&pending.identifier) {
                        Some(seen) => prop_assert_eq!(*seen, (value, pending.timestamp)),
                        None => { stripe.insert(pending.identifier.clone(), (value, pending.timestamp)); }
                    }
                    if crash == 2 {
                        continue; // Stripe accepted it; died before recording
                    }
                    row = LedgerRow { reported: pending.total, pending: None, failed: false };
                }
            }
            // A last clean cycle catches up.
            for _ in 0..2 {
                match next_step("acme", nov(), Metric::Traces, usage, &row, now) {
                    Step::Send { pending, value } | Step::Resend { pending, value } => {
                        stripe.entry(pending.identifier.clone()).or_insert((value, pending.timestamp));
                        row = LedgerRow { reported: pending.total, pending: None, failed: false };
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(stripe.values().map(|(v, _)| v).sum::<u64>(), usage);
            prop_assert_eq!(row.reported, usage);
        }
    }
}
