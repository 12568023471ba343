//! Admitting a request's events, the same for every format: the orgs are checked against the
//! registry, then every accepted event is written to the log. A request is accepted whole or not
//! at all: if Kafka does not acknowledge every event, none is reported accepted.

use chrono::{DateTime, Utc};
use tally_schemas::{FieldError, FieldErrorCode};

use crate::accept::{Candidate, Outcome};
use crate::metrics;
use crate::publish::{PublishError, Publisher};
use crate::registry::{Grant, Registry};

/// What a request came to, once Kafka acknowledged its events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub accepted: usize,
    pub rejected: usize,
    pub unmapped: usize,
}

/// Rejects the events of orgs the key may not send for, then those of orgs the registry does not
/// know, publishes the rest with the request's arrival time, and counts the outcomes. The key's
/// grant is checked first, so that a key learns nothing of orgs outside it (not even whether
/// they exist).
pub async fn admit(
    registry: &Registry,
    grant: &Grant,
    publisher: &Publisher,
    candidates: &mut [Candidate],
    arrival: DateTime<Utc>,
) -> Result<Admitted, PublishError> {
    for candidate in candidates.iter_mut() {
        if let Outcome::Accepted(record) = &candidate.outcome {
            if !grant.allows(&record.org_id) {
                candidate.outcome = Outcome::Rejected(FieldError::new(
                    FieldErrorCode::OrgNotAllowed,
                    format!("org_id: this key may not send events for org {:?}", record.org_id),
                ));
            }
        }
    }
    let unknown = registry
        .unknown_orgs(candidates.iter().filter_map(Candidate::accepted).map(|r| r.org_id.as_str()))
        .await;
    if !unknown.is_empty() {
        for candidate in candidates.iter_mut() {
            if let Outcome::Accepted(record) = &candidate.outcome {
                if unknown.contains(&record.org_id) {
                    candidate.outcome = Outcome::Rejected(FieldError::new(
                        FieldErrorCode::UnknownOrg,
                        format!("org_id: no org {:?}", record.org_id),
                    ));
                }
            }
        }
    }

    let accepted: Vec<_> = candidates.iter().filter_map(Candidate::accepted).collect();
    if !accepted.is_empty() {
        if let Err(e) = publisher.publish_all(&accepted, arrival.timestamp_millis()).await {
            tracing::warn!(error = %e, events = accepted.len(), "could not write to kafka");
            return Err(e);
        }
    }
    metrics::PAYLOAD_BYTES.inc_by(accepted.iter().map(|r| r.payload_bytes).sum());

    let mut admitted = Admitted::default();
    for candidate in candidates.iter() {
        match &candidate.outcome {
            Outcome::Accepted(_) => admitted.accepted += 1,
            Outcome::Rejected(e) => {
                admitted.rejected += 1;
                metrics::EVENTS.with_label_values(&[e.code.as_str()]).inc();
            }
            Outcome::Unmapped => admitted.unmapped += 1,
        }
    }
    metrics::EVENTS.with_label_values(&["accepted"]).inc_by(admitted.accepted as u64);
    metrics::UNMAPPED_SPANS.inc_by(admitted.unmapped as u64);
    Ok(admitted)
}
