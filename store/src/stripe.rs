//! What Tally stores of Stripe: `checkout_sessions` (the sessions Tally created),
//! `stripe_customers` (an org's customer and subscription),
//! `stripe_invoices` (Stripe's invoice of a period, beside Tally's) and
//! `stripe_webhook_events` (every verified event, once, with its processing).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use crate::Tx;

// ---- checkout_sessions -----------------------------------------------------------------------

/// Locks the org's row for the rest of `tx`: Checkouts of one org are started one at a time.
/// `FOR NO KEY UPDATE`, so that rows referencing the org (keys, sessions) can still be written
/// meanwhile.
pub async fn lock_org_for_checkout(tx: &mut Tx<'_>, org_id: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT 1 FROM orgs WHERE org_id = $1 FOR NO KEY UPDATE")
        .bind(org_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The org's open Checkout Session, if any (at most one: a unique index).
pub async fn open_checkout_session(tx: &mut Tx<'_>, org_id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT session_id FROM checkout_sessions WHERE org_id = $1 AND state = 'open'",
    )
    .bind(org_id)
    .fetch_optional(&mut **tx)
    .await
}

/// Marks a session expired (Stripe expired it, or it ran out).
pub async fn expire_checkout_session(tx: &mut Tx<'_>, session_id: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE checkout_sessions SET state = 'expired' WHERE session_id = $1 AND state = 'open'",
    )
    .bind(session_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records a Checkout Session Tally created for `org_id`, open.
pub async fn record_checkout_session(
    tx: &mut Tx<'_>,
    session_id: &str,
    org_id: &str,
    tier: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO checkout_sessions (session_id, org_id, tier) VALUES ($1, $2, $3)
         ON CONFLICT (session_id) DO NOTHING",
    )
    .bind(session_id)
    .bind(org_id)
    .bind(tier)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The tier of a Checkout Session Tally created for `org_id`, marked completed; `None` when
/// Tally did not create that session for that org.
pub async fn complete_checkout_session(
    tx: &mut Tx<'_>,
    session_id: &str,
    org_id: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "UPDATE checkout_sessions SET completed_at = COALESCE(completed_at, now()), state = 'complete'
          WHERE session_id = $1 AND org_id = $2 RETURNING tier",
    )
    .bind(session_id)
    .bind(org_id)
    .fetch_optional(&mut **tx)
    .await
}

// ---- stripe_customers ------------------------------------------------------------------------

/// An org's link to Stripe.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CustomerLink {
    pub customer_id: String,
    pub subscription_id: Option<String>,
    pub subscription_status: Option<String>,
}

/// The org's Stripe link, if it has one.
pub async fn customer_link(
    db: &mut PgConnection,
    org_id: &str,
) -> sqlx::Result<Option<CustomerLink>> {
    sqlx::query_as(
        "SELECT customer_id, subscription_id, subscription_status FROM stripe_customers WHERE org_id = $1",
    )
    .bind(org_id)
    .fetch_optional(&mut *db)
    .await
}

