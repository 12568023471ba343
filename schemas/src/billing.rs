//! Billing facts: tiers, invoices, the records of `tally.billing-events.v1` and the
//! notifications of `tally.notifications.v1`.
//!
//! Amounts are whole US cents (`i64`); unit prices are exact decimal strings of cents per unit
//! (`"0.2"` is two tenths of a cent), so nothing here is ever a float.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A subscription tier. An org that never subscribed is on `starter`.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    #[default]
    Starter,
    Growth,
    Business,
    Enterprise,
}

impl Tier {
    pub const ALL: [Tier; 4] = [Tier::Starter, Tier::Growth, Tier::Business, Tier::Enterprise];

    pub const fn as_str(self) -> &'static str {
        match self {
            Tier::Starter => "starter",
            Tier::Growth => "growth",
            Tier::Business => "business",
            Tier::Enterprise => "enterprise",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tier {0:?} (expected starter, growth, business or enterprise)")]
pub struct UnknownTier(pub String);

impl std::str::FromStr for Tier {
    type Err = UnknownTier;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| UnknownTier(s.to_string()))
    }
}

/// A billed quantity.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Successful root traces.
    Traces,
    /// Gzip-compressed payload bytes of those traces.
    PayloadBytes,
}

impl Metric {
    pub const ALL: [Metric; 2] = [Metric::Traces, Metric::PayloadBytes];

    pub const fn as_str(self) -> &'static str {
        match self {
            Metric::Traces => "traces",
            Metric::PayloadBytes => "payload_bytes",
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// The tier's monthly fee.
    Base,
    /// Usage covered by the tier, at no charge (shown so the invoice explains itself).
    Included,
    /// Usage beyond the included amount, in one graduated band.
    Overage,
}

/// One line of an invoice or estimate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LineItemV1 {
    pub kind: LineKind,
    /// `null` for the base fee.
    pub metric: Option<Metric>,
    pub quantity: u64,
    /// Cents per unit, as an exact decimal string (`"0.00000005"` is $0.50 per 10^9 bytes).
    pub unit_amount_decimal: String,
    /// `quantity × unit_amount_decimal`, rounded once to whole cents, half up.
    pub amount_cents: i64,
    /// The line in words, for people reading the invoice.
    pub description: String,
}

/// The usage an invoice prices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BilledUsageV1 {
    pub traces: u64,
    pub payload_bytes: u64,
}

impl BilledUsageV1 {
    pub fn get(&self, metric: Metric) -> u64 {
        match metric {
            Metric::Traces => self.traces,
            Metric::PayloadBytes => self.payload_bytes,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatusV1 {
    /// The period is open: the invoice follows usage.
    Draft,
    /// The period closed and the invoice was computed once from its final usage and tier.
    Final,
}

/// An invoice of one org for one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InvoiceV1 {
    pub org_id: String,
    /// `YYYY-MM`.
    pub period: String,
    pub tier: Tier,
    /// The version of the pricing file that priced it.
    pub pricing_version: String,
    pub currency: String,
    pub status: InvoiceStatusV1,
    pub usage: BilledUsageV1,
    pub lines: Vec<LineItemV1>,
    /// The sum of the lines' rounded amounts.
    pub total_cents: i64,
    /// The log time at which the period closed; `null` for a draft.
    pub finalized_at: Option<DateTime<Utc>>,
}

/// Who recorded a subscription change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionSource {
    /// `PUT /v1/orgs/{org_id}/subscription` with the admin token.
    AdminApi,
    /// A Stripe webhook.
    Stripe,
}

/// An org's tier changed. It takes effect at its log time (the record timestamp, or the
/// partition's newest billing log time if that is later), and the tier in effect at a period's
/// end prices that whole period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionChangedV1 {
    /// Unique per change, for tracing it through logs and notifiers.
    pub change_id: String,
    pub org_id: String,
    pub tier: Tier,
    pub source: SubscriptionSource,
    /// When the writer asked for the change (its own clock; informational only).
    #[serde(with = "crate::rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub requested_at: DateTime<Utc>,
    /// The Stripe event that caused it, when `source` is `stripe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_event_id: Option<String>,
}

/// One record of `tally.billing-events.v1`: keyed by `org_id` with the same partitioner and
/// partition count as `tally.trace-events.v1`, so partition `p` of both logs holds the same orgs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum BillingEventRecordV1 {
    SubscriptionChanged(SubscriptionChangedV1),
    /// Only a timestamp: billing log time advances in partitions with no subscription changes,
    /// so invoices of closed periods can be finalized.
    Tick,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdLevel {
    /// At least 90% and less than 100% of the included amount.
    Approaching,
    /// At least 100% of the included amount.
    Exceeded,
}

