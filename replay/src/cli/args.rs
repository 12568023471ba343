//! The command line: commands, flags, and failures with stable codes.

use tally_metering::Period;

pub(crate) const USAGE: &str = "usage: replay invoice --org ORG --period YYYY-MM [--pricing FILE] [--json]
       replay verify --period YYYY-MM [--pricing FILE] [--threads N] [--json]
       replay correct --org ORG --period YYYY-MM [--reason TEXT] [--pricing FILE] [--no-wait] [--json]
       replay rebuild [--into SCHEMA] [--json]
exit status: 0 identical (or done), 1 different, 2 error
settings: TALLY_KAFKA_BROKERS, TALLY_DATABASE_URL, TALLY_NAMESPACE, TALLY_GRACE_HOURS, TALLY_PRICING_FILE";

/// What a command concluded.
pub(crate) enum Conclusion {
    Identical,
    Different,
}

/// A failure with a stable code, for `--json` and for people.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure { code: "replay_failed", message: format!("{e:#}") }
    }
}

pub(crate) fn failure(code: &'static str, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into() }
}

pub(crate) struct Args {
    pub(crate) command: String,
    pub(crate) rest: Vec<String>,
    pub(crate) json: bool,
}

impl Args {
    pub(crate) fn flag(&self, name: &str) -> Result<Option<String>, Failure> {
        match self.rest.iter().position(|a| a == name) {
            None => Ok(None),
            Some(i) => match self.rest.get(i + 1) {
                Some(v) if !v.starts_with("--") => Ok(Some(v.clone())),
                _ => Err(failure("invalid_arguments", format!("{name} needs a value\n{USAGE}"))),
            },
        }
    }

    pub(crate) fn required(&self, name: &str) -> Result<String, Failure> {
        self.flag(name)?
            .ok_or_else(|| failure("invalid_arguments", format!("{name} is required\n{USAGE}")))
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.rest.iter().any(|a| a == name)
    }

    pub(crate) fn period(&self) -> Result<Period, Failure> {
        self.required("--period")?.parse().map_err(|e: tally_metering::period::ParsePeriodError| {
            failure("invalid_period", e.to_string())
        })
    }

    /// Refuses flags the command does not know, so a typo never runs a different command.
    pub(crate) fn check_known(&self, valued: &[&str], switches: &[&str]) -> Result<(), Failure> {
        let mut i = 0;
        while i < self.rest.len() {
            let a = self.rest[i].as_str();
            if valued.contains(&a) {
                i += 2;
            } else if switches.contains(&a) || a == "--json" {
                i += 1;
            } else {
                return Err(failure(
                    "invalid_arguments",
                    format!("unknown argument {a:?} for {}\n{USAGE}", self.command),
                ));
            }
        }
        Ok(())
    }
}
