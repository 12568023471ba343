//! Every metric the projector exports, declared once.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, Histogram, IntCounter,
    IntCounterVec,
};

/// Usage updates by result: `applied`, `stale` (an equal or newer version was already stored),
/// `skipped` (below the stored offset), `invalid`.
pub static UPDATES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_projector_updates_total",
        "Usage updates read, by result.",
        &["result"]
    )
    .expect("metric registers")
});

/// From an event's arrival at ingest to its usage being committed in PostgreSQL.
pub static FRESHNESS_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_projector_freshness_seconds",
        "Time from the newest event's arrival (log time) to its usage being committed in PostgreSQL.",
        vec![0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0]
    )
    .expect("metric registers")
});

pub static BATCH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_projector_batch_duration_seconds",
        "Time to write one batch to PostgreSQL.",
        vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]
    )
    .expect("metric registers")
});

/// Final invoices stored (each (org, period) counts once, however often its finalization is
/// re-delivered).
pub static INVOICES: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!("tally_projector_invoices_total", "Final invoices stored.")
        .expect("metric registers")
});

/// Invoice corrections stored (each once, however often it is re-delivered).
pub static CORRECTIONS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "tally_projector_corrections_total",
        "Invoice corrections stored."
    )
    .expect("metric registers")
});

/// Consumers replaced after a fatal consumer error.
pub static CLIENT_REBUILDS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_projector_client_rebuilds_total",
        "Kafka consumers replaced after a fatal error."
    )
    .expect("metric registers")
});
