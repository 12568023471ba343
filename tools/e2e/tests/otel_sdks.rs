//! OpenTelemetry's own SDKs, configured as docs/otlp.md says, export a generated trace set to
//! ingest: Node.js (protobuf and JSON exporters), Python (protobuf, gzip) and Rust (protobuf).
//! The usage API then shows exactly what Tally's rules give for the set, per org and operation;
//! an exporter's retry after a 503 is counted once. A service exporting over gRPC goes through
//! an OpenTelemetry Collector configured as the document shows.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tally_e2e::flaky_ingest::FlakyIngest;
use tally_e2e::{assert_usage_eventually, unique, Stack};
use tally_formats::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use tally_loadgen::otlp::{TraceSet, TraceSetSpec};
use tally_loadgen::Expected;
use tally_metering::Period;

fn otel_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("otel")
}

struct Setup {
    stack: Stack,
    orgs: Vec<String>,
    key: String,
}

async fn setup(prefix: &str) -> anyhow::Result<Setup> {
    let stack = Stack::start().await?;
    let api = stack.api();
    let orgs: Vec<String> = (0..2).map(|i| unique(&format!("{prefix}{i}-"))).collect();
    for org in &orgs {
        api.ensure_org(org, "OpenTelemetry SDK org").await?;
    }
    let key = api.create_service_key(None).await?;
    Ok(Setup { stack, orgs, key })
}

fn trace_set(orgs: &[String], traces_per_service: usize) -> TraceSet {
    TraceSetSpec {
        orgs: orgs.to_vec(),
        unknown_org: unique("nobody-"),
        traces_per_service,
        seed: rand::random(),
        now: chrono::Utc::now(),
    }
    .generate()
}

/// Adds a duplicate for every event the lost requests carried: the exporter sent them again.
fn add_retried(
    expected: &mut BTreeMap<(String, String), Expected>,
    lost: &[ExportTraceServiceRequest],
    orgs: &[String],
) {
    for request in lost {
        for (resource, span) in tally_formats::otlp::spans(request) {
            if let Ok(event) = tally_formats::otlp::span::map(span, resource).event {
                if orgs.contains(&event.org_id) {
                    let period = Period::containing(event.ended_at).to_string();
                    expected.entry((event.org_id, period)).or_default().duplicate += 1;
                }
            }
        }
    }
}

