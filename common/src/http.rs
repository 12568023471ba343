//! Every listener of Tally, and the limits it holds each client to (docs/security.md):
//!
//! - **headers**: a client that has not sent a request's whole header within
//!   `TALLY_HTTP_HEADER_TIMEOUT_MS` is disconnected (hyper's header-read timeout; it also ends
//!   keep-alive connections that sit idle that long);
//! - **concurrency**: at most `TALLY_HTTP_MAX_CONCURRENT` requests are served at once; one more is
//!   answered 503 `overloaded` with `Retry-After: 1` at once, never queued;
//! - **body**: where the listener buffers bodies ([`Limits::buffer_body`]), a body must arrive in
//!   full within `TALLY_HTTP_BODY_TIMEOUT_MS` (else 408 `request_timeout`) and within the
//!   listener's size (else 413 `body_too_large`); ingest reads its own bodies within the same
//!   deadline and its own limits;
//! - **the whole request**: a request not answered within `TALLY_HTTP_REQUEST_TIMEOUT_MS` is
//!   answered 503 `timeout` with `Retry-After: 1`.
//!
//! Refusals are JSON `{"error": {"code", "message"}}` and are counted in
//! `tally_http_refused_total{reason}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use crate::settings::{var_or, SettingError};
use crate::shutdown::Shutdown;

/// What one listener holds its clients to.
#[derive(Clone, Debug)]
pub struct Limits {
    pub header_read: Duration,
    pub body_read: Duration,
    pub request: Duration,
    pub max_concurrent: usize,
    /// Buffer each body (at most this many bytes) before the handler runs, within `body_read`.
    /// `None` where the handlers read bodies themselves (ingest).
    pub buffer_body: Option<usize>,
}

impl Limits {
    /// The limits every listener shares, from `TALLY_HTTP_*`; bodies not buffered.
    pub fn from_env() -> Result<Limits, SettingError> {
        let ms = |name: &'static str, default: &str| -> Result<Duration, SettingError> {
            let ms: u64 = var_or(name, default)?;
            if ms == 0 {
                return Err(SettingError { name, message: "must be at least 1 (ms)".into() });
            }
            Ok(Duration::from_millis(ms))
        };
        let max_concurrent: usize = var_or("TALLY_HTTP_MAX_CONCURRENT", "256")?;
        if max_concurrent == 0 {
            return Err(SettingError {
                name: "TALLY_HTTP_MAX_CONCURRENT",
                message: "must be at least 1".into(),
            });
        }
        Ok(Limits {
            header_read: ms("TALLY_HTTP_HEADER_TIMEOUT_MS", "10000")?,
            body_read: ms("TALLY_HTTP_BODY_TIMEOUT_MS", "30000")?,
            request: ms("TALLY_HTTP_REQUEST_TIMEOUT_MS", "60000")?,
            max_concurrent,
            buffer_body: None,
        })
    }

    /// The same limits, buffering bodies of at most `max_bytes`.
    pub fn buffering(&self, max_bytes: usize) -> Limits {
        Limits { buffer_body: Some(max_bytes), ..self.clone() }
    }
}

static REFUSED: std::sync::LazyLock<prometheus::IntCounterVec> = std::sync::LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "tally_http_refused_total",
        "Requests a listener refused for its limits, by reason (overloaded, body_timeout, \
         body_too_large, invalid_body, timeout)",
        &["reason"]
    )
    .expect("registers once")
});

/// A refusal in Tally's error shape.
pub fn refusal(status: StatusCode, code: &'static str, message: String) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

struct Guard {
    limits: Limits,
    slots: Arc<Semaphore>,
}

async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let Ok(_slot) = guard.slots.clone().try_acquire_owned() else {
        REFUSED.with_label_values(&["overloaded"]).inc();
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!("more than {} requests at once; retry", guard.limits.max_concurrent),
        );
    };
    let limits = &guard.limits;
    let request = match limits.buffer_body {
        None => request,
        Some(max) => {
            let (parts, body) = request.into_parts();
            match read_within(body, max, limits.body_read).await {
                Ok(bytes) => Request::from_parts(parts, Body::from(bytes)),
                Err(response) => return response,
            }
        }
    };
    match tokio::time::timeout(limits.request, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            REFUSED.with_label_values(&["timeout"]).inc();
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("not answered within {} ms; retry", limits.request.as_millis()),
            )
        }
    }
}

/// Reads a whole body, at most `max` bytes, within `deadline`.
async fn read_within(body: Body, max: usize, deadline: Duration) -> Result<Bytes, Response> {
    let limited = http_body_util::Limited::new(body, max);
    match tokio::time::timeout(deadline, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            REFUSED.with_label_values(&["body_too_large"]).inc();
            Err(refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body exceeds {max} bytes"),
            ))
        }
        Ok(Err(_)) => {
            REFUSED.with_label_values(&["invalid_body"]).inc();
            Err(refusal(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "the body could not be read".to_string(),
            ))
        }
        Err(_) => {
            REFUSED.with_label_values(&["body_timeout"]).inc();
            Err(refusal(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the body did not arrive within {} ms", deadline.as_millis()),
            ))
        }
    }
}

/// Binds `addr` (failing at start with a clear error) and serves `router` within `limits` until
/// shutdown; then lets the requests in progress finish, for at most 10 s.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    limits: Limits,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, "listening");
    // Exposed at 0 from the start, as a counter should be.
    for reason in ["overloaded", "body_timeout", "body_too_large", "invalid_body", "timeout"] {
        REFUSED.with_label_values(&[reason]);
    }
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read);
    let slots = Arc::new(Semaphore::new(limits.max_concurrent));
    let router = router
        .layer(axum::middleware::from_fn_with_state(Arc::new(Guard { limits, slots }), guard));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(shutdown.requested());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {}
    }
    Ok(())
}
