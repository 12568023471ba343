//! Checkout Sessions in `subscription` mode: create, retrieve, list, and complete (the customer
//! pays, test only), which creates the customer and the subscription.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::params::{metadata_param, optional_param, required_param};
use super::{from_sample, list_page, new_id, to_json, Listed, Reply, Store, StripeError};
use super::{Customer, Subscription, CHECKOUT_SESSION_LIFETIME_SECS};
use crate::spec::sample;

/// Stripe's Checkout Session object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    /// Always `"checkout.session"`.
    pub object: String,
    pub created: i64,
    pub expires_at: i64,
    pub livemode: bool,
    /// `"subscription"`.
    pub mode: String,
    /// `"open"`, then `"complete"`.
    pub status: String,
    /// `"unpaid"`, then `"paid"` or `"no_payment_required"`.
    pub payment_status: String,
    /// The page the customer pays on (`{base}/_standin/checkout/{id}`).
    pub url: Option<String>,
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
    pub client_reference_id: Option<String>,
    pub customer: Option<String>,
    pub customer_email: Option<String>,
    /// Set when the session completes.
    pub customer_details: Option<CustomerDetails>,
    pub metadata: Map<String, Value>,
    pub currency: Option<String>,
    /// What is due today in cents: the licensed items (metered usage is billed later).
    pub amount_subtotal: Option<i64>,
    pub amount_total: Option<i64>,
    /// Set when the session completes.
    pub subscription: Option<String>,
    /// The rest of Stripe's sample, as the stand-in fixes it for a subscription session.
    #[serde(flatten)]
    pub sample_fields: Map<String, Value>,
}

impl Listed for CheckoutSession {
    fn id(&self) -> &str {
        &self.id
    }
    fn created(&self) -> i64 {
        self.created
    }
}

/// Who paid a completed Checkout Session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerDetails {
    pub address: Option<Value>,
    pub business_name: Option<String>,
    pub email: Option<String>,
    pub individual_name: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub tax_exempt: String,
    pub tax_ids: Option<Vec<Value>>,
}

/// What a Checkout Session will subscribe its customer to, kept beside the session as Stripe
/// keeps it (not part of the session object).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionSetup {
    /// (price id, quantity): no quantity for a metered price.
    items: Vec<(String, Option<u64>)>,
    subscription_metadata: Map<String, Value>,
    billing_cycle_anchor: Option<i64>,
}

/// What completing a Checkout Session made (`POST /_standin/checkout/sessions/{id}/complete`
/// answers it).
#[derive(Debug, Clone, Serialize)]
pub struct CheckoutCompletion {
    pub session: CheckoutSession,
    pub customer: Customer,
    pub subscription: Subscription,
}

/// The fields of Stripe's sample a subscription session of the stand-in always has.
fn fixed_session_fields() -> Value {
    json!({
        "customer_creation": null,
        "invoice": null,
        "payment_intent": null,
        "setup_intent": null,
        "payment_link": null,
        "invoice_creation": null,
        "after_expiration": null,
        "adaptive_pricing": null,
        "allow_promotion_codes": null,
        "automatic_tax": {"enabled": false, "liability": null, "provider": null, "status": null},
        "collected_information": null,
        "consent": null,
        "consent_collection": null,
        "currency_conversion": null,
        "custom_text": {
            "after_submit": null, "shipping_address": null, "submit": null,
            "terms_of_service_acceptance": null,
        },
        "managed_payments": null,
        "payment_method_collection": "always",
        "payment_method_configuration_details": null,
        "permissions": null,
        "phone_number_collection": {"enabled": false},
        "saved_payment_method_options": null,
        "shipping_address_collection": null,
        "shipping_cost": null,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "wallet_options": null,
    })
}

