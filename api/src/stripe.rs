//! Stripe: Checkout for an org's subscription, and Stripe's webhooks.
//!
//! `POST /v1/orgs/{org_id}/checkout` creates a Checkout Session in subscription mode with the
//! tier's three prices (found by lookup key), the org as `client_reference_id` and in the
//! metadata of the session and of the subscription it creates, and the billing cycle anchored to
//! the first of next month (UTC), so Stripe's billing periods are Tally's.
//!
//! `POST /v1/stripe/webhooks` checks `Stripe-Signature` ([`verify_signature`]) before anything
//! else; a request that fails gets 400 and changes nothing. A verified event is stored once by
//! its id in `stripe_webhook_events` (a redelivery answers 200 and changes nothing) and the
//! answer goes out at once; the work happens after the answer ([`process_event`]), and a sweeper
//! finishes any event whose processing was interrupted. Events:
//! - `checkout.session.completed`: links org, customer and subscription (`stripe_customers`),
//!   and records the bought tier as a `SubscriptionChanged` (source `stripe`);
//! - `customer.subscription.updated` / `.deleted`: records a `SubscriptionChanged` with the
//!   subscription's tier (starter once it is deleted or no longer active), unless a newer event
//!   of the same subscription was already applied;
//! - `invoice.finalized` / `invoice.paid`: stores Stripe's invoice id, status and total beside
//!   Tally's invoice for the period (`stripe_invoices`); Tally's invoice itself never changes.
//!
//! The webhook secret and the API key are never logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};
use stripe_billing::subscription::{RetrieveSubscription, UpdateSubscription, UpdateSubscriptionItems, UpdateSubscriptionProrationBehavior};
use stripe_product::price::ListPrice;
use tally_pricing::stripe::{plans, PriceKind};
use tally_schemas::{SubscriptionChangedV1, SubscriptionSource, Tier};
use tally_stripe::StripeCallError;

use crate::auth::Caller;
use crate::error::{parse_json, ApiError};
use crate::AppState;

/// How old (or how far ahead) a signature's timestamp may be, as Stripe's own libraries allow.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;
/// The largest webhook body accepted (Stripe's events are far smaller).
pub const MAX_WEBHOOK_BYTES: usize = 1024 * 1024;
/// How often the sweeper looks for events whose processing was interrupted.
const SWEEP_EVERY: Duration = Duration::from_secs(15);
/// Failed attempts after which the sweeper leaves an event to an operator.
const MAX_ATTEMPTS: i32 = 50;
/// Events processed at once per api instance: each holds a database connection while it writes
/// to Kafka, so a Kafka outage cannot take every connection of the pool.
static PROCESSING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

// ---- signatures ------------------------------------------------------------------------------

/// Why a webhook's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("Stripe-Signature needs t=<timestamp> and at least one v1=<hex>")]
    Malformed,
    #[error("no v1 signature matches the body")]
    Mismatch,
    #[error("the signature's timestamp is more than 300 s from now")]
    Stale,
}

impl SignatureError {
    pub fn code(self) -> &'static str {
        match self {
            SignatureError::Missing => "missing_signature",
            SignatureError::Malformed | SignatureError::Mismatch => "invalid_signature",
            SignatureError::Stale => "stale_signature",
        }
    }
}

/// Checks `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]` (other schemes are ignored, as
/// Stripe's libraries do): some `v1` must be HMAC-SHA256 of `"<t>.<raw body>"` under `secret`,
/// compared in constant time, and `t` must be within [`SIGNATURE_TOLERANCE_SECS`] of `now`.
pub fn verify_signature(secret: &[u8], header: Option<&str>, body: &[u8], now: i64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<&str> = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => timestamp = Some(v),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    let at: i64 = t.parse().map_err(|_| SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let matched = signatures
        .iter()
        .filter_map(|s| hex::decode(s).ok())
        .any(|s| mac.clone().verify_slice(&s).is_ok());
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    if (now - at).abs() > SIGNATURE_TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

// ---- checkout --------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutRequest {
    tier: String,
    success_url: String,
    cancel_url: String,
}

fn check_url(name: &str, url: &str) -> Result<(), ApiError> {
    let ok = (url.starts_with("https://") || url.starts_with("http://")) && url.len() <= 2048 && !url.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field(format!("{name} must be an http(s) URL of at most 2048 characters")))
    }
}

