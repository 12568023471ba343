//! Properties of pricing that hold for any usage.

use proptest::prelude::*;
use tally_pricing::Pricing;
use tally_schemas::{BilledUsageV1, LineKind, Tier};

fn tier() -> impl Strategy<Value = Tier> {
    prop::sample::select(Tier::ALL.to_vec())
}

/// Usage around the interesting places (included amounts, band edges) and anywhere.
fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..20_000_000,
        prop::sample::select(vec![100_000u64, 250_000, 600_000, 2_500_000, 5_000_000, 10_000_000])
            .prop_flat_map(|edge| (edge - 3)..(edge + 3)),
        0u64..400_000_000_000,
        0u64..(u64::MAX / 4),
    ]
}

fn usage() -> impl Strategy<Value = BilledUsageV1> {
    (amount(), amount()).prop_map(|(traces, payload_bytes)| BilledUsageV1 { traces, payload_bytes })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// More usage never costs less.
    #[test]
    fn total_never_decreases_when_usage_grows(tier in tier(), u in usage(), dt in 0u64..5_000_000, db in 0u64..50_000_000_000) {
        let pricing = Pricing::builtin();
        let more = BilledUsageV1 { traces: u.traces.saturating_add(dt), payload_bytes: u.payload_bytes.saturating_add(db) };
        prop_assert!(pricing.price(tier, more).1 >= pricing.price(tier, u).1);
    }

    /// The estimate for a tier is the draft invoice for the same usage, line for line.
    #[test]
    fn estimate_equals_the_draft_invoice(u in usage()) {
        let pricing = Pricing::builtin();
        let (estimates, cheapest) = pricing.estimate(u);
        for e in &estimates {
            let draft = pricing.invoice("org", "2026-11", e.tier, u, None);
            prop_assert_eq!(&draft.lines, &e.lines);
            prop_assert_eq!(draft.total_cents, e.total_cents);
        }
        prop_assert!(estimates.iter().all(|e| e.total_cents >= estimates[cheapest as usize].total_cents));
    }

    /// The bill depends on the period's totals only: however the same usage is split across
    /// operations (or batches), summing the parts gives the same invoice.
    #[test]
    fn splitting_usage_does_not_change_the_bill(tier in tier(), parts in prop::collection::vec((0u64..2_000_000, 0u64..20_000_000_000), 1..8)) {
        let pricing = Pricing::builtin();
        let total = parts.iter().fold(BilledUsageV1::default(), |acc, (t, b)| BilledUsageV1 {
            traces: acc.traces + t,
            payload_bytes: acc.payload_bytes + b,
        });
        let mut shuffled = parts.clone();
        shuffled.reverse();
        let again = shuffled.iter().fold(BilledUsageV1::default(), |acc, (t, b)| BilledUsageV1 {
            traces: acc.traces + t,
            payload_bytes: acc.payload_bytes + b,
        });
        prop_assert_eq!(pricing.invoice("o", "2026-11", tier, total, None), pricing.invoice("o", "2026-11", tier, again, None));
    }

    /// Each line is its exact amount rounded half up, and quantities add up to the usage.
    #[test]
    fn lines_are_rounded_once_and_account_for_all_usage(tier in tier(), u in usage()) {
        let pricing = Pricing::builtin();
        let (lines, total) = pricing.price(tier, u);
        prop_assert_eq!(total, lines.iter().map(|l| l.amount_cents).sum::<i64>());
        for metric in tally_schemas::Metric::ALL {
            let q: u64 = lines.iter().filter(|l| l.metric == Some(metric)).map(|l| l.quantity).sum();
            prop_assert_eq!(q, u.get(metric));
        }
        for line in lines.iter().filter(|l| l.kind == LineKind::Overage) {
            // amount = round_half_up(quantity × unit): |2·amount·den − 2·exact·den| ≤ den
            let (num, den) = exact(line.quantity, &line.unit_amount_decimal);
            let twice = 2 * line.amount_cents as u128 * den;
            let exact_twice = 2 * num;
            prop_assert!(twice + den > exact_twice && twice <= exact_twice + den, "{:?}", line);
        }
    }
}

/// quantity × a decimal string, as a fraction (num, den) computed independently of the crate.
fn exact(quantity: u64, decimal: &str) -> (u128, u128) {
    let (whole, frac) = decimal.split_once('.').unwrap_or((decimal, ""));
    let den = 10u128.pow(frac.len() as u32);
    let mantissa: u128 = format!("{whole}{frac}").parse().unwrap();
    (quantity as u128 * mantissa, den)
}
