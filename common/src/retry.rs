//! Trying again: capped exponential backoff with jitter ([`Backoff`]), and a run of failed
//! attempts that is logged once when it starts and once when it ends ([`Failures`]).

use std::time::Duration;

/// Capped exponential backoff with full jitter, for reconnecting after a failure: the n-th wait
/// is uniform in [0, min(cap, base * 2^n)], so instances that failed together do not retry in step.
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap, attempt: 0 }
    }

    /// The next wait.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.base.saturating_mul(1 << self.attempt.min(16)).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(rand::random::<f64>())
    }

    /// Success: the next failure starts from the base again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A run of failed attempts of one loop. Logging every attempt would bury the one line that
/// matters; the loop logs when a run starts ([`Failures::failed`] says so) and when it ends
/// ([`Failures::succeeded`]), and waits the backoff between attempts.
pub struct Failures {
    failing: bool,
    /// The current run started with the last failure.
    started_now: bool,
    backoff: Backoff,
}

/// Tally's loops back off from 200 ms up to 10 s.
impl Default for Failures {
    fn default() -> Failures {
        Failures::new(Duration::from_millis(200), Duration::from_secs(10))
    }
}

impl Failures {
    pub fn new(base: Duration, cap: Duration) -> Failures {
        Failures { failing: false, started_now: false, backoff: Backoff::new(base, cap) }
    }

    /// An attempt succeeded: whether that ends a run of failures.
    pub fn succeeded(&mut self) -> bool {
        self.backoff.reset();
        self.started_now = false;
        std::mem::take(&mut self.failing)
    }

    /// An attempt failed: whether it starts a run of failures, and how long to wait.
    pub fn failed(&mut self) -> (bool, Duration) {
        self.started_now = !std::mem::replace(&mut self.failing, true);
        (self.started_now, self.backoff.next_wait())
    }

    /// Whether the last failure started the current run (the attempt before it succeeded).
    pub fn started_now(&self) -> bool {
        self.started_now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failures_starts_once_and_ends_once() {
        let mut failures = Failures::new(Duration::from_millis(1), Duration::from_millis(10));
        assert!(!failures.succeeded());
        assert!(failures.failed().0);
        assert!(failures.started_now());
        assert!(!failures.failed().0);
        assert!(!failures.started_now());
        assert!(failures.succeeded());
        assert!(!failures.succeeded());
        assert!(failures.failed().0);
    }

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        for n in 0..20 {
            let wait = backoff.next_wait();
            let ceiling = Duration::from_millis(100)
                .saturating_mul(1 << n.min(16))
                .min(Duration::from_secs(5));
            assert!(wait <= ceiling, "attempt {n}: {wait:?} > {ceiling:?}");
        }
        backoff.reset();
        assert!(backoff.next_wait() <= Duration::from_millis(100));
    }
}
