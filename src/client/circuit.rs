//! A circuit breaker per upstream (closed → open → half-open → closed), so a dead dependency
//! fails fast with UNAVAILABLE instead of tying up the caller for a timeout on every call.
//!
//! Closed: outcomes go into a window of the last `window` calls; once at least
//! `minimum_calls` are recorded and the failure rate reaches `failure_rate`, it opens.
//! Open: calls are refused for `open_duration`, then it turns half-open.
//! Half-open: `half_open_calls` trial calls go through; if all succeed it closes, one failure
//! opens it again.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::ClientArgs;

/// Settings of one breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Outcomes remembered while closed (the last N calls).
    pub window: usize,
    /// Outcomes needed in the window before the failure rate can open the breaker.
    pub minimum_calls: usize,
    /// Share of failures in the window (0.0-1.0) that opens the breaker.
    pub failure_rate: f64,
    /// How long the breaker refuses calls before trial calls.
    pub open_duration: Duration,
    /// Trial calls in the half-open state; all must succeed to close.
    pub half_open_calls: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: 20,
            minimum_calls: 10,
            failure_rate: 0.5,
            // The one default a flag can change is written with the flag.
            open_duration: ClientArgs::default().breaker_open_duration,
            half_open_calls: 3,
        }
    }
}

/// The breaker's state, as logged and exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; outcomes are counted.
    Closed,
    /// Calls fail fast with UNAVAILABLE.
    Open,
    /// A few trial calls go through to see whether the upstream is back.
    HalfOpen,
}

impl BreakerState {
    /// 0 closed, 1 open, 2 half-open: the value of the exported gauge.
    pub fn as_gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

enum Inner {
    Closed {
        outcomes: VecDeque<bool>,
    },
    Open {
        until: Instant,
    },
    /// `round` numbers the half-open rounds, so a call admitted in an earlier state cannot
    /// give back or fill a slot of this round.
    HalfOpen {
        permits: usize,
        successes: usize,
        round: u64,
    },
}

/// Thread-safe breaker; `now` is passed in so tests can move time.
pub(super) struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
    /// The last half-open round started.
    rounds: std::sync::atomic::AtomicU64,
}

/// What [`CircuitBreaker::try_acquire`] granted: an ordinary call, or one of a half-open
/// round's trial slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    Call,
    Trial { round: u64 },
}

/// Returned when the breaker refuses a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BreakerOpen;

