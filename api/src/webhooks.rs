//! Stripe's webhooks: verification, storing, processing, and the sweeper.
//!
//! `POST /v1/stripe/webhooks` checks `Stripe-Signature` ([`verify_signature`], in
//! [`crate::webhook_input`] with the event's envelope) on the raw body
//! before anything else; a request that fails gets 400 and changes nothing. A verified event is
//! stored once by its id in `stripe_webhook_events` (a redelivery answers 200 and changes
//! nothing) and the answer goes out at once; the work happens after the answer
//! ([`process_event`]), and a sweeper finishes any event whose processing was interrupted.
//! Events ([`crate::stripe_objects`] reads their payloads):
//! - `checkout.session.completed`: links org, customer and subscription (`stripe_customers`),
//!   and records the bought tier as a `SubscriptionChanged` (source `stripe`);
//! - `customer.subscription.updated` / `.deleted`: records a `SubscriptionChanged` with the
//!   subscription's tier (starter once it is deleted or no longer active), unless a newer event
//!   of the same subscription was already applied;
//! - `invoice.finalized` / `invoice.paid`: stores Stripe's invoice id, status and total beside
//!   Tally's invoice for the period (`stripe_invoices`); Tally's invoice itself never changes.
//!
//! Every other type is stored and marked `ignored`. Each processed event gets one
//! [`WebhookOutcome`], stored with it and counted. The webhook secret is never logged.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tally_pricing::stripe::plans;
use tally_schemas::{SubscriptionChangedV1, SubscriptionSource, Tier};

use crate::auth::Caller;
use crate::error::{parse_json, ApiError};
use crate::stripe_objects::{is_live, CheckoutSession, Event, Invoice, Subscription};
use crate::webhook_input::{read_event, verify_signature};
use crate::AppState;
use tally_store::Tx;

/// The largest webhook body accepted (Stripe's events are far smaller).
pub const MAX_WEBHOOK_BYTES: usize = 1024 * 1024;
/// How often the sweeper looks for events whose processing was interrupted.
const SWEEP_EVERY: Duration = Duration::from_secs(15);
/// Failed attempts after which the sweeper leaves an event to an operator.
const MAX_ATTEMPTS: i32 = 50;
/// Events processed at once per api instance: each holds a database connection while it writes
/// to Kafka, so a Kafka outage cannot take every connection of the pool.
static PROCESSING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

// ---- receiving -------------------------------------------------------------------------------

/// The answer to a verified delivery.
#[derive(Serialize)]
pub struct WebhookReceipt {
    received: bool,
    /// The event was stored before (a redelivery): nothing changes.
    duplicate: bool,
}

/// `POST /v1/stripe/webhooks`: verifies, stores once, answers; processes after the answer.
pub async fn webhook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookReceipt>, ApiError> {
    let secret = state.settings.stripe_webhook_secret.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks_not_configured",
            "TALLY_STRIPE_WEBHOOK_SECRET is not set",
        )
    })?;
    if body.len() > MAX_WEBHOOK_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("webhook bodies are at most {MAX_WEBHOOK_BYTES} bytes"),
        ));
    }
    let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    if let Err(e) =
        verify_signature(secret.expose().as_bytes(), header, &body, Utc::now().timestamp())
    {
        crate::metrics::WEBHOOKS.with_label_values(&["refused"]).inc();
        return Err(ApiError::bad_request(e.code(), e.to_string()));
    }
    // Verified: only now is the body parsed. It is stored as sent, and read again to process it.
    let (payload, event, created) =
        read_event(&body).map_err(|message| ApiError::bad_request("invalid_event", message))?;
    // Stripe's events name an org only once they are processed: the webhook works across orgs.
    let mut db = state.db.all_orgs().await?;
    let inserted =
        tally_store::stripe::insert_event(&mut db, &event.id, &event.kind, created, &payload)
            .await?;
    db.commit().await?;
    crate::metrics::WEBHOOKS
        .with_label_values(&[if inserted { "accepted" } else { "redelivered" }])
        .inc();
    if inserted {
        let (state, id) = (state.clone(), event.id.clone());
        tokio::spawn(async move {
            let _ = try_process_event(&state, &id).await;
        });
    }
    Ok(Json(WebhookReceipt { received: true, duplicate: !inserted }))
}

