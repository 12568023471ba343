//! Every metric the billing reporter exports, declared once. Labels come from closed sets.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter_vec, register_int_gauge, Histogram, IntCounterVec,
    IntGauge,
};

/// Meter events by outcome: `accepted`, `duplicate` (Stripe already had it: a resend after a
/// crash or a lost answer), `rejected` (a final refusal, recorded), `unanswered` (retries ran
/// out; resent next cycle), `too_old` (the period is outside Stripe's 35 days, recorded).
pub static METER_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_billing_reporter_meter_events_total",
        "Meter events sent to Stripe, by outcome.",
        &["outcome"]
    )
    .expect("metric registers")
});

/// Units Stripe accepted, by metric (`traces`, `payload_bytes`).
pub static REPORTED_UNITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_billing_reporter_reported_units_total",
        "Usage units Stripe accepted, by metric.",
        &["metric"]
    )
    .expect("metric registers")
});

/// Cycles by result: `ok`, `error`, `standby` (another reporter holds the lock).
pub static CYCLES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_billing_reporter_cycles_total",
        "Reporting cycles, by result.",
        &["result"]
    )
    .expect("metric registers")
});

pub static CYCLE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_billing_reporter_cycle_duration_seconds",
        "Time to run one reporting cycle.",
        vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0]
    )
    .expect("metric registers")
});

/// Ledger rows waiting for an operator after a final refusal (`billing-reporter status`).
pub static FAILED_ROWS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_billing_reporter_failed_rows",
        "Ledger rows refused for good, waiting for retry-failed."
    )
    .expect("metric registers")
});

/// Ledger rows whose last event's outcome is still unknown after the cycle.
pub static PENDING_ROWS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_billing_reporter_pending_rows",
        "Ledger rows with a meter event not yet confirmed by Stripe."
    )
    .expect("metric registers")
});

/// Ledger rows ahead of Tally's usage (usage corrected down after it was reported).
pub static AHEAD_ROWS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_billing_reporter_ahead_rows",
        "Ledger rows where Stripe has more than Tally's usage."
    )
    .expect("metric registers")
});

/// When the last cycle finished without error (unix seconds).
pub static LAST_SUCCESS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_billing_reporter_last_success_timestamp_seconds",
        "When the last reporting cycle succeeded."
    )
    .expect("metric registers")
});
