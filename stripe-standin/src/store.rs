//! The stand-in's state and the behaviour of each resource, without HTTP: what Stripe stores,
//! what it refuses and how it answers. Every object starts from Stripe's sample of its kind.

use std::collections::{BTreeMap, HashMap};

use rand::Rng;
use serde_json::{json, Value};

use crate::spec::sample;

/// How long a meter event's identifier stays unique, and how long an event can be cancelled.
pub const IDENTIFIER_WINDOW_SECS: i64 = 24 * 3600;
/// How far in the past a meter event's timestamp may be.
pub const MAX_EVENT_AGE_SECS: i64 = 35 * 24 * 3600;
/// How far in the future a meter event's timestamp may be.
pub const MAX_EVENT_AHEAD_SECS: i64 = 5 * 60;

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
#[derive(Debug, Clone)]
pub struct MeterEvent {
    pub event_name: String,
    pub customer: String,
    pub value: i64,
    pub timestamp: i64,
    pub identifier: String,
    pub received: i64,
    pub cancelled: bool,
}

/// Everything the stand-in remembers.
#[derive(Default)]
pub struct Store {
    customers: BTreeMap<String, Value>,
    products: BTreeMap<String, Value>,
    prices: BTreeMap<String, Value>,
    meters: BTreeMap<String, Value>,
    meter_events: Vec<MeterEvent>,
    /// identifier → index in `meter_events`
    identifiers: HashMap<String, usize>,
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
        self.customers.insert(id, c.clone());
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
}