// ---- processing ------------------------------------------------------------------------------

/// What processing an event did, stored as its `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    Linked,
    TierRecorded,
    InvoiceStored,
    /// A newer event of the same subscription or invoice was already applied.
    Superseded,
    /// The event names no org Tally knows.
    UnknownOrg,
    /// A completed Checkout Session that Tally did not create for the org it names.
    UnknownSession,
    /// An event of a subscription other than the org's live one.
    OtherSubscription,
    /// A type Tally does not act on (or an object it cannot read).
    Ignored,
}

impl WebhookOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Linked => "linked",
            WebhookOutcome::TierRecorded => "tier_recorded",
            WebhookOutcome::InvoiceStored => "invoice_stored",
            WebhookOutcome::Superseded => "superseded",
            WebhookOutcome::UnknownOrg => "unknown_org",
            WebhookOutcome::UnknownSession => "unknown_session",
            WebhookOutcome::OtherSubscription => "other_subscription",
            WebhookOutcome::Ignored => "ignored",
        }
    }
}

/// Why processing an event failed this time (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum EventProcessingError {
    #[error("PostgreSQL: {0}")]
    Db(#[from] sqlx::Error),
    #[error("the billing log: {0}")]
    Kafka(String),
}

/// Processes one event with a permit; a failure is logged and counted on the event, for the
/// sweeper to retry.
async fn try_process_event(
    state: &AppState,
    event_id: &str,
) -> Result<Option<WebhookOutcome>, EventProcessingError> {
    let _permit = PROCESSING.acquire().await.expect("the semaphore is never closed");
    let result = process_event(state, event_id).await;
    if let Err(e) = &result {
        crate::metrics::WEBHOOK_OUTCOMES.with_label_values(&["failed"]).inc();
        tracing::warn!(event_id, error = %e, "Stripe event not processed yet; the sweeper retries");
        let _ = async {
            let mut db = state.db.all_orgs().await?;
            tally_store::stripe::record_failed_attempt(&mut db, event_id, &e.to_string()).await?;
            db.commit().await
        }
        .await;
    }
    result
}

/// Processes one stored event, if nobody has (or is doing it): the row is locked for the
/// duration, and marked processed in the same transaction as its effects on PostgreSQL. A
/// `SubscriptionChanged` is written to Kafka before that commit; if the commit is lost, the
/// event is processed again and records the same change again, which leaves the tier as it was.
pub async fn process_event(
    state: &AppState,
    event_id: &str,
) -> Result<Option<WebhookOutcome>, EventProcessingError> {
    let mut tx = state.db.all_orgs().await?;
    let Some(pending) = tally_store::stripe::lock_unprocessed_event(&mut tx, event_id).await?
    else {
        return Ok(None);
    };
    let created = pending.created;
    let outcome = match Event::deserialize(&pending.payload) {
        Ok(event) => apply_event(state, &mut tx, &event, created).await?,
        Err(e) => {
            tracing::warn!(event_id, error = %e, "a stored Stripe event cannot be read");
            WebhookOutcome::Ignored
        }
    };
    tally_store::stripe::mark_processed(&mut tx, event_id, outcome.as_str()).await?;
    tx.commit().await?;
    crate::metrics::WEBHOOK_OUTCOMES.with_label_values(&[outcome.as_str()]).inc();
    let kind = pending.payload["type"].as_str().unwrap_or_default();
    tracing::info!(event_id, kind, outcome = outcome.as_str(), "Stripe event processed");
    Ok(Some(outcome))
}

