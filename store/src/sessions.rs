//! `page_sessions` and `portal_links`: the page's sessions and single-use links, by the hash of
//! their secret (the secrets themselves are never stored).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::Tx;

/// A live session.
#[derive(sqlx::FromRow)]
pub struct SessionRow {
    pub org_id: Option<String>,
    /// `customer` or `operator`.
    pub role: String,
    /// `portal`, `read_key`, `billing_key` or `admin_token`.
    pub opened_by: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// The unexpired session of this hash whose credential still holds: the key it was opened with
/// is live, or (opened with the admin token or a portal link) it was opened under one of
/// `admin_fingerprints`.
pub async fn find_live(
    db: &mut PgConnection,
    session_hash: &str,
    admin_fingerprints: &[String],
) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as(
        "SELECT s.org_id, s.role, s.opened_by, s.csrf_token, s.expires_at FROM page_sessions s
         WHERE s.session_hash = $1 AND s.expires_at > now()
           AND CASE WHEN s.opened_by IN ('read_key', 'billing_key')
                    THEN EXISTS (SELECT 1 FROM live_api_keys k WHERE k.key_hash = s.credential)
                    ELSE s.credential = ANY($2) END",
    )
    .bind(session_hash)
    .bind(admin_fingerprints)
    .fetch_optional(&mut *db)
    .await
}

/// A session to store.
pub struct NewSession<'a> {
    pub session_hash: &'a str,
    pub org_id: Option<&'a str>,
    pub role: &'a str,
    /// `read_key`, `billing_key`, `admin_token` or `portal`.
    pub opened_by: &'a str,
    /// The hash of the key, or the admin token's fingerprint.
    pub credential: &'a str,
    pub csrf_token: &'a str,
    pub expires_at: DateTime<Utc>,
}

pub async fn insert_session(tx: &mut Tx<'_>, session: &NewSession<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO page_sessions (session_hash, org_id, role, opened_by, credential, csrf_token, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(session.session_hash)
    .bind(session.org_id)
    .bind(session.role)
    .bind(session.opened_by)
    .bind(session.credential)
    .bind(session.csrf_token)
    .bind(session.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn delete_session(db: &mut PgConnection, session_hash: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM page_sessions WHERE session_hash = $1")
        .bind(session_hash)
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// Deletes the sessions and links that expired more than a day ago (both indexed by expiry).
pub async fn delete_long_expired(db: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM page_sessions WHERE expires_at < now() - interval '1 day'")
        .execute(&mut *db)
        .await?;
    sqlx::query("DELETE FROM portal_links WHERE expires_at < now() - interval '1 day'")
        .execute(&mut *db)
        .await?;
    Ok(())
}

pub async fn insert_portal_link(
    db: &mut PgConnection,
    link_hash: &str,
    org_id: &str,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO portal_links (link_hash, org_id, expires_at) VALUES ($1, $2, $3)")
        .bind(link_hash)
        .bind(org_id)
        .bind(expires_at)
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// Spends an unused, unexpired link in `tx`; returns its org, or `None` when it cannot be spent.
pub async fn spend_portal_link(tx: &mut Tx<'_>, link_hash: &str) -> sqlx::Result<Option<String>> {
    let spent: Option<(String,)> = sqlx::query_as(
        "UPDATE portal_links SET used_at = now() WHERE link_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING org_id",
    )
    .bind(link_hash)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(spent.map(|(org_id,)| org_id))
}

/// A stored link, as far as telling why it cannot be spent goes.
#[derive(sqlx::FromRow)]
pub struct StoredLink {
    pub used_at: Option<DateTime<Utc>>,
}

pub async fn find_portal_link(
    db: &mut PgConnection,
    link_hash: &str,
) -> sqlx::Result<Option<StoredLink>> {
    sqlx::query_as("SELECT used_at FROM portal_links WHERE link_hash = $1")
        .bind(link_hash)
        .fetch_optional(&mut *db)
        .await
}
