//! Prices, invoices and subscriptions.
//!
//! Drafts are priced here, on read, from the projected usage and tier, with the same
//! `Pricing::price` the aggregator finalizes with and the estimator uses: a draft, an estimate
//! and a final invoice of the same usage are the same lines. Final invoices are read as stored.
//! A subscription change is not written to PostgreSQL: it is recorded in the billing log
//! ([`crate::billing_log`]), and the aggregator prices periods from there.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tally_metering::Period;
use tally_pricing::{percent_used_basis_points, threshold_level, Estimate, Pricing};
use tally_schemas::{
    BilledUsageV1, InvoiceStatusV1, InvoiceV1, LineItemV1, Metric, SubscriptionChangedV1,
    SubscriptionSource, ThresholdLevel, Tier,
};

use tally_store::invoices::{billed_invoices, billed_usage, CorrectionRef};

use crate::auth::{require_org, Caller};
use crate::billing_log::record_subscription_change;
use crate::error::{parse_json, parse_period, parse_tier, ApiError};
use crate::AppState;
use tally_store::usage::UsageRow;

/// The most invoices `GET /v1/orgs/{org_id}/invoices` lists (newest first): eight years.
const MAX_INVOICES: i64 = 96;

/// What the read models say about one (org, period).
pub struct PeriodBilling {
    pub tier: Tier,
    pub usage: BilledUsageV1,
    /// The pipeline has a row for it.
    pub known: bool,
    pub final_invoice: Option<InvoiceV1>,
    /// The correction the final invoice comes from, when `replay correct` replaced the stored one.
    pub correction: Option<CorrectionRef>,
}

/// One (org, period) as the read models hold it.
pub struct PeriodRead {
    pub row: Option<UsageRow>,
    /// (operation, traces, payload bytes), for the operations with usage.
    pub by_operation: Vec<(String, i64, i64)>,
    pub billing: PeriodBilling,
    /// The pipeline's verdict when it has a row; otherwise the period's close time says.
    pub closed: bool,
}

/// Reads (org, period): its usage row, its usage by operation and, when it has no row, the tier
/// its latest earlier period ended on (tiers carry over; else starter). The final invoice is
/// read only for a period that has closed (it has none before).
pub async fn read_period(
    state: &AppState,
    org_id: &str,
    period: Period,
) -> Result<PeriodRead, ApiError> {
    let id = period.to_string();
    let mut db = state.db.org(org_id).await?;
    let stored = tally_store::usage::read_period(&mut db, org_id, &id).await?;
    let row = stored.row;
    let closed = match &row {
        Some(row) => row.state == "closed",
        None => Utc::now() >= period.closes_at(state.settings.common.grace),
    };
    let billed = if closed {
        billed_invoices(&mut db, Some(org_id), Some(&id)).await?.into_values().next()
    } else {
        None
    };
    let correction = billed.as_ref().and_then(|b| b.correction.clone());
    let final_invoice = billed.map(|b| b.invoice());
    let billing = match &row {
        Some(row) => PeriodBilling {
            tier: row.tier.parse().unwrap_or_default(),
            usage: billed_usage(row.traces, row.payload_bytes),
            known: true,
            final_invoice,
            correction,
        },
        None => PeriodBilling {
            tier: stored.earlier_tier.and_then(|t| t.parse().ok()).unwrap_or_default(),
            usage: BilledUsageV1::default(),
            known: false,
            final_invoice,
            correction,
        },
    };
    Ok(PeriodRead { row, by_operation: stored.by_operation, billing, closed })
}

/// The tier, usage and final invoice of (org, period) ([`read_period`]).
pub async fn period_billing(
    state: &AppState,
    org_id: &str,
    period: Period,
) -> Result<PeriodBilling, ApiError> {
    Ok(read_period(state, org_id, period).await?.billing)
}

/// The invoice of a period: the stored final one, or a draft priced now.
pub fn invoice_of(
    pricing: &Pricing,
    org_id: &str,
    period: Period,
    billing: &PeriodBilling,
) -> InvoiceV1 {
    billing.final_invoice.clone().unwrap_or_else(|| {
        pricing.invoice(org_id, &period.to_string(), billing.tier, billing.usage, None)
    })
}

