//! Stripe's objects as Tally reads them: the envelope of a webhook event and the objects of the
//! events Tally acts on (a Checkout Session, a subscription with its items and prices, an
//! invoice), and what a subscription's status means. Pure types: no I/O.
//!
//! Stripe may omit or null any of these fields, and may expand an id into its object: every
//! field is optional, an empty string counts as absent, and [`Expandable`] takes either form.
//! Fields Tally does not read are ignored.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

/// The metadata key, on a Checkout Session and its subscription, of the org it is for.
pub const ORG_ID_KEY: &str = "tally_org_id";
/// The metadata key of the tier bought.
pub const TIER_KEY: &str = "tally_tier";

/// A subscription status under which Stripe bills (and Tally prices on the subscription's tier).
pub fn is_live(status: &str) -> bool {
    matches!(status, "active" | "trialing" | "past_due")
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// A webhook event: `{"id", "type", "created", "data": {"object"}}`.
#[derive(Debug, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds.
    pub created: i64,
    #[serde(default)]
    pub data: Option<EventData>,
}

#[derive(Debug, Default, Deserialize)]
pub struct EventData {
    /// The object the event is about; its type follows from the event's type.
    #[serde(default)]
    pub object: Value,
}

impl Event {
    /// The event's object, as `T`: every field absent when the event has none.
    pub fn object<T: serde::de::DeserializeOwned + Default>(&self) -> Result<T, serde_json::Error> {
        match self.data.as_ref().map(|d| &d.object) {
            None | Some(Value::Null) => Ok(T::default()),
            Some(object) => T::deserialize(object),
        }
    }
}

/// An id, or the object it names when expanded.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Expandable {
    Id(String),
    Object {
        #[serde(default)]
        id: Option<String>,
    },
}

impl Expandable {
    pub fn id(&self) -> Option<&str> {
        match self {
            Expandable::Id(id) => Some(id.as_str()).filter(|s| !s.is_empty()),
            Expandable::Object { id } => non_empty(id),
        }
    }
}

fn expandable_id(field: &Option<Expandable>) -> Option<&str> {
    field.as_ref().and_then(Expandable::id)
}

/// String values by key.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct Metadata(HashMap<String, Option<String>>);

impl Metadata {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(non_empty)
    }
}

fn metadata_value<'a>(metadata: &'a Option<Metadata>, key: &str) -> Option<&'a str> {
    metadata.as_ref().and_then(|m| m.get(key))
}

/// `checkout.session.completed`'s object.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CheckoutSession {
    id: Option<String>,
    client_reference_id: Option<String>,
    customer: Option<Expandable>,
    subscription: Option<Expandable>,
    metadata: Option<Metadata>,
}

impl CheckoutSession {
    /// The session's id (`cs_…`).
    pub fn id(&self) -> Option<&str> {
        non_empty(&self.id)
    }

    /// The org: the session's `client_reference_id`, else its metadata's.
    pub fn org_id(&self) -> Option<&str> {
        non_empty(&self.client_reference_id).or_else(|| metadata_value(&self.metadata, ORG_ID_KEY))
    }

    pub fn customer_id(&self) -> Option<&str> {
        expandable_id(&self.customer)
    }

    pub fn subscription_id(&self) -> Option<&str> {
        expandable_id(&self.subscription)
    }

    /// The tier named in the metadata, as written.
    pub fn tier(&self) -> Option<&str> {
        metadata_value(&self.metadata, TIER_KEY)
    }
}

/// `customer.subscription.*`'s object.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Subscription {
    id: Option<String>,
    customer: Option<Expandable>,
    status: Option<String>,
    metadata: Option<Metadata>,
    items: Option<List<SubscriptionItem>>,
}

