//! Data access: every SQL statement of the api, one file per table family. Each function takes
//! a pool (or a transaction, or any executor) and returns typed rows; the handlers parse,
//! authorize, call these and build the answer.
//!
//! Layout: [`usage`] (`usage_periods`, `usage_by_operation`, `usage_daily`, `late_events`),
//! [`invoices`] (the periods still priced as drafts), [`orgs`] (`orgs`: create, find, the
//! operator's sorted list), [`keys`] (`api_keys`), [`sessions`] (`page_sessions`,
//! `portal_links`), [`stripe`] (`stripe_customers`, `stripe_invoices`, `stripe_webhook_events`),
//! [`pipeline`] (the figures of `GET /v1/pipeline`). Final invoices are read with
//! [`tally_common::invoices`], shared with the other services.

pub mod invoices;
pub mod keys;
pub mod orgs;
pub mod pipeline;
pub mod sessions;
pub mod stripe;
pub mod usage;

/// A transaction on the api's PostgreSQL.
pub type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;
