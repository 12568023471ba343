//! Request rates per key (docs/security.md): each key may make `TALLY_RATE_LIMIT_PER_SEC`
//! requests a second on average, in bursts of up to `TALLY_RATE_LIMIT_BURST`; beyond, ingest and
//! the api answer 429 `rate_limited` with `Retry-After`. GCRA, one state per key, from `governor`
//! (the rate limiter of the field; a hand-written token bucket would be the same thing with
//! fewer eyes on it). The defaults (2,000 a second, bursts of 4,000) are above anything the
//! benchmarks send with one key; `TALLY_RATE_LIMIT_PER_SEC=0` turns the limit off.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::settings::{var_or, SettingError};

/// One limiter for the keys of one service.
pub struct KeyRates {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl KeyRates {
    pub fn from_env() -> Result<KeyRates, SettingError> {
        let per_sec: u32 = var_or("TALLY_RATE_LIMIT_PER_SEC", "2000")?;
        let burst: u32 = var_or("TALLY_RATE_LIMIT_BURST", "4000")?;
        Ok(KeyRates::new(per_sec, burst))
    }

    /// `per_sec` requests a second per key, bursts of `burst` (at least `per_sec`); 0: no limit.
    pub fn new(per_sec: u32, burst: u32) -> KeyRates {
        let limiter = NonZeroU32::new(per_sec).map(|rate| {
            let burst = NonZeroU32::new(burst.max(per_sec)).unwrap_or(rate);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        KeyRates { limiter }
    }

    /// Takes one request of `key` (a key's id or hash, never its secret): `Err(seconds)` to wait
    /// when the key is over its rate.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check_key(&key.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Forgets keys that are back at a full burst (call now and then: memory stays bounded by
    /// the keys active recently).
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// Forgets idle keys once a minute until shutdown.
pub async fn forget_idle_forever(
    rates: std::sync::Arc<KeyRates>,
    shutdown: crate::shutdown::Shutdown,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => rates.forget_idle(),
            _ = shutdown.clone().requested() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_over_its_burst_waits_and_others_do_not() {
        let rates = KeyRates::new(1, 3);
        for _ in 0..3 {
            assert_eq!(rates.check("a"), Ok(()));
        }
        assert_eq!(rates.check("a"), Err(1));
        assert_eq!(rates.check("b"), Ok(()));
        let off = KeyRates::new(0, 0);
        assert!((0..10_000).all(|_| off.check("a").is_ok()));
    }
}