/// The org a Stripe customer is linked to, if any.
pub async fn org_of_customer(tx: &mut Tx<'_>, customer_id: &str) -> sqlx::Result<Option<String>> {
    let found: Option<(String,)> =
        sqlx::query_as("SELECT org_id FROM stripe_customers WHERE customer_id = $1")
            .bind(customer_id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(found.map(|(org_id,)| org_id))
}

/// Links org, customer and subscription (status `active`) as of event time `created`, unless a
/// newer event of the org was already applied; returns whether it linked.
pub async fn link_checkout(
    tx: &mut Tx<'_>,
    org_id: &str,
    customer_id: &str,
    subscription_id: Option<&str>,
    created: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let linked = sqlx::query(
        "INSERT INTO stripe_customers (org_id, customer_id, subscription_id, subscription_status, linked_at, event_created)
         VALUES ($1, $2, $3, 'active', $4, $4)
         ON CONFLICT (org_id) DO UPDATE
             SET customer_id = EXCLUDED.customer_id, subscription_id = EXCLUDED.subscription_id,
                 subscription_status = 'active', event_created = EXCLUDED.event_created, updated_at = now()
             WHERE stripe_customers.event_created IS NULL OR stripe_customers.event_created <= EXCLUDED.event_created",
    )
    .bind(org_id)
    .bind(customer_id)
    .bind(subscription_id)
    .bind(created)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(linked > 0)
}

/// The org's subscription as last applied, with the time of the event that applied it.
#[derive(sqlx::FromRow)]
pub struct LinkedSubscription {
    pub subscription_id: Option<String>,
    pub subscription_status: Option<String>,
    pub event_created: Option<DateTime<Utc>>,
}

/// The org's link, locked until `tx` ends: events of one org are applied one at a time.
pub async fn lock_subscription(
    tx: &mut Tx<'_>,
    org_id: &str,
) -> sqlx::Result<Option<LinkedSubscription>> {
    sqlx::query_as(
        "SELECT subscription_id, subscription_status, event_created FROM stripe_customers WHERE org_id = $1 FOR UPDATE",
    )
    .bind(org_id)
    .fetch_optional(&mut **tx)
    .await
}

/// Records the org's subscription and its status as of event time `created`.
pub async fn update_subscription(
    tx: &mut Tx<'_>,
    org_id: &str,
    subscription_id: &str,
    status: &str,
    created: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE stripe_customers SET subscription_id = $2, subscription_status = $3, event_created = $4, updated_at = now()
         WHERE org_id = $1",
    )
    .bind(org_id)
    .bind(subscription_id)
    .bind(status)
    .bind(created)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

// ---- stripe_invoices -------------------------------------------------------------------------

/// Stripe's invoice of one period of an org.
#[derive(sqlx::FromRow)]
pub struct StripeInvoiceRow {
    pub period: String,
    pub invoice_id: String,
    pub status: String,
    pub total_cents: i64,
    pub currency: String,
}

/// Stripe's invoices of an org (of one period `YYYY-MM`, or all).
pub async fn invoices(
    db: &mut PgConnection,
    org_id: &str,
    period: Option<&str>,
) -> sqlx::Result<Vec<StripeInvoiceRow>> {
    sqlx::query_as(
        "SELECT period, invoice_id, status, total_cents, currency FROM stripe_invoices
         WHERE org_id = $1 AND ($2::text IS NULL OR period = $2)",
    )
    .bind(org_id)
    .bind(period)
    .fetch_all(&mut *db)
    .await
}

/// Stores Stripe's invoice of a period as of event time `created`, unless a newer event of it
/// was already applied; returns whether it stored.
pub async fn store_invoice(
    tx: &mut Tx<'_>,
    org_id: &str,
    invoice: &StripeInvoiceRow,
    created: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let stored = sqlx::query(
        "INSERT INTO stripe_invoices (org_id, period, invoice_id, status, total_cents, currency, event_created)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (org_id, period) DO UPDATE
             SET invoice_id = EXCLUDED.invoice_id, status = EXCLUDED.status, total_cents = EXCLUDED.total_cents,
                 currency = EXCLUDED.currency, event_created = EXCLUDED.event_created, updated_at = now()
             WHERE stripe_invoices.event_created <= EXCLUDED.event_created",
    )
    .bind(org_id)
    .bind(&invoice.period)
    .bind(&invoice.invoice_id)
    .bind(&invoice.status)
    .bind(invoice.total_cents)
    .bind(&invoice.currency)
    .bind(created)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(stored == 1)
}

// ---- stripe_webhook_events -------------------------------------------------------------------

/// Stores a verified event once, by its id; returns whether it is new (`false`: a redelivery).
pub async fn insert_event(
    db: &mut PgConnection,
    event_id: &str,
    kind: &str,
    created: DateTime<Utc>,
    payload: &Value,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO stripe_webhook_events (event_id, type, created, payload) VALUES ($1, $2, $3, $4)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(kind)
    .bind(created)
    .bind(payload)
    .execute(&mut *db)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// A stored event waiting to be processed.
#[derive(sqlx::FromRow)]
pub struct PendingEvent {
    pub payload: Value,
    pub created: DateTime<Utc>,
}

/// The event, if it is unprocessed and nobody else holds it: locked until `tx` ends.
pub async fn lock_unprocessed_event(
    tx: &mut Tx<'_>,
    event_id: &str,
) -> sqlx::Result<Option<PendingEvent>> {
    sqlx::query_as(
        "SELECT payload, created FROM stripe_webhook_events
         WHERE event_id = $1 AND processed_at IS NULL FOR UPDATE SKIP LOCKED",
    )
    .bind(event_id)
    .fetch_optional(&mut **tx)
    .await
}

pub async fn mark_processed(tx: &mut Tx<'_>, event_id: &str, outcome: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE stripe_webhook_events SET processed_at = now(), outcome = $2 WHERE event_id = $1",
    )
    .bind(event_id)
    .bind(outcome)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Counts a failed attempt on the event, with its error.
pub async fn record_failed_attempt(
    db: &mut PgConnection,
    event_id: &str,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE stripe_webhook_events SET attempts = attempts + 1, last_error = $2 WHERE event_id = $1")
        .bind(event_id)
        .bind(error)
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// An event the sweeper gave up on: `max_attempts` failed attempts, still unprocessed.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct FailedEvent {
    pub event_id: String,
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    pub created: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// The events the sweeper gave up on, oldest first, at most 1,000.
pub async fn failed_events(
    db: &mut PgConnection,
    max_attempts: i32,
) -> sqlx::Result<Vec<FailedEvent>> {
    sqlx::query_as(
        "SELECT event_id, type, created, received_at, attempts, last_error FROM stripe_webhook_events
         WHERE processed_at IS NULL AND attempts >= $1 ORDER BY created, received_at LIMIT 1000",
    )
    .bind(max_attempts)
    .fetch_all(&mut *db)
    .await
}

/// How many events the sweeper gave up on.
pub async fn count_failed_events(db: &mut PgConnection, max_attempts: i32) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM stripe_webhook_events WHERE processed_at IS NULL AND attempts >= $1",
    )
    .bind(max_attempts)
    .fetch_one(&mut *db)
    .await
}

/// Gives events the sweeper gave up on a fresh set of attempts: those of `event_ids`, or all
/// when `None`. Returns the ids given back.
pub async fn reset_failed_events(
    db: &mut PgConnection,
    max_attempts: i32,
    event_ids: Option<&[String]>,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "UPDATE stripe_webhook_events SET attempts = 0
          WHERE processed_at IS NULL AND attempts >= $1 AND ($2::text[] IS NULL OR event_id = ANY($2))
          RETURNING event_id",
    )
    .bind(max_attempts)
    .bind(event_ids)
    .fetch_all(&mut *db)
    .await
}

/// Events left unprocessed for more than 5 seconds with fewer than `max_attempts` failed
/// attempts, oldest first, at most 500.
pub async fn interrupted_events(
    db: &mut PgConnection,
    max_attempts: i32,
) -> sqlx::Result<Vec<String>> {
    let ids: Vec<(String,)> = sqlx::query_as(
        "SELECT event_id FROM stripe_webhook_events
         WHERE processed_at IS NULL AND attempts < $1 AND received_at < now() - interval '5 seconds'
         ORDER BY created, received_at LIMIT 500",
    )
    .bind(max_attempts)
    .fetch_all(&mut *db)
    .await?;
    Ok(ids.into_iter().map(|(id,)| id).collect())
}
