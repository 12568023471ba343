//! `billing-reporter setup-stripe`: finds or creates Tally's meters, products and prices in
//! Stripe (or the stand-in) and prints their ids as JSON.

use tally_billing_reporter::settings::StripeSettings;
use tally_billing_reporter::setup::setup_stripe;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tally_common::telemetry::init("billing-reporter");
    let command = std::env::args().nth(1).unwrap_or_default();
    if command != "setup-stripe" {
        eprintln!("usage: billing-reporter setup-stripe");
        return std::process::ExitCode::from(2);
    }
    let settings = match StripeSettings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("billing-reporter: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let pricing = match tally_common::settings::Common::from_env().and_then(|c| c.pricing()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("billing-reporter: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let client = match settings.client() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("billing-reporter: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match setup_stripe(&client, &pricing).await {
        Ok(ids) => {
            println!("{}", serde_json::to_string_pretty(&ids).expect("ids serialise"));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("billing-reporter: setting up Stripe at {}: {e}", settings.api_base);
            std::process::ExitCode::FAILURE
        }
    }
}