/// A share of an included amount in percent (two decimals), for display; `null` when nothing is
/// included.
fn percent(basis_points: Option<u64>) -> Option<f64> {
    basis_points.map(|bp| bp as f64 / 100.0)
}

/// The billing fields of `GET /v1/orgs/{org_id}/usage` (and of each org of `GET /v1/orgs`).
#[derive(Serialize)]
pub struct UsageBilling {
    pub tier: Tier,
    /// What the tier includes.
    pub included: BilledUsageV1,
    pub percent_used: PercentUsed,
    /// The draft or final invoice.
    pub cost: Cost,
    pub warnings: Vec<UsageWarning>,
}

/// How much of each included amount is used, in percent (`null`: nothing included).
#[derive(Serialize)]
pub struct PercentUsed {
    pub traces: Option<f64>,
    pub payload_bytes: Option<f64>,
}

/// A period's invoice in brief.
#[derive(Serialize)]
pub struct Cost {
    pub currency: String,
    pub status: InvoiceStatusV1,
    pub pricing_version: String,
    pub lines: Vec<LineItemV1>,
    pub total_cents: i64,
}

/// A metric past a threshold of its included amount.
#[derive(Serialize)]
pub struct UsageWarning {
    pub metric: Metric,
    pub level: ThresholdLevel,
    pub percent_used: Option<f64>,
}

/// The tier, included amounts, percentages, cost (draft or final invoice) and warnings of a
/// period.
pub fn usage_billing(
    pricing: &Pricing,
    org_id: &str,
    period: Period,
    billing: &PeriodBilling,
) -> UsageBilling {
    let included = pricing.tier(billing.tier).included();
    let invoice = invoice_of(pricing, org_id, period, billing);
    let warnings = Metric::ALL
        .iter()
        .filter_map(|&metric| {
            let (used, inc) = (billing.usage.get(metric), included.get(metric));
            threshold_level(used, inc).map(|level| UsageWarning {
                metric,
                level,
                percent_used: percent(percent_used_basis_points(used, inc)),
            })
        })
        .collect();
    let usage = billing.usage;
    UsageBilling {
        tier: billing.tier,
        included,
        percent_used: PercentUsed {
            traces: percent(percent_used_basis_points(usage.traces, included.traces)),
            payload_bytes: percent(percent_used_basis_points(
                usage.payload_bytes,
                included.payload_bytes,
            )),
        },
        cost: Cost {
            currency: invoice.currency,
            status: invoice.status,
            pricing_version: invoice.pricing_version,
            lines: invoice.lines,
            total_cents: invoice.total_cents,
        },
        warnings,
    }
}

/// An invoice as the api shows it: Tally's invoice in effect; `"correction"`, when it comes from
/// a correction (`{"correction_id", "corrected_at", "reason", "replaces_total_cents"}`, else
/// `null`); and, once Stripe has sent its invoice for the period, `"stripe"` (else `null`).
#[derive(Serialize)]
pub struct ShownInvoice {
    #[serde(flatten)]
    pub invoice: InvoiceV1,
    pub correction: Option<CorrectionRef>,
    pub stripe: Option<StripeInvoice>,
}

/// Stripe's invoice of a period, as Stripe's webhooks last told it.
#[derive(Serialize)]
pub struct StripeInvoice {
    pub invoice_id: String,
    pub status: String,
    pub total_cents: i64,
    pub currency: String,
}

/// Stripe's invoices of an org (of one period, or all), by period.
async fn stripe_invoices(
    state: &AppState,
    org_id: &str,
    period: Option<Period>,
) -> Result<HashMap<String, StripeInvoice>, ApiError> {
    let period = period.map(|p| p.to_string());
    let mut db = state.db.org(org_id).await?;
    let rows = tally_store::stripe::invoices(&mut db, org_id, period.as_deref()).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let invoice = StripeInvoice {
                invoice_id: r.invoice_id,
                status: r.status,
                total_cents: r.total_cents,
                currency: r.currency,
            };
            (r.period, invoice)
        })
        .collect())
}

#[derive(Serialize)]
pub struct InvoiceList {
    org_id: String,
    invoices: Vec<ShownInvoice>,
}

