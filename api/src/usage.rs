//! Usage endpoints: one period, daily history, periods, late events, projections.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tally_metering::Period;
use tally_pricing::Estimate;
use tally_schemas::{BilledUsageV1, LineItemV1, Operation, Tier};

use crate::auth::Caller;
use crate::billing::UsageBilling;
use crate::error::{parse_period, ApiError};
use crate::AppState;

#[derive(Deserialize)]
pub struct PeriodQuery {
    period: Option<String>,
}

/// The period a query names, else the current one.
fn period_or_current(raw: Option<&str>) -> Result<Period, ApiError> {
    match raw {
        None => Ok(Period::containing(Utc::now())),
        Some(raw) => parse_period(raw),
    }
}

/// A period's bounds and state.
#[derive(Serialize)]
pub struct PeriodShown {
    id: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    /// `open` or `closed`.
    state: &'static str,
}

/// Traces and payload bytes.
#[derive(Serialize)]
pub struct Amounts {
    traces: i64,
    payload_bytes: i64,
}

/// Events not billed, by reason.
#[derive(Serialize)]
pub struct NotBilled {
    child_span: i64,
    not_success: i64,
    duplicate: i64,
    late: i64,
}

/// `GET /v1/orgs/{org_id}/usage`: the usage figures and, flattened in, the billing fields.
#[derive(Serialize)]
pub struct PeriodUsage {
    org_id: String,
    period: PeriodShown,
    traces: i64,
    payload_bytes: i64,
    /// Every operation, zeros included.
    by_operation: BTreeMap<&'static str, Amounts>,
    not_billed: NotBilled,
    /// `null` while the pipeline has no row for the period.
    updated_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    billing: UsageBilling,
}

/// `GET /v1/orgs/{org_id}/usage[?period=YYYY-MM]`: a period with no events answers zeros.
pub async fn period_usage(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    Query(query): Query<PeriodQuery>,
    caller: Caller,
) -> Result<Json<PeriodUsage>, ApiError> {
    caller.require_reader(&state, &org_id).await?;
    let period = period_or_current(query.period.as_deref())?;
    let read = crate::billing::read_period(&state, &org_id, period).await?;
    let ops: HashMap<&str, (i64, i64)> =
        read.by_operation.iter().map(|(o, t, b)| (o.as_str(), (*t, *b))).collect();
    let by_operation = Operation::ALL
        .iter()
        .map(|op| {
            let (traces, payload_bytes) = ops.get(op.as_str()).copied().unwrap_or((0, 0));
            (op.as_str(), Amounts { traces, payload_bytes })
        })
        .collect();
    let billing = crate::billing::usage_billing(&state.pricing, &org_id, period, &read.billing);
    let r = read.row.as_ref();
    Ok(Json(PeriodUsage {
        period: PeriodShown {
            id: period.to_string(),
            start: period.start(),
            end: period.end(),
            state: if read.closed { "closed" } else { "open" },
        },
        traces: r.map_or(0, |r| r.traces),
        payload_bytes: r.map_or(0, |r| r.payload_bytes),
        by_operation,
        not_billed: NotBilled {
            child_span: r.map_or(0, |r| r.not_billed_child_span),
            not_success: r.map_or(0, |r| r.not_billed_not_success),
            duplicate: r.map_or(0, |r| r.not_billed_duplicate),
            late: r.map_or(0, |r| r.not_billed_late),
        },
        updated_at: r.map(|r| r.updated_at),
        billing,
        org_id,
    }))
}

#[derive(Deserialize)]
pub struct DailyQuery {
    from: Option<String>,
    to: Option<String>,
    /// `csv` for a CSV file (`day,operation,traces,payload_bytes`) instead of JSON.
    format: Option<String>,
}

/// The widest range `usage/daily` answers in one request.
const MAX_DAILY_RANGE_DAYS: i64 = 366;

/// One day and operation.
#[derive(Serialize)]
pub struct DayUsage {
    day: NaiveDate,
    operation: &'static str,
    traces: i64,
    payload_bytes: i64,
}

#[derive(Serialize)]
pub struct DailyUsage {
    org_id: String,
    from: NaiveDate,
    to: NaiveDate,
    days: Vec<DayUsage>,
}

