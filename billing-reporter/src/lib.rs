//! The billing reporter: tells Stripe exactly what each customer used, never twice and never
//! missing.
//!
//! - [`plan`]: the pure decision of what to send next for one (org, period, metric).
//! - [`ledger`]: the SQL of the ledger (what Stripe accepted, what is on its way, what failed).
//! - [`report`]: the reporting cycle and the service around it.
//! - [`reconcile`]: Tally's usage, the ledger and Stripe's summaries side by side.
//! - [`status`]: the ledger at a glance and the failures waiting for an operator.
//! - [`setup`]: `setup-stripe`, the meters, products and prices of Tally's price list, found or
//!   created idempotently.
//! - [`settings`], [`metrics`]. The Stripe client itself is the `tally-stripe` crate.

pub mod ledger;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod report;
pub mod settings;
pub mod setup;
pub mod status;

pub use tally_stripe::client;