impl Store {
    /// `POST /v1/checkout/sessions`, mode `subscription`: the session's page is at
    /// `{base}/_standin/checkout/{id}`.
    pub fn create_checkout_session(&mut self, params: &Value, now: i64, base: &str) -> Reply {
        let mode = required_param(params, "mode")?;
        match mode.as_str() {
            "subscription" => {}
            "payment" | "setup" => {
                return Err(StripeError::invalid(
                    "mode",
                    format!(
                        "The stand-in implements Checkout only in `subscription` mode, \
                         not `{mode}`."
                    ),
                ))
            }
            other => {
                return Err(StripeError::invalid(
                    "mode",
                    format!(
                        "Invalid mode: {other}; must be one of payment, setup, or subscription"
                    ),
                ))
            }
        }
        let customer = optional_param(params, "customer");
        let customer_email = optional_param(params, "customer_email");
        if customer.is_some() && customer_email.is_some() {
            return Err(StripeError::invalid(
                "customer_email",
                "You may only specify one of these parameters: customer, customer_email.",
            ));
        }
        if let Some(c) = &customer {
            if !self.customers.contains_key(c) {
                return Err(StripeError {
                    param: Some("customer".into()),
                    ..StripeError::not_found("customer", c)
                });
            }
        }
        let line_items = match params.get("line_items") {
            None => return Err(StripeError::missing("line_items")),
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(_) => return Err(StripeError::invalid("line_items", "Invalid array")),
        };
        let mut items: Vec<(String, Option<u64>)> = Vec::new();
        let mut currency: Option<String> = None;
        let mut amount = 0i64;
        for (i, line_item) in line_items.iter().enumerate() {
            let param = format!("line_items[{i}]");
            if line_item.get("price_data").is_some() {
                return Err(StripeError::invalid(
                    &format!("{param}[price_data]"),
                    "The stand-in takes line items by `price` only.",
                ));
            }
            let price_id = line_item
                .get("price")
                .and_then(Value::as_str)
                .ok_or_else(|| StripeError::missing(&format!("{param}[price]")))?;
            let quantity = line_item.get("quantity").and_then(Value::as_str);
            let (price, quantity) = self.subscribable_price(price_id, quantity, &param)?;
            if items.iter().any(|(p, _)| p == price_id) {
                return Err(StripeError::invalid(
                    &format!("{param}[price]"),
                    format!("You cannot add the same price twice: {price_id}"),
                ));
            }
            if currency.as_ref().is_some_and(|c| *c != price.currency) {
                return Err(StripeError::invalid(
                    &format!("{param}[price]"),
                    "All prices of a subscription must be in the same currency.",
                ));
            }
            currency = Some(price.currency.clone());
            if let (Some(q), Some(unit)) = (quantity, price.unit_amount) {
                amount += unit * q as i64;
            }
            items.push((price_id.to_string(), quantity));
        }
        let subscription_metadata = match params.pointer("/subscription_data/metadata") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        let billing_cycle_anchor =
            match params.pointer("/subscription_data/billing_cycle_anchor").and_then(Value::as_str)
            {
                None => None,
                Some(a) => {
                    let param = "subscription_data[billing_cycle_anchor]";
                    let a: i64 = a.parse().map_err(|_| {
                        StripeError::invalid(param, format!("Invalid integer: {a}"))
                    })?;
                    if a <= now {
                        return Err(StripeError::invalid(
                            param,
                            "billing_cycle_anchor must be in the future.",
                        ));
                    }
                    Some(a)
                }
            };
        let id = new_id("cs_test_");
        let mut session: CheckoutSession =
            from_sample(sample("checkout.session"), fixed_session_fields());
        session.id = id.clone();
        session.object = "checkout.session".into();
        session.created = now;
        session.expires_at = now + CHECKOUT_SESSION_LIFETIME_SECS;
        session.livemode = false;
        session.mode = "subscription".into();
        session.status = "open".into();
        session.payment_status = "unpaid".into();
        session.url = Some(format!("{base}/_standin/checkout/{id}"));
        session.success_url = optional_param(params, "success_url");
        session.cancel_url = optional_param(params, "cancel_url");
        session.client_reference_id = optional_param(params, "client_reference_id");
        session.customer = customer;
        session.customer_email = customer_email;
        session.customer_details = None;
        session.metadata = metadata_param(params);
        session.currency = currency;
        session.amount_subtotal = Some(amount);
        session.amount_total = Some(amount);
        session.subscription = None;
        self.checkout_sessions.insert(id.clone(), session.clone());
        let setup = SessionSetup { items, subscription_metadata, billing_cycle_anchor };
        self.session_setups.insert(id, setup);
        Ok(to_json(&session))
    }

