//! Typed settings from environment variables, with defaults that work with `make up`.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// A setting that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("setting {name}: {message}")]
pub struct SettingError {
    pub name: &'static str,
    pub message: String,
}

/// Reads `name`, or `default` when it is unset or empty.
pub fn var_or<T: FromStr>(name: &'static str, default: &str) -> Result<T, SettingError>
where
    T::Err: fmt::Display,
{
    let raw = std::env::var(name).ok().filter(|v| !v.is_empty());
    let raw = raw.as_deref().unwrap_or(default);
    raw.parse().map_err(|e: T::Err| SettingError { name, message: format!("{raw:?}: {e}") })
}

/// `TALLY_GRACE_HOURS` (default 48, at most a year): how long after its end a period accepts
/// events. Part of what the log means. The one reader of it: [`Common::grace`] holds it for every
/// service and the replay tool, and the load generator calls it.
pub fn grace() -> Result<chrono::Duration, SettingError> {
    let hours: i64 = var_or("TALLY_GRACE_HOURS", "48")?;
    if !(0..=24 * 366).contains(&hours) {
        return Err(SettingError { name: "TALLY_GRACE_HOURS", message: "must be 0-8784".into() });
    }
    Ok(chrono::Duration::hours(hours))
}

/// Reads a required secret.
pub fn secret(name: &'static str) -> Result<Secret, SettingError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(Secret(v)),
        _ => Err(SettingError { name, message: "is required".into() }),
    }
}

/// `TALLY_PRICING_FILE`: the price list's file, or `None` for the built-in list. The settings
/// hold the path only and the pricing crate loads it ([`PricingPath::load`] takes its loader), so
/// the plumbing does not depend on prices.
#[derive(Debug, Clone, Default)]
pub struct PricingPath(pub Option<std::path::PathBuf>);

impl PricingPath {
    /// Loads the price list with `load` (`tally_pricing::Pricing::configured`); a failure names
    /// the setting.
    pub fn load<T, E: fmt::Display>(
        &self,
        load: impl FnOnce(Option<&std::path::Path>) -> Result<T, E>,
    ) -> Result<T, SettingError> {
        load(self.0.as_deref())
            .map_err(|e| SettingError { name: "TALLY_PRICING_FILE", message: e.to_string() })
    }
}

/// The settings every service shares.
#[derive(Debug, Clone)]
pub struct Common {
    pub kafka_brokers: String,
    pub database_url: Secret,
    /// How many partitions Tally creates its topics with (`TALLY_KAFKA_PARTITIONS`).
    pub kafka_partitions: i32,
    /// The replication factor Tally creates its topics with (`TALLY_KAFKA_REPLICATION`; 1 for the
    /// single local broker, 3 in production).
    pub kafka_replication: i32,
    /// Distinguishes instances of one stage (`TALLY_INSTANCE_ID`); part of the aggregator's
    /// transactional id, so it must be stable across restarts of one instance.
    pub instance_id: String,
    /// A prefix on every topic, consumer group and transactional id (`TALLY_NAMESPACE`, empty by
    /// default): separate deployments on one Kafka cluster.
    pub namespace: String,
    /// The price list's file (`TALLY_PRICING_FILE`; the built-in `pricing/2026-11.toml` when
    /// unset).
    pub pricing_file: PricingPath,
    /// How long a stage may go without progress while work waits before `/readyz` fails
    /// (`TALLY_STALL_SECS`, default 30; see `health`).
    pub stall_after: std::time::Duration,
    /// How long after its end a period accepts events ([`grace`]).
    pub grace: chrono::Duration,
    /// `TALLY_HTTP_*`: what every listener holds its clients to ([`crate::http`]).
    pub http: crate::http::Limits,
}

impl Common {
    /// A stage's health, judged with this deployment's stall bound.
    pub fn health(&self, stage: &'static str) -> crate::health::Health {
        crate::health::Health::new(stage, self.stall_after)
    }

    /// The settings of `program` (`ingest`, `api`, `replay`, ...), which connects to PostgreSQL
    /// as its own role unless `TALLY_DATABASE_URL` says otherwise (store migration 0009).
    pub fn from_env(program: &str) -> Result<Common, SettingError> {
        let role = match program {
            "ingest" => "tally_ingest",
            "projector" => "tally_projector",
            "api" => "tally_api",
            "billing-reporter" => "tally_reporter",
            // replay rebuilds read models: it needs the owner's rights.
            _ => "tally_owner",
        };
        Ok(Common {
            kafka_brokers: var_or("TALLY_KAFKA_BROKERS", "127.0.0.1:9092")?,
            database_url: Secret(var_or(
                "TALLY_DATABASE_URL",
                &format!("postgres://{role}@127.0.0.1:5432/tally"),
            )?),
            kafka_partitions: var_or("TALLY_KAFKA_PARTITIONS", "8")?,
            kafka_replication: var_or("TALLY_KAFKA_REPLICATION", "1")?,
            instance_id: var_or("TALLY_INSTANCE_ID", "0")?,
            namespace: var_or("TALLY_NAMESPACE", "")?,
            pricing_file: PricingPath(
                std::env::var_os("TALLY_PRICING_FILE").filter(|v| !v.is_empty()).map(Into::into),
            ),
            stall_after: std::time::Duration::from_secs(var_or("TALLY_STALL_SECS", "30")?),
            grace: grace()?,
            http: crate::http::Limits::from_env()?,
        })
    }
}

/// A listening address setting.
pub fn addr(name: &'static str, default: &str) -> Result<SocketAddr, SettingError> {
    var_or(name, default)
}

/// A value that must never appear in logs, errors or metrics. `Debug` and `Display` print
/// `[redacted]`; the value is read with [`Secret::expose`] only where it is used.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("postgres://user:hunter2@db/tally");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "postgres://user:hunter2@db/tally");
    }
}
