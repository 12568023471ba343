//! `billing-reporter`: the service (no arguments, or `run`) and its operator commands.

use std::process::ExitCode;

use tally_billing_reporter::{ledger, reconcile, report, settings, setup, status};
use tally_common::settings::Common;
use tally_metering::period::Period;

const USAGE: &str = "usage: billing-reporter [run]
       billing-reporter setup-stripe
       billing-reporter status [--json]
       billing-reporter reconcile [--period YYYY-MM] [--org ORG] [--json]   (exit 1 when there is drift)
       billing-reporter retry-failed [--org ORG]";

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--name value` from the arguments after the command.
fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("billing-reporter: {e}");
    ExitCode::FAILURE
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map(String::as_str).unwrap_or("run");
    if command == "run" {
        return tally_common::service_main(
            "billing-reporter",
            settings::Settings::from_env,
            report::run,
        )
        .await;
    }
    tally_common::telemetry::init("billing-reporter");
    let known = ["setup-stripe", "status", "reconcile", "retry-failed"];
    if !known.contains(&command) {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let common = match Common::from_env("billing-reporter") {
        Ok(c) => c,
        Err(e) => {
            eprintln!("billing-reporter: {e}");
            return ExitCode::from(2);
        }
    };
    let json = args.iter().any(|a| a == "--json");
    let stripe = || settings::StripeSettings::from_env();
    match command {
        "setup-stripe" => {
            let (pricing, stripe) =
                match (common.pricing_file.load(tally_pricing::Pricing::configured), stripe()) {
                    (Ok(p), Ok(s)) => (p, s),
                    (Err(e), _) | (_, Err(e)) => {
                        eprintln!("billing-reporter: {e}");
                        return ExitCode::from(2);
                    }
                };
            match setup::setup_stripe(&stripe.client(), &pricing).await {
                Ok(ids) => {
                    println!("{}", serde_json::to_string_pretty(&ids).expect("ids serialise"));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("setting up Stripe at {}: {e}", stripe.api_base)),
            }
        }
        "status" => {
            let pool = match tally_store::connect(&common.database_url, 2).await {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            match status::status(&pool).await {
                Ok(s) if json => {
                    println!("{}", serde_json::to_string_pretty(&s).expect("status serialises"));
                    ExitCode::SUCCESS
                }
                Ok(s) => {
                    print!("{}", status::render(&s));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        "retry-failed" => {
            let pool = match tally_store::connect(&common.database_url, 2).await {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            match ledger::retry_failed(&pool, flag(&args, "--org").as_deref()).await {
                Ok(n) => {
                    println!("{n} ledger rows will be reported again at the next cycle");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        _ => {
            let period = match flag(&args, "--period") {
                Some(p) => match p.parse::<Period>() {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("billing-reporter: --period: {e}");
                        return ExitCode::from(2);
                    }
                },
                None => Period::containing(chrono::Utc::now()),
            };
            let stripe = match stripe() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("billing-reporter: {e}");
                    return ExitCode::from(2);
                }
            };
            let pool = match tally_store::connect(&common.database_url, 2).await {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            match reconcile::reconcile(
                &pool,
                &stripe.client(),
                period,
                flag(&args, "--org").as_deref(),
            )
            .await
            {
                Ok(lines) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&lines).expect("lines serialise")
                        );
                    } else {
                        print!("{}", reconcile::table(&lines));
                    }
                    if lines.iter().any(reconcile::Line::drift) {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => fail(e),
            }
        }
    }
}
