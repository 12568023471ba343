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

/// The series of each outcome, looked up once: `record` is on the caller's path, and a label
/// lookup takes a lock and hashes.
static BY_OUTCOME: LazyLock<[IntCounter; 4]> = LazyLock::new(|| {
    ["recorded", "dropped", "accepted", "rejected"].map(|label| EVENTS.with_label_values(&[label]))
});

pub(crate) fn count(outcome: Outcome, n: u64) {
    let index = match outcome {
        Outcome::Recorded => 0,
        Outcome::Dropped => 1,
        Outcome::Accepted => 2,
        Outcome::Rejected => 3,
        Outcome::Retried => return RETRIES.inc_by(n),
    };
    BY_OUTCOME[index].inc_by(n);
}
