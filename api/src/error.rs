//! The api's one error type: a status and `{"error": {"code", "message"}}` with a stable code;
//! and the parsing of a request's parts (a JSON body, a tier, a period) into that error.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tally_metering::Period;
use tally_schemas::Tier;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    /// 429: the caller is over its request rate.
    pub fn rate_limited(secs: u64) -> Self {
        ApiError {
            retry_after: Some(secs),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("over the request rate; retry after {secs} s"),
            )
        }
    }

    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <token or key>`",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid_field(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database error");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database is unavailable; retry",
        )
    }
}

/// The body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize)]
struct ErrorDetail {
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message } };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// Decodes a JSON request body into `T`, with our error shape (400 for bad JSON, 422 for a
/// well-formed body that breaks the schema).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let message = e.to_string();
        if e.is_syntax() || e.is_eof() {
            ApiError::bad_request("invalid_json", message)
        } else {
            ApiError::invalid_field(message)
        }
    })
}

/// A tier named in a request, or 422 `invalid_tier`.
pub fn parse_tier(name: &str) -> Result<Tier, ApiError> {
    name.parse().map_err(|e: tally_schemas::billing::UnknownTier| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_tier", e.to_string())
    })
}

/// A period named in a request (`YYYY-MM`), or 400 `invalid_period`.
pub fn parse_period(raw: &str) -> Result<Period, ApiError> {
    raw.parse().map_err(|e: tally_metering::period::ParsePeriodError| {
        ApiError::bad_request("invalid_period", e.to_string())
    })
}
