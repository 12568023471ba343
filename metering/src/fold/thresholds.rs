//! Usage thresholds: each level (90%, 100%) of each metric of the period's tier is notified once,
//! while the period is open.

use chrono::{DateTime, Utc};
use tally_pricing::{basis_points_decimal, levels_reached, percent_used_basis_points, Pricing};
use tally_schemas::{Metric, NotificationV1, ThresholdLevel, UsageThresholdCrossedV1};

use super::state::PeriodState;
use crate::period::Period;

/// The least usage at which `level` of `included` is reached (see [`levels_reached`]).
pub(super) fn threshold_usage(level: ThresholdLevel, included: u64) -> u64 {
    match level {
        // With nothing included there is no "approaching": any use exceeds.
        ThresholdLevel::Approaching if included == 0 => u64::MAX,
        ThresholdLevel::Exceeded if included == 0 => 1,
        ThresholdLevel::Exceeded => included,
        // the least u with 10·u ≥ 9·included
        ThresholdLevel::Approaching => {
            u64::try_from((9 * included as u128).div_ceil(10)).expect("below included")
        }
    }
}

impl PeriodState {
    /// Notifies each threshold of the period's tier that usage has reached and that was not
    /// notified before. Only while the period is open: a closed period's usage is final.
    pub(super) fn check_thresholds(
        &mut self,
        pricing: &Pricing,
        key_org: &str,
        period: Period,
        at: DateTime<Utc>,
    ) {
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
                self.pending_notifications.push(NotificationV1::UsageThresholdCrossed(
                    UsageThresholdCrossedV1 {
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
                    },
                ));
            }
        }
    }

    /// Whether usage has reached a threshold not yet notified: one comparison per metric, against
    /// the usage at which the next threshold falls (computed once per tier and notification).
    pub(super) fn thresholds_due(&mut self, pricing: &Pricing) -> bool {
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
}