/// A list object: `{"object": "list", "data": [...]}`.
#[derive(Debug, Deserialize)]
pub struct List<T> {
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SubscriptionItem {
    pub price: Option<Price>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Price {
    lookup_key: Option<String>,
    product: Option<Expandable>,
}

impl Price {
    pub fn lookup_key(&self) -> Option<&str> {
        non_empty(&self.lookup_key)
    }

    pub fn product_id(&self) -> Option<&str> {
        expandable_id(&self.product)
    }
}

impl Subscription {
    pub fn id(&self) -> Option<&str> {
        non_empty(&self.id)
    }

    pub fn customer_id(&self) -> Option<&str> {
        expandable_id(&self.customer)
    }

    /// Its status as sent (`None`: absent or empty).
    pub fn status(&self) -> Option<&str> {
        non_empty(&self.status)
    }

    /// The org named in the metadata.
    pub fn org_id(&self) -> Option<&str> {
        metadata_value(&self.metadata, ORG_ID_KEY)
    }

    /// The tier named in the metadata, as written.
    pub fn tier(&self) -> Option<&str> {
        metadata_value(&self.metadata, TIER_KEY)
    }

    /// The prices of its items, in order.
    pub fn prices(&self) -> impl Iterator<Item = &Price> {
        self.items.iter().flat_map(|list| list.data.iter()).filter_map(|item| item.price.as_ref())
    }
}

/// `invoice.*`'s object.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Invoice {
    id: Option<String>,
    billing_reason: Option<String>,
    customer: Option<Expandable>,
    parent: Option<InvoiceParent>,
    /// Unix seconds.
    pub period_start: Option<i64>,
    status: Option<String>,
    /// Cents (minor units of `currency`).
    pub total: Option<i64>,
    currency: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InvoiceParent {
    subscription_details: Option<SubscriptionDetails>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SubscriptionDetails {
    metadata: Option<Metadata>,
}

impl Invoice {
    pub fn id(&self) -> Option<&str> {
        non_empty(&self.id)
    }

    pub fn billing_reason(&self) -> Option<&str> {
        non_empty(&self.billing_reason)
    }

    pub fn customer_id(&self) -> Option<&str> {
        expandable_id(&self.customer)
    }

    /// The org named in its subscription's metadata.
    pub fn org_id(&self) -> Option<&str> {
        let details = self.parent.as_ref().and_then(|p| p.subscription_details.as_ref());
        details.and_then(|d| metadata_value(&d.metadata, ORG_ID_KEY))
    }

    pub fn status(&self) -> Option<&str> {
        non_empty(&self.status)
    }

    pub fn currency(&self) -> Option<&str> {
        non_empty(&self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_read_ids_expanded_or_not_and_treat_empty_as_absent() {
        let session: CheckoutSession = serde_json::from_value(json!({
            "id": "cs_1", "client_reference_id": "", "customer": {"id": "cus_1", "object": "customer"},
            "subscription": "sub_1", "metadata": {"tally_org_id": "acme", "tally_tier": "growth"}
        }))
        .unwrap();
        assert_eq!(session.org_id(), Some("acme"));
        assert_eq!(session.customer_id(), Some("cus_1"));
        assert_eq!(session.subscription_id(), Some("sub_1"));
        assert_eq!(session.tier(), Some("growth"));
        let subscription: Subscription = serde_json::from_value(json!({
            "id": "sub_1", "customer": null, "status": "",
            "items": {"object": "list", "data": [{"id": "si_1", "price": {"lookup_key": "k", "product": {"id": "prod_1"}}}]}
        }))
        .unwrap();
        assert_eq!(
            (subscription.id(), subscription.customer_id(), subscription.status()),
            (Some("sub_1"), None, None)
        );
        let price = subscription.prices().next().unwrap();
        assert_eq!((price.lookup_key(), price.product_id()), (Some("k"), Some("prod_1")));
        let invoice: Invoice = serde_json::from_value(json!({
            "id": "in_1", "total": 12_345, "period_start": 1_800_000_000, "parent": {"type": "subscription_details",
            "subscription_details": {"subscription": "sub_1", "metadata": {"tally_org_id": "acme"}}}
        }))
        .unwrap();
        assert_eq!(
            (invoice.org_id(), invoice.total, invoice.currency()),
            (Some("acme"), Some(12_345), None)
        );
        let event: Event =
            serde_json::from_value(json!({"id": "evt_1", "type": "x", "created": 1})).unwrap();
        assert!(event.object::<Invoice>().is_ok(), "an event without data has an empty object");
    }
}
