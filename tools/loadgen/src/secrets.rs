//! The secrets a test run hands out (keys, tokens, links), written one per line to the file
//! `TALLY_SECRETS_LEDGER` names, so that a sweep at the end of the run can look for each of them
//! in every log and metric (tools/e2e/tests/zz_secrets.rs). Without the variable nothing is
//! written: the demo and the benchmarks keep no ledger.

use std::io::Write;

/// Adds `secret` to the ledger, if there is one.
pub fn remember(secret: &str) {
    let Ok(path) = std::env::var("TALLY_SECRETS_LEDGER") else { return };
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{secret}");
    }
}
