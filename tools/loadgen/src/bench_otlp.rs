//! `make bench-otlp`: spans/s through `POST /v1/traces`, in protobuf and in JSON, beside events/s
//! through `POST /v1/events`, on the same stack in the same run (BENCHMARKS.md, "OpenTelemetry
//! in"). Every phase sends batches of 1,000 (90% new, 10% re-deliveries) for
//! `TALLY_BENCH_OTLP_SECS` (default 30) as fast as ingest takes them, and its clock stops when
//! the API shows every unique event: end to end, checked.
//!
//! 1. Native events with precomputed `payload_bytes`.
//! 2. OTLP protobuf, spans with `tally.payload_bytes` (the same work after decoding).
//! 3. OTLP JSON, the same spans.
//! 4. OTLP protobuf, spans without a size: ingest measures each span's canonical payload (about
//!    1 KiB of attributes), beside
//! 5. native events with 1 KiB inline payloads.

use std::sync::Arc;

use tally_formats::otlp::proto::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tally_formats::otlp::proto::common::v1::{any_value, AnyValue, KeyValue};
use tally_formats::otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tally_formats::otlp::span::{OPERATION, ORG_ID, PAYLOAD_BYTES};
use tally_formats::otlp::Encoding;

use crate::bench::{
    env_u64, phase, report, total_traces, Bodies, BodyMaker, Phase, BATCH, FRESH, ORGS,
};
use crate::Endpoints;

/// Spans as a traced service exports them: one root span per trace, each for one of the orgs,
/// with the same events as [`BodyMaker`]'s.
struct SpanMaker {
    /// Distinguishes the ids of this run's spans from every other run's.
    run_id: u64,
    orgs: Vec<String>,
    ended_nanos: u64,
    encoding: Encoding,
    /// `None`: every span states `tally.payload_bytes`; otherwise these attributes are the
    /// payload ingest measures.
    content: Option<Vec<KeyValue>>,
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

impl SpanMaker {
    fn span(&self, n: u64) -> Span {
        let mut trace_id = self.run_id.to_be_bytes().to_vec();
        trace_id.extend_from_slice(&(n + 1).to_be_bytes());
        let org = &self.orgs[(n % ORGS as u64) as usize];
        let mut attributes = vec![
            kv(ORG_ID, any_value::Value::StringValue(org.clone())),
            kv(OPERATION, any_value::Value::StringValue("llm_call".into())),
        ];
        match &self.content {
            None => attributes.push(kv(PAYLOAD_BYTES, any_value::Value::IntValue(1024))),
            Some(content) => attributes.extend(content.iter().cloned()),
        }
        Span {
            trace_id,
            span_id: (n + 1).to_be_bytes().to_vec(),
            name: "chat".into(),
            kind: 3,
            start_time_unix_nano: self.ended_nanos - 1_000_000,
            end_time_unix_nano: self.ended_nanos,
            attributes,
            ..Default::default()
        }
    }
}

impl Bodies for SpanMaker {
    fn body(&self, batch_no: u64) -> (Vec<u8>, u64) {
        let first = batch_no * FRESH;
        let spans = (0..BATCH as u64)
            .map(|k| if k < FRESH { first + k } else { first.saturating_sub(1 + k - FRESH) })
            .map(|n| self.span(n))
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        };
        (tally_formats::otlp::encode(&request, self.encoding), FRESH)
    }

    fn path(&self) -> &'static str {
        "/v1/traces"
    }

    fn content_type(&self) -> &'static str {
        self.encoding.content_type()
    }

    fn orgs(&self) -> &[String] {
        &self.orgs
    }

    fn check(&self, answer: &[u8]) -> anyhow::Result<()> {
        let response: ExportTraceServiceResponse = match self.encoding {
            Encoding::Protobuf => prost::Message::decode(answer)?,
            Encoding::Json => serde_json::from_slice(answer)?,
        };
        if let Some(partial) = response.partial_success.filter(|p| p.rejected_spans > 0) {
            anyhow::bail!("ingest refused spans: {}", partial.error_message);
        }
        Ok(())
    }
}

