//! A stateful stand-in for the part of Stripe's API that Tally uses.
//!
//! No public server implements billing meters, so Tally's tests and `make demo` talk to this one.
//! It keeps Stripe's wire contract: form-encoded requests with deep-object keys
//! ([`form`]), `sk_test_` keys, JSON objects built from Stripe's own samples ([`spec`]),
//! unknown parameters refused as Stripe refuses them, errors shaped as Stripe's, and
//! `Idempotency-Key` replay. Resource behaviour lives in [`store`], without HTTP.
//!
//! Stripe's endpoints it serves: customers, products, prices, billing meters, meter events and
//! adjustments, event summaries; Checkout Sessions (`mode=subscription`: create, retrieve, list,
//! expire);
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
//!
//! # Layout
//!
//! - [`server`]: [`StandIn`], its shared state behind one lock, the router, the state file's
//!   saving, and the hand-over of new events to the webhook sender.
//! - [`http`]: Stripe's API over HTTP: authentication, faults, `Idempotency-Key` replay,
//!   response headers, the request log.
//! - [`routes`]: method and path to the [`store`] call, parameters checked against [`spec`].
//! - [`faults`]: [`Faults`], the injected 429s, 500s and slow answers.
//! - [`control`]: the `/_standin/...` endpoints.
//! - [`store`]: the resources (one file each) and their behaviour, without HTTP.
//! - [`form`]: Stripe's form encoding; [`spec`]: Stripe's OpenAPI description and samples;
//!   [`state`]: the state file; [`webhook`]: signed webhook deliveries.
//!
//! This file holds what other crates use: [`Config`], [`StandIn`], [`run`] and the
//! `spawn_local*` helpers for tests.

mod control;
pub mod faults;
pub mod form;
mod http;
mod routes;
pub mod server;
pub mod spec;
pub mod state;
pub mod store;
pub mod webhook;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use faults::Faults;
pub use server::{StandIn, SAVE_INTERVAL};
use webhook::Endpoint;

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

/// Serves a fresh stand-in in this process on a free loopback port, accepting only `api_key`;
/// returns its base URL. For tests.
pub async fn spawn_local(api_key: &str) -> anyhow::Result<String> {
    let config =
        Config { api_key: Some(api_key.to_string()), ..Config::new(([127, 0, 0, 1], 0).into()) };
    spawn_local_with(config).await
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

/// A served stand-in's base URL and its serving task.
type Spawned = (String, tokio::task::JoinHandle<anyhow::Result<()>>);

async fn spawn(
    mut config: Config,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Spawned> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    config.addr = addr;
    let standin = StandIn::open(config)?;
    Ok((format!("http://{addr}"), tokio::spawn(standin.serve(listener, stop))))
}

/// Serves the stand-in `config` asks for until `shutdown` is requested (`stripe-standin`).
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
