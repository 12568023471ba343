//! A stateful stand-in for the part of Stripe's API that Tally uses.
//!
//! No public server implements billing meters, so Tally's tests and `make demo` talk to this one.
//! It keeps Stripe's wire contract: form-encoded requests with deep-object keys
//! ([`form`]), `sk_test_` keys, JSON objects built from Stripe's own samples ([`spec`]),
//! unknown parameters refused as Stripe refuses them, errors shaped as Stripe's, and
//! `Idempotency-Key` replay. Resource behaviour lives in [`store`], without HTTP.
//!
//! Stripe's endpoints it serves: customers, products, prices, billing meters, meter events and
//! adjustments, event summaries; Checkout Sessions (`mode=subscription`: create, retrieve, list);
//! subscriptions (retrieve, list, update items and metadata, cancel); events (retrieve, list);
//! invoices (retrieve, list). Every change Stripe announces is recorded as an event
//! (`GET /v1/events`) and, when a webhook endpoint is set, delivered to it as Stripe delivers
//! ([`webhook`]): signed with `Stripe-Signature`, in order, retried with backoff.
//!
//! What a customer or Stripe's clock would do, and test controls, are under `/_standin/`, which
//! real Stripe does not have (no API key needed; JSON bodies):
//!
//! - `GET /_standin/healthz`, `GET /_standin/requests` (the request log, oldest first),
//!   `GET|POST /_standin/faults` `{"rate_429", "rate_500", "rate_slow", "slow_ms"}` (shares of
//!   requests answered 429, 500 or slowly).
//! - `GET /_standin/checkout/{id}`: the page a Checkout Session's `url` points at
//!   (`http://<Host of the creating request>/_standin/checkout/{id}`); its form posts to
//!   `POST /_standin/checkout/{id}` (form `email=`), which completes the session and redirects to
//!   its `success_url` (`{CHECKOUT_SESSION_ID}` replaced).
//! - `POST /_standin/checkout/sessions/{id}/complete`, optional body `{"email": "..."}`: the
//!   customer pays. Creates the customer unless the session had one (`customer.created`), an
//!   active subscription with one item per line item (`customer.subscription.created`), and
//!   completes the session (`checkout.session.completed`). Answers
//!   `{"session", "customer", "subscription"}`.
//! - `POST /_standin/invoices` `{"subscription": "sub_...", "period_start": <unix>,
//!   "period_end": <unix>}`: bills the subscription for that period as Stripe does at a period's
//!   end (licensed items, metered usage on graduated tiers); the invoice is finalized, `open`
//!   (`invoice.created`, `invoice.finalized`). Answers the invoice.
//! - `POST /_standin/invoices/{id}/pay`: the payment succeeds (`invoice.paid`,
//!   `invoice.payment_succeeded`). Answers the invoice.
//! - `GET|POST|DELETE /_standin/webhook`: the endpoint events go to; POST
//!   `{"url": "http://...", "secret": "whsec_..."}`; GET answers `{"url"}` only, never the secret.
//!   At start-up from `STRIPE_STANDIN_WEBHOOK_URL` and `STRIPE_STANDIN_WEBHOOK_SECRET`; one set
//!   here is kept in the state file, secret included (mode 0600), when there is no such setting.
//! - `GET /_standin/webhook/deliveries`: `{"deliveries": [{"event_id", "type", "url", "attempts",
//!   "last_status", "last_error", "delivered", "resend"}]}`, oldest first.
//! - `POST /_standin/events/{id}/resend`: delivers an event again, freshly signed.
//!
//! With `STRIPE_STANDIN_STATE_FILE` ([`Config::state_file`]) the stand-in remembers across
//! restarts, as Stripe never forgets ([`state`]): it loads the file at start (refusing to start
//! if it cannot read it), saves it every 2 s when something changed and once more when it stops.

pub mod form;
pub mod spec;
pub mod state;
pub mod store;
pub mod webhook;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};

