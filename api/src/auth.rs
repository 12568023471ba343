//! Who is calling: the admin (the `TALLY_ADMIN_TOKEN`) or an org's read key.

use axum::http::{header, HeaderMap};
use tally_common::keys;

use crate::error::ApiError;
use crate::AppState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    /// A read key; sees only its own org.
    Reader { org_id: String },
    /// An ingest key: it sends events, it reads nothing.
    Ingester,
}

pub async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let token = keys::bearer(header).ok_or_else(ApiError::unauthorized)?;
    if keys::constant_time_eq(token.as_bytes(), state.settings.admin_token.expose().as_bytes()) {
        return Ok(Caller::Admin);
    }
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT org_id, scope FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(keys::hash(token))
    .fetch_optional(&state.pool)
    .await?;
    match row {
        Some((org_id, scope)) if scope == "read" => Ok(Caller::Reader { org_id }),
        Some(_) => Ok(Caller::Ingester),
        None => Err(ApiError::new(axum::http::StatusCode::UNAUTHORIZED, "unauthorized", "unknown or revoked key")),
    }
}

pub async fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match caller(state, headers).await? {
        Caller::Admin => Ok(()),
        _ => Err(ApiError::forbidden("this endpoint needs the admin token")),
    }
}

/// Allows the admin and `org_id`'s read keys, for an org that exists. Another org's key gets 404,
/// as if the org did not exist, so keys cannot probe which orgs exist. (A read key's own org
/// always exists: keys reference their org.)
pub async fn require_reader(state: &AppState, headers: &HeaderMap, org_id: &str) -> Result<(), ApiError> {
    match caller(state, headers).await? {
        Caller::Admin => require_org(state, org_id).await,
        Caller::Reader { org_id: own } if own == org_id => Ok(()),
        Caller::Reader { .. } => Err(ApiError::not_found(format!("no org {org_id:?}"))),
        Caller::Ingester => Err(ApiError::forbidden("ingest keys cannot read usage; use a read key")),
    }
}

/// 404 unless `org_id` is a registered org.
pub async fn require_org(state: &AppState, org_id: &str) -> Result<(), ApiError> {
    let found: Option<(String,)> = sqlx::query_as("SELECT org_id FROM orgs WHERE org_id = $1")
        .bind(org_id)
        .fetch_optional(&state.pool)
        .await?;
    found.map(|_| ()).ok_or_else(|| ApiError::not_found(format!("no org {org_id:?}")))
}
