//! Every Kafka topic Tally uses, named in one place.
//!
//! The names are a contract: other teams' consumers subscribe to them. A change of format is a new
//! topic (`.v2`), never an edit of an existing one.
//!
//! A process may run in a *namespace* (`TALLY_NAMESPACE`, empty by default): a prefix on every
//! topic name, consumer group and transactional id, so several independent Tally deployments
//! (or test runs that write their own log times) can share one Kafka cluster.

use std::sync::OnceLock;

static NAMESPACE: OnceLock<String> = OnceLock::new();
static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();

/// Sets this process's namespace. Call it once, before any topic name is used.
pub fn set_namespace(namespace: &str) -> Result<(), String> {
    if namespace.len() > 40
        || !namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(format!("{namespace:?}: at most 40 of a-z, 0-9, '.', '_' and '-'"));
    }
    if NAMES.get().is_some() && NAMESPACE.get().map(String::as_str) != Some(namespace) {
        return Err("topic names were used before the namespace was set".into());
    }
    NAMESPACE.set(namespace.to_string()).or_else(|held| {
        if held == namespace {
            Ok(())
        } else {
            Err("the namespace is already set".into())
        }
    })
}

/// This process's namespace ("" unless set).
pub fn namespace() -> &'static str {
    NAMESPACE.get().map_or("", String::as_str)
}

/// `name` in this process's namespace: for consumer groups and transactional ids.
pub fn namespaced(name: &str) -> String {
    format!("{}{name}", namespace())
}

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
    /// Subscription changes and other billing facts (written by the api and, later, Stripe
    /// webhooks).
    BillingEvents,
    /// Notifications for downstream notifiers (threshold crossings, finalized invoices).
    Notifications,
    /// Invoice corrections recomputed from the log (`replay correct`), keyed by `org_id`. Part of
    /// what was billed: kept forever, like the input logs.
    Corrections,
}

impl Topic {
    pub const ALL: [Topic; 6] = [
        Topic::TraceEvents,
        Topic::Usage,
        Topic::AggregatorChangelog,
        Topic::BillingEvents,
        Topic::Notifications,
        Topic::Corrections,
    ];

    /// The topic's name in this process's namespace.
    pub fn name(self) -> &'static str {
        let names = NAMES.get_or_init(|| {
            Topic::ALL
                .iter()
                .map(|t| &*Box::leak(namespaced(t.base_name()).into_boxed_str()))
                .collect()
        });
        names[Topic::ALL.iter().position(|t| *t == self).expect("every topic is in ALL")]
    }

    /// The topic's name outside any namespace.
    pub const fn base_name(self) -> &'static str {
        match self {
            Topic::TraceEvents => "tally.trace-events.v1",
            Topic::Usage => "tally.usage.v1",
            Topic::AggregatorChangelog => "tally.aggregator-changelog.v1",
            Topic::BillingEvents => "tally.billing-events.v1",
            Topic::Notifications => "tally.notifications.v1",
            Topic::Corrections => "tally.corrections.v1",
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
        let mut names: Vec<_> = Topic::ALL.iter().map(|t| t.base_name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Topic::ALL.len());
        for name in names {
            assert!(name.starts_with("tally.") && name.ends_with(".v1"), "{name}");
        }
    }
}
