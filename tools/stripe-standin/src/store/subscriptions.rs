//! Subscriptions and their items: created by completing a Checkout Session; retrieve, list,
//! update (items and metadata), cancel. Billing periods follow the anchor by calendar month.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::params::optional_param;
use super::{from_sample, list_page, new_id, to_json, List, Listed, Reply, Store, StripeError};
use super::{Price, Recurring};
use crate::spec::sample;

/// Stripe's Subscription object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    /// Always `"subscription"`.
    pub object: String,
    pub created: i64,
    pub start_date: i64,
    pub livemode: bool,
    pub customer: String,
    pub currency: String,
    /// `"active"` or `"canceled"`.
    pub status: String,
    pub metadata: Map<String, Value>,
    pub items: List<SubscriptionItem>,
    pub billing_cycle_anchor: i64,
    pub canceled_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub cancellation_details: CancellationDetails,
    /// The rest of Stripe's sample, as the stand-in fixes it (no trial, no tax, ...).
    #[serde(flatten)]
    pub sample_fields: Map<String, Value>,
}

impl Listed for Subscription {
    fn id(&self) -> &str {
        &self.id
    }
    fn created(&self) -> i64 {
        self.created
    }
}

/// Why a subscription was canceled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancellationDetails {
    pub comment: Option<String>,
    pub feedback: Option<String>,
    pub reason: Option<String>,
}

/// Stripe's Subscription Item object: one price of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionItem {
    pub id: String,
    /// Always `"subscription_item"`.
    pub object: String,
    pub created: i64,
    pub current_period_start: i64,
    pub current_period_end: i64,
    /// The price, as Stripe shows it here: without tiers.
    pub price: Price,
    /// The legacy plan view of the same price.
    pub plan: Plan,
    /// A licensed item's quantity; a metered item has none (the field is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u64>,
    pub subscription: String,
    /// The rest of Stripe's sample, as the stand-in fixes it (no discounts, no tax rates, ...).
    #[serde(flatten)]
    pub sample_fields: Map<String, Value>,
}

/// Stripe's (legacy) Plan object, which subscription items still carry beside their price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub active: bool,
    pub amount: Option<i64>,
    pub amount_decimal: Option<String>,
    pub billing_scheme: String,
    pub created: i64,
    pub currency: String,
    pub id: String,
    pub interval: String,
    pub interval_count: i64,
    pub livemode: bool,
    pub metadata: Option<Map<String, Value>>,
    pub meter: Option<String>,
    pub nickname: Option<String>,
    /// Always `"plan"`.
    pub object: String,
    pub product: Option<String>,
    pub tiers_mode: Option<String>,
    pub transform_usage: Option<Value>,
    pub trial_period_days: Option<i64>,
    pub usage_type: String,
}

impl Plan {
    /// The plan view of a recurring price.
    fn of(price: &Price, recurring: &Recurring) -> Plan {
        Plan {
            active: price.active,
            amount: price.unit_amount,
            amount_decimal: price.unit_amount_decimal.clone(),
            billing_scheme: price.billing_scheme.clone(),
            created: price.created,
            currency: price.currency.clone(),
            id: price.id.clone(),
            interval: recurring.interval.clone(),
            interval_count: recurring.interval_count,
            livemode: false,
            metadata: Some(price.metadata.clone()),
            meter: recurring.meter.clone(),
            nickname: price.nickname.clone(),
            object: "plan".into(),
            product: Some(price.product.clone()),
            tiers_mode: price.tiers_mode.clone(),
            transform_usage: None,
            trial_period_days: None,
            usage_type: recurring.usage_type.clone(),
        }
    }
}

impl SubscriptionItem {
    fn new(
        price: &Price,
        quantity: Option<u64>,
        subscription: &str,
        period: (i64, i64),
        now: i64,
    ) -> Self {
        let fixed =
            json!({"billing_thresholds": null, "discounts": [], "metadata": {}, "tax_rates": []});
        let mut item: SubscriptionItem = from_sample(sample("subscription_item"), fixed);
        item.id = new_id("si_");
        item.created = now;
        item.current_period_start = period.0;
        item.current_period_end = period.1;
        item.subscription = subscription.to_string();
        item.set_price(price, quantity);
        item
    }

