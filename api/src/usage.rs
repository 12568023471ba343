//! Usage endpoints: one period, daily history, late events.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use tally_metering::Period;
use tally_schemas::BilledUsageV1;
use tally_schemas::Operation;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

#[derive(Deserialize)]
pub struct PeriodQuery {
    period: Option<String>,
}

fn parse_period(raw: Option<&str>) -> Result<Period, ApiError> {
    match raw {
        None => Ok(Period::containing(Utc::now())),
        Some(raw) => raw.parse().map_err(|e: tally_metering::period::ParsePeriodError| {
            ApiError::bad_request("invalid_period", e.to_string())
        }),
    }
}

/// `GET /v1/orgs/{org_id}/usage[?period=YYYY-MM]`: a period with no events answers zeros.
pub async fn period_usage(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    Query(query): Query<PeriodQuery>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_reader(&state, &org_id).await?;
    let period = parse_period(query.period.as_deref())?;
    let id = period.to_string();
    let read = crate::billing::read_period(&state, &org_id, period).await?;
    let ops: HashMap<&str, (i64, i64)> = read.by_operation.iter().map(|(o, t, b)| (o.as_str(), (*t, *b))).collect();
    let by_operation: BTreeMap<&str, Value> = Operation::ALL
        .iter()
        .map(|op| {
            let (t, b) = ops.get(op.as_str()).copied().unwrap_or((0, 0));
            (op.as_str(), json!({"traces": t, "payload_bytes": b}))
        })
        .collect();
    let r = read.row.as_ref();
    let billing = crate::billing::usage_billing_fields(&state.pricing, &org_id, period, &read.billing);
    let mut body = json!({
        "org_id": org_id,
        "period": {"id": id, "start": period.start(), "end": period.end(), "state": if read.closed { "closed" } else { "open" }},
        "traces": r.map_or(0, |r| r.traces),
        "payload_bytes": r.map_or(0, |r| r.payload_bytes),
        "by_operation": by_operation,
        "not_billed": {
            "child_span": r.map_or(0, |r| r.not_billed_child_span),
            "not_success": r.map_or(0, |r| r.not_billed_not_success),
            "duplicate": r.map_or(0, |r| r.not_billed_duplicate),
            "late": r.map_or(0, |r| r.not_billed_late),
        },
        "updated_at": r.map(|r| r.updated_at),
    });
    if let (Some(body), Value::Object(billing)) = (body.as_object_mut(), billing) {
        body.extend(billing);
    }
    Ok(Json(body))
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
        Some(_) => return Err(ApiError::bad_request("invalid_query", "format: must be json or csv")),
    };
    caller.require_reader(&state, &org_id).await?;
    let parse = |name: &str, raw: &str| {
        NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map_err(|_| ApiError::bad_request("invalid_query", format!("{name}: must be YYYY-MM-DD")))
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
    let rows: Vec<(NaiveDate, String, i64, i64)> = sqlx::query_as(
        "SELECT day, operation, traces, payload_bytes FROM usage_daily
         WHERE org_id = $1 AND day BETWEEN $2 AND $3",
    )
    .bind(&org_id)
    .bind(from)
    .bind(to)
    .fetch_all(&state.pool)
    .await?;
    let stored: HashMap<(NaiveDate, String), (i64, i64)> =
        rows.into_iter().map(|(d, o, t, b)| ((d, o), (t, b))).collect();
    let rows = from.iter_days().take_while(|d| *d <= to).flat_map(|day| {
        Operation::ALL.iter().map(move |op| (day, op.as_str()))
    });
    let rows = rows.map(|(day, op)| {
        let (t, b) = stored.get(&(day, op.to_string())).copied().unwrap_or((0, 0));
        (day, op, t, b)
    });
    if csv {
        let mut body = String::from("day,operation,traces,payload_bytes\n");
        for (day, op, t, b) in rows {
            body.push_str(&format!("{day},{op},{t},{b}\n"));
        }
        let disposition = format!("attachment; filename=\"tally-{org_id}-{from}-{to}.csv\"");
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (header::CONTENT_DISPOSITION, disposition)],
            body,
        )
            .into_response());
    }
    let days: Vec<Value> =
        rows.map(|(day, op, t, b)| json!({"day": day, "operation": op, "traces": t, "payload_bytes": b})).collect();
    Ok(Json(json!({"org_id": org_id, "from": from, "to": to, "days": days})).into_response())
}

/// The most periods `GET /v1/orgs/{org_id}/periods` lists (newest first): eight years.
const MAX_PERIODS: i64 = 96;

