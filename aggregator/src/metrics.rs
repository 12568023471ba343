//! Every metric the aggregator exports, declared once. Labels come from closed sets.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
};

/// Applied events by outcome (`billed`, `child_span`, `not_success`, `duplicate`, `late`).
/// Counted when the transaction that applied them commits.
pub static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_aggregator_events_total",
        "Trace events applied and committed, by outcome.",
        &["outcome"]
    )
    .expect("metric registers")
});

pub static TICKS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("tally_aggregator_ticks_total", "Tick records applied and committed.")
        .expect("metric registers")
});

/// Records that could not be decoded: kept in the log, skipped by the fold, counted here.
pub static INVALID_RECORDS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_aggregator_invalid_records_total",
        "Input records that could not be decoded and were skipped."
    )
    .expect("metric registers")
});

pub static TRANSACTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_aggregator_transactions_total",
        "Transactions, by result (committed, aborted).",
        &["result"]
    )
    .expect("metric registers")
});

pub static BATCH_RECORDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_aggregator_batch_records",
        "Input records per committed transaction.",
        vec![1.0, 10.0, 100.0, 1000.0, 5000.0, 10000.0, 20000.0, 50000.0]
    )
    .expect("metric registers")
});

pub static STATE_LOADS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_aggregator_state_loads_total",
        "Partition states restored from the changelog."
    )
    .expect("metric registers")
});

pub static FINGERPRINTS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_aggregator_dedup_fingerprints",
        "Event-id fingerprints held in memory for deduplication (16 bytes each)."
    )
    .expect("metric registers")
});

/// Time spent committing a transaction, by step (`produce`: handing the outputs to the producer;
/// `offsets`: `send_offsets_to_transaction`; `deliveries`: waiting for the outputs'
/// acknowledgements; `commit`: `commit_transaction`). While it runs, the aggregator folds nothing.
pub static COMMIT_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "tally_aggregator_commit_duration_seconds",
        "Time to commit one transaction, by step (produce, offsets, deliveries, commit).",
        &["step"],
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]
    )
    .expect("metric registers")
});

/// Time from a batch's first record to its commit starting (folding and producing).
pub static BATCH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_aggregator_batch_duration_seconds",
        "Time to read, fold and produce one batch, before its commit.",
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]
    )
    .expect("metric registers")
});

/// Records of `tally.billing-events.v1` applied and committed, by type
/// (`subscription_changed`, `tick`).
pub static BILLING_RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_aggregator_billing_records_total",
        "Billing-log records applied and committed, by type.",
        &["type"]
    )
    .expect("metric registers")
});

/// Notifications published, by type (`usage_threshold_crossed`, `invoice_finalized`).
pub static NOTIFICATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_aggregator_notifications_total",
        "Notifications published to tally.notifications.v1 in committed transactions, by type.",
        &["type"]
    )
    .expect("metric registers")
});

/// Partitions assigned for one input log without the same partition of the other (should be 0).
pub static UNCOPARTITIONED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_aggregator_uncopartitioned_partitions",
        "Partitions assigned for the trace log or the billing log but not both (should be 0)."
    )
    .expect("metric registers")
});

/// Kafka clients replaced after a fatal error, by client (`producer`: fenced, failed for good, or
/// could not abort; `consumer`: a fatal consumer error; `changelog_reader`: likewise).
pub static CLIENT_REBUILDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_aggregator_client_rebuilds_total",
        "Kafka clients replaced after a fatal error, by client (producer, consumer, changelog_reader).",
        &["client"]
    )
    .expect("metric registers")
});
