//! Invoices: a subscription billed for a period (test only; Stripe bills at each period's end),
//! licensed items by quantity and metered usage on graduated tiers; paying one; retrieve, list.
//! Money is integer cents, and exact decimal strings of cents for unit amounts.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::params::optional_param;
use super::{from_sample, list_page, new_id, to_json, List, Listed, Reply, Store, StripeError};
use super::{Price, PriceTier, SubscriptionItem};
use crate::spec::sample;

/// Stripe's Invoice object (API version 2025-03-31 and later: the subscription is under
/// `parent`, not at the top).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invoice {
    pub id: String,
    /// Always `"invoice"`.
    pub object: String,
    pub created: i64,
    pub livemode: bool,
    pub customer: String,
    pub customer_email: Option<String>,
    pub customer_name: Option<String>,
    pub currency: String,
    pub parent: InvoiceParent,
    pub lines: List<InvoiceLine>,
    pub period_start: i64,
    pub period_end: i64,
    pub subtotal: i64,
    pub subtotal_excluding_tax: i64,
    pub total: i64,
    pub total_excluding_tax: i64,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub amount_remaining: i64,
    pub attempt_count: i64,
    pub attempted: bool,
    pub next_payment_attempt: Option<i64>,
    /// Given when the invoice is finalized: `{customer's invoice_prefix}-{sequence:04}`.
    pub number: Option<String>,
    pub effective_at: Option<i64>,
    pub ending_balance: Option<i64>,
    /// `"draft"`, `"open"`, then `"paid"`.
    pub status: String,
    pub status_transitions: StatusTransitions,
    /// The rest of Stripe's sample, as the stand-in fixes it (no tax, no shipping, ...).
    #[serde(flatten)]
    pub sample_fields: Map<String, Value>,
}

impl Listed for Invoice {
    fn id(&self) -> &str {
        &self.id
    }
    fn created(&self) -> i64 {
        self.created
    }
}

/// What an invoice bills for: here always a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceParent {
    /// `"subscription_details"`.
    #[serde(rename = "type")]
    pub kind: String,
    pub quote_details: Option<Value>,
    pub subscription_details: Option<SubscriptionDetails>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionDetails {
    pub subscription: String,
    /// The subscription's metadata when the invoice was made.
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusTransitions {
    pub finalized_at: Option<i64>,
    pub marked_uncollectible_at: Option<i64>,
    pub paid_at: Option<i64>,
    pub voided_at: Option<i64>,
}

/// Stripe's Invoice Line Item object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub id: String,
    pub invoice: String,
    /// In cents.
    pub amount: i64,
    pub subtotal: i64,
    pub currency: String,
    pub description: Option<String>,
    pub livemode: bool,
    pub parent: LineParent,
    pub period: LinePeriod,
    pub pricing: LinePricing,
    pub quantity: u64,
    pub quantity_decimal: Option<String>,
    pub subscription: Option<String>,
    /// The rest of Stripe's sample, as the stand-in fixes it (no discounts, no taxes, ...).
    #[serde(flatten)]
    pub sample_fields: Map<String, Value>,
}

