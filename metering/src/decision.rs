//! The metering decision: what one delivery of a trace event is worth, billed or the reason it is
//! not. The fold asks it for every delivery and applies the answer; nothing else decides.

use tally_schemas::Status;

use crate::rules::{classify, Classification};

/// What one delivery of an event is worth. Every delivery gets exactly one, and each is counted
/// (`usage_totals.not_billed` and the aggregator's `tally_events_total{outcome}`): nothing
/// vanishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// A successful root span, first delivered while its period is open: one trace and its
    /// payload bytes.
    Billed,
    /// A span with a parent.
    ChildSpan,
    /// A root span that ended in `error` or `cancelled`.
    NotSuccess,
    /// The event id was delivered before in the same (org, period).
    Duplicate,
    /// The event's period had closed when it was delivered.
    Late,
}

impl Decision {
    pub const ALL: [Decision; 5] = [
        Decision::Billed,
        Decision::ChildSpan,
        Decision::NotSuccess,
        Decision::Duplicate,
        Decision::Late,
    ];

    /// The name used in metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Decision::Billed => "billed",
            Decision::ChildSpan => "child_span",
            Decision::NotSuccess => "not_success",
            Decision::Duplicate => "duplicate",
            Decision::Late => "late",
        }
    }
}

/// What the fold knows of a delivery when it arrives: the event's own facts, and the state of
/// the event's (org, period).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub is_root: bool,
    pub status: Status,
    /// The event id was seen before in this (org, period): counted while the period was open,
    /// or seen late once it had closed.
    pub seen_before: bool,
    /// The period has closed (the partition's watermark reached its end plus the grace).
    pub period_closed: bool,
}

/// The rule, in order: a repeated id is a duplicate (also after the close, so a late event
/// delivered twice is listed once); then a closed period makes it late; then only successful
/// root spans bill ([`classify`]).
pub fn decide(delivery: Delivery) -> Decision {
    if delivery.seen_before {
        return Decision::Duplicate;
    }
    if delivery.period_closed {
        return Decision::Late;
    }
    match classify(delivery.is_root, delivery.status) {
        Classification::Billable => Decision::Billed,
        Classification::ChildSpan => Decision::ChildSpan,
        Classification::NotSuccess => Decision::NotSuccess,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(is_root: bool, status: Status, seen_before: bool, period_closed: bool) -> Delivery {
        Delivery { is_root, status, seen_before, period_closed }
    }

    #[test]
    fn the_decision_table() {
        use Decision::*;
        use Status::*;
        let table = [
            (delivery(true, Success, false, false), Billed),
            (delivery(false, Success, false, false), ChildSpan),
            (delivery(true, Error, false, false), NotSuccess),
            (delivery(true, Cancelled, false, false), NotSuccess),
            (delivery(true, Success, true, false), Duplicate),
            (delivery(true, Success, true, true), Duplicate),
            (delivery(false, Error, true, true), Duplicate),
            (delivery(true, Success, false, true), Late),
            (delivery(false, Error, false, true), Late),
        ];
        for (d, expected) in table {
            assert_eq!(decide(d), expected, "{d:?}");
        }
    }
}
