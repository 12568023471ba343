//! Start-up without dependencies, and ingest when Kafka stops answering.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tally_e2e::{assert_usage_eventually, binary, unique, Stack};
use tally_loadgen::generate::event;
use tally_loadgen::Expected;
use tally_schemas::Operation;

/// Runs a service that cannot start and returns its exit status and stderr.
fn run_to_failure(name: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let started = Instant::now();
    let output = Command::new(binary(name))
        .env("TALLY_ADMIN_TOKEN", "a-test-admin-token-of-some-length")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .expect("runs");
    assert!(started.elapsed() < Duration::from_secs(60), "{name} gave up within a minute");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).to_string())
}

#[test]
fn services_without_kafka_or_postgres_exit_with_one_clear_line() {
    let free_port =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let kafka_down: Vec<_> = ["ingest", "aggregator", "projector"]
        .into_iter()
        .map(|name| {
            std::thread::spawn(move || {
                let env = [
                    ("TALLY_KAFKA_BROKERS", "127.0.0.1:1"),
                    ("TALLY_AGGREGATOR_ADDR", "127.0.0.1:0"),
                    ("TALLY_PROJECTOR_ADDR", "127.0.0.1:0"),
                ];
                (name, run_to_failure(name, &env))
            })
        })
        .collect();
    for handle in kafka_down {
        let (name, (code, stderr)) = handle.join().unwrap();
        assert_eq!(code, Some(1), "{name}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&format!("{name}: kafka: cannot reach Kafka at 127.0.0.1:1")),
            "{name}: {stderr}"
        );
    }
    let url = format!("postgres://tally:s3cret-password@127.0.0.1:{free_port}/tally");
    for name in ["api", "ingest", "projector"] {
        let (code, stderr) = run_to_failure(
            name,
            &[
                ("TALLY_DATABASE_URL", url.as_str()),
                ("TALLY_KAFKA_BROKERS", &tally_e2e::kafka_brokers()),
                ("TALLY_API_ADDR", "127.0.0.1:0"),
                ("TALLY_INGEST_ADDR", "127.0.0.1:0"),
                ("TALLY_PROJECTOR_ADDR", "127.0.0.1:0"),
            ],
        );
        assert_eq!(code, Some(1), "{name}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.contains(&format!("cannot reach PostgreSQL at 127.0.0.1:{free_port}/tally")),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains("s3cret"), "{name} printed the database password: {stderr}");
    }
}

/// Resumes the test broker even if the test fails half-way.
struct Paused(i32);

impl Paused {
    fn broker() -> Paused {
        let home = std::env::var("TALLY_TEST_HOME").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../.tally/test").to_string()
        });
        let pid: i32 = std::fs::read_to_string(format!("{home}/run/kafka.pid"))
            .expect("test broker pid")
            .trim()
            .parse()
            .unwrap();
        assert!(Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap().success());
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_kafka_stalls_ingest_answers_503_and_a_retry_counts_once() -> anyhow::Result<()> {
    let stack = Stack::start_with(&[("TALLY_INGEST_KAFKA_TIMEOUT_MS", "1500")]).await?;
    let api = stack.api();
    let org = unique("stall-");
    api.ensure_org(&org, "Stall").await?;
    let key = api.create_key(&org, "ingest").await?;
    let now = chrono::Utc::now();
    let batch: Vec<_> = (0..3)
        .map(|i| {
            let mut e = event(
                &format!("{org}-e{i}"),
                &org,
                "t",
                &format!("s{i}"),
                None,
                Operation::LlmCall,
                "success",
                now,
            );
            e["payload_bytes"] = 10.into();
            e
        })
        .collect();
    let http = reqwest::Client::new();
    let send = || {
        http.post(format!("{}/v1/events", stack.ingest_url()))
            .bearer_auth(&key)
            .json(&json!(batch))
            .send()
    };

    {
        let _paused = Paused::broker();
        let response = send().await?;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().get("retry-after").is_some());
        let body: serde_json::Value = response.json().await?;
        assert_eq!(body["error"]["code"], "unavailable");
        // What Kafka said is in ingest's log, not in the answer.
        assert_eq!(
            body["error"]["message"],
            "the events were not accepted (the event log is unavailable); retry with the same \
             event ids"
        );
        assert!(body.get("accepted").is_none(), "nothing is reported accepted");
    }

    // The client retries with the same event ids until it gets a 2xx.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = send().await?;
        if response.status().is_success() {
            let body: serde_json::Value = response.json().await?;
            assert_eq!(body["accepted"], 3);
            break;
        }
        assert!(Instant::now() < deadline, "ingest recovers after the broker does");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let period = tally_metering::Period::containing(now).to_string();
    let got =
        api.wait_for_usage(&org, &period, Duration::from_secs(60), |u| u["traces"] == 3).await?;
    assert_eq!(
        got["traces"], 3,
        "each event once, whether or not the stalled attempt reached the log"
    );
    let mut want = Expected { traces: 3, payload_bytes: 30, ..Default::default() };
    want.by_operation.insert(Operation::LlmCall, (3, 30));
    // Duplicates depend on whether the stalled write landed; billed usage does not.
    let dup = got["not_billed"]["duplicate"].as_u64().unwrap();
    assert!(dup == 0 || dup == 3, "{got}");
    want.duplicate = dup;
    assert_usage_eventually(&api, &[((org, period), want)].into(), Duration::from_secs(10)).await?;
    Ok(())
}

