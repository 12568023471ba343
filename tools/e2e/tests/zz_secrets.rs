//! Last in the run (the modules run on one thread, in the order of their names): no secret that
//! the run handed out, of any kind (the admin token, read, billing, ingest and service keys, page
//! session cookies, portal links, Stripe's secret key and webhook secret), appears in any
//! service's log, in the metrics each service showed when its stack stopped, or in any error
//! answer. The secrets are those in the run's ledger (`tally_e2e::secrets_ledger`): each stack
//! and each key, link and session the tests made added theirs.
//!
//! The end-to-end tests that stop and kill the broker run beside the others with logs of their
//! own (`.tally/test-faults/logs`); this sweep reads the run's own log directory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tally_e2e::{logs_dir, remember_secret, secrets_ledger, unique, Stack};

/// Every `.log` file under `dir` (the services' logs, the brokers', the metrics dumps).
fn log_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            log_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "log") {
            out.push(path);
        }
    }
}

/// A secret shown in a failure message: its first characters only.
fn shown(secret: &str) -> String {
    format!("{}…", &secret[..secret.len().min(10)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_a_log_a_metric_or_an_error_answer() -> anyhow::Result<()> {
    // Error answers: each kind of credential, refused in each way it can be.
    let stack = Stack::start().await?;
    let api = stack.api();
    let (a, b) = (unique("secret-a-"), unique("secret-b-"));
    for org in [&a, &b] {
        api.ensure_org(org, "Secrets org").await?;
    }
    let read = api.create_key(&a, "read").await?;
    let billing = api.create_key(&a, "billing").await?;
    let ingest = api.create_key(&a, "ingest").await?;
    let service = api.create_service_key(Some(std::slice::from_ref(&a))).await?;
    let link = api.portal_link(&a).await?;
    let cookie = tally_e2e::sign_in(&stack.api_url(), &read).await?;
    let http = reqwest::Client::new();
    let (api_url, ingest_url) = (stack.api_url(), stack.ingest_url());
    let mut answers: Vec<(String, StatusCode, String)> = Vec::new();
    let ask = |what: &str, request: reqwest::RequestBuilder| {
        let what = what.to_string();
        async move {
            let response = request.send().await.expect("the service answers");
            (what, response.status(), response.text().await.unwrap_or_default())
        }
    };
    let event = |org: &str| {
        json!([{"event_id": unique("e-"), "org_id": org, "trace_id": "t", "span_id": "s",
                "operation": "llm_call", "status": "success",
                "started_at": "2026-12-01T00:00:00Z", "ended_at": "2026-12-01T00:00:01Z",
                "payload_bytes": 10}])
    };
    let events = format!("{ingest_url}/v1/events");
    for (name, key) in [("ingest", &ingest), ("service", &service)] {
        answers.push(
            ask(
                &format!("{name} key, another org"),
                http.post(&events).bearer_auth(key).json(&event(&b)),
            )
            .await,
        );
        answers.push(
            ask(
                &format!("{name} key, bad JSON"),
                http.post(&events).bearer_auth(key).body("{oops"),
            )
            .await,
        );
        answers.push(
            ask(
                &format!("{name} key, the api"),
                http.get(format!("{api_url}/v1/orgs/{a}/usage")).bearer_auth(key),
            )
            .await,
        );
    }
    for (name, key) in [("read", &read), ("billing", &billing), ("admin", &stack.admin_token)] {
        answers.push(
            ask(
                &format!("{name} key, ingest"),
                http.post(&events).bearer_auth(key).json(&event(&a)),
            )
            .await,
        );
        answers.push(
            ask(
                &format!("{name} key, another org"),
                http.get(format!("{api_url}/v1/orgs/{b}/keys")).bearer_auth(key),
            )
            .await,
        );
        answers.push(
            ask(
                &format!("{name} key, bad body"),
                http.post(format!("{api_url}/v1/orgs/{a}/checkout")).bearer_auth(key).body("{oops"),
            )
            .await,
        );
    }
    answers.push(
        ask(
            "session cookie, another org",
            http.get(format!("{api_url}/v1/orgs/{b}/usage")).header("cookie", &cookie),
        )
        .await,
    );
    answers.push(
        ask(
            "session cookie, no CSRF token",
            http.post(format!("{api_url}/v1/orgs/{a}/plan-changes"))
                .header("cookie", &cookie)
                .json(&json!({"tier": "growth"})),
        )
        .await,
    );
    let token = link.split_once('#').map_or("", |(_, t)| t).to_string();
    answers.push(
        ask(
            "portal link, twice",
            http.post(format!("{api_url}/v1/sessions/portal")).json(&json!({"token": token})),
        )
        .await,
    );
    answers.push(
        ask(
            "portal link, spent",
            http.post(format!("{api_url}/v1/sessions/portal")).json(&json!({"token": token})),
        )
        .await,
    );
    // A revoked key, and a token that is one character off.
    let keys: Value = http
        .get(format!("{api_url}/v1/orgs/{a}/keys"))
        .bearer_auth(&stack.admin_token)
        .send()
        .await?
        .json()
        .await?;
    let read_id = keys["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["scope"] == "read")
        .map(|k| k["key_id"].as_str().unwrap_or("").to_string())
        .unwrap_or_default();
    http.delete(format!("{api_url}/v1/orgs/{a}/keys/{read_id}"))
        .bearer_auth(&stack.admin_token)
        .send()
        .await?;
    answers.push(
        ask(
            "revoked read key",
            http.get(format!("{api_url}/v1/orgs/{a}/usage")).bearer_auth(&read),
        )
        .await,
    );
    let almost = format!("{}x", &stack.admin_token[..stack.admin_token.len() - 1]);
    remember_secret(&almost);
    answers.push(
        ask(
            "an admin token one character off",
            http.get(format!("{api_url}/v1/orgs")).bearer_auth(&almost),
        )
        .await,
    );
    assert!(
        answers.iter().filter(|(_, status, _)| !status.is_success()).count() >= 15,
        "the requests above are meant to be refused: {answers:?}"
    );
    drop(stack);

    let secrets: BTreeSet<String> = std::fs::read_to_string(secrets_ledger())?
        .lines()
        .filter(|s| s.len() >= 16)
        .map(str::to_string)
        .collect();
    for must in [&read, &billing, &ingest, &service, &token] {
        assert!(secrets.contains(must.as_str()), "the ledger lacks {}", shown(must));
    }
    for (what, status, body) in &answers {
        for secret in &secrets {
            assert!(
                !body.contains(secret.as_str()),
                "{what} ({status}) answered {}: {body}",
                shown(secret)
            );
        }
    }
    let mut files = Vec::new();
    log_files(&logs_dir(), &mut files);
    assert!(files.iter().any(|f| f.ends_with("api.log")), "no logs in {}", logs_dir().display());
    assert!(
        files.iter().any(|f| f.parent().is_some_and(|p| p.ends_with("metrics"))),
        "no metrics dumps"
    );
    // Each file once, cut into the runs of characters a secret is made of (a secret written
    // anywhere, in a header, a URL, JSON or a cookie, is one such run), each looked up.
    let is_secret_char = |c: char| c.is_ascii_alphanumeric() || "_-.~".contains(c);
    for file in &files {
        let text = String::from_utf8_lossy(&std::fs::read(file)?).into_owned();
        for run in text.split(|c: char| !is_secret_char(c)) {
            assert!(!secrets.contains(run), "{} holds {}", file.display(), shown(run));
        }
    }
    println!(
        "{} secrets, {} answers, {} log files: none holds a secret",
        secrets.len(),
        answers.len(),
        files.len()
    );
    Ok(())
}
