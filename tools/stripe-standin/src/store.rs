//! The stand-in's state and the behaviour of each resource, without HTTP: what Stripe stores,
//! what it refuses and how it answers. Every object starts from Stripe's sample of its kind.

use std::collections::{BTreeMap, HashMap};

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::spec::sample;

/// How long a meter event's identifier stays unique, and how long an event can be cancelled.
pub const IDENTIFIER_WINDOW_SECS: i64 = 24 * 3600;
/// How far in the past a meter event's timestamp may be.
pub const MAX_EVENT_AGE_SECS: i64 = 35 * 24 * 3600;
/// How far in the future a meter event's timestamp may be.
pub const MAX_EVENT_AHEAD_SECS: i64 = 5 * 60;
/// The API version the stand-in answers in, and renders events in.
pub const API_VERSION: &str = "2026-08-26.dahlia";
/// How long a Checkout Session stays open.
pub const CHECKOUT_SESSION_LIFETIME_SECS: i64 = 24 * 3600;

/// An error as Stripe answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeError {
    pub status: u16,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<String>,
    pub message: String,
}

impl StripeError {
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        StripeError {
            status: 400,
            kind: "invalid_request_error",
            code: Some("parameter_invalid"),
            param: Some(param.to_string()),
            message: message.into(),
        }
    }

    pub fn missing(param: &str) -> Self {
        StripeError {
            status: 400,
            kind: "invalid_request_error",
            code: Some("parameter_missing"),
            param: Some(param.to_string()),
            message: format!("Missing required param: {param}."),
        }
    }

    pub fn unknown_param(param: &str) -> Self {
        StripeError {
            status: 400,
            kind: "invalid_request_error",
            code: Some("parameter_unknown"),
            param: Some(param.to_string()),
            message: format!("Received unknown parameter: {param}"),
        }
    }

    pub fn not_found(kind: &str, id: &str) -> Self {
        StripeError {
            status: 404,
            kind: "invalid_request_error",
            code: Some("resource_missing"),
            param: Some("id".into()),
            message: format!("No such {kind}: '{id}'"),
        }
    }

    pub fn body(&self) -> Value {
        let mut error = json!({"type": self.kind, "message": self.message});
        if let Some(code) = self.code {
            error["code"] = code.into();
        }
        if let Some(param) = &self.param {
            error["param"] = param.clone().into();
        }
        json!({ "error": error })
    }
}

pub type Reply = Result<Value, StripeError>;

/// A fresh id in Stripe's style: a prefix and 24 random letters and digits.
pub fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let tail: String = (0..24).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("{prefix}{tail}")
}

fn string(params: &Value, name: &str) -> Option<String> {
    params.get(name).and_then(Value::as_str).map(String::from)
}

fn required(params: &Value, name: &str) -> Result<String, StripeError> {
    string(params, name).filter(|s| !s.is_empty()).ok_or_else(|| StripeError::missing(name))
}

fn integer(params: &Value, name: &str) -> Result<Option<i64>, StripeError> {
    match string(params, name) {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| StripeError::invalid(name, format!("Invalid integer: {s}"))),
    }
}

fn metadata(params: &Value) -> Value {
    params.get("metadata").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}))
}

/// Parses a non-negative decimal string (`"0.00000005"`) into (mantissa, scale).
fn decimal(text: &str) -> Option<(u128, u32)> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || frac.len() > 12 || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((format!("{whole}{frac}").parse().ok()?, frac.len() as u32))
}

/// One line of a graduated price: the units that fell in a tier, its unit amount, the amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierLine {
    pub quantity: u64,
    pub unit_amount_decimal: String,
    pub amount: i64,
}

/// Prices `quantity` units on graduated `tiers` (as stored on a price): each tier charges the
/// units that fall in it, `quantity × unit_amount_decimal` exactly, rounded to whole cents half
/// up, plus its flat amount. Tiers with no units are left out.
pub fn graduated(tiers: &[Value], quantity: u64) -> Option<Vec<TierLine>> {
    let mut lines = Vec::new();
    let mut from = 0u64;
    for tier in tiers {
        if quantity <= from {
            break;
        }
        let up_to = tier["up_to"].as_u64();
        let units = quantity.min(up_to.unwrap_or(u64::MAX)) - from;
        let unit = tier["unit_amount_decimal"].as_str().unwrap_or("0");
        let (mantissa, scale) = decimal(unit)?;
        let den = 10u128.pow(scale);
        let exact_twice = 2 * units as u128 * mantissa;
        let rounded = (exact_twice + den) / (2 * den);
        let flat = tier["flat_amount"].as_i64().unwrap_or(0);
        lines.push(TierLine { quantity: units, unit_amount_decimal: unit.to_string(), amount: i64::try_from(rounded).ok()? + flat });
        match up_to {
            Some(u) => from = u,
            None => break,
        }
    }
    Some(lines)
}

/// One meter event as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeterEvent {
    pub event_name: String,
    pub customer: String,
    pub value: i64,
    pub timestamp: i64,
    pub identifier: String,
    pub received: i64,
    pub cancelled: bool,
}

/// What a Checkout Session will subscribe its customer to, kept beside the session as Stripe
/// keeps it (not part of the session object).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionSetup {
    /// (price id, quantity): no quantity for a metered price.
    items: Vec<(String, Option<u64>)>,
    subscription_metadata: Value,
    billing_cycle_anchor: Option<i64>,
}

/// Everything the stand-in remembers. It serializes whole (the state file), but for what lives
/// only within one request: the events not yet handed to the webhook sender (always none
/// between requests) and the request being served.
#[derive(Default, Clone, Serialize, Deserialize)]
pub struct Store {
    customers: BTreeMap<String, Value>,
    products: BTreeMap<String, Value>,
    prices: BTreeMap<String, Value>,
    meters: BTreeMap<String, Value>,
    meter_events: Vec<MeterEvent>,
    /// identifier → index in `meter_events`
    identifiers: HashMap<String, usize>,
    checkout_sessions: BTreeMap<String, Value>,
    session_setups: HashMap<String, SessionSetup>,
    subscriptions: BTreeMap<String, Value>,
    invoices: BTreeMap<String, Value>,
    /// Every event, oldest first.
    events: Vec<Value>,
    /// Events created since the last [`Store::take_new_events`], oldest first.
    #[serde(skip)]
    new_events: Vec<Value>,
    /// The API request events are attributed to: (request id, idempotency key).
    #[serde(skip)]
    request: Option<(String, Option<String>)>,
}

/// A list answer, newest first, with `limit` (default 10, at most 100) and `starting_after`.
fn list(url: &str, mut items: Vec<Value>, params: &Value) -> Reply {
    items.sort_by(|a, b| b["created"].as_i64().cmp(&a["created"].as_i64()).then_with(|| b["id"].as_str().cmp(&a["id"].as_str())));
    if let Some(after) = string(params, "starting_after") {
        let at = items.iter().position(|o| o["id"] == after.as_str()).ok_or_else(|| StripeError::invalid("starting_after", format!("No such object: '{after}'")))?;
        items.drain(..=at);
    }
    let limit = integer(params, "limit")?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(StripeError::invalid("limit", "This value must be between 1 and 100."));
    }
    let has_more = items.len() > limit as usize;
    items.truncate(limit as usize);
    Ok(json!({"object": "list", "data": items, "has_more": has_more, "url": url}))
}

fn expanded(params: &Value, field: &str) -> bool {
    params.get("expand").and_then(Value::as_array).is_some_and(|e| e.iter().any(|x| x == field || x == &format!("data.{field}")))
}

impl Store {
    /// What the store holds, in a few words (for the log when the state file is loaded).
    pub fn summary(&self) -> String {
        format!(
            "{} customers, {} products, {} prices, {} meters, {} meter events, {} checkout sessions, {} subscriptions, {} invoices, {} events",
            self.customers.len(),
            self.products.len(),
            self.prices.len(),
            self.meters.len(),
            self.meter_events.len(),
            self.checkout_sessions.len(),
            self.subscriptions.len(),
            self.invoices.len(),
            self.events.len()
        )
    }

    // ---- customers -------------------------------------------------------------------------

    pub fn create_customer(&mut self, params: &Value, now: i64) -> Reply {
        let mut c = sample("customer");
        let id = new_id("cus_");
        c["id"] = id.clone().into();
        c["created"] = now.into();
        c["livemode"] = false.into();
        c["email"] = string(params, "email").map_or(Value::Null, Into::into);
        c["name"] = string(params, "name").map_or(Value::Null, Into::into);
        c["description"] = string(params, "description").map_or(Value::Null, Into::into);
        c["metadata"] = metadata(params);
        c["discount"] = Value::Null;
        c["balance"] = 0.into();
        c["invoice_prefix"] = new_id("")[..8].to_ascii_uppercase().into();
        c["next_invoice_sequence"] = 1.into();
        self.customers.insert(id, c.clone());
        self.emit("customer.created", c.clone(), None, now);
        Ok(c)
    }

    pub fn customer(&self, id: &str) -> Reply {
        self.customers.get(id).cloned().ok_or_else(|| StripeError::not_found("customer", id))
    }

    pub fn update_customer(&mut self, id: &str, params: &Value) -> Reply {
        let c = self.customers.get_mut(id).ok_or_else(|| StripeError::not_found("customer", id))?;
        for field in ["email", "name", "description"] {
            if let Some(v) = string(params, field) {
                c[field] = v.into();
            }
        }
        if let Some(m) = params.get("metadata").and_then(Value::as_object) {
            for (k, v) in m {
                c["metadata"][k] = v.clone();
            }
        }
        Ok(c.clone())
    }

    pub fn list_customers(&self, params: &Value) -> Reply {
        let email = string(params, "email");
        let items = self.customers.values().filter(|c| email.as_ref().is_none_or(|e| c["email"] == e.as_str())).cloned().collect();
        list("/v1/customers", items, params)
    }

    // ---- products --------------------------------------------------------------------------

    pub fn create_product(&mut self, params: &Value, now: i64) -> Reply {
        let name = required(params, "name")?;
        let mut p = sample("product");
        let id = string(params, "id").unwrap_or_else(|| new_id("prod_"));
        if self.products.contains_key(&id) {
            return Err(StripeError { status: 400, kind: "invalid_request_error", code: Some("resource_already_exists"), param: Some("id".into()), message: format!("Product already exists: {id}") });
        }
        p["id"] = id.clone().into();
        p["name"] = name.into();
        p["created"] = now.into();
        p["updated"] = now.into();
        p["livemode"] = false.into();
        p["default_price"] = Value::Null;
        p["description"] = string(params, "description").map_or(Value::Null, Into::into);
        p["metadata"] = metadata(params);
        p["package_dimensions"] = Value::Null;
        p["type"] = "service".into();
        self.products.insert(id, p.clone());
        Ok(p)
    }

