//! A Rust service traced with OpenTelemetry's own SDK, exporting to Tally's ingest over OTLP/HTTP
//! (protobuf) as docs/otlp.md configures it. It replays a generated trace set (tools/loadgen's
//! `TraceSet`, as JSON): one tracer provider per service (its resource), every span with its
//! parent, times, attributes, events and status.
//!
//!     otel-sender SET.json URL KEY
//!
//! URL is ingest's base URL; the exporter posts to URL/v1/traces.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tally_loadgen::otlp::{Attribute, SpanSpec, TraceSet, Value};

/// `opentelemetry-http`'s client trait over the reqwest Tally already uses, sending on the
/// service's tokio runtime (the SDK's batch processor exports from a thread of its own).
#[derive(Debug)]
struct ReqwestOnTokio {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

type Sent = Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError>;

// The trait is declared with `async_trait`; this is the signature that macro would write.
impl opentelemetry_http::HttpClient for ReqwestOnTokio {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: http::Request<bytes::Bytes>,
    ) -> Pin<Box<dyn Future<Output = Sent> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let mut builder = client.request(parts.method, parts.uri.to_string()).body(body);
            for (name, value) in &parts.headers {
                builder = builder.header(name, value);
            }
            let response = builder.send().await?;
            let status = response.status().as_u16();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        });
        Box::pin(async move {
            let (status, body) = sent.await??;
            Ok(http::Response::builder().status(status).body(body)?)
        })
    }
}

fn value(v: &Value) -> opentelemetry::Value {
    match v {
        Value::String(s) => s.clone().into(),
        Value::Int(i) => (*i).into(),
        Value::Double(d) => (*d).into(),
        Value::Bool(b) => (*b).into(),
        Value::StringArray(values) => opentelemetry::Value::Array(
            values
                .iter()
                .map(|s| opentelemetry::StringValue::from(s.clone()))
                .collect::<Vec<_>>()
                .into(),
        ),
    }
}

fn attributes(list: &[Attribute]) -> Vec<KeyValue> {
    list.iter().map(|a| KeyValue::new(a.key.clone(), value(&a.value))).collect()
}

fn time(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

fn emit(tracer: &SdkTracer, spec: &SpanSpec, parent: &Context) {
    let mut span = tracer
        .span_builder(spec.name.clone())
        .with_kind(SpanKind::Client)
        .with_start_time(time(spec.start_unix_nano))
        .with_attributes(attributes(&spec.attributes))
        .start_with_context(tracer, parent);
    for event in &spec.events {
        span.add_event_with_timestamp(
            event.name.clone(),
            time(event.time_unix_nano),
            attributes(&event.attributes),
        );
    }
    if spec.error {
        span.set_status(Status::error("failed"));
    }
    let context = parent.with_span(span);
    for child in &spec.children {
        emit(tracer, child, &context);
    }
    context.span().end_with_timestamp(time(spec.end_unix_nano));
}

fn export(
    set: &TraceSet,
    url: &str,
    key: &str,
    runtime: tokio::runtime::Handle,
) -> anyhow::Result<()> {
    for service in &set.services {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(ReqwestOnTokio {
                client: reqwest::Client::new(),
                runtime: runtime.clone(),
            })
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{url}/v1/traces"))
            .with_headers(HashMap::from([("Authorization".to_string(), format!("Bearer {key}"))]))
            .build()?;
        let provider = SdkTracerProvider::builder()
            .with_resource(
                Resource::builder_empty().with_attributes(attributes(&service.resource)).build(),
            )
            .with_batch_exporter(exporter)
            .build();
        let tracer = provider.tracer("tally-e2e");
        for root in &service.traces {
            // A root span has no parent: start each trace from an empty context.
            emit(&tracer, root, &Context::new());
        }
        provider.force_flush()?;
        provider.shutdown()?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, url, key] = &args[..] else {
        anyhow::bail!("usage: otel-sender SET.json URL KEY");
    };
    let set: TraceSet = serde_json::from_slice(&std::fs::read(file)?)?;
    let (url, key) = (url.clone(), key.clone());
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || export(&set, &url, &key, runtime)).await??;
    println!("exported");
    Ok(())
}
