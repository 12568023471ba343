//! The page's sessions: signing in with a read key or the admin token, portal links, the session
//! cookie and its CSRF token (docs/page.md, "How people get in").
//!
//! The cookie holds 256 random bits; PostgreSQL holds their SHA-256 (`page_sessions`), so a
//! database dump opens no session. A portal link is `{id}.{expires}.{signature}`: the signature
//! (HMAC-SHA256 under a key derived from the admin token) refuses a changed link before any
//! query, and the link id, stored hashed in `portal_links`, is spent by the statement that
//! checks it, so a link opens one session at most.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, TimeZone, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tally_common::keys;

use crate::auth::{require_org, Caller};
use crate::error::{parse_json, ApiError};
use crate::AppState;

/// The session cookie's name over http (local stacks).
pub const COOKIE: &str = "tally_session";
/// Its name over https: the `__Host-` prefix makes browsers refuse it unless it is `Secure`, for
/// this host only and for every path, so a sibling subdomain cannot plant a session of its own.
pub const SECURE_COOKIE: &str = "__Host-tally_session";
/// The header a cookie-authenticated state-changing request carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-tally-csrf";
/// How long a session lasts, however it was opened.
pub const SESSION_HOURS: i64 = 12;
/// A portal link's default and allowed lifetimes.
pub const LINK_DEFAULT_SECS: i64 = 15 * 60;
pub const LINK_MIN_SECS: i64 = 60;
pub const LINK_MAX_SECS: i64 = 60 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Operator,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Operator => "operator",
        }
    }
}

/// A signed-in browser.
#[derive(Debug, Clone, Serialize)]
pub struct PageSession {
    pub role: Role,
    pub org_id: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub csrf_token: String,
}

impl PageSession {
    /// What the session may do: what a read key of its org, or the admin token, may.
    pub fn caller(&self) -> Caller {
        match (&self.role, &self.org_id) {
            (Role::Operator, _) => Caller::Admin,
            (Role::Customer, Some(org_id)) => Caller::Customer { org_id: org_id.clone() },
            // The table's CHECK makes a customer session without an org impossible.
            (Role::Customer, None) => Caller::Ingester,
        }
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn cookie_name(state: &AppState) -> &'static str {
    if state.settings.public_url.starts_with("https://") { SECURE_COOKIE } else { COOKIE }
}

/// The session id a request carries, if any.
fn session_id<'h>(state: &AppState, headers: &'h HeaderMap) -> Option<&'h str> {
    cookie(headers, cookie_name(state)).filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The session a request's cookie opens, if any. An unknown or expired cookie opens none, and so
/// does a session whose credential no longer holds: the read key it was opened with has been
/// revoked, or (for operator and portal sessions) the admin token has been rotated.
pub async fn of_request(state: &AppState, headers: &HeaderMap) -> Result<Option<PageSession>, ApiError> {
    let Some(id) = session_id(state, headers) else {
        return Ok(None);
    };
    let hash = keys::hash(id);
    let now = std::time::Instant::now();
    let session = match state.session_cache.get(&hash, now) {
        Some(session) => session,
        None => {
            let row: Option<(Option<String>, String, String, DateTime<Utc>)> = sqlx::query_as(
                "SELECT s.org_id, s.role, s.csrf_token, s.expires_at FROM page_sessions s
                 WHERE s.session_hash = $1 AND s.expires_at > now()
                   AND CASE WHEN s.opened_by = 'read_key'
                            THEN EXISTS (SELECT 1 FROM api_keys k WHERE k.key_hash = s.credential AND k.revoked_at IS NULL)
                            ELSE s.credential = $2 END",
            )
            .bind(&hash)
            .bind(state.link_signer.admin_fingerprint())
            .fetch_optional(&state.pool)
            .await?;
            let session = row.map(|(org_id, role, csrf_token, expires_at)| PageSession {
                role: if role == "operator" { Role::Operator } else { Role::Customer },
                org_id,
                expires_at,
                csrf_token,
            });
            state.session_cache.put(hash, session.clone(), now);
            session
        }
    };
    Ok(session.filter(|s| s.expires_at > Utc::now()))
}

