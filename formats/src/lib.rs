//! The formats events arrive in at ingest, each read into the same [`Decoded`] items: one shape
//! behind every front door. Pure: no I/O, no clock. What happens after decoding (validation,
//! the arrival window, metering, the org registry, the log) is ingest's and the same for every
//! format, so a new format is one more module here.
//!
//! - [`native`]: Tally's own `TraceCompleted` v1 events as one JSON object, a JSON array or
//!   NDJSON (`POST /v1/events`).
//! - [`otlp`]: OpenTelemetry's `ExportTraceServiceRequest`, protobuf or JSON, one event per span
//!   (`POST /v1/traces`; docs/otlp.md).
//!
//! The load generator and the tests use the same code to build requests and to know what they
//! must be billed; the fuzz targets (`fuzz/`) feed it arbitrary bytes ([`fuzzing`]).

pub mod fuzzing;
pub mod gzip;
pub mod native;
pub mod otlp;

use tally_schemas::{FieldError, TraceCompletedV1};

/// One element of a request (an event, a span), as its format's decoder read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The event's id when it could be read, even from an element that is not a valid event, so
    /// that a rejection names what the client sent.
    pub event_id: Option<String>,
    pub event: Result<TraceCompletedV1, NotAnEvent>,
}

/// Why an element is not an event to meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAnEvent {
    /// The element breaks its format's rules: rejected, with a stable code.
    Rejected(FieldError),
    /// An OTLP span that maps to none of Tally's operations: not metered, and never an error for
    /// the request it came in.
    Unmapped,
}

impl Decoded {
    pub fn rejected(event_id: Option<String>, error: FieldError) -> Decoded {
        Decoded { event_id, event: Err(NotAnEvent::Rejected(error)) }
    }
}

/// Why a whole body could not be read in its format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body is not an OTLP ExportTraceServiceRequest: {0}")]
    NotOtlp(String),
    #[error("the body is empty")]
    Empty,
    #[error("the body holds more than {limit} events, the most one request may carry")]
    TooManyEvents { limit: usize },
}
