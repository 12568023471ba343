//! The pure part of ingest: from one raw element to an accepted record or a rejection.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use tally_metering::rules::{check_arrival_window, payload_bytes};
use tally_schemas::{FieldError, FieldErrorCode, TraceCompletedRecordV1, TraceCompletedV1};

use crate::body::Element;

/// One event of a request, on its way to a result.
#[derive(Debug)]
pub struct Candidate {
    /// The event's id when it could be read, even from an invalid event, so the client can match
    /// the result to what it sent.
    pub event_id: Option<String>,
    pub outcome: Result<TraceCompletedRecordV1, FieldError>,
}

#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow)]
    event_id: Option<&'a RawValue>,
}

fn event_id_of(raw: &RawValue) -> Option<String> {
    let id: IdOnly<'_> = serde_json::from_str(raw.get()).ok()?;
    serde_json::from_str::<String>(id.event_id?.get()).ok()
}

/// Decodes and checks one element; everything except the org registry, which needs I/O.
pub fn decode_element(element: Element<'_>, arrival: DateTime<Utc>) -> Candidate {
    let raw = match element {
        Ok(raw) => raw,
        Err(e) => {
            return Candidate {
                event_id: None,
                outcome: Err(FieldError::new(
                    FieldErrorCode::MalformedEvent,
                    format!("not a JSON value: {e}"),
                )),
            }
        }
    };
    if !raw.get().trim_start().starts_with('{') {
        return Candidate {
            event_id: None,
            outcome: Err(FieldError::new(
                FieldErrorCode::MalformedEvent,
                "an event must be a JSON object",
            )),
        };
    }
    let event: TraceCompletedV1 = match serde_json::from_str(raw.get()) {
        Ok(event) => event,
        Err(e) => {
            return Candidate {
                event_id: event_id_of(raw),
                outcome: Err(FieldError::from_serde(&e)),
            }
        }
    };
    let event_id = Some(event.event_id.clone());
    let outcome =
        event.validate().and_then(|()| check_arrival_window(event.ended_at, arrival)).map(|()| {
            let bytes = match (&event.payload, event.payload_bytes) {
                (Some(payload), _) => payload_bytes(payload),
                (None, Some(bytes)) => bytes,
                (None, None) => 0,
            };
            event.into_record(bytes)
        });
    Candidate { event_id, outcome }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T10:20:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn measures_inline_payloads_and_keeps_precomputed_sizes() {
        let text = include_str!("../../schemas/examples/trace-completed.v1.root.json");
        let c = decode_element(Ok(&raw(text)), now());
        let record = c.outcome.unwrap();
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(record.payload_bytes, payload_bytes(&value["payload"]));

        let text = include_str!("../../schemas/examples/trace-completed.v1.precomputed.json");
        let c = decode_element(Ok(&raw(text)), now() + chrono::Duration::days(1));
        assert_eq!(c.outcome.unwrap().payload_bytes, 18234);
    }

    #[test]
    fn rejections_keep_the_event_id_when_it_can_be_read() {
        let c = decode_element(Ok(&raw(r#"{"event_id": "e9", "org_id": 5}"#)), now());
        assert_eq!(c.event_id.as_deref(), Some("e9"));
        assert_eq!(c.outcome.unwrap_err().code, FieldErrorCode::InvalidField);

        let c = decode_element(Ok(&raw("[1]")), now());
        assert_eq!(c.outcome.unwrap_err().code, FieldErrorCode::MalformedEvent);

        let text = include_str!("../../schemas/examples/trace-completed.v1.root.json");
        let c = decode_element(Ok(&raw(text)), now() + chrono::Duration::days(40));
        assert_eq!(c.outcome.unwrap_err().code, FieldErrorCode::OutOfWindow);
    }
}
