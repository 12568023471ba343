//! The Stripe stand-in over HTTP, as Tally's tests and Stripe's own client library use it. One
//! test binary with one module per area.

mod http;
mod pricing_parity;
mod python_contract;
mod state;
mod webhooks;
