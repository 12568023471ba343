//! The payload of a span that does not carry `tally.payload_bytes`: a canonical JSON document of
//! its attributes and events (docs/otlp.md, "The payload of a span"), metered like any inline
//! payload, as the gzip size of its compact JSON.
//!
//! Canonical means that the same span gives the same bytes whatever the sender's SDK, encoding or
//! attribute order:
//!
//! ```text
//! {"attributes":{…},"events":[{"attributes":{…},"name":"…","time_unix_nano":N},…]}
//! ```
//!
//! - `attributes`: the span's attributes except those whose key starts with `tally.` (they route
//!   the span; they are not its content), as an object with keys in byte order; if a key repeats,
//!   its first value counts.
//! - `events`: the span's events in the order they came, each with its attributes (the same
//!   rules, nothing left out), its name and its time.
//! - Values: a string, a boolean or an integer as itself; a double as a JSON number in its
//!   shortest round-trip form (`0.5`, `1.0`, `1e+300`), NaN and the infinities as the strings
//!   `"NaN"`, `"Infinity"` and `"-Infinity"`; bytes as a standard base64 string with padding; an
//!   array as an array; a key-value list as an object (the same rules as attributes); an empty
//!   value (or a profiling string-table reference, which has no meaning in a trace) as `null`.
//! - Links, the span's name, kind, status and dropped counts are not part of the payload.

use std::collections::BTreeMap;

use base64::Engine;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Map, Value};

/// Attributes with this prefix are Tally's routing, not content.
const TALLY_PREFIX: &str = "tally.";

/// The canonical document of a span's attributes and events.
pub fn canonical(span: &Span) -> Value {
    let events = span
        .events
        .iter()
        .map(|event| {
            object([
                ("attributes", attributes(&event.attributes, false)),
                ("name", Value::String(event.name.clone())),
                ("time_unix_nano", Value::from(event.time_unix_nano)),
            ])
        })
        .collect();
    object([("attributes", attributes(&span.attributes, true)), ("events", Value::Array(events))])
}

