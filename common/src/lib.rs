//! Plumbing shared by Tally's services, kept small so each stage reads on its own. PostgreSQL's
//! schema and queries are `tally-store`'s; prices are `tally-pricing`'s.
//!
//! Layout:
//! - [`settings`]: reading typed settings from the environment; [`settings::Secret`] never prints.
//! - [`telemetry`]: logging setup.
//! - [`kafka`]: client configuration, the start-up broker check, topic creation.
//! - [`health`]: whether a stage makes progress (what `/readyz` answers), judged from evidence.
//! - [`probes`]: `/healthz`, `/readyz` and `/metrics`, served by every service on its address.
//! - [`keys`]: how API keys are generated and hashed.
//! - [`retry`]: backoff, and runs of failures logged once.
//! - [`shutdown`]: the signal every service stops on.

pub mod health;
pub mod http;
pub mod kafka;
pub mod keys;
pub mod probes;
pub mod rate;
pub mod retry;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

/// The whole `main` of a Tally service: logging, typed settings (exit 2 with one line if they are
/// invalid), the run until SIGINT/SIGTERM, and one line naming what failed (exit 1).
pub async fn service_main<S, F, Fut>(
    service: &'static str,
    settings: impl FnOnce(settings::Common) -> Result<S, settings::SettingError>,
    run: F,
) -> std::process::ExitCode
where
    F: FnOnce(S, shutdown::Shutdown) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    telemetry::init(service);
    let settings = match settings::Common::from_env(service)
        .and_then(|common| {
            tally_schemas::set_namespace(&common.namespace)
                .map_err(|message| settings::SettingError { name: "TALLY_NAMESPACE", message })?;
            Ok(common)
        })
        .and_then(settings)
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{service}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(settings, shutdown::Shutdown::on_signals()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{service}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
