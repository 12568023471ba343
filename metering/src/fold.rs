//! The usage fold: how each record of one log partition changes the usage it holds.
//!
//! One [`Fold`] holds the state of one partition of `tally.trace-events.v1`: per (org, period)
//! usage, the fingerprints of the event ids counted there, and the partition's watermark (the
//! newest arrival time seen). Records are applied in log order; [`Fold::drain_changes`] hands the
//! caller what changed since the last drain, to publish and persist atomically.
//!
//! Time comes only from the records: a period closes when the watermark reaches its end plus the
//! grace, and an event whose period has closed when it is applied is late. The same log therefore
//! always gives the same usage, the same late events and the same close decisions.
//!
//! The fold also reads partition `p` of `tally.billing-events.v1`, which holds the same orgs
//! (same key, same partitioner). Subscription changes take effect at the billing log time
//! (never earlier than the billing watermark, so effective times only grow); the tier in effect at
//! a period's end prices it. A closed period's invoice is finalized once the billing watermark
//! has also passed the period's end: from then on no subscription change can still be recorded
//! before that end, so the final invoice depends on the two logs alone, not on how their records
//! interleaved on the way in.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tally_pricing::{levels_reached, percent_used_basis_points, basis_points_decimal, Pricing};
use tally_schemas::{
    BilledUsageV1, DailyUsageV1, InvoiceFinalizedV1, InvoiceV1, LateEventV1, Metric, NotificationV1,
    Operation, OperationUsageV1, PeriodStateV1, SubscriptionChangedV1, ThresholdLevel, Tier,
    TraceCompletedRecordV1, TraceCompletedRef, UsageThresholdCrossedV1, UsageTotalsV1, UsageUpdateV1,
};

use crate::dedup::{fingerprint, FingerprintSet};
use crate::period::Period;
use crate::rules::{classify, Classification, MAX_EVENT_AGE};

/// Settings of the fold. They are part of what the log means: a replay must use the same ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldConfig {
    /// How long after its end a period still accepts events (`TALLY_GRACE_HOURS`).
    pub grace: Duration,
    /// The prices that finalize invoices and set usage thresholds.
    pub pricing: Arc<Pricing>,
}

impl FoldConfig {
    /// The built-in prices and the given grace.
    pub fn with_grace(grace: Duration) -> Self {
        FoldConfig { grace, pricing: Arc::new(Pricing::builtin()) }
    }
}

impl Default for FoldConfig {
    fn default() -> Self {
        FoldConfig::with_grace(Duration::hours(48))
    }
}

/// The least usage at which `level` of `included` is reached (see [`levels_reached`]).
fn threshold_usage(level: ThresholdLevel, included: u64) -> u64 {
    match level {
        // With nothing included there is no "approaching": any use exceeds.
        ThresholdLevel::Approaching if included == 0 => u64::MAX,
        ThresholdLevel::Exceeded if included == 0 => 1,
        ThresholdLevel::Exceeded => included,
        // the least u with 10·u ≥ 9·included
        ThresholdLevel::Approaching => u64::try_from((9 * included as u128).div_ceil(10)).expect("below included"),
    }
}

/// An org's subscription history: (effective log time, tier), in time order.
pub type TierHistory = Vec<(DateTime<Utc>, Tier)>;

/// The tier in effect just before `at`: the last change that took effect strictly before it.
pub fn tier_at(history: Option<&TierHistory>, at: DateTime<Utc>) -> Tier {
    history
        .and_then(|h| h.iter().rev().find(|(effective, _)| *effective < at))
        .map_or(Tier::Starter, |(_, tier)| *tier)
}

/// One org's usage in one period.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeriodKey {
    pub org_id: String,
    pub period: Period,
}

/// The explicit outcome of every applied event. Each is counted; nothing vanishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Billed,
    ChildSpan,
    NotSuccess,
    Duplicate,
    Late,
}