fn stripe_error(e: StripeCallError) -> ApiError {
    match e {
        StripeCallError::Rejected { status, kind, code, message } => {
            tracing::error!(status, kind = %kind, code = code.as_deref().unwrap_or(""), message = %message, "Stripe refused a request");
            ApiError::new(StatusCode::BAD_GATEWAY, "stripe_error", format!("Stripe refused the request: {message}"))
        }
        other => {
            tracing::warn!(error = %other, "Stripe unavailable");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stripe_unavailable", "Stripe did not answer; retry")
        }
    }
}

/// A subscription status under which Stripe bills (and Tally prices on the subscription's tier).
fn is_live(status: &str) -> bool {
    matches!(status, "active" | "trialing" | "past_due")
}

/// The first instant of the month after `now`, UTC: where Tally anchors Stripe's billing cycle.
pub fn next_month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().expect("the first of a month exists")
}

/// `POST /v1/orgs/{org_id}/checkout` `{"tier", "success_url", "cancel_url"}` (the org's read key
/// or admin): a Stripe Checkout Session for the tier; answers 201 `{"url", "session_id"}`.
pub async fn checkout(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_reader(&state, &org_id).await?;
    let request: CheckoutRequest = parse_json(&body)?;
    let tier = crate::billing::parse_tier(&request.tier)?;
    check_url("success_url", &request.success_url)?;
    check_url("cancel_url", &request.cancel_url)?;
    let client = stripe_client(&state)?;

    let linked: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT customer_id, subscription_status FROM stripe_customers WHERE org_id = $1")
            .bind(&org_id)
            .fetch_optional(&state.pool)
            .await?;
    if linked.as_ref().is_some_and(|(_, status)| status.as_deref().is_some_and(is_live)) {
        // A second subscription would bill the same usage twice (both would carry the metered
        // prices): a change of tier is an update of the subscription, in Stripe.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_subscribed",
            format!("org {org_id:?} has a live Stripe subscription; change its tier in Stripe (the customer portal) instead"),
        ));
    }
    let line_items = tier_prices(&state, client, tier)
        .await?
        .into_iter()
        .map(|(price, licensed)| {
            let mut item = CreateCheckoutSessionLineItems::new();
            item.price = Some(price);
            // Licensed (the base fee) takes a quantity; metered prices must not.
            item.quantity = licensed.then_some(1);
            item
        })
        .collect::<Vec<_>>();
    let metadata = HashMap::from([("tally_org_id".to_string(), org_id.clone()), ("tally_tier".to_string(), tier.as_str().to_string())]);
    let mut subscription = CreateCheckoutSessionSubscriptionData::new();
    subscription.metadata = Some(metadata.clone());
    subscription.billing_cycle_anchor = Some(next_month_start(Utc::now()).timestamp());
    let mut create = CreateCheckoutSession::new()
        .mode(stripe_shared::CheckoutSessionMode::Subscription)
        .client_reference_id(org_id.as_str())
        .success_url(request.success_url.as_str())
        .cancel_url(request.cancel_url.as_str())
        .line_items(line_items)
        .metadata(metadata)
        .subscription_data(subscription);
    if let Some((customer, _)) = linked {
        create = create.customer(customer);
    }
    let session = create.send(client).await.map_err(stripe_error)?;
    let url = session.url.clone().ok_or_else(|| ApiError::new(StatusCode::BAD_GATEWAY, "stripe_error", "Stripe returned a session without a url"))?;
    tracing::info!(org_id = %org_id, tier = %tier, session_id = %session.id, "checkout session created");
    Ok((StatusCode::CREATED, Json(json!({"url": url, "session_id": session.id.to_string()}))))
}

