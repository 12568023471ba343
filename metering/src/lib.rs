//! Tally's pure core: the metering rules, billing periods, deduplication and the usage fold.
//!
//! Nothing in this crate does I/O or reads a clock. Every time it uses comes from the event log
//! (the arrival timestamp ingest recorded), so the live aggregator and the replay tool, calling the
//! very same functions on the same log, reach the same usage, byte for byte.
//!
//! Layout:
//! - [`period`]: the billing period (a UTC calendar month) and when it closes.
//! - [`rules`]: what an event is worth: billable or not and why, the arrival window, payload size.
//! - [`decision`]: the metering decision for one delivery: billed, or which not-billed reason.
//! - [`dedup`]: the fixed-size fingerprint under which an event id is remembered.
//! - [`fold`]: the state of one log partition and how each record changes it.
//! - [`input`]: what one record of either input log means, for the aggregator and the replay tool.
//!
//! docs/metering.md states the same rules for people.

pub mod decision;
pub mod dedup;
pub mod fold;
pub mod input;
pub mod period;
pub mod rules;

pub use decision::{decide, Decision, Delivery};
pub use fold::{
    tier_at, Fold, FoldConfig, PeriodChange, PeriodKey, PeriodSnapshot, TierHistory, Watermarks,
};
pub use input::{apply_record, Applied, Log};
pub use period::Period;
pub use rules::{classify, Classification};
