//! Products and prices: per-unit and tiered (graduated or volume) prices, one-time or
//! recurring (licensed, or metered on a billing meter), with lookup keys.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::params::{integer_param, metadata_param, optional_param, required_param};
use super::StripeError;
use super::{from_sample, is_expanded, list_page, new_id, to_json, Listed, Reply, Store};
use crate::spec::sample;

/// Stripe's Product object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    /// Always `"product"`.
    pub object: String,
    pub name: String,
    pub created: i64,
    pub updated: i64,
    pub livemode: bool,
    pub description: Option<String>,
    pub metadata: Map<String, Value>,
    /// `"service"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The rest of Stripe's sample, unchanged.
    #[serde(flatten)]
    pub sample_fields: Map<String, Value>,
}

impl Listed for Product {
    fn id(&self) -> &str {
        &self.id
    }
    fn created(&self) -> i64 {
        self.created
    }
}

/// Stripe's Price object. Money is integer cents (`unit_amount`) or Stripe's exact decimal
/// strings of cents (`unit_amount_decimal`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub id: String,
    /// Always `"price"`.
    pub object: String,
    pub active: bool,
    /// `"per_unit"` or `"tiered"`.
    pub billing_scheme: String,
    pub created: i64,
    pub currency: String,
    pub livemode: bool,
    pub lookup_key: Option<String>,
    pub metadata: Map<String, Value>,
    pub nickname: Option<String>,
    pub product: String,
    /// `None` for a one-time price.
    pub recurring: Option<Recurring>,
    /// A tiered price's tiers. Stripe shows them only when asked for (`expand[]=tiers`); a
    /// per-unit price has none (the field is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Vec<PriceTier>>,
    /// `"graduated"` or `"volume"` for a tiered price.
    pub tiers_mode: Option<String>,
    /// `"recurring"` or `"one_time"`.
    #[serde(rename = "type")]
    pub kind: String,
    pub unit_amount: Option<i64>,
    pub unit_amount_decimal: Option<String>,
    /// The rest of Stripe's sample, unchanged.
    #[serde(flatten)]
    pub sample_fields: Map<String, Value>,
}

impl Listed for Price {
    fn id(&self) -> &str {
        &self.id
    }
    fn created(&self) -> i64 {
        self.created
    }
}

impl Price {
    /// The price as Stripe shows it: `tiers` only with `expand[]=tiers`.
    pub fn as_shown(&self, params: &Value) -> Price {
        let mut shown = self.clone();
        if !is_expanded(params, "tiers") {
            shown.tiers = None;
        }
        shown
    }

    /// The price as a subscription item shows it: without tiers.
    pub fn without_tiers(&self) -> Price {
        Price { tiers: None, ..self.clone() }
    }

    pub fn is_metered(&self) -> bool {
        self.recurring.as_ref().is_some_and(|r| r.usage_type == "metered")
    }
}

/// A recurring price's billing: every `interval_count` `interval`s, `licensed` (a quantity) or
/// `metered` (usage from `meter`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recurring {
    pub interval: String,
    pub interval_count: i64,
    pub meter: Option<String>,
    pub trial_period_days: Option<i64>,
    pub usage_type: String,
}

/// One tier of a tiered price: the units up to `up_to` (`None`: no limit) cost
/// `unit_amount_decimal` cents each, plus `flat_amount` cents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceTier {
    pub flat_amount: Option<i64>,
    pub flat_amount_decimal: Option<String>,
    pub unit_amount: Option<i64>,
    pub unit_amount_decimal: Option<String>,
    pub up_to: Option<i64>,
}

impl PriceTier {
    /// The tiers of `tiers[i][...]` parameters; the last one must be open (`up_to=inf`).
    fn parse_all(tiers: &[Value]) -> Result<Vec<PriceTier>, StripeError> {
        let mut parsed = Vec::new();
        for (i, tier) in tiers.iter().enumerate() {
            let up_to = match tier.get("up_to").and_then(Value::as_str) {
                Some("inf") => None,
                Some(n) => Some(n.parse::<i64>().map_err(|_| {
                    StripeError::invalid(&format!("tiers[{i}][up_to]"), "Invalid integer")
                })?),
                None => return Err(StripeError::missing(&format!("tiers[{i}][up_to]"))),
            };
            let text = |name: &str| tier.get(name).and_then(Value::as_str).map(String::from);
            let unit_amount_decimal = text("unit_amount_decimal").or_else(|| text("unit_amount"));
            let flat_amount_decimal = text("flat_amount_decimal").or_else(|| text("flat_amount"));
            let whole_cents = |d: &Option<String>| d.as_ref().and_then(|d| d.parse::<i64>().ok());
            parsed.push(PriceTier {
                flat_amount: whole_cents(&flat_amount_decimal),
                flat_amount_decimal,
                unit_amount: whole_cents(&unit_amount_decimal),
                unit_amount_decimal,
                up_to,
            });
        }
        if parsed.last().is_some_and(|t| t.up_to.is_some()) {
            return Err(StripeError::invalid(
                "tiers",
                "The last tier must have `up_to` set to `inf`.",
            ));
        }
        Ok(parsed)
    }
}

impl Store {
    pub fn create_product(&mut self, params: &Value, now: i64) -> Reply {
        let name = required_param(params, "name")?;
        let id = optional_param(params, "id").unwrap_or_else(|| new_id("prod_"));
        if self.products.contains_key(&id) {
            return Err(StripeError::already_exists("id", format!("Product already exists: {id}")));
        }
        let fixed = json!({"default_price": null, "package_dimensions": null});
        let mut product: Product = from_sample(sample("product"), fixed);
        product.id = id.clone();
        product.name = name;
        product.created = now;
        product.updated = now;
        product.livemode = false;
        product.description = optional_param(params, "description");
        product.metadata = metadata_param(params);
        product.kind = "service".into();
        self.products.insert(id, product.clone());
        Ok(to_json(&product))
    }

