//! The billing reporter and Tally's Stripe client against the real database and the Stripe
//! stand-in. One test binary with one module per area.

mod ledger;
mod retries;
mod stripe_contract;