/// `GET /v1/orgs/{org_id}/usage/daily?from=YYYY-MM-DD&to=YYYY-MM-DD[&format=csv]`: one row per
/// day and operation, zeros included (default: the current period so far).
pub async fn daily_usage(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    Query(query): Query<DailyQuery>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            return Err(ApiError::bad_request("invalid_query", "format: must be json or csv"))
        }
    };
    caller.require_reader(&state, &org_id).await?;
    let parse = |name: &str, raw: &str| {
        NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
            ApiError::bad_request("invalid_query", format!("{name}: must be YYYY-MM-DD"))
        })
    };
    let today = Utc::now().date_naive();
    let from = match &query.from {
        Some(raw) => parse("from", raw)?,
        None => Period::containing(Utc::now()).first_day(),
    };
    let to = match &query.to {
        Some(raw) => parse("to", raw)?,
        None => today,
    };
    if to < from {
        return Err(ApiError::bad_request("invalid_query", "to: must not be before from"));
    }
    if (to - from).num_days() >= MAX_DAILY_RANGE_DAYS {
        return Err(ApiError::bad_request("invalid_query", "at most 366 days per request"));
    }
    let stored: HashMap<(NaiveDate, String), (i64, i64)> =
        tally_store::usage::daily(&mut *state.db.org(&org_id).await?, &org_id, from, to)
            .await?
            .into_iter()
            .map(|r| ((r.day, r.operation), (r.traces, r.payload_bytes)))
            .collect();
    let days = from
        .iter_days()
        .take_while(|d| *d <= to)
        .flat_map(|day| Operation::ALL.iter().map(move |op| (day, op.as_str())));
    let days = days.map(|(day, operation)| {
        let (traces, payload_bytes) =
            stored.get(&(day, operation.to_string())).copied().unwrap_or((0, 0));
        DayUsage { day, operation, traces, payload_bytes }
    });
    if csv {
        let mut body = String::from("day,operation,traces,payload_bytes\n");
        for d in days {
            body.push_str(&format!("{},{},{},{}\n", d.day, d.operation, d.traces, d.payload_bytes));
        }
        let disposition = format!("attachment; filename=\"tally-{org_id}-{from}-{to}.csv\"");
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            body,
        )
            .into_response());
    }
    Ok(Json(DailyUsage { org_id, from, to, days: days.collect() }).into_response())
}

/// The most periods `GET /v1/orgs/{org_id}/periods` lists (newest first): eight years.
const MAX_PERIODS: i64 = 96;

/// One period of `GET /v1/orgs/{org_id}/periods`.
#[derive(Serialize)]
pub struct PeriodSummary {
    period: String,
    state: String,
    tier: String,
    traces: i64,
    payload_bytes: i64,
    late_events: i64,
}

#[derive(Serialize)]
pub struct PeriodList {
    org_id: String,
    periods: Vec<PeriodSummary>,
}

/// `GET /v1/orgs/{org_id}/periods`: every period the pipeline has seen the org in, newest first,
/// with its state, tier and figures (late events included: a period with only late events is
/// listed, though it has no invoice).
pub async fn periods(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    caller: Caller,
) -> Result<Json<PeriodList>, ApiError> {
    caller.require_reader(&state, &org_id).await?;
    let rows =
        tally_store::usage::periods(&mut *state.db.org(&org_id).await?, &org_id, MAX_PERIODS)
            .await?;
    let periods = rows
        .into_iter()
        .map(|r| PeriodSummary {
            period: r.period,
            state: r.state,
            tier: r.tier,
            traces: r.traces,
            payload_bytes: r.payload_bytes,
            late_events: r.not_billed_late,
        })
        .collect();
    Ok(Json(PeriodList { org_id, periods }))
}

/// The most late events `GET .../late-events` lists.
const MAX_LATE_EVENTS: i64 = 1000;

#[derive(Serialize)]
pub struct LateEvents {
    org_id: String,
    period: String,
    late_events: Vec<tally_store::usage::LateEventRow>,
}

/// `GET /v1/orgs/{org_id}/late-events?period=YYYY-MM`: events that arrived after their period
/// closed (not billed), newest first, at most 1,000.
pub async fn late_events(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    Query(query): Query<PeriodQuery>,
    caller: Caller,
) -> Result<Json<LateEvents>, ApiError> {
    caller.require_reader(&state, &org_id).await?;
    let period = period_or_current(query.period.as_deref())?.to_string();
    let late_events = tally_store::usage::late_events(
        &mut *state.db.org(&org_id).await?,
        &org_id,
        &period,
        MAX_LATE_EVENTS,
    )
    .await?;
    Ok(Json(LateEvents { org_id, period, late_events }))
}

