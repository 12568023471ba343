//! The page's sessions: who a request's session cookie is, its CSRF check, and the signing of
//! portal links (docs/page.md, "How people get in"). The handlers that open and end sessions are
//! in [`crate::sign_in`].
//!
//! The cookie holds 256 random bits; PostgreSQL holds their SHA-256 (`page_sessions`), so a
//! database dump opens no session. A portal link is `{id}.{expires}.{signature}`: the signature
//! (HMAC-SHA256 under a key derived from the admin token) refuses a changed link before any
//! query, and the link id, stored hashed in `portal_links`, is spent by the statement that
//! checks it, so a link opens one session at most.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tally_common::keys;

use crate::error::ApiError;
use crate::AppState;
use tally_store::sessions;

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
    pub fn as_str(self) -> &'static str {
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
    /// Whether this person may start Checkout and change the org's plan (an operator always may).
    pub may_change_plan: bool,
    pub org_id: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub csrf_token: String,
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

pub fn cookie_name(state: &AppState) -> &'static str {
    if state.settings.public_url.starts_with("https://") {
        SECURE_COOKIE
    } else {
        COOKIE
    }
}

/// The session id a request carries, if any.
pub fn session_id<'h>(state: &AppState, headers: &'h HeaderMap) -> Option<&'h str> {
    cookie(headers, cookie_name(state)).filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The session a request's cookie opens, if any. An unknown or expired cookie opens none, and so
/// does a session whose credential no longer holds: the key it was opened with has been revoked
/// or has expired, or (for operator and portal sessions) the admin token has been retired.
pub async fn session_of_request(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<PageSession>, ApiError> {
    let Some(id) = session_id(state, headers) else {
        return Ok(None);
    };
    let hash = keys::hash(id);
    let now = std::time::Instant::now();
    let session = match state.session_cache.get(&hash, now) {
        Some(session) => session,
        None => {
            state.lookups.check("").map_err(ApiError::rate_limited)?;
            let fingerprints = state.link_signer.admin_fingerprints();
            // Whose session it is is what the lookup finds out.
            let row =
                sessions::find_live(&mut *state.db.all_orgs().await?, &hash, &fingerprints).await?;
            let session = row.map(|row| PageSession {
                role: if row.role == "operator" { Role::Operator } else { Role::Customer },
                // A session opened with a read key reads; one opened with a billing key or a
                // portal link may also change the plan.
                may_change_plan: row.opened_by != "read_key",
                org_id: row.org_id,
                expires_at: row.expires_at,
                csrf_token: row.csrf_token,
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
pub fn check_csrf(
    session: &PageSession,
    headers: &HeaderMap,
    public_origin: &str,
) -> Result<(), ApiError> {
    let refused = |why: &str| ApiError::new(StatusCode::FORBIDDEN, "csrf_failed", why.to_string());
    let token = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| refused("send the session's CSRF token in X-Tally-CSRF"))?;
    if !keys::constant_time_eq(token.as_bytes(), session.csrf_token.as_bytes()) {
        return Err(refused("the CSRF token does not match the session's"));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host =
            headers.get(header::HOST).and_then(|v| v.to_str().ok()).filter(|h| !h.is_empty());
        let by_host = host.is_some()
            && origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == host;
        if origin != public_origin && !by_host {
            return Err(refused("cross-site requests are refused"));
        }
    }
    Ok(())
}

/// The `Set-Cookie` value of a session id (or of its removal, with `max_age` 0).
pub fn set_cookie(state: &AppState, id: &str, max_age: i64) -> HeaderValue {
    let secure = if state.settings.public_url.starts_with("https://") { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}",
        cookie_name(state)
    ))
    .expect("session ids are hex")
}

// ---- portal link signatures ---------------------------------------------------------------------

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
            LinkRefusal::Invalid => {
                ApiError::bad_request("link_invalid", "this link is not valid; ask for a new one")
            }
            LinkRefusal::Expired => ApiError::new(
                StatusCode::GONE,
                "link_expired",
                "this link has expired; ask for a new one",
            ),
            LinkRefusal::Used => ApiError::new(
                StatusCode::CONFLICT,
                "link_used",
                "this link was already used; ask for a new one",
            ),
        }
    }
}

/// Signs and checks portal links, and fingerprints the admin token for the sessions it opens.
/// During a rotation (`TALLY_ADMIN_TOKEN_PREVIOUS`) it holds two keys: new links and sessions
/// use the current token's, and what the previous token opened still holds.
pub struct LinkSigner {
    /// The current token's key first.
    keys: Vec<[u8; 32]>,
}

