//! Tally's prices: what each org pays, computed exactly and explained line by line.
//!
//! Where this sits: a pure library beside the metering core. The aggregator uses it to finalize
//! invoices and to detect threshold crossings, the api to show drafts, estimates and the price
//! list, and the replay tool to recompute invoices. One function, [`Pricing::price`], prices
//! usage for all of them, so a draft, an estimate and a final invoice of the same usage agree.
//!
//! - [`rate`]: exact rationals of cents per unit, rounded once, half up.
//! - [`PricingFile`]: the versioned file (`pricing/2026-11.toml` is built in) and its checks.
//! - [`Pricing`]: the checked price list: invoices, estimates, included amounts, thresholds.

pub mod rate;
pub mod stripe;

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tally_schemas::{
    BilledUsageV1, InvoiceStatusV1, InvoiceV1, LineItemV1, LineKind, Metric, ThresholdLevel, Tier,
};

pub use rate::Rate;

/// The pricing file built into every binary; `TALLY_PRICING_FILE` or `--pricing` override it.
pub const BUILTIN: &str = include_str!("../2026-11.toml");

/// The pricing file as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PricingFile {
    pub version: String,
    pub currency: String,
    pub tiers: Vec<TierFile>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TierFile {
    pub tier: Tier,
    pub name: String,
    /// Dollars per month, e.g. `"250.00"`.
    pub base_fee: String,
    pub features: Vec<String>,
    pub traces: MetricFile,
    pub payload_bytes: MetricFile,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricFile {
    pub included: u64,
    pub bands: Vec<BandFile>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BandFile {
    /// Cumulative usage where the band ends (inclusive); absent on the last band.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to: Option<u64>,
    /// Dollars per `per` units.
    pub price: String,
    pub per: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("reading pricing file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pricing file is not valid TOML for Tally's format: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("pricing file: {0}")]
    Invalid(String),
}

/// One graduated band of overage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Band {
    /// Cumulative usage where the band starts (exclusive) and ends (inclusive, `None`: no end).
    pub from: u64,
    pub up_to: Option<u64>,
    pub rate: Rate,
    /// As written in the file, for descriptions: dollars per `per` units.
    pub price: String,
    pub per: u64,
}

/// How one metric is priced in one tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricPrice {
    pub metric: Metric,
    pub included: u64,
    /// Overage bands in order; the first starts at `included`.
    pub bands: Vec<Band>,
}

/// One tier, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierPrice {
    pub tier: Tier,
    pub name: String,
    pub base_fee_cents: i64,
    pub base_fee: String,
    pub features: Vec<String>,
    pub traces: MetricPrice,
    pub payload_bytes: MetricPrice,
}

impl TierPrice {
    pub fn metric(&self, metric: Metric) -> &MetricPrice {
        match metric {
            Metric::Traces => &self.traces,
            Metric::PayloadBytes => &self.payload_bytes,
        }
    }

    pub fn included(&self) -> BilledUsageV1 {
        BilledUsageV1 { traces: self.traces.included, payload_bytes: self.payload_bytes.included }
    }
}

/// The checked price list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pricing {
    version: String,
    currency: String,
    /// Indexed by `Tier as usize`.
    tiers: Vec<TierPrice>,
}

/// An estimate for one tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Estimate {
    pub tier: Tier,
    pub lines: Vec<LineItemV1>,
    pub total_cents: i64,
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn metric_words(metric: Metric) -> &'static str {
    match metric {
        Metric::Traces => "Traces",
        Metric::PayloadBytes => "Payload bytes",
    }
}

impl Pricing {
    /// The built-in pricing file.
    pub fn builtin() -> Pricing {
        Pricing::parse(BUILTIN).expect("the built-in pricing file is valid (tested)")
    }

    /// The price list a deployment runs with: the file it names, or the built-in one when it
    /// names none (`TALLY_PRICING_FILE`, read by `tally_common::settings::PricingPath`).
    pub fn configured(file: Option<&Path>) -> Result<std::sync::Arc<Pricing>, PricingError> {
        Ok(std::sync::Arc::new(match file {
            None => Pricing::builtin(),
            Some(path) => Pricing::load(path)?,
        }))
    }

