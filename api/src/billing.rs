//! Prices, invoices and subscriptions.
//!
//! Drafts are priced here, on read, from the projected usage and tier, with the same
//! `Pricing::price` the aggregator finalizes with and the estimator uses: a draft, an estimate
//! and a final invoice of the same usage are the same lines. Final invoices are read as stored.
//! A subscription change is not written to PostgreSQL: it is recorded in the billing log, and the
//! aggregator prices periods from there.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use rand::RngCore;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tally_common::kafka::Renewable;
use serde::Deserialize;
use serde_json::{json, Value};
use tally_metering::Period;
use tally_pricing::{percent_used_basis_points, threshold_level, Pricing};
use tally_schemas::{
    BilledUsageV1, BillingEventRecordV1, InvoiceV1, Metric,
    SubscriptionChangedV1, SubscriptionSource, Tier, Topic,
};

use tally_common::invoices::{billed_invoices, CorrectionRef};

use crate::auth::{require_org, Caller};
use crate::error::{parse_json, ApiError};
use crate::AppState;

/// The most invoices `GET /v1/orgs/{org_id}/invoices` lists (newest first): eight years.
const MAX_INVOICES: i64 = 96;

/// The producer of subscription changes: idempotent, `acks=all`, and keyed by org with the same
/// murmur2 partitioner as ingest, so an org's billing records share its trace records' partition.
/// Replaced as a whole after a fatal error.
pub fn billing_producer(brokers: &str) -> anyhow::Result<Renewable<FutureProducer>> {
    let brokers = brokers.to_string();
    Ok(Renewable::new(move || {
        tally_common::kafka::base_config(&brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", "10000")
            .create()
    })?)
}

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

fn positive(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The row of `usage_periods` for (org, period), with its usage by operation.
#[derive(sqlx::FromRow)]
pub struct UsageRow {
    pub state: String,
    pub tier: String,
    pub traces: i64,
    pub payload_bytes: i64,
    pub not_billed_child_span: i64,
    pub not_billed_not_success: i64,
    pub not_billed_duplicate: i64,
    pub not_billed_late: i64,
    pub updated_at: DateTime<Utc>,
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

/// The columns of [`read_period`]'s statement: a [`UsageRow`] when `state` is there.
#[derive(sqlx::FromRow)]
struct PeriodSql {
    state: Option<String>,
    tier: Option<String>,
    traces: Option<i64>,
    payload_bytes: Option<i64>,
    not_billed_child_span: Option<i64>,
    not_billed_not_success: Option<i64>,
    not_billed_duplicate: Option<i64>,
    not_billed_late: Option<i64>,
    updated_at: Option<DateTime<Utc>>,
    earlier_tier: Option<String>,
    by_operation: sqlx::types::Json<Vec<(String, i64, i64)>>,
}

impl PeriodSql {
    fn row(&self) -> Option<UsageRow> {
        Some(UsageRow {
            state: self.state.clone()?,
            tier: self.tier.clone()?,
            traces: self.traces?,
            payload_bytes: self.payload_bytes?,
            not_billed_child_span: self.not_billed_child_span?,
            not_billed_not_success: self.not_billed_not_success?,
            not_billed_duplicate: self.not_billed_duplicate?,
            not_billed_late: self.not_billed_late?,
            updated_at: self.updated_at?,
        })
    }
}

/// Reads (org, period) in one statement: its usage row, its usage by operation and, when it has
/// no row, the tier its latest earlier period ended on (tiers carry over; else starter). The final
/// invoice is read only for a period that has closed (it has none before).
pub async fn read_period(state: &AppState, org_id: &str, period: Period) -> Result<PeriodRead, ApiError> {
    let id = period.to_string();
    let read: PeriodSql = sqlx::query_as(
        "SELECT u.state, u.tier, u.traces, u.payload_bytes, u.not_billed_child_span, u.not_billed_not_success,
                u.not_billed_duplicate, u.not_billed_late, u.updated_at,
                CASE WHEN u.org_id IS NULL THEN
                    (SELECT e.tier FROM usage_periods e WHERE e.org_id = $1 AND e.period < $2 ORDER BY e.period DESC LIMIT 1)
                END AS earlier_tier,
                coalesce((SELECT json_agg(json_build_array(o.operation, o.traces, o.payload_bytes))
                          FROM usage_by_operation o WHERE o.org_id = $1 AND o.period = $2), '[]'::json) AS by_operation
         FROM (SELECT 1) AS one LEFT JOIN usage_periods u ON u.org_id = $1 AND u.period = $2",
    )
    .bind(org_id)
    .bind(&id)
    .fetch_one(&state.pool)
    .await?;
    let row = read.row();
    let closed = match &row {
        Some(row) => row.state == "closed",
        None => Utc::now() >= period.closes_at(state.settings.grace),
    };
    let billed = if closed { billed_invoices(&state.pool, Some(org_id), Some(&id)).await?.into_values().next() } else { None };
    let correction = billed.as_ref().and_then(|b| b.correction.clone());
    let final_invoice = billed.map(|b| b.invoice());
    let billing = match &row {
        Some(row) => PeriodBilling {
            tier: row.tier.parse().unwrap_or_default(),
            usage: BilledUsageV1 { traces: positive(row.traces), payload_bytes: positive(row.payload_bytes) },
            known: true,
            final_invoice,
            correction,
        },
        None => PeriodBilling {
            tier: read.earlier_tier.and_then(|t| t.parse().ok()).unwrap_or_default(),
            usage: BilledUsageV1::default(),
            known: false,
            final_invoice,
            correction,
        },
    };
    Ok(PeriodRead { row, by_operation: read.by_operation.0, billing, closed })
}

/// The tier, usage and final invoice of (org, period) ([`read_period`]).
pub async fn period_billing(state: &AppState, org_id: &str, period: Period) -> Result<PeriodBilling, ApiError> {
    Ok(read_period(state, org_id, period).await?.billing)
}

/// The invoice of a period: the stored final one, or a draft priced now.
pub fn invoice_of(pricing: &Pricing, org_id: &str, period: Period, billing: &PeriodBilling) -> InvoiceV1 {
    billing
        .final_invoice
        .clone()
        .unwrap_or_else(|| pricing.invoice(org_id, &period.to_string(), billing.tier, billing.usage, None))
}

fn percent(bp: Option<u64>) -> Value {
    bp.and_then(|bp| serde_json::Number::from_f64(bp as f64 / 100.0)).map_or(Value::Null, Value::Number)
}

/// The billing fields of `GET /v1/orgs/{org_id}/usage`: tier, included amounts, percentages,
/// the cost (draft or final invoice) and warnings.
pub fn usage_billing_fields(pricing: &Pricing, org_id: &str, period: Period, billing: &PeriodBilling) -> Value {
    let tier = pricing.tier(billing.tier);
    let included = tier.included();
    let invoice = invoice_of(pricing, org_id, period, billing);
    let warnings: Vec<Value> = Metric::ALL
        .iter()
        .filter_map(|&m| {
            let (used, inc) = (billing.usage.get(m), included.get(m));
            threshold_level(used, inc).map(|level| {
                json!({"metric": m, "level": level, "percent_used": percent(percent_used_basis_points(used, inc))})
            })
        })
        .collect();
    json!({
        "tier": billing.tier,
        "included": {"traces": included.traces, "payload_bytes": included.payload_bytes},
        "percent_used": {
            "traces": percent(percent_used_basis_points(billing.usage.traces, included.traces)),
            "payload_bytes": percent(percent_used_basis_points(billing.usage.payload_bytes, included.payload_bytes)),
        },
        "cost": {
            "currency": invoice.currency,
            "status": invoice.status,
            "pricing_version": invoice.pricing_version,
            "lines": invoice.lines,
            "total_cents": invoice.total_cents,
        },
        "warnings": warnings,
    })
}

/// `GET /v1/orgs/{org_id}/invoices`: every period the pipeline knows for the org, newest first;
/// final invoices as stored, drafts priced now.
pub async fn list_invoices(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_reader(&state, &org_id).await?;
    let finals = billed_invoices(&state.pool, Some(&org_id), None).await?;
    // Drafts: the periods without a final invoice that will get one, i.e. the open ones and the
    // closed ones with billed usage (finalized within seconds of the close). A closed period with
    // nothing billed (only late events, say) and no final invoice has none and never will.
    let periods: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT period, tier, traces, payload_bytes FROM usage_periods u WHERE org_id = $1
           AND (state = 'open' OR traces > 0 OR payload_bytes > 0)
           AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.org_id = u.org_id AND i.period = u.period)
         ORDER BY period DESC LIMIT $2",
    )
    .bind(&org_id)
    .bind(MAX_INVOICES)
    .fetch_all(&state.pool)
    .await?;
    let mut invoices: Vec<(InvoiceV1, Option<CorrectionRef>)> =
        finals.into_values().map(|b| (b.invoice(), b.correction)).collect();
    for (period, tier, traces, payload_bytes) in periods {
        let usage = BilledUsageV1 { traces: positive(traces), payload_bytes: positive(payload_bytes) };
        invoices.push((state.pricing.invoice(&org_id, &period, tier.parse().unwrap_or_default(), usage, None), None));
    }
    invoices.sort_by(|a, b| b.0.period.cmp(&a.0.period));
    invoices.truncate(MAX_INVOICES as usize);
    let mut stripe = crate::stripe::stripe_invoices(&state, &org_id, None).await?;
    let invoices: Vec<Value> = invoices.into_iter().map(|(i, c)| shown(i, c, &mut stripe)).collect();
    Ok(Json(json!({"org_id": org_id, "invoices": invoices})))
}

/// An invoice as the api shows it: Tally's invoice in effect; `"correction"`, when it comes from
/// a correction (`{"correction_id", "corrected_at", "reason", "replaces_total_cents"}`, else
/// `null`); and, once Stripe has sent its invoice for the period,
/// `"stripe": {"invoice_id", "status", "total_cents", "currency"}` (else `null`).
fn shown(
    invoice: InvoiceV1,
    correction: Option<CorrectionRef>,
    stripe: &mut std::collections::HashMap<String, Value>,
) -> Value {
    let linked = stripe.remove(&invoice.period).unwrap_or(Value::Null);
    let mut value = serde_json::to_value(invoice).expect("invoices serialise");
    value["correction"] = serde_json::to_value(correction).expect("corrections serialise");
    value["stripe"] = linked;
    value
}

/// `GET /v1/orgs/{org_id}/invoices/{YYYY-MM}`: the final invoice once issued, else the draft.
/// A past period the pipeline never saw the org in has no invoice (404).
pub async fn get_invoice(
    State(state): State<Arc<AppState>>,
    Path((org_id, period)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_reader(&state, &org_id).await?;
    let period: Period = period
        .parse()
        .map_err(|e: tally_metering::period::ParsePeriodError| ApiError::bad_request("invalid_period", e.to_string()))?;
    let billing = period_billing(&state, &org_id, period).await?;
    if billing.final_invoice.is_none() && !billing.known && period != Period::containing(Utc::now()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invoice_not_found",
            format!("org {org_id:?} has no invoice for {period}"),
        ));
    }
    let mut stripe = crate::stripe::stripe_invoices(&state, &org_id, Some(period)).await?;
    Ok(Json(shown(invoice_of(&state.pricing, &org_id, period, &billing), billing.correction.clone(), &mut stripe)))
}