impl LinkSigner {
    /// The signing keys are derived from the admin tokens: retiring a token retires every link
    /// and session it opened.
    pub fn new(admin_token: &str, previous: Option<&str>) -> LinkSigner {
        let derive = |token: &str| -> [u8; 32] {
            let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes())
                .expect("HMAC takes any key length");
            mac.update(b"tally portal links v1");
            mac.finalize().into_bytes().into()
        };
        LinkSigner { keys: std::iter::once(admin_token).chain(previous).map(derive).collect() }
    }

    fn mac(key: &[u8; 32], id: &str, expires: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(format!("{id}.{expires}").as_bytes());
        mac
    }

    fn fingerprint(key: &[u8; 32]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(b"sessions");
        hex::encode(mac.finalize().into_bytes())
    }

    /// Stands for the admin token in `page_sessions.credential`, without being it: sessions opened
    /// with the token, or with a link it signed, end when it is retired.
    pub fn admin_fingerprint(&self) -> String {
        Self::fingerprint(&self.keys[0])
    }

    /// The fingerprints whose sessions still hold: the current token's and, during a rotation,
    /// the previous one's.
    pub fn admin_fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(Self::fingerprint).collect()
    }

    pub fn token(&self, id: &str, expires: i64) -> String {
        let signature = Self::mac(&self.keys[0], id, expires).finalize().into_bytes();
        format!("{id}.{expires}.{}", hex::encode(signature))
    }

    /// The link id of a well-signed, unexpired token.
    pub fn check<'t>(&self, token: &'t str, now: i64) -> Result<&'t str, LinkRefusal> {
        let mut parts = token.split('.');
        let (Some(id), Some(expires), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(LinkRefusal::Invalid);
        };
        let expires: i64 = expires.parse().map_err(|_| LinkRefusal::Invalid)?;
        let signature = hex::decode(signature).map_err(|_| LinkRefusal::Invalid)?;
        if !self.keys.iter().any(|key| Self::mac(key, id, expires).verify_slice(&signature).is_ok())
        {
            return Err(LinkRefusal::Invalid);
        }
        if now >= expires {
            return Err(LinkRefusal::Expired);
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portal_links_refuse_changes_and_expiry() {
        let signer = LinkSigner::new("an admin token of some length", None);
        let token = signer.token("0123abcd", 1_000);
        assert_eq!(signer.check(&token, 999), Ok("0123abcd"));
        assert_eq!(signer.check(&token, 1_000), Err(LinkRefusal::Expired));
        // Any changed part breaks the signature: the id, the expiry, the signature itself.
        assert_eq!(
            signer.check(&token.replacen("0123", "0124", 1), 999),
            Err(LinkRefusal::Invalid)
        );
        assert_eq!(
            signer.check(&token.replacen(".1000.", ".9000.", 1), 999),
            Err(LinkRefusal::Invalid)
        );
        let mut flipped = token.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        assert_eq!(signer.check(&flipped, 999), Err(LinkRefusal::Invalid));
        // Another admin token signs differently; during a rotation the previous one still holds,
        // and once it is retired its links do not.
        let rotated =
            LinkSigner::new("another admin token of length", Some("an admin token of some length"));
        assert_eq!(rotated.check(&token, 999), Ok("0123abcd"));
        assert_eq!(rotated.admin_fingerprints()[1], signer.admin_fingerprint());
        assert_ne!(rotated.admin_fingerprint(), signer.admin_fingerprint());
        assert_eq!(
            LinkSigner::new("another admin token of length", None).check(&token, 999),
            Err(LinkRefusal::Invalid)
        );
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
        let session = PageSession {
            role: Role::Customer,
            may_change_plan: true,
            org_id: Some("acme".into()),
            expires_at: Utc::now(),
            csrf_token: "t0k".into(),
        };
        let mut headers = HeaderMap::new();
        let public = "https://billing.example.com";
        let check = |h: &HeaderMap| check_csrf(&session, h, public);
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(check(&headers).is_err());
        headers.insert(CSRF_HEADER, HeaderValue::from_static("t0x"));
        assert!(check(&headers).is_err());
        headers.insert(CSRF_HEADER, HeaderValue::from_static("t0k"));
        assert!(check(&headers).is_ok());
        // The origin the request's Host names, or the public URL's (behind a proxy that rewrites
        // Host).
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(check(&headers).is_ok());
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://billing.example.com"));
        assert!(check(&headers).is_ok());
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert_eq!(check(&headers).unwrap_err().code, "csrf_failed");
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://billing.example.com.evil.example"),
        );
        assert!(check(&headers).is_err());
        headers.remove(header::HOST);
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://"));
        assert!(check(&headers).is_err(), "no Host names no origin");
        assert_eq!(
            origin_of("https://billing.example.com/app/portal#t"),
            "https://billing.example.com"
        );
        assert_eq!(origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }
}
