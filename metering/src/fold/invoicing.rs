//! A closed period's final invoice.

use tally_schemas::{InvoiceFinalizedV1, NotificationV1};

use super::state::PeriodState;
use super::tiers::tier_at;
use super::{Fold, FoldConfig, PeriodKey, TierHistory};
use crate::period::Period;

impl Fold {
    /// Finalizes every closed period whose end the billing watermark has passed.
    pub(super) fn finalize_due(&mut self) {
        let Some(billing) = self.billing_watermark else { return };
        let mut finalized_any = false;
        for (org_id, periods) in self.orgs.iter_mut() {
            for (period, state) in periods.iter_mut() {
                if state.snapshot.finalized
                    || state.snapshot.closed_at.is_none()
                    || billing < period.end()
                {
                    continue;
                }
                Self::finalize(
                    &self.config,
                    self.subscriptions.get(org_id),
                    org_id,
                    *period,
                    state,
                );
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
    pub(super) fn finalize(
        config: &FoldConfig,
        history: Option<&TierHistory>,
        org_id: &str,
        period: Period,
        state: &mut PeriodState,
    ) {
        let snap = &mut state.snapshot;
        snap.tier = tier_at(history, period.end());
        snap.finalized = true;
        let closes_at = period.closes_at(config.grace);
        let invoice = config.pricing.invoice(
            org_id,
            &period.to_string(),
            snap.tier,
            snap.billed(),
            Some(closes_at),
        );
        state.pending_notifications.push(NotificationV1::InvoiceFinalized(InvoiceFinalizedV1 {
            invoice: invoice.clone(),
        }));
        state.pending_invoice = Some(invoice);
        let closed_at = snap.closed_at.expect("only closed periods are finalized");
        state.mark_changed(closed_at);
    }
}
