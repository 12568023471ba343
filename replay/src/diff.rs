//! The stored invoice next to the recomputed one: every field, every line, and exactly which
//! differ. Pure: the commands feed it what they read.

use serde::Serialize;
use serde_json::Value;
use tally_schemas::InvoiceV1;
use tally_store::invoices::BilledInvoice;

/// One field that differs, named by its path in the invoice (`lines[3].amount_cents`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub field: String,
    /// `null` when the stored invoice has no such field (or no invoice at all).
    pub stored: Value,
    pub recomputed: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Identical,
    Differs,
    /// The log finalizes an invoice the read models do not have.
    MissingStored,
    /// The read models hold an invoice the log does not finalize.
    MissingRecomputed,
}

/// The comparison of one (org, period).
#[derive(Debug, Clone, Serialize)]
pub struct InvoiceDiff {
    pub org_id: String,
    pub period: String,
    pub verdict: Verdict,
    /// The correction the stored invoice comes from, if any.
    pub correction_id: Option<String>,
    pub stored: Option<Value>,
    pub recomputed: Option<Value>,
    pub differences: Vec<Difference>,
}

/// The stored invoice as JSON, its tier exactly as stored (even if it names no tier).
pub fn stored_value(billed: &BilledInvoice) -> Value {
    let mut value = serde_json::to_value(billed.invoice()).expect("invoices serialise");
    value["tier"] = Value::String(billed.row.tier.clone());
    value
}

/// Flattens a JSON value into (path, leaf) pairs in document order.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&path, v, out);
            }
        }
        Value::Array(items) => {
            if items.is_empty() {
                out.push((prefix.to_string(), Value::Array(vec![])));
            }
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        leaf => out.push((prefix.to_string(), leaf.clone())),
    }
}

