//! Tally's PostgreSQL: the read models' schema and every query the stages run against it.
//!
//! One schema serves all stages. The projector writes the usage read models from the log; the
//! api reads them and keeps orgs, keys, sessions and what it learns from Stripe; the billing
//! reporter reads usage and invoices and keeps its meter ledger; replay compares and rebuilds.
//! The SQL lives here, one file per table family, so a table's every reader and writer is in
//! one place. Each function takes a pool, a transaction or an executor and returns typed rows.
//!
//! Layout:
//! - `migrations/` and [`MIGRATOR`]: the schema, applied by `tally-migrate` ([`migrate`]) as the
//!   role that owns it. The services connect as roles of their own, which cannot change the
//!   schema ([`connect`] checks that it is the one this build needs); migration 0009 sets out
//!   the roles, their grants and the row-level security between orgs.
//! - [`OrgWall`]: the api's transactions, each seeing one org's rows or, by choice, every org's.
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
    #[error(
        "the database's schema is at migration {found}, this build needs {needed}: run \
         tally-migrate (make migrate) as the schema's owner first"
    )]
    SchemaBehind { found: i64, needed: i64 },
    #[error("cannot read the database's schema version: {0}")]
    SchemaUnreadable(#[source] sqlx::Error),
}

/// The newest migration this build has.
pub fn schema_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

async fn open(url: &Secret, max_connections: u32) -> Result<PgPool, DbSetupError> {
    let options: PgConnectOptions = url.expose().parse().map_err(DbSetupError::Url)?;
    // Name the server without the password for the error message.
    let target = format!(
        "{}:{}/{} as {}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or(""),
        options.get_username()
    );
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|source| DbSetupError::Unreachable { target, source })
}

/// Connects a service (failing within seconds if PostgreSQL is not there) and checks that the
/// schema has every migration of this build. Services never migrate: `tally-migrate` does, as
/// the owner, before they start.
pub async fn connect(url: &Secret, max_connections: u32) -> Result<PgPool, DbSetupError> {
    let pool = open(url, max_connections).await?;
    let found: Result<Option<i64>, sqlx::Error> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await;
    let found = match found {
        Ok(found) => found.unwrap_or(0),
        // No migrations table, or one this role may not read (a schema from before 0009).
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P01" | "42501")) => {
            0
        }
        Err(e) => return Err(DbSetupError::SchemaUnreadable(e)),
    };
    let needed = schema_version();
    if found < needed {
        return Err(DbSetupError::SchemaBehind { found, needed });
    }
    Ok(pool)
}

/// What [`migrate`] did.
#[derive(Debug)]
pub struct Migrated {
    pub before: i64,
    pub after: i64,
}

/// Applies the migrations the database lacks, as the role `url` names, which becomes the owner of
/// what they create. sqlx takes an advisory lock: two runs at once apply each migration once.
pub async fn migrate(url: &Secret) -> Result<Migrated, DbSetupError> {
    let pool = open(url, 1).await?;
    let before: i64 =
        sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
    MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(Migrated { before, after: schema_version() })
}

/// The api's way into PostgreSQL: every transaction says whose rows it may see, and the
/// database holds it to that (row-level security on every table keyed by org, migration 0009).
/// The api's role sees nothing outside a transaction begun here.
#[derive(Clone, Debug)]
pub struct OrgWall {
    pool: PgPool,
}

impl OrgWall {
    pub fn new(pool: PgPool) -> OrgWall {
        OrgWall { pool }
    }

    /// A transaction that sees `org_id`'s rows only, whatever its queries ask for.
    pub async fn org(&self, org_id: &str) -> sqlx::Result<Tx<'static>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config('tally.org_id', $1, true)")
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// A transaction that sees every org's rows: for requests made with the admin token, Stripe's
    /// webhooks (which name an org only once processed), looking a credential up by its hash,
    /// and the api's own sweeps.
    pub async fn all_orgs(&self) -> sqlx::Result<Tx<'static>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config('tally.all_orgs', 'on', true)").execute(&mut *tx).await?;
        Ok(tx)
    }

    /// Whether PostgreSQL answers (the readiness probe).
    pub async fn ping(&self) -> sqlx::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }
}
