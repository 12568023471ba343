//! Customers: create, retrieve, update, list (by `email`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::params::{metadata_param, optional_param};
use super::{from_sample, list_page, new_id, to_json, Listed, Reply, Store, StripeError};
use crate::spec::sample;

/// Stripe's Customer object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    /// Always `"customer"`.
    pub object: String,
    pub created: i64,
    pub livemode: bool,
    pub email: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: Map<String, Value>,
    pub balance: i64,
    /// The first part of the customer's invoice numbers (`ABCD1234-0001`).
    pub invoice_prefix: String,
    /// The sequence number of the customer's next invoice.
    pub next_invoice_sequence: i64,
    /// The rest of Stripe's sample, unchanged.
    #[serde(flatten)]
    pub sample_fields: Map<String, Value>,
}

impl Listed for Customer {
    fn id(&self) -> &str {
        &self.id
    }
    fn created(&self) -> i64 {
        self.created
    }
}

impl Store {
    /// Creates a customer from `email`, `name`, `description`, `metadata`; emits
    /// `customer.created`.
    pub(super) fn insert_customer(&mut self, params: &Value, now: i64) -> Customer {
        let mut customer: Customer = from_sample(sample("customer"), json!({"discount": null}));
        customer.id = new_id("cus_");
        customer.created = now;
        customer.livemode = false;
        customer.email = optional_param(params, "email");
        customer.name = optional_param(params, "name");
        customer.description = optional_param(params, "description");
        customer.metadata = metadata_param(params);
        customer.balance = 0;
        customer.invoice_prefix = new_id("")[..8].to_ascii_uppercase();
        customer.next_invoice_sequence = 1;
        self.customers.insert(customer.id.clone(), customer.clone());
        self.record_event("customer.created", to_json(&customer), None, now);
        customer
    }

    pub fn create_customer(&mut self, params: &Value, now: i64) -> Reply {
        Ok(to_json(&self.insert_customer(params, now)))
    }

    pub(super) fn find_customer(&self, id: &str) -> Result<&Customer, StripeError> {
        self.customers.get(id).ok_or_else(|| StripeError::not_found("customer", id))
    }

    pub fn customer(&self, id: &str) -> Reply {
        self.find_customer(id).map(to_json)
    }

    /// Sets the given `email`, `name`, `description`; merges `metadata`.
    pub fn update_customer(&mut self, id: &str, params: &Value) -> Reply {
        let customer =
            self.customers.get_mut(id).ok_or_else(|| StripeError::not_found("customer", id))?;
        if let Some(email) = optional_param(params, "email") {
            customer.email = Some(email);
        }
        if let Some(name) = optional_param(params, "name") {
            customer.name = Some(name);
        }
        if let Some(description) = optional_param(params, "description") {
            customer.description = Some(description);
        }
        if let Some(metadata) = params.get("metadata").and_then(Value::as_object) {
            for (key, value) in metadata {
                customer.metadata.insert(key.clone(), value.clone());
            }
        }
        Ok(to_json(customer))
    }

    pub fn list_customers(&self, params: &Value) -> Reply {
        let email = optional_param(params, "email");
        let customers = self
            .customers
            .values()
            .filter(|c| email.is_none() || c.email == email)
            .cloned()
            .collect();
        list_page("/v1/customers", customers, params)
    }
}