/// The Stripe price ids of a tier's three prices (found by lookup key), each with whether it is
/// licensed (the base fee, quantity 1) rather than metered.
async fn tier_prices(state: &AppState, client: &tally_stripe::StripeHttp, tier: Tier) -> Result<Vec<(String, bool)>, ApiError> {
    let plan = plans(&state.pricing).into_iter().find(|p| p.tier == tier).expect("every tier has a plan");
    let keys: Vec<String> = plan.prices.iter().map(|p| p.lookup_key.clone()).collect();
    let found = ListPrice::new().lookup_keys(keys).active(true).limit(10).send(client).await.map_err(stripe_error)?;
    plan.prices
        .iter()
        .map(|price| {
            let stripe_price = found.data.iter().find(|p| p.lookup_key.as_deref() == Some(price.lookup_key.as_str())).ok_or_else(|| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "stripe_not_set_up",
                    format!("Stripe has no price {}: run `billing-reporter setup-stripe`", price.lookup_key),
                )
            })?;
            Ok((stripe_price.id.to_string(), matches!(price.kind, PriceKind::Licensed { .. })))
        })
        .collect()
}

/// What a price is for, whatever the tier: the base fee or one metric's meter.
fn role(kind: &PriceKind) -> Option<tally_schemas::Metric> {
    match kind {
        PriceKind::Licensed { .. } => None,
        PriceKind::Metered { metric, .. } => Some(*metric),
    }
}

fn stripe_client(state: &AppState) -> Result<&tally_stripe::StripeHttp, ApiError> {
    state.stripe.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stripe_not_configured", "Stripe is not configured (TALLY_STRIPE_SECRET_KEY)")
    })
}

// ---- plan changes ----------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanChangeRequest {
    tier: String,
}

/// `POST /v1/orgs/{org_id}/plan-changes` `{"tier"}` (a person of the org signed in to the page,
/// or the admin; a bare read key may not): moves the org's
/// live Stripe subscription onto the tier's prices, without proration; `202`. Stripe answers
/// with `customer.subscription.updated`, and the webhook records the tier in the billing log as
/// for any subscription change: Tally's tier follows Stripe's subscription, never the request.
pub async fn change_plan(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_customer(&state, &org_id).await?;
    let request: PlanChangeRequest = parse_json(&body)?;
    let tier = crate::billing::parse_tier(&request.tier)?;
    let client = stripe_client(&state)?;
    let linked: Option<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT subscription_id, subscription_status FROM stripe_customers WHERE org_id = $1")
            .bind(&org_id)
            .fetch_optional(&state.pool)
            .await?;
    let Some((Some(subscription_id), Some(_))) = linked.filter(|(_, status)| status.as_deref().is_some_and(is_live)) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_subscription",
            format!("org {org_id:?} has no live Stripe subscription; buy one through Checkout"),
        ));
    };
    let subscription = RetrieveSubscription::new(subscription_id.as_str()).send(client).await.map_err(stripe_error)?;
    let plans = plans(&state.pricing);
    let current = subscription.items.data.iter().find_map(|item| {
        let key = item.price.lookup_key.as_deref();
        plans.iter().find(|p| p.prices.iter().any(|x| Some(x.lookup_key.as_str()) == key)).map(|p| p.tier)
    });
    if current == Some(tier) {
        return Err(ApiError::new(StatusCode::CONFLICT, "same_tier", format!("the subscription is already on {tier}")));
    }
    // One update, each item keeping its id and taking the new tier's price of the same role
    // (the base fee, the traces meter, the payload meter), as Stripe's guide to changing prices
    // does: the meters' usage stays on the subscription. An item Tally does not know is left as
    // it is; a role with no item gets one.
    let new_prices = tier_prices(&state, client, tier).await?;
    let new_plan = plans.iter().find(|p| p.tier == tier).expect("every tier has a plan");
    let role_of = |lookup_key: Option<&str>| {
        plans.iter().flat_map(|p| p.prices.iter()).find(|x| Some(x.lookup_key.as_str()) == lookup_key).map(|x| role(&x.kind))
    };
    let mut items = Vec::new();
    let mut placed = vec![false; new_plan.prices.len()];
    for item in &subscription.items.data {
        let Some(item_role) = role_of(item.price.lookup_key.as_deref()) else { continue };
        let Some(at) = new_plan.prices.iter().position(|x| role(&x.kind) == item_role) else { continue };
        if placed[at] {
            continue;
        }
        placed[at] = true;
        let (price, licensed) = &new_prices[at];
        let mut swap = UpdateSubscriptionItems::new();
        swap.id = Some(item.id.to_string());
        swap.price = Some(price.clone());
        swap.quantity = licensed.then_some(1);
        items.push(swap);
    }
    for (at, (price, licensed)) in new_prices.iter().enumerate() {
        if !placed[at] {
            let mut added = UpdateSubscriptionItems::new();
            added.price = Some(price.clone());
            added.quantity = licensed.then_some(1);
            items.push(added);
        }
    }
    let metadata = HashMap::from([("tally_org_id".to_string(), org_id.clone()), ("tally_tier".to_string(), tier.as_str().to_string())]);
    UpdateSubscription::new(subscription_id.as_str())
        .items(items)
        .metadata(metadata)
        .proration_behavior(UpdateSubscriptionProrationBehavior::None)
        .send(client)
        .await
        .map_err(stripe_error)?;
    tracing::info!(org_id = %org_id, tier = %tier, subscription_id = %subscription_id, "plan change requested in Stripe");
    Ok((StatusCode::ACCEPTED, Json(json!({"org_id": org_id, "tier": tier, "subscription_id": subscription_id}))))
}

