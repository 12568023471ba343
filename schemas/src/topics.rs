//! Every Kafka topic Tally uses, named in one place.
//!
//! The names are a contract: other teams' consumers subscribe to them. A change of format is a new
//! topic (`.v2`), never an edit of an existing one.

/// A topic of Tally's, with the settings it is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Accepted trace events and ticks, keyed by `org_id`, written by ingest. The billing source of
    /// truth: kept for as long as invoices may be disputed (forever on the local stack).
    TraceEvents,
    /// Cumulative per-(org, period) usage, keyed by `org_id/period`, written by the aggregator.
    Usage,
    /// The aggregator's recoverable state (period totals and dedup chunks), compacted. Partition
    /// `p` holds the state of input partition `p`.
    AggregatorChangelog,
    /// Subscription changes and other billing facts (written by the api and, later, Stripe webhooks).
    BillingEvents,
    /// Notifications for downstream notifiers (threshold crossings, finalized invoices).
    Notifications,
}

impl Topic {
    pub const ALL: [Topic; 5] = [
        Topic::TraceEvents,
        Topic::Usage,
        Topic::AggregatorChangelog,
        Topic::BillingEvents,
        Topic::Notifications,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Topic::TraceEvents => "tally.trace-events.v1",
            Topic::Usage => "tally.usage.v1",
            Topic::AggregatorChangelog => "tally.aggregator-changelog.v1",
            Topic::BillingEvents => "tally.billing-events.v1",
            Topic::Notifications => "tally.notifications.v1",
        }
    }

    /// Topic-level configs Tally creates the topic with. Retention is infinite on the local stack;
    /// docs/operations.md says what production needs.
    pub fn configs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Topic::AggregatorChangelog => &[
                ("cleanup.policy", "compact"),
                ("min.compaction.lag.ms", "0"),
                ("segment.ms", "3600000"),
            ],
            _ => &[("cleanup.policy", "delete"), ("retention.ms", "-1")],
        }
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_versioned_and_prefixed() {
        let mut names: Vec<_> = Topic::ALL.iter().map(|t| t.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Topic::ALL.len());
        for name in names {
            assert!(name.starts_with("tally.") && name.ends_with(".v1"), "{name}");
        }
    }
}
