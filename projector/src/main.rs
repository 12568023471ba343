#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tally_common::{settings::Common, shutdown::Shutdown, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    telemetry::init("projector");
    let settings = match Common::from_env().and_then(tally_projector::Settings::from_env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("projector: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match tally_projector::run(settings, Shutdown::on_signals()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("projector: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