    pub fn find_checkout_session(&self, id: &str) -> Result<&CheckoutSession, StripeError> {
        self.checkout_sessions.get(id).ok_or_else(|| StripeError::not_found("checkout.session", id))
    }

    pub fn checkout_session(&self, id: &str) -> Reply {
        self.find_checkout_session(id).map(to_json)
    }

    /// `POST /v1/checkout/sessions/{id}/expire`: an open session can no longer be completed
    /// (`checkout.session.expired`); any other is refused, as Stripe does.
    pub fn expire_checkout_session(&mut self, id: &str, now: i64) -> Reply {
        let session = self.find_checkout_session(id)?;
        if session.status != "open" {
            return Err(StripeError::invalid(
                "session",
                format!(
                    "Only Checkout Sessions with a status of `open` can be expired. This Checkout Session has a status of `{}`.",
                    session.status
                ),
            ));
        }
        let session = self.checkout_sessions.get_mut(id).expect("found above");
        session.status = "expired".into();
        session.expires_at = now;
        let session = session.clone();
        self.record_event("checkout.session.expired", to_json(&session), None, now);
        Ok(to_json(&session))
    }

    /// `GET /v1/checkout/sessions`: by `customer`, `subscription` and `status`.
    pub fn list_checkout_sessions(&self, params: &Value) -> Reply {
        let customer = optional_param(params, "customer");
        let subscription = optional_param(params, "subscription");
        let status = optional_param(params, "status");
        let sessions = self
            .checkout_sessions
            .values()
            .filter(|s| customer.is_none() || s.customer == customer)
            .filter(|s| subscription.is_none() || s.subscription == subscription)
            .filter(|s| status.as_ref().is_none_or(|st| s.status == *st))
            .cloned()
            .collect();
        list_page("/v1/checkout/sessions", sessions, params)
    }

    /// The customer pays on the session's page (test only): creates the customer unless the
    /// session named one, subscribes it to the session's line items, completes the session.
    pub fn complete_checkout(
        &mut self,
        id: &str,
        email: Option<&str>,
        now: i64,
    ) -> Result<CheckoutCompletion, StripeError> {
        let session = self.find_checkout_session(id)?.clone();
        if session.status != "open" {
            return Err(StripeError::invalid(
                "session",
                format!("This Checkout Session is no longer open (status `{}`).", session.status),
            ));
        }
        if now >= session.expires_at {
            return Err(StripeError::invalid("session", "This Checkout Session has expired."));
        }
        let setup = self.session_setups.get(id).cloned().expect("every session has its setup");
        let email = email.map(String::from).or(session.customer_email.clone());
        let customer = match &session.customer {
            Some(c) => self.find_customer(c)?.clone(),
            None => self.insert_customer(&json!({ "email": email }), now),
        };
        let mut items = Vec::new();
        for (price_id, quantity) in &setup.items {
            let price = self
                .prices
                .get(price_id)
                .cloned()
                .ok_or_else(|| StripeError::not_found("price", price_id))?;
            items.push((price, *quantity));
        }
        let subscription = self.insert_subscription(
            &customer.id,
            items,
            setup.subscription_metadata.clone(),
            setup.billing_cycle_anchor,
            now,
        );
        let session = self.checkout_sessions.get_mut(id).expect("checked above");
        let paid = session.amount_total.unwrap_or(0) > 0;
        session.status = "complete".into();
        session.payment_status = if paid { "paid" } else { "no_payment_required" }.into();
        session.customer = Some(customer.id.clone());
        session.subscription = Some(subscription.id.clone());
        session.customer_details = Some(CustomerDetails {
            address: None,
            business_name: None,
            email: customer.email.clone(),
            individual_name: None,
            name: customer.name.clone(),
            phone: None,
            tax_exempt: "none".into(),
            tax_ids: Some(Vec::new()),
        });
        let session = session.clone();
        self.record_event("checkout.session.completed", to_json(&session), None, now);
        Ok(CheckoutCompletion { session, customer, subscription })
    }

