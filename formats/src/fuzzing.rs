//! What the fuzz targets (`fuzz/fuzz_targets/`) run on each input, kept here so that the test
//! below runs every input of their corpora (`fuzz/corpus/`) the same way in `make test`.
//!
//! The first byte of an input picks the variant of the format (OTLP: protobuf or JSON; native:
//! JSON or NDJSON); the rest is the body. Decoding must end in items or in one error for the
//! body, never in a panic, and every event it yields is checked by the schema's own rules.

use crate::otlp::Encoding;
use crate::{native, otlp, Decoded};

/// At most this many events per body, as ingest's default limit.
const MAX_EVENTS: usize = 10_000;

fn check(items: Vec<Decoded>) {
    for item in items {
        if let Ok(event) = item.event {
            let _ = event.validate();
        }
    }
}

/// A body of `POST /v1/traces`.
pub fn otlp_body(data: &[u8]) {
    let Some((&first, body)) = data.split_first() else { return };
    let encoding = if first & 1 == 0 { Encoding::Protobuf } else { Encoding::Json };
    if let Ok(items) = otlp::decode(body, encoding, MAX_EVENTS) {
        check(items);
    }
}

/// A body of `POST /v1/events`.
pub fn native_body(data: &[u8]) {
    let Some((&first, body)) = data.split_first() else { return };
    if let Ok(items) = native::decode(body, first & 1 == 1, MAX_EVENTS) {
        check(items);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every input the fuzzers kept is a regression test.
    #[test]
    fn the_fuzz_corpora_decode_without_panicking() {
        let corpora = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for (target, run) in [
            ("otlp", super::otlp_body as fn(&[u8])),
            ("native", super::native_body),
            ("gzip", crate::gzip::fuzz_gunzip),
        ] {
            let mut inputs = 0;
            for entry in
                std::fs::read_dir(corpora.join(target)).expect("the corpus is in the repository")
            {
                run(&std::fs::read(entry.unwrap().path()).unwrap());
                inputs += 1;
            }
            assert!(inputs >= 20, "fuzz/corpus/{target} holds only {inputs} inputs");
        }
    }
}
