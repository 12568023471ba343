//! Every metric ingest exports, declared once. Labels come from closed sets.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, HistogramVec,
    IntCounter, IntCounterVec,
};

/// Events by outcome: `accepted`, or the rejection code. A span from `/v1/traces` that maps to an
/// operation is an event like any other.
pub static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_ingest_events_total",
        "Events received, by outcome (accepted or the rejection code).",
        &["outcome"]
    )
    .expect("metric registers")
});

/// OTLP spans that map to no operation Tally meters: not events, not errors.
pub static UNMAPPED_SPANS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_ingest_unmapped_spans_total",
        "OTLP spans not metered because neither tally.operation nor gen_ai.operation.name maps them."
    )
    .expect("metric registers")
});

/// Requests by path (`/v1/events`, `/v1/traces`) and HTTP status.
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_ingest_requests_total",
        "Requests to /v1/events and /v1/traces, by path and HTTP status.",
        &["path", "status"]
    )
    .expect("metric registers")
});

pub static REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "tally_ingest_request_duration_seconds",
        "Time from reading a request to answering it, Kafka acknowledgement included, by path.",
        &["path"],
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