    pub fn product(&self, id: &str) -> Reply {
        self.products.get(id).cloned().ok_or_else(|| StripeError::not_found("product", id))
    }

    pub fn list_products(&self, params: &Value) -> Reply {
        list("/v1/products", self.products.values().cloned().collect(), params)
    }

    // ---- prices ----------------------------------------------------------------------------

    pub fn create_price(&mut self, params: &Value, now: i64) -> Reply {
        let currency = required(params, "currency")?.to_ascii_lowercase();
        let product = required(params, "product")?;
        if !self.products.contains_key(&product) {
            return Err(StripeError::not_found("product", &product));
        }
        let mut p = sample("price");
        let id = new_id("price_");
        p["id"] = id.clone().into();
        p["created"] = now.into();
        p["currency"] = currency.into();
        p["product"] = product.into();
        p["livemode"] = false.into();
        p["metadata"] = metadata(params);
        p["nickname"] = string(params, "nickname").map_or(Value::Null, Into::into);
        p["custom_unit_amount"] = Value::Null;
        p["transform_quantity"] = Value::Null;
        let billing_scheme = string(params, "billing_scheme").unwrap_or_else(|| "per_unit".into());
        p["billing_scheme"] = billing_scheme.clone().into();
        match billing_scheme.as_str() {
            "per_unit" => {
                let (amount, decimal) = match (integer(params, "unit_amount")?, string(params, "unit_amount_decimal")) {
                    (Some(a), _) => (Value::from(a), a.to_string()),
                    (None, Some(d)) => (Value::Null, d),
                    (None, None) => return Err(StripeError::missing("unit_amount")),
                };
                p["unit_amount"] = amount;
                p["unit_amount_decimal"] = decimal.into();
                p["tiers_mode"] = Value::Null;
            }
            "tiered" => {
                let mode = required(params, "tiers_mode")?;
                if mode != "graduated" && mode != "volume" {
                    return Err(StripeError::invalid("tiers_mode", "Invalid tiers_mode: must be one of graduated or volume"));
                }
                let tiers = params.get("tiers").and_then(Value::as_array).filter(|t| !t.is_empty()).ok_or_else(|| StripeError::missing("tiers"))?;
                let mut out = Vec::new();
                for (i, t) in tiers.iter().enumerate() {
                    let up_to = match t.get("up_to").and_then(Value::as_str) {
                        Some("inf") => Value::Null,
                        Some(n) => n.parse::<i64>().map(Value::from).map_err(|_| StripeError::invalid(&format!("tiers[{i}][up_to]"), "Invalid integer"))?,
                        None => return Err(StripeError::missing(&format!("tiers[{i}][up_to]"))),
                    };
                    let unit_decimal = t.get("unit_amount_decimal").and_then(Value::as_str).map(String::from)
                        .or_else(|| t.get("unit_amount").and_then(Value::as_str).map(String::from));
                    let flat_decimal = t.get("flat_amount_decimal").and_then(Value::as_str).map(String::from)
                        .or_else(|| t.get("flat_amount").and_then(Value::as_str).map(String::from));
                    let as_int = |d: &Option<String>| d.as_ref().and_then(|d| d.parse::<i64>().ok()).map_or(Value::Null, Value::from);
                    out.push(json!({
                        "flat_amount": as_int(&flat_decimal),
                        "flat_amount_decimal": flat_decimal,
                        "unit_amount": as_int(&unit_decimal),
                        "unit_amount_decimal": unit_decimal,
                        "up_to": up_to,
                    }));
                }
                if out.last().is_some_and(|t| !t["up_to"].is_null()) {
                    return Err(StripeError::invalid("tiers", "The last tier must have `up_to` set to `inf`."));
                }
                p["tiers_mode"] = mode.into();
                p["tiers"] = Value::Array(out);
                p["unit_amount"] = Value::Null;
                p["unit_amount_decimal"] = Value::Null;
            }
            other => return Err(StripeError::invalid("billing_scheme", format!("Invalid billing_scheme: {other}"))),
        }
        match params.get("recurring") {
            Some(r) => {
                let interval = r.get("interval").and_then(Value::as_str).ok_or_else(|| StripeError::missing("recurring[interval]"))?;
                let usage_type = r.get("usage_type").and_then(Value::as_str).unwrap_or("licensed");
                let meter = r.get("meter").and_then(Value::as_str);
                if usage_type == "metered" && meter.is_none() {
                    return Err(StripeError::missing("recurring[meter]"));
                }
                if let Some(m) = meter {
                    if !self.meters.contains_key(m) {
                        return Err(StripeError::not_found("billing.meter", m));
                    }
                }
                p["recurring"] = json!({"interval": interval, "interval_count": 1, "meter": meter, "trial_period_days": null, "usage_type": usage_type});
                p["type"] = "recurring".into();
            }
            None => {
                p["recurring"] = Value::Null;
                p["type"] = "one_time".into();
            }
        }
        if let Some(key) = string(params, "lookup_key") {
            let transfer = string(params, "transfer_lookup_key").as_deref() == Some("true");
            if let Some(holder) = self.prices.values_mut().find(|p| p["lookup_key"] == key.as_str()) {
                if !transfer {
                    return Err(StripeError::invalid("lookup_key", format!("A price (`{}`) already uses that lookup key.", holder["id"].as_str().unwrap_or(""))));
                }
                holder["lookup_key"] = Value::Null;
            }
            p["lookup_key"] = key.into();
        } else {
            p["lookup_key"] = Value::Null;
        }
        self.prices.insert(id, p.clone());
        Ok(Self::price_view(&p, params))
    }

    /// Stripe shows `tiers` only when asked for with `expand[]=tiers`.
    fn price_view(price: &Value, params: &Value) -> Value {
        let mut view = price.clone();
        if !expanded(params, "tiers") {
            if let Some(o) = view.as_object_mut() {
                o.remove("tiers");
            }
        }
        view
    }

    pub fn price(&self, id: &str, params: &Value) -> Reply {
        self.prices.get(id).map(|p| Self::price_view(p, params)).ok_or_else(|| StripeError::not_found("price", id))
    }


