//! `api_keys`: keys by their hash (the keys themselves are never stored).

use sqlx::PgPool;

/// A key that has not been revoked.
#[derive(sqlx::FromRow)]
pub struct LiveKey {
    pub org_id: String,
    /// `read` or `ingest`.
    pub scope: String,
}

/// The unrevoked key of this hash, if any.
pub async fn find_live(pool: &PgPool, key_hash: &str) -> sqlx::Result<Option<LiveKey>> {
    sqlx::query_as("SELECT org_id, scope FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
        .bind(key_hash)
        .fetch_optional(pool)
        .await
}

/// The hashes of every unrevoked ingest key (ingest holds them in memory).
pub async fn live_ingest_hashes(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT key_hash FROM api_keys WHERE scope = 'ingest' AND revoked_at IS NULL",
    )
    .fetch_all(pool)
    .await
}

/// Stores a new key of `org_id`, by its hash.
pub async fn insert(pool: &PgPool, key_hash: &str, org_id: &str, scope: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO api_keys (key_hash, org_id, scope) VALUES ($1, $2, $3)")
        .bind(key_hash)
        .bind(org_id)
        .bind(scope)
        .execute(pool)
        .await?;
    Ok(())
}