/// Compares the stored and the recomputed invoice of (org, period).
pub fn compare(
    org_id: &str,
    period: &str,
    stored: Option<&BilledInvoice>,
    recomputed: Option<&InvoiceV1>,
) -> InvoiceDiff {
    let stored_json = stored.map(stored_value);
    let recomputed_json = recomputed.map(|i| serde_json::to_value(i).expect("invoices serialise"));
    let mut left = Vec::new();
    let mut right = Vec::new();
    if let Some(v) = &stored_json {
        flatten("", v, &mut left);
    }
    if let Some(v) = &recomputed_json {
        flatten("", v, &mut right);
    }
    let mut differences = Vec::new();
    // Fields in the recomputed invoice's order, then any only the stored one has.
    for (field, r) in &right {
        let s = left.iter().find(|(f, _)| f == field).map_or(Value::Null, |(_, v)| v.clone());
        if &s != r {
            differences.push(Difference { field: field.clone(), stored: s, recomputed: r.clone() });
        }
    }
    for (field, s) in &left {
        if !right.iter().any(|(f, _)| f == field) {
            differences.push(Difference {
                field: field.clone(),
                stored: s.clone(),
                recomputed: Value::Null,
            });
        }
    }
    let verdict = match (stored, recomputed) {
        (None, Some(_)) => Verdict::MissingStored,
        (Some(_), None) => Verdict::MissingRecomputed,
        _ if differences.is_empty() => Verdict::Identical,
        _ => Verdict::Differs,
    };
    InvoiceDiff {
        org_id: org_id.to_string(),
        period: period.to_string(),
        verdict,
        correction_id: stored.and_then(|b| b.correction.as_ref().map(|c| c.correction_id.clone())),
        stored: stored_json,
        recomputed: recomputed_json,
        differences,
    }
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn money(cents: Option<&Value>) -> String {
    match cents.and_then(Value::as_i64) {
        Some(c) => tally_pricing::dollars(c),
        None => "-".into(),
    }
}

/// A line of an invoice in words: `1500 × 0.2¢ = $3.00`.
fn line_text(line: Option<&Value>) -> String {
    match line {
        None => "-".into(),
        Some(l) => format!(
            "{} × {}¢ = {}",
            cell(l.get("quantity")),
            cell(l.get("unit_amount_decimal")),
            money(l.get("amount_cents"))
        ),
    }
}

/// The two invoices side by side, a mark (`!`) on every row that differs, then the exact fields.
pub fn render(d: &InvoiceDiff) -> String {
    let mut out = String::new();
    let verdict = match d.verdict {
        Verdict::Identical => "identical".to_string(),
        Verdict::Differs => format!(
            "DIFFERENT ({} field{})",
            d.differences.len(),
            if d.differences.len() == 1 { "" } else { "s" }
        ),
        Verdict::MissingStored => {
            "DIFFERENT: the read models have no final invoice; the log has one".into()
        }
        Verdict::MissingRecomputed => {
            "DIFFERENT: the log finalizes no invoice; the read models have one".into()
        }
    };
    out.push_str(&format!("invoice {} {}: {verdict}\n", d.org_id, d.period));
    if let Some(c) = &d.correction_id {
        out.push_str(&format!("  (the stored invoice is correction {c})\n"));
    }
    let differs = |prefix: &str| {
        d.differences.iter().any(|x| {
            x.field == prefix
                || x.field.starts_with(&format!("{prefix}."))
                || x.field.starts_with(&format!("{prefix}["))
        })
    };
    let row = |out: &mut String, mark: bool, name: &str, s: String, r: String| {
        out.push_str(&format!("{} {:<34} {:<30} {}\n", if mark { "!" } else { " " }, name, s, r));
    };
    row(&mut out, false, "", "stored".into(), "recomputed from the log".into());
    let get = |v: &Option<Value>, path: &str| -> Option<Value> {
        let mut cur = v.as_ref()?;
        for part in path.split('.') {
            cur = cur.get(part)?;
        }
        Some(cur.clone())
    };
    for field in
        ["tier", "pricing_version", "currency", "status", "usage.traces", "usage.payload_bytes"]
    {
        row(
            &mut out,
            differs(field),
            field,
            cell(get(&d.stored, field).as_ref()),
            cell(get(&d.recomputed, field).as_ref()),
        );
    }
    let lines = |v: &Option<Value>| {
        v.as_ref()
            .and_then(|v| v.get("lines"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (sl, rl) = (lines(&d.stored), lines(&d.recomputed));
    for i in 0..sl.len().max(rl.len()) {
        let any = sl.get(i).or(rl.get(i)).expect("one side has line i");
        let name = format!(
            "line {} {} {}",
            i + 1,
            cell(any.get("kind")),
            any.get("metric").filter(|m| !m.is_null()).map(|m| cell(Some(m))).unwrap_or_default()
        );
        row(
            &mut out,
            differs(&format!("lines[{i}]")),
            name.trim_end(),
            line_text(sl.get(i)),
            line_text(rl.get(i)),
        );
    }
    row(
        &mut out,
        differs("total_cents"),
        "total",
        money(get(&d.stored, "total_cents").as_ref()),
        money(get(&d.recomputed, "total_cents").as_ref()),
    );
    row(
        &mut out,
        differs("finalized_at"),
        "finalized_at",
        cell(get(&d.stored, "finalized_at").as_ref()),
        cell(get(&d.recomputed, "finalized_at").as_ref()),
    );
    if !d.differences.is_empty() {
        out.push_str("differences:\n");
        for x in &d.differences {
            out.push_str(&format!(
                "  {}: {} → {}\n",
                x.field,
                cell(Some(&x.stored)),
                cell(Some(&x.recomputed))
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_pricing::Pricing;
    use tally_schemas::{BilledUsageV1, Tier};
    use tally_store::invoices::InvoiceRow;

    fn invoice(traces: u64) -> InvoiceV1 {
        let at = "2026-11-03T00:00:00Z".parse().unwrap();
        Pricing::builtin().invoice(
            "acme",
            "2026-10",
            Tier::Starter,
            BilledUsageV1 { traces, payload_bytes: 1_000 },
            Some(at),
        )
    }

    fn billed(i: &InvoiceV1) -> BilledInvoice {
        BilledInvoice {
            row: InvoiceRow {
                org_id: i.org_id.clone(),
                period: i.period.clone(),
                tier: i.tier.as_str().into(),
                pricing_version: i.pricing_version.clone(),
                currency: i.currency.clone(),
                traces: i.usage.traces as i64,
                payload_bytes: i.usage.payload_bytes as i64,
                lines: sqlx::types::Json(i.lines.clone()),
                total_cents: i.total_cents,
                finalized_at: i.finalized_at.unwrap(),
            },
            correction: None,
        }
    }

    #[test]
    fn equal_invoices_are_identical() {
        let i = invoice(101_500);
        let d = compare("acme", "2026-10", Some(&billed(&i)), Some(&i));
        assert_eq!(d.verdict, Verdict::Identical);
        assert!(d.differences.is_empty());
        assert!(render(&d).contains("identical"));
    }

    #[test]
    fn an_altered_line_is_named_exactly() {
        let i = invoice(101_500);
        let mut stored = billed(&i);
        stored.row.lines.0[3].amount_cents += 1;
        stored.row.total_cents += 1;
        let d = compare("acme", "2026-10", Some(&stored), Some(&i));
        assert_eq!(d.verdict, Verdict::Differs);
        let fields: Vec<&str> = d.differences.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(fields, ["lines[3].amount_cents", "total_cents"]);
        let text = render(&d);
        assert!(text.contains("! line 4 overage traces"), "{text}");
        assert!(text.contains("! total"), "{text}");
        assert!(!text.contains("! line 1"), "{text}");
    }

    #[test]
    fn an_unknown_stored_tier_and_missing_lines_are_differences() {
        let i = invoice(101_500);
        let mut stored = billed(&i);
        stored.row.tier = "platinum".into();
        stored.row.lines.0.pop();
        let d = compare("acme", "2026-10", Some(&stored), Some(&i));
        let fields: Vec<&str> = d.differences.iter().map(|x| x.field.as_str()).collect();
        assert!(fields.contains(&"tier"), "{fields:?}");
        assert!(fields.contains(&"lines[3].quantity"));
        assert_eq!(compare("acme", "2026-10", None, Some(&i)).verdict, Verdict::MissingStored);
        assert_eq!(
            compare("acme", "2026-10", Some(&stored), None).verdict,
            Verdict::MissingRecomputed
        );
    }
}