    pub fn list_prices(&self, params: &Value) -> Reply {
        let keys: Option<Vec<&str>> = params.get("lookup_keys").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect());
        let product = string(params, "product");
        let items = self
            .prices
            .values()
            .filter(|p| keys.as_ref().is_none_or(|k| p["lookup_key"].as_str().is_some_and(|l| k.contains(&l))))
            .filter(|p| product.as_ref().is_none_or(|id| p["product"] == id.as_str()))
            .map(|p| Self::price_view(p, params))
            .collect();
        list("/v1/prices", items, params)
    }

    // ---- meters ----------------------------------------------------------------------------

    pub fn create_meter(&mut self, params: &Value, now: i64) -> Reply {
        let display_name = required(params, "display_name")?;
        let event_name = required(params, "event_name")?;
        let formula = params.pointer("/default_aggregation/formula").and_then(Value::as_str).ok_or_else(|| StripeError::missing("default_aggregation[formula]"))?;
        if !["sum", "count", "last"].contains(&formula) {
            return Err(StripeError::invalid("default_aggregation[formula]", "Invalid formula: must be one of count, last or sum"));
        }
        if self.meters.values().any(|m| m["event_name"] == event_name.as_str() && m["status"] == "active") {
            return Err(StripeError::invalid("event_name", format!("An active meter with event_name `{event_name}` already exists.")));
        }
        let customer_key = params.pointer("/customer_mapping/event_payload_key").and_then(Value::as_str).unwrap_or("stripe_customer_id");
        let value_key = params.pointer("/value_settings/event_payload_key").and_then(Value::as_str).unwrap_or("value");
        let mut m = sample("billing.meter");
        let id = new_id("mtr_");
        m["id"] = id.clone().into();
        m["created"] = now.into();
        m["updated"] = now.into();
        m["livemode"] = false.into();
        m["display_name"] = display_name.into();
        m["event_name"] = event_name.into();
        m["default_aggregation"] = json!({"formula": formula});
        m["customer_mapping"] = json!({"event_payload_key": customer_key, "type": "by_id"});
        m["value_settings"] = json!({"event_payload_key": value_key});
        m["status"] = "active".into();
        self.meters.insert(id, m.clone());
        Ok(m)
    }

    pub fn meter(&self, id: &str) -> Reply {
        self.meters.get(id).cloned().ok_or_else(|| StripeError::not_found("billing.meter", id))
    }

    pub fn list_meters(&self, params: &Value) -> Reply {
        let status = string(params, "status");
        let items = self.meters.values().filter(|m| status.as_ref().is_none_or(|s| m["status"] == s.as_str())).cloned().collect();
        list("/v1/billing/meters", items, params)
    }

    fn meter_for_event(&self, event_name: &str) -> Option<&Value> {
        self.meters.values().find(|m| m["event_name"] == event_name && m["status"] == "active")
    }

    // ---- meter events ----------------------------------------------------------------------

    pub fn create_meter_event(&mut self, params: &Value, now: i64) -> Reply {
        let event_name = required(params, "event_name")?;
        let (customer_key, value_key) = match self.meter_for_event(&event_name) {
            Some(m) => (
                m["customer_mapping"]["event_payload_key"].as_str().unwrap_or("stripe_customer_id").to_string(),
                m["value_settings"]["event_payload_key"].as_str().unwrap_or("value").to_string(),
            ),
            None => ("stripe_customer_id".to_string(), "value".to_string()),
        };
        let payload = params.get("payload").and_then(Value::as_object).ok_or_else(|| StripeError::missing("payload"))?;
        let customer = payload.get(&customer_key).and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or_else(|| StripeError::missing(&format!("payload[{customer_key}]")))?.to_string();
        let raw_value = payload.get(&value_key).and_then(Value::as_str).ok_or_else(|| StripeError::missing(&format!("payload[{value_key}]")))?;
        let value: i64 = raw_value
            .parse()
            .ok()
            .filter(|v| *v >= 0)
            .ok_or_else(|| StripeError::invalid(&format!("payload[{value_key}]"), format!("The value `{raw_value}` must be a non-negative whole number.")))?;
        let timestamp = integer(params, "timestamp")?.unwrap_or(now);
        if timestamp < now - MAX_EVENT_AGE_SECS || timestamp > now + MAX_EVENT_AHEAD_SECS {
            return Err(StripeError::invalid("timestamp", "Timestamp must be within the past 35 calendar days and no more than 5 minutes in the future."));
        }
        let identifier = string(params, "identifier").unwrap_or_else(|| new_id("mev_"));
        if let Some(&i) = self.identifiers.get(&identifier) {
            if now - self.meter_events[i].received < IDENTIFIER_WINDOW_SECS {
                return Err(StripeError {
                    status: 400,
                    kind: "invalid_request_error",
                    code: Some("resource_already_exists"),
                    param: Some("identifier".into()),
                    message: format!("An event with identifier `{identifier}` already exists."),
                });
            }
        }
        self.identifiers.insert(identifier.clone(), self.meter_events.len());
        self.meter_events.push(MeterEvent { event_name: event_name.clone(), customer, value, timestamp, identifier: identifier.clone(), received: now, cancelled: false });
        let mut e = sample("billing.meter_event");
        e["created"] = now.into();
        e["event_name"] = event_name.into();
        e["identifier"] = identifier.into();
        e["livemode"] = false.into();
        e["payload"] = Value::Object(payload.clone());
        e["timestamp"] = timestamp.into();
        Ok(e)
    }

    pub fn create_meter_event_adjustment(&mut self, params: &Value, now: i64) -> Reply {
        let event_name = required(params, "event_name")?;
        let kind = string(params, "type").unwrap_or_else(|| "cancel".into());
        if kind != "cancel" {
            return Err(StripeError::invalid("type", "Invalid type: must be cancel"));
        }
        let identifier = params.pointer("/cancel/identifier").and_then(Value::as_str).ok_or_else(|| StripeError::missing("cancel[identifier]"))?;
        let &i = self.identifiers.get(identifier).ok_or_else(|| StripeError::invalid("cancel[identifier]", format!("No meter event with identifier `{identifier}`.")))?;
        let event = &mut self.meter_events[i];
        if event.event_name != event_name {
            return Err(StripeError::invalid("event_name", "The event_name does not match the event's."));
        }
        if now - event.received >= IDENTIFIER_WINDOW_SECS {
            return Err(StripeError::invalid("cancel[identifier]", "Meter events can only be cancelled within 24 hours of being received."));
        }
        event.cancelled = true;
        let mut a = sample("billing.meter_event_adjustment");
        a["cancel"] = json!({"identifier": identifier});
        a["event_name"] = event_name.into();
        a["livemode"] = false.into();
        a["status"] = "complete".into();
        a["type"] = "cancel".into();
        Ok(a)
    }

    /// The sum (or count, or last value) of a customer's events on a meter in `[start, end)`.
    pub fn aggregate(&self, meter: &Value, customer: &str, start: i64, end: i64) -> i64 {
        let events = self.meter_events.iter().filter(|e| {
            !e.cancelled && meter["event_name"] == e.event_name.as_str() && e.customer == customer && e.timestamp >= start && e.timestamp < end
        });
        match meter["default_aggregation"]["formula"].as_str() {
            Some("count") => events.count() as i64,
            Some("last") => events.max_by_key(|e| (e.timestamp, e.received)).map_or(0, |e| e.value),
            _ => events.map(|e| e.value).sum(),
        }
    }

    pub fn meter_event_summaries(&self, meter_id: &str, params: &Value) -> Reply {
        let meter = self.meters.get(meter_id).ok_or_else(|| StripeError::not_found("billing.meter", meter_id))?;
        let customer = required(params, "customer")?;
        let start = integer(params, "start_time")?.ok_or_else(|| StripeError::missing("start_time"))?;
        let end = integer(params, "end_time")?.ok_or_else(|| StripeError::missing("end_time"))?;
        if start % 60 != 0 || end % 60 != 0 {
            return Err(StripeError::invalid("start_time", "start_time and end_time must be aligned to minute boundaries."));
        }
        if end <= start {
            return Err(StripeError::invalid("end_time", "end_time must be after start_time."));
        }
        let window = match string(params, "value_grouping_window").as_deref() {
            None => end - start,
            Some("hour") => 3600,
            Some("day") => 86_400,
            Some(other) => return Err(StripeError::invalid("value_grouping_window", format!("Invalid value_grouping_window: {other}"))),
        };
        if window != end - start && (start % window != 0 || end % window != 0) {
            return Err(StripeError::invalid("start_time", "start_time and end_time must be aligned to the value_grouping_window."));
        }
        let mut data = Vec::new();
        let mut from = start;
        while from < end {
            let to = (from + window).min(end);
            let mut s = sample("billing.meter_event_summary");
            s["id"] = format!("mtrusg_{}_{}_{}", meter_id.trim_start_matches("mtr_"), from, to).into();
            s["aggregated_value"] = self.aggregate(meter, &customer, from, to).into();
            s["start_time"] = from.into();
            s["end_time"] = to.into();
            s["livemode"] = false.into();
            s["meter"] = meter_id.into();
            data.push(s);
            from = to;
        }
        let mut page = list(&format!("/v1/billing/meters/{meter_id}/event_summaries"), Vec::new(), &json!({}))?;
        page["data"] = Value::Array(data);
        Ok(page)
    }

    // ---- events ----------------------------------------------------------------------------

    /// Attributes the events created from now on to an API request (`None`: to no request, as
    /// for a customer completing a Checkout Session).
    pub fn set_request(&mut self, request: Option<(String, Option<String>)>) {
        self.request = request;
    }

    /// Records an event: `data.object` a snapshot of `object`, `data.previous_attributes` the
    /// changed fields' old values for `*.updated` events. Ids sort in creation order, so lists of
    /// events created in the same second stay newest first.
    fn emit(&mut self, kind: &str, object: Value, previous_attributes: Option<Value>, now: i64) -> Value {
        let mut e = sample("event");
        e["id"] = format!("evt_{:010}{}", self.events.len() + 1, &new_id("")[..14]).into();
        e["type"] = kind.into();
        e["created"] = now.into();
        e["api_version"] = API_VERSION.into();
        e["livemode"] = false.into();
        e["pending_webhooks"] = 0.into();
        e["request"] = match &self.request {
            Some((id, key)) => json!({"id": id, "idempotency_key": key}),
            None => json!({"id": null, "idempotency_key": null}),
        };
        e["data"] = match previous_attributes {
            Some(p) => json!({"object": object, "previous_attributes": p}),
            None => json!({"object": object}),
        };
        self.events.push(e.clone());
        self.new_events.push(e.clone());
        e
    }

    /// The events created since the last call, oldest first (for webhook delivery).
    pub fn take_new_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.new_events)
    }

    /// Sets an event's `pending_webhooks`, the count of endpoints still to receive it.
    pub fn set_pending_webhooks(&mut self, id: &str, pending: i64) {
        if let Some(e) = self.events.iter_mut().find(|e| e["id"] == id) {
            e["pending_webhooks"] = pending.max(0).into();
        }
    }

    /// One endpoint has received an event.
    pub fn webhook_delivered(&mut self, id: &str) {
        if let Some(e) = self.events.iter_mut().find(|e| e["id"] == id) {
            let pending = e["pending_webhooks"].as_i64().unwrap_or(0);
            e["pending_webhooks"] = (pending - 1).max(0).into();
        }
    }

    pub fn event(&self, id: &str) -> Reply {
        self.events.iter().find(|e| e["id"] == id).cloned().ok_or_else(|| StripeError::not_found("event", id))
    }

    pub fn list_events(&self, params: &Value) -> Reply {
        let kind = string(params, "type");
        let kinds: Option<Vec<&str>> = params.get("types").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect());
        let matches = |pattern: &str, t: &str| match pattern.strip_suffix('*') {
            Some(prefix) => t.starts_with(prefix),
            None => t == pattern,
        };
        let items = self
            .events
            .iter()
            .filter(|e| {
                let t = e["type"].as_str().unwrap_or("");
                kind.as_deref().is_none_or(|k| matches(k, t)) && kinds.as_ref().is_none_or(|ks| ks.iter().any(|k| matches(k, t)))
            })
            .cloned()
            .collect();
        list("/v1/events", items, params)
    }

    // ---- checkout sessions -----------------------------------------------------------------

    /// A recurring price a subscription item can take, and the quantity Stripe keeps for it:
    /// none for a metered price (its usage comes from the meter), 1 by default for a licensed
    /// one. `param` names the item in errors (`line_items[0]`, `items[1]`).
    fn subscribable(&self, price_id: &str, quantity: Option<&str>, param: &str) -> Result<(Value, Option<u64>), StripeError> {
        let price = self.prices.get(price_id).ok_or_else(|| StripeError {
            status: 400,
            kind: "invalid_request_error",
            code: Some("resource_missing"),
            param: Some(format!("{param}[price]")),
            message: format!("No such price: '{price_id}'"),
        })?;
        if price["type"] != "recurring" {
            return Err(StripeError::invalid(
                &format!("{param}[price]"),
                "The price specified is set to `type=one_time` but this field only accepts prices with `type=recurring`.",
            ));
        }
        if price["active"] == false {
            return Err(StripeError::invalid(&format!("{param}[price]"), format!("The price specified is inactive: {price_id}")));
        }
        let quantity = match (price["recurring"]["usage_type"].as_str(), quantity) {
            (Some("metered"), Some(_)) => {
                return Err(StripeError::invalid(
                    &format!("{param}[quantity]"),
                    format!("Quantity should not be specified where usage_type is `metered`. Remove quantity from `{param}`."),
                ))
            }
            (Some("metered"), None) => None,
            (_, None) => Some(1),
            (_, Some(q)) => Some(q.parse::<u64>().map_err(|_| StripeError::invalid(&format!("{param}[quantity]"), format!("Invalid integer: {q}")))?),
        };
        Ok((price.clone(), quantity))
    }

    /// `POST /v1/checkout/sessions`, mode `subscription`: the session's page is at
    /// `{base}/_standin/checkout/{id}`.
    pub fn create_checkout_session(&mut self, params: &Value, now: i64, base: &str) -> Reply {
        let mode = required(params, "mode")?;
        match mode.as_str() {
            "subscription" => {}
            "payment" | "setup" => return Err(StripeError::invalid("mode", format!("The stand-in implements Checkout only in `subscription` mode, not `{mode}`."))),
            other => return Err(StripeError::invalid("mode", format!("Invalid mode: {other}; must be one of payment, setup, or subscription"))),
        }
        let customer = string(params, "customer");
        let customer_email = string(params, "customer_email");
        if customer.is_some() && customer_email.is_some() {
            return Err(StripeError::invalid("customer_email", "You may only specify one of these parameters: customer, customer_email."));
        }
        if let Some(c) = &customer {
            if !self.customers.contains_key(c) {
                return Err(StripeError { param: Some("customer".into()), ..StripeError::not_found("customer", c) });
            }
        }
        let line_items = match params.get("line_items") {
            None => return Err(StripeError::missing("line_items")),
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(_) => return Err(StripeError::invalid("line_items", "Invalid array")),
        };
        let mut items = Vec::new();
        let mut currency: Option<String> = None;
        let mut amount = 0i64;
        for (i, li) in line_items.iter().enumerate() {
            let param = format!("line_items[{i}]");
            if li.get("price_data").is_some() {
                return Err(StripeError::invalid(&format!("{param}[price_data]"), "The stand-in takes line items by `price` only."));
            }
            let price_id = li.get("price").and_then(Value::as_str).ok_or_else(|| StripeError::missing(&format!("{param}[price]")))?;
            let (price, quantity) = self.subscribable(price_id, li.get("quantity").and_then(Value::as_str), &param)?;
            if items.iter().any(|(p, _)| p == price_id) {
                return Err(StripeError::invalid(&format!("{param}[price]"), format!("You cannot add the same price twice: {price_id}")));
            }
            let c = price["currency"].as_str().unwrap_or("usd").to_string();
            if currency.as_ref().is_some_and(|cur| *cur != c) {
                return Err(StripeError::invalid(&format!("{param}[price]"), "All prices of a subscription must be in the same currency."));
            }
            currency = Some(c);
            if let (Some(q), Some(unit)) = (quantity, price["unit_amount"].as_i64()) {
                amount += unit * q as i64;
            }
            items.push((price_id.to_string(), quantity));
        }
        let subscription_metadata = params.pointer("/subscription_data/metadata").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
        let billing_cycle_anchor = match params.pointer("/subscription_data/billing_cycle_anchor").and_then(Value::as_str) {
            None => None,
            Some(a) => {
                let param = "subscription_data[billing_cycle_anchor]";
                let a: i64 = a.parse().map_err(|_| StripeError::invalid(param, format!("Invalid integer: {a}")))?;
                if a <= now {
                    return Err(StripeError::invalid(param, "billing_cycle_anchor must be in the future."));
                }
                Some(a)
            }
        };
        let id = new_id("cs_test_");
        let mut cs = sample("checkout.session");
        cs["id"] = id.clone().into();
        cs["object"] = "checkout.session".into();
        cs["created"] = now.into();
        cs["expires_at"] = (now + CHECKOUT_SESSION_LIFETIME_SECS).into();
        cs["livemode"] = false.into();
        cs["mode"] = "subscription".into();
        cs["status"] = "open".into();
        cs["payment_status"] = "unpaid".into();
        cs["url"] = format!("{base}/_standin/checkout/{id}").into();
        cs["success_url"] = string(params, "success_url").map_or(Value::Null, Into::into);
        cs["cancel_url"] = string(params, "cancel_url").map_or(Value::Null, Into::into);
        cs["client_reference_id"] = string(params, "client_reference_id").map_or(Value::Null, Into::into);
        cs["customer"] = customer.map_or(Value::Null, Into::into);
        cs["customer_email"] = customer_email.map_or(Value::Null, Into::into);
        cs["customer_details"] = Value::Null;
        cs["customer_creation"] = Value::Null;
        cs["metadata"] = metadata(params);
        cs["currency"] = currency.into();
        cs["amount_subtotal"] = amount.into();
        cs["amount_total"] = amount.into();
        cs["subscription"] = Value::Null;
        cs["invoice"] = Value::Null;
        cs["payment_intent"] = Value::Null;
        cs["setup_intent"] = Value::Null;
        cs["payment_link"] = Value::Null;
        cs["invoice_creation"] = Value::Null;
        cs["after_expiration"] = Value::Null;
        cs["adaptive_pricing"] = Value::Null;
        cs["allow_promotion_codes"] = Value::Null;
        cs["automatic_tax"] = json!({"enabled": false, "liability": null, "provider": null, "status": null});
        cs["collected_information"] = Value::Null;
        cs["consent"] = Value::Null;
        cs["consent_collection"] = Value::Null;
        cs["currency_conversion"] = Value::Null;
        cs["custom_text"] = json!({"after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null});
        cs["managed_payments"] = Value::Null;
        cs["payment_method_collection"] = "always".into();
        cs["payment_method_configuration_details"] = Value::Null;
        cs["permissions"] = Value::Null;
        cs["phone_number_collection"] = json!({"enabled": false});
        cs["saved_payment_method_options"] = Value::Null;
        cs["shipping_address_collection"] = Value::Null;
        cs["shipping_cost"] = Value::Null;
        cs["total_details"] = json!({"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0});
        cs["ui_mode"] = "hosted".into();
        cs["wallet_options"] = Value::Null;
        self.checkout_sessions.insert(id.clone(), cs.clone());
        self.session_setups.insert(id, SessionSetup { items, subscription_metadata, billing_cycle_anchor });
        Ok(cs)
    }

    pub fn checkout_session(&self, id: &str) -> Reply {
        self.checkout_sessions.get(id).cloned().ok_or_else(|| StripeError::not_found("checkout.session", id))
    }

    pub fn list_checkout_sessions(&self, params: &Value) -> Reply {
        let filters: Vec<(&str, String)> = ["customer", "subscription", "status"].into_iter().filter_map(|f| string(params, f).map(|v| (f, v))).collect();
        let items = self.checkout_sessions.values().filter(|s| filters.iter().all(|(f, v)| s[*f] == v.as_str())).cloned().collect();
        list("/v1/checkout/sessions", items, params)
    }

    /// The customer pays on the session's page (test only): creates the customer unless the
    /// session named one, subscribes it to the session's line items, completes the session.
    /// Returns `{session, customer, subscription}`.
    pub fn complete_checkout_session(&mut self, id: &str, email: Option<&str>, now: i64) -> Reply {
        let session = self.checkout_sessions.get(id).cloned().ok_or_else(|| StripeError::not_found("checkout.session", id))?;
        if session["status"] != "open" {
            return Err(StripeError::invalid("session", format!("This Checkout Session is no longer open (status `{}`).", session["status"].as_str().unwrap_or(""))));
        }
        if now >= session["expires_at"].as_i64().unwrap_or(i64::MAX) {
            return Err(StripeError::invalid("session", "This Checkout Session has expired."));
        }
        let setup = self.session_setups.get(id).cloned().expect("every session has its setup");
        let email = email.map(String::from).or_else(|| string(&session, "customer_email"));
        let customer = match session["customer"].as_str() {
            Some(c) => self.customers.get(c).cloned().ok_or_else(|| StripeError::not_found("customer", c))?,
            None => self.create_customer(&json!({"email": email}), now)?,
        };
        let customer_id = customer["id"].as_str().expect("customer id").to_string();
        let mut items = Vec::new();
        for (price_id, quantity) in &setup.items {
            items.push((self.prices.get(price_id).cloned().ok_or_else(|| StripeError::not_found("price", price_id))?, *quantity));
        }
        let subscription = self.new_subscription(&customer_id, items, setup.subscription_metadata.clone(), setup.billing_cycle_anchor, now);
        let s = self.checkout_sessions.get_mut(id).expect("checked above");
        let paid = s["amount_total"].as_i64().unwrap_or(0) > 0;
        s["status"] = "complete".into();
        s["payment_status"] = if paid { "paid" } else { "no_payment_required" }.into();
        s["customer"] = customer_id.into();
        s["subscription"] = subscription["id"].clone();
        s["customer_details"] = json!({
            "address": null, "business_name": null, "email": customer["email"], "individual_name": null,
            "name": customer["name"], "phone": null, "tax_exempt": "none", "tax_ids": [],
        });
        let session = s.clone();
        self.emit("checkout.session.completed", session.clone(), None, now);
        Ok(json!({"session": session, "customer": customer, "subscription": subscription}))
    }

    // ---- subscriptions ---------------------------------------------------------------------

    fn plan_of(price: &Value) -> Value {
        let mut plan = sample("subscription_item")["plan"].take();
        plan["active"] = price["active"].clone();
        plan["amount"] = price["unit_amount"].clone();
        plan["amount_decimal"] = price["unit_amount_decimal"].clone();
        plan["billing_scheme"] = price["billing_scheme"].clone();
        plan["created"] = price["created"].clone();
        plan["currency"] = price["currency"].clone();
        plan["id"] = price["id"].clone();
        plan["interval"] = price["recurring"]["interval"].clone();
        plan["interval_count"] = price["recurring"]["interval_count"].clone();
        plan["livemode"] = false.into();
        plan["metadata"] = price["metadata"].clone();
        plan["meter"] = price["recurring"]["meter"].clone();
        plan["nickname"] = price["nickname"].clone();
        plan["product"] = price["product"].clone();
        plan["tiers_mode"] = price["tiers_mode"].clone();
        plan["transform_usage"] = Value::Null;
        plan["trial_period_days"] = Value::Null;
        plan["usage_type"] = price["recurring"]["usage_type"].clone();
        plan
    }

    /// Sets an item's price (as Stripe shows it, without tiers), plan and quantity.
    fn set_item_price(item: &mut Value, price: &Value, quantity: Option<u64>) {
        item["price"] = Self::price_view(price, &json!({}));
        item["plan"] = Self::plan_of(price);
        match quantity {
            Some(q) => item["quantity"] = q.into(),
            None => {
                if let Some(o) = item.as_object_mut() {
                    o.remove("quantity");
                }
            }
        }
    }

    fn subscription_item(price: &Value, quantity: Option<u64>, subscription: &str, period: (i64, i64), now: i64) -> Value {
        let mut item = sample("subscription_item");
        item["id"] = new_id("si_").into();
        item["created"] = now.into();
        item["billing_thresholds"] = Value::Null;
        item["current_period_start"] = period.0.into();
        item["current_period_end"] = period.1.into();
        item["discounts"] = json!([]);
        item["metadata"] = json!({});
        item["subscription"] = subscription.into();
        item["tax_rates"] = json!([]);
        Self::set_item_price(&mut item, price, quantity);
        item
    }

    /// Creates an active subscription, one item per (price, quantity), and emits
    /// `customer.subscription.created`.
    fn new_subscription(&mut self, customer: &str, items: Vec<(Value, Option<u64>)>, metadata: Value, anchor: Option<i64>, now: i64) -> Value {
        let id = new_id("sub_");
        let period = current_period(anchor, now);
        let currency = items.first().map_or(Value::from("usd"), |(p, _)| p["currency"].clone());
        let data: Vec<Value> = items.iter().map(|(price, quantity)| Self::subscription_item(price, *quantity, &id, period, now)).collect();
        let mut s = sample("subscription");
        s["id"] = id.clone().into();
        s["object"] = "subscription".into();
        s["created"] = now.into();
        s["start_date"] = now.into();
        s["livemode"] = false.into();
        s["customer"] = customer.into();
        s["currency"] = currency;
        s["status"] = "active".into();
        s["metadata"] = metadata;
        s["items"] = json!({"object": "list", "data": data, "has_more": false, "url": format!("/v1/subscription_items?subscription={id}")});
        s["billing_cycle_anchor"] = anchor.unwrap_or(now).into();
        s["billing_cycle_anchor_config"] = Value::Null;
        s["billing_mode"] = json!({"flexible": null, "type": "classic"});
        s["billing_schedules"] = json!([]);
        s["billing_thresholds"] = Value::Null;
        s["automatic_tax"] = json!({"disabled_reason": null, "enabled": false, "liability": null});
        s["cancel_at"] = Value::Null;
        s["cancel_at_period_end"] = false.into();
        s["canceled_at"] = Value::Null;
        s["cancellation_details"] = json!({"comment": null, "feedback": null, "reason": null});
        s["ended_at"] = Value::Null;
        s["latest_invoice"] = Value::Null;
        s["managed_payments"] = Value::Null;
        s["next_pending_invoice_item_invoice"] = Value::Null;
        s["pause_collection"] = Value::Null;
        s["payment_settings"] = json!({"payment_method_options": null, "payment_method_types": null, "save_default_payment_method": "off"});
        s["pending_invoice_item_interval"] = Value::Null;
        s["pending_update"] = Value::Null;
        s["transfer_data"] = Value::Null;
        s["trial_end"] = Value::Null;
        s["trial_start"] = Value::Null;
        self.subscriptions.insert(id, s.clone());
        self.emit("customer.subscription.created", s.clone(), None, now);
        s
    }

    pub fn subscription(&self, id: &str) -> Reply {
        self.subscriptions.get(id).cloned().ok_or_else(|| StripeError::not_found("subscription", id))
    }

    /// `GET /v1/subscriptions`: by `customer`, `price` and `status` (without it, every
    /// subscription but the canceled ones, as Stripe lists them; `all` for every one).
    pub fn list_subscriptions(&self, params: &Value) -> Reply {
        let customer = string(params, "customer");
        let price = string(params, "price");
        let status = string(params, "status");
        let items = self
            .subscriptions
            .values()
            .filter(|s| customer.as_ref().is_none_or(|c| s["customer"] == c.as_str()))
            .filter(|s| match status.as_deref() {
                None => s["status"] != "canceled",
                Some("all") => true,
                Some(st) => s["status"] == st,
            })
            .filter(|s| {
                price.as_ref().is_none_or(|p| s["items"]["data"].as_array().into_iter().flatten().any(|i| i["price"]["id"] == p.as_str()))
            })
            .cloned()
            .collect();
        list("/v1/subscriptions", items, params)
    }

    /// `POST /v1/subscriptions/{id}`: `items[i]` adds a price, swaps an item's price or quantity,
    /// or (`deleted=true`) removes an item; `metadata` is merged (an empty value unsets a key).
    /// `proration_behavior` is accepted: the stand-in does not prorate. Emits
    /// `customer.subscription.updated` with the old values in `previous_attributes`.
    pub fn update_subscription(&mut self, id: &str, params: &Value, now: i64) -> Reply {
        let sub = self.subscriptions.get(id).ok_or_else(|| StripeError::not_found("subscription", id))?;
        if let Some(p) = string(params, "proration_behavior") {
            if !["always_invoice", "create_prorations", "none"].contains(&p.as_str()) {
                return Err(StripeError::invalid("proration_behavior", format!("Invalid proration_behavior: {p}")));
            }
        }
        let changes_items = params.get("items").is_some();
        if sub["status"] == "canceled" && changes_items {
            return Err(StripeError::invalid("items", "A canceled subscription can only update its cancellation_details and metadata."));
        }
        let old_items = sub["items"].clone();
        let mut data: Vec<Value> = old_items["data"].as_array().cloned().unwrap_or_default();
        let period = data
            .first()
            .map(|i| (i["current_period_start"].as_i64().unwrap_or(now), i["current_period_end"].as_i64().unwrap_or(now)))
            .unwrap_or_else(|| current_period(None, now));
        if let Some(items) = params.get("items") {
            let items = items.as_array().ok_or_else(|| StripeError::invalid("items", "Invalid array"))?;
            for (i, it) in items.iter().enumerate() {
                let param = format!("items[{i}]");
                let item_id = it.get("id").and_then(Value::as_str);
                let deleted = it.get("deleted").and_then(Value::as_str) == Some("true");
                let quantity = it.get("quantity").and_then(Value::as_str);
                let position = match item_id {
                    Some(item_id) => Some(data.iter().position(|d| d["id"] == item_id).ok_or_else(|| StripeError {
                        status: 400,
                        kind: "invalid_request_error",
                        code: Some("resource_missing"),
                        param: Some(format!("{param}[id]")),
                        message: format!("No such subscription item: '{item_id}'"),
                    })?),
                    None => None,
                };
                let price_id = it.get("price").and_then(Value::as_str);
                match (position, deleted, price_id) {
                    (Some(at), true, _) => {
                        data.remove(at);
                    }
                    (None, true, _) => return Err(StripeError::missing(&format!("{param}[id]"))),
                    (Some(at), false, Some(price_id)) => {
                        let (price, quantity) = self.subscribable(price_id, quantity, &param)?;
                        let quantity = match (quantity, it.get("quantity")) {
                            // A swap keeps a licensed item's quantity unless a new one is given.
                            (Some(_), None) => Some(data[at]["quantity"].as_u64().unwrap_or(1)),
                            (q, _) => q,
                        };
                        if data.iter().enumerate().any(|(j, d)| j != at && d["price"]["id"] == price_id) {
                            return Err(StripeError::invalid(&format!("{param}[price]"), format!("Cannot add multiple subscription items with the same price: {price_id}")));
                        }
                        Self::set_item_price(&mut data[at], &price, quantity);
                    }
                    (Some(at), false, None) => {
                        let Some(q) = quantity else { continue };
                        let price_id = data[at]["price"]["id"].as_str().unwrap_or_default().to_string();
                        let (price, quantity) = self.subscribable(&price_id, Some(q), &param)?;
                        Self::set_item_price(&mut data[at], &price, quantity);
                    }
                    (None, false, Some(price_id)) => {
                        let (price, quantity) = self.subscribable(price_id, quantity, &param)?;
                        if data.iter().any(|d| d["price"]["id"] == price_id) {
                            return Err(StripeError::invalid(&format!("{param}[price]"), format!("Cannot add multiple subscription items with the same price: {price_id}")));
                        }
                        data.push(Self::subscription_item(&price, quantity, id, period, now));
                    }
                    (None, false, None) => return Err(StripeError::missing(&format!("{param}[price]"))),
                }
            }
            if data.is_empty() {
                return Err(StripeError::invalid("items", "A subscription must keep at least one item; cancel it instead."));
            }
        }
        let sub = self.subscriptions.get_mut(id).expect("checked above");
        let mut previous = serde_json::Map::new();
        if changes_items {
            sub["items"]["data"] = Value::Array(data);
            previous.insert("items".into(), old_items);
        }
        if let Some(m) = params.get("metadata") {
            let m = match m {
                Value::Object(m) => m.clone(),
                Value::String(s) if s.is_empty() => sub["metadata"].as_object().cloned().unwrap_or_default().into_iter().map(|(k, _)| (k, "".into())).collect(),
                _ => return Err(StripeError::invalid("metadata", "Invalid object")),
            };
            let mut old = serde_json::Map::new();
            for (k, v) in m {
                let before = sub["metadata"].get(&k).cloned().unwrap_or(Value::Null);
                let unset = v == "";
                if (unset && before.is_null()) || (!unset && before == v) {
                    continue;
                }
                old.insert(k.clone(), before);
                let meta = sub["metadata"].as_object_mut().expect("metadata is an object");
                if unset {
                    meta.remove(&k);
                } else {
                    meta.insert(k, v);
                }
            }
            if !old.is_empty() {
                previous.insert("metadata".into(), Value::Object(old));
            }
        }
        let sub = sub.clone();
        if !previous.is_empty() {
            self.emit("customer.subscription.updated", sub.clone(), Some(Value::Object(previous)), now);
        }
        Ok(sub)
    }

    /// `DELETE /v1/subscriptions/{id}`: cancels at once; emits `customer.subscription.deleted`.
    pub fn cancel_subscription(&mut self, id: &str, params: &Value, now: i64) -> Reply {
        let sub = self.subscriptions.get_mut(id).ok_or_else(|| StripeError::not_found("subscription", id))?;
        if sub["status"] == "canceled" {
            return Err(StripeError::invalid("subscription", format!("This subscription has already been canceled: {id}")));
        }
        sub["status"] = "canceled".into();
        sub["canceled_at"] = now.into();
        sub["ended_at"] = now.into();
        sub["cancellation_details"] = json!({
            "comment": params.pointer("/cancellation_details/comment").cloned().unwrap_or(Value::Null),
            "feedback": params.pointer("/cancellation_details/feedback").cloned().unwrap_or(Value::Null),
            "reason": "cancellation_requested",
        });
        let sub = sub.clone();
        self.emit("customer.subscription.deleted", sub.clone(), None, now);
        Ok(sub)
    }

    // ---- invoices --------------------------------------------------------------------------

    /// The invoice of a subscription for `[period_start, period_end)` (test only; Stripe makes it
    /// at the end of each period): a line per licensed item (`unit_amount × quantity`) and, per
    /// metered item, the meter's aggregate for the customer over the period priced on the
    /// price's graduated tiers, one line per tier with units. Finalized: status `open`. Emits
    /// `invoice.created` (the draft) and `invoice.finalized`.
    pub fn create_subscription_invoice(&mut self, subscription: &str, period_start: i64, period_end: i64, now: i64) -> Reply {
        let sub = self.subscriptions.get(subscription).cloned().ok_or_else(|| StripeError { param: Some("subscription".into()), ..StripeError::not_found("subscription", subscription) })?;
        if period_end <= period_start {
            return Err(StripeError::invalid("period_end", "period_end must be after period_start."));
        }
        let customer_id = sub["customer"].as_str().unwrap_or_default().to_string();
        let customer = self.customers.get(&customer_id).cloned().ok_or_else(|| StripeError::not_found("customer", &customer_id))?;
        let id = new_id("in_");
        let mut lines = Vec::new();
        for item in sub["items"]["data"].as_array().into_iter().flatten() {
            let price_id = item["price"]["id"].as_str().unwrap_or_default();
            let price = self.prices.get(price_id).ok_or_else(|| StripeError::not_found("price", price_id))?;
            let metered = price["recurring"]["usage_type"] == "metered";
            let quantity = if metered {
                let meter_id = price["recurring"]["meter"].as_str().unwrap_or_default();
                let meter = self.meters.get(meter_id).ok_or_else(|| StripeError::not_found("billing.meter", meter_id))?;
                self.aggregate(meter, &customer_id, period_start, period_end).max(0) as u64
            } else {
                item["quantity"].as_u64().unwrap_or(1)
            };
            let (tiers, tiered) = match price["billing_scheme"].as_str() {
                Some("tiered") => {
                    if price["tiers_mode"] != "graduated" {
                        return Err(StripeError::invalid("subscription", format!("The stand-in prices only graduated tiers, not those of {price_id}.")));
                    }
                    (price["tiers"].as_array().cloned().unwrap_or_default(), true)
                }
                _ => (vec![json!({"up_to": null, "unit_amount_decimal": price["unit_amount_decimal"].as_str().unwrap_or("0")})], false),
            };
            let mut priced = graduated(&tiers, quantity)
                .ok_or_else(|| StripeError { status: 500, kind: "api_error", code: None, param: None, message: format!("The price {price_id} cannot be computed.") })?;
            if priced.is_empty() {
                let unit = tiers.first().and_then(|t| t["unit_amount_decimal"].as_str()).unwrap_or("0").to_string();
                priced.push(TierLine { quantity: 0, unit_amount_decimal: unit, amount: 0 });
            }
            let name = price["nickname"].as_str().map(String::from).unwrap_or_else(|| {
                let product = price["product"].as_str().unwrap_or_default();
                self.products.get(product).and_then(|p| p["name"].as_str()).unwrap_or(product).to_string()
            });
            for (n, t) in priced.into_iter().enumerate() {
                let at = format!("${} / {}", dollars(&t.unit_amount_decimal), price["recurring"]["interval"].as_str().unwrap_or("month"));
                let description = if tiered { format!("{name} (Tier {} at {at})", n + 1) } else { format!("{} × {name} (at {at})", t.quantity) };
                let mut line = sample("invoice")["lines"]["data"][0].take();
                line["id"] = new_id("il_").into();
                line["invoice"] = id.clone().into();
                line["amount"] = t.amount.into();
                line["subtotal"] = t.amount.into();
                line["currency"] = price["currency"].clone();
                line["description"] = description.into();
                line["discount_amounts"] = json!([]);
                line["discounts"] = json!([]);
                line["livemode"] = false.into();
                line["metadata"] = json!({});
                line["parent"] = json!({
                    "type": "subscription_item_details",
                    "invoice_item_details": null,
                    "subscription_item_details": {
                        "invoice_item": null, "proration": false, "proration_details": {"credited_items": null},
                        "subscription": subscription, "subscription_item": item["id"],
                    },
                });
                line["period"] = json!({"start": period_start, "end": period_end});
                line["pretax_credit_amounts"] = json!([]);
                line["pricing"] = json!({
                    "type": "price_details",
                    "price_details": {"price": price_id, "product": price["product"]},
                    "unit_amount_decimal": t.unit_amount_decimal,
                });
                line["quantity"] = t.quantity.into();
                line["quantity_decimal"] = t.quantity.to_string().into();
                line["subscription"] = subscription.into();
                line["taxes"] = json!([]);
                lines.push(line);
            }
        }
        let total: i64 = lines.iter().map(|l| l["amount"].as_i64().unwrap_or(0)).sum();
        let currency = sub["currency"].clone();
        let metadata = sub["metadata"].clone();
        let sequence = customer["next_invoice_sequence"].as_i64().unwrap_or(1);
        let number = format!("{}-{sequence:04}", customer["invoice_prefix"].as_str().unwrap_or("STANDIN"));
        if let Some(c) = self.customers.get_mut(&customer_id) {
            c["next_invoice_sequence"] = (sequence + 1).into();
        }
        let mut inv = sample("invoice");
        if let Some(o) = inv.as_object_mut() {
            // Since API version 2025-03-31 the subscription is under `parent`, not at the top.
            o.remove("subscription");
        }
        inv["id"] = id.clone().into();
        inv["object"] = "invoice".into();
        inv["created"] = now.into();
        inv["livemode"] = false.into();
        inv["customer"] = customer_id.clone().into();
        inv["customer_email"] = customer["email"].clone();
        inv["customer_name"] = customer["name"].clone();
        inv["customer_address"] = Value::Null;
        inv["customer_shipping"] = Value::Null;
        inv["shipping_details"] = Value::Null;
        inv["shipping_cost"] = Value::Null;
        inv["currency"] = currency;
        inv["billing_reason"] = "subscription_cycle".into();
        inv["collection_method"] = "charge_automatically".into();
        inv["auto_advance"] = true.into();
        inv["parent"] = json!({
            "type": "subscription_details",
            "quote_details": null,
            "subscription_details": {"subscription": subscription, "metadata": metadata},
        });
        inv["lines"] = json!({"object": "list", "data": lines, "has_more": false, "url": format!("/v1/invoices/{id}/lines")});
        inv["period_start"] = period_start.into();
        inv["period_end"] = period_end.into();
        for field in ["subtotal", "subtotal_excluding_tax", "total", "total_excluding_tax", "amount_due", "amount_remaining"] {
            inv[field] = total.into();
        }
        inv["amount_paid"] = 0.into();
        inv["amount_overpaid"] = 0.into();
        inv["amount_shipping"] = 0.into();
        inv["attempt_count"] = 0.into();
        inv["attempted"] = false.into();
        inv["automatic_tax"] = json!({"disabled_reason": null, "enabled": false, "liability": null, "provider": null, "status": null});
        inv["due_date"] = Value::Null;
        inv["ending_balance"] = Value::Null;
        inv["starting_balance"] = 0.into();
        inv["from_invoice"] = Value::Null;
        inv["last_finalization_error"] = Value::Null;
        inv["next_payment_attempt"] = Value::Null;
        inv["number"] = Value::Null;
        inv["effective_at"] = Value::Null;
        inv["status"] = "draft".into();
        inv["status_transitions"] = json!({"finalized_at": null, "marked_uncollectible_at": null, "paid_at": null, "voided_at": null});
        inv["total_taxes"] = json!([]);
        inv["total_pretax_credit_amounts"] = json!([]);
        inv["webhooks_delivered_at"] = Value::Null;
        self.emit("invoice.created", inv.clone(), None, now);
        inv["status"] = "open".into();
        inv["number"] = number.into();
        inv["effective_at"] = now.into();
        inv["ending_balance"] = 0.into();
        inv["status_transitions"]["finalized_at"] = now.into();
        inv["next_payment_attempt"] = if total > 0 { Value::from(now + 3600) } else { Value::Null };
        self.invoices.insert(id, inv.clone());
        self.emit("invoice.finalized", inv.clone(), None, now);
        Ok(inv)
    }

    /// The customer's payment of an open invoice succeeds (test only): emits `invoice.paid`,
    /// then `invoice.payment_succeeded`, as Stripe does.
    pub fn pay_invoice(&mut self, id: &str, now: i64) -> Reply {
        let inv = self.invoices.get_mut(id).ok_or_else(|| StripeError::not_found("invoice", id))?;
        if inv["status"] != "open" {
            return Err(StripeError::invalid("invoice", format!("Invoice is {} and cannot be paid.", inv["status"].as_str().unwrap_or(""))));
        }
        let due = inv["amount_due"].as_i64().unwrap_or(0);
        inv["status"] = "paid".into();
        inv["amount_paid"] = due.into();
        inv["amount_remaining"] = 0.into();
        inv["attempted"] = true.into();
        inv["attempt_count"] = 1.into();
        inv["next_payment_attempt"] = Value::Null;
        inv["status_transitions"]["paid_at"] = now.into();
        let inv = inv.clone();
        self.emit("invoice.paid", inv.clone(), None, now);
        self.emit("invoice.payment_succeeded", inv.clone(), None, now);
        Ok(inv)
    }

    pub fn invoice(&self, id: &str) -> Reply {
        self.invoices.get(id).cloned().ok_or_else(|| StripeError::not_found("invoice", id))
    }

    /// `GET /v1/invoices`: by `customer`, `subscription` and `status`.
    pub fn list_invoices(&self, params: &Value) -> Reply {
        let customer = string(params, "customer");
        let subscription = string(params, "subscription");
        let status = string(params, "status");
        let items = self
            .invoices
            .values()
            .filter(|i| customer.as_ref().is_none_or(|c| i["customer"] == c.as_str()))
            .filter(|i| subscription.as_ref().is_none_or(|s| i["parent"]["subscription_details"]["subscription"] == s.as_str()))
            .filter(|i| status.as_ref().is_none_or(|s| i["status"] == s.as_str()))
            .cloned()
            .collect();
        list("/v1/invoices", items, params)
    }
}

/// `t` plus `months` calendar months (the day clamped to the month's end, as Stripe bills).
fn add_months(t: i64, months: u32) -> i64 {
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

/// A unit amount in cents (`"0.2"`) as dollars (`"0.002"`), for line descriptions.
fn dollars(cents: &str) -> String {
    let Some((mantissa, scale)) = decimal(cents) else { return cents.to_string() };
    let digits = mantissa.to_string();
    let scale = scale as usize + 2;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, frac) = padded.split_at(padded.len() - scale);
    let frac = frac.trim_end_matches('0');
    let frac = if frac.len() < 2 { format!("{frac:0<2}") } else { frac.to_string() };
    format!("{whole}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000; // 2026-09-21

    fn meter(store: &mut Store) -> String {
        let m = store
            .create_meter(&json!({"display_name": "Traces", "event_name": "tally_traces", "default_aggregation": {"formula": "sum"}}), NOW)
            .unwrap();
        m["id"].as_str().unwrap().to_string()
    }

    fn event(store: &mut Store, id: &str, value: &str, ts: i64) -> Reply {
        store.create_meter_event(&json!({"event_name": "tally_traces", "identifier": id, "timestamp": ts.to_string(), "payload": {"stripe_customer_id": "cus_1", "value": value}}), NOW)
    }

    #[test]
    fn meter_events_are_validated_deduplicated_cancelled_and_summed() {
        let mut s = Store::default();
        let id = meter(&mut s);
        assert!(event(&mut s, "a", "10", NOW - 100).is_ok());
        assert!(event(&mut s, "b", "5", NOW - 50).is_ok());
        let dup = event(&mut s, "a", "10", NOW - 100).unwrap_err();
        assert_eq!((dup.status, dup.code), (400, Some("resource_already_exists")));
        assert_eq!(event(&mut s, "c", "1.5", NOW).unwrap_err().param.as_deref(), Some("payload[value]"));
        assert_eq!(event(&mut s, "d", "-1", NOW).unwrap_err().param.as_deref(), Some("payload[value]"));
        assert_eq!(event(&mut s, "e", "1", NOW - MAX_EVENT_AGE_SECS - 1).unwrap_err().param.as_deref(), Some("timestamp"));
        assert_eq!(event(&mut s, "f", "1", NOW + 301).unwrap_err().param.as_deref(), Some("timestamp"));
        let start = (NOW - 3600) / 60 * 60;
        let end = (NOW + 120) / 60 * 60;
        let sum = |s: &Store| s.meter_event_summaries(&id, &json!({"customer": "cus_1", "start_time": start.to_string(), "end_time": end.to_string()})).unwrap()["data"][0]["aggregated_value"].clone();
        assert_eq!(sum(&s), 15);
        s.create_meter_event_adjustment(&json!({"event_name": "tally_traces", "type": "cancel", "cancel": {"identifier": "b"}}), NOW).unwrap();
        assert_eq!(sum(&s), 10);
        // After 24 hours an identifier may be used again, and an event can no longer be cancelled.
        assert!(s.create_meter_event_adjustment(&json!({"event_name": "tally_traces", "cancel": {"identifier": "a"}}), NOW + IDENTIFIER_WINDOW_SECS).is_err());
        assert!(s.create_meter_event(&json!({"event_name": "tally_traces", "identifier": "a", "payload": {"stripe_customer_id": "cus_1", "value": "1"}}), NOW + IDENTIFIER_WINDOW_SECS).is_ok());
    }

    #[test]
    fn summaries_group_by_window_and_check_alignment() {
        let mut s = Store::default();
        let id = meter(&mut s);
        let hour = NOW / 3600 * 3600;
        event(&mut s, "x", "3", hour - 3600 + 10).unwrap();
        event(&mut s, "y", "4", hour + 10).unwrap();
        let page = s.meter_event_summaries(&id, &json!({"customer": "cus_1", "start_time": (hour - 3600).to_string(), "end_time": (hour + 3600).to_string(), "value_grouping_window": "hour"})).unwrap();
        let values: Vec<i64> = page["data"].as_array().unwrap().iter().map(|d| d["aggregated_value"].as_i64().unwrap()).collect();
        assert_eq!(values, [3, 4]);
        assert!(s.meter_event_summaries(&id, &json!({"customer": "cus_1", "start_time": (hour + 1).to_string(), "end_time": (hour + 3600).to_string()})).is_err());
    }

    #[test]
    fn tiered_prices_need_an_open_last_tier_and_hide_tiers_unless_expanded() {
        let mut s = Store::default();
        let meter_id = meter(&mut s);
        let product = s.create_product(&json!({"name": "Starter"}), NOW).unwrap()["id"].as_str().unwrap().to_string();
        let params = json!({"currency": "usd", "product": product, "billing_scheme": "tiered", "tiers_mode": "graduated",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id}, "lookup_key": "starter_traces",
            "tiers": [{"up_to": "100000", "unit_amount_decimal": "0"}, {"up_to": "inf", "unit_amount_decimal": "0.2"}]});
        let price = s.create_price(&params, NOW).unwrap();
        assert!(price.get("tiers").is_none());
        let id = price["id"].as_str().unwrap();
        let full = s.price(id, &json!({"expand": ["tiers"]})).unwrap();
        assert_eq!(full["tiers"][1]["unit_amount_decimal"], "0.2");
        assert!(full["tiers"][1]["up_to"].is_null());
        // The lookup key is taken.
        assert!(s.create_price(&params, NOW).is_err());
        let found = s.list_prices(&json!({"lookup_keys": ["starter_traces"]})).unwrap();
        assert_eq!(found["data"].as_array().unwrap().len(), 1);
    }

    /// A meter, a product, a licensed monthly price (2,500 cents), a graduated metered price on
    /// the meter (100 free, then 0.5 cent, then 0.25 cent above 1,000) and a one-time price.
    fn plan(s: &mut Store) -> (String, String, String) {
        meter(s);
        let meter_id = s.list_meters(&json!({})).unwrap()["data"][0]["id"].as_str().unwrap().to_string();
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
        let once = id(s.create_price(&json!({"currency": "usd", "product": "tally_starter", "unit_amount": "100"}), NOW).unwrap());
        (base, traces, once)
    }

    const BASE: &str = "http://127.0.0.1:12111";

    fn session(s: &mut Store, base_price: &str, traces: &str) -> Value {
        s.create_checkout_session(
            &json!({"mode": "subscription", "client_reference_id": "org_acme", "success_url": "https://tally.test/ok?s={CHECKOUT_SESSION_ID}",
                "line_items": [{"price": base_price}, {"price": traces}], "metadata": {"org_id": "acme"},
                "subscription_data": {"metadata": {"org_id": "acme", "tier": "starter"}}}),
            NOW,
            BASE,
        )
        .unwrap()
    }

    fn types(s: &Store) -> Vec<String> {
        s.events.iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn checkout_sessions_check_their_prices_and_complete_into_a_subscription() {
        let mut s = Store::default();
        let (base, traces, once) = plan(&mut s);
        let create = |s: &mut Store, items: Value| s.create_checkout_session(&json!({"mode": "subscription", "line_items": items}), NOW, BASE);
        let e = create(&mut s, json!([{"price": "price_missing"}])).unwrap_err();
        assert_eq!((e.status, e.code, e.param.as_deref()), (400, Some("resource_missing"), Some("line_items[0][price]")));
        assert_eq!(e.message, "No such price: 'price_missing'");
        let e = create(&mut s, json!([{"price": base}, {"price": traces, "quantity": "1"}])).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("line_items[1][quantity]"));
        assert_eq!(create(&mut s, json!([{"price": once}])).unwrap_err().param.as_deref(), Some("line_items[0][price]"));
        assert_eq!(create(&mut s, json!([{"price": base}, {"price": base}])).unwrap_err().param.as_deref(), Some("line_items[1][price]"));
        assert_eq!(s.create_checkout_session(&json!({"line_items": [{"price": base}]}), NOW, BASE).unwrap_err().code, Some("parameter_missing"));
        assert_eq!(s.create_checkout_session(&json!({"mode": "payment", "line_items": [{"price": base}]}), NOW, BASE).unwrap_err().param.as_deref(), Some("mode"));
        let anchor_in_past = json!({"mode": "subscription", "line_items": [{"price": base}], "subscription_data": {"billing_cycle_anchor": NOW.to_string()}});
        assert!(s.create_checkout_session(&anchor_in_past, NOW, BASE).is_err());

        let cs = session(&mut s, &base, &traces);
        let id = cs["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("cs_test_"));
        assert_eq!(cs["url"], format!("{BASE}/_standin/checkout/{id}"));
        assert_eq!((cs["status"].as_str(), cs["payment_status"].as_str(), cs["mode"].as_str()), (Some("open"), Some("unpaid"), Some("subscription")));
        assert_eq!((cs["client_reference_id"].as_str(), cs["metadata"]["org_id"].as_str()), (Some("org_acme"), Some("acme")));
        assert!(cs["customer"].is_null() && cs["subscription"].is_null());
        assert_eq!((cs["amount_total"].as_i64(), cs["currency"].as_str()), (Some(2500), Some("usd")));
        assert_eq!(s.checkout_session(&id).unwrap(), cs);
        assert!(types(&s).is_empty(), "creating a session announces nothing");

        let done = s.complete_checkout_session(&id, Some("ops@acme.test"), NOW + 60).unwrap();
        let (cs, customer, sub) = (&done["session"], &done["customer"], &done["subscription"]);
        assert_eq!(customer["email"], "ops@acme.test");
        assert_eq!((cs["status"].as_str(), cs["payment_status"].as_str()), (Some("complete"), Some("paid")));
        assert_eq!((&cs["customer"], &cs["subscription"]), (&customer["id"], &sub["id"]));
        assert_eq!(cs["customer_details"]["email"], "ops@acme.test");
        assert_eq!((sub["status"].as_str(), &sub["customer"]), (Some("active"), &customer["id"]));
        assert_eq!(sub["metadata"], json!({"org_id": "acme", "tier": "starter"}));
        let items = sub["items"]["data"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!((items[0]["price"]["id"].as_str(), items[0]["quantity"].as_u64()), (Some(base.as_str()), Some(1)));
        assert_eq!(items[1]["price"]["id"], traces.as_str());
        assert!(items[1].get("quantity").is_none(), "a metered item has no quantity");
        assert!(items[1]["price"].get("tiers").is_none());
        assert_eq!(items[1]["plan"]["usage_type"], "metered");
        assert_eq!(items[0]["current_period_start"], NOW + 60);
        assert_eq!(items[0]["current_period_end"], add_months(NOW + 60, 1));
        assert_eq!(s.subscription(sub["id"].as_str().unwrap()).unwrap(), *sub);
        assert_eq!(types(&s), ["customer.created", "customer.subscription.created", "checkout.session.completed"]);
        assert_eq!(s.events[2]["data"]["object"], *cs);
        assert_eq!((s.events[2]["api_version"].as_str(), s.events[2]["livemode"].as_bool()), (Some(API_VERSION), Some(false)));
        assert!(s.events[2]["request"]["id"].is_null());
        assert_eq!(s.take_new_events().len(), 3);
        assert!(s.take_new_events().is_empty());
        // A session completes once.
        assert!(s.complete_checkout_session(&id, None, NOW + 61).is_err());
        // Events list newest first, filtered by type.
        let all = s.list_events(&json!({})).unwrap();
        let listed: Vec<&str> = all["data"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(listed, ["checkout.session.completed", "customer.subscription.created", "customer.created"]);
        let subs = s.list_events(&json!({"type": "customer.subscription.*"})).unwrap();
        assert_eq!(subs["data"].as_array().unwrap().len(), 1);
        let eid = s.events[0]["id"].as_str().unwrap().to_string();
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
        assert_eq!((item["quantity"].as_u64(), item["current_period_start"].as_i64(), item["current_period_end"].as_i64()), (Some(3), Some(NOW), Some(anchor)));
        assert_eq!(done["subscription"]["billing_cycle_anchor"], anchor);
        assert_eq!(types(&s)[3..], ["customer.subscription.created", "checkout.session.completed"]);
        assert_eq!(s.list_checkout_sessions(&json!({"customer": customer["id"], "status": "complete"})).unwrap()["data"].as_array().unwrap().len(), 2);
    }

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
        let (base_item, traces_item) = (items[0]["id"].as_str().unwrap(), items[1]["id"].as_str().unwrap());
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
        assert_eq!((data[0]["id"].as_str(), data[0]["price"]["id"].as_str(), data[0]["quantity"].as_u64()), (Some(base_item), Some(growth.as_str()), Some(1)));
        assert_eq!(data[0]["current_period_start"], items[0]["current_period_start"]);
        assert_eq!(updated["metadata"], json!({"tier": "growth"}));
        let event = s.events.last().unwrap();
        assert_eq!(event["type"], "customer.subscription.updated");
        assert_eq!(event["data"]["object"], updated);
        assert_eq!(event["data"]["previous_attributes"]["items"]["data"].as_array().unwrap().clone(), items);
        assert_eq!(event["data"]["previous_attributes"]["metadata"], json!({"tier": "starter", "org_id": "acme"}));
        assert_eq!(event["request"], json!({"id": "req_1", "idempotency_key": "k1"}));

        // Add the metered price back; a price twice, an unknown item and one-time prices are refused.
        let added = s.update_subscription(&sub_id, &json!({"items": [{"price": traces}]}), NOW + 6).unwrap();
        assert_eq!(added["items"]["data"].as_array().unwrap().len(), 2);
        assert!(added["items"]["data"][1].get("quantity").is_none());
        assert_eq!(s.events.last().unwrap()["data"]["previous_attributes"].as_object().unwrap().keys().collect::<Vec<_>>(), ["items"]);
        assert!(s.update_subscription(&sub_id, &json!({"items": [{"price": traces}]}), NOW).is_err());
        assert_eq!(s.update_subscription(&sub_id, &json!({"items": [{"id": "si_nope", "deleted": "true"}]}), NOW).unwrap_err().param.as_deref(), Some("items[0][id]"));
        assert_eq!(s.update_subscription(&sub_id, &json!({"items": [{"price": once}]}), NOW).unwrap_err().param.as_deref(), Some("items[0][price]"));
        assert_eq!(s.update_subscription(&sub_id, &json!({"items": [{"price": "price_x"}]}), NOW).unwrap_err().code, Some("resource_missing"));
        assert!(s.update_subscription(&sub_id, &json!({"items": [{"id": base_item, "deleted": "true"}, {"id": added["items"]["data"][1]["id"], "deleted": "true"}]}), NOW).is_err());
        assert_eq!(s.update_subscription("sub_nope", &json!({}), NOW).unwrap_err().status, 404);
        let events = s.events.len();
        s.update_subscription(&sub_id, &json!({"metadata": {"tier": "growth"}}), NOW).unwrap();
        assert_eq!(s.events.len(), events, "no change, no event");

        let customer = done["customer"]["id"].as_str().unwrap();
        assert_eq!(s.list_subscriptions(&json!({"customer": customer})).unwrap()["data"].as_array().unwrap().len(), 1);
        assert_eq!(s.list_subscriptions(&json!({"customer": "cus_other"})).unwrap()["data"].as_array().unwrap().len(), 0);

        let canceled = s.cancel_subscription(&sub_id, &json!({"cancellation_details": {"comment": "moving"}}), NOW + 100).unwrap();
        assert_eq!((canceled["status"].as_str(), canceled["canceled_at"].as_i64(), canceled["ended_at"].as_i64()), (Some("canceled"), Some(NOW + 100), Some(NOW + 100)));
        assert_eq!(canceled["cancellation_details"]["comment"], "moving");
        assert_eq!(s.events.last().unwrap()["type"], "customer.subscription.deleted");
        assert!(s.cancel_subscription(&sub_id, &json!({}), NOW + 101).is_err());
        assert!(s.update_subscription(&sub_id, &json!({"items": [{"price": growth}]}), NOW + 101).is_err());
        assert_eq!(s.list_subscriptions(&json!({"customer": customer})).unwrap()["data"].as_array().unwrap().len(), 0);
        assert_eq!(s.list_subscriptions(&json!({"customer": customer, "status": "canceled"})).unwrap()["data"][0]["id"], sub_id.as_str());
    }

    #[test]
    fn invoices_bill_licensed_items_and_metered_usage_per_tier() {
        let mut s = Store::default();
        let (base, traces, _) = plan(&mut s);
        let cs = session(&mut s, &base, &traces);
        let done = s.complete_checkout_session(cs["id"].as_str().unwrap(), Some("a@acme.test"), NOW).unwrap();
        let customer = done["customer"]["id"].as_str().unwrap().to_string();
        let sub_id = done["subscription"]["id"].as_str().unwrap().to_string();
        let (start, end) = (NOW - 3600, NOW + 60);
        let usage = |s: &mut Store, id: &str, value: u64, ts: i64| {
            s.create_meter_event(&json!({"event_name": "tally_traces", "identifier": id, "timestamp": ts.to_string(), "payload": {"stripe_customer_id": customer, "value": value.to_string()}}), NOW)
                .unwrap();
        };
        usage(&mut s, "u1", 1_000, NOW - 60);
        usage(&mut s, "u2", 1_003, NOW - 30);
        usage(&mut s, "before", 50_000, start - 1); // outside the period
        s.take_new_events();

        let inv = s.create_subscription_invoice(&sub_id, start, end, NOW + 120).unwrap();
        // 2,003 traces: 100 free, 900 × 0.5 = 450, 1,003 × 0.25 = 250.75 → 251; plus 2,500 base.
        let lines: Vec<(u64, &str, i64)> = inv["lines"]["data"].as_array().unwrap().iter().map(|l| (l["quantity"].as_u64().unwrap(), l["pricing"]["unit_amount_decimal"].as_str().unwrap(), l["amount"].as_i64().unwrap())).collect();
        assert_eq!(lines, [(1, "2500", 2500), (100, "0", 0), (900, "0.5", 450), (1003, "0.25", 251)]);
        for field in ["subtotal", "total", "amount_due", "amount_remaining"] {
            assert_eq!(inv[field], 3201, "{field}");
        }
        assert_eq!((inv["status"].as_str(), inv["customer"].as_str(), inv["amount_paid"].as_i64()), (Some("open"), Some(customer.as_str()), Some(0)));
        assert_eq!((inv["period_start"].as_i64(), inv["period_end"].as_i64()), (Some(start), Some(end)));
        assert_eq!(inv["parent"]["type"], "subscription_details");
        assert_eq!(inv["parent"]["subscription_details"], json!({"subscription": sub_id, "metadata": {"org_id": "acme", "tier": "starter"}}));
        assert!(inv.get("subscription").is_none());
        assert!(inv["number"].as_str().unwrap().ends_with("-0001"));
        let line = &inv["lines"]["data"][2];
        assert_eq!(line["pricing"]["price_details"]["price"], traces.as_str());
        assert_eq!(line["parent"]["subscription_item_details"]["subscription_item"], done["subscription"]["items"]["data"][1]["id"]);
        assert_eq!(line["description"], "Starter traces (Tier 2 at $0.005 / month)");
        assert_eq!(inv["lines"]["data"][0]["description"], "1 × Starter fee (at $25.00 / month)");
        let created = s.take_new_events();
        let kinds: Vec<&str> = created.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["invoice.created", "invoice.finalized"]);
        assert_eq!(created[0]["data"]["object"]["status"], "draft");
        assert_eq!(created[1]["data"]["object"], inv);

        // No usage: the metered item shows as one empty line.
        let quiet = s.create_subscription_invoice(&sub_id, end, end + 3600, NOW + 120).unwrap();
        assert_eq!(quiet["total"], 2500);
        assert_eq!(quiet["lines"]["data"].as_array().unwrap().len(), 2);
        assert!(quiet["number"].as_str().unwrap().ends_with("-0002"));
        assert!(s.create_subscription_invoice(&sub_id, end, end, NOW).is_err());
        assert_eq!(s.create_subscription_invoice("sub_nope", start, end, NOW).unwrap_err().status, 404);

        let id = inv["id"].as_str().unwrap();
        let paid = s.pay_invoice(id, NOW + 200).unwrap();
        assert_eq!((paid["status"].as_str(), paid["amount_paid"].as_i64(), paid["amount_remaining"].as_i64()), (Some("paid"), Some(3201), Some(0)));
        assert_eq!(paid["status_transitions"]["paid_at"], NOW + 200);
        let kinds: Vec<String> = s.take_new_events().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect();
        assert_eq!(kinds, ["invoice.created", "invoice.finalized", "invoice.paid", "invoice.payment_succeeded"]);
        assert!(s.pay_invoice(id, NOW + 201).is_err());
        assert_eq!(s.invoice(id).unwrap(), paid);
        assert_eq!(s.list_invoices(&json!({"subscription": sub_id})).unwrap()["data"].as_array().unwrap().len(), 2);
        assert_eq!(s.list_invoices(&json!({"customer": customer, "status": "paid"})).unwrap()["data"][0]["id"], id);
        assert_eq!(s.list_invoices(&json!({"customer": "cus_other"})).unwrap()["data"].as_array().unwrap().len(), 0);
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
        assert_eq!(dollars("2500"), "25.00");
        assert_eq!(dollars("0.5"), "0.005");
        assert_eq!(dollars("0.00000005"), "0.0000000005");
        assert_eq!(dollars("0"), "0.00");
        assert_eq!(dollars("12345"), "123.45");
    }
}
