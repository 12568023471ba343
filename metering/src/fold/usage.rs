//! A trace event's delivery: the metering decision applied to its period's usage.

use chrono::{DateTime, Utc};
use tally_schemas::{LateEventV1, TraceCompletedRecordV1, TraceCompletedRef};

use super::state::{PeriodSnapshot, PeriodState};
use super::{tier_at, Fold, PeriodKey};
use crate::decision::{decide, Decision, Delivery};
use crate::dedup::{fingerprint, FingerprintSet};
use crate::period::Period;
use crate::rules::{classify, Classification};

impl Fold {
    /// Applies one trace event that arrived at `arrival` (its record timestamp).
    pub fn apply_event(
        &mut self,
        event: &TraceCompletedRecordV1,
        arrival: DateTime<Utc>,
    ) -> Decision {
        self.apply_event_ref(&event.usage_fields(), arrival)
    }

    /// [`Fold::apply_event`] on the fields that decide usage, borrowed from the record.
    pub fn apply_event_ref(
        &mut self,
        event: &TraceCompletedRef<'_>,
        arrival: DateTime<Utc>,
    ) -> Decision {
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

        let fingerprint = fingerprint(&event.event_id);
        let seen_before = !state.seen.insert(fingerprint);
        if !seen_before {
            state.pending_fingerprints.push(fingerprint);
        }
        let decision = decide(Delivery {
            is_root: event.is_root,
            status: event.status,
            seen_before,
            period_closed: state.snapshot.closed_at.is_some(),
        });
        state.count(decision, event, arrival);
        if decision == Decision::Billed && state.thresholds_due(&self.config.pricing) {
            state.check_thresholds(&self.config.pricing, org_id, period, arrival);
        }
        if state.mark_changed(arrival) {
            self.changed.push(PeriodKey { org_id: org_id.to_string(), period });
        }
        if is_new_deadline {
            let deadline = Self::deadline_of(&self.config, period, &state.snapshot);
            self.next_deadline = Some(self.next_deadline.map_or(deadline, |d| d.min(deadline)));
        }
        decision
    }
}

impl PeriodState {
    /// Counts one delivery's decision in the period's totals (and, billed, in its per-operation
    /// and daily usage); a late one is also listed, to publish with the next update.
    pub(super) fn count(
        &mut self,
        decision: Decision,
        event: &TraceCompletedRef<'_>,
        arrival: DateTime<Utc>,
    ) {
        let snapshot = &mut self.snapshot;
        let totals = &mut snapshot.totals;
        match decision {
            Decision::Billed => {
                totals.traces += 1;
                totals.payload_bytes = totals.payload_bytes.saturating_add(event.payload_bytes);
                let day = event.ended_at.date_naive();
                for usage in [
                    totals.by_operation.entry(event.operation).or_default(),
                    snapshot.daily.entry(day).or_default().entry(event.operation).or_default(),
                ] {
                    usage.traces += 1;
                    usage.payload_bytes = usage.payload_bytes.saturating_add(event.payload_bytes);
                }
            }
            Decision::ChildSpan => totals.not_billed.child_span += 1,
            Decision::NotSuccess => totals.not_billed.not_success += 1,
            Decision::Duplicate => totals.not_billed.duplicate += 1,
            Decision::Late => {
                totals.not_billed.late += 1;
                self.pending_late.push(LateEventV1 {
                    event_id: event.event_id.to_string(),
                    operation: event.operation,
                    ended_at: event.ended_at,
                    arrived_at: arrival,
                    billable: classify(event.is_root, event.status) == Classification::Billable,
                    payload_bytes: event.payload_bytes,
                });
            }
        }
    }
}
