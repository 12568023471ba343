//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).

pub fn init(service: &'static str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sqlx=warn,rdkafka=warn,stripe=error")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
    tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
}

/// Logging for a command-line tool: warnings and errors only, on standard error (its results go
/// to standard output). `RUST_LOG` still overrides.
pub fn init_tool() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=warn,rdkafka=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}