impl Outcome {
    pub const ALL: [Outcome; 5] =
        [Outcome::Billed, Outcome::ChildSpan, Outcome::NotSuccess, Outcome::Duplicate, Outcome::Late];

    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Billed => "billed",
            Outcome::ChildSpan => "child_span",
            Outcome::NotSuccess => "not_success",
            Outcome::Duplicate => "duplicate",
            Outcome::Late => "late",
        }
    }
}

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
    fn empty(updated_at: DateTime<Utc>, tier: Tier) -> Self {
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

    /// The usage update that publishes this state.
    pub fn to_update(
        &self,
        key: &PeriodKey,
        late_events: Vec<LateEventV1>,
        invoice: Option<InvoiceV1>,
    ) -> UsageUpdateV1 {
        UsageUpdateV1 {
            org_id: key.org_id.clone(),
            period: key.period.to_string(),
            version: self.version,
            state: if self.closed_at.is_some() { PeriodStateV1::Closed } else { PeriodStateV1::Open },
            totals: self.totals.clone(),
            daily: self
                .daily
                .iter()
                .flat_map(|(day, ops)| {
                    ops.iter().map(|(op, u)| DailyUsageV1 {
                        day: *day,
                        operation: *op,
                        traces: u.traces,
                        payload_bytes: u.payload_bytes,
                    })
                })
                .collect(),
            late_events,
            updated_at: self.updated_at,
            closed_at: self.closed_at,
            tier: self.tier,
            invoice,
        }
    }
}

/// What changed in one (org, period) since the previous drain.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodChange {
    pub key: PeriodKey,
    /// The update to publish, when the usage changed.
    pub update: Option<UsageUpdateV1>,
    /// The state to persist.
    pub snapshot: PeriodSnapshot,
    /// Fingerprints remembered since the previous drain.
    pub new_fingerprints: Vec<u128>,
    /// The period closed: fingerprints persisted before this change are no longer needed.
    pub fingerprints_cleared: bool,
    /// No event can belong to this period any more: its state may be deleted.
    pub purged: bool,
    /// Threshold crossings and the finalized invoice, to publish exactly once with this change.
    pub notifications: Vec<NotificationV1>,
}

#[derive(Debug)]
struct PeriodState {
    snapshot: PeriodSnapshot,
    /// Fingerprints of the event ids counted while open, or seen late once closed.
    seen: FingerprintSet,
    pending_fingerprints: Vec<u128>,
    pending_late: Vec<LateEventV1>,
    pending_notifications: Vec<NotificationV1>,
    pending_invoice: Option<InvoiceV1>,
    /// Per metric (traces, payload bytes), the usage at which the next threshold falls; `None`
    /// when it must be recomputed (a new tier, a new notification).
    next_thresholds: Option<[u64; 2]>,
    fingerprints_cleared: bool,
    dirty: bool,
    purged: bool,
}

impl PeriodState {
    fn new(snapshot: PeriodSnapshot, seen: FingerprintSet) -> Self {
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

    /// Notifies each threshold of the period's tier that usage has reached and that was not
    /// notified before. Only while the period is open: a closed period's usage is final.
    fn check_thresholds(&mut self, pricing: &Pricing, key_org: &str, period: Period, at: DateTime<Utc>) {
        self.next_thresholds = None;
        if self.snapshot.closed_at.is_some() {
            return;
        }
        let tier = pricing.tier(self.snapshot.tier);
        for metric in Metric::ALL {
            let used = self.snapshot.billed().get(metric);
            let included = tier.metric(metric).included;
            for &level in levels_reached(used, included) {
                if self.snapshot.notified.contains(&(metric, level)) {
                    continue;
                }
                self.snapshot.notified.push((metric, level));
                self.pending_notifications.push(NotificationV1::UsageThresholdCrossed(UsageThresholdCrossedV1 {
                    org_id: key_org.to_string(),
                    period: period.to_string(),
                    metric,
                    level,
                    tier: self.snapshot.tier,
                    used,
                    included,
                    percent_used: percent_used_basis_points(used, included)
                        .map_or_else(|| "100.00".to_string(), basis_points_decimal),
                    crossed_at: at,
                }));
            }
        }
    }

    /// Whether usage has reached a threshold not yet notified: one comparison per metric, against
    /// the usage at which the next threshold falls (computed once per tier and notification).
    fn thresholds_due(&mut self, pricing: &Pricing) -> bool {
        let next = *self.next_thresholds.get_or_insert_with(|| {
            let tier = pricing.tier(self.snapshot.tier);
            Metric::ALL.map(|m| {
                let included = tier.metric(m).included;
                [ThresholdLevel::Approaching, ThresholdLevel::Exceeded]
                    .into_iter()
                    .filter(|level| !self.snapshot.notified.contains(&(m, *level)))
                    .map(|level| threshold_usage(level, included))
                    .min()
                    .unwrap_or(u64::MAX)
            })
        });
        let billed = self.snapshot.billed();
        billed.traces >= next[0] || billed.payload_bytes >= next[1]
    }

    fn touch(&mut self, at: DateTime<Utc>) -> bool {
        self.snapshot.version += 1;
        self.snapshot.updated_at = self.snapshot.updated_at.max(at);
        !std::mem::replace(&mut self.dirty, true)
    }
}

/// The two watermarks of a partition: the newest record time seen in each log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Watermarks {
    pub trace: Option<DateTime<Utc>>,
    pub billing: Option<DateTime<Utc>>,
}

