//! Every listener holds its clients to limits (docs/security.md): a key over its request rate
//! gets 429 with `Retry-After` (other keys do not notice), a client that sends its headers or its
//! body too slowly is cut off, and a listener at its concurrency cap refuses at once instead of
//! queueing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tally_e2e::{unique, Stack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `head` (and no more) on a new connection, then reads what the server answers until it
/// closes the connection, for at most `wait`. Returns the answer's text (empty if it only closed)
/// and whether the server closed the connection.
async fn send_and_read(addr: &str, head: &str, wait: Duration) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.expect("the listener accepts");
    stream.write_all(head.as_bytes()).await.expect("writes");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&answer).into_owned(), true),
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&answer).into_owned(), false),
        }
    }
}

fn status_of(answer: &str) -> u16 {
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn body_of(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_and_other_keys_do_not() -> anyhow::Result<()> {
    let stack =
        Stack::start_with(&[("TALLY_RATE_LIMIT_PER_SEC", "1"), ("TALLY_RATE_LIMIT_BURST", "3")])
            .await?;
    let api = stack.api();
    let org = unique("rate-");
    api.ensure_org(&org, "Rate org").await?;
    let http = reqwest::Client::new();

    // Ingest: a burst of three, then 429 for the same key; another key goes on.
    let (first, second) =
        (api.create_key(&org, "ingest").await?, api.create_key(&org, "ingest").await?);
    let events = format!("{}/v1/events", stack.ingest_url());
    let send = |key: String| {
        let (http, events) = (http.clone(), events.clone());
        async move { http.post(&events).bearer_auth(key).body("[]").send().await }
    };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send(first.clone()).await?.status());
    }
    // An empty batch is refused for what it is (400), not for the rate, until the burst is spent.
    assert!(statuses[..3].iter().all(|s| *s != StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    let limited = send(first.clone()).await?;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=3).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = limited.json().await?;
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_ne!(send(second).await?.status(), StatusCode::TOO_MANY_REQUESTS);

    // The api: the same for a read key.
    let reader = api.create_key(&org, "read").await?;
    let usage = format!("{}/v1/orgs/{org}/usage", stack.api_url());
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(http.get(&usage).bearer_auth(&reader).send().await?.status());
    }
    assert_eq!(codes[0], StatusCode::OK);
    assert_eq!(codes[4], StatusCode::TOO_MANY_REQUESTS, "{codes:?}");
    // The admin token is not limited.
    for _ in 0..5 {
        let status = http.get(&usage).bearer_auth(&stack.admin_token).send().await?.status();
        assert_eq!(status, StatusCode::OK);
    }
    // After the wait it said, the key is served again.
    tokio::time::sleep(Duration::from_secs(retry_after + 1)).await;
    assert_ne!(send(first).await?.status(), StatusCode::TOO_MANY_REQUESTS);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_and_a_full_listener_refuses_at_once() -> anyhow::Result<()> {
    let stack = Stack::start_with(&[
        ("TALLY_HTTP_HEADER_TIMEOUT_MS", "1000"),
        ("TALLY_HTTP_BODY_TIMEOUT_MS", "1000"),
        ("TALLY_HTTP_MAX_CONCURRENT", "1"),
    ])
    .await?;
    let api = stack.api();
    let org = unique("slow-");
    api.ensure_org(&org, "Slow org").await?;
    let key = api.create_key(&org, "ingest").await?;
    let api_addr = stack.addrs["api"].clone();
    let ingest_addr = stack.addrs["ingest"].clone();

    // Headers that never end: the connection is closed, on the api and on ingest.
    for addr in [&api_addr, &ingest_addr] {
        let (answer, closed) = send_and_read(
            addr,
            "GET /v1/pricing HTTP/1.1\r\nHost: tally\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(closed, "{addr}: a client that never finished its headers was kept: {answer:?}");
        assert!(!answer.contains("200 OK"), "{answer}");
    }

    // A body that never ends: 408 request_timeout, on the api and on ingest.
    let partial = |path: &str, auth: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: tally\r\nAuthorization: Bearer {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{{\"event"
        )
    };
    let (answer, _) =
        send_and_read(&api_addr, &partial("/v1/orgs", &stack.admin_token), Duration::from_secs(5))
            .await;
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert_eq!(body_of(&answer)["error"]["code"], "request_timeout", "{answer}");
    let (answer, _) =
        send_and_read(&ingest_addr, &partial("/v1/events", &key), Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert_eq!(body_of(&answer)["error"]["code"], "request_timeout", "{answer}");

    // One request in progress (its body still coming) fills a listener of one: the next is
    // refused at once with 503 overloaded, not queued.
    let holder = {
        let (addr, head) = (api_addr.clone(), partial("/v1/orgs", &stack.admin_token));
        tokio::spawn(async move { send_and_read(&addr, &head, Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (answer, _) = send_and_read(
        &api_addr,
        "GET /v1/pricing HTTP/1.1\r\nHost: tally\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&answer), 503, "{answer}");
    assert_eq!(body_of(&answer)["error"]["code"], "overloaded", "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    let (held, _) = holder.await?;
    assert_eq!(status_of(&held), 408, "{held}");
    // Once the slot is free again, the listener serves.
    let pricing = reqwest::get(format!("{}/v1/pricing", stack.api_url())).await?;
    assert_eq!(pricing.status(), StatusCode::OK);
    Ok(())
}
