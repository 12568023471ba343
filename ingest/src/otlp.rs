//! OTLP/HTTP's answers (`POST /v1/traces`; docs/otlp.md): the partial success when some spans were
//! not metered, and `google.rpc.Status` for a refused request. The request itself is read by
//! `tally_formats::otlp`.

use prost::Message;
use tally_formats::otlp::proto::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use tally_formats::otlp::span;
pub use tally_formats::otlp::Encoding;

use crate::accept::{Candidate, Outcome};
use crate::admit::Admitted;

/// How many spans of a request were not metered, and why: OTLP's partial success. Unmapped
/// spans count as rejected there, so that a sender can see them.
#[derive(Debug, Default)]
pub struct PartialSuccess {
    pub unmapped: usize,
    pub rejected: usize,
    /// The first few rejections, each naming its span.
    pub reasons: Vec<String>,
}

impl PartialSuccess {
    /// At most this many rejections are spelled out in `error_message`.
    pub const REASONS: usize = 5;

    /// What a request's spans came to, once admitted.
    pub fn of(candidates: &[Candidate], admitted: Admitted) -> PartialSuccess {
        let reasons = candidates
            .iter()
            .enumerate()
            .filter_map(|(index, candidate)| match &candidate.outcome {
                Outcome::Rejected(e) => {
                    let span = candidate.event_id.clone().unwrap_or_else(|| format!("#{index}"));
                    Some(format!("span {span}: {e}"))
                }
                _ => None,
            })
            .take(Self::REASONS)
            .collect();
        PartialSuccess { unmapped: admitted.unmapped, rejected: admitted.rejected, reasons }
    }

    pub fn response(&self) -> ExportTraceServiceResponse {
        let rejected_spans = self.unmapped + self.rejected;
        if rejected_spans == 0 {
            return ExportTraceServiceResponse { partial_success: None };
        }
        let mut parts = Vec::new();
        if self.unmapped > 0 {
            parts.push(format!(
                "{} span(s) not metered: no {} or {} that Tally meters",
                self.unmapped,
                span::OPERATION,
                span::GEN_AI_OPERATION
            ));
        }
        if self.rejected > 0 {
            parts.push(format!(
                "{} span(s) rejected: {}{}",
                self.rejected,
                self.reasons.join("; "),
                if self.rejected > self.reasons.len() { "; …" } else { "" }
            ));
        }
        ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: rejected_spans as i64,
                error_message: parts.join(". "),
            }),
        }
    }
}

/// Encodes the answer to an export in the request's encoding.
pub fn encode_response(response: &ExportTraceServiceResponse, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(response).expect("a response serializes"),
    }
}

/// `google.rpc.Status`, the body OTLP/HTTP answers a refused request with. Its `details` are
/// never sent.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    /// A `google.rpc.Code`.
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The `google.rpc.Code` nearest to an HTTP status.
pub fn rpc_code(status: u16) -> i32 {
    match status {
        400 | 413 | 415 => 3, // INVALID_ARGUMENT
        401 => 16,            // UNAUTHENTICATED
        429 => 8,             // RESOURCE_EXHAUSTED
        503 => 14,            // UNAVAILABLE
        _ => 2,               // UNKNOWN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partial_success_counts_unmapped_and_rejected_spans() {
        assert_eq!(PartialSuccess::default().response(), ExportTraceServiceResponse::default());
        let not_metered = PartialSuccess {
            unmapped: 2,
            rejected: 1,
            reasons: vec!["span otlp-1-2: unknown_org: org_id: no org \"x\"".into()],
        };
        let partial = not_metered.response().partial_success.unwrap();
        assert_eq!(partial.rejected_spans, 3);
        assert!(
            partial.error_message.starts_with("2 span(s) not metered"),
            "{}",
            partial.error_message
        );
        assert!(partial.error_message.contains("unknown_org"), "{}", partial.error_message);
        let status = RpcStatus { code: rpc_code(400), message: "invalid_otlp: …".into() };
        assert_eq!(RpcStatus::decode(&status.encode_to_vec()[..]).unwrap(), status);
    }
}
