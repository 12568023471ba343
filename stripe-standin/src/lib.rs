//! A stateful stand-in for the part of Stripe's API that Tally uses.
//!
//! No public server implements billing meters, so Tally's tests and `make demo` talk to this one.
//! It keeps Stripe's wire contract: form-encoded requests with deep-object keys
//! ([`form`]), `sk_test_` keys, JSON objects built from Stripe's own samples ([`spec`]),
//! unknown parameters refused as Stripe refuses them, errors shaped as Stripe's, and
//! `Idempotency-Key` replay. Resource behaviour lives in [`store`], without HTTP.
//!
//! For tests it also injects faults (a share of 429s, 500s and slow answers) and keeps a request
//! log, under `/_standin/`, which real Stripe does not have.

pub mod form;
pub mod spec;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};

use store::{Reply, Store, StripeError};

/// The stand-in's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `STRIPE_STANDIN_ADDR` (default `127.0.0.1:12111`).
    pub addr: SocketAddr,
    /// `STRIPE_STANDIN_API_KEY`: the one secret key accepted; without it any `sk_test_` key is.
    pub api_key: Option<String>,
}

/// Injected faults, as shares of requests (0.0 to 1.0).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Answer 429 `rate_limit` before doing anything.
    pub rate_429: f64,
    /// Answer 500 `api_error` before doing anything.
    pub rate_500: f64,
    /// Do the work, then answer only after `slow_ms` (a client timing out must retry safely).
    pub rate_slow: f64,
    pub slow_ms: u64,
}

struct Stored {
    fingerprint: String,
    status: u16,
    body: Value,
}

struct Inner {
    store: Store,
    idempotency: HashMap<String, Stored>,
    log: Vec<Value>,
    faults: Faults,
}

#[derive(Clone)]
pub struct StandIn {
    config: Arc<Config>,
    inner: Arc<Mutex<Inner>>,
}

/// The most requests the log keeps (oldest dropped first).
const LOG_LIMIT: usize = 100_000;

impl StandIn {
    pub fn new(config: Config) -> StandIn {
        StandIn {
            config: Arc::new(config),
            inner: Arc::new(Mutex::new(Inner {
                store: Store::default(),
                idempotency: HashMap::new(),
                log: Vec::new(),
                faults: Faults::default(),
            })),
        }
    }

    pub fn router(self) -> axum::Router {
        axum::Router::new()
            .route("/_standin/healthz", axum::routing::get(|| async { "ok" }))
            .route("/readyz", axum::routing::get(|| async { "ok" }))
            .route("/_standin/requests", axum::routing::get(requests))
            .route("/_standin/faults", axum::routing::get(get_faults).post(set_faults))
            .fallback(handle)
            .with_state(self)
    }
}

/// Serves a fresh stand-in in this process on a free loopback port, accepting only `api_key`;
/// returns its base URL. For tests.
pub async fn spawn_local(api_key: &str) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = StandIn::new(Config { addr, api_key: Some(api_key.to_string()) }).router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

pub async fn run(config: Config, shutdown: tally_common::shutdown::Shutdown) -> anyhow::Result<()> {
    let addr = config.addr;
    let app = StandIn::new(config).router();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "stripe stand-in listening");
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.requested().await }).await?;
    Ok(())
}

