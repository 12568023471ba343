//! The metered payload size, pinned: every payload in `golden/payloads.jsonl` (made by
//! `golden/generate.py`: chat calls, embeddings, long documents, nested values, floats, escapes,
//! non-ASCII text) with the size Tally computed for it when the file was made. Customers are
//! billed by these numbers, so a change of compressor, level, backend, JSON encoding or of how
//! the bytes are fed to the compressor must leave every one of them as it is.
//!
//! `TALLY_BLESS=1` rewrites the sizes from the code as it is; only for a new file, never to make
//! this test pass.

use tally_metering::rules::payload_bytes;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/payloads.jsonl");

#[test]
fn every_golden_payload_keeps_its_metered_size() {
    let text = std::fs::read_to_string(GOLDEN).expect("the golden payloads");
    let bless = std::env::var_os("TALLY_BLESS").is_some();
    let mut blessed = String::new();
    let mut checked = 0;
    for (n, line) in text.lines().enumerate() {
        let mut entry: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let size = payload_bytes(&entry["payload"]);
        if bless {
            entry["bytes"] = size.into();
            blessed.push_str(&serde_json::to_string(&entry).unwrap());
            blessed.push('\n');
            continue;
        }
        let expected = entry["bytes"].as_u64().expect("a size for every payload");
        assert_eq!(size, expected, "line {}: the metered size changed", n + 1);
        checked += 1;
    }
    if bless {
        std::fs::write(GOLDEN, blessed).expect("write the golden payloads");
    } else {
        assert!(checked >= 100, "only {checked} golden payloads");
    }
}
