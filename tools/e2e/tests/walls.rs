//! Orgs are walled off in the database too (store migration 0009, docs/security.md): the api's
//! role sees one org's rows per transaction whatever its queries ask for, cannot bypass or turn
//! off row-level security, and each service's role touches only the tables it needs.

use std::time::Duration;

use sqlx::{PgPool, Row};
use tally_e2e::{as_role, database_url, unique, Stack};
use tally_metering::Period;

/// Every relation of the schema with an `org_id` column: tables and views alike.
async fn org_keyed_relations(admin: &PgPool) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.columns
          WHERE table_schema = 'public' AND column_name = 'org_id' ORDER BY 1",
    )
    .fetch_all(admin)
    .await?)
}

/// Whether `e` is PostgreSQL refusing for want of a privilege (or of a passing policy).
fn refused(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("42501"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_without_its_org_filter_sees_one_org_only() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let api = stack.api();
    let (a, b) = (unique("wall-a-"), unique("wall-b-"));
    for org in [&a, &b] {
        api.ensure_org(org, "Walled org").await?;
        // Rows of each org in the usage read models, the keys and the page's links.
        let key = api.create_key(org, "ingest").await?;
        api.create_key(org, "read").await?;
        api.portal_link(org).await?;
        let sender = tally_loadgen::send::Sender::new(&stack.ingest_url(), &key);
        let ended = (chrono::Utc::now() - chrono::Duration::seconds(5))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = format!(
            r#"{{"event_id":"{org}-1","org_id":"{org}","trace_id":"t","span_id":"s","operation":"llm_call","status":"success","started_at":"{ended}","ended_at":"{ended}","payload_bytes":10}}"#
        );
        let answer = sender.send_body(body.into_bytes()).await?;
        assert_eq!(answer["accepted"], 1, "{answer}");
    }
    api.create_service_key(Some(&[a.clone(), b.clone()])).await?;
    let period = Period::containing(chrono::Utc::now()).to_string();
    for org in [&a, &b] {
        let usage =
            api.wait_for_usage(org, &period, Duration::from_secs(30), |u| u["traces"] == 1).await?;
        assert_eq!(usage["traces"], 1, "{usage}");
    }

    let admin = PgPool::connect(&database_url()).await?;
    let relations = org_keyed_relations(&admin).await?;
    for must in ["orgs", "api_keys", "api_key_orgs", "usage_periods", "usage_daily", "portal_links"]
    {
        assert!(relations.iter().any(|r| r == must), "{must} has an org_id: {relations:?}");
    }
    // The superuser sees b's rows: there is something for the wall to hide.
    let b_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_periods WHERE org_id = $1")
        .bind(&b)
        .fetch_one(&admin)
        .await?;
    assert_eq!(b_rows, 1);

    // The api's role: no superuser, no bypass.
    let api_pool = PgPool::connect(&as_role(&database_url(), "tally_api")).await?;
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&api_pool)
            .await?;
    assert!(!superuser && !bypass, "tally_api may bypass row-level security");

    // In a's transaction, every org-keyed relation, read without any filter, shows a's rows only.
    let wall = tally_store::OrgWall::new(api_pool.clone());
    for relation in &relations {
        let mut tx = wall.org(&a).await?;
        let seen = sqlx::query(&format!(
            "SELECT count(*) FILTER (WHERE org_id = $1) AS own, \
                    count(*) FILTER (WHERE org_id IS DISTINCT FROM $1) AS others FROM {relation}"
        ))
        .bind(&a)
        .fetch_one(&mut *tx)
        .await;
        match seen {
            Ok(row) => {
                let others: i64 = row.get("others");
                assert_eq!(others, 0, "{relation}: a's transaction sees other orgs' rows");
            }
            // Not granted to the api at all: walled off entirely.
            Err(e) if refused(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut tx = wall.org(&a).await?;
    let orgs: Vec<String> =
        sqlx::query_scalar("SELECT org_id FROM usage_periods").fetch_all(&mut *tx).await?;
    assert_eq!(orgs, vec![a.clone()], "usage_periods without a filter, in a's transaction");
    // Writing a row of another org from a's transaction is refused.
    let written = sqlx::query("UPDATE orgs SET name = 'taken' WHERE org_id = $1")
        .bind(&b)
        .execute(&mut *tx)
        .await?;
    assert_eq!(written.rows_affected(), 0, "a's transaction updated b's org");
    let inserted = sqlx::query("INSERT INTO orgs (org_id, name) VALUES ($1, 'smuggled')")
        .bind(unique("wall-c-"))
        .execute(&mut *tx)
        .await;
    assert!(inserted.as_ref().is_err_and(refused), "{inserted:?}");
    drop(tx);

    // Outside a transaction that set an org, the api's role sees no org's rows.
    let none: i64 =
        sqlx::query_scalar("SELECT count(*) FROM usage_periods").fetch_one(&api_pool).await?;
    assert_eq!(none, 0);
    // It cannot turn the wall off: not as owner, not with row_security = off.
    let disabled = sqlx::query("ALTER TABLE usage_periods DISABLE ROW LEVEL SECURITY")
        .execute(&api_pool)
        .await;
    assert!(disabled.as_ref().is_err_and(refused), "{disabled:?}");
    let mut conn = api_pool.acquire().await?;
    sqlx::query("SET row_security = off").execute(&mut *conn).await?;
    let off = sqlx::query("SELECT count(*) FROM usage_periods").execute(&mut *conn).await;
    assert!(off.is_err(), "row_security = off let the api's role read past the wall");
    drop(conn);

    // The other services' roles: what each needs, nothing else, and never the schema.
    for (role, forbidden) in [
        ("tally_ingest", "SELECT count(*) FROM usage_periods"),
        ("tally_ingest", "UPDATE api_keys SET scope = 'service'"),
        ("tally_projector", "SELECT count(*) FROM api_keys"),
        ("tally_reporter", "SELECT count(*) FROM page_sessions"),
        ("tally_reporter", "UPDATE usage_periods SET traces = 0"),
        ("tally_projector", "CREATE TABLE smuggled (x int)"),
        ("tally_api", "DROP TABLE usage_periods"),
    ] {
        let pool = PgPool::connect(&as_role(&database_url(), role)).await?;
        let result = sqlx::query(forbidden).execute(&pool).await;
        assert!(result.as_ref().is_err_and(refused), "{role}: {forbidden}: {result:?}");
        pool.close().await;
    }
    let projector = PgPool::connect(&as_role(&database_url(), "tally_projector")).await?;
    let seen: i64 =
        sqlx::query_scalar("SELECT count(*) FROM usage_periods WHERE org_id IN ($1, $2)")
            .bind(&a)
            .bind(&b)
            .fetch_one(&projector)
            .await?;
    assert_eq!(seen, 2, "the projector works across orgs");
    Ok(())
}
