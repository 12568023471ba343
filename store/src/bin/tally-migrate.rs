//! `tally-migrate`: brings Tally's PostgreSQL schema up to this build's, as the role that owns it.
//!
//! Run it before starting (or upgrading) the services: they connect as roles that cannot change
//! the schema, and refuse to start on a schema older than they need. `make up` and
//! docker-compose run it; so do the end-to-end tests. Settings: `TALLY_DATABASE_URL`, the
//! owner's URL (default `postgres://tally_owner@127.0.0.1:5432/tally`).

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let url = match tally_common::settings::var_or::<String>(
        "TALLY_DATABASE_URL",
        "postgres://tally_owner@127.0.0.1:5432/tally",
    ) {
        Ok(url) => tally_common::settings::Secret::new(url),
        Err(e) => {
            eprintln!("tally-migrate: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match tally_store::migrate(&url).await {
        Ok(m) if m.before == m.after => {
            println!("tally-migrate: the schema is at migration {}, nothing to do", m.after);
            std::process::ExitCode::SUCCESS
        }
        Ok(m) => {
            println!("tally-migrate: the schema went from migration {} to {}", m.before, m.after);
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tally-migrate: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