/// The shortest stretch a projection extrapolates from: a period's first minutes say too little.
const MIN_ELAPSED_SECS: i64 = 3600;

/// Where `usage` ends up if the rest of the period goes as the part so far: `usage × period ÷
/// elapsed`, in integers, rounded down. `elapsed` is at least [`MIN_ELAPSED_SECS`]; a period that
/// has ended (`elapsed ≥ period`) projects its usage as it is.
pub fn project(usage: BilledUsageV1, elapsed_secs: i64, period_secs: i64) -> BilledUsageV1 {
    if elapsed_secs >= period_secs || period_secs <= 0 {
        return usage;
    }
    let elapsed = elapsed_secs.max(MIN_ELAPSED_SECS).min(period_secs) as u128;
    let scale =
        |v: u64| u64::try_from(v as u128 * period_secs as u128 / elapsed).unwrap_or(u64::MAX);
    BilledUsageV1 { traces: scale(usage.traces), payload_bytes: scale(usage.payload_bytes) }
}

/// The cost of the projected usage on the org's tier.
#[derive(Serialize)]
pub struct ProjectedCost {
    tier: Tier,
    total_cents: i64,
    lines: Vec<LineItemV1>,
}

/// What the usage so far and the projected usage cost on every tier, and the cheapest.
#[derive(Serialize)]
pub struct ProjectionEstimates {
    current: Vec<Estimate>,
    current_cheapest: Tier,
    projected: Vec<Estimate>,
    projected_cheapest: Tier,
}

#[derive(Serialize)]
pub struct Projection {
    org_id: String,
    period: String,
    as_of: DateTime<Utc>,
    elapsed_secs: i64,
    period_secs: i64,
    usage: BilledUsageV1,
    projected: BilledUsageV1,
    projected_cost: ProjectedCost,
    estimates: ProjectionEstimates,
}

/// `GET /v1/orgs/{org_id}/usage/projection[?period=YYYY-MM]`: the period's usage, where it is
/// heading, and what both cost on every tier (docs/page.md).
pub async fn projection(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    Query(query): Query<PeriodQuery>,
    caller: Caller,
) -> Result<Json<Projection>, ApiError> {
    caller.require_reader(&state, &org_id).await?;
    let period = period_or_current(query.period.as_deref())?;
    let billing = crate::billing::period_billing(&state, &org_id, period).await?;
    let now = Utc::now();
    let period_secs = (period.end() - period.start()).num_seconds();
    // The stretch the projection extrapolates from, as `project` takes it (at least an hour).
    let elapsed_secs =
        (now - period.start()).num_seconds().clamp(MIN_ELAPSED_SECS.min(period_secs), period_secs);
    let projected = project(billing.usage, elapsed_secs, period_secs);
    let (current, current_cheapest) = state.pricing.estimate(billing.usage);
    let (projected_estimates, projected_cheapest) = state.pricing.estimate(projected);
    let (lines, total_cents) = state.pricing.price(billing.tier, projected);
    Ok(Json(Projection {
        org_id,
        period: period.to_string(),
        as_of: now,
        elapsed_secs,
        period_secs,
        usage: billing.usage,
        projected,
        projected_cost: ProjectedCost { tier: billing.tier, total_cents, lines },
        estimates: ProjectionEstimates {
            current,
            current_cheapest,
            projected: projected_estimates,
            projected_cheapest,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections_scale_the_period_so_far_in_integers() {
        let usage = BilledUsageV1 { traces: 1_000, payload_bytes: 7 };
        // A third of the way: three times as much, rounded down.
        assert_eq!(
            project(usage, 100_000, 300_000),
            BilledUsageV1 { traces: 3_000, payload_bytes: 21 }
        );
        assert_eq!(
            project(BilledUsageV1 { traces: 1, payload_bytes: 2 }, 200_000, 300_000),
            BilledUsageV1 { traces: 1, payload_bytes: 3 }
        );
        // The first minutes count as an hour.
        assert_eq!(project(usage, 60, 36_000), BilledUsageV1 { traces: 10_000, payload_bytes: 70 });
        // An ended period projects what it has.
        assert_eq!(project(usage, 300_000, 300_000), usage);
        // No overflow for the largest figures.
        let big = BilledUsageV1 { traces: u64::MAX / 2, payload_bytes: u64::MAX };
        assert_eq!(project(big, 3_600, 2_678_400).payload_bytes, u64::MAX);
    }
}
