//! What the store's unit tests share: a clock, a meter, meter events, a plan, a session.

use serde_json::{json, Value};

use super::{Reply, Store};

pub(super) const NOW: i64 = 1_790_000_000; // 2026-09-21

pub(super) const BASE: &str = "http://127.0.0.1:12111";

/// A `sum` meter on `tally_traces`; its id.
pub(super) fn meter(store: &mut Store) -> String {
    let params = json!({"display_name": "Traces", "event_name": "tally_traces", "default_aggregation": {"formula": "sum"}});
    let m = store.create_meter(&params, NOW).unwrap();
    m["id"].as_str().unwrap().to_string()
}

/// A `tally_traces` meter event of `cus_1`.
pub(super) fn event(store: &mut Store, id: &str, value: &str, ts: i64) -> Reply {
    store.create_meter_event(&json!({"event_name": "tally_traces", "identifier": id, "timestamp": ts.to_string(), "payload": {"stripe_customer_id": "cus_1", "value": value}}), NOW)
}

/// A meter, a product, a licensed monthly price (2,500 cents), a graduated metered price on
/// the meter (100 free, then 0.5 cent, then 0.25 cent above 1,000) and a one-time price.
pub(super) fn plan(s: &mut Store) -> (String, String, String) {
    meter(s);
    let meter_id =
        s.list_meters(&json!({})).unwrap()["data"][0]["id"].as_str().unwrap().to_string();
    s.create_product(&json!({"id": "tally_starter", "name": "Starter"}), NOW).unwrap();
    let id = |v: Value| v["id"].as_str().unwrap().to_string();
    let base = id(s.create_price(&json!({"currency": "usd", "product": "tally_starter", "unit_amount": "2500", "nickname": "Starter fee", "recurring": {"interval": "month"}}), NOW).unwrap());
    let traces = id(s
        .create_price(
            &json!({"currency": "usd", "product": "tally_starter", "billing_scheme": "tiered", "tiers_mode": "graduated", "nickname": "Starter traces",
                "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id},
                "tiers": [{"up_to": "100", "unit_amount_decimal": "0"}, {"up_to": "1000", "unit_amount_decimal": "0.5"}, {"up_to": "inf", "unit_amount_decimal": "0.25"}]}),
            NOW,
        )
        .unwrap());
    let once = id(s
        .create_price(
            &json!({"currency": "usd", "product": "tally_starter", "unit_amount": "100"}),
            NOW,
        )
        .unwrap());
    (base, traces, once)
}

/// A subscription Checkout Session for the plan's base and traces prices.
pub(super) fn session(s: &mut Store, base_price: &str, traces: &str) -> Value {
    s.create_checkout_session(
        &json!({"mode": "subscription", "client_reference_id": "org_acme", "success_url": "https://tally.test/ok?s={CHECKOUT_SESSION_ID}",
            "line_items": [{"price": base_price}, {"price": traces}], "metadata": {"org_id": "acme"},
            "subscription_data": {"metadata": {"org_id": "acme", "tier": "starter"}}}),
        NOW,
        BASE,
    )
    .unwrap()
}

/// The types of the events the store recorded, oldest first.
pub(super) fn types(s: &Store) -> Vec<String> {
    s.events.iter().map(|e| e.kind.clone()).collect()
}
