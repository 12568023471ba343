//! Tally's price list set up in the stand-in as `billing-reporter setup-stripe` sets it up in
//! Stripe (a licensed base price and two graduated metered prices per tier), then usage priced by
//! the stand-in's graduated tiers: to the cent what Tally's own invoice says, line for line, for
//! the pricing golden cases and a sweep of usages.

use serde_json::{json, Value};
use tally_pricing::stripe::{plans, PriceKind};
use tally_pricing::Pricing;
use tally_schemas::{BilledUsageV1, LineKind, Metric, Tier};
use tally_stripe_standin::form;
use tally_stripe_standin::store::{graduated, Store};

const NOW: i64 = 1_795_000_000;

fn encode(pairs: &[(String, String)]) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish().into_bytes()
}

/// The stand-in with every plan's prices; returns (tier, metric) → the stored price's tiers.
fn set_up() -> (Store, Vec<(Tier, i64, Value, Value)>) {
    let pricing = Pricing::builtin();
    let mut store = Store::default();
    let mut meters = std::collections::HashMap::new();
    for metric in Metric::ALL {
        let name = tally_pricing::stripe::meter_event_name(metric);
        let m = store
            .create_meter(&json!({"display_name": name, "event_name": name, "default_aggregation": {"formula": "sum"}}), NOW)
            .unwrap();
        meters.insert(metric, m["id"].as_str().unwrap().to_string());
    }
    let mut out = Vec::new();
    for plan in plans(&pricing) {
        store.create_product(&json!({"id": plan.product_id, "name": plan.product_name}), NOW).unwrap();
        let mut base = 0;
        let mut metered = std::collections::HashMap::new();
        for price in &plan.prices {
            let meter = match &price.kind {
                PriceKind::Metered { metric, .. } => Some(meters[metric].as_str()),
                PriceKind::Licensed { .. } => None,
            };
            let params = form::parse(&encode(&price.create_params(&plan.product_id, meter))).unwrap();
            let created = store.create_price(&params, NOW).unwrap_or_else(|e| panic!("{}: {e:?}", price.lookup_key));
            let full = store.price(created["id"].as_str().unwrap(), &json!({"expand": ["tiers"]})).unwrap();
            match &price.kind {
                PriceKind::Licensed { .. } => base = full["unit_amount"].as_i64().unwrap(),
                PriceKind::Metered { metric, .. } => {
                    metered.insert(*metric, full["tiers"].clone());
                }
            }
        }
        out.push((plan.tier, base, metered.remove(&Metric::Traces).unwrap(), metered.remove(&Metric::PayloadBytes).unwrap()));
    }
    (store, out)
}

#[test]
fn the_stand_in_prices_usage_exactly_as_tally_does() {
    let (_store, plans) = set_up();
    let pricing = Pricing::builtin();
    let mut usages: Vec<(u64, u64)> = vec![
        (0, 0),
        (100_000, 10_000_000_000),
        (100_001, 10_000_000_001),
        (101_500, 0),
        (100_003, 10_010_000_000),
        (100_002, 10_008_000_000),
        (251_234, 28_000_000_000),
        (250_003, 25_011_111_111),
        (610_001, 61_000_000_000),
        (2_500_001, 0),
        (5_000_000, 0),
        (5_000_001, 0),
        (10_000_000, 0),
        (12_000_007, 250_000_000_001),
        (3_200_000, 120_000_000_000),
    ];
    // A deterministic sweep across the bands.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..2_000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        usages.push(((x >> 40) % 15_000_000, (x >> 8) % 400_000_000_000));
    }
    for (tier, base, traces_tiers, payload_tiers) in &plans {
        for &(traces, payload_bytes) in &usages {
            let (lines, total) = pricing.price(*tier, BilledUsageV1 { traces, payload_bytes });
            let t = graduated(traces_tiers.as_array().unwrap(), traces).unwrap();
            let p = graduated(payload_tiers.as_array().unwrap(), payload_bytes).unwrap();
            let standin_total = base + t.iter().chain(&p).map(|l| l.amount).sum::<i64>();
            assert_eq!(standin_total, total, "{tier} {traces} traces {payload_bytes} bytes");
            // Line for line: the stand-in's paid tiers are Tally's overage lines.
            let tally_overage: Vec<(u64, String, i64)> = lines
                .iter()
                .filter(|l| l.kind == LineKind::Overage)
                .map(|l| (l.quantity, l.unit_amount_decimal.clone(), l.amount_cents))
                .collect();
            let standin_paid: Vec<(u64, String, i64)> = t
                .iter()
                .chain(&p)
                .filter(|l| l.unit_amount_decimal != "0")
                .map(|l| (l.quantity, l.unit_amount_decimal.clone(), l.amount))
                .collect();
            assert_eq!(standin_paid, tally_overage, "{tier} {traces} traces {payload_bytes} bytes");
        }
    }
}
