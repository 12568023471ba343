//! Keys: an org's keys (`read`, `billing`, `ingest`) and the company's service keys, made,
//! listed, revoked and rotated (docs/security.md). A key's secret is shown once, when it is made;
//! only its SHA-256 is stored, and lists show its public id (`key_…`), never the secret.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tally_common::keys;
use tally_store::keys::{KeyInfo, NewKey, Rotated, Scope};

use crate::auth::{require_org, Caller};
use crate::error::{parse_json, ApiError};
use crate::AppState;

/// How long a rotated key keeps working beside its replacement, by default and at most.
pub const ROTATION_GRACE_DEFAULT_SECS: i64 = 24 * 60 * 60;
pub const ROTATION_GRACE_MAX_SECS: i64 = 30 * 24 * 60 * 60;
/// The most orgs a service key may list (beyond that, "all orgs" is the honest choice).
pub const SERVICE_KEY_MAX_ORGS: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrgKey {
    scope: Scope,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewServiceKey {
    #[serde(default)]
    name: String,
    /// The orgs the key may send for...
    orgs: Option<Vec<String>>,
    /// ...or `true` for all orgs: one of the two, explicitly.
    #[serde(default)]
    all_orgs: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rotation {
    grace_secs: Option<i64>,
}

/// A new key: the only time its secret is shown.
#[derive(Serialize)]
pub struct KeyCreated {
    key_id: String,
    /// The secret. Shown once; Tally stores only its hash.
    key: String,
    scope: Scope,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    org_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    orgs: Option<Vec<String>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    all_orgs: bool,
    /// After a rotation: the key this one replaces, and when that one stops working.
    #[serde(skip_serializing_if = "Option::is_none")]
    replaces: Option<Replaced>,
}

#[derive(Serialize)]
struct Replaced {
    key_id: String,
    expires_at: DateTime<Utc>,
}

#[derive(Serialize)]
pub struct KeyList {
    keys: Vec<KeyInfo>,
}

/// A fresh secret with the scope's prefix, and a fresh public id.
fn mint(scope: Scope) -> (String, String) {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let mut id = [0u8; 12];
    rand::rng().fill_bytes(&mut id);
    (format!("key_{}", hex::encode(id)), format!("{}{}", scope.prefix(), hex::encode(secret)))
}

fn checked_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field("name: at most 200 characters, no control characters"));
    }
    Ok(name.to_string())
}

fn key_not_found(key_id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "key_not_found", format!("no key {key_id:?}"))
}

