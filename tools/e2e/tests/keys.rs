//! Keys do only what they are for (docs/security.md): an org's ingest key sends for its org only,
//! a service key for the orgs it lists (or all, when the admin chose so); keys are listed
//! without their secret, revoked (ingest stops taking them within seconds, and at once after a
//! restart), rotated with a grace period, and show when they were last used; the admin token
//! rotates with two valid at once.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tally_e2e::{unique, Stack};
use tally_loadgen::generate::event;
use tally_schemas::Operation;

/// A small HTTP client that answers status and JSON.
#[derive(Clone)]
struct Http {
    http: reqwest::Client,
}

impl Http {
    fn new() -> Http {
        Http { http: reqwest::Client::new() }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the service answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, url: &str, token: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, url, token, None).await
    }

    async fn post(&self, url: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, url, token, Some(body)).await
    }

    async fn delete(&self, url: &str, token: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, url, token, None).await
    }
}

fn one_event(id: &str, org: &str) -> Value {
    let ended = chrono::Utc::now() - chrono::Duration::seconds(5);
    let mut e = event(id, org, id, "s", None, Operation::LlmCall, "success", ended);
    e["payload_bytes"] = 100.into();
    e
}

/// Each event's outcome: `accepted` or its error code.
fn outcomes(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .map(|r| r["error"]["code"].as_str().unwrap_or("accepted").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// [`tally_e2e::eventually`] for a yes-or-no check.
async fn until<F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tally_e2e::eventually(what, within, || {
        let done = check();
        async move { Ok(done.await.then_some(())) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_sends_only_for_the_orgs_it_may() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let api = stack.api();
    let (a, b, c) = (unique("keya-"), unique("keyb-"), unique("keyc-"));
    for org in [&a, &b, &c] {
        api.ensure_org(org, "Key scope org").await?;
    }
    let nobody = unique("nobody-");
    let http = Http::new();
    let events = format!("{}/v1/events", stack.ingest_url());
    let send = |key: String, batch: Value| {
        let (http, events) = (http.clone(), events.clone());
        async move { http.post(&events, &key, batch).await }
    };

    // An org's ingest key: its own org only; another org, existing or not, is `org_not_allowed`,
    // and the rest of the batch is accepted.
    let ingest_a = api.create_key(&a, "ingest").await?;
    let (status, body) = send(
        ingest_a.clone(),
        json!([
            one_event(&format!("{a}-k1"), &a),
            one_event(&format!("{a}-k2"), &b),
            one_event(&format!("{a}-k3"), &nobody)
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(outcomes(&body), ["accepted", "org_not_allowed", "org_not_allowed"], "{body}");

    // The same through OTLP: the span for another org is refused in the partial success.
    let now_nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() - 5_000_000_000;
    let span = |org: &str, span_id: &str| {
        json!({
            "resource": {"attributes": [{"key": "tally.org_id", "value": {"stringValue": org}}]},
            "scopeSpans": [{"spans": [{
                "traceId": format!("{:032x}", rand::random::<u128>()),
                "spanId": span_id,
                "name": "chat",
                "startTimeUnixNano": (now_nanos - 1_000).to_string(),
                "endTimeUnixNano": now_nanos.to_string(),
                "attributes": [
                    {"key": "tally.operation", "value": {"stringValue": "llm_call"}},
                    {"key": "tally.payload_bytes", "value": {"intValue": "10"}}
                ]
            }]}]
        })
    };
    let (status, answer) = http
        .post(
            &format!("{}/v1/traces", stack.ingest_url()),
            &ingest_a,
            json!({"resourceSpans": [span(&a, "00000000000000a1"), span(&b, "00000000000000b1")]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let partial = &answer["partialSuccess"];
    assert_eq!(partial["rejectedSpans"].to_string().trim_matches('"'), "1", "{answer}");
    assert!(
        partial["errorMessage"].as_str().is_some_and(|m| m.contains("org_not_allowed")),
        "{answer}"
    );

    // A service key for a list: the listed orgs only.
    let listed = api.create_service_key(Some(&[a.clone(), b.clone()])).await?;
    let (_, body) = send(
        listed.clone(),
        json!([
            one_event(&format!("{a}-k4"), &a),
            one_event(&format!("{a}-k5"), &b),
            one_event(&format!("{a}-k6"), &c)
        ]),
    )
    .await;
    assert_eq!(outcomes(&body), ["accepted", "accepted", "org_not_allowed"], "{body}");

    // A service key for all orgs: any org that exists.
    let all = api.create_service_key(None).await?;
    let (_, body) = send(
        all.clone(),
        json!([one_event(&format!("{a}-k7"), &c), one_event(&format!("{a}-k8"), &nobody)]),
    )
    .await;
    assert_eq!(outcomes(&body), ["accepted", "unknown_org"], "{body}");

    // A service key must name its orgs, or say "all orgs" explicitly; the orgs must exist.
    let base = stack.api_url();
    let admin = stack.admin_token.clone();
    for (body, code) in [
        (json!({"name": "x"}), "invalid_field"),
        (json!({"orgs": [a], "all_orgs": true}), "invalid_field"),
        (json!({"orgs": []}), "invalid_field"),
        (json!({"orgs": [nobody]}), "unknown_org"),
    ] {
        let (status, answer) = http.post(&format!("{base}/v1/service-keys"), &admin, body).await;
        assert_eq!(answer["error"]["code"], code, "{status} {answer}");
    }
    // An org key is read, billing or ingest; never a service key.
    let (status, answer) =
        http.post(&format!("{base}/v1/orgs/{a}/keys"), &admin, json!({"scope": "service"})).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_field"))
    );

    // Only what was accepted is counted: a has k1, k4 and its span; b has k5; c has k7.
    let period = tally_metering::Period::containing(chrono::Utc::now()).to_string();
    for (org, traces) in [(&a, 3u64), (&b, 1), (&c, 1)] {
        api.wait_for_usage(org, &period, Duration::from_secs(60), |u| u["traces"] == traces)
            .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_listed_revoked_and_rotated() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    let api = stack.api();
    let (org, other) = (unique("keylife-"), unique("keyother-"));
    api.ensure_org(&org, "Key lifecycle org").await?;
    api.ensure_org(&other, "Another org").await?;
    let http = Http::new();
    let base = stack.api_url();
    let admin = stack.admin_token.clone();
    let events = format!("{}/v1/events", stack.ingest_url());
    let keys_url = format!("{base}/v1/orgs/{org}/keys");

    let (status, created) =
        http.post(&keys_url, &admin, json!({"scope": "read", "name": "dashboards"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let read = created["key"].as_str().unwrap().to_string();
    let read_id = created["key_id"].as_str().unwrap().to_string();
    assert!(read.starts_with("tally_read_") && read_id.starts_with("key_"), "{created}");
    let billing = api.create_key(&org, "billing").await?;
    let ingest = api.create_key(&org, "ingest").await?;
    let other_billing = api.create_key(&other, "billing").await?;

    // Listed by the admin and by the org's billing key, never with a secret; not by a read key,
    // nor by another org's billing key (which is told the org does not exist).
    let (status, list) = http.get(&keys_url, &billing).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let listed = list["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{list}");
    let text = list.to_string();
    for secret in [&read, &billing, &ingest] {
        assert!(!text.contains(secret.as_str()), "a list never shows a secret");
        assert!(!text.contains(&tally_common::keys::hash(secret)), "nor its hash");
    }
    let mut scopes: Vec<&str> = listed.iter().map(|k| k["scope"].as_str().unwrap()).collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["billing", "ingest", "read"]);
    assert_eq!(http.get(&keys_url, &read).await.0, StatusCode::FORBIDDEN);
    assert_eq!(http.get(&keys_url, &other_billing).await.0, StatusCode::NOT_FOUND);

    // last_used_at: the api marks a key when it looks it up; ingest marks the keys that sent,
    // every few seconds.
    assert_eq!(http.get(&format!("{base}/v1/orgs/{org}/usage"), &read).await.0, StatusCode::OK);
    let (status, _) = http.post(&events, &ingest, json!([one_event("used-1", &org)])).await;
    assert_eq!(status, StatusCode::OK);
    let last_used = |key_id: Option<String>, scope: &'static str| {
        let (http, keys_url, admin) = (http.clone(), keys_url.clone(), admin.clone());
        async move {
            let (_, list) = http.get(&keys_url, &admin).await;
            list["keys"].as_array().unwrap().iter().any(|k| {
                (key_id.as_deref().is_none_or(|id| k["key_id"] == id))
                    && k["scope"] == scope
                    && k["last_used_at"].is_string()
            })
        }
    };
    until("the read key's last use", Duration::from_secs(5), || {
        last_used(Some(read_id.clone()), "read")
    })
    .await?;
    until("the ingest key's last use", Duration::from_secs(20), || last_used(None, "ingest"))
        .await?;

    // Revoked by the org's billing key: ingest refuses it within seconds, and at once after a
    // restart; the api at once.
    let ingest_id = listed.iter().find(|k| k["scope"] == "ingest").unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, revoked) = http.delete(&format!("{keys_url}/{ingest_id}"), &billing).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string() && revoked["live"] == false, "{revoked}");
    let refused = || {
        let (http, events, ingest) = (http.clone(), events.clone(), ingest.clone());
        async move {
            http.post(&events, &ingest, json!([one_event("after-revoke", "x")])).await.0
                == StatusCode::UNAUTHORIZED
        }
    };
    until("ingest refuses the revoked key", Duration::from_secs(12), refused).await?;
    stack.restart("ingest").await?;
    assert!(refused().await, "a restarted ingest refuses the revoked key from the start");
    let (status, body) = http.delete(&format!("{keys_url}/key_nosuchkey"), &admin).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("key_not_found"))
    );

    // Rotated with a grace period: both work during it, only the new one after it.
    let (status, rotated) = http
        .post(&format!("{keys_url}/{read_id}/rotate"), &billing, json!({"grace_secs": 2}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    let new_read = rotated["key"].as_str().unwrap().to_string();
    assert_eq!(rotated["replaces"]["key_id"], read_id.as_str());
    assert_eq!(
        (rotated["scope"].as_str(), rotated["name"].as_str()),
        (Some("read"), Some("dashboards"))
    );
    let usage = format!("{base}/v1/orgs/{org}/usage");
    assert_eq!(http.get(&usage, &new_read).await.0, StatusCode::OK);
    assert_eq!(http.get(&usage, &read).await.0, StatusCode::OK, "the old key works in its grace");
    let (status, again) =
        http.post(&format!("{keys_url}/{read_id}/rotate"), &admin, json!({})).await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("key_not_live"))
    );
    // The grace (2 s) and the api's memory of a key (5 s).
    until("the rotated key stops working", Duration::from_secs(12), || {
        let (http, usage, read) = (http.clone(), usage.clone(), read.clone());
        async move { http.get(&usage, &read).await.0 == StatusCode::UNAUTHORIZED }
    })
    .await?;
    assert_eq!(http.get(&usage, &new_read).await.0, StatusCode::OK);
    let (_, list) = http.get(&keys_url, &admin).await;
    let old =
        list["keys"].as_array().unwrap().iter().find(|k| k["key_id"] == read_id.as_str()).unwrap();
    assert_eq!(
        (old["live"].as_bool(), old["replaced_by"].as_str()),
        (Some(false), rotated["key_id"].as_str())
    );

    // Service keys are the admin's: listed, revoked.
    let service = api.create_service_key(Some(std::slice::from_ref(&org))).await?;
    let (_, services) = http.get(&format!("{base}/v1/service-keys"), &admin).await;
    let mine = services["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["orgs"] == json!([org]))
        .expect("the service key is listed")
        .clone();
    assert!(!services.to_string().contains(&service));
    assert_eq!(
        http.get(&format!("{base}/v1/service-keys"), &billing).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, _) = http
        .delete(&format!("{base}/v1/service-keys/{}", mine["key_id"].as_str().unwrap()), &admin)
        .await;
    assert_eq!(status, StatusCode::OK);
    until("ingest refuses the revoked service key", Duration::from_secs(12), || {
        let (http, events, service) = (http.clone(), events.clone(), service.clone());
        async move {
            http.post(&events, &service, json!([one_event("svc", "x")])).await.0
                == StatusCode::UNAUTHORIZED
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_rotates_with_two_valid_at_once() -> anyhow::Result<()> {
    let mut stack = Stack::start_services(&["api"], &[]).await?;
    let http = Http::new();
    let base = stack.api_url();
    let old = stack.admin_token.clone();
    let orgs = format!("{base}/v1/orgs?limit=1");
    // An operator session opened with the old token.
    let cookie = tally_e2e::sign_in(&base, &old).await?;
    let session = || {
        let (base, cookie) = (base.clone(), cookie.clone());
        async move {
            reqwest::Client::new()
                .get(format!("{base}/v1/sessions/current"))
                .header("cookie", cookie)
                .send()
                .await
                .map(|r| r.status())
        }
    };

    // During the rotation both tokens are the admin's, and what the old one opened holds.
    let new = format!("test-admin-new-{:032x}", rand::random::<u128>());
    set_env(&mut stack, "TALLY_ADMIN_TOKEN", &new);
    set_env(&mut stack, "TALLY_ADMIN_TOKEN_PREVIOUS", &old);
    stack.restart("api").await?;
    assert_eq!(http.get(&orgs, &new).await.0, StatusCode::OK);
    assert_eq!(http.get(&orgs, &old).await.0, StatusCode::OK);
    assert_eq!(session().await?, StatusCode::OK);

    // Once the old token is unset, it and its sessions are over.
    set_env(&mut stack, "TALLY_ADMIN_TOKEN_PREVIOUS", "");
    stack.restart("api").await?;
    assert_eq!(http.get(&orgs, &new).await.0, StatusCode::OK);
    assert_eq!(http.get(&orgs, &old).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(session().await?, StatusCode::UNAUTHORIZED);
    Ok(())
}

fn set_env(stack: &mut Stack, name: &str, value: &str) {
    stack.env.retain(|(k, _)| k != name);
    stack.env.push((name.to_string(), value.to_string()));
}
