//! Workloads for Tally: the sample `make demo` sends, the load `make bench` drives, and the
//! generated month the end-to-end tests check.
//!
//! A [`Workload`] is a list of deliveries (events as an emitter sends them, re-deliveries
//! included) together with the usage the metering rules give for them, computed here
//! independently of the pipeline: by plain counting over unique event ids, with payload sizes
//! measured by compressing the JSON directly.
//!
//! Layout: [`generate`] builds workloads, [`otlp`] builds traces for OpenTelemetry senders and
//! the usage they must give, [`send`] delivers them to ingest like a careful client (batches,
//! retries with the same event ids), [`api`] reads usage back.

pub mod api;
pub mod generate;
pub mod otlp;
pub mod secrets;
pub mod send;

pub use generate::{Expected, Workload, WorkloadSpec};
