//! Results as text for people (`--json` prints the results themselves).

use tally_metering::Period;
use tally_replay::diff::{InvoiceDiff, Verdict};

pub(crate) fn verify_table(period: &Period, diffs: &[InvoiceDiff]) -> String {
    let money = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .and_then(|v| v["total_cents"].as_i64())
            .map_or("-".to_string(), tally_pricing::dollars)
    };
    let mut out = format!(
        "verify {period}\n{:<28} {:>14} {:>14}  {:<20} {}\n",
        "org", "stored", "recomputed", "result", "differences"
    );
    for d in diffs {
        let verdict = match d.verdict {
            Verdict::Identical => "identical",
            Verdict::Differs => "DIFFERENT",
            Verdict::MissingStored => "MISSING (stored)",
            Verdict::MissingRecomputed => "MISSING (log)",
        };
        let fields: Vec<&str> = d.differences.iter().map(|x| x.field.as_str()).take(4).collect();
        let more = d.differences.len().saturating_sub(4);
        out.push_str(&format!(
            "{:<28} {:>14} {:>14}  {:<20} {}{}\n",
            d.org_id,
            money(&d.stored),
            money(&d.recomputed),
            verdict,
            fields.join(", "),
            if more > 0 { format!(" (+{more})") } else { String::new() }
        ));
    }
    let different = diffs.iter().filter(|d| d.verdict != Verdict::Identical).count();
    out.push_str(&format!(
        "{} orgs: {} identical, {} different\n",
        diffs.len(),
        diffs.len() - different,
        different
    ));
    out
}
