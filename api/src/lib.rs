//! Tally's API: the org registry (orgs and keys) and usage, read from PostgreSQL.
//!
//! The api reads the projector's read models and never the log: every figure it shows is one the
//! pipeline committed. It writes only the registry (orgs, hashed keys), which ingest reads.
//!
//! Layout: [`settings`]; [`error`] (one error type, one JSON shape, stable codes; parsing a
//! request's parts); [`db`] (every SQL statement, one file per table family, typed rows);
//! [`auth`] (admin token, read keys, sessions) with [`cache`]; the handlers: [`orgs`] (admin:
//! orgs and keys), [`usage`] (usage, daily history, late events, projections), [`billing`]
//! (prices, estimates, invoices, subscriptions), [`checkout`] (Stripe Checkout and plan
//! changes), [`webhooks`] (Stripe's webhooks, over the types of [`stripe_objects`]),
//! [`sign_in`] (signing in and out, portal links) over [`session`] (who a session cookie
//! is, CSRF, link signatures), [`page`] (the page's files), [`pipeline`]
//! (the operator's view); [`metrics`] (every metric, and the span of each request).
//!
//! The one write to Kafka ([`billing_log`]): a subscription change (from an admin, or from
//! Stripe's webhooks) is recorded in `tally.billing-events.v1`.
//!
//! Dependencies run one way: handlers → [`billing_log`], [`db`], [`error`], [`stripe_objects`];
//! [`db`] and [`stripe_objects`] depend on no other module of the api.

pub mod auth;
pub mod billing;
pub mod billing_log;
pub mod cache;
pub mod checkout;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod orgs;
pub mod page;
pub mod pipeline;
pub mod session;
pub mod settings;
pub mod sign_in;
pub mod stripe_objects;
pub mod usage;
pub mod webhook_input;
pub mod webhooks;

use std::sync::Arc;

use axum::routing::{delete, get, post, put};
use axum::Router;
use tally_common::{probes, shutdown::Shutdown};

pub use settings::Settings;

pub struct AppState {
    pub settings: Settings,
    /// PostgreSQL, one org's rows per transaction (or every org's, where the caller may).
    pub db: tally_store::OrgWall,
    pub pricing: Arc<tally_pricing::Pricing>,
    pub billing_producer: tally_common::kafka::Renewable<rdkafka::producer::FutureProducer>,
    /// Tally's Stripe client, when Stripe is configured.
    pub stripe: Option<tally_stripe::StripeHttp>,
    /// Signs the page's portal links.
    pub link_signer: session::LinkSigner,
    /// `scheme://host[:port]` of `TALLY_PUBLIC_URL`: the origin the page's requests come from.
    pub public_origin: String,
    /// Who api keys (by hash) and page sessions (by hash) are, for a few seconds.
    pub key_cache: cache::TtlCache<Option<auth::Caller>>,
    pub session_cache: cache::TtlCache<Option<session::PageSession>>,
    /// Requests per key or page session ([`tally_common::rate`]); the admin token is not limited.
    pub rates: Arc<tally_common::rate::KeyRates>,
    /// Look-ups of credentials this instance has not seen lately: each costs a query, so all of
    /// them together are held to a rate (a flood of made-up tokens cannot flood PostgreSQL).
    pub lookups: tally_common::rate::KeyRates,
}