impl ThresholdLevel {
    pub const fn as_str(self) -> &'static str {
        match self {
            ThresholdLevel::Approaching => "approaching",
            ThresholdLevel::Exceeded => "exceeded",
        }
    }
}

/// Usage of a metric crossed a threshold of the tier's included amount (once per org, period,
/// metric and level).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UsageThresholdCrossedV1 {
    pub org_id: String,
    pub period: String,
    pub metric: Metric,
    pub level: ThresholdLevel,
    pub tier: Tier,
    pub used: u64,
    pub included: u64,
    /// `used / included` in percent, rounded down to two decimals, as a decimal string.
    pub percent_used: String,
    /// The log time of the record that crossed it.
    pub crossed_at: DateTime<Utc>,
}

/// A period's invoice was finalized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InvoiceFinalizedV1 {
    pub invoice: InvoiceV1,
}

/// One record of `tally.notifications.v1`, keyed by `org_id`, written by the aggregator in the
/// same transaction as the usage that caused it: each is published exactly once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum NotificationV1 {
    UsageThresholdCrossed(UsageThresholdCrossedV1),
    InvoiceFinalized(InvoiceFinalizedV1),
}

impl NotificationV1 {
    pub fn org_id(&self) -> &str {
        match self {
            NotificationV1::UsageThresholdCrossed(n) => &n.org_id,
            NotificationV1::InvoiceFinalized(n) => &n.invoice.org_id,
        }
    }
}

/// One record of `tally.corrections.v1`, keyed by `org_id`: the invoice of (org, period) as
/// recomputed from the event log, which replaces what was billed before. Written by
/// `replay correct`; the projector stores it in `invoice_corrections` (the original invoice is
/// never changed) and the billing reporter bills the corrected usage.
///
/// Targets are absolute (the whole corrected invoice, not a delta), so applying a correction
/// twice, or two equal corrections, changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceCorrectedV1 {
    /// Derived from what it corrects and what it sets: the same correction has the same id.
    pub correction_id: String,
    pub org_id: String,
    /// `YYYY-MM`.
    pub period: String,
    /// The invoice that was in effect before (the stored final invoice, or the latest correction).
    pub replaces: InvoiceV1,
    /// The invoice recomputed from the log, which is in effect from now on.
    pub invoice: InvoiceV1,
    /// Why: free text from the operator (a ticket, a dispute).
    pub reason: String,
    /// When the operator asked for it (the tool's clock; informational, decides nothing).
    pub requested_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: serde::de::DeserializeOwned + Serialize>(text: &str) -> T {
        let value: T = serde_json::from_str(text).unwrap();
        let original: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_value(&value).unwrap(), original);
        value
    }

    #[test]
    fn golden_billing_records_round_trip() {
        let change: BillingEventRecordV1 =
            round_trip(include_str!("../examples/billing-event.v1.subscription-changed.json"));
        assert!(
            matches!(change, BillingEventRecordV1::SubscriptionChanged(ref c) if c.tier == Tier::Growth)
        );
        let tick: BillingEventRecordV1 =
            round_trip(include_str!("../examples/billing-event.v1.tick.json"));
        assert_eq!(tick, BillingEventRecordV1::Tick);
    }

    #[test]
    fn golden_notifications_round_trip() {
        let n: NotificationV1 =
            round_trip(include_str!("../examples/notification.v1.threshold.json"));
        assert_eq!(n.org_id(), "acme");
        let n: NotificationV1 =
            round_trip(include_str!("../examples/notification.v1.invoice-finalized.json"));
        assert_eq!(n.org_id(), "acme");
    }

    #[test]
    fn golden_correction_round_trips() {
        let c: InvoiceCorrectedV1 =
            round_trip(include_str!("../examples/invoice-corrected.v1.json"));
        assert_eq!(c.org_id, "acme");
        assert_eq!(c.invoice.period, c.period);
    }

    #[test]
    fn tiers_parse_and_print() {
        for tier in Tier::ALL {
            assert_eq!(tier.as_str().parse::<Tier>().unwrap(), tier);
            assert_eq!(serde_json::to_value(tier).unwrap(), tier.as_str());
        }
        assert!("platinum".parse::<Tier>().is_err());
    }
}
