//! Traces for OTLP senders: a generated [`TraceSet`] (what a service traced), the OTLP request
//! that carries it, and the usage Tally must bill for it.
//!
//! The set is plain data that serializes to JSON, so that the OpenTelemetry SDKs' senders (Node,
//! Python, Rust; `tools/otel/`) can replay it span by span with their own APIs, while the
//! expected usage is computed here from the same data with Tally's own rules (`tally_formats::otlp`).
//! Attribute values are what every SDK's API can express the same way: strings, integers,
//! non-integral doubles, booleans and string arrays.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tally_formats::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use tally_formats::otlp::proto::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use tally_formats::otlp::proto::resource::v1::Resource;
use tally_formats::otlp::proto::trace::v1::span::Event as ProtoEvent;
use tally_formats::otlp::proto::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use tally_formats::otlp::span::{GEN_AI_OPERATION, OPERATION, ORG_ID, PAYLOAD_BYTES};
use tally_formats::NotAnEvent;
use tally_metering::rules::payload_bytes;
use tally_metering::Period;
use tally_schemas::Operation;

use crate::generate::Expected;

/// One attribute value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Value {
    String(String),
    Int(i64),
    /// Never integral: a JavaScript number with no fraction is sent as an integer.
    Double(f64),
    Bool(bool),
    StringArray(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub key: String,
    pub value: Value,
}