impl CircuitBreaker {
    /// A closed breaker for upstream `name` (the label of its metrics).
    pub(super) fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        let name = name.into();
        crate::metrics::CLIENT_BREAKER_STATE
            .with_label_values(&[name.as_str()])
            .set(BreakerState::Closed.as_gauge());
        Self {
            name,
            config,
            inner: Mutex::new(Inner::Closed {
                outcomes: VecDeque::new(),
            }),
            rounds: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The upstream this breaker guards.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The state at `now` (an open breaker turns half-open once its time is up).
    pub(super) fn state(&self, now: Instant) -> BreakerState {
        let mut inner = self.lock();
        self.advance(&mut inner, now);
        match *inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to make one call. In half-open state this takes one of the trial permits.
    pub(super) fn try_acquire(&self, now: Instant) -> Result<Admission, BreakerOpen> {
        let mut inner = self.lock();
        self.advance(&mut inner, now);
        match &mut *inner {
            Inner::Closed { .. } => Ok(Admission::Call),
            Inner::Open { .. } => Err(BreakerOpen),
            Inner::HalfOpen { permits, round, .. } => {
                if *permits == 0 {
                    return Err(BreakerOpen);
                }
                *permits -= 1;
                Ok(Admission::Trial { round: *round })
            }
        }
    }

    /// Gives back the trial slot of an allowed call that ended without an outcome worth
    /// recording (it says nothing about the upstream, or it was abandoned). Outside the
    /// half-open state there is nothing to give back.
    pub(super) fn release(&self, admission: Admission) {
        let Admission::Trial { round: admitted } = admission else {
            return;
        };
        let mut inner = self.lock();
        if let Inner::HalfOpen {
            permits,
            successes,
            round,
        } = &mut *inner
            && *round == admitted
        {
            // Never more than the trial calls still to be made.
            let outstanding = self.config.half_open_calls.saturating_sub(*successes);
            *permits = (*permits + 1).min(outstanding);
        }
    }

    /// Records the outcome of a call that [`CircuitBreaker::try_acquire`] allowed. In
    /// half-open state only this round's trials decide: a call admitted before (still in
    /// flight when the breaker opened) says nothing about the upstream now.
    pub(super) fn record_admitted(&self, admission: Admission, success: bool, now: Instant) {
        let mut inner = self.lock();
        self.advance(&mut inner, now);
        if let Inner::HalfOpen { round, .. } = &*inner
            && admission != (Admission::Trial { round: *round })
        {
            return;
        }
        drop(inner);
        self.record(success, now);
    }

    /// Records an outcome as if it were the current state's own call (the tests drive the
    /// state machine with it).
    pub(super) fn record(&self, success: bool, now: Instant) {
        let mut inner = self.lock();
        self.advance(&mut inner, now);
        let next = match &mut *inner {
            Inner::Closed { outcomes } => {
                outcomes.push_back(success);
                while outcomes.len() > self.config.window {
                    outcomes.pop_front();
                }
                let failures = outcomes.iter().filter(|ok| !**ok).count();
                let rate = failures as f64 / outcomes.len() as f64;
                (outcomes.len() >= self.config.minimum_calls && rate >= self.config.failure_rate)
                    .then(|| {
                        tracing::warn!(upstream = %self.name, failures, calls = outcomes.len(), "circuit breaker opened");
                        Inner::Open {
                            until: now + self.config.open_duration,
                        }
                    })
            }
            Inner::Open { .. } => None,
            Inner::HalfOpen { successes, .. } => {
                if !success {
                    tracing::warn!(upstream = %self.name, "trial call failed: circuit breaker open again");
                    Some(Inner::Open {
                        until: now + self.config.open_duration,
                    })
                } else {
                    *successes += 1;
                    (*successes >= self.config.half_open_calls).then(|| {
                        tracing::info!(upstream = %self.name, "trial calls succeeded: circuit breaker closed");
                        Inner::Closed {
                            outcomes: VecDeque::new(),
                        }
                    })
                }
            }
        };
        if let Some(next) = next {
            *inner = next;
            self.entered(&inner);
        }
    }

    /// Exports a state change (the log line is written where the change is decided).
    fn entered(&self, inner: &Inner) {
        let state = match inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        };
        let label = match state {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        };
        crate::metrics::CLIENT_BREAKER_STATE
            .with_label_values(&[self.name.as_str()])
            .set(state.as_gauge());
        crate::metrics::CLIENT_BREAKER_TRANSITIONS
            .with_label_values(&[self.name.as_str(), label])
            .inc();
    }

    fn advance(&self, inner: &mut Inner, now: Instant) {
        if let Inner::Open { until } = inner
            && now >= *until
        {
            tracing::info!(upstream = %self.name, "circuit breaker half-open: sending trial calls");
            let round = self
                .rounds
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            *inner = Inner::HalfOpen {
                permits: self.config.half_open_calls,
                successes: 0,
                round,
            };
            self.entered(inner);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the state inconsistent (each update is a
        // single assignment), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(
            "test",
            BreakerConfig {
                window: 10,
                minimum_calls: 4,
                failure_rate: 0.5,
                // The one default a flag can change is written with the flag.
                open_duration: ClientArgs::default().breaker_open_duration,
                half_open_calls: 2,
            },
        )
    }

    #[test]
    fn stays_closed_below_the_minimum_number_of_calls() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..3 {
            b.record(false, t);
        }
        assert_eq!(b.state(t), BreakerState::Closed);
        b.record(false, t);
        assert_eq!(b.state(t), BreakerState::Open);
    }

    #[test]
    fn opens_on_the_failure_rate_not_on_single_failures() {
        let b = breaker();
        let t = Instant::now();
        for success in [true, true, true, false, true, false] {
            b.record(success, t);
        }
        assert_eq!(b.state(t), BreakerState::Closed);
        b.record(false, t);
        b.record(false, t);
        assert_eq!(b.state(t), BreakerState::Open, "4 of 8 failed");
        assert_eq!(b.try_acquire(t), Err(BreakerOpen));
    }

    #[test]
    fn half_open_after_the_open_duration_then_closes_on_successful_trials() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..4 {
            b.record(false, t);
        }
        let later = t + Duration::from_secs(5);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.try_acquire(later).is_ok());
        assert!(b.try_acquire(later).is_ok());
        assert_eq!(
            b.try_acquire(later),
            Err(BreakerOpen),
            "only two trial calls"
        );
        b.record(true, later);
        b.record(true, later);
        assert_eq!(b.state(later), BreakerState::Closed);
    }

    #[test]
    fn trial_calls_that_end_without_a_verdict_give_their_slot_back() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..4 {
            b.record(false, t);
        }
        let later = t + Duration::from_secs(5);
        // Both trial calls end without an outcome (the caller's own deadline, a dropped call).
        let trials: Vec<Admission> = (0..2)
            .map(|_| b.try_acquire(later).expect("trial"))
            .collect();
        assert_eq!(b.try_acquire(later), Err(BreakerOpen));
        for trial in trials {
            b.release(trial);
        }
        // The slots are back, and trials close it.
        let first = b.try_acquire(later).expect("a slot came back");
        let second = b.try_acquire(later).expect("both came back");
        assert_eq!(
            b.try_acquire(later),
            Err(BreakerOpen),
            "two slots, not three"
        );
        b.record_admitted(first, true, later);
        b.record_admitted(second, true, later);
        assert_eq!(b.state(later), BreakerState::Closed);
    }

    #[test]
    fn calls_admitted_before_the_round_neither_give_back_nor_decide() {
        let b = breaker();
        let t = Instant::now();
        // Admitted while closed, still in flight when the breaker opens.
        let stale: Vec<Admission> = (0..3).map(|_| b.try_acquire(t).expect("closed")).collect();
        for _ in 0..4 {
            b.record(false, t);
        }
        let later = t + Duration::from_secs(5);
        let trials: Vec<Admission> = (0..2)
            .map(|_| b.try_acquire(later).expect("trial"))
            .collect();
        // The stale calls end: no slot is handed out for them, and their success decides nothing.
        b.release(stale[0]);
        assert_eq!(b.try_acquire(later), Err(BreakerOpen), "no extra trial");
        b.record_admitted(stale[1], true, later);
        b.record_admitted(stale[2], true, later);
        assert_eq!(
            b.state(later),
            BreakerState::HalfOpen,
            "stale successes do not close it"
        );
        // A trial of an earlier round is stale too once the breaker opened and half-opened again.
        b.record_admitted(trials[0], false, later);
        assert_eq!(b.state(later), BreakerState::Open);
        let again = later + Duration::from_secs(5);
        assert_eq!(b.state(again), BreakerState::HalfOpen);
        b.release(trials[1]);
        let fresh: Vec<Admission> = (0..2)
            .map(|_| b.try_acquire(again).expect("trial"))
            .collect();
        assert_eq!(
            b.try_acquire(again),
            Err(BreakerOpen),
            "the old round's slot is not this one's"
        );
        for trial in fresh {
            b.record_admitted(trial, true, again);
        }
        assert_eq!(b.state(again), BreakerState::Closed);
    }

    #[test]
    fn a_failed_trial_opens_again() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..4 {
            b.record(false, t);
        }
        let later = t + Duration::from_secs(6);
        assert!(b.try_acquire(later).is_ok());
        b.record(false, later);
        assert_eq!(b.state(later), BreakerState::Open);
        assert_eq!(
            b.state(later + Duration::from_secs(5)),
            BreakerState::HalfOpen
        );
    }
}
