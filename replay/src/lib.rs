//! `replay`: recompute, from the immutable event log, exactly what Tally should have billed.
//!
//! A customer disputes an invoice, a pricing bug is fixed, a read model is lost: finance and
//! support recompute from `tally.trace-events.v1` and `tally.billing-events.v1` with the very code
//! the aggregator runs (`tally_metering::input::apply_record`, the same [`tally_metering::Fold`],
//! the same `Pricing`), compare with what PostgreSQL holds, and repair through the log, never by
//! editing rows.
//!
//! Layout:
//! - [`source`]: reading one partition's two logs from Kafka, merged in log-time order.
//! - [`recompute`]: folding partitions (several at once) until a period's invoices are final.
//! - [`diff`]: the stored invoice next to the recomputed one, field by field and line by line.
//! - [`correct`]: the correction record appended to `tally.corrections.v1`.
//! - [`rebuild`]: every read model re-projected from the log into fresh tables, swapped in.
//! - [`progress`]: the progress bar on a terminal.
//!
//! docs/replay.md says how to use it and why each choice was made.

pub mod correct;
pub mod diff;
pub mod progress;
pub mod rebuild;
pub mod recompute;
pub mod source;
