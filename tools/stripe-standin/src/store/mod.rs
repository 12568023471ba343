//! The stand-in's state and the behaviour of each resource, without HTTP: what Stripe stores,
//! what it refuses and how it answers. Every object starts from Stripe's sample of its kind.
//!
//! Layout: this file holds the [`Store`] (everything remembered), errors, ids and list
//! pagination; [`params`] reads form parameters; one file per Stripe resource holds its typed
//! objects and its `impl Store` block: [`customers`], [`products`] (products and prices),
//! [`meters`] (meters, meter events, adjustments, event summaries), [`events`],
//! [`checkout`] (Checkout Sessions), [`subscriptions`] (and billing periods), [`invoices`]
//! (and graduated pricing).
//!
//! Objects are typed structs with Stripe's field names for every field the stand-in sets or
//! reads. The fields of Stripe's sample the stand-in passes through unchanged (or fixes once at
//! creation, e.g. no discounts, no tax) stay JSON in each object's `sample_fields`. Answers are
//! JSON values, so their keys come out sorted as before.

pub mod checkout;
pub mod customers;
pub mod events;
pub mod invoices;
pub mod meters;
mod params;
pub mod products;
pub mod subscriptions;
#[cfg(test)]
mod test_fixtures;

use std::collections::{BTreeMap, HashMap};

use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use checkout::{CheckoutCompletion, CheckoutSession};
pub use customers::Customer;
pub use events::Event;
pub use invoices::{graduated, Invoice, InvoiceLine, TierLine};
pub use meters::{Meter, ReceivedMeterEvent};
pub use products::{Price, PriceTier, Product, Recurring};
pub use subscriptions::{current_period, Subscription, SubscriptionItem};

use checkout::SessionSetup;
use params::{integer_param, optional_param};

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

    /// A missing object named by a request parameter (`resource_missing` on that parameter).
    pub fn missing_resource(param: String, message: String) -> Self {
        StripeError {
            status: 400,
            kind: "invalid_request_error",
            code: Some("resource_missing"),
            param: Some(param),
            message,
        }
    }

    /// The id a create request asked for is taken.
    pub fn already_exists(param: &str, message: String) -> Self {
        StripeError {
            status: 400,
            kind: "invalid_request_error",
            code: Some("resource_already_exists"),
            param: Some(param.into()),
            message,
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

/// A store answer: the JSON object Stripe answers with, or its error.
pub type Reply = Result<Value, StripeError>;

/// A fresh id in Stripe's style: a prefix and 24 random letters and digits.
pub fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let tail: String =
        (0..24).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("{prefix}{tail}")
}

/// An object as JSON (the answer's body, an event's `data.object`).
pub(crate) fn to_json<T: Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("a stand-in object serializes")
}

/// A typed object built from Stripe's `sample` of its kind, with `fixed` top-level fields set
/// first (the values the stand-in always gives, e.g. no discounts); the caller then sets the
/// typed fields it computes. What the type does not name stays in its `sample_fields`.
pub(crate) fn from_sample<T: DeserializeOwned>(mut sample: Value, fixed: Value) -> T {
    if let (Some(object), Value::Object(fixed)) = (sample.as_object_mut(), fixed) {
        object.extend(fixed);
    }
    serde_json::from_value(sample).expect("Stripe's sample fits the stand-in's type")
}

/// A list object, as Stripe answers lists and embeds them (`items`, `lines`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    /// Always `"list"`.
    pub object: String,
    pub url: String,
}

impl<T> List<T> {
    pub fn new(url: String, data: Vec<T>, has_more: bool) -> List<T> {
        List { data, has_more, object: "list".into(), url }
    }
}

/// An object a list endpoint answers: lists go newest first, by `created`, then by `id`.
pub trait Listed: Serialize {
    fn id(&self) -> &str;
    fn created(&self) -> i64;
}

/// A list answer, newest first, with `limit` (default 10, at most 100) and `starting_after`.
fn list_page<T: Listed>(url: &str, mut items: Vec<T>, params: &Value) -> Reply {
    items.sort_by(|a, b| b.created().cmp(&a.created()).then_with(|| b.id().cmp(a.id())));
    if let Some(after) = optional_param(params, "starting_after") {
        let at = items.iter().position(|o| o.id() == after).ok_or_else(|| {
            StripeError::invalid("starting_after", format!("No such object: '{after}'"))
        })?;
        items.drain(..=at);
    }
    let limit = integer_param(params, "limit")?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(StripeError::invalid("limit", "This value must be between 1 and 100."));
    }
    let has_more = items.len() > limit as usize;
    items.truncate(limit as usize);
    Ok(to_json(&List::new(url.to_string(), items, has_more)))
}

/// Whether `expand[]` asks for `field` (or `data.field` in a list).
fn is_expanded(params: &Value, field: &str) -> bool {
    params
        .get("expand")
        .and_then(Value::as_array)
        .is_some_and(|expand| expand.iter().any(|x| x == field || x == &format!("data.{field}")))
}

/// Everything the stand-in remembers. It serializes whole (the state file), but for what lives
/// only within one request: the events not yet handed to the webhook sender (always none
/// between requests) and the request being served.
#[derive(Default, Clone, Serialize, Deserialize)]
pub struct Store {
    customers: BTreeMap<String, Customer>,
    products: BTreeMap<String, Product>,
    prices: BTreeMap<String, Price>,
    meters: BTreeMap<String, Meter>,
    meter_events: Vec<ReceivedMeterEvent>,
    /// identifier → index in `meter_events`
    identifiers: HashMap<String, usize>,
    checkout_sessions: BTreeMap<String, CheckoutSession>,
    /// What each Checkout Session subscribes its customer to, by session id.
    session_setups: HashMap<String, SessionSetup>,
    subscriptions: BTreeMap<String, Subscription>,
    invoices: BTreeMap<String, Invoice>,
    /// Every event, oldest first.
    events: Vec<Event>,
    /// Events created since the last [`Store::take_new_events`], oldest first.
    #[serde(skip)]
    new_events: Vec<Event>,
    /// The API request events are attributed to: (request id, idempotency key).
    #[serde(skip)]
    request: Option<(String, Option<String>)>,
}

impl Store {
    /// What the store holds, in a few words (for the log when the state file is loaded).
    pub fn summary(&self) -> String {
        format!(
            "{} customers, {} products, {} prices, {} meters, {} meter events, \
             {} checkout sessions, {} subscriptions, {} invoices, {} events",
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
}