/// `GET /v1/orgs/{org_id}/periods`: every period the pipeline has seen the org in, newest first,
/// with its state, tier and figures (late events included: a period with only late events is
/// listed, though it has no invoice).
pub async fn periods(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_reader(&state, &org_id).await?;
    let rows: Vec<(String, String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT period, state, tier, traces, payload_bytes, not_billed_late FROM usage_periods
         WHERE org_id = $1 ORDER BY period DESC LIMIT $2",
    )
    .bind(&org_id)
    .bind(MAX_PERIODS)
    .fetch_all(&state.pool)
    .await?;
    let periods: Vec<Value> = rows
        .into_iter()
        .map(|(period, state, tier, traces, payload_bytes, late)| {
            json!({"period": period, "state": state, "tier": tier, "traces": traces, "payload_bytes": payload_bytes, "late_events": late})
        })
        .collect();
    Ok(Json(json!({"org_id": org_id, "periods": periods})))
}

/// `GET /v1/orgs/{org_id}/late-events?period=YYYY-MM`: events that arrived after their period
/// closed (not billed), newest first, at most 1,000.
pub async fn late_events(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    Query(query): Query<PeriodQuery>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_reader(&state, &org_id).await?;
    let period = parse_period(query.period.as_deref())?;
    let rows: Vec<(String, String, DateTime<Utc>, DateTime<Utc>, bool, i64)> = sqlx::query_as(
        "SELECT event_id, operation, ended_at, arrived_at, billable, payload_bytes FROM late_events
         WHERE org_id = $1 AND period = $2 ORDER BY arrived_at DESC, event_id LIMIT 1000",
    )
    .bind(&org_id)
    .bind(period.to_string())
    .fetch_all(&state.pool)
    .await?;
    let events: Vec<Value> = rows
        .into_iter()
        .map(|(event_id, operation, ended_at, arrived_at, billable, payload_bytes)| {
            json!({"event_id": event_id, "operation": operation, "ended_at": ended_at,
                   "arrived_at": arrived_at, "billable": billable, "payload_bytes": payload_bytes})
        })
        .collect();
    Ok(Json(json!({"org_id": org_id, "period": period.to_string(), "late_events": events})))
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
    let scale = |v: u64| u64::try_from(v as u128 * period_secs as u128 / elapsed).unwrap_or(u64::MAX);
    BilledUsageV1 { traces: scale(usage.traces), payload_bytes: scale(usage.payload_bytes) }
}

/// `GET /v1/orgs/{org_id}/usage/projection[?period=YYYY-MM]`: the period's usage, where it is
/// heading, and what both cost on every tier (docs/page.md).
pub async fn projection(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    Query(query): Query<PeriodQuery>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_reader(&state, &org_id).await?;
    let period = parse_period(query.period.as_deref())?;
    let billing = crate::billing::period_billing(&state, &org_id, period).await?;
    let now = Utc::now();
    let period_secs = (period.end() - period.start()).num_seconds();
    // The stretch the projection extrapolates from, as `project` takes it (at least an hour).
    let elapsed_secs = (now - period.start()).num_seconds().clamp(MIN_ELAPSED_SECS.min(period_secs), period_secs);
    let projected = project(billing.usage, elapsed_secs, period_secs);
    let (current, current_cheapest) = state.pricing.estimate(billing.usage);
    let (projected_estimates, projected_cheapest) = state.pricing.estimate(projected);
    let (lines, total_cents) = state.pricing.price(billing.tier, projected);
    Ok(Json(json!({
        "org_id": org_id,
        "period": period.to_string(),
        "as_of": now,
        "elapsed_secs": elapsed_secs,
        "period_secs": period_secs,
        "usage": billing.usage,
        "projected": projected,
        "projected_cost": {"tier": billing.tier, "total_cents": total_cents, "lines": lines},
        "estimates": {
            "current": current,
            "current_cheapest": current_cheapest,
            "projected": projected_estimates,
            "projected_cheapest": projected_cheapest,
        },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections_scale_the_period_so_far_in_integers() {
        let usage = BilledUsageV1 { traces: 1_000, payload_bytes: 7 };
        // A third of the way: three times as much, rounded down.
        assert_eq!(project(usage, 100_000, 300_000), BilledUsageV1 { traces: 3_000, payload_bytes: 21 });
        assert_eq!(project(BilledUsageV1 { traces: 1, payload_bytes: 2 }, 200_000, 300_000), BilledUsageV1 { traces: 1, payload_bytes: 3 });
        // The first minutes count as an hour.
        assert_eq!(project(usage, 60, 36_000), BilledUsageV1 { traces: 10_000, payload_bytes: 70 });
        // An ended period projects what it has.
        assert_eq!(project(usage, 300_000, 300_000), usage);
        // No overflow for the largest figures.
        let big = BilledUsageV1 { traces: u64::MAX / 2, payload_bytes: u64::MAX };
        assert_eq!(project(big, 3_600, 2_678_400).payload_bytes, u64::MAX);
    }
}
