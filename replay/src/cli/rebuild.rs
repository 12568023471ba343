//! `replay rebuild`.

use tally_replay::progress::Progress;
use tally_replay::rebuild;

use super::args::{failure, Args, Conclusion, Failure};
use super::{pool, setup};

/// `replay rebuild`.
pub(crate) async fn rebuild(args: &Args) -> Result<Conclusion, Failure> {
    args.check_known(&["--into"], &[])?;
    let into = args.flag("--into")?;
    let ctx = setup(args)?;
    let pool = pool(&ctx.common).await?;
    let options: sqlx::postgres::PgConnectOptions =
        ctx.common.database_url.expose().parse().map_err(|e: sqlx::Error| {
            failure("invalid_setting", format!("TALLY_DATABASE_URL: {e}"))
        })?;
    let progress = Progress::new();
    let drawer = progress.draw(!args.json);
    let rebuilt =
        rebuild::rebuild(&pool, &options, &ctx.common.kafka_brokers, into.as_deref(), &progress)
            .await;
    drawer.finish();
    let rebuilt = rebuilt?;
    if args.json {
        println!("{}", serde_json::to_string(&rebuilt).expect("serialises"));
    } else {
        println!(
            "rebuilt the read models from {} records of the log, in schema {}",
            rebuilt.records, rebuilt.schema
        );
        for (table, n) in &rebuilt.rows {
            println!("  {table:<22} {n:>10} rows");
        }
        if let Some(old) = &rebuilt.replaced {
            println!("the replaced tables are in schema {old}; drop it when satisfied: DROP SCHEMA {old} CASCADE");
        }
    }
    Ok(Conclusion::Identical)
}
