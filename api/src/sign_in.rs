//! Signing in to the page and out: a read key or the admin token opens a session
//! (`POST /v1/sessions`), an admin mints a single-use portal link for an org's customer
//! (`POST /v1/orgs/{org_id}/portal-sessions`) which opens one (`POST /v1/sessions/portal`);
//! `GET`/`DELETE /v1/sessions/current`. Sessions themselves: [`crate::session`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tally_common::keys;

use crate::auth::{require_org, Caller};
use crate::error::{parse_json, ApiError};
use crate::session::{
    check_csrf, session_id, session_of_request, set_cookie, LinkRefusal, PageSession, Role,
    LINK_DEFAULT_SECS, LINK_MAX_SECS, LINK_MIN_SECS, SESSION_HOURS,
};
use crate::AppState;
use tally_store::{sessions, Tx};

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    });
    if json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json",
        ))
    }
}

/// What a session was opened with: it lasts only while that holds
/// ([`crate::session::session_of_request`]).
enum Credential<'a> {
    /// A read key, by its hash: revoking the key ends the session.
    ReadKey(&'a str),
    /// A billing key, by its hash: likewise; the session may also change the plan.
    BillingKey(&'a str),
    /// The admin token (operator sessions), or a portal link signed with it: rotating the token
    /// ends the session.
    AdminToken,
    PortalLink,
}

impl Credential<'_> {
    fn opened_by(&self) -> &'static str {
        match self {
            Credential::ReadKey(_) => "read_key",
            Credential::BillingKey(_) => "billing_key",
            Credential::AdminToken => "admin_token",
            Credential::PortalLink => "portal",
        }
    }
}

/// Opens a session (in `tx`, which the caller commits) and returns it with its cookie value.
async fn open_session(
    state: &AppState,
    tx: &mut Tx<'_>,
    role: Role,
    org_id: Option<&str>,
    credential: Credential<'_>,
) -> Result<(PageSession, String), ApiError> {
    let id = random_hex(32);
    let session = PageSession {
        role,
        may_change_plan: !matches!(credential, Credential::ReadKey(_)),
        org_id: org_id.map(str::to_string),
        expires_at: Utc::now() + Duration::hours(SESSION_HOURS),
        csrf_token: random_hex(32),
    };
    let stored_credential = match credential {
        Credential::ReadKey(hash) | Credential::BillingKey(hash) => hash.to_string(),
        Credential::AdminToken | Credential::PortalLink => state.link_signer.admin_fingerprint(),
    };
    let new = sessions::NewSession {
        session_hash: &keys::hash(&id),
        org_id,
        role: role.as_str(),
        opened_by: credential.opened_by(),
        credential: &stored_credential,
        csrf_token: &session.csrf_token,
        expires_at: session.expires_at,
    };
    sessions::insert_session(tx, &new).await?;
    tracing::info!(
        role = role.as_str(),
        org_id = org_id.unwrap_or(""),
        opened_by = credential.opened_by(),
        "page session opened"
    );
    Ok((session, id))
}

/// Answers 201 with a new session and its cookie. A session the browser held before is ended
/// (a sign-in never leaves two sessions in one browser), and expired sessions and links are
/// swept, both indexed by expiry.
async fn answer_opened_session(
    state: &AppState,
    headers: &HeaderMap,
    session: PageSession,
    id: String,
) -> Result<Response, ApiError> {
    // Sessions and links are found by their hash, and the sweep is of every org's.
    let mut db = state.db.all_orgs().await?;
    if let Some(old) = session_id(state, headers) {
        let old = keys::hash(old);
        sessions::delete_session(&mut db, &old).await?;
        state.session_cache.forget(&old);
    }
    sessions::delete_long_expired(&mut db).await?;
    db.commit().await?;
    let mut response = (StatusCode::CREATED, Json(&session)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(state, &id, SESSION_HOURS * 3600));
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignInRequest {
    key: String,
}

/// `POST /v1/sessions` `{"key"}`: a read key opens a customer session that reads, a billing key
/// one that may also change the plan, the admin token an operator session.
pub async fn sign_in(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let request: SignInRequest = parse_json(&body)?;
    let refused =
        || ApiError::new(StatusCode::UNAUTHORIZED, "invalid_key", "unknown or revoked key");
    let key = request.key.trim();
    if key.is_empty() || key.len() > 256 {
        return Err(refused());
    }
    let key_hash = keys::hash(key);
    let (role, org_id, credential) = match crate::auth::caller_of_token(&state, key).await {
        Ok(Caller::Admin) => (Role::Operator, None, Credential::AdminToken),
        Ok(Caller::Reader { org_id }) => {
            (Role::Customer, Some(org_id), Credential::ReadKey(&key_hash))
        }
        Ok(Caller::Biller { org_id }) => {
            (Role::Customer, Some(org_id), Credential::BillingKey(&key_hash))
        }
        Ok(_) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "key_not_allowed",
                "a key that sends events cannot sign in; use a read or billing key",
            ))
        }
        Err(e) if e.status == StatusCode::UNAUTHORIZED => return Err(refused()),
        Err(e) => return Err(e),
    };
    let mut tx = match &org_id {
        Some(org_id) => state.db.org(org_id).await?,
        None => state.db.all_orgs().await?,
    };
    let (session, id) = open_session(&state, &mut tx, role, org_id.as_deref(), credential).await?;
    tx.commit().await?;
    answer_opened_session(&state, &headers, session, id).await
}

