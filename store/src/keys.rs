//! `api_keys`: keys by their hash (the keys themselves are never stored), their scopes, the orgs
//! a service key may send for, and their lifecycle (revoked, rotated, last used). What "live"
//! means is the view `live_api_keys` (migration 0006).

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

/// What a key may do. `docs/security.md` has the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Reads its org.
    Read,
    /// Reads its org, starts Checkout and changes its plan.
    Billing,
    /// Sends events for its org.
    Ingest,
    /// Sends events for the orgs it lists, or for all orgs; has no org of its own.
    Service,
}

impl Scope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Billing => "billing",
            Scope::Ingest => "ingest",
            Scope::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "read" => Scope::Read,
            "billing" => Scope::Billing,
            "ingest" => Scope::Ingest,
            "service" => Scope::Service,
            _ => return None,
        })
    }

    /// Whether the key sends events (to ingest) rather than reading (from the api).
    pub const fn sends(self) -> bool {
        matches!(self, Scope::Ingest | Scope::Service)
    }

    /// The key's visible prefix, which says what it is for wherever it is pasted.
    pub const fn prefix(self) -> &'static str {
        match self {
            Scope::Read => "tally_read_",
            Scope::Billing => "tally_billing_",
            Scope::Ingest => "tally_ingest_",
            Scope::Service => "tally_service_",
        }
    }
}

/// A live key, as the api and ingest need it to decide what it may do.
#[derive(Debug, Clone)]
pub struct LiveKey {
    pub key_id: String,
    pub scope: Scope,
    /// The key's org; `None` for a service key.
    pub org_id: Option<String>,
    /// A service key's orgs: `None` for all orgs.
    pub orgs: Option<Vec<String>>,
}

#[derive(sqlx::FromRow)]
struct LiveRow {
    key_id: String,
    key_hash: String,
    scope: String,
    org_id: Option<String>,
    all_orgs: bool,
    orgs: Vec<String>,
}

impl LiveRow {
    fn into_key(self) -> (String, LiveKey) {
        // The table's CHECK admits only the four scopes.
        let scope = Scope::parse(&self.scope).unwrap_or(Scope::Read);
        let orgs = (scope == Scope::Service && !self.all_orgs).then_some(self.orgs);
        (self.key_hash, LiveKey { key_id: self.key_id, scope, org_id: self.org_id, orgs })
    }
}

const LIVE_SELECT: &str = "SELECT k.key_id, k.key_hash, k.scope, k.org_id, k.all_orgs,
        COALESCE(ARRAY(SELECT o.org_id FROM api_key_orgs o WHERE o.key_id = k.key_id ORDER BY o.org_id), '{}') AS orgs
   FROM live_api_keys k";

/// The live key of this hash, if any; marks it used (its `last_used_at`) in the same statement.
/// The api calls this once per key per few seconds (its cache), so the mark costs nothing more.
pub async fn find_live_and_mark_used(
    db: &mut PgConnection,
    key_hash: &str,
) -> sqlx::Result<Option<LiveKey>> {
    let row: Option<LiveRow> = sqlx::query_as(&format!(
        "WITH used AS (
            UPDATE api_keys SET last_used_at = now()
             WHERE key_hash = $1 AND key_id IN (SELECT key_id FROM live_api_keys WHERE key_hash = $1)
         )
         {LIVE_SELECT} WHERE k.key_hash = $1"
    ))
    .bind(key_hash)
    .fetch_optional(&mut *db)
    .await?;
    Ok(row.map(|r| r.into_key().1))
}

/// Every live key that sends events, by hash (ingest holds them in memory).
pub async fn live_sending_keys(db: &mut PgConnection) -> sqlx::Result<Vec<(String, LiveKey)>> {
    let rows: Vec<LiveRow> =
        sqlx::query_as(&format!("{LIVE_SELECT} WHERE k.scope IN ('ingest', 'service')"))
            .fetch_all(&mut *db)
            .await?;
    Ok(rows.into_iter().map(LiveRow::into_key).collect())
}

/// Records that these keys were used just now (ingest, every few seconds, for the keys that sent
/// since the last time).
pub async fn mark_used(db: &mut PgConnection, key_ids: &[String]) -> sqlx::Result<()> {
    sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE key_id = ANY($1)")
        .bind(key_ids)
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// A key to store.
pub struct NewKey<'a> {
    pub key_id: &'a str,
    pub key_hash: &'a str,
    pub scope: Scope,
    pub name: &'a str,
    pub org_id: Option<&'a str>,
    /// A service key's orgs; `None` for all orgs. Ignored for other scopes.
    pub orgs: Option<&'a [String]>,
}

/// Stores a new key. `Ok(false)` when one of a service key's orgs does not exist.
pub async fn insert(db: &mut PgConnection, key: &NewKey<'_>) -> sqlx::Result<bool> {
    let mut tx = db.begin().await?;
    let inserted = insert_in(&mut tx, key).await?;
    if inserted {
        tx.commit().await?;
    }
    Ok(inserted)
}

