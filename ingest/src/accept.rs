//! The pure part of ingest, the same for every format: from one decoded item to an accepted
//! record or a rejection.

use chrono::{DateTime, Utc};
use tally_metering::rules::{check_arrival_window, payload_bytes};
use tally_schemas::{FieldError, TraceCompletedRecordV1};

use tally_formats::{Decoded, NotAnEvent};

/// One element of a request, on its way to a result.
#[derive(Debug)]
pub struct Candidate {
    /// The event's id when it could be read, so the client can match the result to what it sent.
    pub event_id: Option<String>,
    pub outcome: Outcome,
}

#[derive(Debug)]
pub enum Outcome {
    /// Valid, measured, and (once the org registry agrees and Kafka acknowledged it) in the log.
    Accepted(TraceCompletedRecordV1),
    Rejected(FieldError),
    /// An OTLP span Tally does not meter.
    Unmapped,
}

impl Candidate {
    pub fn accepted(&self) -> Option<&TraceCompletedRecordV1> {
        match &self.outcome {
            Outcome::Accepted(record) => Some(record),
            _ => None,
        }
    }
}

/// Checks one item: the event's own rules, then its time against the arrival window, then
/// measures its payload. Everything except the org registry, which needs I/O.
pub fn accept(item: Decoded, arrival: DateTime<Utc>) -> Candidate {
    let event = match item.event {
        Ok(event) => event,
        Err(NotAnEvent::Rejected(error)) => {
            return Candidate { event_id: item.event_id, outcome: Outcome::Rejected(error) }
        }
        Err(NotAnEvent::Unmapped) => {
            return Candidate { event_id: item.event_id, outcome: Outcome::Unmapped }
        }
    };
    let outcome =
        event.validate().and_then(|()| check_arrival_window(event.ended_at, arrival)).map(|()| {
            let bytes = match (&event.payload, event.payload_bytes) {
                (Some(payload), _) => payload_bytes(payload),
                (None, Some(bytes)) => bytes,
                (None, None) => 0,
            };
            event.into_record(bytes)
        });
    Candidate {
        event_id: item.event_id,
        outcome: match outcome {
            Ok(record) => Outcome::Accepted(record),
            Err(error) => Outcome::Rejected(error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;
    use tally_formats::native::decode_element;
    use tally_schemas::FieldErrorCode;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T10:20:00Z").unwrap().with_timezone(&Utc)
    }

    fn check(text: &str, arrival: DateTime<Utc>) -> Candidate {
        accept(decode_element(Ok(&raw(text))), arrival)
    }

    fn rejection(c: Candidate) -> FieldErrorCode {
        match c.outcome {
            Outcome::Rejected(e) => e.code,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn measures_inline_payloads_and_keeps_precomputed_sizes() {
        let text = include_str!("../../schemas/examples/trace-completed.v1.root.json");
        let c = check(text, now());
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(c.accepted().unwrap().payload_bytes, payload_bytes(&value["payload"]));

        let text = include_str!("../../schemas/examples/trace-completed.v1.precomputed.json");
        let c = check(text, now() + chrono::Duration::days(1));
        assert_eq!(c.accepted().unwrap().payload_bytes, 18234);
    }

    #[test]
    fn rejections_keep_the_event_id_when_it_can_be_read() {
        let c = check(r#"{"event_id": "e9", "org_id": 5}"#, now());
        assert_eq!(c.event_id.as_deref(), Some("e9"));
        assert_eq!(rejection(c), FieldErrorCode::InvalidField);

        assert_eq!(rejection(check("[1]", now())), FieldErrorCode::MalformedEvent);

        let text = include_str!("../../schemas/examples/trace-completed.v1.root.json");
        let c = check(text, now() + chrono::Duration::days(40));
        assert!(c.event_id.is_some());
        assert_eq!(rejection(c), FieldErrorCode::OutOfWindow);
    }
}