/// Runs a sender to the end; fails with its output when it fails.
async fn run(mut command: tokio::process::Command) -> anyhow::Result<()> {
    let output = command.output().await?;
    anyhow::ensure!(
        output.status.success(),
        "{:?} failed ({}):\n{}{}",
        command.as_std().get_program(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Runs `program script SET.json URL KEY [protocol]` (an SDK's sender in `tools/e2e/otel/`) through
/// a proxy that loses ingest's first two answers, and checks the usage.
async fn exported_through_a_flaky_ingest(
    prefix: &str,
    program: &str,
    script: &str,
    protocol: Option<&str>,
) -> anyhow::Result<()> {
    let Setup { stack, orgs, key } = setup(prefix).await?;
    let set = trace_set(&orgs, 30);
    let (mut expected, _) = set.expected(&orgs);
    let file = tally_e2e::logs_dir().join(format!("{prefix}trace-set.json"));
    std::fs::write(&file, serde_json::to_vec(&set)?)?;
    let flaky = FlakyIngest::start(&stack.ingest_url(), 2).await?;
    let mut command = tokio::process::Command::new(program);
    command.arg(otel_dir().join(script)).arg(&file).arg(&flaky.url).arg(&key).args(protocol);
    run(command).await?;
    let lost = flaky.lost();
    assert_eq!(lost.len(), 2, "the exporter sent at least two requests");
    add_retried(&mut expected, &lost, &orgs);
    assert_usage_eventually(&stack.api(), &expected, Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_sdk_with_the_protobuf_exporter() -> anyhow::Result<()> {
    exported_through_a_flaky_ingest("otelnodep", "node", "node/emit.mjs", Some("proto")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_sdk_with_the_json_exporter() -> anyhow::Result<()> {
    exported_through_a_flaky_ingest("otelnodej", "node", "node/emit.mjs", Some("json")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_with_the_protobuf_exporter() -> anyhow::Result<()> {
    let python = std::env::var("TALLY_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    exported_through_a_flaky_ingest("otelpy", &python, "python/emit.py", None).await
}

/// The Rust SDK with `opentelemetry-otlp`'s HTTP exporter (protobuf), in a service of its own
/// (`tools/e2e/otel/rust`). Its exporter does not retry (that needs an experimental feature), so
/// it sends straight to ingest; a smaller set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_with_the_http_exporter() -> anyhow::Result<()> {
    let Setup { stack, orgs, key } = setup("otelrs").await?;
    let set = trace_set(&orgs, 12);
    let (expected, _) = set.expected(&orgs);
    let file = tally_e2e::logs_dir().join("otelrs-trace-set.json");
    std::fs::write(&file, serde_json::to_vec(&set)?)?;
    let mut command = tokio::process::Command::new(tally_e2e::binary("otel-sender"));
    command.arg(&file).arg(stack.ingest_url()).arg(&key);
    run(command).await?;
    assert_usage_eventually(&stack.api(), &expected, Duration::from_secs(60)).await
}

/// The Collector configuration of docs/otlp.md, read from the document itself: the YAML block
/// after "Services that export over gRPC".
fn documented_collector_config() -> anyhow::Result<String> {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/otlp.md"),
    )?;
    let after = doc
        .split_once("Services that export over gRPC")
        .ok_or_else(|| anyhow::anyhow!("docs/otlp.md has no Collector section"))?
        .1;
    let block = after
        .split_once("```yaml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .ok_or_else(|| anyhow::anyhow!("docs/otlp.md's Collector section has no YAML block"))?
        .0;
    Ok(block.to_string())
}

/// An OpenTelemetry Collector (built by scripts/otelcol.sh) running the documented
/// configuration, with a second file that only moves its ports to the test's and shortens the
/// exporter's first retry wait.
struct Collector {
    grpc: String,
    _process: tokio::process::Child,
}

impl Collector {
    async fn start(tally_url: &str, key: &str) -> anyhow::Result<Collector> {
        let binary = std::env::var("TALLY_TEST_OTELCOL").map_err(|_| {
            anyhow::anyhow!(
                "TALLY_TEST_OTELCOL is not set: scripts/otelcol.sh builds the Collector"
            )
        })?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let grpc = format!("127.0.0.1:{port}");
        let dir = tally_e2e::logs_dir();
        let documented = dir.join("otelcol-documented.yaml");
        let overrides = dir.join("otelcol-test.yaml");
        std::fs::write(&documented, documented_collector_config()?)?;
        std::fs::write(
            &overrides,
            format!(
                "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: {grpc}\n\
                 exporters:\n  otlphttp/tally:\n    traces_endpoint: {tally_url}/v1/traces\n\
                 \x20   retry_on_failure:\n      initial_interval: 500ms\n\
                 service:\n  telemetry:\n    metrics:\n      level: none\n"
            ),
        )?;
        let log = std::fs::File::create(dir.join("otelcol.log"))?;
        let mut process = tokio::process::Command::new(binary)
            .arg(format!("--config=file:{}", documented.display()))
            .arg(format!("--config=file:{}", overrides.display()))
            .env("TALLY_INGEST_KEY", key)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(&grpc).await.is_err() {
            if let Some(status) = process.try_wait()? {
                anyhow::bail!("the Collector exited ({status}); see otelcol.log in the test logs");
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "the Collector never listened");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Collector { grpc, _process: process })
    }
}

/// A service that exports over gRPC, to an OpenTelemetry Collector configured as docs/otlp.md
/// shows, which forwards to ingest over HTTP, through a proxy that loses Tally's first answer:
/// the usage is exact and the Collector's retry counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_over_grpc_through_the_documented_collector() -> anyhow::Result<()> {
    let Setup { stack, orgs, key } = setup("otelcol").await?;
    let set = trace_set(&orgs, 30);
    let (mut expected, _) = set.expected(&orgs);
    let file = tally_e2e::logs_dir().join("otelcol-trace-set.json");
    std::fs::write(&file, serde_json::to_vec(&set)?)?;
    let flaky = FlakyIngest::start(&stack.ingest_url(), 1).await?;
    let collector = Collector::start(&flaky.url, &key).await?;
    let python = std::env::var("TALLY_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut command = tokio::process::Command::new(python);
    command
        .arg(otel_dir().join("python/emit.py"))
        .arg(&file)
        .arg(&collector.grpc)
        .arg("not-sent")
        .arg("grpc");
    run(command).await?;
    // The Collector forwards on its own time: wait for the answer the proxy lost.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while flaky.lost().is_empty() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "nothing reached ingest");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    add_retried(&mut expected, &flaky.lost(), &orgs);
    assert_usage_eventually(&stack.api(), &expected, Duration::from_secs(60)).await
}
