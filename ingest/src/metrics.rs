//! Every metric ingest exports, declared once. Labels come from closed sets.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, Histogram, IntCounter,
    IntCounterVec,
};

/// Events by outcome: `accepted`, or the rejection code.
pub static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_ingest_events_total",
        "Events received, by outcome (accepted or the rejection code).",
        &["outcome"]
    )
    .expect("metric registers")
});

/// Requests by HTTP status.
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_ingest_requests_total",
        "Requests to /v1/events, by HTTP status.",
        &["status"]
    )
    .expect("metric registers")
});

pub static REQUEST_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_ingest_request_duration_seconds",
        "Time from reading a request to answering it, Kafka acknowledgement included.",
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]
    )
    .expect("metric registers")
});

pub static PAYLOAD_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_ingest_payload_bytes_total",
        "Metered (gzip-compressed) payload bytes of accepted events."
    )
    .expect("metric registers")
});

pub static TICKS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("tally_ingest_ticks_total", "Tick records written to the log.")
        .expect("metric registers")
});

/// Producers replaced after a fatal error (librdkafka can no longer keep the idempotence
/// guarantees of the one in use).
pub static PRODUCER_REBUILDS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_ingest_producer_rebuilds_total",
        "Kafka producers replaced after a fatal error."
    )
    .expect("metric registers")
});
