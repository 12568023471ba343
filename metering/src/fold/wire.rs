//! What a drain hands to the caller: per changed (org, period), the usage update to publish, the
//! state and fingerprints to persist and the notifications to send, all in one change.

use tally_schemas::{
    DailyUsageV1, InvoiceV1, LateEventV1, NotificationV1, PeriodStateV1, UsageUpdateV1,
};

use super::state::PeriodSnapshot;
use super::{Fold, PeriodKey, TierHistory};

impl PeriodSnapshot {
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
            state: if self.closed_at.is_some() {
                PeriodStateV1::Closed
            } else {
                PeriodStateV1::Open
            },
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

impl Fold {
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
                state.snapshot.to_update(
                    &key,
                    std::mem::take(&mut state.pending_late),
                    state.pending_invoice.take(),
                )
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
                state.snapshot.to_update(
                    &key,
                    std::mem::take(&mut state.pending_late),
                    state.pending_invoice.take(),
                )
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
}