/// The effect of one event, by its type.
async fn apply_event(
    state: &AppState,
    tx: &mut Tx<'_>,
    event: &Event,
    created: DateTime<Utc>,
) -> Result<WebhookOutcome, EventProcessingError> {
    /// The event's object, or `Ignored` when it is not the type's.
    macro_rules! object {
        ($t:ty) => {
            match event.object::<$t>() {
                Ok(object) => object,
                Err(e) => {
                    tracing::warn!(event_id = %event.id, kind = %event.kind, error = %e, "a Stripe object cannot be read");
                    return Ok(WebhookOutcome::Ignored);
                }
            }
        };
    }
    Ok(match event.kind.as_str() {
        "checkout.session.completed" => {
            let session = object!(CheckoutSession);
            checkout_completed(state, tx, &event.id, &session, created).await?
        }
        "customer.subscription.updated" => {
            let subscription = object!(Subscription);
            subscription_changed(state, tx, &event.id, &subscription, created, false).await?
        }
        "customer.subscription.deleted" => {
            let subscription = object!(Subscription);
            subscription_changed(state, tx, &event.id, &subscription, created, true).await?
        }
        "invoice.finalized" | "invoice.paid" => {
            let invoice = object!(Invoice);
            invoice_changed(tx, &invoice, created).await?
        }
        _ => WebhookOutcome::Ignored,
    })
}

async fn org_of_customer(
    tx: &mut Tx<'_>,
    customer: Option<&str>,
) -> Result<Option<String>, sqlx::Error> {
    match customer {
        Some(customer) => tally_store::stripe::org_of_customer(tx, customer).await,
        None => Ok(None),
    }
}

/// Records `tier` for the org in the billing log, as of the event.
async fn record_tier(
    state: &AppState,
    event_id: &str,
    org_id: &str,
    tier: Tier,
    at: DateTime<Utc>,
) -> Result<(), EventProcessingError> {
    let change = SubscriptionChangedV1 {
        change_id: format!("stripe_{event_id}"),
        org_id: org_id.to_string(),
        tier,
        source: SubscriptionSource::Stripe,
        requested_at: at,
        stripe_event_id: Some(event_id.to_string()),
    };
    crate::billing_log::record_subscription_change(&state.billing_producer, &change)
        .await
        .map_err(|e| EventProcessingError::Kafka(e.message))?;
    Ok(())
}

async fn checkout_completed(
    state: &AppState,
    tx: &mut Tx<'_>,
    event_id: &str,
    session: &CheckoutSession,
    created: DateTime<Utc>,
) -> Result<WebhookOutcome, EventProcessingError> {
    let (Some(org_id), Some(customer)) = (session.org_id(), session.customer_id()) else {
        return Ok(WebhookOutcome::UnknownOrg);
    };
    if !tally_store::orgs::exists(&mut **tx, org_id).await? {
        return Ok(WebhookOutcome::UnknownOrg);
    }
    // Only a session Tally created, for this org: its record, not the event's metadata, says
    // which tier was bought.
    let Some(session_id) = session.id() else { return Ok(WebhookOutcome::UnknownSession) };
    let Some(tier) = tally_store::stripe::complete_checkout_session(tx, session_id, org_id).await?
    else {
        tracing::warn!(
            event_id,
            session_id,
            org_id,
            "a completed Checkout Session Tally did not create for this org; ignored"
        );
        return Ok(WebhookOutcome::UnknownSession);
    };
    // Linking is the newest fact about the org only if no newer subscription event was applied.
    let linked = tally_store::stripe::link_checkout(
        tx,
        org_id,
        customer,
        session.subscription_id(),
        created,
    )
    .await?;
    if !linked {
        return Ok(WebhookOutcome::Superseded);
    }
    if let Ok(tier) = tier.parse::<Tier>() {
        record_tier(state, event_id, org_id, tier, created).await?;
    }
    Ok(WebhookOutcome::Linked)
}

/// The tier a subscription's items are priced on: by the prices' lookup keys (or products) of
/// Tally's price list, else the subscription's `tally_tier` metadata.
fn tier_of_subscription(state: &AppState, subscription: &Subscription) -> Option<Tier> {
    let plans = plans(&state.pricing);
    let from_items = subscription.prices().find_map(|price| {
        let (key, product) = (price.lookup_key(), price.product_id());
        plans
            .iter()
            .find(|p| {
                p.prices.iter().any(|x| Some(x.lookup_key.as_str()) == key)
                    || Some(p.product_id.as_str()) == product
            })
            .map(|p| p.tier)
    });
    from_items.or_else(|| subscription.tier().and_then(|t| t.parse().ok()))
}

