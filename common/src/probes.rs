//! `/healthz`, `/readyz` and `/metrics`, served by every service on its own address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::shutdown::Shutdown;

/// Whether the service is ready for work (connected, state loaded). Shared with the probe.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The probe routes, to merge into a service's router or serve alone.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route(
            "/readyz",
            get(move || {
                let ready = readiness.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
        .route("/metrics", get(metrics))
}

async fn metrics() -> impl IntoResponse {
    let encoder = prometheus::TextEncoder::new();
    let body = encoder.encode_to_string(&prometheus::gather()).unwrap_or_default();
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body)
}

/// Binds `addr` (failing at start with a clear error) and serves `router` until shutdown.
pub async fn serve(addr: SocketAddr, router: Router, shutdown: Shutdown) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, router).with_graceful_shutdown(shutdown.requested()).await?;
    Ok(())
}
