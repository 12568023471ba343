//! `/healthz`, `/readyz` and `/metrics`, served by every service on its own address.

use std::net::SocketAddr;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::health::Health;
use crate::shutdown::Shutdown;

/// The probe routes, to merge into a service's router or serve alone. `/readyz` answers 200 while
/// `health` judges the stage ready and 503 with the reason otherwise; `/metrics` refreshes the
/// stage's health gauges before it answers.
pub fn router(health: Health) -> Router {
    let ready = health.clone();
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route(
            "/readyz",
            get(move || {
                let verdict = ready.verdict();
                async move {
                    match verdict {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(reason) => {
                            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n"))
                        }
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let _ = health.verdict();
                metrics()
            }),
        )
}

async fn metrics() -> impl IntoResponse {
    let encoder = prometheus::TextEncoder::new();
    let body = encoder.encode_to_string(&prometheus::gather()).unwrap_or_default();
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body)
}

/// Binds `addr` (failing at start with a clear error) and serves `router` within `limits`
/// ([`crate::http`]) until shutdown.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    limits: crate::http::Limits,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    crate::http::serve(addr, router, limits, shutdown).await
}

/// The body limit of a listener that serves only the probes: they take no body.
pub const PROBE_BODY_BYTES: usize = 64 << 10;
