//! The client against a fake ingest: batching, retries, splitting, dropping, shutting down.
//! (The real ingest, through a real outage: tools/e2e/tests/resilience.rs.)

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tally_schemas::{Operation, Status, TraceCompletedV1};

use crate::{Client, Config, Recorded};

/// The fake's permits: a test that holds them all stalls every request.
const GATE: u32 = 1_000_000;

/// How the fake answers a request of `n` events, the `attempt`-th it received.
type Answer = dyn Fn(usize, usize) -> (StatusCode, Option<&'static str>) + Send + Sync;

#[derive(Clone)]
struct Fake {
    /// The event ids of every request, in order, and its headers' key.
    seen: Arc<Mutex<Vec<Vec<String>>>>,
    keys: Arc<Mutex<Vec<String>>>,
    answer: Arc<Answer>,
    /// Holds every request until released (a stalled ingest).
    gate: Arc<tokio::sync::Semaphore>,
    /// Requests being answered now, and the most at once.
    open: Arc<AtomicUsize>,
    most_open: Arc<AtomicUsize>,
}

async fn ingest(State(fake): State<Fake>, headers: HeaderMap, body: Bytes) -> Response {
    let open = fake.open.fetch_add(1, Ordering::SeqCst) + 1;
    fake.most_open.fetch_max(open, Ordering::SeqCst);
    let response = answer(&fake, &headers, &body).await;
    fake.open.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn answer(fake: &Fake, headers: &HeaderMap, body: &Bytes) -> Response {
    let _pass = fake.gate.acquire().await;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut json).expect("gzip");
    let events: Vec<serde_json::Value> = serde_json::from_slice(&json).expect("a JSON array");
    let ids: Vec<String> =
        events.iter().map(|e| e["event_id"].as_str().unwrap().to_string()).collect();
    let n = ids.len();
    let attempt = {
        let mut seen = fake.seen.lock().unwrap();
        seen.push(ids.clone());
        seen.len()
    };
    fake.keys
        .lock()
        .unwrap()
        .push(headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string());
    let (status, retry_after) = (fake.answer)(n, attempt);
    if status != StatusCode::OK {
        let mut response = (status, "{}").into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert("retry-after", secs.parse().unwrap());
        }
        return response;
    }
    let results: Vec<_> =
        ids.iter().map(|id| serde_json::json!({"event_id": id, "status": "accepted"})).collect();
    axum::Json(serde_json::json!({"accepted": n, "rejected": 0, "results": results}))
        .into_response()
}

async fn start(
    answer: impl Fn(usize, usize) -> (StatusCode, Option<&'static str>) + Send + Sync + 'static,
) -> (String, Fake) {
    let fake = Fake {
        seen: Arc::default(),
        keys: Arc::default(),
        answer: Arc::new(answer),
        gate: Arc::new(tokio::sync::Semaphore::new(GATE as usize)),
        open: Arc::default(),
        most_open: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = Router::new().route("/v1/events", post(ingest)).with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, fake)
}

fn ok(_: usize, _: usize) -> (StatusCode, Option<&'static str>) {
    (StatusCode::OK, None)
}

fn event(i: usize) -> TraceCompletedV1 {
    let now = chrono::Utc::now();
    TraceCompletedV1 {
        event_id: format!("e{i}"),
        org_id: "acme".into(),
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
}

fn config(url: &str) -> Config {
    Config {
        batch_size: 100,
        batch_age: Duration::from_millis(50),
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(100),
        ..Config::new(url, "tally_ingest_secret")
    }
}

#[tokio::test]
async fn batches_by_size_then_by_age_with_the_key_in_a_header() {
    let (url, fake) = start(ok).await;
    let client = Client::with_config(config(&url)).unwrap();
    for i in 0..250 {
        assert_eq!(client.record(event(i)), Recorded::Queued);
    }
    // The last 50 go out when their batch is old enough, without a flush.
    for _ in 0..200 {
        if client.stats().accepted == 250 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut sizes: Vec<usize> = fake.seen.lock().unwrap().iter().map(Vec::len).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [50, 100, 100]);
    assert!(fake.keys.lock().unwrap().iter().all(|k| k == "Bearer tally_ingest_secret"));
    assert!(!format!("{:?}", config(&url)).contains("secret"), "the key is never printed");
    let stats = client.shutdown_async(Duration::from_secs(1)).await;
    assert_eq!((stats.recorded, stats.accepted, stats.dropped), (250, 250, 0));
}

#[tokio::test]
async fn a_5xx_or_429_is_retried_with_the_same_events() {
    let (url, fake) = start(|_, attempt| match attempt {
        1 => (StatusCode::SERVICE_UNAVAILABLE, Some("0")),
        2 => (StatusCode::TOO_MANY_REQUESTS, None),
        _ => (StatusCode::OK, None),
    })
    .await;
    let client = Client::with_config(config(&url)).unwrap();
    for i in 0..30 {
        client.record(event(i));
    }
    client.flush_async().await;
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|ids| *ids == seen[0]), "every attempt carries the same event ids");
    let stats = client.stats();
    assert_eq!((stats.accepted, stats.retries), (30, 2));
}

