//! The test controls under `/_standin/`, which real Stripe does not have (no API key; JSON
//! bodies): the request log, faults, the Checkout page and completing a session, billing and
//! paying invoices, the webhook endpoint and its deliveries.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::faults::Faults;
use crate::routes::unix_now;
use crate::server::StandIn;
use crate::store::{Reply, StripeError};
use crate::webhook::Endpoint;

/// A store answer over HTTP, with Stripe's error shape.
fn reply_response(reply: Reply) -> Response {
    match reply {
        Ok(v) => Json(v).into_response(),
        Err(e) => stripe_error_response(e),
    }
}

fn stripe_error_response(e: StripeError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(e.body())).into_response()
}

/// A control request refused, with `message`.
fn refused(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({"error": {"type": "invalid_request_error", "message": message.into()}});
    (status, Json(body)).into_response()
}

/// A JSON body that may be empty (then `T::default()`).
fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, serde_json::Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
}

/// `GET /_standin/requests`: every request answered, oldest first.
pub(crate) async fn requests(State(app): State<StandIn>) -> Json<Value> {
    Json(json!({ "requests": app.lock().log }))
}

pub(crate) async fn get_faults(State(app): State<StandIn>) -> Json<Faults> {
    Json(app.lock().faults.clone())
}

/// `POST /_standin/faults` `{"rate_429", "rate_500", "rate_slow", "slow_ms"}`.
pub(crate) async fn set_faults(State(app): State<StandIn>, Json(faults): Json<Faults>) -> Response {
    if !faults.shares_are_valid() {
        let body =
            json!({"error": {"message": "shares must be within 0..1 and add up to at most 1"}});
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
    }
    app.lock().faults = faults.clone();
    Json(faults).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckoutCompletionRequest {
    email: Option<String>,
}

/// `POST /_standin/checkout/sessions/{id}/complete` `{"email"}` (optional).
pub(crate) async fn complete_checkout(
    State(app): State<StandIn>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let completion: CheckoutCompletionRequest = match optional_json(&body) {
        Ok(c) => c,
        Err(e) => return refused(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    let mut shared = app.lock_mut();
    let reply =
        shared.store.complete_checkout_session(&id, completion.email.as_deref(), unix_now());
    app.dispatch(&mut shared);
    reply_response(reply)
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `GET /_standin/checkout/{id}`: the session's payment page.
pub(crate) async fn checkout_page(State(app): State<StandIn>, Path(id): Path<String>) -> Response {
    let session = match app.lock().store.find_checkout_session(&id) {
        Ok(s) => s.clone(),
        Err(e) => return stripe_error_response(e),
    };
    let email = session.customer_email.as_deref().unwrap_or("");
    let amount = session.amount_total.unwrap_or(0);
    let form = if session.status == "open" {
        format!(
            "<form method=\"post\"><label>Email <input name=\"email\" type=\"email\" \
             value=\"{}\"></label> <button type=\"submit\">Subscribe</button></form>",
            escape_html(email)
        )
    } else {
        format!("<p>This session is {}.</p>", escape_html(&session.status))
    };
    let currency = session.currency.as_deref().unwrap_or("usd").to_ascii_uppercase();
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Stripe stand-in checkout\
         </title></head><body><h1>Checkout (Stripe stand-in)</h1><p>Session <code>{}</code>, \
         reference <code>{}</code>: {}.{:02} {} due today, metered usage billed monthly.</p>\
         {form}</body></html>",
        escape_html(&id),
        escape_html(session.client_reference_id.as_deref().unwrap_or("")),
        amount / 100,
        amount % 100,
        escape_html(&currency),
    );
    Html(html).into_response()
}

/// `POST /_standin/checkout/{id}` (the page's form, `email=`): completes the session, then
/// redirects to its `success_url`.
pub(crate) async fn checkout_page_paid(
    State(app): State<StandIn>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let email = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "email")
        .map(|(_, v)| v.into_owned())
        .filter(|e| !e.is_empty());
    let completed = {
        let mut shared = app.lock_mut();
        let completed = shared.store.complete_checkout(&id, email.as_deref(), unix_now());
        app.dispatch(&mut shared);
        completed
    };
    match completed {
        Ok(done) => match done.session.success_url {
            Some(url) => Redirect::to(&url.replace("{CHECKOUT_SESSION_ID}", &id)).into_response(),
            None => Html("<!doctype html><p>Thanks: the subscription is active.</p>".to_string())
                .into_response(),
        },
        Err(e) => stripe_error_response(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InvoiceRequest {
    subscription: String,
    period_start: i64,
    period_end: i64,
}

/// `POST /_standin/invoices` `{"subscription", "period_start", "period_end"}`.
pub(crate) async fn create_invoice(
    State(app): State<StandIn>,
    Json(request): Json<InvoiceRequest>,
) -> Response {
    let mut shared = app.lock_mut();
    let reply = shared.store.create_subscription_invoice(
        &request.subscription,
        request.period_start,
        request.period_end,
        unix_now(),
    );
    app.dispatch(&mut shared);
    reply_response(reply)
}

/// `POST /_standin/invoices/{id}/pay`.
pub(crate) async fn pay_invoice(State(app): State<StandIn>, Path(id): Path<String>) -> Response {
    let mut shared = app.lock_mut();
    let reply = shared.store.pay_invoice(&id, unix_now());
    app.dispatch(&mut shared);
    reply_response(reply)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookSetting {
    url: String,
    secret: String,
}

/// `GET /_standin/webhook`: the endpoint's URL, never its secret.
pub(crate) async fn get_webhook(State(app): State<StandIn>) -> Json<Value> {
    Json(json!({"url": app.lock().webhook.as_ref().map(|w| w.url.clone())}))
}

/// `POST /_standin/webhook` `{"url", "secret"}`: events created from now on go there.
pub(crate) async fn set_webhook(
    State(app): State<StandIn>,
    Json(setting): Json<WebhookSetting>,
) -> Response {
    match Endpoint::new(&setting.url, &setting.secret) {
        Ok(endpoint) => {
            tracing::info!(url = %endpoint.url, "webhook endpoint set");
            let mut shared = app.lock_mut();
            shared.webhook = Some(endpoint);
            shared.webhook_set_at_run_time = true;
            Json(json!({"url": setting.url})).into_response()
        }
        Err(message) => refused(StatusCode::UNPROCESSABLE_ENTITY, message),
    }
}

/// `DELETE /_standin/webhook`: no more deliveries (those queued still go).
pub(crate) async fn delete_webhook(State(app): State<StandIn>) -> Json<Value> {
    let mut shared = app.lock_mut();
    shared.webhook = None;
    shared.webhook_set_at_run_time = true;
    Json(json!({"url": null}))
}

/// `GET /_standin/webhook/deliveries`: every delivery, oldest first.
pub(crate) async fn deliveries(State(app): State<StandIn>) -> Json<Value> {
    Json(json!({"deliveries": app.lock().deliveries}))
}

/// `POST /_standin/events/{id}/resend`: delivers the event again to the current endpoint.
pub(crate) async fn resend_event(State(app): State<StandIn>, Path(id): Path<String>) -> Response {
    let mut shared = app.lock_mut();
    let event = match shared.store.find_event(&id) {
        Ok(e) => e.clone(),
        Err(e) => return stripe_error_response(e),
    };
    let Some(endpoint) = shared.webhook.clone() else {
        return refused(
            StatusCode::BAD_REQUEST,
            "no webhook endpoint is set (POST /_standin/webhook)",
        );
    };
    let delivery = app.deliver(&mut shared, &event, endpoint, true);
    Json(json!({"event_id": id, "delivery": delivery})).into_response()
}