/// A projector whose database remembers offsets beyond the end of the log (the log was reset)
/// refuses to start, instead of silently skipping everything up to those offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projector_refuses_read_models_ahead_of_the_log() -> anyhow::Result<()> {
    let db = tally_e2e::unique("tally_guard_");
    let admin = sqlx::PgPool::connect(&tally_e2e::database_url()).await?;
    let owner_url = tally_e2e::create_database(&db, false).await?;
    let url = tally_e2e::as_role(&owner_url, "tally_projector");
    let brokers = tally_e2e::kafka_brokers();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let env = [
        ("TALLY_DATABASE_URL", url.as_str()),
        ("TALLY_KAFKA_BROKERS", brokers.as_str()),
        ("TALLY_PROJECTOR_ADDR", addr.as_str()),
    ];

    // Services never migrate: on a schema older than they need, they stop with one line.
    let (code, stderr) = run_to_failure("projector", &env);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr.lines().last().unwrap_or_default(),
        format!(
            "projector: the database's schema is at migration 0, this build needs {}: run \
             tally-migrate (make migrate) as the schema's owner first",
            tally_store::schema_version()
        ),
    );
    tally_e2e::migrate(&owner_url).await?;
    let mut first =
        Command::new(binary("projector")).envs(env).stderr(std::process::Stdio::null()).spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reqwest::get(format!("http://{addr}/readyz"))
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "projector ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.kill()?;
    first.wait()?;

    let pool = sqlx::PgPool::connect(&owner_url).await?;
    sqlx::query("INSERT INTO projector_offsets (topic, partition, next_offset) VALUES ('tally.usage.v1', 0, 1000000000000)")
        .execute(&pool)
        .await?;
    pool.close().await;
    let (code, stderr) = run_to_failure("projector", &env);
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)")).execute(&admin).await?;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the read models are ahead of tally.usage.v1 (partition 0"),
        "{stderr}"
    );
    Ok(())
}

