//! Subscriptions: each org's tier history, the tier that prices a period, and the periods a
//! subscription starts so they are invoiced even without usage.

use chrono::{DateTime, Duration, Utc};
use tally_schemas::{SubscriptionChangedV1, Tier};

use super::state::{PeriodSnapshot, PeriodState};
use super::{Fold, PeriodKey};
use crate::dedup::FingerprintSet;
use crate::period::Period;
use crate::rules::MAX_EVENT_AGE;

/// An org's subscription history: (effective log time, tier), in time order.
pub type TierHistory = Vec<(DateTime<Utc>, Tier)>;

/// The tier in effect just before `at`: the last change that took effect strictly before it.
pub fn tier_at(history: Option<&TierHistory>, at: DateTime<Utc>) -> Tier {
    history
        .and_then(|h| h.iter().rev().find(|(effective, _)| *effective < at))
        .map_or(Tier::Starter, |(_, tier)| *tier)
}

impl Fold {
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
            let horizon =
                effective.min(trace_time) - MAX_EVENT_AGE - self.config.grace - Duration::days(62);
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
                    if state.mark_changed(effective) {
                        self.changed.push(PeriodKey { org_id: org.to_string(), period: *period });
                    }
                    state.check_thresholds(pricing, org, *period, effective);
                }
            }
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
    pub(super) fn ensure_period(&mut self, org: &str, period: Period, at: DateTime<Utc>) {
        let tier = tier_at(self.subscriptions.get(org), period.end());
        let periods = self.orgs.entry(org.to_string()).or_default();
        if let Some(state) = periods.get_mut(&period) {
            // A period started by late events alone is invoiced after all when the org has a
            // subscription: the same invoice as if the subscription had been read first.
            if state.snapshot.late_only {
                state.snapshot.late_only = false;
                state.snapshot.finalized = false;
                if state.mark_changed(at) {
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
        state.mark_changed(at);
        let deadline = Self::deadline_of(&self.config, period, &state.snapshot);
        periods.insert(period, state);
        self.changed.push(PeriodKey { org_id: org.to_string(), period });
        self.next_deadline = Some(self.next_deadline.map_or(deadline, |d| d.min(deadline)));
    }
}
