//! Golden invoices, written by hand: the arithmetic is in each case's comment. Unit prices in
//! cents: starter 0.2/trace and 0.00000005/byte; growth 0.18 and 0.000000045; business 0.15 and
//! 0.00000004; enterprise 0.12, 0.10, 0.08 per trace in its bands and 0.00000003/byte.

use tally_pricing::Pricing;
use tally_schemas::{BilledUsageV1, LineKind, Metric, Tier};

fn usage(traces: u64, payload_bytes: u64) -> BilledUsageV1 {
    BilledUsageV1 { traces, payload_bytes }
}

/// (kind, metric, quantity, unit_amount_decimal, amount_cents) of each line, and the total.
type Line = (LineKind, Option<Metric>, u64, &'static str, i64);

fn check(tier: Tier, traces: u64, bytes: u64, expected_lines: &[Line], expected_total: i64) {
    let pricing = Pricing::builtin();
    let (lines, total) = pricing.price(tier, usage(traces, bytes));
    let got: Vec<Line> = lines
        .iter()
        .map(|l| {
            let unit: &'static str = Box::leak(l.unit_amount_decimal.clone().into_boxed_str());
            (l.kind, l.metric, l.quantity, unit, l.amount_cents)
        })
        .collect();
    assert_eq!(got, expected_lines, "{tier} {traces} traces {bytes} bytes");
    assert_eq!(total, expected_total, "{tier} {traces} traces {bytes} bytes");
    // The same usage through the invoice and the estimate gives the same lines.
    let invoice = pricing.invoice("acme", "2026-10", tier, usage(traces, bytes), None);
    assert_eq!(invoice.lines, lines);
    assert_eq!(invoice.total_cents, total);
    let (estimates, _) = pricing.estimate(usage(traces, bytes));
    assert_eq!(estimates[tier as usize].total_cents, total);
}

use LineKind::{Base, Included, Overage};
use Metric::{PayloadBytes as B, Traces as T};

const STARTER_BASE: Line = (Base, None, 1, "25000", 25_000);
const GROWTH_BASE: Line = (Base, None, 1, "50000", 50_000);
const BUSINESS_BASE: Line = (Base, None, 1, "100000", 100_000);
const ENTERPRISE_BASE: Line = (Base, None, 1, "300000", 300_000);

#[test]
fn starter() {
    // No usage: the base fee only.
    check(
        Tier::Starter,
        0,
        0,
        &[STARTER_BASE, (Included, Some(T), 0, "0", 0), (Included, Some(B), 0, "0", 0)],
        25_000,
    );
    // Exactly the included amounts: nothing over.
    let at_included = [
        STARTER_BASE,
        (Included, Some(T), 100_000, "0", 0),
        (Included, Some(B), 10_000_000_000, "0", 0),
    ];
    check(Tier::Starter, 100_000, 10_000_000_000, &at_included, 25_000);
    // One unit over each: 1 × 0.2 = 0.2 → 0 cents; 1 × 0.00000005 → 0 cents. The lines show.
    check(
        Tier::Starter,
        100_001,
        10_000_000_001,
        &[
            at_included[0],
            at_included[1],
            at_included[2],
            (Overage, Some(T), 1, "0.2", 0),
            (Overage, Some(B), 1, "0.00000005", 0),
        ],
        25_000,
    );
    // The issue's example: 1,500 over at $2.00 per 1,000 = $3.00.
    check(
        Tier::Starter,
        101_500,
        0,
        &[
            STARTER_BASE,
            (Included, Some(T), 100_000, "0", 0),
            (Included, Some(B), 0, "0", 0),
            (Overage, Some(T), 1_500, "0.2", 300),
        ],
        25_300,
    );
}

#[test]
fn rounding_each_line_differs_from_rounding_the_sum() {
    // 3 traces over: 0.6 → 1 cent; 10,000,000 bytes over: 0.5 → 1 cent (half up).
    // Sum of rounded lines: 25,002. Rounding the exact sum (25,001.1) would give 25,001.
    check(
        Tier::Starter,
        100_003,
        10_010_000_000,
        &[
            STARTER_BASE,
            (Included, Some(T), 100_000, "0", 0),
            (Included, Some(B), 10_000_000_000, "0", 0),
            (Overage, Some(T), 3, "0.2", 1),
            (Overage, Some(B), 10_000_000, "0.00000005", 1),
        ],
        25_002,
    );
    // 2 traces over: 0.4 → 0; 8,000,000 bytes over: 0.4 → 0. Exact sum 25,000.8 would round to
    // 25,001; the invoice says 25,000.
    check(
        Tier::Starter,
        100_002,
        10_008_000_000,
        &[
            STARTER_BASE,
            (Included, Some(T), 100_000, "0", 0),
            (Included, Some(B), 10_000_000_000, "0", 0),
            (Overage, Some(T), 2, "0.2", 0),
            (Overage, Some(B), 8_000_000, "0.00000005", 0),
        ],
        25_000,
    );
}

#[test]
fn growth() {
    let at = [
        GROWTH_BASE,
        (Included, Some(T), 250_000, "0", 0),
        (Included, Some(B), 25_000_000_000, "0", 0),
    ];
    check(Tier::Growth, 250_000, 25_000_000_000, &at, 50_000);
    check(
        Tier::Growth,
        250_001,
        25_000_000_001,
        &[
            at[0],
            at[1],
            at[2],
            (Overage, Some(T), 1, "0.18", 0),
            (Overage, Some(B), 1, "0.000000045", 0),
        ],
        50_000,
    );
    // 1,234 × 0.18 = 222.12 → 222; 3,000,000,000 × 0.000000045 = 135.
    check(
        Tier::Growth,
        251_234,
        28_000_000_000,
        &[
            at[0],
            at[1],
            at[2],
            (Overage, Some(T), 1_234, "0.18", 222),
            (Overage, Some(B), 3_000_000_000, "0.000000045", 135),
        ],
        50_357,
    );
    // 3 × 0.18 = 0.54 → 1 (more than half); 11,111,111 × 0.000000045 = 0.499999995 → 0 (just
    // under).
    check(
        Tier::Growth,
        250_003,
        25_011_111_111,
        &[
            at[0],
            at[1],
            at[2],
            (Overage, Some(T), 3, "0.18", 1),
            (Overage, Some(B), 11_111_111, "0.000000045", 0),
        ],
        50_001,
    );
}

#[test]
fn business() {
    let at = [
        BUSINESS_BASE,
        (Included, Some(T), 600_000, "0", 0),
        (Included, Some(B), 60_000_000_000, "0", 0),
    ];
    check(Tier::Business, 600_000, 60_000_000_000, &at, 100_000);
    check(
        Tier::Business,
        600_001,
        60_000_000_001,
        &[
            at[0],
            at[1],
            at[2],
            (Overage, Some(T), 1, "0.15", 0),
            (Overage, Some(B), 1, "0.00000004", 0),
        ],
        100_000,
    );
    // 10,001 × 0.15 = 1,500.15 → 1,500; 1 GB × 0.00000004 × 10^9 = 40.
    check(
        Tier::Business,
        610_001,
        61_000_000_000,
        &[
            at[0],
            at[1],
            at[2],
            (Overage, Some(T), 10_001, "0.15", 1_500),
            (Overage, Some(B), 1_000_000_000, "0.00000004", 40),
        ],
        101_540,
    );
}

#[test]
fn enterprise_band_edges() {
    let included = |t: u64, b: u64| {
        [ENTERPRISE_BASE, (Included, Some(T), t, "0", 0), (Included, Some(B), b, "0", 0)]
    };
    let inc = included(2_500_000, 0);
    // Exactly the included traces.
    check(Tier::Enterprise, 2_500_000, 0, &inc, 300_000);
    // One over: first band, 0.12 → 0.
    check(
        Tier::Enterprise,
        2_500_001,
        0,
        &[inc[0], inc[1], inc[2], (Overage, Some(T), 1, "0.12", 0)],
        300_000,
    );
    // The end of the first band: 2,500,000 × 0.12 = 300,000.
    check(
        Tier::Enterprise,
        5_000_000,
        0,
        &[inc[0], inc[1], inc[2], (Overage, Some(T), 2_500_000, "0.12", 300_000)],
        600_000,
    );
    // One into the second band: 1 × 0.10 → 0, and the second band's line appears.
    check(
        Tier::Enterprise,
        5_000_001,
        0,
        &[
            inc[0],
            inc[1],
            inc[2],
            (Overage, Some(T), 2_500_000, "0.12", 300_000),
            (Overage, Some(T), 1, "0.1", 0),
        ],
        600_000,
    );
    // The end of the second band: 5,000,000 × 0.10 = 500,000.
    check(
        Tier::Enterprise,
        10_000_000,
        0,
        &[
            inc[0],
            inc[1],
            inc[2],
            (Overage, Some(T), 2_500_000, "0.12", 300_000),
            (Overage, Some(T), 5_000_000, "0.1", 500_000),
        ],
        1_100_000,
    );
    // Into the last band: 2,000,007 × 0.08 = 160,000.56 → 160,001. Payload 1 byte over 250 GB:
    // 0.00000003 → 0.
    let inc = included(2_500_000, 250_000_000_000);
    check(
        Tier::Enterprise,
        12_000_007,
        250_000_000_001,
        &[
            inc[0],
            inc[1],
            inc[2],
            (Overage, Some(T), 2_500_000, "0.12", 300_000),
            (Overage, Some(T), 5_000_000, "0.1", 500_000),
            (Overage, Some(T), 2_000_007, "0.08", 160_001),
            (Overage, Some(B), 1, "0.00000003", 0),
        ],
        1_260_001,
    );
}

#[test]
fn the_issue_estimate() {
    // 3,200,000 traces and 120 GB on each tier:
    // starter    25,000 + 3,100,000 × 0.2  = 620,000 + 110 GB × 50 = 5,500 → 650,500
    // growth     50,000 + 2,950,000 × 0.18 = 531,000 +  95 GB × 45 = 4,275 → 585,275
    // business  100,000 + 2,600,000 × 0.15 = 390,000 +  60 GB × 40 = 2,400 → 492,400
    // enterprise 300,000 +  700,000 × 0.12 =  84,000 + nothing over          → 384,000
    let (estimates, cheapest) = Pricing::builtin().estimate(usage(3_200_000, 120_000_000_000));
    let totals: Vec<(Tier, i64)> = estimates.iter().map(|e| (e.tier, e.total_cents)).collect();
    assert_eq!(
        totals,
        [
            (Tier::Starter, 650_500),
            (Tier::Growth, 585_275),
            (Tier::Business, 492_400),
            (Tier::Enterprise, 384_000)
        ]
    );
    assert_eq!(cheapest, Tier::Enterprise);
    // With no usage the cheapest is starter.
    assert_eq!(Pricing::builtin().estimate(usage(0, 0)).1, Tier::Starter);
}
