//! One input record of the log, applied to a fold: the single place that says what a record of
//! `tally.trace-events.v1` or `tally.billing-events.v1` means.
//!
//! The aggregator (live) and the replay tool (from the log, later) both call [`apply_record`]
//! with what Kafka handed them: which log, the record's timestamp and its payload. Anything that
//! decides usage (which decoder, which time, what an undecodable record does) lives here, so the
//! two cannot drift apart.

use chrono::{DateTime, TimeZone, Utc};
use tally_schemas::{BillingEventRecordV1, TraceEventRecordRef, TraceEventRecordV1};

use crate::decision::Decision;
use crate::fold::Fold;

/// Which of the two input logs a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Log {
    /// `tally.trace-events.v1`: trace events and ticks.
    Trace,
    /// `tally.billing-events.v1`: subscription changes and ticks.
    Billing,
}

/// What one record did to the fold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A trace event, with its outcome (counted, duplicate, late, not billable, ...).
    Event(Decision),
    /// A trace-log tick: time passed.
    Tick,
    /// A subscription change.
    SubscriptionChanged,
    /// A billing-log tick.
    BillingTick,
    /// The record has no timestamp or cannot be decoded. Ingest and the api write only valid
    /// records, so this one was written around them: it changes nothing, not even a watermark,
    /// and stays in the log for inspection. The reason is for the operator's log line.
    Invalid(String),
}

/// Ingest's tick record, byte for byte: recognised without running the decoder.
const TRACE_TICK: &[u8] = br#"{"kind":"tick"}"#;
/// The billing log's tick record, byte for byte.
const BILLING_TICK: &[u8] = br#"{"type":"Tick"}"#;

/// The log time of a record: its Kafka timestamp (ingest's arrival time, the api's record time).
pub fn record_time(timestamp_ms: Option<i64>) -> Option<DateTime<Utc>> {
    timestamp_ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single())
}

/// Applies one record of `log`, with its Kafka timestamp in milliseconds and its payload (an
/// absent payload is an empty one), to `fold`.
pub fn apply_record(
    fold: &mut Fold,
    log: Log,
    timestamp_ms: Option<i64>,
    payload: &[u8],
) -> Applied {
    let Some(at) = record_time(timestamp_ms) else {
        return Applied::Invalid("the record has no timestamp".into());
    };
    match log {
        Log::Trace => {
            if payload == TRACE_TICK {
                fold.apply_tick(at);
                return Applied::Tick;
            }
            match TraceEventRecordV1::from_json_borrowed(payload) {
                Ok(TraceEventRecordRef::TraceCompleted(event)) => {
                    Applied::Event(fold.apply_event_ref(&event, at))
                }
                Ok(TraceEventRecordRef::Tick) => {
                    fold.apply_tick(at);
                    Applied::Tick
                }
                Err(e) => Applied::Invalid(e.to_string()),
            }
        }
        Log::Billing => {
            if payload == BILLING_TICK {
                fold.apply_billing_tick(at);
                return Applied::BillingTick;
            }
            match serde_json::from_slice::<BillingEventRecordV1>(payload) {
                Ok(BillingEventRecordV1::SubscriptionChanged(change)) => {
                    fold.apply_subscription(&change, at);
                    Applied::SubscriptionChanged
                }
                Ok(BillingEventRecordV1::Tick) => {
                    fold.apply_billing_tick(at);
                    Applied::BillingTick
                }
                Err(e) => Applied::Invalid(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::FoldConfig;

    #[test]
    fn the_tick_fast_paths_are_the_serialised_ticks() {
        assert_eq!(serde_json::to_vec(&TraceEventRecordV1::Tick).unwrap(), TRACE_TICK);
        assert_eq!(serde_json::to_vec(&BillingEventRecordV1::Tick).unwrap(), BILLING_TICK);
    }

    #[test]
    fn an_invalid_record_moves_no_watermark() {
        let mut fold = Fold::new(FoldConfig::default());
        let t = 1_790_000_000_000;
        assert!(matches!(
            apply_record(&mut fold, Log::Trace, Some(t), b"{\"kind\":\"nope\"}"),
            Applied::Invalid(_)
        ));
        assert!(matches!(
            apply_record(&mut fold, Log::Billing, Some(t), b"not json"),
            Applied::Invalid(_)
        ));
        assert!(matches!(
            apply_record(&mut fold, Log::Trace, None, TRACE_TICK),
            Applied::Invalid(_)
        ));
        assert_eq!(fold.watermarks().trace, None);
        assert_eq!(fold.watermarks().billing, None);
        assert_eq!(apply_record(&mut fold, Log::Trace, Some(t), TRACE_TICK), Applied::Tick);
        assert_eq!(
            apply_record(&mut fold, Log::Billing, Some(t), b"{ \"type\": \"Tick\" }"),
            Applied::BillingTick
        );
        assert_eq!(fold.watermarks().trace, record_time(Some(t)));
        assert_eq!(fold.watermarks().billing, record_time(Some(t)));
    }
}