    /// Reads and checks a pricing file.
    pub fn load(path: &Path) -> Result<Pricing, PricingError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PricingError::Read { path: path.display().to_string(), source })?;
        Pricing::parse(&text)
    }

    /// Parses and checks a pricing file's text.
    pub fn parse(text: &str) -> Result<Pricing, PricingError> {
        let file: PricingFile = toml::from_str(text)?;
        Pricing::from_file(file)
    }

    pub fn from_file(file: PricingFile) -> Result<Pricing, PricingError> {
        let invalid = |m: String| PricingError::Invalid(m);
        if file.version.trim().is_empty() {
            return Err(invalid("`version` is empty".into()));
        }
        if file.currency != "usd" {
            return Err(invalid(format!(
                "currency {:?}: only \"usd\" is supported",
                file.currency
            )));
        }
        let mut tiers = Vec::new();
        for tier in Tier::ALL {
            let matching: Vec<&TierFile> = file.tiers.iter().filter(|t| t.tier == tier).collect();
            let [t] = matching.as_slice() else {
                return Err(invalid(format!(
                    "tier {tier} must appear exactly once, found {}",
                    matching.len()
                )));
            };
            let base = Rate::per_units(&t.base_fee, 1)
                .map_err(|e| invalid(format!("{tier}.base_fee: {e}")))?;
            let base_fee_cents = base.amount_cents(1);
            if base.exact_cents(1).1 != 1 {
                return Err(invalid(format!("{tier}.base_fee must be whole cents")));
            }
            let metric = |metric: Metric, m: &MetricFile| -> Result<MetricPrice, PricingError> {
                let at = format!("{tier}.{}", metric.as_str());
                if m.bands.is_empty() {
                    return Err(invalid(format!("{at}: at least one band is needed")));
                }
                let mut bands = Vec::new();
                let mut from = m.included;
                for (i, b) in m.bands.iter().enumerate() {
                    let last = i + 1 == m.bands.len();
                    match (b.up_to, last) {
                        (None, true) => {}
                        (Some(_), true) => {
                            return Err(invalid(format!("{at}: the last band has no `up_to`")))
                        }
                        (None, false) => {
                            return Err(invalid(format!("{at}: band {} needs `up_to`", i + 1)))
                        }
                        (Some(u), false) if u <= from => {
                            return Err(invalid(format!(
                                "{at}: band {} ends at {u}, not after {from}",
                                i + 1
                            )))
                        }
                        (Some(_), false) => {}
                    }
                    let rate = Rate::per_units(&b.price, b.per)
                        .map_err(|e| invalid(format!("{at}: {e}")))?;
                    bands.push(Band {
                        from,
                        up_to: b.up_to,
                        rate,
                        price: b.price.clone(),
                        per: b.per,
                    });
                    from = b.up_to.unwrap_or(from);
                }
                Ok(MetricPrice { metric, included: m.included, bands })
            };
            tiers.push(TierPrice {
                tier,
                name: t.name.clone(),
                base_fee_cents,
                base_fee: t.base_fee.clone(),
                features: t.features.clone(),
                traces: metric(Metric::Traces, &t.traces)?,
                payload_bytes: metric(Metric::PayloadBytes, &t.payload_bytes)?,
            });
        }
        if file.tiers.len() != Tier::ALL.len() {
            return Err(invalid("unknown or repeated tiers".into()));
        }
        // Any usage a u64 can hold must price below i64::MAX cents, lines and total.
        for t in &tiers {
            let mut most = t.base_fee_cents as u128;
            for m in [&t.traces, &t.payload_bytes] {
                for band in &m.bands {
                    let width = band.up_to.map_or(u64::MAX - band.from, |u| u - band.from);
                    most += band.rate.amount_cents_wide(width);
                }
            }
            if most > i64::MAX as u128 {
                return Err(invalid(format!(
                    "{}: prices this high could overflow an invoice at extreme usage; lower them",
                    t.tier
                )));
            }
        }
        Ok(Pricing { version: file.version, currency: file.currency, tiers })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    pub fn tier(&self, tier: Tier) -> &TierPrice {
        &self.tiers[tier as usize]
    }

    pub fn tiers(&self) -> &[TierPrice] {
        &self.tiers
    }

    /// The lines and total for `usage` on `tier`: the base fee; per metric the included usage
    /// as a zero-priced line; one overage line per band that has usage. Each line is rounded once
    /// to whole cents, half up; the total is the sum of the rounded lines.
    pub fn price(&self, tier: Tier, usage: BilledUsageV1) -> (Vec<LineItemV1>, i64) {
        let t = self.tier(tier);
        let mut lines = vec![LineItemV1 {
            kind: LineKind::Base,
            metric: None,
            quantity: 1,
            unit_amount_decimal: t.base_fee_cents.to_string(),
            amount_cents: t.base_fee_cents,
            description: format!("{} plan, monthly fee", t.name),
        }];
        for metric in Metric::ALL {
            let m = t.metric(metric);
            lines.push(LineItemV1 {
                kind: LineKind::Included,
                metric: Some(metric),
                quantity: usage.get(metric).min(m.included),
                unit_amount_decimal: "0".into(),
                amount_cents: 0,
                description: format!(
                    "{} included in the plan ({})",
                    metric_words(metric),
                    group_thousands(m.included)
                ),
            });
        }
        for metric in Metric::ALL {
            let used = usage.get(metric);
            for band in &self.tier(tier).metric(metric).bands {
                if used <= band.from {
                    break;
                }
                let quantity = used.min(band.up_to.unwrap_or(u64::MAX)) - band.from;
                let span = match band.up_to {
                    Some(up_to) => {
                        format!("{}–{}", group_thousands(band.from + 1), group_thousands(up_to))
                    }
                    None => format!("beyond {}", group_thousands(band.from)),
                };
                lines.push(LineItemV1 {
                    kind: LineKind::Overage,
                    metric: Some(metric),
                    quantity,
                    unit_amount_decimal: band.rate.to_string(),
                    amount_cents: band.rate.amount_cents(quantity),
                    description: format!(
                        "{} {span} at ${} per {}",
                        metric_words(metric),
                        band.price,
                        group_thousands(band.per)
                    ),
                });
            }
        }
        let total = lines.iter().map(|l| l.amount_cents).sum();
        (lines, total)
    }

    /// An invoice of `usage` on `tier`: a draft while `finalized_at` is `None`.
    pub fn invoice(
        &self,
        org_id: &str,
        period: &str,
        tier: Tier,
        usage: BilledUsageV1,
        finalized_at: Option<DateTime<Utc>>,
    ) -> InvoiceV1 {
        let (lines, total_cents) = self.price(tier, usage);
        InvoiceV1 {
            org_id: org_id.to_string(),
            period: period.to_string(),
            tier,
            pricing_version: self.version.clone(),
            currency: self.currency.clone(),
            status: if finalized_at.is_some() {
                InvoiceStatusV1::Final
            } else {
                InvoiceStatusV1::Draft
            },
            usage,
            lines,
            total_cents,
            finalized_at,
        }
    }

    /// What `usage` would cost on every tier, in tier order, and the cheapest (the lower tier on a
    /// tie).
    pub fn estimate(&self, usage: BilledUsageV1) -> (Vec<Estimate>, Tier) {
        let estimates: Vec<Estimate> = Tier::ALL
            .into_iter()
            .map(|tier| {
                let (lines, total_cents) = self.price(tier, usage);
                Estimate { tier, lines, total_cents }
            })
            .collect();
        let cheapest =
            estimates.iter().min_by_key(|e| (e.total_cents, e.tier)).expect("four tiers").tier;
        (estimates, cheapest)
    }
}