// ---- webhooks --------------------------------------------------------------------------------

/// `POST /v1/stripe/webhooks`: verifies, stores once, answers; processes after the answer.
pub async fn webhook(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Result<impl IntoResponse, ApiError> {
    let secret = state.settings.stripe_webhook_secret.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "webhooks_not_configured", "TALLY_STRIPE_WEBHOOK_SECRET is not set")
    })?;
    if body.len() > MAX_WEBHOOK_BYTES {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("webhook bodies are at most {MAX_WEBHOOK_BYTES} bytes")));
    }
    let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    if let Err(e) = verify_signature(secret.expose().as_bytes(), header, &body, Utc::now().timestamp()) {
        crate::metrics::WEBHOOKS.with_label_values(&["refused"]).inc();
        return Err(ApiError::bad_request(e.code(), e.to_string()));
    }
    let event: Value = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("invalid_event", e.to_string()))?;
    let (Some(id), Some(kind), Some(created)) = (event["id"].as_str(), event["type"].as_str(), event["created"].as_i64()) else {
        return Err(ApiError::bad_request("invalid_event", "an event needs id, type and created"));
    };
    let created = Utc.timestamp_opt(created, 0).single().ok_or_else(|| ApiError::bad_request("invalid_event", "created is out of range"))?;
    let inserted = sqlx::query(
        "INSERT INTO stripe_webhook_events (event_id, type, created, payload) VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(id)
    .bind(kind)
    .bind(created)
    .bind(&event)
    .execute(&state.pool)
    .await?
    .rows_affected()
        == 1;
    crate::metrics::WEBHOOKS.with_label_values(&[if inserted { "accepted" } else { "redelivered" }]).inc();
    if inserted {
        let (state, id) = (state.clone(), id.to_string());
        tokio::spawn(async move {
            let _ = process_logged(&state, &id).await;
        });
    }
    Ok(Json(json!({"received": true, "duplicate": !inserted})))
}

/// Processes one event with a permit; a failure is logged and counted on the event, for the
/// sweeper to retry.
async fn process_logged(state: &AppState, event_id: &str) -> Result<Option<Outcome>, ProcessError> {
    let _permit = PROCESSING.acquire().await.expect("the semaphore is never closed");
    let result = process_event(state, event_id).await;
    if let Err(e) = &result {
        crate::metrics::WEBHOOK_OUTCOMES.with_label_values(&["failed"]).inc();
        tracing::warn!(event_id, error = %e, "Stripe event not processed yet; the sweeper retries");
        let _ = sqlx::query("UPDATE stripe_webhook_events SET attempts = attempts + 1, last_error = $2 WHERE event_id = $1")
            .bind(event_id)
            .bind(e.to_string())
            .execute(&state.pool)
            .await;
    }
    result
}

