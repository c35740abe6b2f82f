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
    Closed { outcomes: VecDeque<bool> },
    Open { until: Instant },
    HalfOpen { permits: usize, successes: usize },
}

/// Thread-safe breaker; `now` is passed in so tests can move time.
pub(super) struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
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
    pub(super) fn try_acquire(&self, now: Instant) -> Result<(), BreakerOpen> {
        let mut inner = self.lock();
        self.advance(&mut inner, now);
        match &mut *inner {
            Inner::Closed { .. } => Ok(()),
            Inner::Open { .. } => Err(BreakerOpen),
            Inner::HalfOpen { permits, .. } => {
                if *permits == 0 {
                    return Err(BreakerOpen);
                }
                *permits -= 1;
                Ok(())
            }
        }
    }

    /// Gives back the trial slot of an allowed call that ended without an outcome worth
    /// recording (it says nothing about the upstream, or it was abandoned). Outside the
    /// half-open state there is nothing to give back.
    pub(super) fn release(&self) {
        let mut inner = self.lock();
        if let Inner::HalfOpen { permits, successes } = &mut *inner {
            // Never more than the trial calls still to be made.
            let outstanding = self.config.half_open_calls.saturating_sub(*successes);
            *permits = (*permits + 1).min(outstanding);
        }
    }

    /// Records the outcome of a call that [`CircuitBreaker::try_acquire`] allowed.
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
            *inner = Inner::HalfOpen {
                permits: self.config.half_open_calls,
                successes: 0,
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
        for _ in 0..2 {
            assert!(b.try_acquire(later).is_ok());
        }
        assert_eq!(b.try_acquire(later), Err(BreakerOpen));
        b.release();
        b.release();
        b.release();
        // The slots are back (no more than the trials still to make), and trials close it.
        assert!(b.try_acquire(later).is_ok());
        assert!(b.try_acquire(later).is_ok());
        assert_eq!(
            b.try_acquire(later),
            Err(BreakerOpen),
            "two slots, not three"
        );
        b.record(true, later);
        b.record(true, later);
        assert_eq!(b.state(later), BreakerState::Closed);
        b.release();
        assert_eq!(
            b.state(later),
            BreakerState::Closed,
            "nothing to give back when closed"
        );
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