/// The origin (`scheme://host[:port]`) of a URL.
pub fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// A state-changing request by cookie: the session's CSRF token in [`CSRF_HEADER`], and no
/// `Origin` but the api's own: `TALLY_PUBLIC_URL`'s, or the one the request's `Host` names.
pub fn check_csrf(session: &PageSession, headers: &HeaderMap, public_origin: &str) -> Result<(), ApiError> {
    let refused = |why: &str| ApiError::new(StatusCode::FORBIDDEN, "csrf_failed", why.to_string());
    let token = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).ok_or_else(|| refused("send the session's CSRF token in X-Tally-CSRF"))?;
    if !keys::constant_time_eq(token.as_bytes(), session.csrf_token.as_bytes()) {
        return Err(refused("the CSRF token does not match the session's"));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).filter(|h| !h.is_empty());
        let by_host = host.is_some() && origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == host;
        if origin != public_origin && !by_host {
            return Err(refused("cross-site requests are refused"));
        }
    }
    Ok(())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
    if json {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send Content-Type: application/json"))
    }
}

/// The `Set-Cookie` value of a session id (or of its removal, with `max_age` 0).
fn set_cookie(state: &AppState, id: &str, max_age: i64) -> HeaderValue {
    let secure = if state.settings.public_url.starts_with("https://") { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}", cookie_name(state)))
        .expect("session ids are hex")
}

/// What a session was opened with: it lasts only while that holds ([`of_request`]).
enum Credential<'a> {
    /// A read key, by its hash: revoking the key ends the session.
    ReadKey(&'a str),
    /// The admin token (operator sessions), or a portal link signed with it: rotating the token
    /// ends the session.
    AdminToken,
    PortalLink,
}

impl Credential<'_> {
    fn opened_by(&self) -> &'static str {
        match self {
            Credential::ReadKey(_) => "read_key",
            Credential::AdminToken => "admin_token",
            Credential::PortalLink => "portal",
        }
    }
}

/// Opens a session (in `tx`, which the caller commits) and returns it with its cookie value.
async fn open(
    state: &AppState,
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    role: Role,
    org_id: Option<&str>,
    credential: Credential<'_>,
) -> Result<(PageSession, String), ApiError> {
    let id = random_hex(32);
    let session = PageSession {
        role,
        org_id: org_id.map(str::to_string),
        expires_at: Utc::now() + Duration::hours(SESSION_HOURS),
        csrf_token: random_hex(32),
    };
    let stored_credential = match credential {
        Credential::ReadKey(hash) => hash.to_string(),
        Credential::AdminToken | Credential::PortalLink => state.link_signer.admin_fingerprint(),
    };
    sqlx::query(
        "INSERT INTO page_sessions (session_hash, org_id, role, opened_by, credential, csrf_token, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(keys::hash(&id))
    .bind(org_id)
    .bind(role.as_str())
    .bind(credential.opened_by())
    .bind(stored_credential)
    .bind(&session.csrf_token)
    .bind(session.expires_at)
    .execute(&mut **tx)
    .await?;
    tracing::info!(role = role.as_str(), org_id = org_id.unwrap_or(""), opened_by = credential.opened_by(), "page session opened");
    Ok((session, id))
}

/// Answers 201 with a new session and its cookie. A session the browser held before is ended
/// (a sign-in never leaves two sessions in one browser), and expired sessions and links are
/// swept, both indexed by expiry.
async fn opened(state: &AppState, headers: &HeaderMap, session: PageSession, id: String) -> Result<Response, ApiError> {
    if let Some(old) = session_id(state, headers) {
        let old = keys::hash(old);
        sqlx::query("DELETE FROM page_sessions WHERE session_hash = $1").bind(&old).execute(&state.pool).await?;
        state.session_cache.forget(&old);
    }
    sqlx::query("DELETE FROM page_sessions WHERE expires_at < now() - interval '1 day'").execute(&state.pool).await?;
    sqlx::query("DELETE FROM portal_links WHERE expires_at < now() - interval '1 day'").execute(&state.pool).await?;
    let mut response = (StatusCode::CREATED, Json(&session)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(state, &id, SESSION_HOURS * 3600));
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    key: String,
}

/// `POST /v1/sessions` `{"key"}`: a read key opens a customer session, the admin token an
/// operator session.
pub async fn sign_in(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let request: SignIn = parse_json(&body)?;
    let refused = || ApiError::new(StatusCode::UNAUTHORIZED, "invalid_key", "unknown or revoked key");
    let key = request.key.trim();
    if key.is_empty() || key.len() > 256 {
        return Err(refused());
    }
    let key_hash = keys::hash(key);
    let (role, org_id, credential) = match crate::auth::caller_of_token(&state, key).await {
        Ok(Caller::Admin) => (Role::Operator, None, Credential::AdminToken),
        Ok(Caller::Reader { org_id }) => (Role::Customer, Some(org_id), Credential::ReadKey(&key_hash)),
        Ok(_) => return Err(ApiError::new(StatusCode::FORBIDDEN, "key_not_allowed", "an ingest key cannot sign in; use a read key")),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => return Err(refused()),
        Err(e) => return Err(e),
    };
    let mut tx = state.pool.begin().await?;
    let (session, id) = open(&state, &mut tx, role, org_id.as_deref(), credential).await?;
    tx.commit().await?;
    opened(&state, &headers, session, id).await
}

/// `GET /v1/sessions/current`: the cookie's session.
pub async fn current(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<PageSession>, ApiError> {
    of_request(&state, &headers)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "no_session", "not signed in"))
}

