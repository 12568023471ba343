//! The trace-completion event, as emitters send it and as ingest records it in the log.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a traced span did. A closed set: anything else is rejected at ingest.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    LlmCall,
    ToolCall,
    Retrieval,
    Embedding,
    PromptGeneration,
    ResponseProcessing,
}

impl Operation {
    pub const ALL: [Operation; 6] = [
        Operation::LlmCall,
        Operation::ToolCall,
        Operation::Retrieval,
        Operation::Embedding,
        Operation::PromptGeneration,
        Operation::ResponseProcessing,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::LlmCall => "llm_call",
            Operation::ToolCall => "tool_call",
            Operation::Retrieval => "retrieval",
            Operation::Embedding => "embedding",
            Operation::PromptGeneration => "prompt_generation",
            Operation::ResponseProcessing => "response_processing",
        }
    }

    pub fn parse(s: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.as_str() == s)
    }
}

/// How the span ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Success,
    Error,
    Cancelled,
}

/// `TraceCompleted` v1: one finished span, as an emitting service sends it to ingest.
///
/// `event_id` is the idempotency key: however often an event is delivered, it is counted at most
/// once. Unknown fields are rejected so that a typo never silently loses data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "TraceCompleted v1")]
pub struct TraceCompletedV1 {
    /// 1–128 characters of `[A-Za-z0-9._:-]`; unique per event.
    pub event_id: String,
    /// 1–64 characters of `[A-Za-z0-9._-]`; the org must exist.
    pub org_id: String,
    /// 1–64 characters.
    pub trace_id: String,
    /// 1–64 characters.
    pub span_id: String,
    /// Null or absent for a root span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    pub operation: Operation,
    pub status: Status,
    /// RFC 3339; not after `ended_at`.
    #[serde(with = "crate::rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub started_at: DateTime<Utc>,
    /// RFC 3339; decides the billing period (the UTC month containing it).
    #[serde(with = "crate::rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub ended_at: DateTime<Utc>,
    /// The trace's content; metered as the length of its gzip-compressed compact JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// The compressed payload size, for emitters that compress and store payloads themselves.
    /// Never together with `payload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<u64>,
    /// At most 64 keys; string values of at most 1 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
}

/// Limits on an event's fields, enforced by [`TraceCompletedV1::validate`].
pub mod limits {
    pub const EVENT_ID_MAX: usize = 128;
    pub const ORG_ID_MAX: usize = 64;
    pub const TRACE_ID_MAX: usize = 64;
    pub const SPAN_ID_MAX: usize = 64;
    pub const ATTRIBUTES_MAX_KEYS: usize = 64;
    pub const ATTRIBUTE_KEY_MAX: usize = 256;
    pub const ATTRIBUTE_VALUE_MAX: usize = 1024;
    /// A precomputed `payload_bytes` above 256 MiB is refused: about 2,700 times the 100 KB a trace
    /// averages in the tiers' included quotas, and the most one key can claim per event
    /// (docs/security.md).
    pub const PAYLOAD_BYTES_MAX: u64 = 256 << 20;
}

/// The stable error codes an event can be rejected with (see README, "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldErrorCode {
    /// The element is not a JSON object of the event's shape.
    MalformedEvent,
    UnknownField,
    MissingField,
    /// A field has the wrong type or breaks its rule.
    InvalidField,
    /// `ended_at` is more than 35 days before arrival or more than 5 minutes after it.
    OutOfWindow,
    /// The org does not exist.
    UnknownOrg,
    /// The key may not send events for this org (an org's ingest key sends only for its org; a
    /// service key only for the orgs it lists).
    OrgNotAllowed,
}

impl FieldErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            FieldErrorCode::MalformedEvent => "malformed_event",
            FieldErrorCode::UnknownField => "unknown_field",
            FieldErrorCode::MissingField => "missing_field",
            FieldErrorCode::InvalidField => "invalid_field",
            FieldErrorCode::OutOfWindow => "out_of_window",
            FieldErrorCode::UnknownOrg => "unknown_org",
            FieldErrorCode::OrgNotAllowed => "org_not_allowed",
        }
    }
}

/// Why one event was rejected: a stable code and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub code: FieldErrorCode,
    pub message: String,
}

impl FieldError {
    pub fn new(code: FieldErrorCode, message: impl Into<String>) -> Self {
        FieldError { code, message: message.into() }
    }

    fn invalid(field: &str, rule: &str) -> Self {
        FieldError::new(FieldErrorCode::InvalidField, format!("{field}: {rule}"))
    }

