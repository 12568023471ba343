//! What both front doors share at the edge: the ingest key, the body read within its limits, and
//! the closed set of reasons a whole request is refused.

use std::sync::Arc;

use axum::body::{to_bytes, Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use tally_common::keys;
use tally_formats::gzip::{gunzip_limited, GzipError};
use tally_formats::FormatError;

use crate::publish::PublishError;
use crate::registry::{Grant, Registry};
use crate::settings::Settings;
use tally_common::rate::KeyRates;

/// Why a whole request was refused. Each door renders it in its own format (a JSON error body
/// for `/v1/events`, a `google.rpc.Status` for `/v1/traces`), with the same status and code.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("send an ingest key as `Authorization: Bearer <key>`")]
    MissingKey,
    #[error("unknown or revoked ingest key")]
    UnknownKey,
    #[error(transparent)]
    Body(#[from] BodyError),
    /// The key sent more requests than its rate allows; retry after this many seconds.
    #[error("this key is over its request rate; retry after {0} s")]
    RateLimited(u64),
    /// Kafka did not take the events: none of them is accepted. What Kafka said is logged, not
    /// answered: it is about Tally's insides, not about the request.
    #[error("the events were not accepted (the event log is unavailable); retry with the same event ids")]
    Unavailable(#[from] PublishError),
}

impl RequestError {
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::MissingKey | RequestError::UnknownKey => StatusCode::UNAUTHORIZED,
            RequestError::Body(e) => e.status(),
            RequestError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            RequestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable code of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::MissingKey | RequestError::UnknownKey => "unauthorized",
            RequestError::Body(e) => e.code(),
            RequestError::RateLimited(_) => "rate_limited",
            RequestError::Unavailable(_) => "unavailable",
        }
    }

    /// Seconds for `Retry-After`, when retrying later can succeed.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            RequestError::Unavailable(PublishError::QueueFull) => Some(1),
            RequestError::Unavailable(_) => Some(5),
            RequestError::RateLimited(secs) => Some(u32::try_from(*secs).unwrap_or(u32::MAX)),
            _ => None,
        }
    }

    /// Logs what the answer leaves out.
    pub fn log(&self) {
        if let RequestError::Unavailable(e) = self {
            tracing::warn!(error = %e, "a request's events were not accepted");
        }
    }
}

/// Why a body was refused: its transport (size, encoding, type), or its format.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("the body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body did not arrive within {ms} ms")]
    Timeout { ms: u128 },
    #[error("the body is not valid gzip: {0}")]
    BadGzip(String),
    #[error("unsupported Content-Encoding {0:?}; use gzip or none")]
    UnsupportedEncoding(String),
    #[error("unsupported Content-Type {0:?}; use application/x-protobuf or application/json")]
    UnsupportedContentType(String),
    #[error(transparent)]
    Format(#[from] FormatError),
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } | BodyError::Format(FormatError::TooManyEvents { .. }) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            BodyError::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
            BodyError::BadGzip(_) | BodyError::Format(_) => StatusCode::BAD_REQUEST,
            BodyError::UnsupportedEncoding(_) | BodyError::UnsupportedContentType(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            BodyError::TooLarge { .. } => "body_too_large",
            BodyError::Timeout { .. } => "request_timeout",
            BodyError::BadGzip(_) => "invalid_gzip",
            BodyError::UnsupportedEncoding(_) => "unsupported_encoding",
            BodyError::UnsupportedContentType(_) => "unsupported_content_type",
            BodyError::Format(FormatError::TooManyEvents { .. }) => "too_many_events",
            BodyError::Format(FormatError::NotJson(_)) => "invalid_json",
            BodyError::Format(FormatError::NotOtlp(_)) => "invalid_otlp",
            BodyError::Format(FormatError::Empty) => "empty_body",
        }
    }
}

/// Checks the key of `Authorization: Bearer <key>`: a live key that sends (an org's ingest key
/// or a service key), within its request rate (before its body is read). Answers what it may
/// send for.
pub async fn authorize(
    registry: &Registry,
    rates: &KeyRates,
    headers: &HeaderMap,
) -> Result<Arc<Grant>, RequestError> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let key = keys::bearer(auth).ok_or(RequestError::MissingKey)?;
    let grant = registry.sending_key(&keys::hash(key)).await.ok_or(RequestError::UnknownKey)?;
    rates.check(&grant.key_id).map_err(RequestError::RateLimited)?;
    Ok(grant)
}

/// The request's `Content-Type` without its parameters, lower-cased ("" when there is none).
pub fn content_type(headers: &HeaderMap) -> String {
    let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    value.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Reads the body, at most `TALLY_INGEST_MAX_BODY_BYTES` within the listener's body deadline,
/// and undoes its `Content-Encoding` (gzip or none) within the same limit.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    settings: &Settings,
) -> Result<Bytes, BodyError> {
    let (limit, deadline) = (settings.max_body_bytes, settings.common.http.body_read);
    let raw = tokio::time::timeout(deadline, to_bytes(body, limit))
        .await
        .map_err(|_| BodyError::Timeout { ms: deadline.as_millis() })?
        .map_err(|_| BodyError::TooLarge { limit })?;
    let encoding =
        headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("");
    match encoding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(raw),
        "gzip" | "x-gzip" => gunzip_limited(&raw, limit).map(Bytes::from).map_err(|e| match e {
            GzipError::TooLarge { limit } => BodyError::TooLarge { limit },
            GzipError::Invalid(message) => BodyError::BadGzip(message),
        }),
        other => Err(BodyError::UnsupportedEncoding(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    #[test]
    fn a_gzip_bomb_is_cut_off_at_the_limit() {
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![b' '; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&zeros).unwrap();
        }
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 200_000);
        assert_eq!(gunzip_limited(&bomb, 1 << 20), Err(GzipError::TooLarge { limit: 1 << 20 }));
        assert!(matches!(gunzip_limited(b"not gzip", 100), Err(GzipError::Invalid(_))));
    }

    #[test]
    fn content_types_lose_their_parameters() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_type(&headers), "");
        headers.insert(header::CONTENT_TYPE, "Application/JSON; charset=utf-8".parse().unwrap());
        assert_eq!(content_type(&headers), "application/json");
    }
}