/// Times are nanoseconds since the epoch, written as decimal strings in JSON (beyond 2^53, a
/// JavaScript number would round them).
mod nanos {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(nanos: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&nanos.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanEvent {
    pub name: String,
    #[serde(with = "nanos")]
    pub time_unix_nano: u64,
    pub attributes: Vec<Attribute>,
}

/// One span. Ids are the sender's own (an SDK makes its own); `children` end inside their parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanSpec {
    pub name: String,
    #[serde(with = "nanos")]
    pub start_unix_nano: u64,
    #[serde(with = "nanos")]
    pub end_unix_nano: u64,
    pub error: bool,
    pub attributes: Vec<Attribute>,
    pub events: Vec<SpanEvent>,
    pub children: Vec<SpanSpec>,
}

/// The traces of one service (one OTLP resource).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub resource: Vec<Attribute>,
    /// Root spans, each the root of one trace.
    pub traces: Vec<SpanSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceSet {
    pub services: Vec<Service>,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct TraceSetSpec {
    /// Orgs that exist; the set also has spans for `unknown_org`, which must be refused.
    pub orgs: Vec<String>,
    pub unknown_org: String,
    /// Traces per service; each service is one resource.
    pub traces_per_service: usize,
    pub seed: u64,
    /// Spans end within the minute before this.
    pub now: DateTime<Utc>,
}

fn string(key: &str, value: &str) -> Attribute {
    Attribute { key: key.into(), value: Value::String(value.into()) }
}

const GEN_AI_NAMES: [&str; 5] =
    ["chat", "text_completion", "generate_content", "embeddings", "execute_tool"];

impl TraceSetSpec {
    /// Services of three kinds: one per org with the org on its resource, one that serves every
    /// org and names it on each span, and one whose spans are for an org that does not exist.
    /// Their spans cover every operation by `tally.operation` and by every GenAI name, spans
    /// with no operation, errors, children, events, and explicit and derived payload sizes.
    pub fn generate(&self) -> TraceSet {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let end = self.now.timestamp_nanos_opt().expect("a time before 2262") as u64;
        let mut services: Vec<Service> = self
            .orgs
            .iter()
            .map(|org| Service {
                resource: vec![string("service.name", "assistant"), string(ORG_ID, org)],
                traces: vec![],
            })
            .collect();
        services
            .push(Service { resource: vec![string("service.name", "gateway")], traces: vec![] });
        services.push(Service {
            resource: vec![string("service.name", "stranger"), string(ORG_ID, &self.unknown_org)],
            traces: vec![],
        });
        let shared = self.orgs.len();
        for (index, service) in services.iter_mut().enumerate() {
            for n in 0..self.traces_per_service {
                let span_org = (index == shared).then(|| self.orgs[n % self.orgs.len()].as_str());
                service.traces.push(trace(&mut rng, n, end, span_org));
            }
        }
        TraceSet { services }
    }
}

/// The attributes that name a span's operation: `tally.operation` for even kinds, a GenAI name
/// for odd ones, none (unmapped) for some.
fn operation_attributes(rng: &mut StdRng, n: usize) -> Vec<Attribute> {
    match n % 13 {
        12 => vec![],
        11 => vec![string(GEN_AI_OPERATION, "invoke_agent")],
        k if k % 2 == 0 => vec![string(OPERATION, Operation::ALL[(k / 2) % 6].as_str())],
        _ => vec![string(GEN_AI_OPERATION, GEN_AI_NAMES[rng.random_range(0..GEN_AI_NAMES.len())])],
    }
}

fn content(rng: &mut StdRng) -> Vec<Attribute> {
    let words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"];
    let text: Vec<&str> =
        (0..rng.random_range(5..60)).map(|_| words[rng.random_range(0..6)]).collect();
    vec![
        string(
            "gen_ai.request.model",
            ["gpt-4o", "claude-sonnet", "gemini"][rng.random_range(0..3)],
        ),
        Attribute {
            key: "gen_ai.usage.input_tokens".into(),
            value: Value::Int(rng.random_range(1..5000)),
        },
        Attribute {
            key: "gen_ai.request.temperature".into(),
            value: Value::Double(f64::from(rng.random_range(1..99u8)) / 100.0 + 0.001),
        },
        Attribute { key: "cache.hit".into(), value: Value::Bool(rng.random_bool(0.3)) },
        Attribute {
            key: "tags".into(),
            value: Value::StringArray(vec!["a".into(), text.len().to_string()]),
        },
        string("gen_ai.prompt", &text.join(" ")),
    ]
}

fn span(rng: &mut StdRng, n: usize, start: u64, end: u64, org: Option<&str>) -> SpanSpec {
    let mut attributes = operation_attributes(rng, n);
    if let Some(org) = org {
        attributes.push(string(ORG_ID, org));
    }
    if rng.random_bool(0.3) {
        attributes.push(Attribute {
            key: PAYLOAD_BYTES.into(),
            value: Value::Int(rng.random_range(0..100_000)),
        });
    } else {
        attributes.extend(content(rng));
    }
    let events = if rng.random_bool(0.4) {
        vec![SpanEvent {
            name: "gen_ai.choice".into(),
            time_unix_nano: end - 1_000,
            attributes: vec![
                string("gen_ai.completion", "delta epsilon"),
                string("tally.note", "events keep it"),
            ],
        }]
    } else {
        vec![]
    };
    SpanSpec {
        name: format!("span {n}"),
        start_unix_nano: start,
        end_unix_nano: end,
        error: rng.random_bool(0.15),
        attributes,
        events,
        children: vec![],
    }
}

fn trace(rng: &mut StdRng, n: usize, now: u64, org: Option<&str>) -> SpanSpec {
    let end = now - rng.random_range(1_000_000_000..60_000_000_000u64);
    let start = end - 900_000_000;
    let mut root = span(rng, n, start, end, org);
    for child in 0..rng.random_range(0..3usize) {
        let mut kid = span(rng, n + child + 1, start + 100_000_000, end - 100_000_000, org);
        if rng.random_bool(0.3) {
            kid.children.push(span(rng, n + 7, start + 200_000_000, end - 200_000_000, org));
        }
        root.children.push(kid);
    }
    root
}

fn any(value: &Value) -> AnyValue {
    let value = match value {
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Int(i) => any_value::Value::IntValue(*i),
        Value::Double(d) => any_value::Value::DoubleValue(*d),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::StringArray(values) => any_value::Value::ArrayValue(ArrayValue {
            values: values
                .iter()
                .map(|s| AnyValue { value: Some(any_value::Value::StringValue(s.clone())) })
                .collect(),
        }),
    };
    AnyValue { value: Some(value) }
}

fn key_values(attributes: &[Attribute]) -> Vec<KeyValue> {
    attributes
        .iter()
        .map(|a| KeyValue { key: a.key.clone(), value: Some(any(&a.value)), ..Default::default() })
        .collect()
}

/// Ids for the spans of one set, all distinct: the set's seed and the span's number.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    pub seed: u64,
}

impl Ids {
    fn trace_id(self, trace: usize) -> Vec<u8> {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.seed.to_be_bytes());
        id[8..].copy_from_slice(&(trace as u64 + 1).to_be_bytes());
        id.to_vec()
    }

