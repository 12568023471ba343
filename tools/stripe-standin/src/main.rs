//! `stripe-standin`: serves the stand-in on `STRIPE_STANDIN_ADDR` (default 127.0.0.1:12111);
//! `STRIPE_STANDIN_API_KEY` the one key accepted; `STRIPE_STANDIN_WEBHOOK_URL` and
//! `STRIPE_STANDIN_WEBHOOK_SECRET` where events are delivered, signed with the secret;
//! `STRIPE_STANDIN_STATE_FILE` where the state is kept across restarts (none: forgotten at exit).
//! Exits 1 when the state file cannot be read or parsed, rather than start empty over it.

use tally_stripe_standin::webhook::Endpoint;
use tally_stripe_standin::{run, Config};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tally_common::telemetry::init("stripe-standin");
    let addr = env("STRIPE_STANDIN_ADDR").unwrap_or_else(|| "127.0.0.1:12111".into());
    let addr = match addr.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("stripe-standin: STRIPE_STANDIN_ADDR {addr:?}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let webhook = match (env("STRIPE_STANDIN_WEBHOOK_URL"), env("STRIPE_STANDIN_WEBHOOK_SECRET")) {
        (None, _) => None,
        (Some(_), None) => {
            eprintln!(
                "stripe-standin: STRIPE_STANDIN_WEBHOOK_URL needs STRIPE_STANDIN_WEBHOOK_SECRET"
            );
            return std::process::ExitCode::from(2);
        }
        (Some(url), Some(secret)) => match Endpoint::new(&url, &secret) {
            Ok(endpoint) => Some(endpoint),
            Err(e) => {
                eprintln!("stripe-standin: STRIPE_STANDIN_WEBHOOK_URL: {e}");
                return std::process::ExitCode::from(2);
            }
        },
    };
    let state_file = env("STRIPE_STANDIN_STATE_FILE").map(std::path::PathBuf::from);
    let config = Config { addr, api_key: env("STRIPE_STANDIN_API_KEY"), webhook, state_file };
    match run(config, tally_common::shutdown::Shutdown::on_signals()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stripe-standin: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
