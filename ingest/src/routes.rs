//! `POST /v1/events`: the HTTP edge of ingest.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use tally_common::keys;
use tally_schemas::{FieldError, FieldErrorCode};

use crate::accept::{decode_element, Candidate};
use crate::body::{gunzip_limited, split, BodyError};
use crate::metrics;
use crate::publish::{PublishError, Publisher};
use crate::registry::Registry;
use crate::settings::Settings;

pub struct AppState {
    pub settings: Settings,
    pub registry: Registry,
    pub publisher: Publisher,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new().route("/v1/events", post(ingest_events)).with_state(state)
}

/// A request-level failure: a status and `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        let (status, code) = match &e {
            BodyError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            BodyError::TooManyEvents { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_events"),
            BodyError::BadGzip(_) => (StatusCode::BAD_REQUEST, "invalid_gzip"),
            BodyError::NotJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            BodyError::Empty => (StatusCode::BAD_REQUEST, "empty_body"),
            BodyError::UnsupportedEncoding(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::REQUESTS.with_label_values(&[self.status.as_str()]).inc();
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
        response
    }
}

#[derive(Serialize)]
struct EventResult<'a> {
    event_id: Option<&'a str>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody<'a>>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct BatchResponse<'a> {
    accepted: usize,
    rejected: usize,
    results: Vec<EventResult<'a>>,
}

async fn ingest_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let result = handle(&state, &headers, body).await;
    metrics::REQUEST_SECONDS.observe(started.elapsed().as_secs_f64());
    result
}

#[tracing::instrument(name = "request", skip_all, fields(path = "/v1/events"))]
async fn handle(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(key) = keys::bearer(auth) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send an ingest key as `Authorization: Bearer <key>`",
        ));
    };
    if !state.registry.is_ingest_key(&keys::hash(key)).await {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown or revoked ingest key",
        ));
    }

    let limit = state.settings.max_body_bytes;
    let raw =
        to_bytes(body, limit).await.map_err(|_| ApiError::from(BodyError::TooLarge { limit }))?;
    let encoding =
        headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("");
    let decoded;
    let bytes: &[u8] = match encoding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => &raw,
        "gzip" | "x-gzip" => {
            decoded = gunzip_limited(&raw, limit)?;
            &decoded
        }
        other => return Err(BodyError::UnsupportedEncoding(other.to_string()).into()),
    };
    let ndjson =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
            ct.starts_with("application/x-ndjson") || ct.starts_with("application/ndjson")
        });
    let elements = split(bytes, ndjson, state.settings.max_events)?;

    // One arrival time for the whole request: the time ingest accepted it.
    let arrival = chrono::Utc::now();
    let mut candidates: Vec<Candidate> =
        elements.into_iter().map(|e| decode_element(e, arrival)).collect();

    let unknown = state
        .registry
        .unknown_orgs(
            candidates.iter().filter_map(|c| c.outcome.as_ref().ok()).map(|r| r.org_id.as_str()),
        )
        .await;
    for candidate in candidates.iter_mut().filter(|_| !unknown.is_empty()) {
        if let Ok(record) = &candidate.outcome {
            if unknown.contains(&record.org_id) {
                candidate.outcome = Err(FieldError::new(
                    FieldErrorCode::UnknownOrg,
                    format!("org_id: no org {:?}", record.org_id),
                ));
            }
        }
    }

    let accepted: Vec<_> = candidates.iter().filter_map(|c| c.outcome.as_ref().ok()).collect();
    if !accepted.is_empty() {
        if let Err(e) = state.publisher.publish_all(&accepted, arrival.timestamp_millis()).await {
            tracing::warn!(error = %e, events = accepted.len(), "could not write to kafka");
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("events were not accepted, retry with the same event ids: {e}"),
            );
            err.retry_after = Some(match e {
                PublishError::QueueFull => 1,
                _ => 5,
            });
            return Err(err);
        }
    }

    let accepted_count = accepted.len();
    metrics::EVENTS.with_label_values(&["accepted"]).inc_by(accepted_count as u64);
    metrics::PAYLOAD_BYTES.inc_by(accepted.iter().map(|r| r.payload_bytes).sum());
    let results: Vec<EventResult<'_>> = candidates
        .iter()
        .map(|c| match &c.outcome {
            Ok(record) => {
                EventResult { event_id: Some(&record.event_id), status: "accepted", error: None }
            }
            Err(e) => {
                metrics::EVENTS.with_label_values(&[e.code.as_str()]).inc();
                EventResult {
                    event_id: c.event_id.as_deref(),
                    status: "rejected",
                    error: Some(ErrorBody { code: e.code.as_str(), message: &e.message }),
                }
            }
        })
        .collect();
    let response = BatchResponse {
        accepted: accepted_count,
        rejected: results.len() - accepted_count,
        results,
    };
    metrics::REQUESTS.with_label_values(&["200"]).inc();
    Ok((StatusCode::OK, Json(response)).into_response())
}