/// The warning level of `used` against `included`: approaching at ≥ 90% and < 100%, exceeded
/// at ≥ 100%. With nothing included, any use exceeds it.
pub fn threshold_level(used: u64, included: u64) -> Option<ThresholdLevel> {
    let (used, included) = (used as u128, included as u128);
    if included == 0 {
        return (used > 0).then_some(ThresholdLevel::Exceeded);
    }
    if used >= included {
        Some(ThresholdLevel::Exceeded)
    } else if used * 10 >= included * 9 {
        Some(ThresholdLevel::Approaching)
    } else {
        None
    }
}

/// The levels reached by `used`, lowest first: crossing both in one step reports both.
pub fn levels_reached(used: u64, included: u64) -> &'static [ThresholdLevel] {
    match threshold_level(used, included) {
        None => &[],
        Some(ThresholdLevel::Approaching) => &[ThresholdLevel::Approaching],
        Some(ThresholdLevel::Exceeded) if included == 0 => &[ThresholdLevel::Exceeded],
        Some(ThresholdLevel::Exceeded) => &[ThresholdLevel::Approaching, ThresholdLevel::Exceeded],
    }
}

/// `used / included` in percent, rounded down to hundredths, as basis points (`9550` is 95.50%);
/// `None` when nothing is included.
pub fn percent_used_basis_points(used: u64, included: u64) -> Option<u64> {
    (included > 0).then(|| {
        let bp = used as u128 * 10_000 / included as u128;
        u64::try_from(bp).unwrap_or(u64::MAX)
    })
}

