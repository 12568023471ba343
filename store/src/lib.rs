//! Tally's PostgreSQL: the read models' schema and every query the stages run against it.
//!
//! One schema serves all stages. The projector writes the usage read models from the log; the
//! api reads them and keeps orgs, keys, sessions and what it learns from Stripe; the billing
//! reporter reads usage and invoices and keeps its meter ledger; replay compares and rebuilds.
//! The SQL lives here, one file per table family, so a table's every reader and writer is in
//! one place. Each function takes a pool, a transaction or an executor and returns typed rows.
//!
//! Layout:
//! - `migrations/` and [`MIGRATOR`]: the schema, applied by whichever stage starts first
//!   ([`connect`]; sqlx takes an advisory lock, so concurrent starts are safe).
//! - [`projection`]: the projector's writes (`usage_periods`, `usage_by_operation`,
//!   `usage_daily`, `late_events`, `invoices`, `invoice_corrections`) with the log offsets they
//!   came from (`projector_offsets`), in one transaction per batch.
//! - [`usage`]: the usage read models as the api reads them.
//! - [`invoices`]: final invoices and the correction in effect (the api, the reporter, replay),
//!   and the periods still priced as drafts.
//! - [`orgs`], [`keys`]: `orgs` and `api_keys` (the api manages them; ingest loads them).
//! - [`sessions`]: `page_sessions` and `portal_links`.
//! - [`stripe`]: `stripe_customers`, `stripe_invoices`, `stripe_webhook_events`.
//! - [`pipeline`]: the figures of `GET /v1/pipeline`.
//!
//! The billing reporter's meter ledger (`stripe_meter_ledger`, `stripe_report_failures`) is read
//! and written only by the reporter, whose rule of what is due is that SQL: it stays in
//! `billing-reporter/src/ledger.rs`.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tally_common::settings::Secret;

pub mod invoices;
pub mod keys;
pub mod orgs;
pub mod pipeline;
pub mod projection;
pub mod sessions;
pub mod stripe;
pub mod usage;

/// A transaction on Tally's PostgreSQL.
pub type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

/// The schema: `store/migrations`, embedded at compile time.
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