/// `DELETE /v1/sessions/current`: signs out (CSRF-checked like any change).
pub async fn sign_out(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let session = of_request(&state, &headers).await?.ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "no_session", "not signed in"))?;
    check_csrf(&session, &headers, &state.public_origin)?;
    if let Some(id) = session_id(&state, &headers) {
        let hash = keys::hash(id);
        sqlx::query("DELETE FROM page_sessions WHERE session_hash = $1").bind(&hash).execute(&state.pool).await?;
        state.session_cache.forget(&hash);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(&state, "", 0));
    Ok(response)
}

// ---- portal links -------------------------------------------------------------------------------

/// Why a portal link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefusal {
    /// Malformed, changed, or never issued.
    Invalid,
    Expired,
    Used,
}

impl LinkRefusal {
    pub fn error(self) -> ApiError {
        match self {
            LinkRefusal::Invalid => ApiError::bad_request("link_invalid", "this link is not valid; ask for a new one"),
            LinkRefusal::Expired => ApiError::new(StatusCode::GONE, "link_expired", "this link has expired; ask for a new one"),
            LinkRefusal::Used => ApiError::new(StatusCode::CONFLICT, "link_used", "this link was already used; ask for a new one"),
        }
    }
}

/// Signs and checks portal links.
pub struct LinkSigner {
    key: [u8; 32],
}

impl LinkSigner {
    /// The signing key is derived from the admin token: rotating the token retires every link.
    pub fn new(admin_token: &str) -> LinkSigner {
        let mut mac = Hmac::<Sha256>::new_from_slice(admin_token.as_bytes()).expect("HMAC takes any key length");
        mac.update(b"tally portal links v1");
        LinkSigner { key: mac.finalize().into_bytes().into() }
    }