    /// Sets the item's price (as Stripe shows it, without tiers), plan and quantity. The price
    /// is a recurring one ([`Store::subscribable_price`]).
    fn set_price(&mut self, price: &Price, quantity: Option<u64>) {
        let recurring = price.recurring.as_ref().expect("a subscription item's price recurs");
        self.price = price.without_tiers();
        self.plan = Plan::of(price, recurring);
        self.quantity = quantity;
    }
}

/// The fields of Stripe's sample an active subscription of the stand-in always has.
fn fixed_subscription_fields() -> Value {
    json!({
        "billing_cycle_anchor_config": null,
        "billing_mode": {"flexible": null, "type": "classic"},
        "billing_schedules": [],
        "billing_thresholds": null,
        "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null},
        "cancel_at": null,
        "cancel_at_period_end": false,
        "latest_invoice": null,
        "managed_payments": null,
        "next_pending_invoice_item_invoice": null,
        "pause_collection": null,
        "payment_settings": {
            "payment_method_options": null, "payment_method_types": null,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": null,
        "pending_update": null,
        "transfer_data": null,
        "trial_end": null,
        "trial_start": null,
        // Replaced by the subscription's own items below.
        "items": {"object": "list", "data": [], "has_more": false, "url": ""},
    })
}

impl Store {
    /// A recurring price a subscription item can take, and the quantity Stripe keeps for it:
    /// none for a metered price (its usage comes from the meter), 1 by default for a licensed
    /// one. `param` names the item in errors (`line_items[0]`, `items[1]`).
    pub(super) fn subscribable_price(
        &self,
        price_id: &str,
        quantity: Option<&str>,
        param: &str,
    ) -> Result<(Price, Option<u64>), StripeError> {
        let price = self.prices.get(price_id).ok_or_else(|| {
            StripeError::missing_resource(
                format!("{param}[price]"),
                format!("No such price: '{price_id}'"),
            )
        })?;
        if price.kind != "recurring" {
            return Err(StripeError::invalid(
                &format!("{param}[price]"),
                "The price specified is set to `type=one_time` but this field only accepts \
                 prices with `type=recurring`.",
            ));
        }
        if !price.active {
            return Err(StripeError::invalid(
                &format!("{param}[price]"),
                format!("The price specified is inactive: {price_id}"),
            ));
        }
        let quantity = match (price.is_metered(), quantity) {
            (true, Some(_)) => {
                return Err(StripeError::invalid(
                    &format!("{param}[quantity]"),
                    format!(
                        "Quantity should not be specified where usage_type is `metered`. \
                         Remove quantity from `{param}`."
                    ),
                ))
            }
            (true, None) => None,
            (false, None) => Some(1),
            (false, Some(q)) => Some(q.parse::<u64>().map_err(|_| {
                StripeError::invalid(&format!("{param}[quantity]"), format!("Invalid integer: {q}"))
            })?),
        };
        Ok((price.clone(), quantity))
    }

    /// Creates an active subscription, one item per (price, quantity), and emits
    /// `customer.subscription.created`.
    pub(super) fn insert_subscription(
        &mut self,
        customer: &str,
        items: Vec<(Price, Option<u64>)>,
        metadata: Map<String, Value>,
        anchor: Option<i64>,
        now: i64,
    ) -> Subscription {
        let id = new_id("sub_");
        let period = current_period(anchor, now);
        let currency = items.first().map_or_else(|| "usd".to_string(), |(p, _)| p.currency.clone());
        let data = items
            .iter()
            .map(|(price, quantity)| SubscriptionItem::new(price, *quantity, &id, period, now))
            .collect();
        let mut sub: Subscription =
            from_sample(sample("subscription"), fixed_subscription_fields());
        sub.id = id.clone();
        sub.object = "subscription".into();
        sub.created = now;
        sub.start_date = now;
        sub.livemode = false;
        sub.customer = customer.to_string();
        sub.currency = currency;
        sub.status = "active".into();
        sub.metadata = metadata;
        sub.items = List::new(format!("/v1/subscription_items?subscription={id}"), data, false);
        sub.billing_cycle_anchor = anchor.unwrap_or(now);
        sub.canceled_at = None;
        sub.cancellation_details =
            CancellationDetails { comment: None, feedback: None, reason: None };
        sub.ended_at = None;
        self.subscriptions.insert(id, sub.clone());
        self.record_event("customer.subscription.created", to_json(&sub), None, now);
        sub
    }

    pub fn subscription(&self, id: &str) -> Reply {
        self.subscriptions
            .get(id)
            .map(to_json)
            .ok_or_else(|| StripeError::not_found("subscription", id))
    }

    /// `GET /v1/subscriptions`: by `customer`, `price` and `status` (without it, every
    /// subscription but the canceled ones, as Stripe lists them; `all` for every one).
    pub fn list_subscriptions(&self, params: &Value) -> Reply {
        let customer = optional_param(params, "customer");
        let price = optional_param(params, "price");
        let status = optional_param(params, "status");
        let subscriptions = self
            .subscriptions
            .values()
            .filter(|s| customer.as_ref().is_none_or(|c| s.customer == *c))
            .filter(|s| match status.as_deref() {
                None => s.status != "canceled",
                Some("all") => true,
                Some(st) => s.status == st,
            })
            .filter(|s| {
                price.as_ref().is_none_or(|p| s.items.data.iter().any(|i| i.price.id == *p))
            })
            .cloned()
            .collect();
        list_page("/v1/subscriptions", subscriptions, params)
    }

    /// `POST /v1/subscriptions/{id}`: `items[i]` adds a price, swaps an item's price or quantity,
    /// or (`deleted=true`) removes an item; `metadata` is merged (an empty value unsets a key).
    /// `proration_behavior` is accepted: the stand-in does not prorate. Emits
    /// `customer.subscription.updated` with the old values in `previous_attributes`.
    pub fn update_subscription(&mut self, id: &str, params: &Value, now: i64) -> Reply {
        let sub =
            self.subscriptions.get(id).ok_or_else(|| StripeError::not_found("subscription", id))?;
        if let Some(p) = optional_param(params, "proration_behavior") {
            if !["always_invoice", "create_prorations", "none"].contains(&p.as_str()) {
                return Err(StripeError::invalid(
                    "proration_behavior",
                    format!("Invalid proration_behavior: {p}"),
                ));
            }
        }
        let changes_items = params.get("items").is_some();
        if sub.status == "canceled" && changes_items {
            return Err(StripeError::invalid(
                "items",
                "A canceled subscription can only update its cancellation_details and metadata.",
            ));
        }
        let old_items = sub.items.clone();
        let mut data = old_items.data.clone();
        let period = data
            .first()
            .map(|i| (i.current_period_start, i.current_period_end))
            .unwrap_or_else(|| current_period(None, now));
        if let Some(items) = params.get("items") {
            let items =
                items.as_array().ok_or_else(|| StripeError::invalid("items", "Invalid array"))?;
            for (i, change) in items.iter().enumerate() {
                self.apply_item_change(&mut data, change, &format!("items[{i}]"), id, period, now)?;
            }
            if data.is_empty() {
                return Err(StripeError::invalid(
                    "items",
                    "A subscription must keep at least one item; cancel it instead.",
                ));
            }
        }
        let metadata_changes = match params.get("metadata") {
            None => None,
            Some(Value::Object(m)) => Some(m.clone()),
            Some(Value::String(s)) if s.is_empty() => {
                Some(sub.metadata.keys().map(|k| (k.clone(), Value::from(""))).collect())
            }
            Some(_) => return Err(StripeError::invalid("metadata", "Invalid object")),
        };
        let sub = self.subscriptions.get_mut(id).expect("checked above");
        let mut previous = Map::new();
        if changes_items {
            sub.items.data = data;
            previous.insert("items".into(), to_json(&old_items));
        }
        if let Some(changes) = metadata_changes {
            let mut old = Map::new();
            for (key, value) in changes {
                let before = sub.metadata.get(&key).cloned().unwrap_or(Value::Null);
                let unset = value == "";
                if (unset && before.is_null()) || (!unset && before == value) {
                    continue;
                }
                old.insert(key.clone(), before);
                if unset {
                    sub.metadata.remove(&key);
                } else {
                    sub.metadata.insert(key, value);
                }
            }
            if !old.is_empty() {
                previous.insert("metadata".into(), Value::Object(old));
            }
        }
        let sub = sub.clone();
        if !previous.is_empty() {
            let previous = Some(Value::Object(previous));
            self.record_event("customer.subscription.updated", to_json(&sub), previous, now);
        }
        Ok(to_json(&sub))
    }

    /// Applies one `items[i]` of an update to the subscription's items `data`.
    fn apply_item_change(
        &self,
        data: &mut Vec<SubscriptionItem>,
        change: &Value,
        param: &str,
        subscription: &str,
        period: (i64, i64),
        now: i64,
    ) -> Result<(), StripeError> {
        let item_id = change.get("id").and_then(Value::as_str);
        let deleted = change.get("deleted").and_then(Value::as_str) == Some("true");
        let quantity = change.get("quantity").and_then(Value::as_str);
        let position = match item_id {
            Some(item_id) => Some(data.iter().position(|d| d.id == item_id).ok_or_else(|| {
                StripeError::missing_resource(
                    format!("{param}[id]"),
                    format!("No such subscription item: '{item_id}'"),
                )
            })?),
            None => None,
        };
        let price_id = change.get("price").and_then(Value::as_str);
        let same_price_twice = |price_id: &str| {
            StripeError::invalid(
                &format!("{param}[price]"),
                format!("Cannot add multiple subscription items with the same price: {price_id}"),
            )
        };
        match (position, deleted, price_id) {
            (Some(at), true, _) => {
                data.remove(at);
            }
            (None, true, _) => return Err(StripeError::missing(&format!("{param}[id]"))),
            (Some(at), false, Some(price_id)) => {
                let (price, new_quantity) = self.subscribable_price(price_id, quantity, param)?;
                let new_quantity = match (new_quantity, quantity) {
                    // A swap keeps a licensed item's quantity unless a new one is given.
                    (Some(_), None) => Some(data[at].quantity.unwrap_or(1)),
                    (q, _) => q,
                };
                if data.iter().enumerate().any(|(j, d)| j != at && d.price.id == price_id) {
                    return Err(same_price_twice(price_id));
                }
                data[at].set_price(&price, new_quantity);
            }
            (Some(at), false, None) => {
                let Some(q) = quantity else { return Ok(()) };
                let price_id = data[at].price.id.clone();
                let (price, new_quantity) = self.subscribable_price(&price_id, Some(q), param)?;
                data[at].set_price(&price, new_quantity);
            }
            (None, false, Some(price_id)) => {
                let (price, new_quantity) = self.subscribable_price(price_id, quantity, param)?;
                if data.iter().any(|d| d.price.id == price_id) {
                    return Err(same_price_twice(price_id));
                }
                data.push(SubscriptionItem::new(&price, new_quantity, subscription, period, now));
            }
            (None, false, None) => return Err(StripeError::missing(&format!("{param}[price]"))),
        }
        Ok(())
    }

    /// `DELETE /v1/subscriptions/{id}`: cancels at once; emits `customer.subscription.deleted`.
    pub fn cancel_subscription(&mut self, id: &str, params: &Value, now: i64) -> Reply {
        let sub = self
            .subscriptions
            .get_mut(id)
            .ok_or_else(|| StripeError::not_found("subscription", id))?;
        if sub.status == "canceled" {
            return Err(StripeError::invalid(
                "subscription",
                format!("This subscription has already been canceled: {id}"),
            ));
        }
        let detail = |name: &str| {
            params.pointer(&format!("/cancellation_details/{name}")).and_then(Value::as_str)
        };
        sub.status = "canceled".into();
        sub.canceled_at = Some(now);
        sub.ended_at = Some(now);
        sub.cancellation_details = CancellationDetails {
            comment: detail("comment").map(String::from),
            feedback: detail("feedback").map(String::from),
            reason: Some("cancellation_requested".into()),
        };
        let sub = sub.clone();
        self.record_event("customer.subscription.deleted", to_json(&sub), None, now);
        Ok(to_json(&sub))
    }
}

/// `t` plus `months` calendar months (the day clamped to the month's end, as Stripe bills).
pub(super) fn add_months(t: i64, months: u32) -> i64 {
    chrono::DateTime::from_timestamp(t, 0)
        .and_then(|d| d.checked_add_months(chrono::Months::new(months)))
        .map_or(t + i64::from(months) * 30 * 86_400, |d| d.timestamp())
}

/// The monthly billing period holding `now`: from `now` without an anchor; up to the anchor
/// when it is ahead (Stripe's first, shorter period); else the anchor's month that holds `now`.
pub fn current_period(anchor: Option<i64>, now: i64) -> (i64, i64) {
    match anchor {
        None => (now, add_months(now, 1)),
        Some(a) if a > now => (now, a),
        Some(a) => {
            let mut n = 0;
            while add_months(a, n + 1) <= now {
                n += 1;
            }
            (add_months(a, n), add_months(a, n + 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_fixtures::{plan, session, NOW};
    use super::*;

    #[test]
    fn subscriptions_swap_add_and_delete_items_merge_metadata_and_cancel() {
        let mut s = Store::default();
        let (base, traces, once) = plan(&mut s);
        let growth = s.create_price(&json!({"currency": "usd", "product": "tally_starter", "unit_amount": "5000", "recurring": {"interval": "month"}}), NOW).unwrap()["id"].as_str().unwrap().to_string();
        let cs = session(&mut s, &base, &traces);
        let done = s.complete_checkout_session(cs["id"].as_str().unwrap(), None, NOW).unwrap();
        assert!(done["customer"]["email"].is_null());
        let sub_id = done["subscription"]["id"].as_str().unwrap().to_string();
        let items = done["subscription"]["items"]["data"].as_array().unwrap().clone();
        let (base_item, traces_item) =
            (items[0]["id"].as_str().unwrap(), items[1]["id"].as_str().unwrap());
        s.set_request(Some(("req_1".into(), Some("k1".into()))));

        // Swap the base price, drop the metered item, change metadata.
        let updated = s
            .update_subscription(
                &sub_id,
                &json!({"items": [{"id": base_item, "price": growth}, {"id": traces_item, "deleted": "true"}], "metadata": {"tier": "growth", "org_id": ""}, "proration_behavior": "none"}),
                NOW + 5,
            )
            .unwrap();
        let data = updated["items"]["data"].as_array().unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(
            (data[0]["id"].as_str(), data[0]["price"]["id"].as_str(), data[0]["quantity"].as_u64()),
            (Some(base_item), Some(growth.as_str()), Some(1))
        );
        assert_eq!(data[0]["current_period_start"], items[0]["current_period_start"]);
        assert_eq!(updated["metadata"], json!({"tier": "growth"}));
        let event = s.events.last().unwrap();
        assert_eq!(event.kind, "customer.subscription.updated");
        assert_eq!(event.data.object, updated);
        let previous = event.data.previous_attributes.clone().unwrap();
        assert_eq!(previous["items"]["data"].as_array().unwrap().clone(), items);
        assert_eq!(previous["metadata"], json!({"tier": "starter", "org_id": "acme"}));
        assert_eq!(to_json(&event.request), json!({"id": "req_1", "idempotency_key": "k1"}));

        // Add the metered price back; a price twice, an unknown item and one-time prices are
        // refused.
        let added = s
            .update_subscription(&sub_id, &json!({"items": [{"price": traces}]}), NOW + 6)
            .unwrap();
        assert_eq!(added["items"]["data"].as_array().unwrap().len(), 2);
        assert!(added["items"]["data"][1].get("quantity").is_none());
        let previous = s.events.last().unwrap().data.previous_attributes.clone().unwrap();
        assert_eq!(previous.as_object().unwrap().keys().collect::<Vec<_>>(), ["items"]);
        assert!(s
            .update_subscription(&sub_id, &json!({"items": [{"price": traces}]}), NOW)
            .is_err());
        assert_eq!(
            s.update_subscription(
                &sub_id,
                &json!({"items": [{"id": "si_nope", "deleted": "true"}]}),
                NOW
            )
            .unwrap_err()
            .param
            .as_deref(),
            Some("items[0][id]")
        );
        assert_eq!(
            s.update_subscription(&sub_id, &json!({"items": [{"price": once}]}), NOW)
                .unwrap_err()
                .param
                .as_deref(),
            Some("items[0][price]")
        );
        assert_eq!(
            s.update_subscription(&sub_id, &json!({"items": [{"price": "price_x"}]}), NOW)
                .unwrap_err()
                .code,
            Some("resource_missing")
        );
        assert!(s.update_subscription(&sub_id, &json!({"items": [{"id": base_item, "deleted": "true"}, {"id": added["items"]["data"][1]["id"], "deleted": "true"}]}), NOW).is_err());
        assert_eq!(s.update_subscription("sub_nope", &json!({}), NOW).unwrap_err().status, 404);
        let events = s.events.len();
        s.update_subscription(&sub_id, &json!({"metadata": {"tier": "growth"}}), NOW).unwrap();
        assert_eq!(s.events.len(), events, "no change, no event");

        let customer = done["customer"]["id"].as_str().unwrap();
        assert_eq!(
            s.list_subscriptions(&json!({"customer": customer})).unwrap()["data"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            s.list_subscriptions(&json!({"customer": "cus_other"})).unwrap()["data"]
                .as_array()
                .unwrap()
                .len(),
            0
        );

        let canceled = s
            .cancel_subscription(
                &sub_id,
                &json!({"cancellation_details": {"comment": "moving"}}),
                NOW + 100,
            )
            .unwrap();
        assert_eq!(
            (
                canceled["status"].as_str(),
                canceled["canceled_at"].as_i64(),
                canceled["ended_at"].as_i64()
            ),
            (Some("canceled"), Some(NOW + 100), Some(NOW + 100))
        );
        assert_eq!(canceled["cancellation_details"]["comment"], "moving");
        assert_eq!(s.events.last().unwrap().kind, "customer.subscription.deleted");
        assert!(s.cancel_subscription(&sub_id, &json!({}), NOW + 101).is_err());
        assert!(s
            .update_subscription(&sub_id, &json!({"items": [{"price": growth}]}), NOW + 101)
            .is_err());
        assert_eq!(
            s.list_subscriptions(&json!({"customer": customer})).unwrap()["data"]
                .as_array()
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            s.list_subscriptions(&json!({"customer": customer, "status": "canceled"})).unwrap()
                ["data"][0]["id"],
            sub_id.as_str()
        );
    }

    #[test]
    fn billing_periods_follow_the_anchor_by_calendar_month() {
        let jan31 = 1_769_817_600; // 2026-01-31T00:00:00Z
        let feb28 = 1_772_236_800; // 2026-02-28
        let mar31 = 1_774_915_200; // 2026-03-31
        assert_eq!(add_months(jan31, 1), feb28);
        assert_eq!(add_months(jan31, 2), mar31);
        assert_eq!(current_period(None, jan31), (jan31, feb28));
        assert_eq!(current_period(Some(feb28), jan31 + 5), (jan31 + 5, feb28));
        assert_eq!(current_period(Some(jan31), mar31 + 10), (mar31, add_months(jan31, 3)));
        assert_eq!(current_period(Some(jan31), feb28), (feb28, mar31));
    }
}
