//! Usage endpoints: one period, daily history, late events.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use tally_metering::Period;
use tally_schemas::Operation;

use crate::auth::require_reader;
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

#[derive(sqlx::FromRow)]
struct UsageRow {
    state: String,
    traces: i64,
    payload_bytes: i64,
    not_billed_child_span: i64,
    not_billed_not_success: i64,
    not_billed_duplicate: i64,
    not_billed_late: i64,
    updated_at: DateTime<Utc>,
}

/// `GET /v1/orgs/{org_id}/usage[?period=YYYY-MM]`: a period with no events answers zeros.
pub async fn period_usage(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    Query(query): Query<PeriodQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_reader(&state, &headers, &org_id).await?;
    let period = parse_period(query.period.as_deref())?;
    let id = period.to_string();
    let row: Option<UsageRow> = sqlx::query_as(
        "SELECT state, traces, payload_bytes, not_billed_child_span, not_billed_not_success,
                not_billed_duplicate, not_billed_late, updated_at
         FROM usage_periods WHERE org_id = $1 AND period = $2",
    )
    .bind(&org_id)
    .bind(&id)
    .fetch_optional(&state.pool)
    .await?;
    let ops: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT operation, traces, payload_bytes FROM usage_by_operation WHERE org_id = $1 AND period = $2",
    )
    .bind(&org_id)
    .bind(&id)
    .fetch_all(&state.pool)
    .await?;
    let ops: HashMap<String, (i64, i64)> = ops.into_iter().map(|(o, t, b)| (o, (t, b))).collect();
    let by_operation: BTreeMap<&str, Value> = Operation::ALL
        .iter()
        .map(|op| {
            let (t, b) = ops.get(op.as_str()).copied().unwrap_or((0, 0));
            (op.as_str(), json!({"traces": t, "payload_bytes": b}))
        })
        .collect();
    // The pipeline's own verdict when it has one; otherwise the period's close time says.
    let period_state = match &row {
        Some(r) => r.state.clone(),
        None if Utc::now() >= period.closes_at(state.settings.grace) => "closed".into(),
        None => "open".into(),
    };
    let r = row.as_ref();
    let billing = crate::billing::period_billing(&state, &org_id, period).await?;
    let billing = crate::billing::usage_billing_fields(&state.pricing, &org_id, period, &billing);
    let mut body = json!({
        "org_id": org_id,
        "period": {"id": id, "start": period.start(), "end": period.end(), "state": period_state},
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
}

/// The widest range `usage/daily` answers in one request.
const MAX_DAILY_RANGE_DAYS: i64 = 366;

/// `GET /v1/orgs/{org_id}/usage/daily?from=YYYY-MM-DD&to=YYYY-MM-DD`: one row per day and
/// operation, zeros included (default: the current period so far).
pub async fn daily_usage(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    Query(query): Query<DailyQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_reader(&state, &headers, &org_id).await?;
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
    let mut days = Vec::new();
    for day in from.iter_days().take_while(|d| *d <= to) {
        for op in Operation::ALL {
            let (t, b) = stored.get(&(day, op.as_str().to_string())).copied().unwrap_or((0, 0));
            days.push(json!({"day": day, "operation": op.as_str(), "traces": t, "payload_bytes": b}));
        }
    }
    Ok(Json(json!({"org_id": org_id, "from": from, "to": to, "days": days})))
}

/// `GET /v1/orgs/{org_id}/late-events?period=YYYY-MM`: events that arrived after their period
/// closed (not billed), newest first, at most 1,000.
pub async fn late_events(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    Query(query): Query<PeriodQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_reader(&state, &headers, &org_id).await?;
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
