//! Stripe's API over HTTP: authentication (`sk_test_` keys, Bearer or basic auth), injected
//! faults, `Idempotency-Key` replay, the routed store call, Stripe's response headers, and the
//! request log (`GET /_standin/requests`).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use crate::faults::{pick_fault, InjectedFault};
use crate::routes::route;
use crate::server::{SharedState, StandIn};
use crate::state::IdempotentAnswer;
use crate::store::{self, StripeError};
use crate::{form, Config};

/// The most requests the log keeps (oldest dropped first).
const LOG_LIMIT: usize = 100_000;

/// One request answered, as `GET /_standin/requests` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RequestLogEntry {
    at: chrono::DateTime<chrono::Utc>,
    idempotency_key: Option<String>,
    method: String,
    /// The decoded form parameters (`null` when they could not be decoded).
    params: Value,
    path: String,
    replayed: bool,
    status: u16,
}

/// One API request, as [`process_api_request`] needs it.
struct ApiRequest<'a> {
    method: &'a Method,
    path: &'a str,
    headers: &'a HeaderMap,
    /// The form body, or the query string of a GET or DELETE.
    raw_params: &'a [u8],
    idempotency_key: Option<&'a str>,
    /// The `Request-Id` answered, which the events the request causes name.
    id: &'a str,
    /// The stand-in's URL as the client reached it.
    base: &'a str,
}

/// What [`process_api_request`] answers.
struct ApiOutcome {
    status: u16,
    body: Value,
    /// The answer is the one first given to the same `Idempotency-Key`.
    replayed: bool,
    /// An injected delay before answering.
    delay: Option<Duration>,
}

impl ApiOutcome {
    fn error(e: StripeError, delay: Option<Duration>) -> ApiOutcome {
        ApiOutcome { status: e.status, body: e.body(), replayed: false, delay }
    }
}

/// Every request to Stripe's API (the router's fallback).
pub(crate) async fn handle_api_request(
    State(app): State<StandIn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let idempotency_key =
        headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(String::from);
    let raw_params = if method == Method::GET || method == Method::DELETE {
        uri.query().unwrap_or("").as_bytes().to_vec()
    } else {
        body.to_vec()
    };
    let request_id = store::new_id("req_");
    let base = match headers.get("host").and_then(|h| h.to_str().ok()) {
        Some(host) => format!("http://{host}"),
        None => format!("http://{}", app.config.addr),
    };
    let outcome = {
        let mut state = if method == Method::GET { app.lock() } else { app.lock_mut() };
        let request = ApiRequest {
            method: &method,
            path: &path,
            headers: &headers,
            raw_params: &raw_params,
            idempotency_key: idempotency_key.as_deref(),
            id: &request_id,
            base: &base,
        };
        let outcome = process_api_request(&app.config, &mut state, &request);
        app.dispatch(&mut state);
        let entry = RequestLogEntry {
            at: chrono::Utc::now(),
            idempotency_key,
            method: method.as_str().to_string(),
            params: form::parse(&raw_params).unwrap_or(Value::Null),
            path,
            replayed: outcome.replayed,
            status: outcome.status,
        };
        if state.log.len() >= LOG_LIMIT {
            state.log.remove(0);
        }
        state.log.push(entry);
        outcome
    };
    if let Some(delay) = outcome.delay {
        tokio::time::sleep(delay).await;
    }
    let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(outcome.body)).into_response();
    let headers = response.headers_mut();
    headers.insert("request-id", HeaderValue::from_str(&request_id).expect("ascii"));
    headers.insert("stripe-version", HeaderValue::from_static(store::API_VERSION));
    let retry = if outcome.status == 429 || outcome.status >= 500 { "true" } else { "false" };
    headers.insert("stripe-should-retry", HeaderValue::from_static(retry));
    if outcome.replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Authentication, faults, idempotency and the resource call.
