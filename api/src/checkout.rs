//! Stripe Checkout and plan changes: the requests Tally makes to Stripe for an org.
//!
//! `POST /v1/orgs/{org_id}/checkout` creates a Checkout Session in subscription mode with the
//! tier's three prices (found by lookup key), the org as `client_reference_id` and in the
//! metadata of the session and of the subscription it creates, and the billing cycle anchored to
//! the first of next month (UTC), so Stripe's billing periods are Tally's.
//!
//! `POST /v1/orgs/{org_id}/plan-changes` moves the org's live subscription onto another tier's
//! prices. Neither changes Tally's tier: Stripe's webhooks do ([`crate::webhooks`]).
//!
//! The API key is never logged.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use stripe_billing::subscription::{
    RetrieveSubscription, UpdateSubscription, UpdateSubscriptionItems,
    UpdateSubscriptionProrationBehavior,
};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
    ExpireCheckoutSession, RetrieveCheckoutSession,
};
use stripe_product::price::ListPrice;
use stripe_shared::CheckoutSessionStatus;
use tally_pricing::stripe::{plans, PriceKind};
use tally_schemas::Tier;
use tally_stripe::StripeCallError;

use crate::auth::Caller;
use crate::error::{parse_json, parse_tier, ApiError};
use crate::stripe_objects::{is_live, ORG_ID_KEY, TIER_KEY};
use crate::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutRequest {
    tier: String,
    success_url: String,
    cancel_url: String,
}

/// 422 unless `url` is an http(s) URL of at most 2048 characters without whitespace.
fn require_http_url(name: &str, url: &str) -> Result<(), ApiError> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 2048
        && !url.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field(format!(
            "{name} must be an http(s) URL of at most 2048 characters"
        )))
    }
}

/// A failed call to Stripe as the api answers it: 502 when Stripe refused, else 503.
fn stripe_error(e: StripeCallError) -> ApiError {
    match e {
        StripeCallError::Rejected { status, kind, code, message } => {
            tracing::error!(status, kind = %kind, code = code.as_deref().unwrap_or(""), message = %message, "Stripe refused a request");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "stripe_error",
                // Stripe's own words stay in the log: they are about Tally's account.
                "Stripe refused the request; the api's log has Stripe's answer",
            )
        }
        other => {
            tracing::warn!(error = %other, "Stripe unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stripe_unavailable",
                "Stripe did not answer; retry",
            )
        }
    }
}

fn stripe_client(state: &AppState) -> Result<&tally_stripe::StripeHttp, ApiError> {
    state.stripe.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stripe_not_configured",
            "Stripe is not configured (TALLY_STRIPE_SECRET_KEY)",
        )
    })
}

/// The metadata Tally puts on a session and a subscription: the org and the tier.
fn tally_metadata(org_id: &str, tier: Tier) -> HashMap<String, String> {
    HashMap::from([
        (ORG_ID_KEY.to_string(), org_id.to_string()),
        (TIER_KEY.to_string(), tier.as_str().to_string()),
    ])
}

/// The first instant of the month after `now`, UTC: where Tally anchors Stripe's billing cycle.
pub fn next_month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) =
        if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().expect("the first of a month exists")
}

#[derive(Serialize)]
pub struct CheckoutCreated {
    url: String,
    session_id: String,
}

