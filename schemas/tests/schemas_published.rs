//! The JSON Schemas under docs/schemas/ are generated from the Rust types and must match them.
//! Regenerate with `TALLY_UPDATE_SCHEMAS=1 cargo test -p tally-schemas`.

use std::path::PathBuf;

#[test]
fn published_json_schemas_match_the_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/schemas");
    let update = std::env::var_os("TALLY_UPDATE_SCHEMAS").is_some();
    for (file, schema) in tally_schemas::json_schemas() {
        let path = dir.join(file);
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let published = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run with TALLY_UPDATE_SCHEMAS=1", path.display()));
        assert_eq!(published, text, "{file} is stale; run with TALLY_UPDATE_SCHEMAS=1");
    }
}