pub async fn run(endpoints: anyhow::Result<Endpoints>) -> anyhow::Result<()> {
    let ep = endpoints?;
    let secs = env_u64("TALLY_BENCH_OTLP_SECS", 30);
    let now = chrono::Utc::now();
    let run = format!("benchotlp{}", now.timestamp());
    let orgs: Vec<String> = (0..ORGS).map(|i| format!("{run}-o{i}")).collect();
    for org in &orgs {
        ep.api.ensure_org(org, "Benchmark org").await?;
    }
    let key = ep.api.create_service_key(Some(&orgs)).await?;
    let ended_at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let ended_nanos = now.timestamp_nanos_opt().expect("a time before 2262") as u64;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    let kib = tally_loadgen::generate::payload(&mut rng, 1024);
    // The same kilobyte as span attributes: its text under four keys.
    let text = kib.to_string();
    let quarter = text.len() / 4;
    let content: Vec<KeyValue> = (0..4)
        .map(|i| {
            let part: String = text.chars().skip(i * quarter).take(quarter).collect();
            kv(&format!("gen_ai.prompt.{i}"), any_value::Value::StringValue(part))
        })
        .collect();

    println!(
        "tally bench-otlp: run {run}; {ORGS} orgs, batches of {BATCH}, 10% re-deliveries, {secs} s a phase"
    );
    let run_id = now.timestamp_nanos_opt().unwrap_or_default() as u64;
    let spans = |encoding, content: Option<Vec<KeyValue>>, salt: u64| -> Arc<dyn Bodies> {
        Arc::new(SpanMaker {
            run_id: run_id ^ salt,
            orgs: orgs.clone(),
            ended_nanos,
            encoding,
            content,
        })
    };
    let events = |suffix: &str, inline_payload: Option<String>| -> Arc<dyn Bodies> {
        Arc::new(BodyMaker {
            run: format!("{run}-{suffix}"),
            orgs: orgs.clone(),
            ended_at: ended_at.clone(),
            inline_payload,
        })
    };
    let plan: Vec<(&'static str, Arc<dyn Bodies>)> = vec![
        ("native events, payload_bytes", events("a", None)),
        ("OTLP protobuf, tally.payload_bytes", spans(Encoding::Protobuf, None, 1)),
        ("OTLP JSON, tally.payload_bytes", spans(Encoding::Json, None, 2)),
        ("OTLP protobuf, 1 KiB measured", spans(Encoding::Protobuf, Some(content), 3)),
        ("native events, 1 KiB inline", events("b", Some(kib.to_string()))),
    ];
    let mut phases: Vec<Phase> = Vec::new();
    for (name, bodies) in plan {
        let baseline = total_traces(&ep.api, &orgs).await?;
        println!("{name} ...");
        let measured = phase(name, &ep, &key, bodies, secs, 0, baseline).await?;
        report(&measured);
        phases.push(measured);
    }

    println!();
    println!("| door and body | deliveries | ingest accepted/s | end to end (deliveries/s, until visible in the API) |");
    println!("| --- | ---: | ---: | ---: |");
    for p in &phases {
        println!(
            "| {} | {} | {:.0} | {:.0} |",
            p.name,
            p.deliveries,
            p.deliveries as f64 / p.send_secs,
            p.deliveries as f64 / p.e2e_secs
        );
    }
    let rate = |p: &Phase| p.deliveries as f64 / p.e2e_secs;
    println!();
    println!(
        "OTLP protobuf = {:.0}% and OTLP JSON = {:.0}% of the native rate; measured OTLP payloads = {:.0}% of native inline ones",
        100.0 * rate(&phases[1]) / rate(&phases[0]),
        100.0 * rate(&phases[2]) / rate(&phases[0]),
        100.0 * rate(&phases[3]) / rate(&phases[4]),
    );
    Ok(())
}
