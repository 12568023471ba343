//! Tally's price list set up in the stand-in as `billing-reporter setup-stripe` sets it up in
//! Stripe (a licensed base price and two graduated metered prices per tier), then usage priced by
//! the stand-in's graduated tiers: to the cent what Tally's own invoice says, line for line, for
//! the pricing golden cases and a sweep of usages; and the same through a whole subscription
//! (Checkout, meter events, the period's invoice).

use serde_json::{json, Value};
use tally_pricing::stripe::{plans, PriceKind};
use tally_pricing::Pricing;
use tally_schemas::{BilledUsageV1, LineKind, Metric, Tier};
use tally_stripe_standin::form;
use tally_stripe_standin::store::{graduated, PriceTier, Store};

const NOW: i64 = 1_795_000_000;

fn encode(pairs: &[(String, String)]) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish().into_bytes()
}

/// One tier as set up: its base fee, its metered prices' stored tiers, its three price ids.
struct SetUp {
    tier: Tier,
    base: i64,
    traces_tiers: Value,
    payload_tiers: Value,
    price_ids: Vec<String>,
}

/// A price's `tiers`, as the stand-in answers them with `expand[]=tiers`.
fn price_tiers(tiers: &Value) -> Vec<PriceTier> {
    serde_json::from_value(tiers.clone()).unwrap()
}

/// The stand-in with every plan's prices.
fn set_up() -> (Store, Vec<SetUp>) {
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
        store
            .create_product(&json!({"id": plan.product_id, "name": plan.product_name}), NOW)
            .unwrap();
        let mut base = 0;
        let mut metered = std::collections::HashMap::new();
        let mut price_ids = Vec::new();
        for price in &plan.prices {
            let meter = match &price.kind {
                PriceKind::Metered { metric, .. } => Some(meters[metric].as_str()),
                PriceKind::Licensed { .. } => None,
            };
            let params =
                form::parse(&encode(&price.create_params(&plan.product_id, meter))).unwrap();
            let created = store
                .create_price(&params, NOW)
                .unwrap_or_else(|e| panic!("{}: {e:?}", price.lookup_key));
            let full = store
                .price(created["id"].as_str().unwrap(), &json!({"expand": ["tiers"]}))
                .unwrap();
            price_ids.push(created["id"].as_str().unwrap().to_string());
            match &price.kind {
                PriceKind::Licensed { .. } => base = full["unit_amount"].as_i64().unwrap(),
                PriceKind::Metered { metric, .. } => {
                    metered.insert(*metric, full["tiers"].clone());
                }
            }
        }
        out.push(SetUp {
            tier: plan.tier,
            base,
            traces_tiers: metered.remove(&Metric::Traces).unwrap(),
            payload_tiers: metered.remove(&Metric::PayloadBytes).unwrap(),
            price_ids,
        });
    }
    (store, out)
}

#[test]
fn the_stand_in_prices_usage_exactly_as_tally_does() {
    let (_store, plans) = set_up();
    let pricing = Pricing::builtin();
    for plan in &plans {
        let (tier, base, traces_tiers, payload_tiers) =
            (&plan.tier, &plan.base, &plan.traces_tiers, &plan.payload_tiers);
        for &(traces, payload_bytes) in &usages(2_000) {
            let (lines, total) = pricing.price(*tier, BilledUsageV1 { traces, payload_bytes });
            let t = graduated(&price_tiers(traces_tiers), traces).unwrap();
            let p = graduated(&price_tiers(payload_tiers), payload_bytes).unwrap();
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

/// The pricing golden cases' usages (on every tier), the estimate, and a deterministic
/// sweep of `sweep` usages across the bands.
fn usages(sweep: usize) -> Vec<(u64, u64)> {
    let mut usages: Vec<(u64, u64)> = vec![
        (0, 0),
        (100_000, 10_000_000_000),
        (100_001, 10_000_000_001),
        (101_500, 0),
        (100_003, 10_010_000_000),
        (100_002, 10_008_000_000),
        (250_000, 25_000_000_000),
        (250_001, 25_000_000_001),
        (251_234, 28_000_000_000),
        (250_003, 25_011_111_111),
        (600_000, 60_000_000_000),
        (600_001, 60_000_000_001),
        (610_001, 61_000_000_000),
        (2_500_000, 0),
        (2_500_001, 0),
        (5_000_000, 0),
        (5_000_001, 0),
        (10_000_000, 0),
        (12_000_007, 250_000_000_001),
        (3_200_000, 120_000_000_000),
    ];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..sweep {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        usages.push(((x >> 40) % 15_000_000, (x >> 8) % 400_000_000_000));
    }
    usages
}

/// A subscription bought through Checkout, its usage sent as meter events (split in two, plus
/// one outside the period), billed by the stand-in for the period: the invoice's total is, to the
/// cent, Tally's own invoice total for that usage on that tier.
#[test]
fn a_subscriptions_invoice_totals_what_tally_bills() {
    let (mut store, plans) = set_up();
    let pricing = Pricing::builtin();
    let (start, end) = (NOW - 20 * 86_400, NOW - 86_400);
    let base = "http://127.0.0.1:12111";
    for plan in &plans {
        for (n, &(traces, payload_bytes)) in usages(40).iter().enumerate() {
            let items: Vec<Value> = plan.price_ids.iter().map(|p| json!({"price": p})).collect();
            let metadata = json!({"org_id": format!("org_{n}"), "tier": plan.tier.as_str()});
            let cs = store
                .create_checkout_session(&json!({"mode": "subscription", "line_items": items, "subscription_data": {"metadata": metadata}}), NOW - 30 * 86_400, base)
                .unwrap();
            let done = store
                .complete_checkout_session(cs["id"].as_str().unwrap(), None, NOW - 30 * 86_400)
                .unwrap();
            let customer = done["customer"]["id"].as_str().unwrap().to_string();
            let mut send = |metric: Metric, value: u64, ts: i64| {
                let payload = json!({"stripe_customer_id": customer, "value": value.to_string()});
                let event = json!({"event_name": tally_pricing::stripe::meter_event_name(metric), "payload": payload, "timestamp": ts.to_string()});
                store.create_meter_event(&event, NOW).unwrap();
            };
            send(Metric::Traces, traces / 3, start);
            send(Metric::Traces, traces - traces / 3, end - 1);
            send(Metric::PayloadBytes, payload_bytes / 2, start + 3600);
            send(Metric::PayloadBytes, payload_bytes - payload_bytes / 2, end - 3600);
            send(Metric::Traces, 1_000_000, end); // the next period's
            send(Metric::PayloadBytes, 1_000_000_000, start - 1); // the previous period's
            let subscription = done["subscription"]["id"].as_str().unwrap();
            let invoice = store.create_subscription_invoice(subscription, start, end, NOW).unwrap();
            let (_, total) = pricing.price(plan.tier, BilledUsageV1 { traces, payload_bytes });
            let what = format!("{} {traces} traces {payload_bytes} bytes", plan.tier);
            assert_eq!(invoice["total"].as_i64(), Some(total), "{what}");
            assert_eq!(invoice["amount_due"].as_i64(), Some(total), "{what}");
            let lines_sum: i64 = invoice["lines"]["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["amount"].as_i64().unwrap())
                .sum();
            assert_eq!(lines_sum, total, "{what}");
            assert_eq!(invoice["parent"]["subscription_details"]["metadata"], metadata);
            assert_eq!(invoice["parent"]["subscription_details"]["subscription"], subscription);
        }
    }
}
