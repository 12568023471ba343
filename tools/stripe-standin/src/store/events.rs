//! Events: every change Stripe announces is recorded as an Event (`GET /v1/events`), and handed
//! to the webhook sender ([`Store::take_new_events`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::params::optional_param;
use super::{list_page, new_id, to_json, Listed, Reply, Store, StripeError, API_VERSION};

/// Stripe's Event object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub api_version: Option<String>,
    pub created: i64,
    pub data: EventData,
    pub id: String,
    pub livemode: bool,
    /// Always `"event"`.
    pub object: String,
    /// How many endpoints are still to receive the event.
    pub pending_webhooks: i64,
    pub request: EventRequest,
    /// `customer.created`, `invoice.paid`, ...
    #[serde(rename = "type")]
    pub kind: String,
}

impl Listed for Event {
    fn id(&self) -> &str {
        &self.id
    }
    fn created(&self) -> i64 {
        self.created
    }
}

/// The object an event is about, as it was then; for `*.updated` events, the changed fields'
/// old values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    /// A snapshot of any kind of object (a customer, a subscription, ...).
    pub object: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_attributes: Option<Value>,
}

/// The API request that caused an event (both `None` when none did, e.g. a customer paying).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRequest {
    pub id: Option<String>,
    pub idempotency_key: Option<String>,
}

impl Event {
    /// The body a webhook delivery sends: pretty-printed, as Stripe sends it.
    pub fn webhook_body(&self) -> String {
        serde_json::to_string_pretty(&to_json(self)).expect("an event serializes")
    }
}

impl Store {
    /// Attributes the events created from now on to an API request (`None`: to no request, as
    /// for a customer completing a Checkout Session).
    pub fn set_request(&mut self, request: Option<(String, Option<String>)>) {
        self.request = request;
    }

    /// Records an event: `data.object` a snapshot of `object`, `data.previous_attributes` the
    /// changed fields' old values for `*.updated` events. Ids sort in creation order, so lists of
    /// events created in the same second stay newest first.
    pub(super) fn record_event(
        &mut self,
        kind: &str,
        object: Value,
        previous_attributes: Option<Value>,
        now: i64,
    ) {
        let (request_id, idempotency_key) = match &self.request {
            Some((id, key)) => (Some(id.clone()), key.clone()),
            None => (None, None),
        };
        let event = Event {
            api_version: Some(API_VERSION.into()),
            created: now,
            data: EventData { object, previous_attributes },
            id: format!("evt_{:010}{}", self.events.len() + 1, &new_id("")[..14]),
            livemode: false,
            object: "event".into(),
            pending_webhooks: 0,
            request: EventRequest { id: request_id, idempotency_key },
            kind: kind.into(),
        };
        self.events.push(event.clone());
        self.new_events.push(event);
    }

    /// The events created since the last call, oldest first (for webhook delivery).
    pub fn take_new_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.new_events)
    }

    /// Sets an event's `pending_webhooks`, the count of endpoints still to receive it.
    pub fn set_pending_webhooks(&mut self, id: &str, pending: i64) {
        if let Some(event) = self.events.iter_mut().find(|e| e.id == id) {
            event.pending_webhooks = pending.max(0);
        }
    }

    /// One endpoint has received an event.
    pub fn webhook_delivered(&mut self, id: &str) {
        if let Some(event) = self.events.iter_mut().find(|e| e.id == id) {
            event.pending_webhooks = (event.pending_webhooks - 1).max(0);
        }
    }

    pub fn find_event(&self, id: &str) -> Result<&Event, StripeError> {
        self.events.iter().find(|e| e.id == id).ok_or_else(|| StripeError::not_found("event", id))
    }

    pub fn event(&self, id: &str) -> Reply {
        self.find_event(id).map(to_json)
    }

    /// `GET /v1/events`: by `type` or `types` (`customer.subscription.*` matches a prefix).
    pub fn list_events(&self, params: &Value) -> Reply {
        let kind = optional_param(params, "type");
        let kinds: Option<Vec<&str>> = params
            .get("types")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect());
        let matches = |pattern: &str, t: &str| match pattern.strip_suffix('*') {
            Some(prefix) => t.starts_with(prefix),
            None => t == pattern,
        };
        let events = self
            .events
            .iter()
            .filter(|e| {
                kind.as_deref().is_none_or(|k| matches(k, &e.kind))
                    && kinds.as_ref().is_none_or(|ks| ks.iter().any(|k| matches(k, &e.kind)))
            })
            .cloned()
            .collect();
        list_page("/v1/events", events, params)
    }
}
