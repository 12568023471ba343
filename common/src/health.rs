//! Whether a stage is making progress: what `/readyz` answers and `/metrics` shows.
//!
//! A live process is not a working stage. A consumer fenced out of its group, a producer that can
//! no longer commit, or a loop blocked in a call that never returns all leave a process that
//! answers HTTP and does nothing. So readiness is judged from evidence the stage reports:
//!
//! - its **phase**: [`Phase::Up`]; [`Phase::Down`] (connecting, rebuilding a client after a fatal
//!   error: not ready at once); [`Phase::Pending`] (waiting for a partition assignment: not ready
//!   once it has lasted longer than the stall bound, so an ordinary rebalance does not flap);
//! - its **loop**: a stage with a loop stamps every turn ([`Health::turned`]); a loop that has not
//!   turned within the bound is stuck;
//! - its **backlog**: a watcher compares the end offsets of the stage's input with what the stage
//!   has committed ([`Health::input_waiting`]); input that has waited longer than the bound with no
//!   commit meanwhile means the stage is not consuming or not committing;
//! - whether that watcher could **look** at all ([`Health::check_failed`]): a stage that cannot
//!   reach Kafka or PostgreSQL for longer than the bound is not ready.
//!
//! The rule itself is the pure function [`judge`]. Phase changes are logged here, one line per
//! change, never one per attempt. The metrics `tally_stage_ready` and
//! `tally_stage_last_commit_age_seconds` (label `stage`, one of Tally's service names) are
//! refreshed whenever `/readyz` or `/metrics` is asked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus::{register_gauge_vec, register_int_gauge_vec, GaugeVec, IntGaugeVec};

/// 1 when the stage reports ready, 0 when not (label `stage`).
pub static READY: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "tally_stage_ready",
        "Whether the stage reports ready (1) or not (0).",
        &["stage"]
    )
    .expect("metric registers")
});

/// Seconds since the stage last committed its work (a Kafka transaction, a database transaction,
/// an acknowledged write, a reporting cycle); since start-up when it has not committed yet.
pub static LAST_COMMIT_AGE: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "tally_stage_last_commit_age_seconds",
        "Seconds since the stage last committed its work (since start-up if it has not yet).",
        &["stage"]
    )
    .expect("metric registers")
});

/// What the stage says it is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Working.
    Up,
    /// Cannot work: connecting, or rebuilding its clients. Not ready at once.
    Down(String),
    /// Waiting for something that normally comes soon (a partition assignment). Not ready once it
    /// has lasted longer than the stall bound.
    Pending(String),
}

/// Everything [`judge`] looks at, as of `now`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub phase: Phase,
    /// When the phase last changed.
    pub phase_since: Instant,
    /// The loop's last turn, if the stage has a loop that has started.
    pub last_turn: Option<Instant>,
    /// The last commit, if any.
    pub last_commit: Option<Instant>,
    /// Since when the watcher has seen input waiting (cleared when it sees none).
    pub waiting_since: Option<Instant>,
    /// The watcher's failure to look at the input, and since when it has failed.
    pub check_failing: Option<(Instant, String)>,
}

/// The readiness rule: `Ok` when ready, or why not.
pub fn judge(s: &Snapshot, now: Instant, bound: Duration) -> Result<(), String> {
    let secs = |since: Instant| now.saturating_duration_since(since).as_secs();
    let longer_than_bound = |since: Instant| now.saturating_duration_since(since) > bound;
    match &s.phase {
        Phase::Down(reason) => return Err(reason.clone()),
        Phase::Pending(reason) if longer_than_bound(s.phase_since) => {
            return Err(format!("{reason} for {} s", secs(s.phase_since)));
        }
        _ => {}
    }
    if let Some(turn) = s.last_turn.filter(|t| longer_than_bound(*t)) {
        return Err(format!("the loop has not turned for {} s", secs(turn)));
    }
    if let Some((since, error)) = &s.check_failing {
        if longer_than_bound(*since) {
            return Err(format!("cannot see the input's end for {} s: {error}", secs(*since)));
        }
    }
    if let Some(since) = s.waiting_since {
        let progress = s.last_commit.map_or(since, |c| c.max(since));
        if longer_than_bound(progress) {
            return Err(format!(
                "input has been waiting for {} s and nothing was committed",
                secs(progress)
            ));
        }
    }
    Ok(())
}

