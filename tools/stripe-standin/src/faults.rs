//! Fault injection (`/_standin/faults`): shares of API requests answered 429 or 500 before
//! anything is done, or answered late after the work is done (a client timing out must retry
//! safely). Shares are `f64` probabilities, never money.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::store::StripeError;

/// Injected faults, as shares of requests (0.0 to 1.0).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Answer 429 `rate_limit` before doing anything.
    pub rate_429: f64,
    /// Answer 500 `api_error` before doing anything.
    pub rate_500: f64,
    /// Do the work, then answer only after `slow_ms` (a client timing out must retry safely).
    pub rate_slow: f64,
    pub slow_ms: u64,
}

impl Faults {
    /// Each share within 0..1, and all of them adding up to at most 1.
    pub fn shares_are_valid(&self) -> bool {
        let shares = [self.rate_429, self.rate_500, self.rate_slow];
        shares.iter().all(|s| (0.0..=1.0).contains(s)) && shares.iter().sum::<f64>() <= 1.0
    }
}

/// The fault drawn for one request.
pub(crate) enum InjectedFault {
    None,
    /// Answer this error at once.
    Status(StripeError),
    /// Do the work, answer after this long.
    Slow(Duration),
}

/// Draws the fault for one request.
pub(crate) fn pick_fault(faults: &Faults) -> InjectedFault {
    let roll: f64 = rand::rng().random();
    if roll < faults.rate_429 {
        InjectedFault::Status(StripeError {
            status: 429,
            kind: "invalid_request_error",
            code: Some("rate_limit"),
            param: None,
            message: "Request rate limit exceeded. (injected by the stand-in)".into(),
        })
    } else if roll < faults.rate_429 + faults.rate_500 {
        InjectedFault::Status(StripeError {
            status: 500,
            kind: "api_error",
            code: None,
            param: None,
            message: "An unknown error occurred. (injected by the stand-in)".into(),
        })
    } else if roll < faults.rate_429 + faults.rate_500 + faults.rate_slow {
        InjectedFault::Slow(Duration::from_millis(faults.slow_ms))
    } else {
        InjectedFault::None
    }
}