/// A service that calls Tally with `tally-client` through an outage: ingest stopped, then Kafka
/// stalled. Every `record` returns at once (if one blocked, the recording threads below would
/// never finish), the queue stays bounded, and after recovery the usage is exactly what was
/// recorded minus what the client counted as dropped: nothing lost beyond that, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_never_blocks_its_service_and_drops_only_what_it_counts() -> anyhow::Result<()> {
    use tally_client::{Client, Config, Recorded};
    use tally_schemas::{Status, TraceCompletedV1};

    let mut stack = Stack::start_with(&[("TALLY_INGEST_KAFKA_TIMEOUT_MS", "1500")]).await?;
    let api = stack.api();
    let org = unique("client-");
    api.ensure_org(&org, "Client org").await?;
    let key = api.create_key(&org, "ingest").await?;
    let client = std::sync::Arc::new(Client::with_config(Config {
        queue_capacity: 1_000,
        batch_size: 100,
        batch_age: Duration::from_millis(50),
        request_timeout: Duration::from_secs(3),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_secs(1),
        ..Config::new(&stack.ingest_url(), &key)
    })?);
    let now = chrono::Utc::now();
    let event = {
        let org = org.clone();
        move |i: usize| TraceCompletedV1 {
            event_id: format!("{org}-{i}"),
            org_id: org.clone(),
            trace_id: format!("t{i}"),
            span_id: format!("s{i}"),
            parent_span_id: None,
            operation: Operation::LlmCall,
            status: Status::Success,
            started_at: now,
            ended_at: now,
            payload: None,
            payload_bytes: Some(10),
            attributes: None,
        }
    };
    // Records events from a plain thread, as a service without a runtime would; the number
    // dropped by the client's own say.
    let record_from_a_thread = |range: std::ops::Range<usize>| {
        let client = client.clone();
        let event = event.clone();
        std::thread::spawn(move || {
            range.filter(|&i| client.record(event(i)) == Recorded::Dropped).count() as u64
        })
    };

    // Healthy, from inside the tokio runtime: nothing is dropped.
    for i in 0..500 {
        assert_eq!(client.record(event(i)), Recorded::Queued);
    }
    client.flush_async().await;
    assert_eq!(client.stats().accepted, 500);

    // Ingest is away: the queue fills and the newest events are dropped, never blocking.
    stack.kill9("ingest");
    let mut dropped = record_from_a_thread(500..3_500).join().unwrap();
    assert!(dropped > 0, "3,000 events into a queue of 1,000 with ingest away");
    stack.start_service("ingest").await?;

    // Kafka stalls: ingest holds each request, then answers 503; the client retries.
    {
        let _paused = Paused::broker();
        dropped += record_from_a_thread(3_500..6_500).join().unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let client = std::sync::Arc::into_inner(client).expect("the threads are done");
    tokio::task::spawn_blocking(move || {
        client.flush(Duration::from_secs(120))?;
        let stats = client.shutdown(Duration::from_secs(5));
        assert_eq!(stats.recorded, 6_500);
        assert_eq!(stats.dropped, dropped, "the counter says exactly what was dropped");
        assert_eq!(stats.rejected, 0);
        assert_eq!(stats.accepted + stats.dropped, 6_500, "{stats:?}");
        anyhow::Ok(stats)
    })
    .await??;
    let exposed = prometheus::TextEncoder::new().encode_to_string(&prometheus::gather())?;
    let metric = exposed
        .lines()
        .find_map(|line| line.strip_prefix(r#"tally_client_events_total{outcome="dropped"} "#))
        .and_then(|value| value.trim().parse::<u64>().ok());
    assert_eq!(metric, Some(dropped), "the metric agrees with the counter");

    // Billed usage is every event that was not dropped, once. A request that timed out may
    // have reached the log before the client resent it: those are duplicates, not billed.
    let delivered = 6_500 - dropped;
    let mut want =
        Expected { traces: delivered, payload_bytes: 10 * delivered, ..Default::default() };
    want.by_operation.insert(Operation::LlmCall, (delivered, 10 * delivered));
    let period = tally_metering::Period::containing(now).to_string();
    let expected = std::collections::BTreeMap::from([((org.clone(), period), want)]);
    tally_e2e::assert_usage_eventually_resent(&api, &expected, 6_500, Duration::from_secs(60)).await
}
