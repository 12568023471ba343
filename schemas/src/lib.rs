//! Tally's wire types: everything that crosses a process boundary, versioned.
//!
//! Where this sits: every stage depends on this crate and on nothing else for its formats. An
//! emitter's `TraceCompletedV1` enters at ingest; ingest writes a [`TraceEventRecordV1`] to
//! [`Topic::TraceEvents`]; the aggregator writes [`UsageUpdateV1`] to [`Topic::Usage`]; the
//! projector turns those into PostgreSQL rows.
//!
//! Layout:
//! - [`topics`]: every topic name and its settings, in one place.
//! - [`partition`]: which partition an org's records land in (Kafka's murmur2 partitioner).
//! - [`event`]: `TraceCompletedV1` as emitters send it, its validation, and the record ingest logs.
//! - [`usage`]: the usage updates the aggregator publishes.
//! - [`billing`]: tiers, invoices, subscription changes and notifications.
//! - [`json_schemas`]: the JSON Schemas published under `docs/schemas/`, generated from these
//!   types.
//!
//! Compatibility rule: a published `V1` type only ever gains optional fields; anything else is a
//! new version with a new type (and, for topics, a new topic name).

pub mod billing;
pub mod event;
pub mod partition;
pub mod rfc3339;
pub mod topics;
pub mod usage;

pub use billing::{
    BilledUsageV1, BillingEventRecordV1, InvoiceCorrectedV1, InvoiceFinalizedV1, InvoiceStatusV1,
    InvoiceV1, LineItemV1, LineKind, Metric, NotificationV1, SubscriptionChangedV1,
    SubscriptionSource, ThresholdLevel, Tier, UsageThresholdCrossedV1,
};
pub use event::{
    FieldError, FieldErrorCode, Operation, Status, TraceCompletedRecordV1, TraceCompletedRef,
    TraceCompletedV1, TraceEventRecordRef, TraceEventRecordV1,
};
pub use partition::partition_for_key;
pub use topics::{namespace, namespaced, set_namespace, Topic};
pub use usage::{
    DailyUsageV1, LateEventV1, NotBilledV1, OperationUsageV1, PeriodStateV1, UsageTotalsV1,
    UsageUpdateV1,
};

/// The JSON Schemas that Tally publishes, by file name under `docs/schemas/`.
pub fn json_schemas() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "trace-completed.v1.json",
            serde_json::to_value(schemars::schema_for!(TraceCompletedV1)).expect("schema is json"),
        ),
        (
            "trace-event-record.v1.json",
            serde_json::to_value(schemars::schema_for!(TraceEventRecordV1))
                .expect("schema is json"),
        ),
        (
            "billing-event-record.v1.json",
            serde_json::to_value(schemars::schema_for!(BillingEventRecordV1))
                .expect("schema is json"),
        ),
        (
            "notification.v1.json",
            serde_json::to_value(schemars::schema_for!(NotificationV1)).expect("schema is json"),
        ),
        (
            "invoice.v1.json",
            serde_json::to_value(schemars::schema_for!(InvoiceV1)).expect("schema is json"),
        ),
        (
            "invoice-corrected.v1.json",
            serde_json::to_value(schemars::schema_for!(InvoiceCorrectedV1))
                .expect("schema is json"),
        ),
        (
            "usage-update.v1.json",
            serde_json::to_value(schemars::schema_for!(UsageUpdateV1)).expect("schema is json"),
        ),
    ]
}