/// The most a request body to the api may hold (the largest, a Stripe event, is far smaller).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Credentials looked up in PostgreSQL per second, all callers together.
const LOOKUPS_PER_SEC: u32 = 500;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/orgs", post(orgs::create_org).get(orgs::list_orgs))
        .route("/v1/orgs/{org_id}/keys", post(keys::create_org_key).get(keys::list_org_keys))
        .route("/v1/orgs/{org_id}/keys/{key_id}", delete(keys::revoke_org_key))
        .route("/v1/orgs/{org_id}/keys/{key_id}/rotate", post(keys::rotate_org_key))
        .route("/v1/service-keys", post(keys::create_service_key).get(keys::list_service_keys))
        .route("/v1/service-keys/{key_id}", delete(keys::revoke_service_key))
        .route("/v1/service-keys/{key_id}/rotate", post(keys::rotate_service_key))
        .route("/v1/orgs/{org_id}/portal-sessions", post(sign_in::create_portal_link))
        .route("/v1/orgs/{org_id}/usage", get(usage::period_usage))
        .route("/v1/orgs/{org_id}/usage/daily", get(usage::daily_usage))
        .route("/v1/orgs/{org_id}/usage/projection", get(usage::projection))
        .route("/v1/orgs/{org_id}/periods", get(usage::periods))
        .route("/v1/orgs/{org_id}/plan-changes", post(checkout::change_plan))
        .route("/v1/orgs/{org_id}/late-events", get(usage::late_events))
        .route(
            "/v1/orgs/{org_id}/subscription",
            put(billing::put_subscription).get(billing::get_subscription),
        )
        .route("/v1/orgs/{org_id}/invoices", get(billing::list_invoices))
        .route("/v1/orgs/{org_id}/invoices/{period}", get(billing::get_invoice))
        .route("/v1/orgs/{org_id}/checkout", post(checkout::checkout))
        .route("/v1/stripe/webhooks", post(webhooks::webhook))
        .route("/v1/stripe/webhook-events/failed", get(webhooks::failed_events))
        .route("/v1/stripe/webhook-events/retry", post(webhooks::retry_failed_events))
        .route("/v1/pricing", get(billing::get_pricing))
        .route("/v1/pricing/estimate", post(billing::estimate))
        .route("/v1/pipeline", get(pipeline::pipeline))
        .route("/v1/sessions", post(sign_in::sign_in))
        .route("/v1/sessions/portal", post(sign_in::exchange_portal_link))
        .route("/v1/sessions/current", get(sign_in::current).delete(sign_in::sign_out))
        .route("/", get(page::to_page))
        .route("/app", get(page::to_page))
        .route("/app/", get(page::root))
        .route("/app/{*path}", get(page::file))
        .fallback(|| async { error::ApiError::not_found("no such endpoint") })
        .route_layer(axum::middleware::from_fn(metrics::track))
        .with_state(state)
}

pub async fn run(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let pool = tally_store::connect(&settings.common.database_url, 16).await?;
    // The api keeps no loop of its own: it is ready once it serves (PostgreSQL was reached at
    // start).
    let health = settings.common.health("api");
    let pricing = settings.common.pricing_file.load(tally_pricing::Pricing::configured)?;
    let billing_producer = billing_log::billing_producer(&settings.common.kafka_brokers)?;
    let stripe = settings.stripe.as_ref().map(tally_stripe::StripeSettings::client);
    let link_signer = session::LinkSigner::new(
        settings.admin_token.expose(),
        settings.previous_admin_token.as_ref().map(|t| t.expose()),
    );
    let public_origin = session::origin_of(&settings.public_url).to_string();
    let state = Arc::new(AppState {
        settings: settings.clone(),
        db: tally_store::OrgWall::new(pool),
        pricing,
        billing_producer,
        stripe,
        link_signer,
        public_origin,
        key_cache: Default::default(),
        session_cache: Default::default(),
        rates: Arc::new(tally_common::rate::KeyRates::from_env()?),
        lookups: tally_common::rate::KeyRates::new(LOOKUPS_PER_SEC, 2 * LOOKUPS_PER_SEC),
    });
    tokio::spawn(tally_common::rate::forget_idle_forever(state.rates.clone(), shutdown.clone()));
    tokio::spawn(webhooks::sweep_interrupted_events(state.clone(), shutdown.clone()));
    let api = probes::serve(
        settings.addr,
        router(state),
        settings.common.http.buffering(MAX_BODY_BYTES),
        shutdown.clone(),
    );
    let ops = probes::serve(
        settings.ops_addr,
        probes::router(health.clone()),
        settings.common.http.buffering(probes::PROBE_BODY_BYTES),
        shutdown,
    );
    health.up();
    tokio::try_join!(api, ops).map(drop)
}
