//! The metering rules: what one event is worth. docs/metering.md says the same in prose.

use chrono::{DateTime, Duration, Utc};
use flate2::{Compress, Compression, FlushCompress, Status as DeflateStatus};
use tally_schemas::{FieldError, FieldErrorCode, Status};

/// How far back an event's `ended_at` may lie when it arrives.
pub const MAX_EVENT_AGE: Duration = Duration::days(35);
/// How far ahead of its arrival an event's `ended_at` may lie (clock skew of emitters).
pub const MAX_EVENT_FUTURE: Duration = Duration::minutes(5);

/// What an event is, before dedup and lateness are considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    /// A successful root span: adds one trace and its payload bytes.
    Billable,
    /// A span with a parent: never billed.
    ChildSpan,
    /// A root span that ended in `error` or `cancelled`.
    NotSuccess,
}

/// The billing rule: only successful root spans are billed.
pub fn classify(is_root: bool, status: Status) -> Classification {
    match (is_root, status) {
        (false, _) => Classification::ChildSpan,
        (true, Status::Success) => Classification::Billable,
        (true, Status::Error | Status::Cancelled) => Classification::NotSuccess,
    }
}

/// Ingest's window: `ended_at` no more than [`MAX_EVENT_AGE`] before the arrival time and no more
/// than [`MAX_EVENT_FUTURE`] after it.
pub fn check_arrival_window(
    ended_at: DateTime<Utc>,
    arrival: DateTime<Utc>,
) -> Result<(), FieldError> {
    if ended_at < arrival - MAX_EVENT_AGE {
        return Err(FieldError::new(
            FieldErrorCode::OutOfWindow,
            format!("ended_at: more than 35 days before arrival ({})", arrival.to_rfc3339()),
        ));
    }
    if ended_at > arrival + MAX_EVENT_FUTURE {
        return Err(FieldError::new(
            FieldErrorCode::OutOfWindow,
            format!("ended_at: more than 5 minutes after arrival ({})", arrival.to_rfc3339()),
        ));
    }
    Ok(())
}

/// The metered size of a payload: the byte length of the gzip member (header, deflate stream at
/// flate2's default level 6, trailer) of its compact JSON serialisation.
///
/// Measured without making the gzip member: the JSON is written out whole, deflated by a
/// compressor kept per thread (reset for each payload, so each is compressed exactly as by a
/// fresh `GzEncoder` with the default level), and the size is the deflate stream's length plus
/// the gzip header and trailer. Feeding a `GzEncoder` as serde_json writes, token by token,
/// took two to almost three times as long: flate2's miniz_oxide backend zeroes a 32 KiB buffer on every write
/// (examples/payload_size_throughput.rs). tests/payload_sizes.rs pins the sizes.
pub fn payload_bytes(payload: &serde_json::Value) -> u64 {
    thread_local! {
        static MEASURER: std::cell::RefCell<Measurer> = std::cell::RefCell::new(Measurer::new());
    }
    MEASURER.with_borrow_mut(|m| m.measure(payload))
}

/// A gzip member's fixed bytes around the deflate stream, as flate2's `GzEncoder` writes them:
/// a 10-byte header (no name, comment or extra field) and an 8-byte trailer (CRC-32, length).
const GZIP_FRAMING: u64 = 10 + 8;

struct Measurer {
    json: Vec<u8>,
    deflate: Compress,
    out: Box<[u8]>,
}

impl Measurer {
    fn new() -> Measurer {
        Measurer {
            json: Vec::new(),
            deflate: Compress::new(Compression::default(), false),
            out: vec![0; 16 * 1024].into_boxed_slice(),
        }
    }

    fn measure(&mut self, payload: &serde_json::Value) -> u64 {
        self.json.clear();
        serde_json::to_writer(&mut self.json, payload).expect("writing JSON to memory cannot fail");
        self.deflate.reset();
        let mut input = &self.json[..];
        loop {
            let before = self.deflate.total_in();
            let status = self
                .deflate
                .compress(input, &mut self.out, FlushCompress::Finish)
                .expect("deflating a buffer in memory cannot fail");
            input = &input[(self.deflate.total_in() - before) as usize..];
            if status == DeflateStatus::StreamEnd {
                break;
            }
        }
        // A huge payload's buffer is not kept for the thread's lifetime.
        if self.json.capacity() > 1 << 20 {
            self.json = Vec::new();
        }
        GZIP_FRAMING + self.deflate.total_out()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::{Read, Write};

    #[test]
    fn only_successful_roots_bill() {
        assert_eq!(classify(true, Status::Success), Classification::Billable);
        assert_eq!(classify(true, Status::Error), Classification::NotSuccess);
        assert_eq!(classify(true, Status::Cancelled), Classification::NotSuccess);
        assert_eq!(classify(false, Status::Success), Classification::ChildSpan);
        assert_eq!(classify(false, Status::Error), Classification::ChildSpan);
    }

    #[test]
    fn payload_bytes_is_the_gzip_length_of_compact_json() {
        let value = serde_json::json!({"prompt": "hello ".repeat(100), "n": [1, 2, 3]});
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(serde_json::to_string(&value).unwrap().as_bytes()).unwrap();
        let compressed = gz.finish().unwrap();
        assert_eq!(payload_bytes(&value), compressed.len() as u64);
        // and it really is the compact JSON that was compressed
        let mut text = String::new();
        flate2::read::GzDecoder::new(&compressed[..]).read_to_string(&mut text).unwrap();
        assert_eq!(text, serde_json::to_string(&value).unwrap());
    }

    #[test]
    fn arrival_window_edges() {
        let arrival =
            DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z").unwrap().with_timezone(&Utc);
        assert!(check_arrival_window(arrival - MAX_EVENT_AGE, arrival).is_ok());
        assert!(check_arrival_window(arrival - MAX_EVENT_AGE - Duration::milliseconds(1), arrival)
            .is_err());
        assert!(check_arrival_window(arrival + MAX_EVENT_FUTURE, arrival).is_ok());
        let err = check_arrival_window(arrival + MAX_EVENT_FUTURE + Duration::seconds(1), arrival)
            .unwrap_err();
        assert_eq!(err.code, FieldErrorCode::OutOfWindow);
    }
}