/// `GET /v1/orgs/{org_id}/invoices`: every period the pipeline knows for the org, newest first;
/// final invoices as stored, drafts priced now.
pub async fn list_invoices(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    caller: Caller,
) -> Result<Json<InvoiceList>, ApiError> {
    caller.require_reader(&state, &org_id).await?;
    let mut db = state.db.org(&org_id).await?;
    let finals = billed_invoices(&mut db, Some(&org_id), None).await?;
    let drafts = tally_store::invoices::draft_periods(&mut db, &org_id, MAX_INVOICES).await?;
    drop(db);
    let mut invoices: Vec<(InvoiceV1, Option<CorrectionRef>)> =
        finals.into_values().map(|b| (b.invoice(), b.correction)).collect();
    for draft in drafts {
        let usage = billed_usage(draft.traces, draft.payload_bytes);
        let tier = draft.tier.parse().unwrap_or_default();
        invoices.push((state.pricing.invoice(&org_id, &draft.period, tier, usage, None), None));
    }
    invoices.sort_by(|a, b| b.0.period.cmp(&a.0.period));
    invoices.truncate(MAX_INVOICES as usize);
    let mut stripe = stripe_invoices(&state, &org_id, None).await?;
    let invoices = invoices
        .into_iter()
        .map(|(invoice, correction)| {
            let stripe = stripe.remove(&invoice.period);
            ShownInvoice { invoice, correction, stripe }
        })
        .collect();
    Ok(Json(InvoiceList { org_id, invoices }))
}

/// `GET /v1/orgs/{org_id}/invoices/{YYYY-MM}`: the final invoice once issued, else the draft.
/// A past period the pipeline never saw the org in has no invoice (404).
pub async fn get_invoice(
    State(state): State<Arc<AppState>>,
    Path((org_id, period)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<ShownInvoice>, ApiError> {
    caller.require_reader(&state, &org_id).await?;
    let period = parse_period(&period)?;
    let billing = period_billing(&state, &org_id, period).await?;
    if billing.final_invoice.is_none() && !billing.known && period != Period::containing(Utc::now())
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invoice_not_found",
            format!("org {org_id:?} has no invoice for {period}"),
        ));
    }
    let stripe = stripe_invoices(&state, &org_id, Some(period)).await?.remove(&period.to_string());
    Ok(Json(ShownInvoice {
        invoice: invoice_of(&state.pricing, &org_id, period, &billing),
        correction: billing.correction,
        stripe,
    }))
}

/// The price list as `GET /v1/pricing` shows it.
#[derive(Serialize)]
struct PriceList<'a> {
    version: &'a str,
    currency: &'a str,
    tiers: Vec<TierPriceShown<'a>>,
}

#[derive(Serialize)]
struct TierPriceShown<'a> {
    tier: Tier,
    name: &'a str,
    base_fee_cents: i64,
    features: &'a [String],
    traces: MetricPriceShown<'a>,
    payload_bytes: MetricPriceShown<'a>,
}

#[derive(Serialize)]
struct MetricPriceShown<'a> {
    included: u64,
    bands: Vec<BandShown<'a>>,
}

#[derive(Serialize)]
struct BandShown<'a> {
    from: u64,
    up_to: Option<u64>,
    /// Cents per unit, as an exact decimal string.
    unit_amount_decimal: String,
    price: &'a str,
    per: u64,
}

impl<'a> MetricPriceShown<'a> {
    fn of(metric: &'a tally_pricing::MetricPrice) -> Self {
        let bands = metric
            .bands
            .iter()
            .map(|b| BandShown {
                from: b.from,
                up_to: b.up_to,
                unit_amount_decimal: b.rate.to_string(),
                price: &b.price,
                per: b.per,
            })
            .collect();
        MetricPriceShown { included: metric.included, bands }
    }
}