use state::{Saved, SavedEndpoint, Stored};
use store::{Reply, Store, StripeError};
use webhook::{Delivery, Endpoint, Job, Queue};

/// The stand-in's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `STRIPE_STANDIN_ADDR` (default `127.0.0.1:12111`).
    pub addr: SocketAddr,
    /// `STRIPE_STANDIN_API_KEY`: the one secret key accepted; without it any `sk_test_` key is.
    pub api_key: Option<String>,
    /// `STRIPE_STANDIN_WEBHOOK_URL` and `STRIPE_STANDIN_WEBHOOK_SECRET`: where events are
    /// delivered from the start (also settable at run time with `POST /_standin/webhook`).
    pub webhook: Option<Endpoint>,
    /// `STRIPE_STANDIN_STATE_FILE`: where the state is kept across restarts; none, the stand-in
    /// starts empty and forgets everything when it stops.
    pub state_file: Option<PathBuf>,
}

impl Config {
    /// Serves on `addr`, accepting any `sk_test_` key, without a webhook endpoint nor state file.
    pub fn new(addr: SocketAddr) -> Config {
        Config { addr, api_key: None, webhook: None, state_file: None }
    }
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

struct Inner {
    store: Store,
    idempotency: HashMap<String, Stored>,
    log: Vec<Value>,
    faults: Faults,
    webhook: Option<Endpoint>,
    /// The endpoint was set with `POST /_standin/webhook` (the state file keeps it then).
    webhook_set_at_run_time: bool,
    deliveries: Vec<Delivery>,
    /// Something the state file keeps changed since it was last written.
    dirty: bool,
}

impl Inner {
    /// What the state file keeps, cloned (the caller writes it outside the lock).
    fn saved(&self) -> Saved {
        Saved {
            format: state::FORMAT,
            saved_at: now(),
            store: self.store.clone(),
            idempotency: self.idempotency.clone(),
            deliveries: self.deliveries.clone(),
            webhook: self.webhook.as_ref().filter(|_| self.webhook_set_at_run_time).map(SavedEndpoint::of),
        }
    }
}

#[derive(Clone)]
pub struct StandIn {
    config: Arc<Config>,
    inner: Arc<Mutex<Inner>>,
    deliveries: Arc<Queue>,
    /// The state file, when this stand-in was opened with one ([`StandIn::open`]).
    persist: Option<Arc<Persist>>,
}

struct Persist {
    path: PathBuf,
    /// One write at a time, each from a snapshot taken after the previous one's.
    writing: Mutex<()>,
}

/// How often the state file is written when something changed.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(2);

/// The webhook sender's reports, into the stand-in's state.
struct Recorder(Arc<Mutex<Inner>>);

impl webhook::Record for Recorder {
    fn attempted(&self, delivery: usize, attempt: u32, status: Option<u16>, error: Option<String>, delivered: bool) {
        let mut inner = self.0.lock().expect("stand-in state lock");
        inner.dirty = true;
        if let Some(d) = inner.deliveries.get_mut(delivery) {
            d.attempts = attempt;
            d.last_status = status;
            d.last_error = error;
            d.delivered = delivered;
        }
    }

    fn delivered(&self, event_id: &str) {
        let mut inner = self.0.lock().expect("stand-in state lock");
        inner.dirty = true;
        inner.store.webhook_delivered(event_id);
    }
}

/// The most requests the log keeps (oldest dropped first).
const LOG_LIMIT: usize = 100_000;

impl StandIn {
    /// A fresh, empty stand-in that neither reads nor writes `config.state_file` (see
    /// [`StandIn::open`]).
    pub fn new(config: Config) -> StandIn {
        let webhook = config.webhook.clone();
        StandIn {
            config: Arc::new(config),
            inner: Arc::new(Mutex::new(Inner {
                store: Store::default(),
                idempotency: HashMap::new(),
                log: Vec::new(),
                faults: Faults::default(),
                webhook,
                webhook_set_at_run_time: false,
                deliveries: Vec::new(),
                dirty: false,
            })),
            deliveries: Arc::new(Queue::default()),
            persist: None,
        }
    }

