//! Usage updates: what the aggregator publishes to `tally.usage.v1`.
//!
//! Each update carries the *cumulative* usage of one (org, period) and a `version` that only
//! grows, so a consumer applies an update only when its version is newer than what it holds, and
//! re-deliveries or re-projections are harmless.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{InvoiceV1, Operation, Tier};

/// Billable usage of one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OperationUsageV1 {
    pub traces: u64,
    pub payload_bytes: u64,
}

/// Events that were delivered but not billed, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NotBilledV1 {
    /// Spans with a parent: only root traces are billed.
    pub child_span: u64,
    /// Root spans whose status was `error` or `cancelled`.
    pub not_success: u64,
    /// Re-deliveries of an event id already counted in this period.
    pub duplicate: u64,
    /// Events that arrived after their period closed.
    pub late: u64,
}

/// The usage of one org in one period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UsageTotalsV1 {
    /// Successful root traces.
    pub traces: u64,
    /// Gzip-compressed payload bytes of those traces.
    pub payload_bytes: u64,
    /// The same, split by operation (operations with no billable usage are absent).
    pub by_operation: BTreeMap<Operation, OperationUsageV1>,
    pub not_billed: NotBilledV1,
}

/// Billable usage of one UTC day and operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DailyUsageV1 {
    pub day: NaiveDate,
    pub operation: Operation,
    pub traces: u64,
    pub payload_bytes: u64,
}

/// An event that arrived after its period closed: not billed, kept visible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LateEventV1 {
    pub event_id: String,
    pub operation: crate::Operation,
    pub ended_at: DateTime<Utc>,
    /// When ingest accepted it (the record timestamp in the log).
    pub arrived_at: DateTime<Utc>,
    /// Whether it would have been billed had it been on time.
    pub billable: bool,
    pub payload_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PeriodStateV1 {
    /// Usage may still grow.
    Open,
    /// The period ended more than the grace ago (decided from the log): billed usage is final.
    Closed,
}

/// One record of `tally.usage.v1`, keyed by `org_id/period`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UsageUpdateV1 {
    pub org_id: String,
    /// `YYYY-MM`, the UTC calendar month.
    pub period: String,
    /// Grows with every change of this (org, period); consumers keep the highest.
    pub version: u64,
    pub state: PeriodStateV1,
    #[serde(flatten)]
    pub totals: UsageTotalsV1,
    /// Cumulative billable usage per UTC day and operation.
    pub daily: Vec<DailyUsageV1>,
    /// Late events recorded since the previous update of this (org, period). Consumers store them
    /// keyed by `event_id`, so a re-delivered update changes nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late_events: Vec<LateEventV1>,
    /// The log time (arrival timestamp) of the newest record that changed this usage.
    pub updated_at: DateTime<Utc>,
    /// The log time at which the period was seen closed, once it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
    /// The tier that prices this period: the one in effect now while the period runs, the one in
    /// effect at its end once it has ended.
    #[serde(default)]
    pub tier: Tier,
    /// The final invoice, in the one update that finalizes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice: Option<InvoiceV1>,
}

impl UsageUpdateV1 {
    /// The Kafka key of this update.
    pub fn key(&self) -> String {
        format!("{}/{}", self.org_id, self.period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_usage_update_round_trips() {
        let text = include_str!("../examples/usage-update.v1.json");
        let update: UsageUpdateV1 = serde_json::from_str(text).unwrap();
        let original: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_value(&update).unwrap(), original);
        assert_eq!(update.key(), "acme/2026-10");
    }
}