/// `GET /v1/pricing`: the price list, from the pricing file. Public.
pub async fn get_pricing(State(state): State<Arc<AppState>>) -> Response {
    let p = &state.pricing;
    let tiers = p
        .tiers()
        .iter()
        .map(|t| TierPriceShown {
            tier: t.tier,
            name: &t.name,
            base_fee_cents: t.base_fee_cents,
            features: &t.features,
            traces: MetricPriceShown::of(&t.traces),
            payload_bytes: MetricPriceShown::of(&t.payload_bytes),
        })
        .collect();
    Json(PriceList { version: p.version(), currency: p.currency(), tiers }).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EstimateRequest {
    traces: u64,
    payload_bytes: u64,
}

#[derive(Serialize)]
pub struct EstimateAnswer {
    currency: String,
    pricing_version: String,
    estimates: Vec<Estimate>,
    cheapest: Tier,
}

/// `POST /v1/pricing/estimate` `{"traces", "payload_bytes"}`: what that usage costs on every
/// tier, and the cheapest. Public; the same pricing as invoices.
pub async fn estimate(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<EstimateAnswer>, ApiError> {
    let request: EstimateRequest = parse_json(&body)?;
    let usage = BilledUsageV1 { traces: request.traces, payload_bytes: request.payload_bytes };
    let (estimates, cheapest) = state.pricing.estimate(usage);
    Ok(Json(EstimateAnswer {
        currency: state.pricing.currency().to_string(),
        pricing_version: state.pricing.version().to_string(),
        estimates,
        cheapest,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionRequest {
    tier: String,
}

#[derive(Serialize)]
struct SubscriptionChangeRecorded {
    org_id: String,
    tier: Tier,
    source: SubscriptionSource,
    change_id: String,
    recorded_at: DateTime<Utc>,
}

/// `PUT /v1/orgs/{org_id}/subscription` `{"tier"}` (admin): records a `SubscriptionChanged` in
/// `tally.billing-events.v1` and answers 202 once Kafka has it. Its effect on usage and drafts
/// follows through the pipeline.
pub async fn put_subscription(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    let request: SubscriptionRequest = parse_json(&body)?;
    let tier = parse_tier(&request.tier)?;
    require_org(&state, &org_id).await?;
    let mut id = [0u8; 12];
    rand::rng().fill_bytes(&mut id);
    let change = SubscriptionChangedV1 {
        change_id: format!("sub_{}", hex::encode(id)),
        org_id: org_id.clone(),
        tier,
        source: SubscriptionSource::AdminApi,
        requested_at: Utc::now(),
        stripe_event_id: None,
    };
    let recorded_at = record_subscription_change(&state.billing_producer, &change).await?;
    tracing::info!(org_id = %org_id, tier = %tier, change_id = %change.change_id, "subscription change recorded");
    let recorded = SubscriptionChangeRecorded {
        org_id,
        tier,
        source: change.source,
        change_id: change.change_id,
        recorded_at,
    };
    Ok((StatusCode::ACCEPTED, Json(recorded)))
}

/// An org's link to Stripe as `GET .../subscription` shows it.
#[derive(Serialize)]
struct StripeLinkShown {
    customer_id: String,
    subscription_id: Option<String>,
    status: Option<String>,
}

#[derive(Serialize)]
pub struct SubscriptionAnswer {
    org_id: String,
    tier: Tier,
    period: String,
    features: Vec<String>,
    stripe: Option<StripeLinkShown>,
}

/// `GET /v1/orgs/{org_id}/subscription`: the tier pricing the current period, and the org's
/// Stripe link (`{"customer_id", "subscription_id", "status"}`, else `null`).
pub async fn get_subscription(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    caller: Caller,
) -> Result<Json<SubscriptionAnswer>, ApiError> {
    caller.require_reader(&state, &org_id).await?;
    let period = Period::containing(Utc::now());
    let billing = period_billing(&state, &org_id, period).await?;
    let features = state.pricing.tier(billing.tier).features.clone();
    let link =
        tally_store::stripe::customer_link(&mut *state.db.org(&org_id).await?, &org_id).await?;
    let stripe = link.map(|l| StripeLinkShown {
        customer_id: l.customer_id,
        subscription_id: l.subscription_id,
        status: l.subscription_status,
    });
    Ok(Json(SubscriptionAnswer {
        org_id,
        tier: billing.tier,
        period: period.to_string(),
        features,
        stripe,
    }))
}