async fn subscription_changed(
    state: &AppState,
    tx: &mut Tx<'_>,
    event_id: &str,
    subscription: &Subscription,
    created: DateTime<Utc>,
    deleted: bool,
) -> Result<WebhookOutcome, EventProcessingError> {
    let org_id = match subscription.org_id() {
        Some(o) => Some(o.to_string()),
        None => org_of_customer(tx, subscription.customer_id()).await?,
    };
    let Some(org_id) = org_id else {
        return Ok(WebhookOutcome::UnknownOrg);
    };
    let Some(subscription_id) = subscription.id() else {
        return Ok(WebhookOutcome::Ignored);
    };
    let status = if deleted { "canceled" } else { subscription.status().unwrap_or("active") };
    // The org's link, locked: events of one org are applied one at a time.
    match tally_store::stripe::lock_subscription(tx, &org_id).await? {
        None if !tally_store::orgs::exists(&mut **tx, &org_id).await? => {
            return Ok(WebhookOutcome::UnknownOrg)
        }
        None => {}
        Some(linked) => {
            let same = linked.subscription_id.as_deref() == Some(subscription_id);
            let linked_status = linked.subscription_status.as_deref();
            // Another subscription while the linked one is live: not the one Tally bills.
            if !same && linked_status.is_some_and(is_live) {
                return Ok(WebhookOutcome::OtherSubscription);
            }
            // Stripe does not promise order, and `created` has one-second resolution: an older
            // event is dropped, and a canceled subscription stays canceled.
            if same && linked_status == Some("canceled") {
                return Ok(WebhookOutcome::Superseded);
            }
            if linked.event_created.is_some_and(|newest| newest > created) {
                return Ok(WebhookOutcome::Superseded);
            }
            tally_store::stripe::update_subscription(tx, &org_id, subscription_id, status, created)
                .await?;
        }
    }
    let tier = if is_live(status) {
        tier_of_subscription(state, subscription).unwrap_or_default()
    } else {
        Tier::default()
    };
    record_tier(state, event_id, &org_id, tier, created).await?;
    Ok(WebhookOutcome::TierRecorded)
}

async fn invoice_changed(
    tx: &mut Tx<'_>,
    invoice: &Invoice,
    created: DateTime<Utc>,
) -> Result<WebhookOutcome, EventProcessingError> {
    // The invoice of a billing period: Stripe's renewal (`subscription_cycle`) invoices. The
    // prorated first invoice at checkout and one-off invoices are not a period's bill.
    if invoice.billing_reason().is_some_and(|r| r != "subscription_cycle") {
        return Ok(WebhookOutcome::Ignored);
    }
    let org_id = match invoice.org_id() {
        Some(o) => Some(o.to_string()),
        None => org_of_customer(tx, invoice.customer_id()).await?,
    };
    let (Some(org_id), Some(invoice_id), Some(start)) =
        (org_id, invoice.id(), invoice.period_start)
    else {
        return Ok(WebhookOutcome::UnknownOrg);
    };
    let Some(start) = Utc.timestamp_opt(start, 0).single() else {
        return Ok(WebhookOutcome::Ignored);
    };
    let row = tally_store::stripe::StripeInvoiceRow {
        period: tally_metering::Period::containing(start).to_string(),
        invoice_id: invoice_id.to_string(),
        status: invoice.status().unwrap_or("open").to_string(),
        total_cents: invoice.total.unwrap_or(0),
        currency: invoice.currency().unwrap_or("usd").to_string(),
    };
    let stored = tally_store::stripe::store_invoice(tx, &org_id, &row, created).await?;
    Ok(if stored { WebhookOutcome::InvoiceStored } else { WebhookOutcome::Superseded })
}

// ---- events that keep failing ---------------------------------------------------------------

#[derive(Serialize)]
pub struct FailedEvents {
    events: Vec<tally_store::stripe::FailedEvent>,
}

