//! OTLP bodies as ingest's `POST /v1/traces` reads them: the first byte picks the encoding
//! (protobuf or JSON), the rest is the body. Whatever the bytes, decoding ends in spans mapped
//! to events or refusals, or in one error for the body; it never panics, and every event it
//! yields passes or fails the schema's own rules without panicking either.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tally_formats::fuzzing::otlp_body(data));