/// `POST /v1/orgs/{org_id}/checkout` `{"tier", "success_url", "cancel_url"}` (the org's billing
/// keys and plan-changing sessions, or the admin; never a read key): a Stripe Checkout Session for
/// the tier; answers 201 `{"url", "session_id"}`.
pub async fn checkout(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_biller(&state, &org_id).await?;
    let request: CheckoutRequest = parse_json(&body)?;
    let tier = parse_tier(&request.tier)?;
    require_http_url("success_url", &request.success_url)?;
    require_http_url("cancel_url", &request.cancel_url)?;
    let client = stripe_client(&state)?;

    // Checkouts of one org, one at a time: the org's row is locked until this one is recorded.
    let mut tx = state.db.org(&org_id).await?;
    tally_store::stripe::lock_org_for_checkout(&mut tx, &org_id).await?;
    let link = tally_store::stripe::customer_link(&mut tx, &org_id).await?;
    if link.as_ref().is_some_and(|l| l.subscription_status.as_deref().is_some_and(is_live)) {
        // A second subscription would bill the same usage twice (both would carry the metered
        // prices): a change of tier is an update of the subscription, in Stripe.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_subscribed",
            format!("org {org_id:?} has a live Stripe subscription; change its tier in Stripe (the customer portal) instead"),
        ));
    }
    // An earlier Checkout still open is expired first, in Stripe: of two Checkouts started at
    // once, only the later can complete, so they never make two subscriptions.
    if let Some(open) = tally_store::stripe::open_checkout_session(&mut tx, &org_id).await? {
        expire_open_session(client, &open).await?;
        tally_store::stripe::expire_checkout_session(&mut tx, &open).await?;
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
    let metadata = tally_metadata(&org_id, tier);
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
    if let Some(link) = link {
        create = create.customer(link.customer_id);
    }
    let session = create.send(client).await.map_err(stripe_error)?;
    let url = session.url.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "stripe_error",
            "Stripe returned a session without a url",
        )
    })?;
    // Recorded before the customer can complete it: the webhook acts only on sessions Tally
    // created. A failure here leaves a session Stripe has and Tally does not: the request fails,
    // and a completion of that session links nothing.
    tally_store::stripe::record_checkout_session(&mut tx, &session.id, &org_id, tier.as_str())
        .await?;
    tx.commit().await?;
    tracing::info!(org_id = %org_id, tier = %tier, session_id = %session.id, "checkout session created");
    Ok((StatusCode::CREATED, Json(CheckoutCreated { url, session_id: session.id.to_string() })))
}

/// Expires the org's open Checkout Session in Stripe. One that was completed meanwhile means the
/// org is subscribing: 409 `already_subscribed`. One that expired by itself is fine.
async fn expire_open_session(
    client: &tally_stripe::StripeHttp,
    session_id: &str,
) -> Result<(), ApiError> {
    let expired = ExpireCheckoutSession::new(session_id).send(client).await;
    if expired.is_ok() {
        return Ok(());
    }
    let session =
        RetrieveCheckoutSession::new(session_id).send(client).await.map_err(stripe_error)?;
    match session.status {
        Some(CheckoutSessionStatus::Expired) => Ok(()),
        Some(CheckoutSessionStatus::Complete) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_subscribed",
            "a Checkout of this org has just completed; its subscription is on its way",
        )),
        _ => Err(expired.map_err(stripe_error).err().unwrap_or_else(|| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "stripe_error",
                "Stripe did not expire the open Checkout Session",
            )
        })),
    }
}

/// The Stripe price ids of a tier's three prices (found by lookup key), each with whether it is
/// licensed (the base fee, quantity 1) rather than metered.
async fn tier_prices(
    state: &AppState,
    client: &tally_stripe::StripeHttp,
    tier: Tier,
) -> Result<Vec<(String, bool)>, ApiError> {
    let plan =
        plans(&state.pricing).into_iter().find(|p| p.tier == tier).expect("every tier has a plan");
    let keys: Vec<String> = plan.prices.iter().map(|p| p.lookup_key.clone()).collect();
    let found = ListPrice::new()
        .lookup_keys(keys)
        .active(true)
        .limit(10)
        .send(client)
        .await
        .map_err(stripe_error)?;
    plan.prices
        .iter()
        .map(|price| {
            let key = Some(price.lookup_key.as_str());
            let stripe_price =
                found.data.iter().find(|p| p.lookup_key.as_deref() == key).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "stripe_not_set_up",
                        format!(
                            "Stripe has no price {}: run `billing-reporter setup-stripe`",
                            price.lookup_key
                        ),
                    )
                })?;
            Ok((stripe_price.id.to_string(), matches!(price.kind, PriceKind::Licensed { .. })))
        })
        .collect()
}