    /// [`Store::complete_checkout`], answered as `{session, customer, subscription}`.
    pub fn complete_checkout_session(&mut self, id: &str, email: Option<&str>, now: i64) -> Reply {
        self.complete_checkout(id, email, now).map(|done| to_json(&done))
    }
}

#[cfg(test)]
mod tests {
    use super::super::subscriptions::add_months;
    use super::super::test_fixtures::{plan, session, types, BASE, NOW};
    use super::super::API_VERSION;
    use super::*;

    #[test]
    fn checkout_sessions_check_their_prices_and_complete_into_a_subscription() {
        let mut s = Store::default();
        let (base, traces, once) = plan(&mut s);
        let create = |s: &mut Store, items: Value| {
            s.create_checkout_session(
                &json!({"mode": "subscription", "line_items": items}),
                NOW,
                BASE,
            )
        };
        let e = create(&mut s, json!([{"price": "price_missing"}])).unwrap_err();
        assert_eq!(
            (e.status, e.code, e.param.as_deref()),
            (400, Some("resource_missing"), Some("line_items[0][price]"))
        );
        assert_eq!(e.message, "No such price: 'price_missing'");
        let e = create(&mut s, json!([{"price": base}, {"price": traces, "quantity": "1"}]))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("line_items[1][quantity]"));
        assert_eq!(
            create(&mut s, json!([{"price": once}])).unwrap_err().param.as_deref(),
            Some("line_items[0][price]")
        );
        assert_eq!(
            create(&mut s, json!([{"price": base}, {"price": base}])).unwrap_err().param.as_deref(),
            Some("line_items[1][price]")
        );
        assert_eq!(
            s.create_checkout_session(&json!({"line_items": [{"price": base}]}), NOW, BASE)
                .unwrap_err()
                .code,
            Some("parameter_missing")
        );
        assert_eq!(
            s.create_checkout_session(
                &json!({"mode": "payment", "line_items": [{"price": base}]}),
                NOW,
                BASE
            )
            .unwrap_err()
            .param
            .as_deref(),
            Some("mode")
        );
        let anchor_in_past = json!({"mode": "subscription", "line_items": [{"price": base}], "subscription_data": {"billing_cycle_anchor": NOW.to_string()}});
        assert!(s.create_checkout_session(&anchor_in_past, NOW, BASE).is_err());

