#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tally_common::{settings::Common, shutdown::Shutdown, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    telemetry::init("ingest");
    let settings = match Common::from_env().and_then(tally_ingest::Settings::from_env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ingest: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match tally_ingest::run(settings, Shutdown::on_signals()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingest: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
