//! From one OTLP span to one `TraceCompleted` event: the mapping rules of docs/otlp.md ("From a
//! span to an event"). Pure; the event then goes through the same validation and metering as a
//! native one.

use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span};
use tally_schemas::{FieldError, FieldErrorCode, Operation, Status, TraceCompletedV1};

use super::payload;
use crate::{Decoded, NotAnEvent};

/// The org the span is billed to: on the span, else on its resource.
pub const ORG_ID: &str = "tally.org_id";
/// One of Tally's six operation names; wins over the GenAI conventions' operation.
pub const OPERATION: &str = "tally.operation";
/// The compressed payload size, for services that measure it themselves.
pub const PAYLOAD_BYTES: &str = "tally.payload_bytes";
/// The GenAI semantic conventions' operation name.
pub const GEN_AI_OPERATION: &str = "gen_ai.operation.name";

/// The operation a `gen_ai.operation.name` value is metered as; `None`: not metered.
pub fn gen_ai_operation(name: &str) -> Option<Operation> {
    match name {
        "chat" | "text_completion" | "generate_content" => Some(Operation::LlmCall),
        "embeddings" => Some(Operation::Embedding),
        "execute_tool" => Some(Operation::ToolCall),
        _ => None,
    }
}

/// The id of a span's event: `otlp-` + the trace id + `-` + the span id, in lower-case hex. A
/// re-export of the same span has the same id and is counted once.
pub fn event_id(trace_id: &[u8], span_id: &[u8]) -> String {
    format!("otlp-{}-{}", hex::encode(trace_id), hex::encode(span_id))
}

/// Maps one span, with the attributes of the resource it came from.
pub fn map(span: &Span, resource: &[KeyValue]) -> Decoded {
    if let Err(error) = check_ids(span) {
        return Decoded::rejected(None, error);
    }
    let event_id = event_id(&span.trace_id, &span.span_id);
    let event = match to_event(span, resource, &event_id) {
        Ok(Some(event)) => Ok(event),
        Ok(None) => Err(NotAnEvent::Unmapped),
        Err(error) => Err(NotAnEvent::Rejected(error)),
    };
    Decoded { event_id: Some(event_id), event }
}

fn invalid(field: &str, rule: &str) -> FieldError {
    FieldError::new(FieldErrorCode::InvalidField, format!("{field}: {rule}"))
}

/// OTLP's ids: a 16-byte trace id and an 8-byte span id, neither all zeros; a parent span id of 8
/// bytes or none.
fn check_ids(span: &Span) -> Result<(), FieldError> {
    let valid = |id: &[u8], len: usize| id.len() == len && id.iter().any(|&b| b != 0);
    if !valid(&span.trace_id, 16) {
        return Err(invalid("trace_id", "must be 16 bytes, not all zero"));
    }
    if !valid(&span.span_id, 8) {
        return Err(invalid("span_id", "must be 8 bytes, not all zero"));
    }
    if !span.parent_span_id.is_empty() && !valid(&span.parent_span_id, 8) {
        return Err(invalid("parent_span_id", "must be empty or 8 bytes, not all zero"));
    }
    Ok(())
}

/// The first attribute with this key (OTLP keys are unique; if a sender repeats one, the first
/// counts, here and in the payload).
pub fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
}

fn string_attribute<'a>(
    attributes: &'a [KeyValue],
    key: &str,
) -> Result<Option<&'a str>, FieldError> {
    match attribute(attributes, key) {
        None => Ok(None),
        Some(any_value::Value::StringValue(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(key, "must be a string")),
    }
}

/// `tally.operation` if set (and then it must be one of the six names), else the GenAI
/// operation; `None` when neither names an operation Tally meters.
fn operation(attributes: &[KeyValue]) -> Result<Option<Operation>, FieldError> {
    if let Some(name) = string_attribute(attributes, OPERATION)? {
        let names = Operation::ALL.map(Operation::as_str).join(", ");
        return Operation::parse(name)
            .map(Some)
            .ok_or_else(|| invalid(OPERATION, &format!("must be one of {names}")));
    }
    Ok(match attribute(attributes, GEN_AI_OPERATION) {
        Some(any_value::Value::StringValue(name)) => gen_ai_operation(name),
        _ => None,
    })
}

fn time(field: &str, unix_nanos: u64) -> Result<DateTime<Utc>, FieldError> {
    i64::try_from(unix_nanos)
        .map(DateTime::from_timestamp_nanos)
        .map_err(|_| invalid(field, "must be a time before the year 2262"))
}