async fn insert_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    key: &NewKey<'_>,
) -> sqlx::Result<bool> {
    let all_orgs = key.scope == Scope::Service && key.orgs.is_none();
    sqlx::query(
        "INSERT INTO api_keys (key_id, key_hash, org_id, scope, name, all_orgs)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(key.key_id)
    .bind(key.key_hash)
    .bind(key.org_id)
    .bind(key.scope.as_str())
    .bind(key.name)
    .bind(all_orgs)
    .execute(&mut **tx)
    .await?;
    if let (Scope::Service, Some(orgs)) = (key.scope, key.orgs) {
        let listed = sqlx::query(
            "INSERT INTO api_key_orgs (key_id, org_id)
             SELECT $1, o.org_id FROM orgs o WHERE o.org_id = ANY($2)",
        )
        .bind(key.key_id)
        .bind(orgs)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        let wanted = orgs.iter().collect::<std::collections::BTreeSet<_>>().len() as u64;
        if listed != wanted {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A key as listed: everything but the secret (which is not stored) and its hash.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct KeyInfo {
    pub key_id: String,
    pub scope: String,
    pub name: String,
    pub org_id: Option<String>,
    pub all_orgs: bool,
    pub orgs: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub replaced_by: Option<String>,
    /// Not revoked and not past a rotation's grace period.
    pub live: bool,
}

const INFO_SELECT: &str = "SELECT k.key_id, k.scope, k.name, k.org_id, k.all_orgs,
        COALESCE(ARRAY(SELECT o.org_id FROM api_key_orgs o WHERE o.key_id = k.key_id ORDER BY o.org_id), '{}') AS orgs,
        k.created_at, k.last_used_at, k.expires_at, k.revoked_at, k.replaced_by,
        (k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())) AS live
   FROM api_keys k";

/// An org's keys, newest first.
pub async fn list_of_org(db: &mut PgConnection, org_id: &str) -> sqlx::Result<Vec<KeyInfo>> {
    sqlx::query_as(&format!(
        "{INFO_SELECT} WHERE k.org_id = $1 ORDER BY k.created_at DESC, k.key_id"
    ))
    .bind(org_id)
    .fetch_all(&mut *db)
    .await
}

/// Every service key, newest first.
pub async fn list_service(db: &mut PgConnection) -> sqlx::Result<Vec<KeyInfo>> {
    sqlx::query_as(&format!(
        "{INFO_SELECT} WHERE k.scope = 'service' ORDER BY k.created_at DESC, k.key_id"
    ))
    .fetch_all(&mut *db)
    .await
}

/// One key, if it belongs to `org_id` (`None`: a service key).
pub async fn get(
    db: &mut PgConnection,
    org_id: Option<&str>,
    key_id: &str,
) -> sqlx::Result<Option<KeyInfo>> {
    sqlx::query_as(&format!(
        "{INFO_SELECT} WHERE k.key_id = $1 AND k.org_id IS NOT DISTINCT FROM $2"
    ))
    .bind(key_id)
    .bind(org_id)
    .fetch_optional(&mut *db)
    .await
}

/// Revokes a key of `org_id` (`None`: a service key) now; `None` when there is no such key.
/// Revoking a revoked key changes nothing.
pub async fn revoke(
    db: &mut PgConnection,
    org_id: Option<&str>,
    key_id: &str,
) -> sqlx::Result<Option<KeyInfo>> {
    sqlx::query(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
          WHERE key_id = $1 AND org_id IS NOT DISTINCT FROM $2",
    )
    .bind(key_id)
    .bind(org_id)
    .execute(&mut *db)
    .await?;
    get(&mut *db, org_id, key_id).await
}

/// What a rotation came to.
pub enum Rotated {
    /// The new key is stored; the old one stays live until `old_expires_at`.
    Rotated { old_expires_at: DateTime<Utc> },
    /// No such key.
    NotFound,
    /// The key is revoked or past its grace period: nothing to rotate.
    NotLive,
}

/// Replaces a live key with `new` (same scope, org and orgs), and gives the old one a grace
/// period during which both work. In one transaction, so two rotations of one key cannot both
/// succeed.
pub async fn rotate(
    db: &mut PgConnection,
    org_id: Option<&str>,
    key_id: &str,
    new_key_id: &str,
    new_key_hash: &str,
    grace: chrono::Duration,
) -> sqlx::Result<Rotated> {
    let mut tx = db.begin().await?;
    let old: Option<(String, String, bool, bool)> = sqlx::query_as(
        "SELECT scope, name, all_orgs,
                (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
                 AND replaced_by IS NULL)
           FROM api_keys WHERE key_id = $1 AND org_id IS NOT DISTINCT FROM $2 FOR UPDATE",
    )
    .bind(key_id)
    .bind(org_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((scope, name, all_orgs, live)) = old else { return Ok(Rotated::NotFound) };
    if !live {
        return Ok(Rotated::NotLive);
    }
    let scope = Scope::parse(&scope).unwrap_or(Scope::Read);
    let orgs: Vec<String> =
        sqlx::query_scalar("SELECT org_id FROM api_key_orgs WHERE key_id = $1 ORDER BY org_id")
            .bind(key_id)
            .fetch_all(&mut *tx)
            .await?;
    let new = NewKey {
        key_id: new_key_id,
        key_hash: new_key_hash,
        scope,
        name: &name,
        org_id,
        orgs: (!all_orgs).then_some(&orgs[..]),
    };
    insert_in(&mut tx, &new).await?;
    let old_expires_at: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE api_keys SET expires_at = LEAST(COALESCE(expires_at, 'infinity'), now() + $2),
                             replaced_by = $3
          WHERE key_id = $1 RETURNING expires_at",
    )
    .bind(key_id)
    .bind(grace)
    .bind(new_key_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Rotated::Rotated { old_expires_at })
}