/// What processing an event did, stored as its `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Linked,
    TierRecorded,
    InvoiceStored,
    /// A newer event of the same subscription or invoice was already applied.
    Superseded,
    /// The event names no org Tally knows.
    UnknownOrg,
    /// An event of a subscription other than the org's live one.
    OtherSubscription,
    /// A type Tally does not act on.
    Ignored,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Linked => "linked",
            Outcome::TierRecorded => "tier_recorded",
            Outcome::InvoiceStored => "invoice_stored",
            Outcome::Superseded => "superseded",
            Outcome::UnknownOrg => "unknown_org",
            Outcome::OtherSubscription => "other_subscription",
            Outcome::Ignored => "ignored",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("PostgreSQL: {0}")]
    Db(#[from] sqlx::Error),
    #[error("the billing log: {0}")]
    Kafka(String),
}

/// Processes one stored event, if nobody has (or is doing it): the row is locked for the
/// duration, and marked processed in the same transaction as its effects on PostgreSQL. A
/// `SubscriptionChanged` is written to Kafka before that commit; if the commit is lost, the
/// event is processed again and records the same change again, which leaves the tier as it was.
pub async fn process_event(state: &AppState, event_id: &str) -> Result<Option<Outcome>, ProcessError> {
    let mut tx = state.pool.begin().await?;
    let row: Option<(Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT payload, created FROM stripe_webhook_events WHERE event_id = $1 AND processed_at IS NULL FOR UPDATE SKIP LOCKED",
    )
    .bind(event_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((event, created)) = row else { return Ok(None) };
    let object = &event["data"]["object"];
    let outcome = match event["type"].as_str().unwrap_or_default() {
        "checkout.session.completed" => checkout_completed(state, &mut tx, event_id, object, created).await?,
        "customer.subscription.updated" => subscription_changed(state, &mut tx, event_id, object, created, false).await?,
        "customer.subscription.deleted" => subscription_changed(state, &mut tx, event_id, object, created, true).await?,
        "invoice.finalized" | "invoice.paid" => invoice_changed(&mut tx, object, created).await?,
        _ => Outcome::Ignored,
    };
    sqlx::query("UPDATE stripe_webhook_events SET processed_at = now(), outcome = $2 WHERE event_id = $1")
        .bind(event_id)
        .bind(outcome.as_str())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    crate::metrics::WEBHOOK_OUTCOMES.with_label_values(&[outcome.as_str()]).inc();
    tracing::info!(event_id, kind = event["type"].as_str().unwrap_or_default(), outcome = outcome.as_str(), "Stripe event processed");
    Ok(Some(outcome))
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

fn text(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty())
}

/// The id of an expandable field: a string, or an expanded object's `id`.
fn id_of(v: &Value) -> Option<&str> {
    text(v).or_else(|| text(&v["id"]))
}

async fn org_exists(tx: &mut Tx<'_>, org_id: &str) -> Result<bool, sqlx::Error> {
    let found: Option<(String,)> = sqlx::query_as("SELECT org_id FROM orgs WHERE org_id = $1").bind(org_id).fetch_optional(&mut **tx).await?;
    Ok(found.is_some())
}

async fn org_of_customer(tx: &mut Tx<'_>, customer: Option<&str>) -> Result<Option<String>, sqlx::Error> {
    let Some(customer) = customer else { return Ok(None) };
    let found: Option<(String,)> = sqlx::query_as("SELECT org_id FROM stripe_customers WHERE customer_id = $1").bind(customer).fetch_optional(&mut **tx).await?;
    Ok(found.map(|(o,)| o))
}

async fn record_tier(state: &AppState, event_id: &str, org_id: &str, tier: Tier, at: DateTime<Utc>) -> Result<(), ProcessError> {
    let change = SubscriptionChangedV1 {
        change_id: format!("stripe_{event_id}"),
        org_id: org_id.to_string(),
        tier,
        source: SubscriptionSource::Stripe,
        requested_at: at,
        stripe_event_id: Some(event_id.to_string()),
    };
    crate::billing::record_subscription_change(&state.billing_producer, &change).await.map_err(|e| ProcessError::Kafka(e.message))?;
    Ok(())
}

async fn checkout_completed(state: &AppState, tx: &mut Tx<'_>, event_id: &str, session: &Value, created: DateTime<Utc>) -> Result<Outcome, ProcessError> {
    let org_id = text(&session["client_reference_id"]).or_else(|| text(&session["metadata"]["tally_org_id"]));
    let (Some(org_id), Some(customer)) = (org_id, id_of(&session["customer"])) else { return Ok(Outcome::UnknownOrg) };
    if !org_exists(tx, org_id).await? {
        return Ok(Outcome::UnknownOrg);
    }
    let subscription = id_of(&session["subscription"]);
    // Linking is the newest fact about the org only if no newer subscription event was applied.
    let linked = sqlx::query(
        "INSERT INTO stripe_customers (org_id, customer_id, subscription_id, subscription_status, linked_at, event_created)
         VALUES ($1, $2, $3, 'active', $4, $4)
         ON CONFLICT (org_id) DO UPDATE
             SET customer_id = EXCLUDED.customer_id, subscription_id = EXCLUDED.subscription_id,
                 subscription_status = 'active', event_created = EXCLUDED.event_created, updated_at = now()
             WHERE stripe_customers.event_created IS NULL OR stripe_customers.event_created <= EXCLUDED.event_created",
    )
    .bind(org_id)
    .bind(customer)
    .bind(subscription)
    .bind(created)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if linked == 0 {
        return Ok(Outcome::Superseded);
    }
    if let Some(tier) = text(&session["metadata"]["tally_tier"]).and_then(|t| t.parse::<Tier>().ok()) {
        record_tier(state, event_id, org_id, tier, created).await?;
    }
    Ok(Outcome::Linked)
}

/// The tier a subscription's items are priced on: by the prices' lookup keys (or products) of
/// Tally's price list, else the subscription's `tally_tier` metadata.
fn tier_of_subscription(state: &AppState, subscription: &Value) -> Option<Tier> {
    let plans = plans(&state.pricing);
    let items = subscription["items"]["data"].as_array().cloned().unwrap_or_default();
    let from_items = items.iter().find_map(|item| {
        let price = &item["price"];
        let key = text(&price["lookup_key"]);
        let product = id_of(&price["product"]);
        plans
            .iter()
            .find(|p| p.prices.iter().any(|x| Some(x.lookup_key.as_str()) == key) || Some(p.product_id.as_str()) == product)
            .map(|p| p.tier)
    });
    from_items.or_else(|| text(&subscription["metadata"]["tally_tier"]).and_then(|t| t.parse().ok()))
}

async fn subscription_changed(
    state: &AppState,
    tx: &mut Tx<'_>,
    event_id: &str,
    subscription: &Value,
    created: DateTime<Utc>,
    deleted: bool,
) -> Result<Outcome, ProcessError> {
    let customer = id_of(&subscription["customer"]);
    let org_id = match text(&subscription["metadata"]["tally_org_id"]) {
        Some(o) => Some(o.to_string()),
        None => org_of_customer(tx, customer).await?,
    };
    let Some(org_id) = org_id else { return Ok(Outcome::UnknownOrg) };
    let Some(subscription_id) = id_of(&subscription["id"]) else { return Ok(Outcome::Ignored) };
    let status = if deleted { "canceled" } else { text(&subscription["status"]).unwrap_or("active") };
    // The org's link, locked: events of one org are applied one at a time.
    let link: Option<(Option<String>, Option<String>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT subscription_id, subscription_status, event_created FROM stripe_customers WHERE org_id = $1 FOR UPDATE",
    )
    .bind(&org_id)
    .fetch_optional(&mut **tx)
    .await?;
    match &link {
        None if !org_exists(tx, &org_id).await? => return Ok(Outcome::UnknownOrg),
        None => {}
        Some((linked_sub, linked_status, newest)) => {
            let same = linked_sub.as_deref() == Some(subscription_id);
            // Another subscription while the linked one is live: not the one Tally bills.
            if !same && linked_status.as_deref().is_some_and(is_live) {
                return Ok(Outcome::OtherSubscription);
            }
            // Stripe does not promise order, and `created` has one-second resolution: an older
            // event is dropped, and a canceled subscription stays canceled.
            if same && linked_status.as_deref() == Some("canceled") {
                return Ok(Outcome::Superseded);
            }
            if newest.is_some_and(|n| n > created) {
                return Ok(Outcome::Superseded);
            }
            sqlx::query(
                "UPDATE stripe_customers SET subscription_id = $2, subscription_status = $3, event_created = $4, updated_at = now()
                 WHERE org_id = $1",
            )
            .bind(&org_id)
            .bind(subscription_id)
            .bind(status)
            .bind(created)
            .execute(&mut **tx)
            .await?;
        }
    }
    let tier = if is_live(status) { tier_of_subscription(state, subscription).unwrap_or_default() } else { Tier::default() };
    record_tier(state, event_id, &org_id, tier, created).await?;
    Ok(Outcome::TierRecorded)
}

async fn invoice_changed(tx: &mut Tx<'_>, invoice: &Value, created: DateTime<Utc>) -> Result<Outcome, ProcessError> {
    // The invoice of a billing period: Stripe's renewal (`subscription_cycle`) invoices. The
    // prorated first invoice at checkout and one-off invoices are not a period's bill.
    if text(&invoice["billing_reason"]).is_some_and(|r| r != "subscription_cycle") {
        return Ok(Outcome::Ignored);
    }
    let org_id = match text(&invoice["parent"]["subscription_details"]["metadata"]["tally_org_id"]) {
        Some(o) => Some(o.to_string()),
        None => org_of_customer(tx, id_of(&invoice["customer"])).await?,
    };
    let (Some(org_id), Some(invoice_id), Some(start)) = (org_id, id_of(&invoice["id"]), invoice["period_start"].as_i64()) else {
        return Ok(Outcome::UnknownOrg);
    };
    let Some(start) = Utc.timestamp_opt(start, 0).single() else { return Ok(Outcome::Ignored) };
    let period = tally_metering::Period::containing(start).to_string();
    let stored = sqlx::query(
        "INSERT INTO stripe_invoices (org_id, period, invoice_id, status, total_cents, currency, event_created)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (org_id, period) DO UPDATE
             SET invoice_id = EXCLUDED.invoice_id, status = EXCLUDED.status, total_cents = EXCLUDED.total_cents,
                 currency = EXCLUDED.currency, event_created = EXCLUDED.event_created, updated_at = now()
             WHERE stripe_invoices.event_created <= EXCLUDED.event_created",
    )
    .bind(&org_id)
    .bind(&period)
    .bind(invoice_id)
    .bind(text(&invoice["status"]).unwrap_or("open"))
    .bind(invoice["total"].as_i64().unwrap_or(0))
    .bind(text(&invoice["currency"]).unwrap_or("usd"))
    .bind(created)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(if stored == 1 { Outcome::InvoiceStored } else { Outcome::Superseded })
}

/// Finishes events whose processing was interrupted (a crash, Kafka unavailable), oldest first.
pub async fn sweep(state: Arc<AppState>, shutdown: tally_common::shutdown::Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = shutdown.clone().requested() => return,
        }
        let ids: Vec<(String,)> = match sqlx::query_as(
            "SELECT event_id FROM stripe_webhook_events
             WHERE processed_at IS NULL AND attempts < $1 AND received_at < now() - interval '5 seconds'
             ORDER BY created, received_at LIMIT 500",
        )
        .bind(MAX_ATTEMPTS)
        .fetch_all(&state.pool)
        .await
        {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "webhook sweeper cannot read PostgreSQL");
                continue;
            }
        };
        for (id,) in ids {
            // One event that keeps failing does not hold up the others.
            let _ = process_logged(&state, &id).await;
        }
    }
}

