//! `replay`: recompute invoices from the log, verify them, correct them, rebuild read models.
//!
//! Exit status: 0 identical (or done), 1 different, 2 error (including a period the log does
//! not finalize yet). docs/replay.md is the manual.
//!
//! Layout: `cli/args.rs` reads the command line; `cli/mod.rs` what every command shares (the
//! settings, the database, the recomputation with its progress bar); one file per command
//! (`invoice.rs` for `invoice` and `correct`, `verify.rs`, `rebuild.rs`); `cli/render.rs` turns
//! their results into text for people. The work itself is the library (`tally_replay`).

use std::process::ExitCode;

use serde_json::json;

mod cli;

use cli::args::{failure, Args, Conclusion, USAGE};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let mut all: Vec<String> = std::env::args().skip(1).collect();
    if all.is_empty() || all[0] == "--help" || all[0] == "-h" {
        eprintln!("{USAGE}");
        return ExitCode::from(if all.is_empty() { 2 } else { 0 });
    }
    let command = all.remove(0);
    let args = Args { json: all.iter().any(|a| a == "--json"), command, rest: all };
    if !args.json {
        tally_common::telemetry::init_tool();
    }
    let result = match args.command.as_str() {
        "invoice" => cli::invoice::invoice(&args, false).await,
        "correct" => cli::invoice::invoice(&args, true).await,
        "verify" => cli::verify::verify(&args).await,
        "rebuild" => cli::rebuild::rebuild(&args).await,
        other => Err(failure("invalid_arguments", format!("unknown command {other:?}\n{USAGE}"))),
    };
    match result {
        Ok(Conclusion::Identical) => ExitCode::SUCCESS,
        Ok(Conclusion::Different) => ExitCode::from(1),
        Err(f) => {
            if args.json {
                println!("{}", json!({"error": {"code": f.code, "message": f.message}}));
            } else {
                eprintln!("replay: {}", f.message);
            }
            ExitCode::from(2)
        }
    }
}
