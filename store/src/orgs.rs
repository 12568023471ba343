//! `orgs`: the registry, and the operator's sorted, searched, paged list of orgs with this
//! period's usage.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

/// Every registered org's id (ingest holds them in memory).
pub async fn ids(db: &mut PgConnection) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT org_id FROM orgs").fetch_all(&mut *db).await
}

/// Registers an org; `None` when `org_id` is taken.
pub async fn create(
    db: &mut PgConnection,
    org_id: &str,
    name: &str,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    let created: Option<(DateTime<Utc>,)> = sqlx::query_as(
        "INSERT INTO orgs (org_id, name) VALUES ($1, $2) ON CONFLICT (org_id) DO NOTHING RETURNING created_at",
    )
    .bind(org_id)
    .bind(name)
    .fetch_optional(&mut *db)
    .await?;
    Ok(created.map(|(created_at,)| created_at))
}

/// Whether `org_id` is a registered org.
pub async fn exists<'e>(db: impl sqlx::PgExecutor<'e>, org_id: &str) -> sqlx::Result<bool> {
    let found: Option<(String,)> = sqlx::query_as("SELECT org_id FROM orgs WHERE org_id = $1")
        .bind(org_id)
        .fetch_optional(db)
        .await?;
    Ok(found.is_some())
}

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
    /// The SQL of the sort value, over the columns of the inner query of [`list`]; numbers
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

    /// Whether the sort value is a number (else text).
    pub fn numeric(self) -> bool {
        !matches!(self, SortKey::OrgId | SortKey::Name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    Asc,
    Desc,
}

/// Where the previous page ended: its last row's sort value (a number or a text, as the sort
/// is) and org id.
pub struct ListPosition {
    pub number: Option<i64>,
    pub text: Option<String>,
    pub org_id: String,
}

/// One page of the operator's list, as [`list`] asks for it.
pub struct ListRequest<'a> {
    /// `YYYY-MM`: the period whose usage is shown.
    pub period: String,
    pub sort: SortKey,
    pub order: Order,
    /// Words to find in org ids and names (case-insensitive), if any.
    pub search: Option<&'a str>,
    pub after: Option<ListPosition>,
    /// Rows to read (one more than the page, to know whether another follows).
    pub limit: i64,
    /// Every tier's name and included traces and payload bytes, in the same order (for the tier
    /// sort and the percentage).
    pub tier_names: Vec<&'a str>,
    pub included_traces: Vec<i64>,
    pub included_bytes: Vec<i64>,
}

/// One org of the list with its usage of the period.
#[derive(sqlx::FromRow)]
pub struct ListedOrg {
    pub org_id: String,
    pub name: String,
    pub tier: String,
    pub traces: i64,
    pub payload_bytes: i64,
    pub sort_number: Option<i64>,
    pub sort_text: Option<String>,
    /// How many orgs the search finds (the same on every row).
    pub total: i64,
}

/// A page of orgs, sorted and cut after `request.after`; an org without usage this period has
/// the tier of its latest earlier period (tiers carry over), else starter.
pub async fn list(
    db: &mut PgConnection,
    request: &ListRequest<'_>,
) -> sqlx::Result<Vec<ListedOrg>> {
    let sort = request.sort;
    let (direction, compare) = match request.order {
        Order::Asc => ("ASC", ">"),
        Order::Desc => ("DESC", "<"),
    };
    let tier = "coalesce(u.tier, (SELECT e.tier FROM usage_periods e WHERE e.org_id = o.org_id AND e.period < $1
                                  ORDER BY e.period DESC LIMIT 1), 'starter')";
    let key = sort.sql().replace("TIER", tier);
    let (number_key, text_key) =
        if sort.numeric() { ("p.k", "NULL::text") } else { ("NULL::bigint", "p.k::text") };
    let after = match (&request.after, sort.numeric()) {
        (None, _) => String::new(),
        (Some(_), true) => {
            format!("WHERE (k, org_id COLLATE \"C\") {compare} ($6::bigint, $8::text COLLATE \"C\")")
        }
        (Some(_), false) => format!(
            "WHERE (k, org_id COLLATE \"C\") {compare} ($7::text COLLATE \"C\", $8::text COLLATE \"C\")"
        ),
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
    let after = request.after.as_ref();
    sqlx::query_as(&sql)
        .bind(&request.period)
        .bind(&request.tier_names)
        .bind(&request.included_traces)
        .bind(&request.included_bytes)
        .bind(like_pattern(request.search))
        .bind(after.and_then(|a| a.number))
        .bind(after.and_then(|a| a.text.clone()))
        .bind(after.map(|a| a.org_id.clone()))
        .bind(request.limit)
        .fetch_all(&mut *db)
        .await
}

/// How many orgs a search finds (all of them without one).
pub async fn count_matching(db: &mut PgConnection, search: Option<&str>) -> sqlx::Result<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM orgs o WHERE $1::text IS NULL OR o.org_id ILIKE $1 OR o.name ILIKE $1",
    )
    .bind(like_pattern(search))
    .fetch_one(&mut *db)
    .await?;
    Ok(n)
}

/// The `ILIKE` pattern that finds `search` anywhere, its wildcards escaped.
fn like_pattern(search: Option<&str>) -> Option<String> {
    search.map(|q| format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")))
}