/// `GET /v1/stripe/webhook-events/failed` (admin): the events the sweeper gave up on after
/// `MAX_ATTEMPTS` failed attempts, oldest first, with their last error.
pub async fn failed_events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<FailedEvents>, ApiError> {
    caller.require_admin()?;
    let events =
        tally_store::stripe::failed_events(&mut *state.db.all_orgs().await?, MAX_ATTEMPTS).await?;
    crate::metrics::WEBHOOK_EVENTS_FAILED.set(events.len() as i64);
    Ok(Json(FailedEvents { events }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetryRequest {
    event_ids: Option<Vec<String>>,
}

#[derive(Serialize)]
pub struct Retried {
    /// Events given a fresh set of attempts.
    retried: usize,
    /// Of those, processed now.
    processed: usize,
    /// Of those, failing again now; the sweeper keeps trying them.
    failing: usize,
}

/// `POST /v1/stripe/webhook-events/retry` `{"event_ids"?}` (admin): gives the events the sweeper
/// gave up on (those listed, or all) a fresh set of attempts, and tries each once now, in the
/// order Stripe created them.
pub async fn retry_failed_events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Retried>, ApiError> {
    caller.require_admin()?;
    let request: RetryRequest =
        if body.is_empty() { RetryRequest::default() } else { parse_json(&body)? };
    let mut db = state.db.all_orgs().await?;
    let ids = tally_store::stripe::reset_failed_events(
        &mut db,
        MAX_ATTEMPTS,
        request.event_ids.as_deref(),
    )
    .await?;
    db.commit().await?;
    let mut processed = 0;
    for id in &ids {
        if try_process_event(&state, id).await.is_ok() {
            processed += 1;
        }
    }
    let failed =
        tally_store::stripe::count_failed_events(&mut *state.db.all_orgs().await?, MAX_ATTEMPTS)
            .await?;
    crate::metrics::WEBHOOK_EVENTS_FAILED.set(failed);
    tracing::info!(retried = ids.len(), processed, "failed Stripe events retried by an operator");
    Ok(Json(Retried { retried: ids.len(), processed, failing: ids.len() - processed }))
}

// ---- the sweeper -----------------------------------------------------------------------------

/// Finishes events whose processing was interrupted (a crash, Kafka unavailable), oldest first.
pub async fn sweep_interrupted_events(
    state: Arc<AppState>,
    shutdown: tally_common::shutdown::Shutdown,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = shutdown.clone().requested() => return,
        }
        let read = async {
            let mut db = state.db.all_orgs().await?;
            let failed = tally_store::stripe::count_failed_events(&mut db, MAX_ATTEMPTS).await?;
            let ids = tally_store::stripe::interrupted_events(&mut db, MAX_ATTEMPTS).await?;
            Ok::<_, sqlx::Error>((failed, ids))
        };
        let ids = match read.await {
            Ok((failed, ids)) => {
                crate::metrics::WEBHOOK_EVENTS_FAILED.set(failed);
                ids
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook sweeper cannot read PostgreSQL");
                continue;
            }
        };
        for id in ids {
            // One event that keeps failing does not hold up the others.
            let _ = try_process_event(&state, &id).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook_input::SignatureError;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

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
        assert_eq!(
            ok(format!("t={now},v0=abc,v1={},v1={good}", "00".repeat(32)), now + 10),
            Ok(())
        );
        // Tampered body, wrong secret.
        assert_eq!(
            verify_signature(secret.as_bytes(), Some(&format!("t={now},v1={good}")), b"{}", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"whsec_other", Some(&format!("t={now},v1={good}")), body, now),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed too: changing it breaks the signature.
        assert_eq!(ok(format!("t={},v1={good}", now + 1), now), Err(SignatureError::Mismatch));
        // Stale or too far ahead.
        assert_eq!(ok(format!("t={now},v1={good}"), now + 301), Err(SignatureError::Stale));
        assert_eq!(ok(format!("t={now},v1={good}"), now - 301), Err(SignatureError::Stale));
        assert_eq!(ok(format!("t={now},v1={good}"), now + 300), Ok(()));
        // Malformed.
        assert_eq!(
            verify_signature(secret.as_bytes(), None, body, now),
            Err(SignatureError::Missing)
        );
        assert_eq!(ok(format!("v1={good}"), now), Err(SignatureError::Malformed));
        assert_eq!(ok(format!("t={now}"), now), Err(SignatureError::Malformed));
        assert_eq!(ok(format!("t=soon,v1={good}"), now), Err(SignatureError::Malformed));
        assert_eq!(ok(format!("t={now},v1=not-hex"), now), Err(SignatureError::Mismatch));
    }
}