    /// The stand-in `config` asks for: with a state file, what it holds (empty if there is no
    /// file yet), kept there from now on when served with [`StandIn::serve`]. A file that cannot
    /// be read or parsed, or a directory that does not exist, is an error naming the file.
    /// The webhook endpoint from `config` wins over one the file kept.
    pub fn open(config: Config) -> anyhow::Result<StandIn> {
        let Some(path) = config.state_file.clone() else { return Ok(StandIn::new(config)) };
        let loaded = state::load(&path)?;
        state::check_writable(&path)?;
        let mut standin = StandIn::new(config);
        if let Some(saved) = loaded {
            let mut inner = standin.lock();
            tracing::info!(file = %path.display(), saved_at = saved.saved_at, "stripe stand-in state loaded: {}", saved.store.summary());
            inner.store = saved.store;
            inner.idempotency = saved.idempotency;
            inner.deliveries = saved.deliveries;
            if inner.webhook.is_none() {
                if let Some(w) = saved.webhook {
                    inner.webhook = Some(w.endpoint().map_err(|e| anyhow::anyhow!("state file {}: {e}", path.display()))?);
                    inner.webhook_set_at_run_time = true;
                }
            }
        } else {
            tracing::info!(file = %path.display(), "no stripe stand-in state yet: starting empty");
        }
        standin.persist = Some(Arc::new(Persist { path, writing: Mutex::new(()) }));
        Ok(standin)
    }

    /// Serves on `listener` until `stop` resolves, then waits for the requests in flight. With a
    /// state file: deliveries cut short by the last stop are resumed, the state is written every
    /// [`SAVE_INTERVAL`] when something changed, and once more after the server stopped.
    pub async fn serve(self, listener: tokio::net::TcpListener, stop: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let saver = self.persist.as_ref().map(|_| {
            self.resume_deliveries();
            tokio::spawn(self.clone().save_periodically())
        });
        let served = axum::serve(listener, self.clone().router()).with_graceful_shutdown(stop).await;
        let saved = match saver {
            Some(saver) => {
                saver.abort();
                let _ = saver.await;
                let app = self.clone();
                tokio::task::spawn_blocking(move || app.save(false)).await?.map(|_| ())
            }
            None => Ok(()),
        };
        served?;
        saved
    }

    /// Writes the state file (if any) from a snapshot taken under the lock, outside it; with
    /// `only_if_changed`, only when something changed since the last write. Blocking.
    fn save(&self, only_if_changed: bool) -> anyhow::Result<bool> {
        let Some(persist) = &self.persist else { return Ok(false) };
        let _writing = persist.writing.lock().expect("state file lock");
        let saved = {
            let mut inner = self.lock();
            if only_if_changed && !inner.dirty {
                return Ok(false);
            }
            inner.dirty = false;
            inner.saved()
        };
        let result = state::save(&persist.path, &saved);
        if result.is_err() {
            self.lock().dirty = true;
        }
        result.map(|_| true)
    }

    async fn save_periodically(self) {
        let mut failing = false;
        loop {
            tokio::time::sleep(SAVE_INTERVAL).await;
            let app = self.clone();
            match tokio::task::spawn_blocking(move || app.save(true)).await {
                Ok(Ok(saved)) => {
                    if failing && saved {
                        tracing::info!("stripe stand-in state saved again");
                    }
                    failing = failing && !saved;
                }
                Ok(Err(e)) => {
                    // Logged once until a write succeeds again.
                    if !failing {
                        tracing::error!("stripe stand-in state not saved (retrying every {SAVE_INTERVAL:?}): {e:#}");
                    }
                    failing = true;
                }
                Err(e) => tracing::error!("stripe stand-in state saver: {e}"),
            }
        }
    }

