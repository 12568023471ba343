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
//!
//! Layout, one job per file:
//! - `state`: what is held per (org, period), and the mark that it changed.
//! - `usage`: a trace event's delivery: the metering decision (`crate::decision`) applied to the
//!   period's usage and dedup set.
//! - `tiers`: subscription histories, the tier that prices a period, periods started by a
//!   subscription.
//! - `thresholds`: the 90% and 100% notifications.
//! - `closing`: when periods close and when their state can go (the deadlines).
//! - `invoicing`: a closed period's final invoice.
//! - `wire`: what a drain hands to the caller, and the usage update published for a period.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tally_pricing::Pricing;

use crate::period::Period;

mod closing;
mod invoicing;
mod state;
mod thresholds;
mod tiers;
mod usage;
mod wire;

pub use state::PeriodSnapshot;
pub use tiers::{tier_at, TierHistory};
pub use wire::PeriodChange;

use state::PeriodState;

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

/// One org's usage in one period.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeriodKey {
    pub org_id: String,
    pub period: Period,
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
        Fold::restore_all(
            config,
            Watermarks { trace: watermark, billing: None },
            Vec::new(),
            periods,
        )
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
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod billing_tests;