/// What a line bills for: here always a subscription item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineParent {
    /// `"subscription_item_details"`.
    #[serde(rename = "type")]
    pub kind: String,
    pub invoice_item_details: Option<Value>,
    pub subscription_item_details: Option<SubscriptionItemDetails>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionItemDetails {
    pub invoice_item: Option<String>,
    pub proration: bool,
    pub proration_details: ProrationDetails,
    pub subscription: Option<String>,
    pub subscription_item: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProrationDetails {
    pub credited_items: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinePeriod {
    pub start: i64,
    pub end: i64,
}

/// How a line was priced: the price and the unit amount in cents, an exact decimal string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinePricing {
    /// `"price_details"`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_details: Option<PriceDetails>,
    pub unit_amount_decimal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceDetails {
    pub price: String,
    pub product: String,
}

/// Parses a non-negative decimal string (`"0.00000005"`) into (mantissa, scale).
fn parse_decimal(text: &str) -> Option<(u128, u32)> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits_only = whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit());
    if whole.is_empty() || frac.len() > 12 || !digits_only {
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
/// up, plus its flat amount. Tiers with no units are left out. `None` when a unit amount is not
/// a decimal or an amount does not fit.
pub fn graduated(tiers: &[PriceTier], quantity: u64) -> Option<Vec<TierLine>> {
    let mut lines = Vec::new();
    let mut from = 0u64;
    for tier in tiers {
        if quantity <= from {
            break;
        }
        // A negative limit is no limit, as it always was here.
        let up_to = tier.up_to.and_then(|u| u64::try_from(u).ok());
        let units = quantity.min(up_to.unwrap_or(u64::MAX)) - from;
        let unit = tier.unit_amount_decimal.as_deref().unwrap_or("0");
        let (mantissa, scale) = parse_decimal(unit)?;
        let denominator = 10u128.pow(scale);
        let exact_twice = 2 * units as u128 * mantissa;
        let rounded = (exact_twice + denominator) / (2 * denominator);
        let flat = tier.flat_amount.unwrap_or(0);
        lines.push(TierLine {
            quantity: units,
            unit_amount_decimal: unit.to_string(),
            amount: i64::try_from(rounded).ok()? + flat,
        });
        match up_to {
            Some(u) => from = u,
            None => break,
        }
    }
    Some(lines)
}

/// A unit amount in cents (`"0.2"`) as dollars (`"0.002"`), for line descriptions.
fn cents_to_dollars(cents: &str) -> String {
    let Some((mantissa, scale)) = parse_decimal(cents) else { return cents.to_string() };
    let digits = mantissa.to_string();
    let scale = scale as usize + 2;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, frac) = padded.split_at(padded.len() - scale);
    let frac = frac.trim_end_matches('0');
    let frac = if frac.len() < 2 { format!("{frac:0<2}") } else { frac.to_string() };
    format!("{whole}.{frac}")
}

/// The fields of Stripe's sample invoice the stand-in always gives; `subscription` is removed.
fn fixed_invoice_fields() -> Value {
    json!({
        "customer_address": null,
        "customer_shipping": null,
        "shipping_details": null,
        "shipping_cost": null,
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "auto_advance": true,
        "amount_overpaid": 0,
        "amount_shipping": 0,
        "automatic_tax": {
            "disabled_reason": null, "enabled": false, "liability": null, "provider": null,
            "status": null,
        },
        "due_date": null,
        "starting_balance": 0,
        "from_invoice": null,
        "last_finalization_error": null,
        "total_taxes": [],
        "total_pretax_credit_amounts": [],
        "webhooks_delivered_at": null,
    })
}

/// The fields of Stripe's sample invoice line the stand-in always gives.
fn fixed_line_fields() -> Value {
    json!({
        "discount_amounts": [],
        "discounts": [],
        "metadata": {},
        "pretax_credit_amounts": [],
        "taxes": [],
    })
}

impl Store {
    /// The lines billing one subscription item over `[period_start, period_end)`: a licensed
    /// item's quantity at its unit amount, or a metered item's usage (the meter's aggregate for
    /// `customer`) on its graduated tiers, one line per tier with units (one empty line if none).
    fn item_lines(
        &self,
        item: &SubscriptionItem,
        customer: &str,
        invoice: &str,
        period: (i64, i64),
    ) -> Result<Vec<InvoiceLine>, StripeError> {
        let price_id = item.price.id.as_str();
        let price: &Price =
            self.prices.get(price_id).ok_or_else(|| StripeError::not_found("price", price_id))?;
        let quantity = if price.is_metered() {
            let meter_id = price.recurring.as_ref().and_then(|r| r.meter.as_deref());
            let meter = self.find_meter(meter_id.unwrap_or_default())?;
            self.aggregate(meter, customer, period.0, period.1).max(0) as u64
        } else {
            item.quantity.unwrap_or(1)
        };
        let tiered = price.billing_scheme == "tiered";
        let tiers = if tiered {
            if price.tiers_mode.as_deref() != Some("graduated") {
                return Err(StripeError::invalid(
                    "subscription",
                    format!("The stand-in prices only graduated tiers, not those of {price_id}."),
                ));
            }
            price.tiers.clone().unwrap_or_default()
        } else {
            let unit = price.unit_amount_decimal.clone().unwrap_or_else(|| "0".into());
            vec![PriceTier {
                flat_amount: None,
                flat_amount_decimal: None,
                unit_amount: None,
                unit_amount_decimal: Some(unit),
                up_to: None,
            }]
        };
        let mut priced = graduated(&tiers, quantity).ok_or_else(|| StripeError {
            status: 500,
            kind: "api_error",
            code: None,
            param: None,
            message: format!("The price {price_id} cannot be computed."),
        })?;
        if priced.is_empty() {
            let unit = tiers.first().and_then(|t| t.unit_amount_decimal.clone());
            let unit_amount_decimal = unit.unwrap_or_else(|| "0".into());
            priced.push(TierLine { quantity: 0, unit_amount_decimal, amount: 0 });
        }
        let name = price.nickname.clone().unwrap_or_else(|| {
            let product = self.products.get(&price.product);
            product.map_or_else(|| price.product.clone(), |p| p.name.clone())
        });
        let interval = price.recurring.as_ref().map_or("month", |r| r.interval.as_str());
        let subscription = item.subscription.clone();
        let mut lines = Vec::new();
        for (n, tier_line) in priced.into_iter().enumerate() {
            let at = format!("${} / {interval}", cents_to_dollars(&tier_line.unit_amount_decimal));
            let description = if tiered {
                format!("{name} (Tier {} at {at})", n + 1)
            } else {
                format!("{} × {name} (at {at})", tier_line.quantity)
            };
            let line_sample = sample("invoice")["lines"]["data"][0].take();
            let mut line: InvoiceLine = from_sample(line_sample, fixed_line_fields());
            line.id = new_id("il_");
            line.invoice = invoice.to_string();
            line.amount = tier_line.amount;
            line.subtotal = tier_line.amount;
            line.currency = price.currency.clone();
            line.description = Some(description);
            line.livemode = false;
            line.parent = LineParent {
                kind: "subscription_item_details".into(),
                invoice_item_details: None,
                subscription_item_details: Some(SubscriptionItemDetails {
                    invoice_item: None,
                    proration: false,
                    proration_details: ProrationDetails { credited_items: None },
                    subscription: Some(subscription.clone()),
                    subscription_item: item.id.clone(),
                }),
            };
            line.period = LinePeriod { start: period.0, end: period.1 };
            line.pricing = LinePricing {
                kind: "price_details".into(),
                price_details: Some(PriceDetails {
                    price: price_id.to_string(),
                    product: price.product.clone(),
                }),
                unit_amount_decimal: Some(tier_line.unit_amount_decimal),
            };
            line.quantity = tier_line.quantity;
            line.quantity_decimal = Some(tier_line.quantity.to_string());
            line.subscription = Some(subscription.clone());
            lines.push(line);
        }
        Ok(lines)
    }

    /// The invoice of a subscription for `[period_start, period_end)` (test only; Stripe makes it
    /// at the end of each period): a line per licensed item (`unit_amount × quantity`) and, per
    /// metered item, the meter's aggregate for the customer over the period priced on the
    /// price's graduated tiers, one line per tier with units. Finalized: status `open`. Emits
    /// `invoice.created` (the draft) and `invoice.finalized`.
    pub fn create_subscription_invoice(
        &mut self,
        subscription: &str,
        period_start: i64,
        period_end: i64,
        now: i64,
    ) -> Reply {
        let sub = self.subscriptions.get(subscription).cloned().ok_or_else(|| StripeError {
            param: Some("subscription".into()),
            ..StripeError::not_found("subscription", subscription)
        })?;
        if period_end <= period_start {
            return Err(StripeError::invalid(
                "period_end",
                "period_end must be after period_start.",
            ));
        }
        let customer = self.find_customer(&sub.customer)?.clone();
        let id = new_id("in_");
        let mut lines = Vec::new();
        for item in &sub.items.data {
            lines.extend(self.item_lines(item, &customer.id, &id, (period_start, period_end))?);
        }
        let total: i64 = lines.iter().map(|l| l.amount).sum();
        let sequence = customer.next_invoice_sequence;
        let number = format!("{}-{sequence:04}", customer.invoice_prefix);
        if let Some(c) = self.customers.get_mut(&customer.id) {
            c.next_invoice_sequence = sequence + 1;
        }
        let mut invoice_sample = sample("invoice");
        if let Some(o) = invoice_sample.as_object_mut() {
            // Since API version 2025-03-31 the subscription is under `parent`, not at the top.
            o.remove("subscription");
        }
        let mut invoice: Invoice = from_sample(invoice_sample, fixed_invoice_fields());
        invoice.id = id.clone();
        invoice.object = "invoice".into();
        invoice.created = now;
        invoice.livemode = false;
        invoice.customer = customer.id.clone();
        invoice.customer_email = customer.email.clone();
        invoice.customer_name = customer.name.clone();
        invoice.currency = sub.currency.clone();
        invoice.parent = InvoiceParent {
            kind: "subscription_details".into(),
            quote_details: None,
            subscription_details: Some(SubscriptionDetails {
                subscription: subscription.to_string(),
                metadata: Some(sub.metadata.clone()),
            }),
        };
        invoice.lines = List::new(format!("/v1/invoices/{id}/lines"), lines, false);
        invoice.period_start = period_start;
        invoice.period_end = period_end;
        invoice.subtotal = total;
        invoice.subtotal_excluding_tax = total;
        invoice.total = total;
        invoice.total_excluding_tax = total;
        invoice.amount_due = total;
        invoice.amount_remaining = total;
        invoice.amount_paid = 0;
        invoice.attempt_count = 0;
        invoice.attempted = false;
        invoice.ending_balance = None;
        invoice.next_payment_attempt = None;
        invoice.number = None;
        invoice.effective_at = None;
        invoice.status = "draft".into();
        invoice.status_transitions = StatusTransitions {
            finalized_at: None,
            marked_uncollectible_at: None,
            paid_at: None,
            voided_at: None,
        };
        self.record_event("invoice.created", to_json(&invoice), None, now);
        invoice.status = "open".into();
        invoice.number = Some(number);
        invoice.effective_at = Some(now);
        invoice.ending_balance = Some(0);
        invoice.status_transitions.finalized_at = Some(now);
        invoice.next_payment_attempt = (total > 0).then_some(now + 3600);
        self.invoices.insert(id, invoice.clone());
        self.record_event("invoice.finalized", to_json(&invoice), None, now);
        Ok(to_json(&invoice))
    }

    /// The customer's payment of an open invoice succeeds (test only): emits `invoice.paid`,
    /// then `invoice.payment_succeeded`, as Stripe does.
    pub fn pay_invoice(&mut self, id: &str, now: i64) -> Reply {
        let invoice =
            self.invoices.get_mut(id).ok_or_else(|| StripeError::not_found("invoice", id))?;
        if invoice.status != "open" {
            return Err(StripeError::invalid(
                "invoice",
                format!("Invoice is {} and cannot be paid.", invoice.status),
            ));
        }
        invoice.status = "paid".into();
        invoice.amount_paid = invoice.amount_due;
        invoice.amount_remaining = 0;
        invoice.attempted = true;
        invoice.attempt_count = 1;
        invoice.next_payment_attempt = None;
        invoice.status_transitions.paid_at = Some(now);
        let invoice = to_json(&*invoice);
        self.record_event("invoice.paid", invoice.clone(), None, now);
        self.record_event("invoice.payment_succeeded", invoice.clone(), None, now);
        Ok(invoice)
    }

    pub fn invoice(&self, id: &str) -> Reply {
        self.invoices.get(id).map(to_json).ok_or_else(|| StripeError::not_found("invoice", id))
    }

    /// `GET /v1/invoices`: by `customer`, `subscription` and `status`.
    pub fn list_invoices(&self, params: &Value) -> Reply {
        let customer = optional_param(params, "customer");
        let subscription = optional_param(params, "subscription");
        let status = optional_param(params, "status");
        let invoices = self
            .invoices
            .values()
            .filter(|i| customer.as_ref().is_none_or(|c| i.customer == *c))
            .filter(|i| {
                subscription.as_ref().is_none_or(|s| {
                    i.parent.subscription_details.as_ref().is_some_and(|d| d.subscription == *s)
                })
            })
            .filter(|i| status.as_ref().is_none_or(|s| i.status == *s))
            .cloned()
            .collect();
        list_page("/v1/invoices", invoices, params)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_fixtures::{plan, session, NOW};
    use super::*;

    #[test]
    fn invoices_bill_licensed_items_and_metered_usage_per_tier() {
        let mut s = Store::default();
        let (base, traces, _) = plan(&mut s);
        let cs = session(&mut s, &base, &traces);
        let done = s
            .complete_checkout_session(cs["id"].as_str().unwrap(), Some("a@acme.test"), NOW)
            .unwrap();
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
        let lines: Vec<(u64, &str, i64)> = inv["lines"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["quantity"].as_u64().unwrap(),
                    l["pricing"]["unit_amount_decimal"].as_str().unwrap(),
                    l["amount"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            [(1, "2500", 2500), (100, "0", 0), (900, "0.5", 450), (1003, "0.25", 251)]
        );
        for field in ["subtotal", "total", "amount_due", "amount_remaining"] {
            assert_eq!(inv[field], 3201, "{field}");
        }
        assert_eq!(
            (inv["status"].as_str(), inv["customer"].as_str(), inv["amount_paid"].as_i64()),
            (Some("open"), Some(customer.as_str()), Some(0))
        );
        assert_eq!(
            (inv["period_start"].as_i64(), inv["period_end"].as_i64()),
            (Some(start), Some(end))
        );
        assert_eq!(inv["parent"]["type"], "subscription_details");
        assert_eq!(
            inv["parent"]["subscription_details"],
            json!({"subscription": sub_id, "metadata": {"org_id": "acme", "tier": "starter"}})
        );
        assert!(inv.get("subscription").is_none());
        assert!(inv["number"].as_str().unwrap().ends_with("-0001"));
        let line = &inv["lines"]["data"][2];
        assert_eq!(line["pricing"]["price_details"]["price"], traces.as_str());
        assert_eq!(
            line["parent"]["subscription_item_details"]["subscription_item"],
            done["subscription"]["items"]["data"][1]["id"]
        );
        assert_eq!(line["description"], "Starter traces (Tier 2 at $0.005 / month)");
        assert_eq!(inv["lines"]["data"][0]["description"], "1 × Starter fee (at $25.00 / month)");
        let created = s.take_new_events();
        let kinds: Vec<&str> = created.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["invoice.created", "invoice.finalized"]);
        assert_eq!(created[0].data.object["status"], "draft");
        assert_eq!(created[1].data.object, inv);

        // No usage: the metered item shows as one empty line.
        let quiet = s.create_subscription_invoice(&sub_id, end, end + 3600, NOW + 120).unwrap();
        assert_eq!(quiet["total"], 2500);
        assert_eq!(quiet["lines"]["data"].as_array().unwrap().len(), 2);
        assert!(quiet["number"].as_str().unwrap().ends_with("-0002"));
        assert!(s.create_subscription_invoice(&sub_id, end, end, NOW).is_err());
        assert_eq!(
            s.create_subscription_invoice("sub_nope", start, end, NOW).unwrap_err().status,
            404
        );

        let id = inv["id"].as_str().unwrap();
        let paid = s.pay_invoice(id, NOW + 200).unwrap();
        assert_eq!(
            (
                paid["status"].as_str(),
                paid["amount_paid"].as_i64(),
                paid["amount_remaining"].as_i64()
            ),
            (Some("paid"), Some(3201), Some(0))
        );
        assert_eq!(paid["status_transitions"]["paid_at"], NOW + 200);
        let kinds: Vec<String> = s.take_new_events().iter().map(|e| e.kind.clone()).collect();
        assert_eq!(
            kinds,
            ["invoice.created", "invoice.finalized", "invoice.paid", "invoice.payment_succeeded"]
        );
        assert!(s.pay_invoice(id, NOW + 201).is_err());
        assert_eq!(s.invoice(id).unwrap(), paid);
        assert_eq!(
            s.list_invoices(&json!({"subscription": sub_id})).unwrap()["data"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            s.list_invoices(&json!({"customer": customer, "status": "paid"})).unwrap()["data"][0]
                ["id"],
            id
        );
        assert_eq!(
            s.list_invoices(&json!({"customer": "cus_other"})).unwrap()["data"]
                .as_array()
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn unit_amounts_in_cents_show_as_dollars() {
        assert_eq!(cents_to_dollars("2500"), "25.00");
        assert_eq!(cents_to_dollars("0.5"), "0.005");
        assert_eq!(cents_to_dollars("0.00000005"), "0.0000000005");
        assert_eq!(cents_to_dollars("0"), "0.00");
        assert_eq!(cents_to_dollars("12345"), "123.45");
    }
}