/// What a price is for, whatever the tier: the base fee (`None`) or one metric's meter.
fn price_role(kind: &PriceKind) -> Option<tally_schemas::Metric> {
    match kind {
        PriceKind::Licensed { .. } => None,
        PriceKind::Metered { metric, .. } => Some(*metric),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanChangeRequest {
    tier: String,
}

#[derive(Serialize)]
pub struct PlanChangeRequested {
    org_id: String,
    tier: Tier,
    subscription_id: String,
}

/// `POST /v1/orgs/{org_id}/plan-changes` `{"tier"}` (the org's billing keys and plan-changing
/// sessions, or the admin; never a read key): moves the org's
/// live Stripe subscription onto the tier's prices, without proration; `202`. Stripe answers
/// with `customer.subscription.updated`, and the webhook records the tier in the billing log as
/// for any subscription change: Tally's tier follows Stripe's subscription, never the request.
pub async fn change_plan(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_biller(&state, &org_id).await?;
    let request: PlanChangeRequest = parse_json(&body)?;
    let tier = parse_tier(&request.tier)?;
    let client = stripe_client(&state)?;
    let link =
        tally_store::stripe::customer_link(&mut *state.db.org(&org_id).await?, &org_id).await?;
    let live_subscription = link
        .filter(|l| l.subscription_status.as_deref().is_some_and(is_live))
        .and_then(|l| l.subscription_id);
    let Some(subscription_id) = live_subscription else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_subscription",
            format!("org {org_id:?} has no live Stripe subscription; buy one through Checkout"),
        ));
    };
    let subscription = RetrieveSubscription::new(subscription_id.as_str())
        .send(client)
        .await
        .map_err(stripe_error)?;
    let plans = plans(&state.pricing);
    let current = subscription.items.data.iter().find_map(|item| {
        let key = item.price.lookup_key.as_deref();
        plans
            .iter()
            .find(|p| p.prices.iter().any(|x| Some(x.lookup_key.as_str()) == key))
            .map(|p| p.tier)
    });
    if current == Some(tier) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "same_tier",
            format!("the subscription is already on {tier}"),
        ));
    }
    // One update, each item keeping its id and taking the new tier's price of the same role
    // (the base fee, the traces meter, the payload meter), as Stripe's guide to changing prices
    // does: the meters' usage stays on the subscription. An item Tally does not know is left as
    // it is; a role with no item gets one.
    let new_prices = tier_prices(&state, client, tier).await?;
    let new_plan = plans.iter().find(|p| p.tier == tier).expect("every tier has a plan");
    let role_of = |lookup_key: Option<&str>| {
        plans
            .iter()
            .flat_map(|p| p.prices.iter())
            .find(|x| Some(x.lookup_key.as_str()) == lookup_key)
            .map(|x| price_role(&x.kind))
    };
    let mut items = Vec::new();
    let mut placed = vec![false; new_plan.prices.len()];
    for item in &subscription.items.data {
        let Some(item_role) = role_of(item.price.lookup_key.as_deref()) else {
            continue;
        };
        let Some(at) = new_plan.prices.iter().position(|x| price_role(&x.kind) == item_role) else {
            continue;
        };
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
    UpdateSubscription::new(subscription_id.as_str())
        .items(items)
        .metadata(tally_metadata(&org_id, tier))
        .proration_behavior(UpdateSubscriptionProrationBehavior::None)
        .send(client)
        .await
        .map_err(stripe_error)?;
    tracing::info!(org_id = %org_id, tier = %tier, subscription_id = %subscription_id, "plan change requested in Stripe");
    Ok((StatusCode::ACCEPTED, Json(PlanChangeRequested { org_id, tier, subscription_id })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_billing_cycle_is_anchored_to_the_next_first_of_a_month() {
        let at = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap();
        assert_eq!(
            next_month_start(at(2026, 11, 29)),
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            next_month_start(at(2026, 12, 1)),
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()
        );
    }
}