/// An object with keys already in byte order (written out in that order whichever map type
/// serde_json is built with).
fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Object(entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn attributes(list: &[KeyValue], skip_tally: bool) -> Value {
    let mut sorted: BTreeMap<&str, Value> = BTreeMap::new();
    for kv in list {
        if skip_tally && kv.key.starts_with(TALLY_PREFIX) {
            continue;
        }
        sorted.entry(&kv.key).or_insert_with(|| value(kv.value.as_ref()));
    }
    let mut map = Map::new();
    for (key, value) in sorted {
        map.insert(key.to_string(), value);
    }
    Value::Object(map)
}

fn value(any: Option<&AnyValue>) -> Value {
    let Some(inner) = any.and_then(|a| a.value.as_ref()) else {
        return Value::Null;
    };
    match inner {
        any_value::Value::StringValue(s) => Value::String(s.clone()),
        any_value::Value::BoolValue(b) => Value::Bool(*b),
        any_value::Value::IntValue(i) => Value::from(*i),
        any_value::Value::DoubleValue(d) => match serde_json::Number::from_f64(*d) {
            Some(n) => Value::Number(n),
            None if d.is_nan() => Value::String("NaN".into()),
            None if *d > 0.0 => Value::String("Infinity".into()),
            None => Value::String("-Infinity".into()),
        },
        any_value::Value::BytesValue(b) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        any_value::Value::ArrayValue(array) => {
            Value::Array(array.values.iter().map(|v| value(Some(v))).collect())
        }
        any_value::Value::KvlistValue(list) => attributes(&list.values, false),
        // A reference into the profiling signal's string table: meaningless in a trace, read as
        // an empty value, as OTLP asks of receivers of other signals.
        any_value::Value::StringValueStrindex(_) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::test_values::{kv, s};
    use opentelemetry_proto::tonic::common::v1::{ArrayValue as Array, KeyValueList};
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    use tally_metering::rules::payload_bytes;

    /// The span of docs/otlp.md's worked example.
    fn example() -> Span {
        use any_value::Value::*;
        Span {
            attributes: vec![
                kv("tally.org_id", s("acme")),
                kv("gen_ai.request.model", s("gpt-4o")),
                kv("gen_ai.operation.name", s("chat")),
                kv("gen_ai.usage.input_tokens", IntValue(1200)),
                kv("gen_ai.request.temperature", DoubleValue(0.5)),
                kv("gen_ai.request.top_p", DoubleValue(1.0)),
                kv("gen_ai.request.model", s("repeated: the first value counts")),
                kv("cache.hit", BoolValue(false)),
                kv("score", DoubleValue(f64::NAN)),
                kv("blob", BytesValue(vec![0, 1, 2, 250])),
                kv(
                    "tags",
                    ArrayValue(Array {
                        values: vec![AnyValue { value: Some(s("a")) }, AnyValue { value: None }],
                    }),
                ),
                kv(
                    "request",
                    KvlistValue(KeyValueList {
                        values: vec![kv("z", IntValue(-1)), kv("a", s("é\"\n"))],
                    }),
                ),
            ],
            events: vec![Event {
                time_unix_nano: 1_764_325_200_100_000_000,
                name: "gen_ai.content.prompt".into(),
                attributes: vec![
                    kv("tally.note", s("kept in events")),
                    kv("gen_ai.prompt", s("Hello")),
                ],
                dropped_attributes_count: 0,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_canonical_document_byte_for_byte() {
        let text = serde_json::to_string(&canonical(&example())).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"attributes":{"blob":"AAEC+g==","cache.hit":false,"gen_ai.operation.name":"chat","#,
                r#""gen_ai.request.model":"gpt-4o","gen_ai.request.temperature":0.5,"#,
                r#""gen_ai.request.top_p":1.0,"gen_ai.usage.input_tokens":1200,"#,
                r#""request":{"a":"é\"\n","z":-1},"score":"NaN","tags":["a",null]},"#,
                r#""events":[{"attributes":{"gen_ai.prompt":"Hello","tally.note":"kept in events"},"#,
                r#""name":"gen_ai.content.prompt","time_unix_nano":1764325200100000000}]}"#
            )
        );
        // The metered size: the gzip member of exactly those bytes (docs/otlp.md).
        assert_eq!(payload_bytes(&canonical(&example())), 279);
    }

    #[test]
    fn order_and_tally_attributes_do_not_change_the_payload() {
        let mut shuffled = example();
        shuffled.attributes.reverse();
        shuffled.attributes.retain(|kv| !kv.key.starts_with("tally."));
        shuffled.attributes.push(kv("tally.payload_note", s("ignored")));
        // Reversing moves the repeated key's other value first: drop it to compare like with like.
        let mut original = example();
        original.attributes.retain(|kv| {
            kv.value != Some(AnyValue { value: Some(s("repeated: the first value counts")) })
        });
        shuffled.attributes.retain(|kv| {
            kv.value != Some(AnyValue { value: Some(s("repeated: the first value counts")) })
        });
        assert_eq!(canonical(&shuffled), canonical(&original));
    }

    #[test]
    fn an_empty_span_has_an_empty_document() {
        assert_eq!(
            serde_json::to_string(&canonical(&Span::default())).unwrap(),
            r#"{"attributes":{},"events":[]}"#
        );
        let infinite = Span {
            attributes: vec![
                kv("a", any_value::Value::DoubleValue(f64::INFINITY)),
                kv("b", any_value::Value::DoubleValue(f64::NEG_INFINITY)),
                kv("c", any_value::Value::DoubleValue(1e+300)),
            ],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&canonical(&infinite)).unwrap(),
            r#"{"attributes":{"a":"Infinity","b":"-Infinity","c":1e+300},"events":[]}"#
        );
    }
}
