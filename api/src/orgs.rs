//! Admin endpoints: orgs and their keys.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tally_common::keys;

use crate::auth::{require_org, Caller};
use crate::error::{parse_json, ApiError};
use crate::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrg {
    org_id: String,
    name: String,
}

pub async fn create_org(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    let org: NewOrg = parse_json(&body)?;
    tally_schemas::event::validate_org_id(&org.org_id).map_err(|e| ApiError::invalid_field(e.message))?;
    if org.name.trim().is_empty() || org.name.len() > 200 {
        return Err(ApiError::invalid_field("name: must be 1-200 characters"));
    }
    let created: Option<(DateTime<Utc>,)> = sqlx::query_as(
        "INSERT INTO orgs (org_id, name) VALUES ($1, $2) ON CONFLICT (org_id) DO NOTHING RETURNING created_at",
    )
    .bind(&org.org_id)
    .bind(org.name.trim())
    .fetch_optional(&state.pool)
    .await?;
    let Some((created_at,)) = created else {
        return Err(ApiError::new(StatusCode::CONFLICT, "org_exists", format!("org {:?} already exists", org.org_id)));
    };
    tracing::info!(org_id = %org.org_id, "org created");
    Ok((
        StatusCode::CREATED,
        Json(json!({"org_id": org.org_id, "name": org.name.trim(), "created_at": created_at})),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    scope: Scope,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Scope {
    Read,
    Ingest,
}

pub async fn create_key(
    State(state): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    let request: NewKey = parse_json(&body)?;
    require_org(&state, &org_id).await?;
    let (scope, prefix) = match request.scope {
        Scope::Read => ("read", "tally_read_"),
        Scope::Ingest => ("ingest", "tally_ingest_"),
    };
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let key = format!("{prefix}{}", hex::encode(secret));
    sqlx::query("INSERT INTO api_keys (key_hash, org_id, scope) VALUES ($1, $2, $3)")
        .bind(keys::hash(&key))
        .bind(&org_id)
        .bind(scope)
        .execute(&state.pool)
        .await?;
    tracing::info!(org_id = %org_id, scope, "key created");
    Ok((StatusCode::CREATED, Json(json!({"org_id": org_id, "scope": scope, "key": key}))))
}

// ---- the operator's list --------------------------------------------------------------------

/// What `GET /v1/orgs` sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    OrgId,
    Name,
    Tier,
    Traces,
    PayloadBytes,
    PercentUsed,
}

impl SortKey {
    /// The SQL of the sort value, over the columns of the inner query of [`list_orgs`]; numbers
    /// are bigint, words text (compared bytewise, `COLLATE "C"`, so that the cursor's comparison
    /// and the ORDER BY agree). `$2`, `$3`, `$4`: the tiers' names and included amounts.
    fn sql(self) -> &'static str {
        match self {
            SortKey::OrgId => "o.org_id COLLATE \"C\"",
            SortKey::Name => "o.name COLLATE \"C\"",
            SortKey::Tier => "array_position($2::text[], TIER)::bigint",
            SortKey::Traces => "coalesce(u.traces, 0)",
            SortKey::PayloadBytes => "coalesce(u.payload_bytes, 0)",
            SortKey::PercentUsed => {
                "greatest(div(coalesce(u.traces, 0)::numeric * 10000, greatest(($3::bigint[])[array_position($2::text[], TIER)], 1)),
                          div(coalesce(u.payload_bytes, 0)::numeric * 10000, greatest(($4::bigint[])[array_position($2::text[], TIER)], 1)))::bigint"
            }
        }
    }

    fn numeric(self) -> bool {
        !matches!(self, SortKey::OrgId | SortKey::Name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    Asc,
    Desc,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    sort: Option<SortKey>,
    order: Option<Order>,
    q: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
    period: Option<String>,
}

/// Where a page ends: the sort and the last row's sort value and org id. Opaque to clients
/// (hex of JSON); a cursor of another sort or order is refused.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Cursor {
    sort: SortKey,
    order: Order,
    number: Option<i64>,
    text: Option<String>,
    org_id: String,
}

impl Cursor {
    fn encode(&self) -> String {
        hex::encode(serde_json::to_vec(self).expect("cursors serialise"))
    }

    fn decode(raw: &str) -> Option<Cursor> {
        serde_json::from_slice(&hex::decode(raw).ok()?).ok()
    }
}

pub const LIST_DEFAULT_LIMIT: i64 = 50;
pub const LIST_MAX_LIMIT: i64 = 200;

#[derive(sqlx::FromRow)]
struct ListedOrg {
    org_id: String,
    name: String,
    tier: String,
    traces: i64,
    payload_bytes: i64,
    sort_number: Option<i64>,
    sort_text: Option<String>,
    total: i64,
}

/// `GET /v1/orgs` (admin): every org with this period's usage, percent of quota, warnings, tier
/// and draft total; sorted, searched and paged on the server with keyset cursors (docs/page.md).
pub async fn list_orgs(
    State(state): State<Arc<AppState>>,
    Query(query): Query<ListQuery>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require_admin()?;
    let sort = query.sort.unwrap_or(SortKey::OrgId);
    let order = query.order.unwrap_or(Order::Asc);
    let limit = query.limit.unwrap_or(LIST_DEFAULT_LIMIT);
    if !(1..=LIST_MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", format!("limit: must be 1-{LIST_MAX_LIMIT}")));
    }
    let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if q.is_some_and(|q| q.chars().count() > 100) {
        return Err(ApiError::bad_request("invalid_query", "q: at most 100 characters"));
    }
    let period = match query.period.as_deref() {
        None => tally_metering::Period::containing(Utc::now()),
        Some(raw) => raw.parse().map_err(|e: tally_metering::period::ParsePeriodError| ApiError::bad_request("invalid_period", e.to_string()))?,
    };
    let cursor = match query.cursor.as_deref() {
        None => None,
        Some(raw) => match Cursor::decode(raw) {
            Some(c) if c.sort == sort && c.order == order && c.number.is_some() == sort.numeric() => Some(c),
            _ => return Err(ApiError::bad_request("invalid_cursor", "this cursor is not one of this sort and order; start from the first page")),
        },
    };
    // The tiers' included amounts, for the percentage: from the pricing file, passed as arrays.
    let tiers = state.pricing.tiers();
    let names: Vec<&str> = tiers.iter().map(|t| t.tier.as_str()).collect();
    let included_traces: Vec<i64> = tiers.iter().map(|t| i64::try_from(t.traces.included).unwrap_or(i64::MAX)).collect();
    let included_bytes: Vec<i64> = tiers.iter().map(|t| i64::try_from(t.payload_bytes.included).unwrap_or(i64::MAX)).collect();
    let pattern = pattern_of(q);
    let (direction, compare) = match order {
        Order::Asc => ("ASC", ">"),
        Order::Desc => ("DESC", "<"),
    };
    // An org without usage this period has the tier of its latest earlier period (tiers carry
    // over), else starter.
    let tier = "coalesce(u.tier, (SELECT e.tier FROM usage_periods e WHERE e.org_id = o.org_id AND e.period < $1
                                  ORDER BY e.period DESC LIMIT 1), 'starter')";
    let key = sort.sql().replace("TIER", tier);
    let (number_key, text_key) = if sort.numeric() { ("p.k", "NULL::text") } else { ("NULL::bigint", "p.k::text") };
    let after = match (&cursor, sort.numeric()) {
        (None, _) => String::new(),
        (Some(_), true) => format!("WHERE (k, org_id COLLATE \"C\") {compare} ($6::bigint, $8::text COLLATE \"C\")"),
        (Some(_), false) => format!("WHERE (k, org_id COLLATE \"C\") {compare} ($7::text COLLATE \"C\", $8::text COLLATE \"C\")"),
    };
    // One statement. Inside: every org the search finds, with or without usage this period, as
    // narrow rows (id and sort value), sorted and cut to the page after the cursor. Outside: the
    // page's rows in full, and how many orgs the search finds (the same on every page).
    let sql = format!(
        "SELECT p.org_id, o.name, {tier} AS tier, coalesce(u.traces, 0) AS traces,
                coalesce(u.payload_bytes, 0) AS payload_bytes, {number_key} AS sort_number, {text_key} AS sort_text,
                (SELECT count(*) FROM orgs o WHERE $5::text IS NULL OR o.org_id ILIKE $5 OR o.name ILIKE $5) AS total
         FROM (
            SELECT org_id, k FROM (
                SELECT o.org_id, {key} AS k
                FROM orgs o LEFT JOIN usage_periods u ON u.org_id = o.org_id AND u.period = $1
                WHERE $5::text IS NULL OR o.org_id ILIKE $5 OR o.name ILIKE $5
            ) listed {after}
            ORDER BY k {direction}, org_id COLLATE \"C\" {direction}
            LIMIT $9
         ) p JOIN orgs o ON o.org_id = p.org_id LEFT JOIN usage_periods u ON u.org_id = p.org_id AND u.period = $1
         ORDER BY p.k {direction}, p.org_id COLLATE \"C\" {direction}"
    );
    let rows: Vec<ListedOrg> = sqlx::query_as(&sql)
        .bind(period.to_string())
        .bind(&names)
        .bind(&included_traces)
        .bind(&included_bytes)
        .bind(pattern)
        .bind(cursor.as_ref().and_then(|c| c.number))
        .bind(cursor.as_ref().and_then(|c| c.text.clone()))
        .bind(cursor.as_ref().map(|c| c.org_id.clone()))
        .bind(limit + 1)
        .fetch_all(&state.pool)
        .await?;
    let total = match rows.first() {
        Some(r) => r.total,
        None => count_orgs(&state, pattern_of(q).as_deref()).await?,
    };
    let more = rows.len() as i64 > limit;
    let rows = &rows[..rows.len().min(limit as usize)];
    let next_cursor = more.then(|| rows.last()).flatten().map(|last| {
        Cursor { sort, order, number: last.sort_number, text: last.sort_text.clone(), org_id: last.org_id.clone() }.encode()
    });
    let orgs: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let billing = crate::billing::PeriodBilling {
                tier: r.tier.parse().unwrap_or_default(),
                usage: tally_schemas::BilledUsageV1 { traces: u64::try_from(r.traces).unwrap_or(0), payload_bytes: u64::try_from(r.payload_bytes).unwrap_or(0) },
                known: true,
                final_invoice: None,
                correction: None,
            };
            let fields = crate::billing::usage_billing_fields(&state.pricing, &r.org_id, period, &billing);
            json!({
                "org_id": r.org_id,
                "name": r.name,
                "tier": fields["tier"],
                "traces": r.traces,
                "payload_bytes": r.payload_bytes,
                "included": fields["included"],
                "percent_used": fields["percent_used"],
                "warnings": fields["warnings"],
                "draft_total_cents": fields["cost"]["total_cents"],
            })
        })
        .collect();
    Ok(Json(json!({
        "period": period.to_string(),
        "sort": sort,
        "order": order,
        "total": total,
        "orgs": orgs,
        "next_cursor": next_cursor,
    })))
}

fn pattern_of(q: Option<&str>) -> Option<String> {
    q.map(|q| format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")))
}

async fn count_orgs(state: &AppState, pattern: Option<&str>) -> Result<i64, ApiError> {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM orgs o WHERE $1::text IS NULL OR o.org_id ILIKE $1 OR o.name ILIKE $1")
        .bind(pattern)
        .fetch_one(&state.pool)
        .await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = Cursor { sort: SortKey::Traces, order: Order::Desc, number: Some(42), text: None, org_id: "acme".into() };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("zz"), None);
        assert_eq!(Cursor::decode(&hex::encode(b"{}")), None);
    }
}