    fn mac(&self, id: &str, expires: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("{id}.{expires}").as_bytes());
        mac
    }

    /// Stands for the admin token in `page_sessions.credential`, without being it: sessions opened
    /// with the token, or with a link it signed, end when it is rotated.
    pub fn admin_fingerprint(&self) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"sessions");
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn token(&self, id: &str, expires: i64) -> String {
        format!("{id}.{expires}.{}", hex::encode(self.mac(id, expires).finalize().into_bytes()))
    }

    /// The link id of a well-signed, unexpired token.
    pub fn check<'t>(&self, token: &'t str, now: i64) -> Result<&'t str, LinkRefusal> {
        let mut parts = token.split('.');
        let (Some(id), Some(expires), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(LinkRefusal::Invalid);
        };
        let expires: i64 = expires.parse().map_err(|_| LinkRefusal::Invalid)?;
        let signature = hex::decode(signature).map_err(|_| LinkRefusal::Invalid)?;
        self.mac(id, expires).verify_slice(&signature).map_err(|_| LinkRefusal::Invalid)?;
        if now >= expires {
            return Err(LinkRefusal::Expired);
        }
        Ok(id)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewLink {
    ttl_secs: Option<i64>,
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
    let request: NewLink = if body.is_empty() { NewLink::default() } else { parse_json(&body)? };
    let ttl = request.ttl_secs.unwrap_or(LINK_DEFAULT_SECS);
    if !(LINK_MIN_SECS..=LINK_MAX_SECS).contains(&ttl) {
        return Err(ApiError::invalid_field(format!("ttl_secs: must be {LINK_MIN_SECS}-{LINK_MAX_SECS}")));
    }
    require_org(&state, &org_id).await?;
    let id = random_hex(16);
    let expires_at = Utc.timestamp_opt(Utc::now().timestamp() + ttl, 0).single().expect("a near future instant");
    sqlx::query("INSERT INTO portal_links (link_hash, org_id, expires_at) VALUES ($1, $2, $3)")
        .bind(keys::hash(&id))
        .bind(&org_id)
        .bind(expires_at)
        .execute(&state.pool)
        .await?;
    let token = state.link_signer.token(&id, expires_at.timestamp());
    let url = format!("{}/app/portal#{token}", state.settings.public_url.trim_end_matches('/'));
    tracing::info!(org_id = %org_id, expires_at = %expires_at, "portal link created");
    Ok((StatusCode::CREATED, Json(serde_json::json!({"url": url, "expires_at": expires_at}))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Exchange {
    token: String,
}

/// `POST /v1/sessions/portal` `{"token"}`: spends a portal link for a customer session.
pub async fn exchange_portal_link(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let request: Exchange = parse_json(&body)?;
    let id = state.link_signer.check(request.token.trim(), Utc::now().timestamp()).map_err(LinkRefusal::error)?;
    let hash = keys::hash(id);
    // The link is spent and the session opened in one transaction: a failure spends nothing.
    let mut tx = state.pool.begin().await?;
    let spent: Option<(String,)> = sqlx::query_as(
        "UPDATE portal_links SET used_at = now() WHERE link_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING org_id",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((org_id,)) = spent else {
        let known: Option<(Option<DateTime<Utc>>,)> =
            sqlx::query_as("SELECT used_at FROM portal_links WHERE link_hash = $1").bind(&hash).fetch_optional(&state.pool).await?;
        let refusal = match known {
            Some((Some(_),)) => LinkRefusal::Used,
            Some((None,)) => LinkRefusal::Expired,
            None => LinkRefusal::Invalid,
        };
        tracing::info!(refusal = ?refusal, "portal link refused");
        return Err(refusal.error());
    };
    let (session, cookie_value) = open(&state, &mut tx, Role::Customer, Some(&org_id), Credential::PortalLink).await?;
    tx.commit().await?;
    opened(&state, &headers, session, cookie_value).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portal_links_refuse_changes_and_expiry() {
        let signer = LinkSigner::new("an admin token of some length");
        let token = signer.token("0123abcd", 1_000);
        assert_eq!(signer.check(&token, 999), Ok("0123abcd"));
        assert_eq!(signer.check(&token, 1_000), Err(LinkRefusal::Expired));
        // Any changed part breaks the signature: the id, the expiry, the signature itself.
        assert_eq!(signer.check(&token.replacen("0123", "0124", 1), 999), Err(LinkRefusal::Invalid));
        assert_eq!(signer.check(&token.replacen(".1000.", ".9000.", 1), 999), Err(LinkRefusal::Invalid));
        let mut flipped = token.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        assert_eq!(signer.check(&flipped, 999), Err(LinkRefusal::Invalid));
        // Another admin token signs differently.
        assert_eq!(LinkSigner::new("another admin token of length").check(&token, 999), Err(LinkRefusal::Invalid));
        for bad in ["", "a.b", "a.1.zz", "a.1.00.extra", "a.x.00"] {
            assert_eq!(signer.check(bad, 0), Err(LinkRefusal::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; tally_session=abc"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn csrf_needs_the_token_and_the_own_origin() {
        let session = PageSession { role: Role::Customer, org_id: Some("acme".into()), expires_at: Utc::now(), csrf_token: "t0k".into() };
        let mut headers = HeaderMap::new();
        let public = "https://billing.example.com";
        let check = |h: &HeaderMap| check_csrf(&session, h, public);
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(check(&headers).is_err());
        headers.insert(CSRF_HEADER, HeaderValue::from_static("t0x"));
        assert!(check(&headers).is_err());
        headers.insert(CSRF_HEADER, HeaderValue::from_static("t0k"));
        assert!(check(&headers).is_ok());
        // The origin the request's Host names, or the public URL's (behind a proxy that rewrites Host).
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(check(&headers).is_ok());
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://billing.example.com"));
        assert!(check(&headers).is_ok());
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert_eq!(check(&headers).unwrap_err().code, "csrf_failed");
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://billing.example.com.evil.example"));
        assert!(check(&headers).is_err());
        headers.remove(header::HOST);
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://"));
        assert!(check(&headers).is_err(), "no Host names no origin");
        assert_eq!(origin_of("https://billing.example.com/app/portal#t"), "https://billing.example.com");
        assert_eq!(origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }
}
