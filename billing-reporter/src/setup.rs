//! `billing-reporter setup-stripe`: creates or finds, idempotently, what Tally's price list needs
//! in Stripe: the two meters (found by event name), a product per tier (Tally chooses its id) and
//! each tier's three prices (found by lookup key). Running it again changes nothing.

use std::collections::BTreeMap;

use stripe_billing::billing_meter::{
    CreateBillingMeter, CreateBillingMeterCustomerMapping, CreateBillingMeterCustomerMappingType,
    CreateBillingMeterDefaultAggregation, CreateBillingMeterDefaultAggregationFormula,
    CreateBillingMeterValueSettings, ListBillingMeter,
};
use stripe_billing::BillingMeterStatus;
use stripe_client_core::StripeClient;
use stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval, CreatePriceRecurringUsageType,
    CreatePriceTiers, CreatePriceTiersUpTo, ListPrice,
};
use stripe_product::product::{CreateProduct, RetrieveProduct};
use stripe_product::{PriceBillingScheme, PriceTiersMode};
use tally_pricing::stripe::{meter_event_name, plans, PriceKind, StripePrice};
use tally_pricing::Pricing;
use tally_schemas::Metric;

/// The Stripe ids Tally's price list maps to.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StripeSetup {
    /// Meter id by metric (`traces`, `payload_bytes`).
    pub meters: BTreeMap<String, String>,
    /// Product id by tier.
    pub products: BTreeMap<String, String>,
    /// Price id by lookup key.
    pub prices: BTreeMap<String, String>,
}

/// Tells a "no such object" answer from other errors, for find-or-create.
pub trait MissingResource {
    fn is_missing(&self) -> bool;
}

impl MissingResource for stripe::StripeError {
    fn is_missing(&self) -> bool {
        matches!(self, stripe::StripeError::Stripe(_, 404))
    }
}

impl MissingResource for crate::client::StripeCallError {
    fn is_missing(&self) -> bool {
        matches!(self, crate::client::StripeCallError::Rejected { status: 404, .. })
    }
}

/// Finds or creates every meter, product and price; returns their ids.
pub async fn setup_stripe<C: StripeClient>(
    client: &C,
    pricing: &Pricing,
) -> Result<StripeSetup, C::Err>
where
    C::Err: MissingResource,
{
    let mut out = StripeSetup::default();
    let meters =
        ListBillingMeter::new().status(BillingMeterStatus::Active).limit(100).send(client).await?;
    for metric in Metric::ALL {
        let event_name = meter_event_name(metric);
        let id = match meters.data.iter().find(|m| m.event_name == event_name) {
            Some(m) => m.id.to_string(),
            None => CreateBillingMeter::new(
                CreateBillingMeterDefaultAggregation::new(
                    CreateBillingMeterDefaultAggregationFormula::Sum,
                ),
                format!("Tally {}", metric.as_str().replace('_', " ")),
                event_name,
            )
            .customer_mapping(CreateBillingMeterCustomerMapping::new(
                "stripe_customer_id",
                CreateBillingMeterCustomerMappingType::ById,
            ))
            .value_settings(CreateBillingMeterValueSettings::new("value"))
            .send(client)
            .await?
            .id
            .to_string(),
        };
        out.meters.insert(metric.as_str().to_string(), id);
    }

    let plans = plans(pricing);
    let keys: Vec<String> =
        plans.iter().flat_map(|p| p.prices.iter().map(|x| x.lookup_key.clone())).collect();
    let existing = ListPrice::new().lookup_keys(keys).limit(100).send(client).await?;
    for plan in &plans {
        let product = match RetrieveProduct::new(plan.product_id.as_str()).send(client).await {
            Ok(p) => p.id.to_string(),
            Err(e) if e.is_missing() => CreateProduct::new(plan.product_name.as_str())
                .id(plan.product_id.as_str())
                .send(client)
                .await?
                .id
                .to_string(),
            Err(e) => return Err(e),
        };
        out.products.insert(plan.tier.as_str().to_string(), product.clone());
        for price in &plan.prices {
            let found = existing
                .data
                .iter()
                .find(|p| p.lookup_key.as_deref() == Some(price.lookup_key.as_str()));
            let id = match found {
                Some(p) => p.id.to_string(),
                None => create_price(client, price, &product, &out.meters).await?,
            };
            out.prices.insert(price.lookup_key.clone(), id);
        }
    }
    Ok(out)
}

async fn create_price<C: StripeClient>(
    client: &C,
    price: &StripePrice,
    product: &str,
    meters: &BTreeMap<String, String>,
) -> Result<String, C::Err> {
    let mut recurring = CreatePriceRecurring::new(CreatePriceRecurringInterval::Month);
    let request = CreatePrice::new(stripe_types::Currency::USD)
        .product(product)
        .lookup_key(price.lookup_key.as_str())
        .nickname(price.nickname.as_str());
    let request = match &price.kind {
        PriceKind::Licensed { unit_amount } => {
            recurring.usage_type = Some(CreatePriceRecurringUsageType::Licensed);
            request.unit_amount(*unit_amount).recurring(recurring)
        }
        PriceKind::Metered { metric, tiers } => {
            recurring.usage_type = Some(CreatePriceRecurringUsageType::Metered);
            recurring.meter = meters.get(metric.as_str()).cloned();
            let tiers: Vec<CreatePriceTiers> = tiers
                .iter()
                .map(|t| {
                    let up_to = match t.up_to {
                        Some(u) => CreatePriceTiersUpTo::I64(i64::try_from(u).unwrap_or(i64::MAX)),
                        None => CreatePriceTiersUpTo::Inf,
                    };
                    let mut tier = CreatePriceTiers::new(up_to);
                    tier.unit_amount_decimal = Some(t.unit_amount_decimal.clone());
                    tier
                })
                .collect();
            request
                .billing_scheme(PriceBillingScheme::Tiered)
                .tiers_mode(PriceTiersMode::Graduated)
                .tiers(tiers)
                .recurring(recurring)
        }
    };
    Ok(request.send(client).await?.id.to_string())
}
