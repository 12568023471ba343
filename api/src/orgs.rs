//! Admin endpoints: orgs (their keys: [`crate::keys`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::billing::{usage_billing, PercentUsed, PeriodBilling, UsageWarning};
use tally_store::invoices::billed_usage;

use crate::error::{parse_json, parse_period, ApiError};
use crate::AppState;
use tally_store::orgs::{ListPosition, ListRequest, Order, SortKey};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrg {
    org_id: String,
    name: String,
}

#[derive(Serialize)]
pub struct OrgCreated {
    org_id: String,
    name: String,
    created_at: DateTime<Utc>,
}

/// `POST /v1/orgs` `{"org_id", "name"}` (admin): registers an org; 201, or 409 `org_exists`.
pub async fn create_org(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    let org: NewOrg = parse_json(&body)?;
    tally_schemas::event::validate_org_id(&org.org_id)
        .map_err(|e| ApiError::invalid_field(e.message))?;
    if org.name.trim().is_empty() || org.name.len() > 200 {
        return Err(ApiError::invalid_field("name: must be 1-200 characters"));
    }
    let name = org.name.trim().to_string();
    let mut db = state.db.org(&org.org_id).await?;
    let created = tally_store::orgs::create(&mut db, &org.org_id, &name).await?;
    db.commit().await?;
    let Some(created_at) = created else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "org_exists",
            format!("org {:?} already exists", org.org_id),
        ));
    };
    tracing::info!(org_id = %org.org_id, "org created");
    Ok((StatusCode::CREATED, Json(OrgCreated { org_id: org.org_id, name, created_at })))
}

// ---- the operator's list --------------------------------------------------------------------

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
    fn to_token(&self) -> String {
        hex::encode(serde_json::to_vec(self).expect("cursors serialise"))
    }

    fn from_token(raw: &str) -> Option<Cursor> {
        serde_json::from_slice(&hex::decode(raw).ok()?).ok()
    }
}

pub const LIST_DEFAULT_LIMIT: i64 = 50;
pub const LIST_MAX_LIMIT: i64 = 200;

/// One org of `GET /v1/orgs`.
#[derive(Serialize)]
pub struct ListedOrgShown {
    org_id: String,
    name: String,
    tier: tally_schemas::Tier,
    traces: i64,
    payload_bytes: i64,
    included: tally_schemas::BilledUsageV1,
    percent_used: PercentUsed,
    warnings: Vec<UsageWarning>,
    draft_total_cents: i64,
}

#[derive(Serialize)]
pub struct OrgList {
    period: String,
    sort: SortKey,
    order: Order,
    /// How many orgs the search finds, on every page.
    total: i64,
    orgs: Vec<ListedOrgShown>,
    /// `null` on the last page.
    next_cursor: Option<String>,
}

/// `GET /v1/orgs` (admin): every org with this period's usage, percent of quota, warnings, tier
/// and draft total; sorted, searched and paged on the server with keyset cursors (docs/page.md).
pub async fn list_orgs(
    State(state): State<Arc<AppState>>,
    Query(query): Query<ListQuery>,
    caller: Caller,
) -> Result<Json<OrgList>, ApiError> {
    caller.require_admin()?;
    let sort = query.sort.unwrap_or(SortKey::OrgId);
    let order = query.order.unwrap_or(Order::Asc);
    let limit = query.limit.unwrap_or(LIST_DEFAULT_LIMIT);
    if !(1..=LIST_MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit: must be 1-{LIST_MAX_LIMIT}"),
        ));
    }
    let search = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if search.is_some_and(|q| q.chars().count() > 100) {
        return Err(ApiError::bad_request("invalid_query", "q: at most 100 characters"));
    }
    let period = match query.period.as_deref() {
        None => tally_metering::Period::containing(Utc::now()),
        Some(raw) => parse_period(raw)?,
    };
    let cursor = match query.cursor.as_deref() {
        None => None,
        Some(raw) => match Cursor::from_token(raw) {
            Some(c)
                if c.sort == sort && c.order == order && c.number.is_some() == sort.numeric() =>
            {
                Some(c)
            }
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_cursor",
                    "this cursor is not one of this sort and order; start from the first page",
                ))
            }
        },
    };
    // The tiers' included amounts, for the percentage: from the pricing file, passed as arrays.
    let tiers = state.pricing.tiers();
    let included = |amount: u64| i64::try_from(amount).unwrap_or(i64::MAX);
    let request = ListRequest {
        period: period.to_string(),
        sort,
        order,
        search,
        after: cursor.map(|c| ListPosition { number: c.number, text: c.text, org_id: c.org_id }),
        limit: limit + 1,
        tier_names: tiers.iter().map(|t| t.tier.as_str()).collect(),
        included_traces: tiers.iter().map(|t| included(t.traces.included)).collect(),
        included_bytes: tiers.iter().map(|t| included(t.payload_bytes.included)).collect(),
    };
    // The operator's list: every org.
    let mut db = state.db.all_orgs().await?;
    let rows = tally_store::orgs::list(&mut db, &request).await?;
    let total = match rows.first() {
        Some(r) => r.total,
        None => tally_store::orgs::count_matching(&mut db, search).await?,
    };
    let more = rows.len() as i64 > limit;
    let rows = &rows[..rows.len().min(limit as usize)];
    let next_cursor = more.then(|| rows.last()).flatten().map(|last| {
        let (number, text) = (last.sort_number, last.sort_text.clone());
        Cursor { sort, order, number, text, org_id: last.org_id.clone() }.to_token()
    });
    let orgs = rows
        .iter()
        .map(|r| {
            let billing = PeriodBilling {
                tier: r.tier.parse().unwrap_or_default(),
                usage: billed_usage(r.traces, r.payload_bytes),
                known: true,
                final_invoice: None,
                correction: None,
            };
            let fields = usage_billing(&state.pricing, &r.org_id, period, &billing);
            ListedOrgShown {
                org_id: r.org_id.clone(),
                name: r.name.clone(),
                tier: fields.tier,
                traces: r.traces,
                payload_bytes: r.payload_bytes,
                included: fields.included,
                percent_used: fields.percent_used,
                warnings: fields.warnings,
                draft_total_cents: fields.cost.total_cents,
            }
        })
        .collect();
    Ok(Json(OrgList { period: period.to_string(), sort, order, total, orgs, next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = Cursor {
            sort: SortKey::Traces,
            order: Order::Desc,
            number: Some(42),
            text: None,
            org_id: "acme".into(),
        };
        assert_eq!(Cursor::from_token(&c.to_token()), Some(c));
        assert_eq!(Cursor::from_token("zz"), None);
        assert_eq!(Cursor::from_token(&hex::encode(b"{}")), None);
    }
}
