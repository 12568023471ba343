//! Every metric the api exports, declared once. The route label is the matched route pattern
//! (`/v1/orgs/{org_id}/usage`), never the path, so org ids never become label values.

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, HistogramVec,
    IntCounterVec, IntGauge,
};

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_api_requests_total",
        "Requests, by route and status.",
        &["route", "status"]
    )
    .expect("metric registers")
});

pub static REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "tally_api_request_duration_seconds",
        "Time to answer a request, by route.",
        &["route"],
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]
    )
    .expect("metric registers")
});

/// Counts and times every request, and runs it in a span with its method, route pattern and,
/// when the route names one, org id (never a header, a query or a body: they may carry secrets).
#[tracing::instrument(
    name = "request",
    skip_all,
    fields(method = %request.method(), route = tracing::field::Empty, org_id = tracing::field::Empty)
)]
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let span = tracing::Span::current();
    span.record("route", route.as_str());
    if let Some(org_id) = org_id_of(&route, request.uri().path()) {
        span.record("org_id", org_id);
    }
    let started = Instant::now();
    let response = next.run(request).await;
    REQUEST_SECONDS.with_label_values(&[&route]).observe(started.elapsed().as_secs_f64());
    REQUESTS.with_label_values(&[&route, response.status().as_str()]).inc();
    response
}

/// The segment of `path` where `route` has `{org_id}`.
fn org_id_of<'p>(route: &str, path: &'p str) -> Option<&'p str> {
    let at = route.split('/').position(|segment| segment == "{org_id}")?;
    path.split('/').nth(at).filter(|s| !s.is_empty())
}

/// Stripe webhooks received, by result: `accepted` (stored for processing), `redelivered` (an
/// event already stored; nothing changes), `refused` (bad signature; 400, nothing stored).
pub static WEBHOOKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_api_stripe_webhooks_total",
        "Stripe webhook deliveries, by result.",
        &["result"]
    )
    .expect("metric registers")
});

/// Stripe events processed, by outcome (`WebhookOutcome`: `linked`, `tier_recorded`,
/// `invoice_stored`, `superseded`, `unknown_org`, `other_subscription`, `ignored`; `failed`: an
/// attempt that will be retried).
pub static WEBHOOK_OUTCOMES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_api_stripe_events_processed_total",
        "Stripe events processed, by outcome.",
        &["outcome"]
    )
    .expect("metric registers")
});

/// Stripe events the webhook sweeper gave up on after its attempts: each needs an operator
/// (`GET /v1/stripe/webhook-events/failed`, then `POST .../retry`). Alert when above 0.
pub static WEBHOOK_EVENTS_FAILED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_api_stripe_events_failed",
        "Stripe events not processed after every attempt; they wait for an operator to retry them."
    )
    .expect("metric registers")
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_org_id_is_read_where_the_route_names_it() {
        assert_eq!(org_id_of("/v1/orgs/{org_id}/usage", "/v1/orgs/acme/usage"), Some("acme"));
        assert_eq!(
            org_id_of("/v1/orgs/{org_id}/invoices/{period}", "/v1/orgs/a-b/invoices/2026-01"),
            Some("a-b")
        );
        assert_eq!(org_id_of("/v1/orgs", "/v1/orgs"), None);
        assert_eq!(org_id_of("/v1/stripe/webhooks", "/v1/stripe/webhooks"), None);
    }
}