/// `GET /v1/sessions/current`: the cookie's session.
pub async fn current(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<PageSession>, ApiError> {
    session_of_request(&state, &headers)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "no_session", "not signed in"))
}

/// `DELETE /v1/sessions/current`: signs out (CSRF-checked like any change).
pub async fn sign_out(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let session = session_of_request(&state, &headers)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "no_session", "not signed in"))?;
    check_csrf(&session, &headers, &state.public_origin)?;
    if let Some(id) = session_id(&state, &headers) {
        let hash = keys::hash(id);
        let mut db = state.db.all_orgs().await?;
        sessions::delete_session(&mut db, &hash).await?;
        db.commit().await?;
        state.session_cache.forget(&hash);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(&state, "", 0));
    Ok(response)
}

// ---- portal links -------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewPortalLink {
    ttl_secs: Option<i64>,
}

#[derive(Serialize)]
pub struct PortalLinkCreated {
    url: String,
    expires_at: DateTime<Utc>,
}

/// `POST /v1/orgs/{org_id}/portal-sessions` (admin) `{"ttl_secs"?}`: a single-use link that
/// signs the org's customer in; `201 {"url", "expires_at"}`.
pub async fn create_portal_link(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    let request: NewPortalLink =
        if body.is_empty() { NewPortalLink::default() } else { parse_json(&body)? };
    let ttl = request.ttl_secs.unwrap_or(LINK_DEFAULT_SECS);
    if !(LINK_MIN_SECS..=LINK_MAX_SECS).contains(&ttl) {
        return Err(ApiError::invalid_field(format!(
            "ttl_secs: must be {LINK_MIN_SECS}-{LINK_MAX_SECS}"
        )));
    }
    require_org(&state, &org_id).await?;
    let id = random_hex(16);
    let expires_at =
        Utc.timestamp_opt(Utc::now().timestamp() + ttl, 0).single().expect("a near future instant");
    let mut db = state.db.org(&org_id).await?;
    sessions::insert_portal_link(&mut db, &keys::hash(&id), &org_id, expires_at).await?;
    db.commit().await?;
    let token = state.link_signer.token(&id, expires_at.timestamp());
    let url = format!("{}/app/portal#{token}", state.settings.public_url.trim_end_matches('/'));
    tracing::info!(org_id = %org_id, expires_at = %expires_at, "portal link created");
    Ok((StatusCode::CREATED, Json(PortalLinkCreated { url, expires_at })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortalLinkExchange {
    token: String,
}

/// `POST /v1/sessions/portal` `{"token"}`: spends a portal link for a customer session.
pub async fn exchange_portal_link(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let request: PortalLinkExchange = parse_json(&body)?;
    let id = state
        .link_signer
        .check(request.token.trim(), Utc::now().timestamp())
        .map_err(LinkRefusal::error)?;
    let hash = keys::hash(id);
    // The link is spent and the session opened in one transaction: a failure spends nothing.
    // Whose link it is is what spending it finds out.
    let mut tx = state.db.all_orgs().await?;
    let Some(org_id) = sessions::spend_portal_link(&mut tx, &hash).await? else {
        let refusal = match sessions::find_portal_link(&mut tx, &hash).await? {
            Some(link) if link.used_at.is_some() => LinkRefusal::Used,
            Some(_) => LinkRefusal::Expired,
            None => LinkRefusal::Invalid,
        };
        tracing::info!(refusal = ?refusal, "portal link refused");
        return Err(refusal.error());
    };
    let (session, cookie_value) =
        open_session(&state, &mut tx, Role::Customer, Some(&org_id), Credential::PortalLink)
            .await?;
    tx.commit().await?;
    answer_opened_session(&state, &headers, session, cookie_value).await
}
