//! The client's metrics, declared once, in the default Prometheus registry (a service that
//! exposes that registry shows them). Every client of a process adds to the same series.

use std::sync::LazyLock;

use prometheus::{register_int_counter, register_int_counter_vec, IntCounter, IntCounterVec};

use crate::Outcome;

static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_client_events_total",
        "Events by outcome: recorded, dropped (queue full or shutdown deadline), accepted, rejected.",
        &["outcome"]
    )
    .expect("metric registers")
});

static RETRIES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_client_retries_total",
        "Requests to ingest retried after a 5xx, a 429 or no answer."
    )
    .expect("metric registers")
});

pub(crate) fn count(outcome: Outcome, n: u64) {
    let label = match outcome {
        Outcome::Recorded => "recorded",
        Outcome::Dropped => "dropped",
        Outcome::Accepted => "accepted",
        Outcome::Rejected => "rejected",
        Outcome::Retried => return RETRIES.inc_by(n),
    };
    EVENTS.with_label_values(&[label]).inc_by(n);
}