/// The state of one partition of the trace-event log (and the same partition of the
/// billing-event log).
#[derive(Debug)]
pub struct Fold {
    config: FoldConfig,
    watermark: Option<DateTime<Utc>>,
    billing_watermark: Option<DateTime<Utc>>,
    orgs: HashMap<String, BTreeMap<Period, PeriodState>>,
    subscriptions: HashMap<String, TierHistory>,
    /// Orgs whose subscription history changed since the last drain.
    subscriptions_changed: Vec<String>,
    /// The earliest instant at which some period must close or be purged: lets the per-record
    /// check cost one comparison.
    next_deadline: Option<DateTime<Utc>>,
    changed: Vec<PeriodKey>,
    /// Periods purged since the last drain, already out of `orgs`: an event that arrives for
    /// such a period before the drain starts a fresh state, exactly as it would after the drain,
    /// so where batches end never changes the result.
    purged: Vec<(PeriodKey, PeriodState)>,
}

impl Fold {
    pub fn new(config: FoldConfig) -> Self {
        Fold {
            config,
            watermark: None,
            billing_watermark: None,
            orgs: HashMap::new(),
            subscriptions: HashMap::new(),
            subscriptions_changed: Vec::new(),
            next_deadline: None,
            changed: Vec::new(),
            purged: Vec::new(),
        }
    }

    /// Rebuilds a fold from persisted state: the watermark and, per (org, period), its snapshot
    /// and remembered fingerprints.
    pub fn restore(
        config: FoldConfig,
        watermark: Option<DateTime<Utc>>,
        periods: impl IntoIterator<Item = (PeriodKey, PeriodSnapshot, Vec<u128>)>,
    ) -> Self {
        Fold::restore_all(config, Watermarks { trace: watermark, billing: None }, Vec::new(), periods)
    }

    /// Rebuilds a fold from everything persisted: both watermarks, the subscription histories and
    /// the periods.
    pub fn restore_all(
        config: FoldConfig,
        watermarks: Watermarks,
        subscriptions: impl IntoIterator<Item = (String, TierHistory)>,
        periods: impl IntoIterator<Item = (PeriodKey, PeriodSnapshot, Vec<u128>)>,
    ) -> Self {
        let mut fold = Fold::new(config);
        fold.watermark = watermarks.trace;
        fold.billing_watermark = watermarks.billing;
        fold.subscriptions = subscriptions.into_iter().collect();
        for (key, snapshot, fingerprints) in periods {
            fold.orgs
                .entry(key.org_id)
                .or_default()
                .insert(key.period, PeriodState::new(snapshot, fingerprints.into_iter().collect()));
        }
        fold.recompute_deadline();
        fold
    }

    pub fn config(&self) -> &FoldConfig {
        &self.config
    }

