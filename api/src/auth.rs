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
    /// A person of an org, signed in to the page (a portal link or a read key typed into the
    /// sign-in form): reads what a read key reads, and may change the org's plan.
    Customer {
        org_id: String,
    },
    /// An ingest key: it sends events, it reads nothing.
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
            return caller_of_token(state, token).await;
        }
        let Some(session) = crate::session::session_of_request(state, &parts.headers).await? else {
            return Err(ApiError::unauthorized());
        };
        if !parts.method.is_safe() {
            crate::session::check_csrf(&session, &parts.headers, &state.public_origin)?;
        }
        Ok(Caller::of_session(&session))
    }
}

/// The caller a bearer token (the admin token or an api key) stands for. What PostgreSQL says
/// of a key is reused for a few seconds ([`crate::cache`]).
pub async fn caller_of_token(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    if keys::constant_time_eq(token.as_bytes(), state.settings.admin_token.expose().as_bytes()) {
        return Ok(Caller::Admin);
    }
    let hash = keys::hash(token);
    let now = std::time::Instant::now();
    let known = match state.key_cache.get(&hash, now) {
        Some(known) => known,
        None => {
            let key = tally_store::keys::find_live(&state.pool, &hash).await?;
            let known = key.map(|key| {
                if key.scope == "read" {
                    Caller::Reader { org_id: key.org_id }
                } else {
                    Caller::Ingester
                }
            });
            state.key_cache.put(hash, known.clone(), now);
            known
        }
    };
    known.ok_or_else(|| {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown or revoked key")
    })
}

impl Caller {
    /// What a page session may do: what a read key of its org, or the admin token, may.
    pub fn of_session(session: &PageSession) -> Caller {
        match (&session.role, &session.org_id) {
            (Role::Operator, _) => Caller::Admin,
            (Role::Customer, Some(org_id)) => Caller::Customer { org_id: org_id.clone() },
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

    /// Allows the admin and `org_id`'s readers, for an org that exists. Another org's reader gets
    /// 404, as if the org did not exist, so keys cannot probe which orgs exist. (A reader's own
    /// org always exists: keys and sessions reference their org.)
    pub async fn require_reader(&self, state: &AppState, org_id: &str) -> Result<(), ApiError> {
        match self {
            Caller::Admin => require_org(state, org_id).await,
            Caller::Reader { org_id: own } | Caller::Customer { org_id: own } if own == org_id => {
                Ok(())
            }
            Caller::Reader { .. } | Caller::Customer { .. } => {
                Err(ApiError::not_found(format!("no org {org_id:?}")))
            }
            Caller::Ingester => {
                Err(ApiError::forbidden("ingest keys cannot read usage; use a read key"))
            }
        }
    }

    /// Allows the admin and a person of `org_id` signed in to the page: changing what an org pays
    /// takes a person, not a read key in a dashboard's configuration.
    pub async fn require_customer(&self, state: &AppState, org_id: &str) -> Result<(), ApiError> {
        match self {
            Caller::Reader { org_id: own } if own == org_id => Err(ApiError::forbidden(
                "a read key cannot change the plan; sign in to the page, or use the admin token",
            )),
            Caller::Admin | Caller::Customer { .. } | Caller::Reader { .. } | Caller::Ingester => {
                self.require_reader(state, org_id).await
            }
        }
    }
}

/// 404 unless `org_id` is a registered org.
pub async fn require_org(state: &AppState, org_id: &str) -> Result<(), ApiError> {
    if tally_store::orgs::exists(&state.pool, org_id).await? {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no org {org_id:?}")))
    }
}
