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

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tally_schemas::{
    DailyUsageV1, LateEventV1, Operation, OperationUsageV1, PeriodStateV1, TraceCompletedRecordV1,
    UsageTotalsV1, UsageUpdateV1,
};

use crate::dedup::{fingerprint, FingerprintSet};
use crate::period::Period;
use crate::rules::{classify, Classification, MAX_EVENT_AGE};

/// Settings of the fold. They are part of what the log means: a replay must use the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldConfig {
    /// How long after its end a period still accepts events (`TALLY_GRACE_HOURS`).
    pub grace: Duration,
}

impl Default for FoldConfig {
    fn default() -> Self {
        FoldConfig { grace: Duration::hours(48) }
    }
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
}

impl PeriodSnapshot {
    fn empty(updated_at: DateTime<Utc>) -> Self {
        PeriodSnapshot {
            version: 0,
            totals: UsageTotalsV1::default(),
            daily: BTreeMap::new(),
            updated_at,
            closed_at: None,
        }
    }

    /// The usage update that publishes this state.
    pub fn to_update(&self, key: &PeriodKey, late_events: Vec<LateEventV1>) -> UsageUpdateV1 {
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
}

#[derive(Debug)]
struct PeriodState {
    snapshot: PeriodSnapshot,
    /// Fingerprints of the event ids counted while open, or seen late once closed.
    seen: FingerprintSet,
    pending_fingerprints: Vec<u128>,
    pending_late: Vec<LateEventV1>,
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
            fingerprints_cleared: false,
            dirty: false,
            purged: false,
        }
    }
}

/// The state of one partition of the trace-event log.
#[derive(Debug)]
pub struct Fold {
    config: FoldConfig,
    watermark: Option<DateTime<Utc>>,
    orgs: HashMap<String, BTreeMap<Period, PeriodState>>,
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
        Fold { config, watermark: None, orgs: HashMap::new(), next_deadline: None, changed: Vec::new(), purged: Vec::new() }
    }

    /// Rebuilds a fold from persisted state: the watermark and, per (org, period), its snapshot
    /// and remembered fingerprints.
    pub fn restore(
        config: FoldConfig,
        watermark: Option<DateTime<Utc>>,
        periods: impl IntoIterator<Item = (PeriodKey, PeriodSnapshot, Vec<u128>)>,
    ) -> Self {
        let mut fold = Fold::new(config);
        fold.watermark = watermark;
        for (key, snapshot, fingerprints) in periods {
            fold.orgs
                .entry(key.org_id)
                .or_default()
                .insert(key.period, PeriodState::new(snapshot, fingerprints.into_iter().collect()));
        }
        fold.recompute_deadline();
        fold
    }

    pub fn config(&self) -> FoldConfig {
        self.config
    }

    /// The newest arrival time seen in this partition.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.watermark
    }

    /// The current state of one (org, period).
    pub fn get(&self, org_id: &str, period: Period) -> Option<&PeriodSnapshot> {
        self.orgs.get(org_id)?.get(&period).map(|s| &s.snapshot)
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

    /// Applies one trace event that arrived at `arrival` (its record timestamp).
    pub fn apply_event(&mut self, event: &TraceCompletedRecordV1, arrival: DateTime<Utc>) -> Outcome {
        self.advance(arrival);
        let watermark = self.watermark.expect("advance sets the watermark");
        let period = Period::containing(event.ended_at);
        let closes_at = period.closes_at(self.config.grace);
        let periods = match self.orgs.get_mut(event.org_id.as_str()) {
            Some(periods) => periods,
            None => self.orgs.entry(event.org_id.clone()).or_default(),
        };
        let state = periods.entry(period).or_insert_with(|| {
            let mut snapshot = PeriodSnapshot::empty(arrival);
            if watermark >= closes_at {
                snapshot.closed_at = Some(watermark);
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
                match classify(event.is_root(), event.status) {
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
                    event_id: event.event_id.clone(),
                    operation: event.operation,
                    ended_at: event.ended_at,
                    arrived_at: arrival,
                    billable: classify(event.is_root(), event.status) == Classification::Billable,
                    payload_bytes: event.payload_bytes,
                });
            }
        }
        snap.version += 1;
        snap.updated_at = snap.updated_at.max(arrival);
        if !state.dirty {
            state.dirty = true;
            self.changed.push(PeriodKey { org_id: event.org_id.clone(), period });
        }
        if is_new_deadline {
            let deadline = Self::deadline_of(self.config, period, &state.snapshot);
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
            let update = state.dirty.then(|| state.snapshot.to_update(&key, std::mem::take(&mut state.pending_late)));
            changes.push(PeriodChange {
                key,
                update,
                snapshot: state.snapshot,
                new_fingerprints: state.pending_fingerprints,
                fingerprints_cleared: state.fingerprints_cleared,
                purged: true,
            });
        }
        for key in keys {
            let Some(periods) = self.orgs.get_mut(&key.org_id) else { continue };
            let Some(state) = periods.get_mut(&key.period) else { continue };
            let update = state.dirty.then(|| {
                state.snapshot.to_update(&key, std::mem::take(&mut state.pending_late))
            });
            changes.push(PeriodChange {
                key: key.clone(),
                update,
                snapshot: state.snapshot.clone(),
                new_fingerprints: std::mem::take(&mut state.pending_fingerprints),
                fingerprints_cleared: std::mem::take(&mut state.fingerprints_cleared),
                purged: false,
            });
            state.dirty = false;
        }
        changes
    }

    /// When a period must next be looked at: its close while open, its purge once closed. After
    /// `end + MAX_EVENT_AGE` ingest accepts no event for it, so its state can go.
    fn deadline_of(config: FoldConfig, period: Period, snapshot: &PeriodSnapshot) -> DateTime<Utc> {
        let closes_at = period.closes_at(config.grace);
        if snapshot.closed_at.is_none() {
            closes_at
        } else {
            closes_at.max(period.end() + MAX_EVENT_AGE)
        }
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

    fn close_and_purge(&mut self, watermark: DateTime<Utc>) {
        let config = self.config;
        for (org_id, periods) in self.orgs.iter_mut() {
            for (period, state) in periods.iter_mut() {
                if state.purged || watermark < Self::deadline_of(config, *period, &state.snapshot) {
                    continue;
                }
                if state.snapshot.closed_at.is_none() {
                    state.snapshot.closed_at = Some(watermark);
                    state.snapshot.version += 1;
                    state.snapshot.updated_at = state.snapshot.updated_at.max(watermark);
                    state.seen = FingerprintSet::default();
                    state.pending_fingerprints.clear();
                    state.fingerprints_cleared = true;
                    state.dirty = true;
                    // the purge may be due at once (a long silence)
                    if watermark >= Self::deadline_of(config, *period, &state.snapshot) {
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
        let config = self.config;
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
