//! Stripe's API routes: method and path to the store call, each request's parameters checked
//! against those Stripe's OpenAPI description lists for the path template.

use axum::http::Method;
use serde_json::Value;

use crate::spec;
use crate::store::{Store, StripeError};

/// Now, in unix seconds.
pub(crate) fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
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

/// Routes one request to the store, checking its parameters against the path template's.
/// `base` is the stand-in's own URL as the client reached it (for Checkout pages).
#[rustfmt::skip]
pub(crate) fn route(store: &mut Store, method: &Method, segments: &[&str], params: &Value, base: &str) -> Result<Value, StripeError> {
    let t = unix_now();
    let check = |template: &str| check_params(method, template, params);
    match (method.as_str(), segments) {
        ("POST", ["v1", "customers"]) => { check("/v1/customers")?; store.create_customer(params, t) }
        ("GET", ["v1", "customers"]) => { check("/v1/customers")?; store.list_customers(params) }
        ("GET", ["v1", "customers", id]) => { check("/v1/customers/{customer}")?; store.customer(id) }
        ("POST", ["v1", "customers", id]) => { check("/v1/customers/{customer}")?; store.update_customer(id, params) }
        ("POST", ["v1", "products"]) => { check("/v1/products")?; store.create_product(params, t) }
        ("GET", ["v1", "products"]) => { check("/v1/products")?; store.list_products(params) }
        ("GET", ["v1", "products", id]) => store.product(id),
        ("POST", ["v1", "prices"]) => { check("/v1/prices")?; store.create_price(params, t) }
        ("GET", ["v1", "prices"]) => { check("/v1/prices")?; store.list_prices(params) }
        ("GET", ["v1", "prices", id]) => store.price(id, params),
        ("POST", ["v1", "billing", "meters"]) => { check("/v1/billing/meters")?; store.create_meter(params, t) }
        ("GET", ["v1", "billing", "meters"]) => { check("/v1/billing/meters")?; store.list_meters(params) }
        ("GET", ["v1", "billing", "meters", id]) => { check("/v1/billing/meters/{id}")?; store.meter(id) }
        ("GET", ["v1", "billing", "meters", id, "event_summaries"]) => {
            check("/v1/billing/meters/{id}/event_summaries")?;
            store.meter_event_summaries(id, params)
        }
        ("POST", ["v1", "billing", "meter_events"]) => { check("/v1/billing/meter_events")?; store.create_meter_event(params, t) }
        ("POST", ["v1", "billing", "meter_event_adjustments"]) => {
            check("/v1/billing/meter_event_adjustments")?;
            store.create_meter_event_adjustment(params, t)
        }
        ("POST", ["v1", "checkout", "sessions"]) => { check("/v1/checkout/sessions")?; store.create_checkout_session(params, t, base) }
        ("GET", ["v1", "checkout", "sessions"]) => { check("/v1/checkout/sessions")?; store.list_checkout_sessions(params) }
        ("GET", ["v1", "checkout", "sessions", id]) => { check("/v1/checkout/sessions/{session}")?; store.checkout_session(id) }
        ("POST", ["v1", "checkout", "sessions", id, "expire"]) => {
            check("/v1/checkout/sessions/{session}/expire")?;
            store.expire_checkout_session(id, t)
        }
        ("GET", ["v1", "subscriptions"]) => { check("/v1/subscriptions")?; store.list_subscriptions(params) }
        ("GET", ["v1", "subscriptions", id]) => { check("/v1/subscriptions/{subscription_exposed_id}")?; store.subscription(id) }
        ("POST", ["v1", "subscriptions", id]) => {
            check("/v1/subscriptions/{subscription_exposed_id}")?;
            store.update_subscription(id, params, t)
        }
        ("DELETE", ["v1", "subscriptions", id]) => {
            check("/v1/subscriptions/{subscription_exposed_id}")?;
            store.cancel_subscription(id, params, t)
        }
        ("GET", ["v1", "events"]) => { check("/v1/events")?; store.list_events(params) }
        ("GET", ["v1", "events", id]) => { check("/v1/events/{id}")?; store.event(id) }
        ("GET", ["v1", "invoices"]) => { check("/v1/invoices")?; store.list_invoices(params) }
        ("GET", ["v1", "invoices", id]) => { check("/v1/invoices/{invoice}")?; store.invoice(id) }
        _ => Err(StripeError {
            status: 404,
            kind: "invalid_request_error",
            code: None,
            param: None,
            message: format!("Unrecognized request URL ({method}: /{}).", segments.join("/")),
        }),
    }
}
