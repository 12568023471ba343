//! The billing reporter: tells Stripe what each customer used.
//!
//! - [`settings`]: the Stripe key and API base (the stand-in's on the local stack).
//! - [`setup`]: `setup-stripe`, the meters, products and prices of Tally's price list, found or
//!   created idempotently.

pub mod client;
pub mod settings;
pub mod setup;