/// The key in `Authorization: Bearer <key>` or in basic auth's user name, as Stripe accepts both.
fn api_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    if let Some(key) = value.strip_prefix("Bearer ") {
        return Some(key.trim().to_string());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64_decode(encoded.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split(':').next().unwrap_or_default().to_string())
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
fn masked(key: &str) -> String {
    let tail: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{}****{tail}", key.split('_').take(2).collect::<Vec<_>>().join("_") + "_")
}

fn authenticate(config: &Config, headers: &HeaderMap) -> Result<(), StripeError> {
    let unauthorized = |message: String| StripeError { status: 401, kind: "invalid_request_error", code: None, param: None, message };
    let Some(key) = api_key(headers) else {
        return Err(unauthorized("You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth.".into()));
    };
    let ok = match &config.api_key {
        Some(expected) => &key == expected,
        None => key.starts_with("sk_test_") && key.len() > 8,
    };
    if ok {
        Ok(())
    } else {
        Err(unauthorized(format!("Invalid API Key provided: {}", masked(&key))))
    }
}

/// Refuses parameters the OpenAPI description does not list for this endpoint.
fn check_params(method: &Method, template: &str, params: &Value) -> Result<(), StripeError> {
    let Some(allowed) = spec::params(method.as_str(), template) else { return Ok(()) };
    if let Some(map) = params.as_object() {
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(*k)) {
            return Err(StripeError::unknown_param(unknown));
        }
    }
    Ok(())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Routes one request to the store. Returns the path template (for the parameter check) and the
/// answer.
fn route(store: &mut Store, method: &Method, segments: &[&str], params: &Value) -> Result<Value, StripeError> {
    let t = now();
    let checked = |template: &str| check_params(method, template, params);
    match (method.as_str(), segments) {
        ("POST", ["v1", "customers"]) => { checked("/v1/customers")?; store.create_customer(params, t) }
        ("GET", ["v1", "customers"]) => { checked("/v1/customers")?; store.list_customers(params) }
        ("GET", ["v1", "customers", id]) => { checked("/v1/customers/{customer}")?; store.customer(id) }
        ("POST", ["v1", "customers", id]) => { checked("/v1/customers/{customer}")?; store.update_customer(id, params) }
        ("POST", ["v1", "products"]) => { checked("/v1/products")?; store.create_product(params, t) }
        ("GET", ["v1", "products"]) => { checked("/v1/products")?; store.list_products(params) }
        ("GET", ["v1", "products", id]) => store.product(id),
        ("POST", ["v1", "prices"]) => { checked("/v1/prices")?; store.create_price(params, t) }
        ("GET", ["v1", "prices"]) => { checked("/v1/prices")?; store.list_prices(params) }
        ("GET", ["v1", "prices", id]) => store.price(id, params),
        ("POST", ["v1", "billing", "meters"]) => { checked("/v1/billing/meters")?; store.create_meter(params, t) }
        ("GET", ["v1", "billing", "meters"]) => { checked("/v1/billing/meters")?; store.list_meters(params) }
        ("GET", ["v1", "billing", "meters", id]) => { checked("/v1/billing/meters/{id}")?; store.meter(id) }
        ("GET", ["v1", "billing", "meters", id, "event_summaries"]) => {
            checked("/v1/billing/meters/{id}/event_summaries")?;
            store.meter_event_summaries(id, params)
        }
        ("POST", ["v1", "billing", "meter_events"]) => { checked("/v1/billing/meter_events")?; store.create_meter_event(params, t) }
        ("POST", ["v1", "billing", "meter_event_adjustments"]) => {
            checked("/v1/billing/meter_event_adjustments")?;
            store.create_meter_event_adjustment(params, t)
        }
        _ => Err(StripeError {
            status: 404,
            kind: "invalid_request_error",
            code: None,
            param: None,
            message: format!("Unrecognized request URL ({method}: /{}).", segments.join("/")),
        }),
    }
}

enum Fault {
    None,
    Status(StripeError),
    Slow(Duration),
}

fn pick_fault(faults: &Faults) -> Fault {
    let roll: f64 = rand::rng().random();
    if roll < faults.rate_429 {
        Fault::Status(StripeError { status: 429, kind: "invalid_request_error", code: Some("rate_limit"), param: None, message: "Request rate limit exceeded. (injected by the stand-in)".into() })
    } else if roll < faults.rate_429 + faults.rate_500 {
        Fault::Status(StripeError { status: 500, kind: "api_error", code: None, param: None, message: "An unknown error occurred. (injected by the stand-in)".into() })
    } else if roll < faults.rate_429 + faults.rate_500 + faults.rate_slow {
        Fault::Slow(Duration::from_millis(faults.slow_ms))
    } else {
        Fault::None
    }
}

async fn handle(State(app): State<StandIn>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let idempotency_key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(String::from);
    let raw = if method == Method::GET || method == Method::DELETE { uri.query().unwrap_or("").as_bytes().to_vec() } else { body.to_vec() };
    let (status, body, replayed, slow) = {
        let mut inner = app.inner.lock().expect("stand-in state lock");
        let outcome = process(&app.config, &mut inner, &method, &path, &headers, &raw, idempotency_key.as_deref());
        let entry = json!({
            "at": chrono::Utc::now(),
            "method": method.as_str(),
            "path": path,
            "params": form::parse(&raw).unwrap_or(Value::Null),
            "idempotency_key": idempotency_key,
            "status": outcome.0,
            "replayed": outcome.2,
        });
        if inner.log.len() >= LOG_LIMIT {
            inner.log.remove(0);
        }
        inner.log.push(entry);
        outcome
    };
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    let mut response = (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert("request-id", HeaderValue::from_str(&store::new_id("req_")).expect("ascii"));
    headers.insert("stripe-version", HeaderValue::from_static("2026-08-26.dahlia"));
    let retry = if status == 429 || status >= 500 { "true" } else { "false" };
    headers.insert("stripe-should-retry", HeaderValue::from_static(retry));
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Authentication, faults, idempotency and the resource call: (status, body, replayed, delay).
fn process(
    config: &Config,
    inner: &mut Inner,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    raw: &[u8],
    idempotency_key: Option<&str>,
) -> (u16, Value, bool, Option<Duration>) {
    if let Err(e) = authenticate(config, headers) {
        return (e.status, e.body(), false, None);
    }
    let delay = match pick_fault(&inner.faults) {
        Fault::Status(e) => return (e.status, e.body(), false, None),
        Fault::Slow(d) => Some(d),
        Fault::None => None,
    };
    let params = match form::parse(raw) {
        Ok(p) => p,
        Err(e) => {
            let e = StripeError::invalid(&e.0, format!("Invalid parameter key: {}", e.0));
            return (e.status, e.body(), false, delay);
        }
    };
    let fingerprint = format!("{method} {path} {params}");
    if let (Some(key), true) = (idempotency_key, *method == Method::POST) {
        if key.len() > 255 {
            let e = StripeError::invalid("Idempotency-Key", "Idempotency keys can be at most 255 characters long.");
            return (e.status, e.body(), false, delay);
        }
        if let Some(stored) = inner.idempotency.get(key) {
            if stored.fingerprint != fingerprint {
                let e = StripeError {
                    status: 400,
                    kind: "idempotency_error",
                    code: None,
                    param: None,
                    message: format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."),
                };
                return (e.status, e.body(), false, delay);
            }
            return (stored.status, stored.body.clone(), true, delay);
        }
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let reply: Reply = route(&mut inner.store, method, &segments, &params);
    let (status, body) = match reply {
        Ok(v) => (200, v),
        Err(e) => (e.status, e.body()),
    };
    if let (Some(key), true) = (idempotency_key, *method == Method::POST) {
        inner.idempotency.insert(key.to_string(), Stored { fingerprint, status, body: body.clone() });
    }
    (status, body, false, delay)
}

/// `GET /_standin/requests`: every request answered, oldest first.
async fn requests(State(app): State<StandIn>) -> Json<Value> {
    let inner = app.inner.lock().expect("stand-in state lock");
    Json(json!({ "requests": inner.log }))
}

async fn get_faults(State(app): State<StandIn>) -> Json<Faults> {
    Json(app.inner.lock().expect("stand-in state lock").faults.clone())
}

/// `POST /_standin/faults` `{"rate_429", "rate_500", "rate_slow", "slow_ms"}`.
async fn set_faults(State(app): State<StandIn>, Json(faults): Json<Faults>) -> Response {
    let shares = [faults.rate_429, faults.rate_500, faults.rate_slow];
    if shares.iter().any(|s| !(0.0..=1.0).contains(s)) || shares.iter().sum::<f64>() > 1.0 {
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": {"message": "shares must be within 0..1 and add up to at most 1"}}))).into_response();
    }
    app.inner.lock().expect("stand-in state lock").faults = faults.clone();
    Json(faults).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_masked_and_read_from_bearer_or_basic() {
        assert_eq!(masked("sk_test_abcdefgh1234"), "sk_test_****1234");
        let mut h = HeaderMap::new();
        h.insert("authorization", "Basic c2tfdGVzdF9hYmM6".parse().unwrap()); // "sk_test_abc:"
        assert_eq!(api_key(&h).as_deref(), Some("sk_test_abc"));
        h.insert("authorization", "Bearer sk_test_xyz".parse().unwrap());
        assert_eq!(api_key(&h).as_deref(), Some("sk_test_xyz"));
        let config = Config { addr: "127.0.0.1:0".parse().unwrap(), api_key: None };
        assert!(authenticate(&config, &h).is_ok());
        h.insert("authorization", "Bearer sk_live_xyz".parse().unwrap());
        assert_eq!(authenticate(&config, &h).unwrap_err().status, 401);
    }
}
