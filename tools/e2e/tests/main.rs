//! Tally end to end: the real binaries against the real broker, database and browser. One test
//! binary (linking is the slow part of a build); one module per capability. Run one with
//! `cargo test --release --workspace --test e2e -- MODULE::` and the `TALLY_TEST_*` variables
//! `make test` sets (docs/development.md).

mod bad_input;
mod billing;
mod broker_faults;
mod crash_recovery;
mod instances;
mod keys;
mod limits;
mod otel_sdks;
mod otlp;
mod page;
mod pipeline_exact;
mod probes;
mod replay;
mod resilience;
mod stripe;
mod walls;
mod zz_secrets;
