//! What the fold holds per (org, period).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tally_schemas::{
    BilledUsageV1, InvoiceV1, LateEventV1, Metric, NotificationV1, Operation, OperationUsageV1,
    ThresholdLevel, Tier, UsageTotalsV1,
};

use crate::dedup::FingerprintSet;

/// The durable state of one (org, period), apart from its dedup fingerprints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodSnapshot {
    pub version: u64,
    pub totals: UsageTotalsV1,
    pub daily: BTreeMap<NaiveDate, BTreeMap<Operation, OperationUsageV1>>,
    pub updated_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// The tier that prices the period (see [`UsageUpdateV1::tier`]).
    #[serde(default)]
    pub tier: Tier,
    /// The thresholds already notified, so each is notified once.
    #[serde(default)]
    pub notified: Vec<(Metric, ThresholdLevel)>,
    /// The final invoice was issued (or, with `late_only`, none is due); nothing about the
    /// period changes any more.
    #[serde(default)]
    pub finalized: bool,
    /// Only late events ever reached this period: no usage, so no invoice unless a subscription
    /// claims it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late_only: bool,
}

impl PeriodSnapshot {
    pub(super) fn empty(updated_at: DateTime<Utc>, tier: Tier) -> Self {
        PeriodSnapshot {
            version: 0,
            totals: UsageTotalsV1::default(),
            daily: BTreeMap::new(),
            updated_at,
            closed_at: None,
            tier,
            notified: Vec::new(),
            finalized: false,
            late_only: false,
        }
    }

    /// The usage the invoice prices.
    pub fn billed(&self) -> BilledUsageV1 {
        BilledUsageV1 { traces: self.totals.traces, payload_bytes: self.totals.payload_bytes }
    }
}

#[derive(Debug)]
pub(super) struct PeriodState {
    pub(super) snapshot: PeriodSnapshot,
    /// Fingerprints of the event ids counted while open, or seen late once closed.
    pub(super) seen: FingerprintSet,
    pub(super) pending_fingerprints: Vec<u128>,
    pub(super) pending_late: Vec<LateEventV1>,
    pub(super) pending_notifications: Vec<NotificationV1>,
    pub(super) pending_invoice: Option<InvoiceV1>,
    /// Per metric (traces, payload bytes), the usage at which the next threshold falls; `None`
    /// when it must be recomputed (a new tier, a new notification).
    pub(super) next_thresholds: Option<[u64; 2]>,
    pub(super) fingerprints_cleared: bool,
    pub(super) dirty: bool,
    pub(super) purged: bool,
}

impl PeriodState {
    pub(super) fn new(snapshot: PeriodSnapshot, seen: FingerprintSet) -> Self {
        PeriodState {
            snapshot,
            seen,
            pending_fingerprints: Vec::new(),
            pending_late: Vec::new(),
            pending_notifications: Vec::new(),
            pending_invoice: None,
            next_thresholds: None,
            fingerprints_cleared: false,
            dirty: false,
            purged: false,
        }
    }

    /// Records that the period changed at `at`: a new version, and `updated_at` moves on (it
    /// never goes back). Returns whether this is the first change since the last drain, so the
    /// caller lists the period as changed once.
    pub(super) fn mark_changed(&mut self, at: DateTime<Utc>) -> bool {
        self.snapshot.version += 1;
        self.snapshot.updated_at = self.snapshot.updated_at.max(at);
        !std::mem::replace(&mut self.dirty, true)
    }
}
