//! Pricing through its public face: golden invoices written by hand, and properties that hold for
//! any usage. One test binary with one module per kind.

mod golden;
mod properties;