    /// Classifies a serde_json error from decoding one event.
    pub fn from_serde(err: &serde_json::Error) -> Self {
        let message = err.to_string();
        let code = if message.starts_with("unknown field") {
            FieldErrorCode::UnknownField
        } else if message.starts_with("missing field") {
            FieldErrorCode::MissingField
        } else if err.is_syntax() || err.is_eof() {
            FieldErrorCode::MalformedEvent
        } else {
            FieldErrorCode::InvalidField
        };
        // serde's position ("at line 1 column 80") is about the element, not the request: drop it.
        let message = match message.find(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        FieldError::new(code, message)
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

fn check_id(field: &str, value: &str, max: usize, extra: &[char]) -> Result<(), FieldError> {
    if value.is_empty() || value.len() > max {
        return Err(FieldError::invalid(field, &format!("must be 1-{max} characters")));
    }
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c)) {
        let allowed: String = extra.iter().collect();
        return Err(FieldError::invalid(
            field,
            &format!("may contain only letters, digits and `{allowed}`"),
        ));
    }
    Ok(())
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.is_empty() || value.chars().count() > max {
        return Err(FieldError::invalid(field, &format!("must be 1-{max} characters")));
    }
    Ok(())
}

/// Checks an org id's format (also used by the api when an org is created).
pub fn validate_org_id(org_id: &str) -> Result<(), FieldError> {
    check_id("org_id", org_id, limits::ORG_ID_MAX, &['.', '_', '-'])
}

impl TraceCompletedV1 {
    /// Checks every rule that needs nothing but the event itself. Time-window and org checks
    /// need the arrival time and the org registry and are made by ingest.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_id("event_id", &self.event_id, limits::EVENT_ID_MAX, &['.', '_', ':', '-'])?;
        validate_org_id(&self.org_id)?;
        check_len("trace_id", &self.trace_id, limits::TRACE_ID_MAX)?;
        check_len("span_id", &self.span_id, limits::SPAN_ID_MAX)?;
        if let Some(parent) = &self.parent_span_id {
            check_len("parent_span_id", parent, limits::SPAN_ID_MAX)?;
        }
        if self.started_at > self.ended_at {
            return Err(FieldError::invalid("started_at", "must not be after ended_at"));
        }
        if self.payload.is_some() && self.payload_bytes.is_some() {
            return Err(FieldError::invalid(
                "payload_bytes",
                "must not be sent together with payload",
            ));
        }
        if self.payload_bytes.is_some_and(|b| b > limits::PAYLOAD_BYTES_MAX) {
            return Err(FieldError::invalid(
                "payload_bytes",
                "must be at most 268435456 (256 MiB)",
            ));
        }
        if let Some(attributes) = &self.attributes {
            if attributes.len() > limits::ATTRIBUTES_MAX_KEYS {
                return Err(FieldError::invalid(
                    "attributes",
                    &format!("at most {} keys", limits::ATTRIBUTES_MAX_KEYS),
                ));
            }
            for (key, value) in attributes {
                if key.is_empty() || key.len() > limits::ATTRIBUTE_KEY_MAX {
                    return Err(FieldError::invalid(
                        "attributes",
                        &format!("keys must be 1-{} bytes", limits::ATTRIBUTE_KEY_MAX),
                    ));
                }
                if value.len() > limits::ATTRIBUTE_VALUE_MAX {
                    return Err(FieldError::invalid(
                        &format!("attributes.{key}"),
                        &format!("values must be at most {} bytes", limits::ATTRIBUTE_VALUE_MAX),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether this span is the root of its trace.
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_none()
    }

    /// The record ingest logs for this event, once its payload has been measured.
    pub fn into_record(self, payload_bytes: u64) -> TraceCompletedRecordV1 {
        TraceCompletedRecordV1 {
            event_id: self.event_id,
            org_id: self.org_id,
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            operation: self.operation,
            status: self.status,
            started_at: self.started_at,
            ended_at: self.ended_at,
            payload_bytes,
            attributes: self.attributes,
        }
    }
}

/// A trace event as recorded in `tally.trace-events.v1`: the event with its payload replaced by
/// its metered size. The payload itself is not kept in the billing log. The arrival time is the
/// Kafka record's timestamp, set by ingest when it accepted the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TraceCompletedRecordV1 {
    pub event_id: String,
    pub org_id: String,
    pub trace_id: String,
    pub span_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    pub operation: Operation,
    pub status: Status,
    #[serde(with = "crate::rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "crate::rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub ended_at: DateTime<Utc>,
    /// Gzip-compressed size of the payload, computed once at ingest (or sent by the emitter).
    pub payload_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
}

impl TraceCompletedRecordV1 {
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_none()
    }
}

/// One record of `tally.trace-events.v1`.
///
/// Ticks carry no data: their timestamp tells the aggregator that time has passed in that
/// partition, so billing periods close even when no org sends anything (docs/metering.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TraceEventRecordV1 {
    TraceCompleted(TraceCompletedRecordV1),
    Tick,
}

/// A trace event borrowed from the bytes of its record: the fields that decide usage, without
/// copying its strings (a string with escapes is the only one copied). What
/// [`TraceEventRecordV1::from_json_borrowed`] gives the aggregator's and the replay tool's fold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceCompletedRef<'a> {
    pub event_id: Cow<'a, str>,
    pub org_id: Cow<'a, str>,
    pub is_root: bool,
    pub operation: Operation,
    pub status: Status,
    pub ended_at: DateTime<Utc>,
    pub payload_bytes: u64,
}

/// One record of `tally.trace-events.v1`, borrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceEventRecordRef<'a> {
    TraceCompleted(TraceCompletedRef<'a>),
    Tick,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireKind {
    TraceCompleted,
    Tick,
}

/// The record as it is on the wire: one struct for both decoders, so they accept and refuse
/// exactly the same records.
#[derive(Deserialize)]
struct WireRecord<'a> {
    kind: WireKind,
    #[serde(default, borrow, deserialize_with = "borrowed_str")]
    event_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_str")]
    org_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_str")]
    trace_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_str")]
    span_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_str")]
    parent_span_id: Option<Cow<'a, str>>,
    operation: Option<Operation>,
    status: Option<Status>,
    #[serde(default, deserialize_with = "crate::rfc3339::option::deserialize")]
    started_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "crate::rfc3339::option::deserialize")]
    ended_at: Option<DateTime<Utc>>,
    payload_bytes: Option<u64>,
    #[serde(default, borrow)]
    attributes: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
}