    /// Queues again the deliveries the last stop cut short (not delivered, attempts left), to
    /// the current endpoint if it is still the one they were for: Stripe keeps retrying.
    fn resume_deliveries(&self) {
        let inner = self.lock();
        let Some(endpoint) = inner.webhook.clone() else { return };
        let pending: Vec<(usize, String)> = inner
            .deliveries
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.delivered && d.attempts < webhook::ATTEMPTS && d.url == endpoint.url)
            .map(|(i, d)| (i, d.event_id.clone()))
            .collect();
        for (delivery, event_id) in pending {
            let Ok(event) = inner.store.event(&event_id) else { continue };
            let body = serde_json::to_string_pretty(&event).expect("an event serializes");
            self.deliveries.push(Job { delivery, event_id, body, endpoint: endpoint.clone() }, Recorder(self.inner.clone()));
        }
    }

    pub fn router(self) -> axum::Router {
        use axum::routing::{get, post};
        axum::Router::new()
            .route("/_standin/healthz", get(|| async { "ok" }))
            .route("/readyz", get(|| async { "ok" }))
            .route("/_standin/requests", get(requests))
            .route("/_standin/faults", get(get_faults).post(set_faults))
            .route("/_standin/checkout/{id}", get(checkout_page).post(checkout_page_paid))
            .route("/_standin/checkout/sessions/{id}/complete", post(complete_checkout))
            .route("/_standin/invoices", post(create_invoice))
            .route("/_standin/invoices/{id}/pay", post(pay_invoice))
            .route("/_standin/webhook", get(get_webhook).post(set_webhook).delete(delete_webhook))
            .route("/_standin/webhook/deliveries", get(deliveries))
            .route("/_standin/events/{id}/resend", post(resend_event))
            .fallback(handle)
            .with_state(self)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("stand-in state lock")
    }

    /// The lock, for a change the state file keeps.
    fn lock_mut(&self) -> std::sync::MutexGuard<'_, Inner> {
        let mut inner = self.lock();
        inner.dirty = true;
        inner
    }

    /// Queues the events created since the last call for the webhook endpoint, if one is set.
    fn dispatch(&self, inner: &mut Inner) {
        let events = inner.store.take_new_events();
        let Some(endpoint) = inner.webhook.clone() else { return };
        for mut event in events {
            let id = event["id"].as_str().unwrap_or_default().to_string();
            inner.store.set_pending_webhooks(&id, 1);
            event["pending_webhooks"] = 1.into();
            self.deliver(inner, &event, endpoint.clone(), false);
        }
    }

    fn deliver(&self, inner: &mut Inner, event: &Value, endpoint: Endpoint, resend: bool) -> usize {
        let delivery = inner.deliveries.len();
        let event_id = event["id"].as_str().unwrap_or_default().to_string();
        inner.deliveries.push(Delivery {
            event_id: event_id.clone(),
            kind: event["type"].as_str().unwrap_or_default().to_string(),
            url: endpoint.url.clone(),
            attempts: 0,
            last_status: None,
            last_error: None,
            delivered: false,
            resend,
        });
        // Pretty-printed, as Stripe sends it: receivers must verify the raw bytes.
        let body = serde_json::to_string_pretty(event).expect("an event serializes");
        self.deliveries.push(Job { delivery, event_id, body, endpoint }, Recorder(self.inner.clone()));
        delivery
    }
}

/// Serves a fresh stand-in in this process on a free loopback port, accepting only `api_key`;
/// returns its base URL. For tests.
pub async fn spawn_local(api_key: &str) -> anyhow::Result<String> {
    spawn_local_with(Config { api_key: Some(api_key.to_string()), ..Config::new(([127, 0, 0, 1], 0).into()) }).await
}

/// Serves a stand-in with `config` in this process on a free loopback port (`config.addr` is
/// ignored), until the process ends; returns its base URL. For tests.
pub async fn spawn_local_with(config: Config) -> anyhow::Result<String> {
    let (url, _task) = spawn(config, std::future::pending()).await?;
    Ok(url)
}