/// Stripe's invoices of an org (of one period, or all), by period:
/// `{"invoice_id", "status", "total_cents", "currency"}`.
pub async fn stripe_invoices(state: &AppState, org_id: &str, period: Option<tally_metering::Period>) -> Result<HashMap<String, Value>, sqlx::Error> {
    let rows: Vec<(String, String, String, i64, String)> = sqlx::query_as(
        "SELECT period, invoice_id, status, total_cents, currency FROM stripe_invoices WHERE org_id = $1 AND ($2::text IS NULL OR period = $2)",
    )
    .bind(org_id)
    .bind(period.map(|p| p.to_string()))
    .fetch_all(&state.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(period, invoice_id, status, total_cents, currency)| {
            (period, json!({"invoice_id": invoice_id, "status": status, "total_cents": total_cents, "currency": currency}))
        })
        .collect())
}

/// The org's Stripe link, if it has one: `{"customer_id", "subscription_id", "status"}`.
pub async fn stripe_link(state: &AppState, org_id: &str) -> Result<Option<Value>, sqlx::Error> {
    let row: Option<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT customer_id, subscription_id, subscription_status FROM stripe_customers WHERE org_id = $1")
            .bind(org_id)
            .fetch_optional(&state.pool)
            .await?;
    Ok(row.map(|(customer_id, subscription_id, status)| json!({"customer_id": customer_id, "subscription_id": subscription_id, "status": status})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signatures_are_checked_as_stripe_does() {
        let secret = "whsec_test_secret";
        let body = br#"{"id":"evt_1","type":"invoice.paid"}"#;
        let now = 1_800_000_000;
        let good = sign(secret, now, body);
        let ok = |h: String, n: i64| verify_signature(secret.as_bytes(), Some(&h), body, n);
        assert_eq!(ok(format!("t={now},v1={good}"), now), Ok(()));
        // Any of several v1 values (Stripe sends one per active secret while rolling it); other
        // schemes are ignored.
        assert_eq!(ok(format!("t={now},v0=abc,v1={},v1={good}", "00".repeat(32)), now + 10), Ok(()));
        // Tampered body, wrong secret.
        assert_eq!(verify_signature(secret.as_bytes(), Some(&format!("t={now},v1={good}")), b"{}", now), Err(SignatureError::Mismatch));
        assert_eq!(verify_signature(b"whsec_other", Some(&format!("t={now},v1={good}")), body, now), Err(SignatureError::Mismatch));
        // The timestamp is signed too: changing it breaks the signature.
        assert_eq!(ok(format!("t={},v1={good}", now + 1), now), Err(SignatureError::Mismatch));
        // Stale or too far ahead.
        assert_eq!(ok(format!("t={now},v1={good}"), now + 301), Err(SignatureError::Stale));
        assert_eq!(ok(format!("t={now},v1={good}"), now - 301), Err(SignatureError::Stale));
        assert_eq!(ok(format!("t={now},v1={good}"), now + 300), Ok(()));
        // Malformed.
        assert_eq!(verify_signature(secret.as_bytes(), None, body, now), Err(SignatureError::Missing));
        assert_eq!(ok(format!("v1={good}"), now), Err(SignatureError::Malformed));
        assert_eq!(ok(format!("t={now}"), now), Err(SignatureError::Malformed));
        assert_eq!(ok(format!("t=soon,v1={good}"), now), Err(SignatureError::Malformed));
        assert_eq!(ok(format!("t={now},v1=not-hex"), now), Err(SignatureError::Mismatch));
    }

    #[test]
    fn the_billing_cycle_is_anchored_to_the_next_first_of_a_month() {
        let at = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap();
        assert_eq!(next_month_start(at(2026, 11, 29)), Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(next_month_start(at(2026, 12, 1)), Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
    }
}