/// An optional string borrowed from the record when it has no escapes. (serde borrows a
/// `Cow<str>` only when it is a field of its own; inside an `Option` it would always copy.)
fn borrowed_str<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'a>>::deserialize(d)?.map(|b| b.0))
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T, serde_json::Error> {
    value.ok_or_else(|| serde::de::Error::missing_field(field))
}

impl<'a> WireRecord<'a> {
    fn parse(bytes: &'a [u8]) -> Result<WireRecord<'a>, serde_json::Error> {
        // One UTF-8 check of the whole record is cheaper than serde_json's check of every string.
        let text = std::str::from_utf8(bytes).map_err(|e| {
            <serde_json::Error as serde::de::Error>::custom(format!("record is not UTF-8: {e}"))
        })?;
        serde_json::from_str(text)
    }
}

impl TraceEventRecordV1 {
    /// Decodes one record of `tally.trace-events.v1`: the same result as
    /// `serde_json::from_slice`, without serde's buffering of internally tagged enums, which
    /// costs more than the fold itself on the aggregator's hot path.
    pub fn from_json(bytes: &[u8]) -> Result<TraceEventRecordV1, serde_json::Error> {
        let wire = WireRecord::parse(bytes)?;
        Ok(match wire.kind {
            WireKind::Tick => TraceEventRecordV1::Tick,
            WireKind::TraceCompleted => {
                TraceEventRecordV1::TraceCompleted(TraceCompletedRecordV1 {
                    event_id: required(wire.event_id, "event_id")?.into_owned(),
                    org_id: required(wire.org_id, "org_id")?.into_owned(),
                    trace_id: required(wire.trace_id, "trace_id")?.into_owned(),
                    span_id: required(wire.span_id, "span_id")?.into_owned(),
                    parent_span_id: wire.parent_span_id.map(Cow::into_owned),
                    operation: required(wire.operation, "operation")?,
                    status: required(wire.status, "status")?,
                    started_at: required(wire.started_at, "started_at")?,
                    ended_at: required(wire.ended_at, "ended_at")?,
                    payload_bytes: required(wire.payload_bytes, "payload_bytes")?,
                    attributes: wire.attributes.map(|a| {
                        a.into_iter().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
                    }),
                })
            }
        })
    }