    fn span_id(self, span: usize) -> Vec<u8> {
        let id = self.seed.rotate_left(32).wrapping_add(span as u64 + 1);
        id.max(1).to_be_bytes().to_vec()
    }
}

fn flatten(
    spec: &SpanSpec,
    trace_id: &[u8],
    parent: &[u8],
    ids: Ids,
    counter: &mut usize,
    out: &mut Vec<Span>,
) {
    *counter += 1;
    let span_id = ids.span_id(*counter);
    out.push(Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.clone(),
        parent_span_id: parent.to_vec(),
        name: spec.name.clone(),
        kind: 3,
        start_time_unix_nano: spec.start_unix_nano,
        end_time_unix_nano: spec.end_unix_nano,
        attributes: key_values(&spec.attributes),
        events: spec
            .events
            .iter()
            .map(|e| ProtoEvent {
                time_unix_nano: e.time_unix_nano,
                name: e.name.clone(),
                attributes: key_values(&e.attributes),
                dropped_attributes_count: 0,
            })
            .collect(),
        status: Some(Status {
            code: if spec.error { status::StatusCode::Error } else { status::StatusCode::Ok }
                as i32,
            message: String::new(),
        }),
        ..Default::default()
    });
    for child in &spec.children {
        flatten(child, trace_id, &span_id, ids, counter, out);
    }
}

impl TraceSet {
    /// The set as OTLP requests, one per service, with ids from `ids`.
    pub fn requests(&self, ids: Ids) -> Vec<ExportTraceServiceRequest> {
        let mut counter = 0;
        let mut trace = 0;
        self.services
            .iter()
            .map(|service| {
                let mut spans = Vec::new();
                for root in &service.traces {
                    trace += 1;
                    flatten(root, &ids.trace_id(trace), &[], ids, &mut counter, &mut spans);
                }
                ExportTraceServiceRequest {
                    resource_spans: vec![ResourceSpans {
                        resource: Some(Resource {
                            attributes: key_values(&service.resource),
                            ..Default::default()
                        }),
                        scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                        schema_url: String::new(),
                    }],
                }
            })
            .collect()
    }

    /// What Tally must show for this set, per (org, period), once each span was delivered once:
    /// each span mapped by Tally's own rules, billed when it is a successful root of a known org.
    /// Also the number of spans that are unmapped and that must be refused.
    pub fn expected(
        &self,
        known_orgs: &[String],
    ) -> (BTreeMap<(String, String), Expected>, SpanCounts) {
        let mut expected: BTreeMap<(String, String), Expected> = BTreeMap::new();
        let mut counts = SpanCounts::default();
        for request in self.requests(Ids { seed: 1 }) {
            for (resource, span) in tally_formats::otlp::spans(&request) {
                counts.spans += 1;
                let event = match tally_formats::otlp::span::map(span, resource).event {
                    Ok(event) if known_orgs.contains(&event.org_id) => event,
                    Ok(_) | Err(NotAnEvent::Rejected(_)) => {
                        counts.rejected += 1;
                        continue;
                    }
                    Err(NotAnEvent::Unmapped) => {
                        counts.unmapped += 1;
                        continue;
                    }
                };
                let usage = expected
                    .entry((event.org_id.clone(), Period::containing(event.ended_at).to_string()))
                    .or_default();
                if !event.is_root() {
                    usage.child_span += 1;
                } else if event.status != tally_schemas::Status::Success {
                    usage.not_success += 1;
                } else {
                    let bytes = match (&event.payload, event.payload_bytes) {
                        (Some(p), _) => payload_bytes(p),
                        (None, Some(b)) => b,
                        (None, None) => 0,
                    };
                    usage.traces += 1;
                    usage.payload_bytes += bytes;
                    let by_op = usage.by_operation.entry(event.operation).or_default();
                    by_op.0 += 1;
                    by_op.1 += bytes;
                }
            }
        }
        (expected, counts)
    }
}

/// How the spans of a set divide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanCounts {
    pub spans: usize,
    pub unmapped: usize,
    pub rejected: usize,
}
