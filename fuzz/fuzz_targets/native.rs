//! Bodies of ingest's `POST /v1/events`: the first byte picks NDJSON or JSON, the rest is the
//! body. Decoding never panics, and every event it yields is checked by the schema's own rules.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tally_formats::fuzzing::native_body(data));