/// Cents as dollars for people: `123456` → `"$1234.56"`, `-150` → `"-$1.50"`. The one place
/// Tally's Rust code writes an amount for reading (the page formats its own, from the same
/// integer cents).
pub fn dollars(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}${}.{:02}", abs / 100, abs % 100)
}

/// Basis points as a decimal string with two places: `9550` → `"95.50"`.
pub fn basis_points_decimal(bp: u64) -> String {
    format!("{}.{:02}", bp / 100, bp % 100)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dollars_are_exact_and_signed() {
        assert_eq!(super::dollars(0), "$0.00");
        assert_eq!(super::dollars(5), "$0.05");
        assert_eq!(super::dollars(123_456), "$1234.56");
        assert_eq!(super::dollars(-150), "-$1.50");
        assert_eq!(super::dollars(i64::MIN), "-$92233720368547758.08");
    }

    use super::*;

    #[test]
    fn builtin_file_is_valid_and_matches_the_tier_table() {
        let p = Pricing::builtin();
        assert_eq!(p.version(), "2026-11");
        let fees: Vec<i64> = p.tiers().iter().map(|t| t.base_fee_cents).collect();
        assert_eq!(fees, [25_000, 50_000, 100_000, 300_000]);
        let included: Vec<(u64, u64)> =
            p.tiers().iter().map(|t| (t.traces.included, t.payload_bytes.included)).collect();
        assert_eq!(
            included,
            [
                (100_000, 10_000_000_000),
                (250_000, 25_000_000_000),
                (600_000, 60_000_000_000),
                (2_500_000, 250_000_000_000)
            ]
        );
        let e = &p.tier(Tier::Enterprise).traces.bands;
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].from, e[0].up_to), (2_500_000, Some(5_000_000)));
        assert_eq!((e[1].from, e[1].up_to), (5_000_000, Some(10_000_000)));
        assert_eq!((e[2].from, e[2].up_to), (10_000_000, None));
        assert!(p.tier(Tier::Enterprise).features.contains(&"scim".to_string()));
        assert_eq!(p.tier(Tier::Growth).features, ["usage_dashboard", "api_access", "rbac"]);
    }

    #[test]
    fn invalid_files_are_refused_with_a_reason() {
        let swap = |from: &str, to: &str| BUILTIN.replacen(from, to, 1);
        let cases = [
            (swap("currency = \"usd\"", "currency = \"eur\""), "only \"usd\""),
            (swap("tier = \"growth\"", "tier = \"starter\""), "exactly once"),
            (swap("base_fee = \"250.00\"", "base_fee = \"250.001\""), "whole cents"),
            (swap("{ up_to = 10_000_000,", "{ up_to = 4_000_000,"), "not after"),
            (
                swap(
                    "{ price = \"0.80\", per = 1_000 }",
                    "{ up_to = 20_000_000, price = \"0.80\", per = 1_000 }",
                ),
                "last band",
            ),
            (swap("per = 1_000 }]", "per = 7 }]"), "whole number of cents"),
            (
                swap("version = \"2026-11\"", "version = \"2026-11\"\ncolour = \"blue\""),
                "unknown field",
            ),
            (swap("price = \"2.00\", per = 1_000", "price = \"5.00\", per = 1_000"), "overflow"),
        ];
        for (text, expected) in cases {
            let err = Pricing::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
    }

    #[test]
    fn thresholds() {
        assert_eq!(threshold_level(89_999, 100_000), None);
        assert_eq!(threshold_level(90_000, 100_000), Some(ThresholdLevel::Approaching));
        assert_eq!(threshold_level(99_999, 100_000), Some(ThresholdLevel::Approaching));
        assert_eq!(threshold_level(100_000, 100_000), Some(ThresholdLevel::Exceeded));
        assert_eq!(threshold_level(0, 0), None);
        assert_eq!(threshold_level(1, 0), Some(ThresholdLevel::Exceeded));
        assert_eq!(
            levels_reached(150_000, 100_000),
            [ThresholdLevel::Approaching, ThresholdLevel::Exceeded]
        );
        assert_eq!(percent_used_basis_points(95_505, 100_000), Some(9_550));
        assert_eq!(basis_points_decimal(9_550), "95.50");
        assert_eq!(basis_points_decimal(5), "0.05");
        assert_eq!(percent_used_basis_points(u64::MAX, 1), Some(u64::MAX));
    }
}