/// `POST /v1/orgs/{org_id}/keys` `{"scope": "read" | "billing" | "ingest", "name"?}` (admin):
/// a new key of the org; 201 with its secret, shown once.
pub async fn create_org_key(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    let request: NewOrgKey = parse_json(&body)?;
    if request.scope == Scope::Service {
        return Err(ApiError::invalid_field(
            "scope: a service key belongs to no org; POST /v1/service-keys",
        ));
    }
    let name = checked_name(&request.name)?;
    require_org(&state, &org_id).await?;
    let (key_id, key) = mint(request.scope);
    let new = NewKey {
        key_id: &key_id,
        key_hash: &keys::hash(&key),
        scope: request.scope,
        name: &name,
        org_id: Some(&org_id),
        orgs: None,
    };
    let mut db = state.db.org(&org_id).await?;
    tally_store::keys::insert(&mut db, &new).await?;
    db.commit().await?;
    tracing::info!(org_id = %org_id, %key_id, scope = request.scope.as_str(), "key created");
    let created = KeyCreated {
        key_id,
        key,
        scope: request.scope,
        name,
        org_id: Some(org_id),
        orgs: None,
        all_orgs: false,
        replaces: None,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /v1/orgs/{org_id}/keys` (admin, the org's billing keys and plan-changing sessions):
/// every key of the org, revoked and expired ones included, newest first; never a secret.
pub async fn list_org_keys(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    caller: Caller,
) -> Result<Json<KeyList>, ApiError> {
    caller.require_biller(&state, &org_id).await?;
    let mut db = state.db.org(&org_id).await?;
    Ok(Json(KeyList { keys: tally_store::keys::list_of_org(&mut db, &org_id).await? }))
}

/// `DELETE /v1/orgs/{org_id}/keys/{key_id}` (admin, billing keys, plan-changing sessions):
/// revokes the key now; 200 with the key as listed. Ingest stops taking it within seconds
/// (docs/security.md), this api at once.
pub async fn revoke_org_key(
    State(state): State<Arc<AppState>>,
    Path((org_id, key_id)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<KeyInfo>, ApiError> {
    caller.require_biller(&state, &org_id).await?;
    revoke(&state, Some(&org_id), &key_id).await
}

/// `POST /v1/orgs/{org_id}/keys/{key_id}/rotate` `{"grace_secs"?}` (admin, billing keys,
/// plan-changing sessions): a new key in place of a live one, with the same scope and name; the
/// old key keeps working for the grace period (default one day, at most 30), then stops. 201 with
/// the new key's secret.
pub async fn rotate_org_key(
    State(state): State<Arc<AppState>>,
    Path((org_id, key_id)): Path<(String, String)>,
    caller: Caller,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_biller(&state, &org_id).await?;
    rotate(&state, Some(&org_id), &key_id, &body).await
}

/// `POST /v1/service-keys` `{"name"?, "orgs": [...]}` or `{"name"?, "all_orgs": true}` (admin): a
/// key for the company's own emitters, sending for the listed orgs or for all orgs.
pub async fn create_service_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    let request: NewServiceKey = parse_json(&body)?;
    let name = checked_name(&request.name)?;
    let orgs = match (request.orgs, request.all_orgs) {
        (Some(_), true) => {
            return Err(ApiError::invalid_field("orgs: give either orgs or all_orgs, not both"))
        }
        (None, false) => {
            return Err(ApiError::invalid_field(
                "orgs: required; or \"all_orgs\": true for a key that sends for every org",
            ))
        }
        (Some(orgs), false) if orgs.is_empty() || orgs.len() > SERVICE_KEY_MAX_ORGS => {
            return Err(ApiError::invalid_field(format!(
                "orgs: 1 to {SERVICE_KEY_MAX_ORGS} org ids"
            )))
        }
        (orgs, _) => orgs,
    };
    let (key_id, key) = mint(Scope::Service);
    let new = NewKey {
        key_id: &key_id,
        key_hash: &keys::hash(&key),
        scope: Scope::Service,
        name: &name,
        org_id: None,
        orgs: orgs.as_deref(),
    };
    // A service key belongs to no org and may name several.
    let mut db = state.db.all_orgs().await?;
    let inserted = tally_store::keys::insert(&mut db, &new).await?;
    db.commit().await?;
    if !inserted {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_org",
            "orgs: every listed org must exist",
        ));
    }
    tracing::info!(%key_id, orgs = orgs.as_ref().map_or(0, Vec::len), all_orgs = orgs.is_none(), "service key created");
    let created = KeyCreated {
        key_id,
        key,
        scope: Scope::Service,
        name,
        org_id: None,
        all_orgs: orgs.is_none(),
        orgs,
        replaces: None,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /v1/service-keys` (admin).
pub async fn list_service_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<KeyList>, ApiError> {
    caller.require_admin()?;
    let mut db = state.db.all_orgs().await?;
    Ok(Json(KeyList { keys: tally_store::keys::list_service(&mut db).await? }))
}

/// `DELETE /v1/service-keys/{key_id}` (admin).
pub async fn revoke_service_key(
    State(state): State<Arc<AppState>>,
    Path(key_id): Path<String>,
    caller: Caller,
) -> Result<Json<KeyInfo>, ApiError> {
    caller.require_admin()?;
    revoke(&state, None, &key_id).await
}

/// `POST /v1/service-keys/{key_id}/rotate` `{"grace_secs"?}` (admin).
pub async fn rotate_service_key(
    State(state): State<Arc<AppState>>,
    Path(key_id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    rotate(&state, None, &key_id, &body).await
}

/// The transaction an org's keys are managed in; service keys belong to no org.
async fn db_for(state: &AppState, org_id: Option<&str>) -> sqlx::Result<tally_store::Tx<'static>> {
    match org_id {
        Some(org_id) => state.db.org(org_id).await,
        None => state.db.all_orgs().await,
    }
}

async fn revoke(
    state: &AppState,
    org_id: Option<&str>,
    key_id: &str,
) -> Result<Json<KeyInfo>, ApiError> {
    let mut db = db_for(state, org_id).await?;
    let key = tally_store::keys::revoke(&mut db, org_id, key_id)
        .await?
        .ok_or_else(|| key_not_found(key_id))?;
    db.commit().await?;
    // This instance stops honouring the key (and sessions opened with it) at once.
    state.key_cache.clear();
    state.session_cache.clear();
    tracing::info!(%key_id, org_id = org_id.unwrap_or(""), "key revoked");
    Ok(Json(key))
}

async fn rotate(
    state: &AppState,
    org_id: Option<&str>,
    key_id: &str,
    body: &[u8],
) -> Result<(StatusCode, Json<KeyCreated>), ApiError> {
    let rotation: Rotation = if body.is_empty() { Rotation::default() } else { parse_json(body)? };
    let grace = rotation.grace_secs.unwrap_or(ROTATION_GRACE_DEFAULT_SECS);
    if !(0..=ROTATION_GRACE_MAX_SECS).contains(&grace) {
        return Err(ApiError::invalid_field(format!("grace_secs: 0 to {ROTATION_GRACE_MAX_SECS}")));
    }
    let mut db = db_for(state, org_id).await?;
    let old = tally_store::keys::get(&mut db, org_id, key_id)
        .await?
        .ok_or_else(|| key_not_found(key_id))?;
    let scope = Scope::parse(&old.scope).unwrap_or(Scope::Read);
    let (new_key_id, key) = mint(scope);
    let rotated = tally_store::keys::rotate(
        &mut db,
        org_id,
        key_id,
        &new_key_id,
        &keys::hash(&key),
        chrono::Duration::seconds(grace),
    )
    .await?;
    db.commit().await?;
    let old_expires_at = match rotated {
        Rotated::Rotated { old_expires_at } => old_expires_at,
        Rotated::NotFound => return Err(key_not_found(key_id)),
        Rotated::NotLive => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "key_not_live",
                format!("key {key_id:?} is revoked, expired or already rotated"),
            ))
        }
    };
    state.key_cache.clear();
    tracing::info!(%key_id, %new_key_id, grace_secs = grace, "key rotated");
    let created = KeyCreated {
        key_id: new_key_id,
        key,
        scope,
        name: old.name,
        org_id: old.org_id,
        orgs: (scope == Scope::Service && !old.all_orgs).then_some(old.orgs),
        all_orgs: old.all_orgs,
        replaces: Some(Replaced { key_id: key_id.to_string(), expires_at: old_expires_at }),
    };
    Ok((StatusCode::CREATED, Json(created)))
}
