//! PostgreSQL: the pool, the start-up check and Tally's migrations.
//!
//! All read models share one schema, migrated by whichever service starts first (sqlx takes an
//! advisory lock, so concurrent starts are safe).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::settings::Secret;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("invalid TALLY_DATABASE_URL: {0}")]
    Url(#[source] sqlx::Error),
    #[error("cannot reach PostgreSQL at {target}: {source}")]
    Unreachable {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Connects (failing within seconds if PostgreSQL is not there) and applies the migrations.
pub async fn connect(url: &Secret, max_connections: u32) -> Result<PgPool, DbSetupError> {
    let options: PgConnectOptions = url.expose().parse().map_err(DbSetupError::Url)?;
    // Name the server without the password for the error message.
    let target = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    );
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|source| DbSetupError::Unreachable { target, source })?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}