fn process_api_request(
    config: &Config,
    state: &mut SharedState,
    request: &ApiRequest<'_>,
) -> ApiOutcome {
    let ApiRequest { method, path, headers, raw_params, idempotency_key, .. } = *request;
    if let Err(e) = authenticate(config, headers) {
        return ApiOutcome::error(e, None);
    }
    let delay = match pick_fault(&state.faults) {
        InjectedFault::Status(e) => return ApiOutcome::error(e, None),
        InjectedFault::Slow(d) => Some(d),
        InjectedFault::None => None,
    };
    let params = match form::parse(raw_params) {
        Ok(p) => p,
        Err(e) => {
            let e = StripeError::invalid(&e.0, format!("Invalid parameter key: {}", e.0));
            return ApiOutcome::error(e, delay);
        }
    };
    let fingerprint = format!("{method} {path} {params}");
    if let (Some(key), true) = (idempotency_key, *method == Method::POST) {
        if key.len() > 255 {
            let e = StripeError::invalid(
                "Idempotency-Key",
                "Idempotency keys can be at most 255 characters long.",
            );
            return ApiOutcome::error(e, delay);
        }
        if let Some(first) = state.idempotency.get(key) {
            if first.fingerprint != fingerprint {
                let e = StripeError {
                    status: 400,
                    kind: "idempotency_error",
                    code: None,
                    param: None,
                    message: format!(
                        "Keys for idempotent requests can only be used with the same parameters \
                         they were first used with. Try using a key other than '{key}' if you \
                         meant to execute a different request."
                    ),
                };
                return ApiOutcome::error(e, delay);
            }
            let body = first.body.clone();
            return ApiOutcome { status: first.status, body, replayed: true, delay };
        }
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    state.store.set_request(Some((request.id.to_string(), idempotency_key.map(String::from))));
    let reply = route(&mut state.store, method, &segments, &params, request.base);
    state.store.set_request(None);
    let (status, body) = match reply {
        Ok(v) => (200, v),
        Err(e) => (e.status, e.body()),
    };
    if let (Some(key), true) = (idempotency_key, *method == Method::POST) {
        let answer = IdempotentAnswer { fingerprint, status, body: body.clone() };
        state.idempotency.insert(key.to_string(), answer);
    }
    ApiOutcome { status, body, replayed: false, delay }
}

/// The key in `Authorization: Bearer <key>` or in basic auth's user name, as Stripe accepts both.
fn api_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    if let Some(key) = value.strip_prefix("Bearer ") {
        return Some(key.trim().to_string());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64_decode(encoded.trim())?;
    let user_and_password = String::from_utf8(decoded).ok()?;
    Some(user_and_password.split(':').next().unwrap_or_default().to_string())
}

fn base64_decode(input: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in input.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        buffer = (buffer << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// A key shown in an error: its prefix and last four characters, never the rest.
fn masked_key(key: &str) -> String {
    let tail: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{}****{tail}", key.split('_').take(2).collect::<Vec<_>>().join("_") + "_")
}

/// Accepts the configured key, or any `sk_test_` key when none is configured.
fn authenticate(config: &Config, headers: &HeaderMap) -> Result<(), StripeError> {
    let unauthorized = |message: String| StripeError {
        status: 401,
        kind: "invalid_request_error",
        code: None,
        param: None,
        message,
    };
    let Some(key) = api_key(headers) else {
        return Err(unauthorized(
            "You did not provide an API key. You need to provide your API key in the \
             Authorization header, using Bearer auth."
                .into(),
        ));
    };
    let accepted = match &config.api_key {
        Some(expected) => &key == expected,
        None => key.starts_with("sk_test_") && key.len() > 8,
    };
    if accepted {
        Ok(())
    } else {
        Err(unauthorized(format!("Invalid API Key provided: {}", masked_key(&key))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_masked_and_read_from_bearer_or_basic() {
        assert_eq!(masked_key("sk_test_abcdefgh1234"), "sk_test_****1234");
        let mut h = HeaderMap::new();
        h.insert("authorization", "Basic c2tfdGVzdF9hYmM6".parse().unwrap()); // "sk_test_abc:"
        assert_eq!(api_key(&h).as_deref(), Some("sk_test_abc"));
        h.insert("authorization", "Bearer sk_test_xyz".parse().unwrap());
        assert_eq!(api_key(&h).as_deref(), Some("sk_test_xyz"));
        let config = Config::new("127.0.0.1:0".parse().unwrap());
        assert!(authenticate(&config, &h).is_ok());
        h.insert("authorization", "Bearer sk_live_xyz".parse().unwrap());
        assert_eq!(authenticate(&config, &h).unwrap_err().status, 401);
    }
}
