//! Generating workloads and the usage they must produce.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, Duration, Utc};
use flate2::write::GzEncoder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tally_metering::Period;
use tally_schemas::Operation;

/// What to generate.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub orgs: Vec<String>,
    /// Unique events (re-deliveries come on top).
    pub events: usize,
    /// Share of events delivered a second time.
    pub duplicate_ratio: f64,
    /// Share of events carrying an inline payload (the rest send `payload_bytes`).
    pub inline_payload_ratio: f64,
    /// Events with `ended_at` just before the current period's start.
    pub boundary_events: usize,
    /// Events whose period has already closed when they are sent.
    pub late_events: usize,
    pub seed: u64,
    /// When the workload will be sent (decides which periods are closed).
    pub now: DateTime<Utc>,
    pub grace: Duration,
    /// A prefix for event ids, so runs never collide.
    pub id_prefix: String,
}

/// The usage one (org, period) must show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub traces: u64,
    pub payload_bytes: u64,
    pub by_operation: BTreeMap<Operation, (u64, u64)>,
    pub child_span: u64,
    pub not_success: u64,
    pub duplicate: u64,
    pub late: u64,
}

pub struct Workload {
    /// Events in delivery order, re-deliveries included.
    pub deliveries: Vec<Value>,
    /// The expected usage per (org, period id).
    pub expected: BTreeMap<(String, String), Expected>,
}

/// The metered size, computed the plain way: gzip the compact JSON and count.
pub fn gzip_len(value: &Value) -> u64 {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&serde_json::to_vec(value).expect("json")).expect("gzip to memory");
    gz.finish().expect("gzip to memory").len() as u64
}

const WORDS: &[&str] = &[
    "the",
    "customer",
    "asks",
    "about",
    "refund",
    "policy",
    "model",
    "answer",
    "context",
    "retrieved",
    "document",
    "tool",
    "search",
    "invoice",
    "summary",
    "token",
    "latency",
];

fn random_words(rng: &mut StdRng, words: usize) -> String {
    (0..words).map(|_| WORDS[rng.random_range(0..WORDS.len())]).collect::<Vec<_>>().join(" ")
}

