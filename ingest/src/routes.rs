//! The two front doors of ingest: `POST /v1/events` (Tally's own events) and `POST /v1/traces`
//! (OTLP/HTTP). Each reads its format with its decoder; everything between the body and the
//! answer (the key, the limits, validation, metering, the org registry, the log) is shared.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use crate::accept::{accept, Candidate, Outcome};
use crate::admit::{admit, Admitted};
use crate::metrics;
use crate::otlp::{self, Encoding, PartialSuccess, RpcStatus};
use crate::publish::Publisher;
use crate::registry::{Grant, Registry};
use crate::request::{authorize, content_type, read_body, BodyError, RequestError};
use crate::settings::Settings;
use tally_formats::Decoded;

pub struct AppState {
    pub settings: Settings,
    pub registry: Registry,
    pub publisher: Publisher,
    /// Requests per key ([`tally_common::rate`]).
    pub rates: Arc<tally_common::rate::KeyRates>,
}

pub const EVENTS_PATH: &str = "/v1/events";
pub const TRACES_PATH: &str = "/v1/traces";

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(EVENTS_PATH, post(post_events))
        .route(TRACES_PATH, post(post_traces))
        .with_state(state)
}

/// The steps both doors share once the body is decoded: one arrival time for the whole request
/// (the time ingest accepted it), each item checked, then admitted to the log.
async fn check_and_admit(
    state: &AppState,
    grant: &Grant,
    items: Vec<Decoded>,
) -> Result<(Vec<Candidate>, Admitted), RequestError> {
    let arrival = chrono::Utc::now();
    let mut candidates: Vec<Candidate> = items.into_iter().map(|i| accept(i, arrival)).collect();
    let admitted =
        admit(&state.registry, grant, &state.publisher, &mut candidates, arrival).await?;
    Ok((candidates, admitted))
}

fn finish(path: &'static str, started: Instant, response: Response) -> Response {
    metrics::REQUESTS.with_label_values(&[path, response.status().as_str()]).inc();
    metrics::REQUEST_SECONDS.with_label_values(&[path]).observe(started.elapsed().as_secs_f64());
    response
}

fn with_retry_after(mut response: Response, error: &RequestError) -> Response {
    if let Some(secs) = error.retry_after() {
        response.headers_mut().insert(header::RETRY_AFTER, secs.into());
    }
    response
}

// ---- POST /v1/events ----

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

async fn post_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let response = match events(&state, &headers, body).await {
        Ok(response) => response,
        Err(error) => {
            error.log();
            let body = json!({"error": {"code": error.code(), "message": error.to_string()}});
            with_retry_after((error.status(), Json(body)).into_response(), &error)
        }
    };
    finish(EVENTS_PATH, started, response)
}

#[tracing::instrument(name = "request", skip_all, fields(path = EVENTS_PATH))]
async fn events(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RequestError> {
    let grant = authorize(&state.registry, &state.rates, headers).await?;
    let bytes = read_body(headers, body, &state.settings).await?;
    let content_type = content_type(headers);
    let ndjson = content_type == "application/x-ndjson" || content_type == "application/ndjson";
    let items = tally_formats::native::decode(&bytes, ndjson, state.settings.max_events)
        .map_err(BodyError::from)?;
    let (candidates, admitted) = check_and_admit(state, &grant, items).await?;
    let results: Vec<EventResult<'_>> = candidates
        .iter()
        .map(|c| match &c.outcome {
            Outcome::Accepted(record) => {
                EventResult { event_id: Some(&record.event_id), status: "accepted", error: None }
            }
            Outcome::Rejected(e) => EventResult {
                event_id: c.event_id.as_deref(),
                status: "rejected",
                error: Some(ErrorBody { code: e.code.as_str(), message: &e.message }),
            },
            // Tally's own events always name their operation.
            Outcome::Unmapped => {
                EventResult { event_id: c.event_id.as_deref(), status: "not_metered", error: None }
            }
        })
        .collect();
    let response = BatchResponse {
        accepted: admitted.accepted,
        rejected: results.len() - admitted.accepted,
        results,
    };
    Ok((StatusCode::OK, Json(response)).into_response())
}

// ---- POST /v1/traces ----

async fn post_traces(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    // The answer's encoding is the request's; a request of another content type is answered in
    // JSON, which every client can show.
    let encoding = Encoding::from_content_type(&content_type(&headers));
    let response = match traces(&state, &headers, body, encoding).await {
        Ok(response) => response,
        Err(error) => {
            error.log();
            let status = RpcStatus {
                code: otlp::rpc_code(error.status().as_u16()),
                message: format!("{}: {error}", error.code()),
            };
            let response = match encoding.unwrap_or(Encoding::Json) {
                Encoding::Protobuf => {
                    otlp_body(Encoding::Protobuf, prost::Message::encode_to_vec(&status))
                }
                Encoding::Json => {
                    // google.rpc.Status's fields, and Tally's error body beside them.
                    let body = json!({
                        "code": status.code,
                        "message": status.message,
                        "error": {"code": error.code(), "message": error.to_string()},
                    });
                    Json(body).into_response()
                }
            };
            let mut response = with_retry_after(response, &error);
            *response.status_mut() = error.status();
            response
        }
    };
    finish(TRACES_PATH, started, response)
}

fn otlp_body(encoding: Encoding, bytes: Vec<u8>) -> Response {
    let mut response = bytes.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(encoding.content_type()));
    response
}

#[tracing::instrument(name = "request", skip_all, fields(path = TRACES_PATH))]
async fn traces(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    encoding: Option<Encoding>,
) -> Result<Response, RequestError> {
    let grant = authorize(&state.registry, &state.rates, headers).await?;
    let encoding =
        encoding.ok_or_else(|| BodyError::UnsupportedContentType(content_type(headers)))?;
    let bytes = read_body(headers, body, &state.settings).await?;
    let items = tally_formats::otlp::decode(&bytes, encoding, state.settings.max_events)
        .map_err(BodyError::from)?;
    let (candidates, admitted) = check_and_admit(state, &grant, items).await?;
    let not_metered = PartialSuccess::of(&candidates, admitted);
    let answer = otlp::encode_response(&not_metered.response(), encoding);
    Ok(otlp_body(encoding, answer))
}
