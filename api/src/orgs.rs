//! Admin endpoints: orgs and their keys.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;
use tally_common::keys;

use crate::auth::{require_admin, require_org};
use crate::error::{parse_json, ApiError};
use crate::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrg {
    org_id: String,
    name: String,
}

pub async fn create_org(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&state, &headers).await?;
    let org: NewOrg = parse_json(&body)?;
    tally_schemas::event::validate_org_id(&org.org_id).map_err(|e| ApiError::invalid_field(e.message))?;
    if org.name.trim().is_empty() || org.name.len() > 200 {
        return Err(ApiError::invalid_field("name: must be 1-200 characters"));
    }
    let created: Option<(DateTime<Utc>,)> = sqlx::query_as(
        "INSERT INTO orgs (org_id, name) VALUES ($1, $2) ON CONFLICT (org_id) DO NOTHING RETURNING created_at",
    )
    .bind(&org.org_id)
    .bind(org.name.trim())
    .fetch_optional(&state.pool)
    .await?;
    let Some((created_at,)) = created else {
        return Err(ApiError::new(StatusCode::CONFLICT, "org_exists", format!("org {:?} already exists", org.org_id)));
    };
    tracing::info!(org_id = %org.org_id, "org created");
    Ok((
        StatusCode::CREATED,
        Json(json!({"org_id": org.org_id, "name": org.name.trim(), "created_at": created_at})),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    scope: Scope,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Scope {
    Read,
    Ingest,
}

pub async fn create_key(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&state, &headers).await?;
    let request: NewKey = parse_json(&body)?;
    require_org(&state, &org_id).await?;
    let (scope, prefix) = match request.scope {
        Scope::Read => ("read", "tally_read_"),
        Scope::Ingest => ("ingest", "tally_ingest_"),
    };
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let key = format!("{prefix}{}", hex::encode(secret));
    sqlx::query("INSERT INTO api_keys (key_hash, org_id, scope) VALUES ($1, $2, $3)")
        .bind(keys::hash(&key))
        .bind(&org_id)
        .bind(scope)
        .execute(&state.pool)
        .await?;
    tracing::info!(org_id = %org_id, scope, "key created");
    Ok((StatusCode::CREATED, Json(json!({"org_id": org_id, "scope": scope, "key": key}))))
}