/// An inline payload of roughly `approx_bytes` of JSON.
pub fn payload(rng: &mut StdRng, approx_bytes: usize) -> Value {
    json!({
        "model": "tally-demo-large",
        "prompt": random_words(rng, approx_bytes / 14),
        "completion": random_words(rng, approx_bytes / 14),
        "usage": {"input_tokens": rng.random_range(10..4000), "output_tokens": rng.random_range(1..800)},
    })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One event as an emitter would send it.
#[allow(clippy::too_many_arguments)]
pub fn event(
    id: &str,
    org: &str,
    trace: &str,
    span: &str,
    parent: Option<&str>,
    op: Operation,
    status: &str,
    ended_at: DateTime<Utc>,
) -> Value {
    let mut e = json!({
        "event_id": id,
        "org_id": org,
        "trace_id": trace,
        "span_id": span,
        "operation": op.as_str(),
        "status": status,
        "started_at": rfc3339(ended_at - Duration::milliseconds(250)),
        "ended_at": rfc3339(ended_at),
    });
    if let Some(parent) = parent {
        e["parent_span_id"] = parent.into();
    }
    e
}

impl WorkloadSpec {
    pub fn generate(&self) -> Workload {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let current = Period::containing(self.now);
        let boundary = current.start();
        let prev_closed = self.now >= current.prev().closes_at(self.grace);
        // A closed period within ingest's 35-day window: the previous one once closed, else the
        // one before it.
        let late_at = if prev_closed {
            boundary - Duration::minutes(1)
        } else {
            current.prev().start() - Duration::minutes(1)
        };
        let since_start = (self.now - boundary).num_seconds().max(1);

        let mut unique: Vec<Value> = Vec::with_capacity(self.events);
        let mut last_root: BTreeMap<String, (String, String)> = BTreeMap::new();
        for i in 0..self.events {
            let org = &self.orgs[i % self.orgs.len()];
            let ended_at = if i < self.boundary_events {
                if i % 2 == 0 {
                    boundary - Duration::seconds(rng.random_range(1..3600))
                } else {
                    boundary + Duration::seconds(rng.random_range(0..since_start.min(3600)))
                }
            } else if i < self.boundary_events + self.late_events {
                late_at
            } else {
                self.now - Duration::seconds(rng.random_range(0..since_start.min(20 * 86400)))
            };
            let op = Operation::ALL[rng.random_range(0..Operation::ALL.len())];
            let id = format!("{}-{i}", self.id_prefix);
            let child = rng.random_bool(0.3) && last_root.contains_key(org);
            let (trace, span, parent) = if child {
                let (trace, root_span) = last_root[org].clone();
                (trace, format!("s{i}"), Some(root_span))
            } else {
                (format!("t{}-{i}", self.id_prefix), format!("s{i}"), None)
            };
            if parent.is_none() {
                last_root.insert(org.clone(), (trace.clone(), span.clone()));
            }
            let status = match rng.random_range(0..100) {
                0..85 => "success",
                85..95 => "error",
                _ => "cancelled",
            };
            let mut e = event(&id, org, &trace, &span, parent.as_deref(), op, status, ended_at);
            if rng.random_bool(self.inline_payload_ratio) {
                let size = rng.random_range(64..2048);
                e["payload"] = payload(&mut rng, size);
            } else {
                e["payload_bytes"] = rng.random_range(0..50_000u64).into();
            }
            unique.push(e);
        }

        let mut expected: BTreeMap<(String, String), Expected> = BTreeMap::new();
        for e in &unique {
            let ended_at: DateTime<Utc> = e["ended_at"].as_str().unwrap().parse().unwrap();
            let period = Period::containing(ended_at);
            let entry = expected
                .entry((e["org_id"].as_str().unwrap().to_string(), period.to_string()))
                .or_default();
            if self.now >= period.closes_at(self.grace) {
                entry.late += 1;
            } else if e.get("parent_span_id").is_some() {
                entry.child_span += 1;
            } else if e["status"] != "success" {
                entry.not_success += 1;
            } else {
                let bytes = match e.get("payload") {
                    Some(p) => gzip_len(p),
                    None => e["payload_bytes"].as_u64().unwrap(),
                };
                let op = Operation::parse(e["operation"].as_str().unwrap()).unwrap();
                entry.traces += 1;
                entry.payload_bytes += bytes;
                let by_op = entry.by_operation.entry(op).or_default();
                by_op.0 += 1;
                by_op.1 += bytes;
            }
        }

        // Each re-delivery lands somewhere after its original: in the same request or much later,
        // as a client retrying after a timeout would send it.
        let n = unique.len();
        let redeliveries = (self.events as f64 * self.duplicate_ratio).round() as usize;
        let mut order: Vec<(f64, usize)> = (0..n).map(|i| (i as f64, i)).collect();
        for _ in 0..redeliveries {
            let j = rng.random_range(0..n);
            let e = &unique[j];
            let ended_at: DateTime<Utc> = e["ended_at"].as_str().unwrap().parse().unwrap();
            let key = (
                e["org_id"].as_str().unwrap().to_string(),
                Period::containing(ended_at).to_string(),
            );
            expected.get_mut(&key).expect("the event's own period").duplicate += 1;
            let at = if rng.random_bool(0.3) {
                j as f64 + 0.5
            } else {
                rng.random_range(j as f64 + 0.1..n as f64 + 1.0)
            };
            order.push((at, j));
        }
        order.sort_by(|a, b| a.0.total_cmp(&b.0));
        let deliveries = order.into_iter().map(|(_, j)| unique[j].clone()).collect();
        Workload { deliveries, expected }
    }
}