fn to_event(
    span: &Span,
    resource: &[KeyValue],
    event_id: &str,
) -> Result<Option<TraceCompletedV1>, FieldError> {
    let Some(operation) = operation(&span.attributes)? else {
        return Ok(None);
    };
    let org_id = match string_attribute(&span.attributes, ORG_ID)? {
        Some(org) => org,
        None => string_attribute(resource, ORG_ID)?.ok_or_else(|| {
            FieldError::new(
                FieldErrorCode::MissingField,
                format!("{ORG_ID}: set it on the span or on its resource"),
            )
        })?,
    };
    let status = match &span.status {
        Some(status) if status.code == StatusCode::Error as i32 => Status::Error,
        _ => Status::Success,
    };
    let (payload, payload_bytes) = match attribute(&span.attributes, PAYLOAD_BYTES) {
        Some(any_value::Value::IntValue(bytes)) => {
            let bytes = u64::try_from(*bytes)
                .map_err(|_| invalid(PAYLOAD_BYTES, "must not be negative"))?;
            (None, Some(bytes))
        }
        Some(_) => return Err(invalid(PAYLOAD_BYTES, "must be an integer")),
        None => (Some(payload::canonical(span)), None),
    };
    Ok(Some(TraceCompletedV1 {
        event_id: event_id.to_string(),
        org_id: org_id.to_string(),
        trace_id: hex::encode(&span.trace_id),
        span_id: hex::encode(&span.span_id),
        parent_span_id: (!span.parent_span_id.is_empty())
            .then(|| hex::encode(&span.parent_span_id)),
        operation,
        status,
        started_at: time("start_time_unix_nano", span.start_time_unix_nano)?,
        ended_at: time("end_time_unix_nano", span.end_time_unix_nano)?,
        payload,
        payload_bytes,
        attributes: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::test_values::{kv, s};
    use opentelemetry_proto::tonic::trace::v1::Status as SpanStatus;

    fn span(attributes: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08],
            name: "chat gpt-4o".into(),
            start_time_unix_nano: 1_764_325_200_000_000_000,
            end_time_unix_nano: 1_764_325_200_250_000_000,
            attributes,
            ..Default::default()
        }
    }

    fn event(mapped: Decoded) -> TraceCompletedV1 {
        mapped.event.expect("an event")
    }

    fn rejection(mapped: Decoded) -> FieldError {
        match mapped.event {
            Err(NotAnEvent::Rejected(e)) => e,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_gen_ai_chat_span_is_an_llm_call_of_the_resource_org() {
        let resource = [kv(ORG_ID, s("acme")), kv("service.name", s("chat"))];
        let mapped = map(&span(vec![kv(GEN_AI_OPERATION, s("chat"))]), &resource);
        let e = event(mapped.clone());
        assert_eq!(mapped.event_id, Some(e.event_id.clone()));
        assert_eq!(e.event_id, format!("otlp-{}-0102030405060708", "ab".repeat(16)));
        assert_eq!(e.org_id, "acme");
        assert_eq!(e.operation, Operation::LlmCall);
        assert_eq!(e.status, Status::Success);
        assert_eq!(e.trace_id, "ab".repeat(16));
        assert_eq!(e.span_id, "0102030405060708");
        assert!(e.is_root());
        assert_eq!(e.started_at.to_rfc3339(), "2025-11-28T10:20:00+00:00");
        assert_eq!(e.ended_at.timestamp_subsec_millis(), 250);
        assert_eq!(
            e.payload,
            Some(
                serde_json::json!({"attributes": {"gen_ai.operation.name": "chat"}, "events": []})
            )
        );
        assert_eq!(e.payload_bytes, None);
        assert!(e.validate().is_ok());
    }

    #[test]
    fn every_gen_ai_operation_maps_as_documented() {
        for (name, operation) in [
            ("chat", Some(Operation::LlmCall)),
            ("text_completion", Some(Operation::LlmCall)),
            ("generate_content", Some(Operation::LlmCall)),
            ("embeddings", Some(Operation::Embedding)),
            ("execute_tool", Some(Operation::ToolCall)),
            ("invoke_agent", None),
            ("create_agent", None),
            ("", None),
        ] {
            assert_eq!(gen_ai_operation(name), operation, "{name}");
        }
    }

    #[test]
    fn the_span_wins_over_the_resource_and_tally_operation_over_gen_ai() {
        let resource = [kv(ORG_ID, s("resource-org"))];
        let attributes = vec![
            kv(GEN_AI_OPERATION, s("chat")),
            kv(OPERATION, s("retrieval")),
            kv(ORG_ID, s("span-org")),
        ];
        let e = event(map(&span(attributes), &resource));
        assert_eq!((e.org_id.as_str(), e.operation), ("span-org", Operation::Retrieval));
    }

    #[test]
    fn spans_without_an_operation_are_unmapped_whatever_else_they_lack() {
        for attributes in [
            vec![],
            vec![kv(GEN_AI_OPERATION, s("invoke_agent")), kv(ORG_ID, s("acme"))],
            vec![kv(GEN_AI_OPERATION, any_value::Value::IntValue(3))],
        ] {
            let mapped = map(&span(attributes), &[]);
            assert!(mapped.event_id.is_some());
            assert_eq!(mapped.event.unwrap_err(), NotAnEvent::Unmapped);
        }
    }

    #[test]
    fn errors_children_and_explicit_sizes() {
        let mut child = span(vec![
            kv(OPERATION, s("tool_call")),
            kv(ORG_ID, s("acme")),
            kv(PAYLOAD_BYTES, any_value::Value::IntValue(18_234)),
            kv("big", s(&"x".repeat(10_000))),
        ]);
        child.parent_span_id = vec![9; 8];
        child.status = Some(SpanStatus { code: StatusCode::Error as i32, message: "boom".into() });
        let e = event(map(&child, &[]));
        assert_eq!(e.parent_span_id.as_deref(), Some("0909090909090909"));
        assert_eq!(e.status, Status::Error);
        assert_eq!((e.payload, e.payload_bytes), (None, Some(18_234)));

        child.status = Some(SpanStatus { code: StatusCode::Ok as i32, message: String::new() });
        assert_eq!(event(map(&child, &[])).status, Status::Success);
    }

    #[test]
    fn broken_spans_are_rejected_with_a_code() {
        let ok = || vec![kv(OPERATION, s("embedding")), kv(ORG_ID, s("acme"))];
        let cases: Vec<(Span, FieldErrorCode, &str)> = vec![
            (
                Span { trace_id: vec![1; 15], ..span(ok()) },
                FieldErrorCode::InvalidField,
                "trace_id",
            ),
            (
                Span { trace_id: vec![0; 16], ..span(ok()) },
                FieldErrorCode::InvalidField,
                "trace_id",
            ),
            (Span { span_id: vec![1; 16], ..span(ok()) }, FieldErrorCode::InvalidField, "span_id"),
            (
                Span { parent_span_id: vec![1; 4], ..span(ok()) },
                FieldErrorCode::InvalidField,
                "parent_span_id",
            ),
            (span(vec![kv(OPERATION, s("embedding"))]), FieldErrorCode::MissingField, ORG_ID),
            (
                span(vec![
                    kv(OPERATION, s("embedding")),
                    kv(ORG_ID, any_value::Value::IntValue(1)),
                ]),
                FieldErrorCode::InvalidField,
                ORG_ID,
            ),
            (span(vec![kv(OPERATION, s("llm"))]), FieldErrorCode::InvalidField, OPERATION),
            (
                span([ok(), vec![kv(PAYLOAD_BYTES, any_value::Value::IntValue(-1))]].concat()),
                FieldErrorCode::InvalidField,
                PAYLOAD_BYTES,
            ),
            (
                span([ok(), vec![kv(PAYLOAD_BYTES, s("12"))]].concat()),
                FieldErrorCode::InvalidField,
                PAYLOAD_BYTES,
            ),
            (
                Span { end_time_unix_nano: u64::MAX, ..span(ok()) },
                FieldErrorCode::InvalidField,
                "end_time_unix_nano",
            ),
        ];
        for (span, code, field) in cases {
            let e = rejection(map(&span, &[]));
            assert_eq!(e.code, code, "{e}");
            assert!(e.message.starts_with(field), "{e}");
        }
        // An id of the wrong length names no event; any later rule's rejection does.
        assert_eq!(map(&Span { span_id: vec![], ..span(ok()) }, &[]).event_id, None);
        assert!(map(&span(vec![kv(OPERATION, s("x"))]), &[]).event_id.is_some());
    }
}
