//! Tally's price list as Stripe models it: per tier a product with a licensed monthly base price
//! and two metered prices, on the meters `tally_traces` and `tally_payload_bytes`, whose graduated
//! tiers reproduce the tier table (the included amount free). `billing-reporter setup-stripe`
//! creates them; the Stripe stand-in's invoices price meter totals with them. Pure data.

use tally_schemas::{Metric, Tier};

use crate::Pricing;

/// The event name of the meter of a metric (sum aggregation, customer by `stripe_customer_id`).
pub fn meter_event_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Traces => "tally_traces",
        Metric::PayloadBytes => "tally_payload_bytes",
    }
}

/// One graduated tier of a metered price: up to `up_to` units in total (`None`: no end), at
/// `unit_amount_decimal` cents each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraduatedTier {
    pub up_to: Option<u64>,
    pub unit_amount_decimal: String,
}

/// What a Stripe price charges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceKind {
    /// The monthly base fee, `unit_amount` cents, quantity 1.
    Licensed { unit_amount: i64 },
    /// Usage of a meter, graduated.
    Metered { metric: Metric, tiers: Vec<GraduatedTier> },
}

/// One Stripe price, found again by its lookup key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripePrice {
    pub lookup_key: String,
    pub nickname: String,
    pub kind: PriceKind,
}

/// One tier as a Stripe product and its three prices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripePlan {
    pub tier: Tier,
    /// The product's id, chosen by Tally so that setup is idempotent (`tally_<tier>`).
    pub product_id: String,
    pub product_name: String,
    pub prices: Vec<StripePrice>,
}

/// The lookup key of a price: versioned, so a new price list creates new prices beside the old.
pub fn lookup_key(pricing: &Pricing, tier: Tier, what: &str) -> String {
    format!("tally_{}_{}_{what}", pricing.version().replace('-', "_"), tier.as_str())
}

/// The Stripe products and prices that reproduce `pricing`.
pub fn plans(pricing: &Pricing) -> Vec<StripePlan> {
    pricing
        .tiers()
        .iter()
        .map(|t| {
            let mut prices = vec![StripePrice {
                lookup_key: lookup_key(pricing, t.tier, "base"),
                nickname: format!("{} monthly fee", t.name),
                kind: PriceKind::Licensed { unit_amount: t.base_fee_cents },
            }];
            for metric in Metric::ALL {
                let m = t.metric(metric);
                let mut tiers = Vec::new();
                if m.included > 0 {
                    tiers.push(GraduatedTier {
                        up_to: Some(m.included),
                        unit_amount_decimal: "0".into(),
                    });
                }
                tiers.extend(m.bands.iter().map(|b| GraduatedTier {
                    up_to: b.up_to,
                    unit_amount_decimal: b.rate.to_string(),
                }));
                prices.push(StripePrice {
                    lookup_key: lookup_key(pricing, t.tier, metric.as_str()),
                    nickname: format!("{} {}", t.name, metric.as_str()),
                    kind: PriceKind::Metered { metric, tiers },
                });
            }
            StripePlan {
                tier: t.tier,
                product_id: format!("tally_{}", t.tier.as_str()),
                product_name: format!("Tally {}", t.name),
                prices,
            }
        })
        .collect()
}

impl StripePrice {
    /// The form parameters of `POST /v1/prices` for this price (deep-object keys), given the
    /// product and, for a metered price, its meter's id.
    pub fn create_params(&self, product_id: &str, meter_id: Option<&str>) -> Vec<(String, String)> {
        let mut p = vec![
            ("currency".to_string(), "usd".to_string()),
            ("product".to_string(), product_id.to_string()),
            ("lookup_key".to_string(), self.lookup_key.clone()),
            ("nickname".to_string(), self.nickname.clone()),
            ("recurring[interval]".to_string(), "month".to_string()),
        ];
        match &self.kind {
            PriceKind::Licensed { unit_amount } => {
                p.push(("unit_amount".into(), unit_amount.to_string()));
                p.push(("recurring[usage_type]".into(), "licensed".into()));
            }
            PriceKind::Metered { tiers, .. } => {
                p.push(("recurring[usage_type]".into(), "metered".into()));
                p.push(("recurring[meter]".into(), meter_id.unwrap_or_default().to_string()));
                p.push(("billing_scheme".into(), "tiered".into()));
                p.push(("tiers_mode".into(), "graduated".into()));
                for (i, t) in tiers.iter().enumerate() {
                    p.push((
                        format!("tiers[{i}][up_to]"),
                        t.up_to.map_or("inf".into(), |u| u.to_string()),
                    ));
                    p.push((
                        format!("tiers[{i}][unit_amount_decimal]"),
                        t.unit_amount_decimal.clone(),
                    ));
                }
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enterprise_traces_are_four_graduated_tiers() {
        let plans = plans(&Pricing::builtin());
        assert_eq!(plans.len(), 4);
        let e = &plans[3];
        assert_eq!(e.product_id, "tally_enterprise");
        let PriceKind::Metered { tiers, .. } = &e.prices[1].kind else { panic!("metered") };
        let got: Vec<(Option<u64>, &str)> =
            tiers.iter().map(|t| (t.up_to, t.unit_amount_decimal.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(2_500_000), "0"),
                (Some(5_000_000), "0.12"),
                (Some(10_000_000), "0.1"),
                (None, "0.08")
            ]
        );
        assert_eq!(e.prices[1].lookup_key, "tally_2026_11_enterprise_traces");
        assert_eq!(e.prices[0].kind, PriceKind::Licensed { unit_amount: 300_000 });
    }
}