    /// Decodes one record without copying its strings: accepts and refuses exactly what
    /// [`TraceEventRecordV1::from_json`] does (the same wire struct and checks), and gives the
    /// fields that decide usage.
    pub fn from_json_borrowed(bytes: &[u8]) -> Result<TraceEventRecordRef<'_>, serde_json::Error> {
        let wire = WireRecord::parse(bytes)?;
        Ok(match wire.kind {
            WireKind::Tick => TraceEventRecordRef::Tick,
            WireKind::TraceCompleted => {
                let event_id = required(wire.event_id, "event_id")?;
                let org_id = required(wire.org_id, "org_id")?;
                required(wire.trace_id, "trace_id")?;
                required(wire.span_id, "span_id")?;
                let operation = required(wire.operation, "operation")?;
                let status = required(wire.status, "status")?;
                required(wire.started_at, "started_at")?;
                TraceEventRecordRef::TraceCompleted(TraceCompletedRef {
                    event_id,
                    org_id,
                    is_root: wire.parent_span_id.is_none(),
                    operation,
                    status,
                    ended_at: required(wire.ended_at, "ended_at")?,
                    payload_bytes: required(wire.payload_bytes, "payload_bytes")?,
                })
            }
        })
    }
}

impl TraceCompletedRecordV1 {
    /// The fields that decide usage, borrowed.
    pub fn usage_fields(&self) -> TraceCompletedRef<'_> {
        TraceCompletedRef {
            event_id: Cow::Borrowed(&self.event_id),
            org_id: Cow::Borrowed(&self.org_id),
            is_root: self.is_root(),
            operation: self.operation,
            status: self.status,
            ended_at: self.ended_at,
            payload_bytes: self.payload_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_record_decoding_agrees_with_serde() {
        for text in [
            include_str!("../examples/trace-event-record.v1.json"),
            include_str!("../examples/trace-event-record.v1.tick.json"),
        ] {
            let slow: TraceEventRecordV1 = serde_json::from_str(text).unwrap();
            assert_eq!(TraceEventRecordV1::from_json(text.as_bytes()).unwrap(), slow);
        }
        let mut value: serde_json::Value =
            serde_json::from_str(include_str!("../examples/trace-event-record.v1.json")).unwrap();
        value.as_object_mut().unwrap().remove("payload_bytes");
        let text = serde_json::to_vec(&value).unwrap();
        assert!(serde_json::from_slice::<TraceEventRecordV1>(&text).is_err());
        assert!(TraceEventRecordV1::from_json(&text).is_err());
        assert!(TraceEventRecordV1::from_json(br#"{"kind":"other"}"#).is_err());
        assert!(TraceEventRecordV1::from_json(b"[]").is_err());
    }

    /// The borrowed decoder accepts and refuses exactly what the owned one does, and agrees with
    /// it on every field the fold reads; records are mutated field by field from the golden one.
    #[test]
    fn borrowed_decoding_agrees_with_owned_decoding() {
        let golden: serde_json::Value =
            serde_json::from_str(include_str!("../examples/trace-event-record.v1.json")).unwrap();
        let mut cases: Vec<Vec<u8>> = vec![
            serde_json::to_vec(&golden).unwrap(),
            br#"{"kind":"tick"}"#.to_vec(),
            br#"{"kind":"other"}"#.to_vec(),
            b"[]".to_vec(),
            b"\xff".to_vec(),
            br#"{"kind":"trace_completed","event_id":"e\"1","org_id":"acme\u00e9","trace_id":"t","span_id":"s","operation":"llm_call","status":"success","started_at":"2026-11-28T10:15:00Z","ended_at":"2026-11-28T10:15:01Z","payload_bytes":3}"#.to_vec(),
        ];
        let fields = [
            "kind",
            "event_id",
            "org_id",
            "trace_id",
            "span_id",
            "parent_span_id",
            "operation",
            "status",
            "started_at",
            "ended_at",
            "payload_bytes",
            "attributes",
        ];
        let odd = [
            serde_json::json!(null),
            serde_json::json!(7),
            serde_json::json!("x"),
            serde_json::json!({"a": 1}),
            serde_json::json!(["a"]),
            serde_json::json!("2026-13-01T00:00:00Z"),
            serde_json::json!(-1),
        ];
        for field in fields {
            let mut removed = golden.clone();
            removed.as_object_mut().unwrap().remove(field);
            cases.push(serde_json::to_vec(&removed).unwrap());
            for value in &odd {
                let mut changed = golden.clone();
                changed[field] = value.clone();
                cases.push(serde_json::to_vec(&changed).unwrap());
            }
        }
        let golden_bytes = serde_json::to_vec(&golden).unwrap();
        match TraceEventRecordV1::from_json_borrowed(&golden_bytes).unwrap() {
            TraceEventRecordRef::TraceCompleted(e) => {
                assert!(
                    matches!((&e.event_id, &e.org_id), (Cow::Borrowed(_), Cow::Borrowed(_))),
                    "strings are not copied"
                );
            }
            TraceEventRecordRef::Tick => panic!("a trace event"),
        }
        for case in cases {
            let owned = TraceEventRecordV1::from_json(&case);
            let borrowed = TraceEventRecordV1::from_json_borrowed(&case);
            match (owned, borrowed) {
                (Ok(TraceEventRecordV1::Tick), Ok(TraceEventRecordRef::Tick)) => {}
                (
                    Ok(TraceEventRecordV1::TraceCompleted(o)),
                    Ok(TraceEventRecordRef::TraceCompleted(b)),
                ) => assert_eq!(o.usage_fields(), b),
                (Err(_), Err(_)) => {}
                (o, b) => panic!("{}: owned {o:?}, borrowed {b:?}", String::from_utf8_lossy(&case)),
            }
        }
    }

    fn sample() -> TraceCompletedV1 {
        serde_json::from_str(include_str!("../examples/trace-completed.v1.root.json")).unwrap()
    }

    #[test]
    fn golden_examples_round_trip() {
        for text in [
            include_str!("../examples/trace-completed.v1.root.json"),
            include_str!("../examples/trace-completed.v1.child.json"),
            include_str!("../examples/trace-completed.v1.precomputed.json"),
        ] {
            let event: TraceCompletedV1 = serde_json::from_str(text).unwrap();
            event.validate().unwrap();
            let again: TraceCompletedV1 =
                serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
            assert_eq!(event, again);
            let original: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_value(&event).unwrap(), original);
        }
        for text in [
            include_str!("../examples/trace-event-record.v1.json"),
            include_str!("../examples/trace-event-record.v1.tick.json"),
        ] {
            let record: TraceEventRecordV1 = serde_json::from_str(text).unwrap();
            let original: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_value(&record).unwrap(), original);
        }
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_code() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["colour"] = "blue".into();
        let err = serde_json::from_value::<TraceCompletedV1>(value).unwrap_err();
        assert_eq!(FieldError::from_serde(&err).code, FieldErrorCode::UnknownField);
    }

    #[test]
    fn missing_and_mistyped_fields_have_codes() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value.as_object_mut().unwrap().remove("org_id");
        let err = serde_json::from_value::<TraceCompletedV1>(value).unwrap_err();
        assert_eq!(FieldError::from_serde(&err).code, FieldErrorCode::MissingField);

        let mut value = serde_json::to_value(sample()).unwrap();
        value["operation"] = "teleport".into();
        let err = serde_json::from_value::<TraceCompletedV1>(value).unwrap_err();
        assert_eq!(FieldError::from_serde(&err).code, FieldErrorCode::InvalidField);
    }

