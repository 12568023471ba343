//! Who is calling: the admin (the `TALLY_ADMIN_TOKEN`), an org's read key, or a browser session
//! of the page (docs/page.md), which stands for one of the two.
//!
//! [`Caller`] is an extractor: a handler that takes one is authenticated before it runs. A bearer
//! token wins over the session cookie. A state-changing request authenticated by the cookie must
//! carry the session's CSRF token and no foreign `Origin` ([`crate::session::check_csrf`]).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use tally_common::keys;
use tally_store::keys::Scope;

use crate::error::ApiError;
use crate::session::{PageSession, Role};
use crate::AppState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    /// A read key; sees only its own org.
    Reader {
        org_id: String,
    },
    /// A billing key: reads its org, and may start Checkout and change its plan.
    Biller {
        org_id: String,
    },
    /// A person of an org, signed in to the page: reads what a read key reads; changes the plan
    /// only when the session was opened with a portal link or a billing key.
    Customer {
        org_id: String,
        may_change_plan: bool,
    },
    /// A key that sends events (an org's ingest key, a service key): it reads nothing.
    Ingester,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let token = keys::bearer(value.to_str().ok()).ok_or_else(ApiError::unauthorized)?;
            let caller = caller_of_token(state, token).await?;
            if caller != Caller::Admin {
                state.rates.check(&keys::hash(token)).map_err(ApiError::rate_limited)?;
            }
            return Ok(caller);
        }
        let Some(session) = crate::session::session_of_request(state, &parts.headers).await? else {
            return Err(ApiError::unauthorized());
        };
        if !parts.method.is_safe() {
            crate::session::check_csrf(&session, &parts.headers, &state.public_origin)?;
        }
        if let Some(id) = crate::session::session_id(state, &parts.headers) {
            state.rates.check(&keys::hash(id)).map_err(ApiError::rate_limited)?;
        }
        Ok(Caller::of_session(&session))
    }
}

/// The caller a bearer token (the admin token, or during a rotation the previous one, or an api
/// key) stands for. What PostgreSQL says of a key is reused for a few seconds
/// ([`crate::cache`]); each lookup also marks the key used.
pub async fn caller_of_token(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    if is_admin_token(state, token) {
        return Ok(Caller::Admin);
    }
    let hash = keys::hash(token);
    let now = std::time::Instant::now();
    let known = match state.key_cache.get(&hash, now) {
        Some(known) => known,
        None => {
            state.lookups.check("").map_err(ApiError::rate_limited)?;
            // Whose key it is is what the lookup finds out: it looks through every org's keys.
            let mut db = state.db.all_orgs().await?;
            let key = tally_store::keys::find_live_and_mark_used(&mut db, &hash).await?;
            db.commit().await?;
            let known = key.map(|key| match (key.scope, key.org_id) {
                (Scope::Read, Some(org_id)) => Caller::Reader { org_id },
                (Scope::Billing, Some(org_id)) => Caller::Biller { org_id },
                _ => Caller::Ingester,
            });
            state.key_cache.put(hash, known.clone(), now);
            known
        }
    };
    known.ok_or_else(|| {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown or revoked key")
    })
}

/// The admin token, or during a rotation the one being retired; compared in constant time.
fn is_admin_token(state: &AppState, token: &str) -> bool {
    let settings = &state.settings;
    std::iter::once(&settings.admin_token)
        .chain(settings.previous_admin_token.as_ref())
        .any(|admin| keys::constant_time_eq(token.as_bytes(), admin.expose().as_bytes()))
}

impl Caller {
    /// What a page session may do.
    pub fn of_session(session: &PageSession) -> Caller {
        match (&session.role, &session.org_id) {
            (Role::Operator, _) => Caller::Admin,
            (Role::Customer, Some(org_id)) => Caller::Customer {
                org_id: org_id.clone(),
                may_change_plan: session.may_change_plan,
            },
            // The table's CHECK makes a customer session without an org impossible.
            (Role::Customer, None) => Caller::Ingester,
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            _ => Err(ApiError::forbidden("this endpoint needs the admin token")),
        }
    }

    /// The org a key or a page session belongs to (`None`: the admin, or a key that sends).
    fn own_org(&self) -> Option<&str> {
        match self {
            Caller::Reader { org_id }
            | Caller::Biller { org_id }
            | Caller::Customer { org_id, .. } => Some(org_id),
            Caller::Admin | Caller::Ingester => None,
        }
    }

    /// Allows the admin and whoever reads `org_id` (its read and billing keys, its page
    /// sessions), for an org that exists. Another org's caller gets 404, as if the org did not
    /// exist, so keys cannot probe which orgs exist. (A caller's own org always exists: keys and
    /// sessions reference their org.)
    pub async fn require_reader(&self, state: &AppState, org_id: &str) -> Result<(), ApiError> {
        match (self, self.own_org()) {
            (Caller::Admin, _) => require_org(state, org_id).await,
            (_, Some(own)) if own == org_id => Ok(()),
            (_, Some(_)) => Err(ApiError::not_found(format!("no org {org_id:?}"))),
            (_, None) => {
                Err(ApiError::forbidden("keys that send events cannot read; use a read key"))
            }
        }
    }

    /// Allows whoever may change what `org_id` pays and manage its keys: the admin, the org's
    /// billing keys, and its people signed in with a portal link or a billing key. Not a read key, which sits in
    /// dashboards' configurations, nor a page session opened with one.
    pub async fn require_biller(&self, state: &AppState, org_id: &str) -> Result<(), ApiError> {
        self.require_reader(state, org_id).await?;
        match self {
            Caller::Admin | Caller::Biller { .. } => Ok(()),
            Caller::Customer { may_change_plan: true, .. } => Ok(()),
            Caller::Reader { .. } | Caller::Customer { .. } | Caller::Ingester => {
                Err(ApiError::forbidden(
                    "this needs a billing key, the page opened with a portal link or a billing \
                     key, or the admin token (a read key only reads)",
                ))
            }
        }
    }
}

/// 404 unless `org_id` is a registered org.
pub async fn require_org(state: &AppState, org_id: &str) -> Result<(), ApiError> {
    let mut db = state.db.org(org_id).await?;
    if tally_store::orgs::exists(&mut *db, org_id).await? {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no org {org_id:?}")))
    }
}