/// `GET /v1/pricing`: the price list, from the pricing file. Public.
pub async fn get_pricing(State(state): State<Arc<AppState>>) -> Json<Value> {
    let p = &state.pricing;
    let tiers: Vec<Value> = p
        .tiers()
        .iter()
        .map(|t| {
            let metric = |m: &tally_pricing::MetricPrice| {
                json!({
                    "included": m.included,
                    "bands": m.bands.iter().map(|b| json!({
                        "from": b.from,
                        "up_to": b.up_to,
                        "unit_amount_decimal": b.rate.to_string(),
                        "price": b.price,
                        "per": b.per,
                    })).collect::<Vec<_>>(),
                })
            };
            json!({
                "tier": t.tier,
                "name": t.name,
                "base_fee_cents": t.base_fee_cents,
                "features": t.features,
                "traces": metric(&t.traces),
                "payload_bytes": metric(&t.payload_bytes),
            })
        })
        .collect();
    Json(json!({"version": p.version(), "currency": p.currency(), "tiers": tiers}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EstimateRequest {
    traces: u64,
    payload_bytes: u64,
}

/// `POST /v1/pricing/estimate` `{"traces", "payload_bytes"}`: what that usage costs on every
/// tier, and the cheapest. Public; the same pricing as invoices.
pub async fn estimate(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let request: EstimateRequest = parse_json(&body)?;
    let (estimates, cheapest) =
        state.pricing.estimate(BilledUsageV1 { traces: request.traces, payload_bytes: request.payload_bytes });
    Ok(Json(json!({
        "currency": state.pricing.currency(),
        "pricing_version": state.pricing.version(),
        "estimates": estimates,
        "cheapest": cheapest,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionRequest {
    tier: String,
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
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "org_id": org_id,
            "tier": tier,
            "source": change.source,
            "change_id": change.change_id,
            "recorded_at": recorded_at,
        })),
    ))
}

/// A tier named in a request, or 422 `invalid_tier`.
pub fn parse_tier(name: &str) -> Result<Tier, ApiError> {
    name.parse().map_err(|e: tally_schemas::billing::UnknownTier| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_tier", e.to_string()))
}

/// Writes a subscription change to the billing log and waits for Kafka's acknowledgement;
/// returns the record's log time.
pub async fn record_subscription_change(
    producers: &Renewable<FutureProducer>,
    change: &SubscriptionChangedV1,
) -> Result<DateTime<Utc>, ApiError> {
    let producer = producers.current();
    let payload = serde_json::to_vec(&BillingEventRecordV1::SubscriptionChanged(change.clone()))
        .expect("billing records serialise");
    let now = Utc::now();
    let record = FutureRecord::to(Topic::BillingEvents.name())
        .key(change.org_id.as_str())
        .payload(&payload)
        .timestamp(now.timestamp_millis());
    match producer.send(record, Duration::from_secs(10)).await {
        Ok(_) => Ok(now),
        Err((e, _)) => {
            tracing::warn!(error = %e, "could not record a subscription change");
            producers.renew_if_fatal(&producer, producer.client().fatal_error());
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "kafka_unavailable",
                "the billing log is unavailable; nothing was recorded, retry",
            ))
        }
    }
}

/// `GET /v1/orgs/{org_id}/subscription`: the tier pricing the current period.
pub async fn get_subscription(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_reader(&state, &org_id).await?;
    let period = Period::containing(Utc::now());
    let billing = period_billing(&state, &org_id, period).await?;
    let features = &state.pricing.tier(billing.tier).features;
    let stripe = crate::stripe::stripe_link(&state, &org_id).await?;
    Ok(Json(json!({"org_id": org_id, "tier": billing.tier, "period": period.to_string(), "features": features, "stripe": stripe})))
}