    #[test]
    fn field_rules() {
        let ok = sample();
        ok.validate().unwrap();

        let mut e = sample();
        e.event_id = "has space".into();
        assert_eq!(e.validate().unwrap_err().code, FieldErrorCode::InvalidField);
        e.event_id = "x".repeat(129);
        assert!(e.validate().is_err());
        e.event_id = "a.b_c:d-1".into();
        e.validate().unwrap();

        let mut e = sample();
        e.org_id = "acme:corp".into();
        assert!(e.validate().unwrap_err().message.starts_with("org_id"));

        let mut e = sample();
        e.started_at = e.ended_at + chrono::Duration::seconds(1);
        assert!(e.validate().unwrap_err().message.starts_with("started_at"));

        let mut e = sample();
        e.payload_bytes = Some(3);
        assert!(e.validate().unwrap_err().message.starts_with("payload_bytes"));

        let mut e = sample();
        e.payload = None;
        e.payload_bytes = Some(limits::PAYLOAD_BYTES_MAX);
        e.validate().unwrap();
        e.payload_bytes = Some(limits::PAYLOAD_BYTES_MAX + 1);
        assert!(e.validate().unwrap_err().message.contains("256 MiB"));

        let mut e = sample();
        e.attributes = Some((0..65).map(|i| (format!("k{i}"), "v".into())).collect());
        assert!(e.validate().is_err());
        e.attributes = Some([("k".to_string(), "v".repeat(1025))].into());
        assert!(e.validate().is_err());
        e.attributes = Some([("k".to_string(), "v".repeat(1024))].into());
        e.validate().unwrap();
    }
}