struct State {
    phase: Phase,
    phase_since: Instant,
    waiting_since: Option<Instant>,
    check_failing: Option<(Instant, String)>,
}

struct Inner {
    stage: &'static str,
    bound: Duration,
    started: Instant,
    /// Milliseconds after `started` + 1 (0: never), so the hot path needs no lock.
    last_turn_ms: AtomicU64,
    last_commit_ms: AtomicU64,
    state: Mutex<State>,
}

/// A stage's health, shared by its loop, its watcher and its probes. Cheap to clone.
#[derive(Clone)]
pub struct Health(Arc<Inner>);

impl Health {
    /// A stage that is not ready yet (`Down("starting")`), judged with stall bound `bound`.
    pub fn new(stage: &'static str, bound: Duration) -> Health {
        let now = Instant::now();
        Health(Arc::new(Inner {
            stage,
            bound,
            started: now,
            last_turn_ms: AtomicU64::new(0),
            last_commit_ms: AtomicU64::new(0),
            state: Mutex::new(State {
                phase: Phase::Down("starting".into()),
                phase_since: now,
                waiting_since: None,
                check_failing: None,
            }),
        }))
    }

    fn stamp(&self, cell: &AtomicU64) {
        cell.store(self.0.started.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
    }

    fn instant(&self, cell: &AtomicU64) -> Option<Instant> {
        match cell.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.0.started + Duration::from_millis(ms - 1)),
        }
    }

    /// Sets the phase, logging the change (and only a change).
    pub fn set(&self, phase: Phase) {
        let mut state = self.0.state.lock().expect("health lock");
        if state.phase == phase {
            return;
        }
        match &phase {
            Phase::Up => tracing::info!(stage = self.0.stage, "working"),
            Phase::Down(reason) => tracing::warn!(stage = self.0.stage, %reason, "not working"),
            Phase::Pending(reason) => tracing::info!(stage = self.0.stage, %reason, "waiting"),
        }
        state.phase = phase;
        state.phase_since = Instant::now();
    }

    pub fn up(&self) {
        self.set(Phase::Up);
    }

    pub fn down(&self, reason: impl Into<String>) {
        self.set(Phase::Down(reason.into()));
    }

    /// The loop turned (called once per batch or idle poll, not per record).
    pub fn turned(&self) {
        self.stamp(&self.0.last_turn_ms);
    }

    /// The stage committed its work.
    pub fn committed(&self) {
        self.stamp(&self.0.last_commit_ms);
    }

    /// The watcher looked at the input: whether records wait beyond what the stage committed.
    pub fn input_waiting(&self, waiting: bool) {
        let mut state = self.0.state.lock().expect("health lock");
        if state.check_failing.take().is_some() {
            tracing::info!(stage = self.0.stage, "the input's end offsets can be read again");
        }
        match (waiting, state.waiting_since) {
            (true, None) => state.waiting_since = Some(Instant::now()),
            (false, Some(_)) => state.waiting_since = None,
            _ => {}
        }
    }

    /// The watcher could not look at the input (Kafka or PostgreSQL unreachable). What it saw
    /// last stands: input seen waiting keeps counting, so a watcher that fails now and then
    /// cannot hide a stage that does not commit.
    pub fn check_failed(&self, error: impl std::fmt::Display) {
        let mut state = self.0.state.lock().expect("health lock");
        if state.check_failing.is_none() {
            tracing::warn!(stage = self.0.stage, error = %error, "cannot read the input's end offsets");
            state.check_failing = Some((Instant::now(), error.to_string()));
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let state = self.0.state.lock().expect("health lock");
        Snapshot {
            phase: state.phase.clone(),
            phase_since: state.phase_since,
            last_turn: self.instant(&self.0.last_turn_ms),
            last_commit: self.instant(&self.0.last_commit_ms),
            waiting_since: state.waiting_since,
            check_failing: state.check_failing.clone(),
        }
    }

    /// `Ok` when ready, or why not; refreshes the stage's gauges.
    pub fn verdict(&self) -> Result<(), String> {
        let now = Instant::now();
        let snapshot = self.snapshot();
        let verdict = judge(&snapshot, now, self.0.bound);
        READY.with_label_values(&[self.0.stage]).set(verdict.is_ok() as i64);
        let since = snapshot.last_commit.unwrap_or(self.0.started);
        LAST_COMMIT_AGE
            .with_label_values(&[self.0.stage])
            .set(now.saturating_duration_since(since).as_secs_f64());
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(30);

    fn snapshot(t0: Instant) -> Snapshot {
        Snapshot {
            phase: Phase::Up,
            phase_since: t0,
            last_turn: Some(t0),
            last_commit: Some(t0),
            waiting_since: None,
            check_failing: None,
        }
    }

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn a_turning_loop_with_nothing_waiting_is_ready_however_long_since_its_last_commit() {
        let t0 = Instant::now();
        let mut s = snapshot(t0);
        s.last_turn = Some(at(t0, 3600));
        assert_eq!(judge(&s, at(t0, 3601), BOUND), Ok(()));
    }

    #[test]
    fn down_is_not_ready_at_once_pending_only_after_the_bound() {
        let t0 = Instant::now();
        let mut s = snapshot(t0);
        s.phase = Phase::Down("rebuilding the consumer".into());
        assert_eq!(judge(&s, t0, BOUND), Err("rebuilding the consumer".into()));
        s.phase = Phase::Pending("waiting for partitions".into());
        assert_eq!(judge(&s, at(t0, 30), BOUND), Ok(()));
        assert_eq!(judge(&s, at(t0, 31), BOUND), Err("waiting for partitions for 31 s".into()));
    }

    #[test]
    fn a_stuck_loop_is_not_ready() {
        let t0 = Instant::now();
        let s = snapshot(t0);
        assert!(judge(&s, at(t0, 31), BOUND).unwrap_err().contains("has not turned for 31 s"));
    }

    #[test]
    fn waiting_input_needs_a_commit_within_the_bound() {
        let t0 = Instant::now();
        let mut s = snapshot(t0);
        s.waiting_since = Some(at(t0, 10));
        s.last_turn = Some(at(t0, 100));
        // Waiting since 10 s, last commit at 0: progress is judged from 10 s.
        assert_eq!(judge(&s, at(t0, 40), BOUND), Ok(()));
        assert!(judge(&s, at(t0, 41), BOUND).unwrap_err().contains("waiting for 31 s"));
        // A commit while input waits (a busy stage) keeps it ready.
        s.last_commit = Some(at(t0, 90));
        assert_eq!(judge(&s, at(t0, 100), BOUND), Ok(()));
    }

    #[test]
    fn a_watcher_that_cannot_look_fails_readiness_after_the_bound() {
        let t0 = Instant::now();
        let mut s = snapshot(t0);
        s.last_turn = None;
        s.check_failing = Some((t0, "broker transport failure".into()));
        assert_eq!(judge(&s, at(t0, 5), BOUND), Ok(()));
        assert!(judge(&s, at(t0, 31), BOUND).unwrap_err().contains("broker transport failure"));
    }

    #[test]
    fn phase_changes_and_waiting_are_tracked() {
        let health = Health::new("test", BOUND);
        assert_eq!(health.verdict(), Err("starting".into()));
        health.up();
        health.turned();
        assert_eq!(health.verdict(), Ok(()));
        health.input_waiting(true);
        let first = health.snapshot().waiting_since;
        health.input_waiting(true);
        assert_eq!(
            health.snapshot().waiting_since,
            first,
            "waiting is dated from when it was first seen"
        );
        health.input_waiting(false);
        assert_eq!(health.snapshot().waiting_since, None);
    }
}
