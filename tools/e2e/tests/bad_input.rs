//! Bad input gets the right status and code, and never disturbs what was already accepted.

use std::io::Write;
use std::time::Duration;

use flate2::write::GzEncoder;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tally_e2e::{assert_usage_eventually, unique, Stack};
use tally_loadgen::generate::event;
use tally_loadgen::Expected;
use tally_schemas::Operation;

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    async fn post(
        &self,
        key: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self.http.post(&self.url).body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("ingest answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_harms_nothing() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let api = stack.api();
    let org = unique("bad-");
    api.ensure_org(&org, "Bad input org").await?;
    let key = api.create_key(&org, "ingest").await?;
    let read_key = api.create_key(&org, "read").await?;
    let ingest =
        Client { http: reqwest::Client::new(), url: format!("{}/v1/events", stack.ingest_url()) };
    let now = chrono::Utc::now();
    let ev = |id: &str| {
        let mut e =
            event(id, &org, "t1", &format!("s-{id}"), None, Operation::ToolCall, "success", now);
        e["payload_bytes"] = 1000.into();
        e
    };

    // What was accepted first must survive everything below untouched.
    let (status, body) =
        ingest.post(Some(&key), serde_json::to_vec(&json!([ev("ok-1"), ev("ok-2")]))?, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 2);

    // Keys.
    let (status, body) = ingest.post(None, b"[]".to_vec(), &[]).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (status, body) =
        ingest.post(Some("tally_ingest_nope"), serde_json::to_vec(&ev("x"))?, &[]).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (status, body) = ingest.post(Some(&read_key), serde_json::to_vec(&ev("x"))?, &[]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "a read key cannot send"
    );

    // Not JSON at all.
    let (status, body) = ingest.post(Some(&key), b"{this is not json".to_vec(), &[]).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_json"));
    let (status, body) = ingest.post(Some(&key), b"".to_vec(), &[]).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "empty_body"));
    let (status, body) =
        ingest.post(Some(&key), b"not gzip".to_vec(), &[("content-encoding", "gzip")]).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_gzip"));

    // Per-event rejections in a batch; the valid event in it is still accepted.
    let mut wrong_type = ev("bad-type");
    wrong_type["payload_bytes"] = "many".into();
    let mut unknown_field = ev("bad-field");
    unknown_field["colour"] = "blue".into();
    let mut missing = ev("bad-missing");
    missing.as_object_mut().unwrap().remove("span_id");
    let mut bad_op = ev("bad-op");
    bad_op["operation"] = "teleport".into();
    let mut too_old = ev("bad-old");
    too_old["ended_at"] = (now - chrono::Duration::days(40)).to_rfc3339().into();
    too_old["started_at"] = too_old["ended_at"].clone();
    let mut future = ev("bad-future");
    future["ended_at"] = (now + chrono::Duration::minutes(10)).to_rfc3339().into();
    let mut other_org = ev("bad-org");
    other_org["org_id"] = "no-such-org-anywhere".into();
    let mut both = ev("bad-both");
    both["payload"] = json!({"a": 1});
    let batch = json!([
        wrong_type,
        unknown_field,
        missing,
        bad_op,
        too_old,
        future,
        other_org,
        both,
        42,
        ev("ok-3")
    ]);
    let (status, body) = ingest.post(Some(&key), serde_json::to_vec(&batch)?, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["accepted"].as_u64(), body["rejected"].as_u64()), (Some(1), Some(9)));
    let results = body["results"].as_array().unwrap();
    let codes: Vec<&str> =
        results.iter().map(|r| r["error"]["code"].as_str().unwrap_or("accepted")).collect();
    assert_eq!(
        codes,
        [
            "invalid_field",
            "unknown_field",
            "missing_field",
            "invalid_field",
            "out_of_window",
            "out_of_window",
            // An org's ingest key sends for its org only; it is not told whether another exists.
            "org_not_allowed",
            "invalid_field",
            "malformed_event",
            "accepted"
        ]
    );
    assert_eq!(results[0]["event_id"], "bad-type", "a rejection names the event it is about");
    assert_eq!(results[9], json!({"event_id": "ok-3", "status": "accepted"}));

    // NDJSON, gzip-compressed, with a broken line.
    let ndjson = format!("{}\n{{broken\n{}\n", ev("ok-4"), ev("ok-5"));
    let (status, body) = ingest
        .post(
            Some(&key),
            gzip(ndjson.as_bytes()),
            &[("content-type", "application/x-ndjson"), ("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["accepted"].as_u64(), body["rejected"].as_u64()), (Some(2), Some(1)));
    assert_eq!(body["results"][1]["error"]["code"], "malformed_event");

    // Limits: too many events, too large a body, a gzip bomb.
    let many: Vec<Value> = (0..10_001).map(|i| json!({"event_id": format!("m{i}")})).collect();
    let (status, body) = ingest.post(Some(&key), serde_json::to_vec(&many)?, &[]).await;
    assert_eq!((status, code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "too_many_events"));
    let mut huge = ev("huge");
    huge["payload"] = "x".repeat(11 * 1024 * 1024).into();
    let (status, body) = ingest.post(Some(&key), serde_json::to_vec(&huge)?, &[]).await;
    assert_eq!((status, code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
    let bomb = gzip(&vec![b' '; 200 * 1024 * 1024]);
    assert!(bomb.len() < 1024 * 1024, "the bomb is small on the wire");
    let (status, body) = ingest.post(Some(&key), bomb, &[("content-encoding", "gzip")]).await;
    assert_eq!((status, code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));

    // Re-sending accepted events is a success for the client and counts nothing twice.
    let (status, body) =
        ingest.post(Some(&key), serde_json::to_vec(&json!([ev("ok-1"), ev("ok-2")]))?, &[]).await;
    assert_eq!((status, body["accepted"].as_u64()), (StatusCode::OK, Some(2)));

    // Exactly the five valid events, each once, two re-deliveries, nothing else.
    let period = tally_metering::Period::containing(now).to_string();
    let mut want = Expected { traces: 5, payload_bytes: 5000, duplicate: 2, ..Default::default() };
    want.by_operation.insert(Operation::ToolCall, (5, 5000));
    assert_usage_eventually(&api, &[((org.clone(), period), want)].into(), Duration::from_secs(30))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_have_statuses_and_codes() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let api = stack.api();
    let (a, b) = (unique("apia-"), unique("apib-"));
    api.ensure_org(&a, "A").await?;
    api.ensure_org(&b, "B").await?;
    let read_a = api.create_key(&a, "read").await?;
    let ingest_a = api.create_key(&a, "ingest").await?;
    let http = reqwest::Client::new();
    let base = stack.api_url();
    let admin = stack.admin_token.clone();
    let get = |url: String, key: Option<String>| {
        let http = http.clone();
        async move {
            let mut r = http.get(url);
            if let Some(k) = key {
                r = r.bearer_auth(k);
            }
            let r = r.send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let post = |url: String, key: Option<String>, body: &'static str| {
        let http = http.clone();
        async move {
            let mut r = http.post(url).header("content-type", "application/json").body(body);
            if let Some(k) = key {
                r = r.bearer_auth(k);
            }
            let r = r.send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // A period with no events answers zeros, not 404; a read key sees its own org.
    let (s, body) =
        get(format!("{base}/v1/orgs/{a}/usage?period=2026-01"), Some(read_a.clone())).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["traces"], 0);
    assert_eq!(body["period"]["id"], "2026-01");
    assert_eq!(body["by_operation"].as_object().unwrap().len(), 6);
    // Org B through A's read key: 404, as if B did not exist.
    let (s, body) = get(format!("{base}/v1/orgs/{b}/usage"), Some(read_a.clone())).await;
    assert_eq!((s, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, body) = get(format!("{base}/v1/orgs/{a}/usage"), None).await;
    assert_eq!((s, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, body) = get(format!("{base}/v1/orgs/{a}/usage"), Some("wrong".into())).await;
    assert_eq!((s, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, body) = get(format!("{base}/v1/orgs/{a}/usage"), Some(ingest_a)).await;
    assert_eq!((s, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (s, body) =
        get(format!("{base}/v1/orgs/{a}/usage?period=2026-13"), Some(admin.clone())).await;
    assert_eq!((s, code(&body)), (StatusCode::BAD_REQUEST, "invalid_period"));
    let (s, body) = get(format!("{base}/v1/orgs/nobody-{a}/usage"), Some(admin.clone())).await;
    assert_eq!((s, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, body) = get(
        format!("{base}/v1/orgs/{a}/usage/daily?from=2026-11-05&to=2026-11-01"),
        Some(admin.clone()),
    )
    .await;
    assert_eq!((s, code(&body)), (StatusCode::BAD_REQUEST, "invalid_query"));

    // Admin endpoints.
    let (s, body) =
        post(format!("{base}/v1/orgs"), Some(read_a.clone()), r#"{"org_id":"x1","name":"X"}"#)
            .await;
    assert_eq!((s, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let create_a: &'static str =
        Box::leak(format!(r#"{{"org_id":"{a}","name":"Again"}}"#).into_boxed_str());
    let (s, body) = post(format!("{base}/v1/orgs"), Some(admin.clone()), create_a).await;
    assert_eq!((s, code(&body)), (StatusCode::CONFLICT, "org_exists"));
    let (s, body) =
        post(format!("{base}/v1/orgs"), Some(admin.clone()), r#"{"org_id":"bad id!","name":"X"}"#)
            .await;
    assert_eq!((s, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"));
    let (s, body) = post(format!("{base}/v1/orgs"), Some(admin.clone()), r#"{"org_id":"#).await;
    assert_eq!((s, code(&body)), (StatusCode::BAD_REQUEST, "invalid_json"));
    let (s, body) =
        post(format!("{base}/v1/orgs/{a}/keys"), Some(admin.clone()), r#"{"scope":"root"}"#).await;
    assert_eq!((s, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"));
    let (s, body) =
        post(format!("{base}/v1/orgs/nobody-{a}/keys"), Some(admin.clone()), r#"{"scope":"read"}"#)
            .await;
    assert_eq!((s, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    Ok(())
}