#[tokio::test]
async fn a_413_splits_the_batch_and_a_401_is_final() {
    let (url, fake) =
        start(
            |n, _| {
                if n > 30 {
                    (StatusCode::PAYLOAD_TOO_LARGE, None)
                } else {
                    (StatusCode::OK, None)
                }
            },
        )
        .await;
    let client = Client::with_config(config(&url)).unwrap();
    for i in 0..100 {
        client.record(event(i));
    }
    client.flush_async().await;
    assert_eq!(client.stats().accepted, 100);
    let accepted: usize =
        fake.seen.lock().unwrap().iter().filter(|ids| ids.len() <= 30).map(Vec::len).sum();
    assert_eq!(accepted, 100, "each event in exactly one accepted request");

    let (url, _) = start(|_, _| (StatusCode::UNAUTHORIZED, None)).await;
    let client = Client::with_config(config(&url)).unwrap();
    for i in 0..10 {
        client.record(event(i));
    }
    client.flush_async().await;
    let stats = client.stats();
    assert_eq!((stats.rejected, stats.retries), (10, 0));
}

#[tokio::test]
async fn a_full_queue_drops_the_newest_and_counts_them() {
    let (url, fake) = start(ok).await;
    let held = fake.gate.acquire_many(GATE).await.unwrap();
    let client =
        Client::with_config(Config { queue_capacity: 10, batch_size: 5, ..config(&url) }).unwrap();
    // Recorded from a plain thread while ingest holds every request: it returns every time.
    let client = Arc::new(client);
    let recorder = {
        let client = client.clone();
        std::thread::spawn(move || {
            (0..1_000).filter(|&i| client.record(event(i)) == Recorded::Dropped).count() as u64
        })
    };
    let dropped = tokio::task::spawn_blocking(move || recorder.join().unwrap()).await.unwrap();
    // Held: the queue, the batches in flight and one full batch waiting for a slot.
    let most = 10 + (Config::new("", "").max_in_flight + 1) * 5;
    assert!(dropped >= (1_000 - most) as u64, "at most {most} are held: {dropped} dropped");
    assert_eq!(client.stats().dropped, dropped);
    drop(held);
    client.flush_async().await;
    let stats = client.stats();
    assert_eq!(stats.accepted + stats.dropped, 1_000);
}

#[tokio::test]
async fn shutdown_delivers_until_its_deadline_and_counts_the_rest_as_dropped() {
    let (url, fake) = start(ok).await;
    let held = fake.gate.acquire_many(GATE).await.unwrap();
    let client = Client::with_config(config(&url)).unwrap();
    for i in 0..40 {
        client.record(event(i));
    }
    let stats = client.shutdown_async(Duration::from_millis(300)).await;
    assert_eq!((stats.recorded, stats.accepted, stats.dropped), (40, 0, 40));
    drop(held);
}

#[tokio::test]
async fn up_to_max_in_flight_batches_are_sent_at_once_and_a_flush_waits_for_all() {
    let (url, fake) = start(ok).await;
    let held = fake.gate.acquire_many(GATE).await.unwrap();
    let client =
        Client::with_config(Config { max_in_flight: 3, batch_size: 10, ..config(&url) }).unwrap();
    for i in 0..200 {
        assert_eq!(client.record(event(i)), Recorded::Queued);
    }
    let client = Arc::new(client);
    let flushed = {
        let client = client.clone();
        tokio::spawn(async move { client.flush_async().await })
    };
    // Ingest holds every request: three reach it, and no more however long it holds them.
    for _ in 0..500 {
        if fake.open.load(Ordering::SeqCst) == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fake.open.load(Ordering::SeqCst), 3);
    assert!(!flushed.is_finished(), "the flush waits while its events are unanswered");
    drop(held);
    flushed.await.unwrap();
    // Answered when the last of the 200 was, not before.
    assert_eq!(client.stats().accepted, 200);
    assert_eq!(fake.most_open.load(Ordering::SeqCst), 3);
    let mut ids: Vec<String> = fake.seen.lock().unwrap().concat();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200, "each event sent once");
}

#[tokio::test]
async fn a_lone_event_after_a_quiet_spell_is_sent_without_a_flush() {
    let (url, _fake) = start(ok).await;
    let client = Client::with_config(config(&url)).unwrap();
    for n in 1..=3 {
        // The sender has found the queue empty and sleeps; this one event must wake it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.record(event(n));
        let mut waited = 0;
        while client.stats().accepted < n as u64 {
            assert!(waited < 500, "event {n} was never sent");
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
    }
}