        let cs = session(&mut s, &base, &traces);
        let id = cs["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("cs_test_"));
        assert_eq!(cs["url"], format!("{BASE}/_standin/checkout/{id}"));
        assert_eq!(
            (cs["status"].as_str(), cs["payment_status"].as_str(), cs["mode"].as_str()),
            (Some("open"), Some("unpaid"), Some("subscription"))
        );
        assert_eq!(
            (cs["client_reference_id"].as_str(), cs["metadata"]["org_id"].as_str()),
            (Some("org_acme"), Some("acme"))
        );
        assert!(cs["customer"].is_null() && cs["subscription"].is_null());
        assert_eq!(
            (cs["amount_total"].as_i64(), cs["currency"].as_str()),
            (Some(2500), Some("usd"))
        );
        assert_eq!(s.checkout_session(&id).unwrap(), cs);
        assert!(types(&s).is_empty(), "creating a session announces nothing");

        let done = s.complete_checkout_session(&id, Some("ops@acme.test"), NOW + 60).unwrap();
        let (cs, customer, sub) = (&done["session"], &done["customer"], &done["subscription"]);
        assert_eq!(customer["email"], "ops@acme.test");
        assert_eq!(
            (cs["status"].as_str(), cs["payment_status"].as_str()),
            (Some("complete"), Some("paid"))
        );
        assert_eq!((&cs["customer"], &cs["subscription"]), (&customer["id"], &sub["id"]));
        assert_eq!(cs["customer_details"]["email"], "ops@acme.test");
        assert_eq!((sub["status"].as_str(), &sub["customer"]), (Some("active"), &customer["id"]));
        assert_eq!(sub["metadata"], json!({"org_id": "acme", "tier": "starter"}));
        let items = sub["items"]["data"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            (items[0]["price"]["id"].as_str(), items[0]["quantity"].as_u64()),
            (Some(base.as_str()), Some(1))
        );
        assert_eq!(items[1]["price"]["id"], traces.as_str());
        assert!(items[1].get("quantity").is_none(), "a metered item has no quantity");
        assert!(items[1]["price"].get("tiers").is_none());
        assert_eq!(items[1]["plan"]["usage_type"], "metered");
        assert_eq!(items[0]["current_period_start"], NOW + 60);
        assert_eq!(items[0]["current_period_end"], add_months(NOW + 60, 1));
        assert_eq!(s.subscription(sub["id"].as_str().unwrap()).unwrap(), *sub);
        assert_eq!(
            types(&s),
            ["customer.created", "customer.subscription.created", "checkout.session.completed"]
        );
        assert_eq!(s.events[2].data.object, *cs);
        assert_eq!(
            (s.events[2].api_version.as_deref(), s.events[2].livemode),
            (Some(API_VERSION), false)
        );
        assert!(s.events[2].request.id.is_none());
        assert_eq!(s.take_new_events().len(), 3);
        assert!(s.take_new_events().is_empty());
        // A session completes once.
        assert!(s.complete_checkout_session(&id, None, NOW + 61).is_err());
        // Events list newest first, filtered by type.
        let all = s.list_events(&json!({})).unwrap();
        let listed: Vec<&str> =
            all["data"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            listed,
            ["checkout.session.completed", "customer.subscription.created", "customer.created"]
        );
        let subs = s.list_events(&json!({"type": "customer.subscription.*"})).unwrap();
        assert_eq!(subs["data"].as_array().unwrap().len(), 1);
        let eid = s.events[0].id.clone();
        assert_eq!(s.event(&eid).unwrap()["type"], "customer.created");

        // A session for an existing customer, with an anchor: no customer is created and the first
        // period runs up to the anchor.
        let anchor = NOW + 10 * 86_400;
        let cs = s
            .create_checkout_session(
                &json!({"mode": "subscription", "customer": customer["id"], "line_items": [{"price": base, "quantity": "3"}],
                    "subscription_data": {"billing_cycle_anchor": anchor.to_string()}}),
                NOW,
                BASE,
            )
            .unwrap();
        assert_eq!(cs["amount_total"], 7500);
        let done = s.complete_checkout_session(cs["id"].as_str().unwrap(), None, NOW).unwrap();
        let item = &done["subscription"]["items"]["data"][0];
        assert_eq!(
            (
                item["quantity"].as_u64(),
                item["current_period_start"].as_i64(),
                item["current_period_end"].as_i64()
            ),
            (Some(3), Some(NOW), Some(anchor))
        );
        assert_eq!(done["subscription"]["billing_cycle_anchor"], anchor);
        assert_eq!(types(&s)[3..], ["customer.subscription.created", "checkout.session.completed"]);
        assert_eq!(
            s.list_checkout_sessions(&json!({"customer": customer["id"], "status": "complete"}))
                .unwrap()["data"]
                .as_array()
                .unwrap()
                .len(),
            2
        );

        // An open session expires when asked, and then cannot be paid; only an open one expires.
        let cs = s
            .create_checkout_session(
                &json!({"mode": "subscription", "line_items": [{"price": base, "quantity": "1"}]}),
                NOW,
                BASE,
            )
            .unwrap();
        let open = cs["id"].as_str().unwrap();
        let expired = s.expire_checkout_session(open, NOW + 5).unwrap();
        assert_eq!(expired["status"], "expired");
        assert_eq!(types(&s).last().map(String::as_str), Some("checkout.session.expired"));
        assert!(s.complete_checkout_session(open, None, NOW + 6).is_err());
        assert!(s.expire_checkout_session(open, NOW + 7).is_err());
        assert!(
            s.expire_checkout_session(&id, NOW + 7).is_err(),
            "a complete session stays complete"
        );
    }
}
