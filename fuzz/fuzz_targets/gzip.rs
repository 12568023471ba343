//! `Content-Encoding: gzip` bodies of both of ingest's doors: the first two bytes are the limit,
//! the rest the body. The limited decoder never panics, never answers more than the limit, and
//! agrees with a decoder without one (`tally_formats::gzip::fuzz_gunzip`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tally_formats::gzip::fuzz_gunzip(data));
