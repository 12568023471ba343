//! `stripe-standin`: serves the stand-in on `STRIPE_STANDIN_ADDR` (default 127.0.0.1:12111).

use tally_stripe_standin::{run, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tally_common::telemetry::init("stripe-standin");
    let addr = std::env::var("STRIPE_STANDIN_ADDR").unwrap_or_else(|_| "127.0.0.1:12111".into());
    let config = match addr.parse() {
        Ok(addr) => Config { addr, api_key: std::env::var("STRIPE_STANDIN_API_KEY").ok().filter(|k| !k.is_empty()) },
        Err(e) => {
            eprintln!("stripe-standin: STRIPE_STANDIN_ADDR {addr:?}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(config, tally_common::shutdown::Shutdown::on_signals()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stripe-standin: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