    /// The newest arrival time seen in this partition.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.watermark
    }

    pub fn watermarks(&self) -> Watermarks {
        Watermarks { trace: self.watermark, billing: self.billing_watermark }
    }

    /// The current state of one (org, period).
    pub fn get(&self, org_id: &str, period: Period) -> Option<&PeriodSnapshot> {
        self.orgs.get(org_id)?.get(&period).map(|s| &s.snapshot)
    }

    /// An org's subscription history.
    pub fn subscription(&self, org_id: &str) -> Option<&TierHistory> {
        self.subscriptions.get(org_id)
    }

    /// Every (org, period) held, in key order.
    pub fn periods(&self) -> Vec<(PeriodKey, &PeriodSnapshot)> {
        let mut all: Vec<_> = self
            .orgs
            .iter()
            .flat_map(|(org, periods)| {
                periods.iter().map(move |(period, state)| {
                    (PeriodKey { org_id: org.clone(), period: *period }, &state.snapshot)
                })
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// How many fingerprints are held in memory (for the memory gauge).
    pub fn fingerprint_count(&self) -> usize {
        self.orgs.values().flat_map(|p| p.values()).map(|s| s.seen.len()).sum()
    }

    /// A tick: time has passed in this partition.
    pub fn apply_tick(&mut self, arrival: DateTime<Utc>) {
        self.advance(arrival);
    }

    /// A tick of the billing-event log.
    pub fn apply_billing_tick(&mut self, at: DateTime<Utc>) {
        self.advance_billing(at);
    }

    /// Applies a subscription change recorded at `at` (its billing-log timestamp). It takes
    /// effect at `max(at, billing watermark)` and reprices every period of the org that has not
    /// ended by then.
    pub fn apply_subscription(&mut self, change: &SubscriptionChangedV1, at: DateTime<Utc>) {
        self.advance_billing(at);
        let effective = self.billing_watermark.expect("advance_billing sets it");
        let org = change.org_id.as_str();
        let history = self.subscriptions.entry(change.org_id.clone()).or_default();
        history.push((effective, change.tier));
        // Keep what can still price a period that is not finalized yet (it may close as late as
        // the grace after its end, and the billing log may lag): the changes of that window
        // and the one in effect before it. The window is measured from the trace log's time as
        // well as the billing log's, the earlier of the two: catching up, the small billing log
        // can be read months ahead of the trace log, whose periods still need their tiers.
        // Before any trace record there is nothing to measure from, and nothing is dropped.
        if let Some(trace_time) = self.watermark {
            let horizon = effective.min(trace_time) - MAX_EVENT_AGE - self.config.grace - Duration::days(62);
            let keep_from = history.iter().rposition(|(t, _)| *t < horizon).unwrap_or(0);
            history.drain(..keep_from);
        }
        if !self.subscriptions_changed.iter().any(|o| o == org) {
            self.subscriptions_changed.push(change.org_id.clone());
        }
        self.ensure_period(org, Period::containing(effective), effective);
        self.finalize_due();
        let history = self.subscriptions.get(org);
        let pricing = &self.config.pricing;
        if let Some(periods) = self.orgs.get_mut(org) {
            for (period, state) in periods.iter_mut() {
                if state.snapshot.finalized || period.end() <= effective {
                    continue;
                }
                let tier = tier_at(history, period.end());
                if tier != state.snapshot.tier {
                    state.snapshot.tier = tier;
                    if state.touch(effective) {
                        self.changed.push(PeriodKey { org_id: org.to_string(), period: *period });
                    }
                    state.check_thresholds(pricing, org, *period, effective);
                }
            }
        }
    }

    /// Applies one trace event that arrived at `arrival` (its record timestamp).
    pub fn apply_event(&mut self, event: &TraceCompletedRecordV1, arrival: DateTime<Utc>) -> Outcome {
        self.apply_event_ref(&event.usage_fields(), arrival)
    }

    /// [`Fold::apply_event`] on the fields that decide usage, borrowed from the record.
    pub fn apply_event_ref(&mut self, event: &TraceCompletedRef<'_>, arrival: DateTime<Utc>) -> Outcome {
        self.advance(arrival);
        let watermark = self.watermark.expect("advance sets the watermark");
        let period = Period::containing(event.ended_at);
        let org_id: &str = &event.org_id;
        let periods = match self.orgs.get_mut(org_id) {
            Some(periods) => periods,
            None => self.orgs.entry(org_id.to_string()).or_default(),
        };
        let subscriptions = &self.subscriptions;
        let grace = self.config.grace;
        let state = periods.entry(period).or_insert_with(|| {
            let tier = tier_at(subscriptions.get(org_id), period.end());
            let mut snapshot = PeriodSnapshot::empty(arrival, tier);
            if watermark >= period.closes_at(grace) {
                // Only a late event starts a period already closed. It bills nothing, so it
                // issues no invoice (a period purged already had its own): the state is final
                // from the start, unless a subscription claims the period (`ensure_period`).
                snapshot.closed_at = Some(watermark);
                snapshot.finalized = true;
                snapshot.late_only = true;
            }
            PeriodState::new(snapshot, FingerprintSet::default())
        });
        let is_new_deadline = state.snapshot.version == 0;

        let fp = fingerprint(&event.event_id);
        let outcome = if !state.seen.insert(fp) {
            Outcome::Duplicate
        } else {
            state.pending_fingerprints.push(fp);
            if state.snapshot.closed_at.is_some() {
                Outcome::Late
            } else {
                match classify(event.is_root, event.status) {
                    Classification::Billable => Outcome::Billed,
                    Classification::ChildSpan => Outcome::ChildSpan,
                    Classification::NotSuccess => Outcome::NotSuccess,
                }
            }
        };

        let snap = &mut state.snapshot;
        let totals = &mut snap.totals;
        match outcome {
            Outcome::Billed => {
                totals.traces += 1;
                totals.payload_bytes = totals.payload_bytes.saturating_add(event.payload_bytes);
                for usage in [
                    totals.by_operation.entry(event.operation).or_default(),
                    snap.daily
                        .entry(event.ended_at.date_naive())
                        .or_default()
                        .entry(event.operation)
                        .or_default(),
                ] {
                    usage.traces += 1;
                    usage.payload_bytes = usage.payload_bytes.saturating_add(event.payload_bytes);
                }
            }
            Outcome::ChildSpan => totals.not_billed.child_span += 1,
            Outcome::NotSuccess => totals.not_billed.not_success += 1,
            Outcome::Duplicate => totals.not_billed.duplicate += 1,
            Outcome::Late => {
                totals.not_billed.late += 1;
                state.pending_late.push(LateEventV1 {
                    event_id: event.event_id.to_string(),
                    operation: event.operation,
                    ended_at: event.ended_at,
                    arrived_at: arrival,
                    billable: classify(event.is_root, event.status) == Classification::Billable,
                    payload_bytes: event.payload_bytes,
                });
            }
        }
        if outcome == Outcome::Billed && state.thresholds_due(&self.config.pricing) {
            state.check_thresholds(&self.config.pricing, org_id, period, arrival);
        }
        if state.touch(arrival) {
            self.changed.push(PeriodKey { org_id: org_id.to_string(), period });
        }
        if is_new_deadline {
            let deadline = Self::deadline_of(&self.config, period, &state.snapshot);
            self.next_deadline = Some(self.next_deadline.map_or(deadline, |d| d.min(deadline)));
        }
        outcome
    }

    /// Hands over everything that changed since the previous drain, in key order, and forgets
    /// periods that were purged.
    pub fn drain_changes(&mut self) -> Vec<PeriodChange> {
        let mut keys = std::mem::take(&mut self.changed);
        keys.sort();
        keys.dedup();
        let mut changes = Vec::with_capacity(keys.len());
        // Purges first: a period purged and started afresh in one batch deletes before it writes.
        let mut purged = std::mem::take(&mut self.purged);
        purged.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, mut state) in purged {
            let update = state.dirty.then(|| {
                state.snapshot.to_update(&key, std::mem::take(&mut state.pending_late), state.pending_invoice.take())
            });
            changes.push(PeriodChange {
                key,
                update,
                snapshot: state.snapshot,
                new_fingerprints: state.pending_fingerprints,
                fingerprints_cleared: state.fingerprints_cleared,
                purged: true,
                notifications: state.pending_notifications,
            });
        }
        for key in keys {
            let Some(periods) = self.orgs.get_mut(&key.org_id) else { continue };
            let Some(state) = periods.get_mut(&key.period) else { continue };
            let update = state.dirty.then(|| {
                state.snapshot.to_update(&key, std::mem::take(&mut state.pending_late), state.pending_invoice.take())
            });
            changes.push(PeriodChange {
                key: key.clone(),
                update,
                snapshot: state.snapshot.clone(),
                new_fingerprints: std::mem::take(&mut state.pending_fingerprints),
                fingerprints_cleared: std::mem::take(&mut state.fingerprints_cleared),
                purged: false,
                notifications: std::mem::take(&mut state.pending_notifications),
            });
            state.dirty = false;
        }
        changes
    }

    /// The subscription histories changed since the previous drain, in org order.
    pub fn drain_subscription_changes(&mut self) -> Vec<(String, TierHistory)> {
        let mut orgs = std::mem::take(&mut self.subscriptions_changed);
        orgs.sort();
        orgs.into_iter()
            .map(|org| {
                let history = self.subscriptions.get(&org).cloned().unwrap_or_default();
                (org, history)
            })
            .collect()
    }

    /// When a period must next be looked at: its close while open, its purge once closed and
    /// finalized (never before: its invoice must be issued first). After `end + MAX_EVENT_AGE`
    /// ingest accepts no event for it, so its state can go.
    fn deadline_of(config: &FoldConfig, period: Period, snapshot: &PeriodSnapshot) -> DateTime<Utc> {
        let closes_at = period.closes_at(config.grace);
        if snapshot.closed_at.is_none() {
            closes_at
        } else if !snapshot.finalized {
            DateTime::<Utc>::MAX_UTC
        } else {
            closes_at.max(period.end() + MAX_EVENT_AGE)
        }
    }

    /// Starts an empty state for (org, period) so the period is invoiced even without usage,
    /// unless it exists already.
    ///
    /// `period` is the billing log's current month, so its invoice cannot have been issued yet
    /// (that needs the billing log past its end), however far the trace log has run ahead: a
    /// period whose state is gone was purged as late events only, and is invoiced now, exactly as
    /// if the subscription had been read first. (Skipping periods far behind the trace log here
    /// made a lagging billing log lose a subscribed org's invoices.)
    fn ensure_period(&mut self, org: &str, period: Period, at: DateTime<Utc>) {
        let tier = tier_at(self.subscriptions.get(org), period.end());
        let periods = self.orgs.entry(org.to_string()).or_default();
        if let Some(state) = periods.get_mut(&period) {
            // A period started by late events alone is invoiced after all when the org has a
            // subscription: the same invoice as if the subscription had been read first.
            if state.snapshot.late_only {
                state.snapshot.late_only = false;
                state.snapshot.finalized = false;
                if state.touch(at) {
                    self.changed.push(PeriodKey { org_id: org.to_string(), period });
                }
                self.recompute_deadline();
            }
            return;
        }
        let mut snapshot = PeriodSnapshot::empty(at, tier);
        if let Some(w) = self.watermark.filter(|w| *w >= period.closes_at(self.config.grace)) {
            snapshot.closed_at = Some(w);
        }
        let mut state = PeriodState::new(snapshot, FingerprintSet::default());
        state.touch(at);
        let deadline = Self::deadline_of(&self.config, period, &state.snapshot);
        periods.insert(period, state);
        self.changed.push(PeriodKey { org_id: org.to_string(), period });
        self.next_deadline = Some(self.next_deadline.map_or(deadline, |d| d.min(deadline)));
    }

    fn advance(&mut self, arrival: DateTime<Utc>) {
        if self.watermark.is_none_or(|w| arrival > w) {
            self.watermark = Some(arrival);
        }
        let watermark = self.watermark.expect("just set");
        if self.next_deadline.is_some_and(|d| watermark >= d) {
            self.close_and_purge(watermark);
        }
    }

    fn advance_billing(&mut self, at: DateTime<Utc>) {
        let previous = self.billing_watermark;
        if previous.is_some_and(|w| at <= w) {
            return;
        }
        self.billing_watermark = Some(at);
        // A new month in the billing log: every subscribed org gets that period's invoice.
        let entered = Period::containing(at);
        if previous.is_some_and(|w| Period::containing(w) < entered) {
            let mut orgs: Vec<String> = self.subscriptions.keys().cloned().collect();
            orgs.sort();
            for org in orgs {
                self.ensure_period(&org, entered, at);
            }
        }
        self.finalize_due();
    }

    /// Finalizes every closed period whose end the billing watermark has passed.
    fn finalize_due(&mut self) {
        let Some(billing) = self.billing_watermark else { return };
        let mut finalized_any = false;
        for (org_id, periods) in self.orgs.iter_mut() {
            for (period, state) in periods.iter_mut() {
                if state.snapshot.finalized || state.snapshot.closed_at.is_none() || billing < period.end() {
                    continue;
                }
                Self::finalize(&self.config, self.subscriptions.get(org_id), org_id, *period, state);
                self.changed.push(PeriodKey { org_id: org_id.clone(), period: *period });
                finalized_any = true;
            }
        }
        if finalized_any {
            self.recompute_deadline();
        }
    }

    /// Issues the final invoice of a closed period: its final usage, priced on the tier in
    /// effect at its end, dated at the instant the period closes (end plus grace). Every input
    /// is decided by the logs alone, whatever the interleaving of their records.
    fn finalize(config: &FoldConfig, history: Option<&TierHistory>, org_id: &str, period: Period, state: &mut PeriodState) {
        let snap = &mut state.snapshot;
        snap.tier = tier_at(history, period.end());
        snap.finalized = true;
        let closes_at = period.closes_at(config.grace);
        let invoice = config.pricing.invoice(org_id, &period.to_string(), snap.tier, snap.billed(), Some(closes_at));
        state.pending_notifications.push(NotificationV1::InvoiceFinalized(InvoiceFinalizedV1 { invoice: invoice.clone() }));
        state.pending_invoice = Some(invoice);
        let closed_at = snap.closed_at.expect("only closed periods are finalized");
        state.touch(closed_at);
    }

    fn close_and_purge(&mut self, watermark: DateTime<Utc>) {
        let config = self.config.clone();
        let billing = self.billing_watermark;
        for (org_id, periods) in self.orgs.iter_mut() {
            for (period, state) in periods.iter_mut() {
                if state.purged || watermark < Self::deadline_of(&config, *period, &state.snapshot) {
                    continue;
                }
                if state.snapshot.closed_at.is_none() {
                    state.snapshot.closed_at = Some(watermark);
                    state.touch(watermark);
                    state.seen = FingerprintSet::default();
                    state.pending_fingerprints.clear();
                    state.fingerprints_cleared = true;
                    if billing.is_some_and(|b| b >= period.end()) {
                        let history = self.subscriptions.get(org_id);
                        Self::finalize(&config, history, org_id, *period, state);
                    }
                    // the purge may be due at once (a long silence)
                    if watermark >= Self::deadline_of(&config, *period, &state.snapshot) {
                        state.purged = true;
                    }
                } else {
                    state.purged = true;
                }
                self.changed.push(PeriodKey { org_id: org_id.clone(), period: *period });
            }
        }
        for (org_id, periods) in self.orgs.iter_mut() {
            let gone: Vec<Period> = periods.iter().filter(|(_, s)| s.purged).map(|(p, _)| *p).collect();
            for period in gone {
                let state = periods.remove(&period).expect("just listed");
                self.purged.push((PeriodKey { org_id: org_id.clone(), period }, state));
            }
        }
        self.orgs.retain(|_, periods| !periods.is_empty());
        self.recompute_deadline();
    }

    fn recompute_deadline(&mut self) {
        let config = &self.config;
        self.next_deadline = self
            .orgs
            .values()
            .flat_map(|p| p.iter())
            .filter(|(_, s)| !s.purged)
            .map(|(period, s)| Self::deadline_of(config, *period, &s.snapshot))
            .min();
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod billing_tests;