/// A stand-in served in this process ([`spawn_local_stoppable`]), until [`LocalStandIn::stop`].
pub struct LocalStandIn {
    /// Its base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl LocalStandIn {
    /// Stops it as a signal stops `stripe-standin`: the server stops, the requests in flight
    /// finish, the state file (if any) is written. Answers what serving or saving failed with.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// Serves a stand-in with `config` (loading `config.state_file` as `stripe-standin` does) in
/// this process on a free loopback port; stop it with [`LocalStandIn::stop`]. For tests.
pub async fn spawn_local_stoppable(config: Config) -> anyhow::Result<LocalStandIn> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (url, task) = spawn(config, async move {
        let _ = stopped.await;
    })
    .await?;
    Ok(LocalStandIn { url, stop, task })
}

async fn spawn(mut config: Config, stop: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<(String, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    config.addr = addr;
    let standin = StandIn::open(config)?;
    Ok((format!("http://{addr}"), tokio::spawn(standin.serve(listener, stop))))
}

pub async fn run(config: Config, shutdown: tally_common::shutdown::Shutdown) -> anyhow::Result<()> {
    let addr = config.addr;
    let webhook_url = config.webhook.as_ref().map(|w| w.url.clone());
    let state_file = config.state_file.clone();
    // The state first: a file that cannot be read stops the start before anything listens.
    let standin = StandIn::open(config)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, ?webhook_url, ?state_file, "stripe stand-in listening");
    standin.serve(listener, async move { shutdown.requested().await }).await?;
    if let Some(file) = state_file {
        tracing::info!(file = %file.display(), "stripe stand-in state saved");
    }
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

/// Routes one request to the store, checking its parameters against the path template's.
/// `base` is the stand-in's own URL as the client reached it (for Checkout pages).
fn route(store: &mut Store, method: &Method, segments: &[&str], params: &Value, base: &str) -> Result<Value, StripeError> {
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
        ("POST", ["v1", "checkout", "sessions"]) => { checked("/v1/checkout/sessions")?; store.create_checkout_session(params, t, base) }
        ("GET", ["v1", "checkout", "sessions"]) => { checked("/v1/checkout/sessions")?; store.list_checkout_sessions(params) }
        ("GET", ["v1", "checkout", "sessions", id]) => { checked("/v1/checkout/sessions/{session}")?; store.checkout_session(id) }
        ("GET", ["v1", "subscriptions"]) => { checked("/v1/subscriptions")?; store.list_subscriptions(params) }
        ("GET", ["v1", "subscriptions", id]) => { checked("/v1/subscriptions/{subscription_exposed_id}")?; store.subscription(id) }
        ("POST", ["v1", "subscriptions", id]) => {
            checked("/v1/subscriptions/{subscription_exposed_id}")?;
            store.update_subscription(id, params, t)
        }
        ("DELETE", ["v1", "subscriptions", id]) => {
            checked("/v1/subscriptions/{subscription_exposed_id}")?;
            store.cancel_subscription(id, params, t)
        }
        ("GET", ["v1", "events"]) => { checked("/v1/events")?; store.list_events(params) }
        ("GET", ["v1", "events", id]) => { checked("/v1/events/{id}")?; store.event(id) }
        ("GET", ["v1", "invoices"]) => { checked("/v1/invoices")?; store.list_invoices(params) }
        ("GET", ["v1", "invoices", id]) => { checked("/v1/invoices/{invoice}")?; store.invoice(id) }
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
    let request_id = store::new_id("req_");
    let base = match headers.get("host").and_then(|h| h.to_str().ok()) {
        Some(host) => format!("http://{host}"),
        None => format!("http://{}", app.config.addr),
    };
    let (status, body, replayed, slow) = {
        let mut inner = if method == Method::GET { app.lock() } else { app.lock_mut() };
        let request = Request { method: &method, path: &path, headers: &headers, raw: &raw, idempotency_key: idempotency_key.as_deref(), id: &request_id, base: &base };
        let outcome = process(&app.config, &mut inner, &request);
        app.dispatch(&mut inner);
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
    headers.insert("request-id", HeaderValue::from_str(&request_id).expect("ascii"));
    headers.insert("stripe-version", HeaderValue::from_static(store::API_VERSION));
    let retry = if status == 429 || status >= 500 { "true" } else { "false" };
    headers.insert("stripe-should-retry", HeaderValue::from_static(retry));
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// One API request, as `process` needs it.
struct Request<'a> {
    method: &'a Method,
    path: &'a str,
    headers: &'a HeaderMap,
    raw: &'a [u8],
    idempotency_key: Option<&'a str>,
    /// The `Request-Id` answered, which the events the request causes name.
    id: &'a str,
    base: &'a str,
}

/// Authentication, faults, idempotency and the resource call: (status, body, replayed, delay).
fn process(config: &Config, inner: &mut Inner, request: &Request<'_>) -> (u16, Value, bool, Option<Duration>) {
    let Request { method, path, headers, raw, idempotency_key, .. } = *request;
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
    inner.store.set_request(Some((request.id.to_string(), idempotency_key.map(String::from))));
    let reply: Reply = route(&mut inner.store, method, &segments, &params, request.base);
    inner.store.set_request(None);
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

/// A store answer over HTTP, with Stripe's error shape.
fn answer(reply: Reply) -> Response {
    match reply {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST), Json(e.body())).into_response(),
    }
}

fn refused(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": {"type": "invalid_request_error", "message": message.into()}}))).into_response()
}

/// A JSON body that may be empty (then `T::default()`).
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| refused(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Completion {
    email: Option<String>,
}

/// `POST /_standin/checkout/sessions/{id}/complete` `{"email"}` (optional).
async fn complete_checkout(State(app): State<StandIn>, Path(id): Path<String>, body: Bytes) -> Response {
    let completion: Completion = match optional_json(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut inner = app.lock_mut();
    let reply = inner.store.complete_checkout_session(&id, completion.email.as_deref(), now());
    app.dispatch(&mut inner);
    answer(reply)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `GET /_standin/checkout/{id}`: the session's payment page.
async fn checkout_page(State(app): State<StandIn>, Path(id): Path<String>) -> Response {
    let session = match app.lock().store.checkout_session(&id) {
        Ok(s) => s,
        Err(e) => return answer(Err(e)),
    };
    let email = session["customer_email"].as_str().unwrap_or("");
    let amount = session["amount_total"].as_i64().unwrap_or(0);
    let status = session["status"].as_str().unwrap_or("");
    let form = if status == "open" {
        format!(
            "<form method=\"post\"><label>Email <input name=\"email\" type=\"email\" value=\"{}\"></label> <button type=\"submit\">Subscribe</button></form>",
            escape(email)
        )
    } else {
        format!("<p>This session is {}.</p>", escape(status))
    };
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Stripe stand-in checkout</title></head><body>\
         <h1>Checkout (Stripe stand-in)</h1><p>Session <code>{}</code>, reference <code>{}</code>: {}.{:02} {} due today, metered usage billed monthly.</p>{form}</body></html>",
        escape(&id),
        escape(session["client_reference_id"].as_str().unwrap_or("")),
        amount / 100,
        amount % 100,
        escape(&session["currency"].as_str().unwrap_or("usd").to_ascii_uppercase()),
    );
    axum::response::Html(html).into_response()
}

/// `POST /_standin/checkout/{id}` (the page's form, `email=`): completes the session, then
/// redirects to its `success_url`.
async fn checkout_page_paid(State(app): State<StandIn>, Path(id): Path<String>, body: Bytes) -> Response {
    let email = form_urlencoded::parse(&body).find(|(k, _)| k == "email").map(|(_, v)| v.into_owned()).filter(|e| !e.is_empty());
    let reply = {
        let mut inner = app.lock_mut();
        let reply = inner.store.complete_checkout_session(&id, email.as_deref(), now());
        app.dispatch(&mut inner);
        reply
    };
    match reply {
        Ok(done) => match done["session"]["success_url"].as_str() {
            Some(url) => axum::response::Redirect::to(&url.replace("{CHECKOUT_SESSION_ID}", &id)).into_response(),
            None => axum::response::Html("<!doctype html><p>Thanks: the subscription is active.</p>".to_string()).into_response(),
        },
        Err(e) => answer(Err(e)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvoiceRequest {
    subscription: String,
    period_start: i64,
    period_end: i64,
}

/// `POST /_standin/invoices` `{"subscription", "period_start", "period_end"}`.
async fn create_invoice(State(app): State<StandIn>, Json(request): Json<InvoiceRequest>) -> Response {
    let mut inner = app.lock_mut();
    let reply = inner.store.create_subscription_invoice(&request.subscription, request.period_start, request.period_end, now());
    app.dispatch(&mut inner);
    answer(reply)
}

/// `POST /_standin/invoices/{id}/pay`.
async fn pay_invoice(State(app): State<StandIn>, Path(id): Path<String>) -> Response {
    let mut inner = app.lock_mut();
    let reply = inner.store.pay_invoice(&id, now());
    app.dispatch(&mut inner);
    answer(reply)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSetting {
    url: String,
    secret: String,
}

/// `GET /_standin/webhook`: the endpoint's URL, never its secret.
async fn get_webhook(State(app): State<StandIn>) -> Json<Value> {
    Json(json!({"url": app.lock().webhook.as_ref().map(|w| w.url.clone())}))
}

/// `POST /_standin/webhook` `{"url", "secret"}`: events created from now on go there.
async fn set_webhook(State(app): State<StandIn>, Json(setting): Json<WebhookSetting>) -> Response {
    match Endpoint::new(&setting.url, &setting.secret) {
        Ok(endpoint) => {
            tracing::info!(url = %endpoint.url, "webhook endpoint set");
            let mut inner = app.lock_mut();
            inner.webhook = Some(endpoint);
            inner.webhook_set_at_run_time = true;
            Json(json!({"url": setting.url})).into_response()
        }
        Err(message) => refused(StatusCode::UNPROCESSABLE_ENTITY, message),
    }
}

/// `DELETE /_standin/webhook`: no more deliveries (those queued still go).
async fn delete_webhook(State(app): State<StandIn>) -> Json<Value> {
    let mut inner = app.lock_mut();
    inner.webhook = None;
    inner.webhook_set_at_run_time = true;
    Json(json!({"url": null}))
}

/// `GET /_standin/webhook/deliveries`: every delivery, oldest first.
async fn deliveries(State(app): State<StandIn>) -> Json<Value> {
    Json(json!({"deliveries": app.lock().deliveries}))
}

/// `POST /_standin/events/{id}/resend`: delivers the event again to the current endpoint.
async fn resend_event(State(app): State<StandIn>, Path(id): Path<String>) -> Response {
    let mut inner = app.lock_mut();
    let event = match inner.store.event(&id) {
        Ok(e) => e,
        Err(e) => return answer(Err(e)),
    };
    let Some(endpoint) = inner.webhook.clone() else {
        return refused(StatusCode::BAD_REQUEST, "no webhook endpoint is set (POST /_standin/webhook)");
    };
    let delivery = app.deliver(&mut inner, &event, endpoint, true);
    Json(json!({"event_id": id, "delivery": delivery})).into_response()
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
        let config = Config::new("127.0.0.1:0".parse().unwrap());
        assert!(authenticate(&config, &h).is_ok());
        h.insert("authorization", "Bearer sk_live_xyz".parse().unwrap());
        assert_eq!(authenticate(&config, &h).unwrap_err().status, 401);
    }
}
