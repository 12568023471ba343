//! When periods close and when their state can go: each period's deadline, and the one check per
//! record that compares the watermark with the earliest of them.

use chrono::{DateTime, Utc};

use super::state::PeriodSnapshot;
use super::{Fold, FoldConfig, PeriodKey};
use crate::dedup::FingerprintSet;
use crate::period::Period;
use crate::rules::MAX_EVENT_AGE;

impl Fold {
    /// When a period must next be looked at: its close while open, its purge once closed and
    /// finalized (never before: its invoice must be issued first). After `end + MAX_EVENT_AGE`
    /// ingest accepts no event for it, so its state can go.
    pub(super) fn deadline_of(
        config: &FoldConfig,
        period: Period,
        snapshot: &PeriodSnapshot,
    ) -> DateTime<Utc> {
        let closes_at = period.closes_at(config.grace);
        if snapshot.closed_at.is_none() {
            closes_at
        } else if !snapshot.finalized {
            DateTime::<Utc>::MAX_UTC
        } else {
            closes_at.max(period.end() + MAX_EVENT_AGE)
        }
    }

    pub(super) fn close_and_purge(&mut self, watermark: DateTime<Utc>) {
        let config = self.config.clone();
        let billing = self.billing_watermark;
        for (org_id, periods) in self.orgs.iter_mut() {
            for (period, state) in periods.iter_mut() {
                if state.purged || watermark < Self::deadline_of(&config, *period, &state.snapshot)
                {
                    continue;
                }
                if state.snapshot.closed_at.is_none() {
                    state.snapshot.closed_at = Some(watermark);
                    state.mark_changed(watermark);
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
            let gone: Vec<Period> =
                periods.iter().filter(|(_, s)| s.purged).map(|(p, _)| *p).collect();
            for period in gone {
                let state = periods.remove(&period).expect("just listed");
                self.purged.push((PeriodKey { org_id: org_id.clone(), period }, state));
            }
        }
        self.orgs.retain(|_, periods| !periods.is_empty());
        self.recompute_deadline();
    }

    pub(super) fn recompute_deadline(&mut self) {
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