    pub fn product(&self, id: &str) -> Reply {
        self.products.get(id).map(to_json).ok_or_else(|| StripeError::not_found("product", id))
    }

    pub fn list_products(&self, params: &Value) -> Reply {
        list_page("/v1/products", self.products.values().cloned().collect(), params)
    }

    pub fn create_price(&mut self, params: &Value, now: i64) -> Reply {
        let currency = required_param(params, "currency")?.to_ascii_lowercase();
        let product = required_param(params, "product")?;
        if !self.products.contains_key(&product) {
            return Err(StripeError::not_found("product", &product));
        }
        let fixed = json!({"custom_unit_amount": null, "transform_quantity": null});
        let mut price: Price = from_sample(sample("price"), fixed);
        let id = new_id("price_");
        price.id = id.clone();
        price.created = now;
        price.currency = currency;
        price.product = product;
        price.livemode = false;
        price.metadata = metadata_param(params);
        price.nickname = optional_param(params, "nickname");
        let billing_scheme =
            optional_param(params, "billing_scheme").unwrap_or_else(|| "per_unit".into());
        match billing_scheme.as_str() {
            "per_unit" => {
                let unit_amount = integer_param(params, "unit_amount")?;
                let (amount, decimal) =
                    match (unit_amount, optional_param(params, "unit_amount_decimal")) {
                        (Some(a), _) => (Some(a), a.to_string()),
                        (None, Some(d)) => (None, d),
                        (None, None) => return Err(StripeError::missing("unit_amount")),
                    };
                price.unit_amount = amount;
                price.unit_amount_decimal = Some(decimal);
                price.tiers_mode = None;
            }
            "tiered" => {
                let mode = required_param(params, "tiers_mode")?;
                if mode != "graduated" && mode != "volume" {
                    return Err(StripeError::invalid(
                        "tiers_mode",
                        "Invalid tiers_mode: must be one of graduated or volume",
                    ));
                }
                let tiers = params
                    .get("tiers")
                    .and_then(Value::as_array)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| StripeError::missing("tiers"))?;
                price.tiers = Some(PriceTier::parse_all(tiers)?);
                price.tiers_mode = Some(mode);
                price.unit_amount = None;
                price.unit_amount_decimal = None;
            }
            other => {
                return Err(StripeError::invalid(
                    "billing_scheme",
                    format!("Invalid billing_scheme: {other}"),
                ))
            }
        }
        price.billing_scheme = billing_scheme;
        match params.get("recurring") {
            Some(recurring) => {
                let text = |name: &str| recurring.get(name).and_then(Value::as_str);
                let interval =
                    text("interval").ok_or_else(|| StripeError::missing("recurring[interval]"))?;
                let usage_type = text("usage_type").unwrap_or("licensed");
                let meter = text("meter");
                if usage_type == "metered" && meter.is_none() {
                    return Err(StripeError::missing("recurring[meter]"));
                }
                if let Some(m) = meter {
                    if !self.meters.contains_key(m) {
                        return Err(StripeError::not_found("billing.meter", m));
                    }
                }
                price.recurring = Some(Recurring {
                    interval: interval.to_string(),
                    interval_count: 1,
                    meter: meter.map(String::from),
                    trial_period_days: None,
                    usage_type: usage_type.to_string(),
                });
                price.kind = "recurring".into();
            }
            None => {
                price.recurring = None;
                price.kind = "one_time".into();
            }
        }
        price.lookup_key = None;
        if let Some(key) = optional_param(params, "lookup_key") {
            let transfer = optional_param(params, "transfer_lookup_key").as_deref() == Some("true");
            let holder = self.prices.values_mut().find(|p| p.lookup_key.as_deref() == Some(&key));
            if let Some(holder) = holder {
                if !transfer {
                    return Err(StripeError::invalid(
                        "lookup_key",
                        format!("A price (`{}`) already uses that lookup key.", holder.id),
                    ));
                }
                holder.lookup_key = None;
            }
            price.lookup_key = Some(key);
        }
        self.prices.insert(id, price.clone());
        Ok(to_json(&price.as_shown(params)))
    }

    pub fn price(&self, id: &str, params: &Value) -> Reply {
        self.prices
            .get(id)
            .map(|p| to_json(&p.as_shown(params)))
            .ok_or_else(|| StripeError::not_found("price", id))
    }

    /// `GET /v1/prices`: by `lookup_keys` and `product`.
    pub fn list_prices(&self, params: &Value) -> Reply {
        let keys: Option<Vec<&str>> = params
            .get("lookup_keys")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect());
        let product = optional_param(params, "product");
        let prices = self
            .prices
            .values()
            .filter(|p| {
                keys.as_ref()
                    .is_none_or(|k| p.lookup_key.as_deref().is_some_and(|l| k.contains(&l)))
            })
            .filter(|p| product.as_ref().is_none_or(|id| p.product == *id))
            .map(|p| p.as_shown(params))
            .collect();
        list_page("/v1/prices", prices, params)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_fixtures::{meter, NOW};
    use super::*;

    #[test]
    fn tiered_prices_need_an_open_last_tier_and_hide_tiers_unless_expanded() {
        let mut s = Store::default();
        let meter_id = meter(&mut s);
        let product = s.create_product(&json!({"name": "Starter"}), NOW).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
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
