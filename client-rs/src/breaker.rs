//! A client-side circuit breaker.
//!
//! After `failure_threshold` consecutive outages (transport failure,
//! `UNAVAILABLE` or timeout; each retry attempt counts) the breaker opens: calls fail at once with
//! [`Error::CircuitOpen`] instead of waiting for a dead server. After
//! `cool_down` one trial call is let through (half-open); its success closes the
//! breaker, its failure opens it for another cool-down.
//!
//! Any answer from the server, including an error status such as
//! `INVALID_ARGUMENT`, proves the server is reachable and resets the count.
//!
//! The clock is a parameter so tests step time by hand instead of sleeping.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::Error;

/// Settings of the client-side circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    /// Consecutive failed attempts (retries included) that open the breaker
    /// (at least 1). Default 5.
    pub failure_threshold: u32,
    /// How long the breaker stays open before it lets one trial call through. Default 2 s.
    pub cool_down: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cool_down: Duration::from_secs(2),
        }
    }
}

/// The state of the circuit breaker, for health reporting and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls fail fast with [`Error::CircuitOpen`].
    Open,
    /// One trial call is in flight; other calls fail fast until it finishes.
    HalfOpen,
}

/// A source of monotonic time.
pub(crate) trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// The breaker shared by every clone of one [`Client`](crate::Client).
pub(crate) struct CircuitBreaker {
    config: CircuitBreakerConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("config", &self.config)
            .field("state", &*self.lock())
            .finish()
    }
}

impl CircuitBreaker {
    pub(crate) fn new(config: CircuitBreakerConfig, clock: Arc<dyn Clock>) -> Self {
        let config = CircuitBreakerConfig {
            failure_threshold: config.failure_threshold.max(1),
            ..config
        };
        Self {
            config,
            clock,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// The state as a caller would see it now.
    pub(crate) fn state(&self) -> CircuitState {
        match *self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if self.clock.now() >= until => CircuitState::HalfOpen,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen => CircuitState::HalfOpen,
        }
    }

    /// Asks to send one call. The permit must be given the call's result; a
    /// permit dropped without one (a cancelled call) frees the trial slot.
    pub(crate) fn try_acquire(&self) -> Result<Permit<'_>, Error> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(Permit::new(self, false)),
            State::Open { until } if self.clock.now() >= until => {
                *state = State::HalfOpen;
                Ok(Permit::new(self, true))
            }
            State::Open { .. } | State::HalfOpen => Err(Error::CircuitOpen),
        }
    }

    fn on_result(&self, trial: bool, outage: bool) {
        let mut state = self.lock();
        if !outage {
            *state = State::Closed { failures: 0 };
            return;
        }
        let open = State::Open {
            until: self.clock.now() + self.config.cool_down,
        };
        *state = match *state {
            _ if trial => open,
            State::Closed { failures } if failures + 1 >= self.config.failure_threshold => open,
            State::Closed { failures } => State::Closed {
                failures: failures + 1,
            },
            // A call sent before the breaker opened has failed late: the breaker
            // already knows, and the trial (if any) decides what happens next.
            other => other,
        };
    }

    fn on_abandoned_trial(&self) {
        let mut state = self.lock();
        if *state == State::HalfOpen {
            // Nobody learned anything; let the next call be the trial.
            *state = State::Open {
                until: self.clock.now(),
            };
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a plain value that is always valid, so a panic while the
        // lock was held cannot have left it half-written.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Leave to send one call through the breaker.
#[must_use = "a permit must be given the call's result"]
pub(crate) struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    trial: bool,
    done: bool,
}

impl<'a> Permit<'a> {
    fn new(breaker: &'a CircuitBreaker, trial: bool) -> Self {
        Self {
            breaker,
            trial,
            done: false,
        }
    }

    /// Reports how the call ended.
    pub(crate) fn record<T>(mut self, result: &Result<T, Error>) {
        self.done = true;
        let outage = matches!(result, Err(err) if err.is_outage());
        self.breaker.on_result(self.trial, outage);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done && self.trial {
            self.breaker.on_abandoned_trial();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that moves only when told to.
    struct ManualClock(Mutex<Instant>);

    impl ManualClock {
        fn new() -> Arc<Self> {
            Arc::new(Self(Mutex::new(Instant::now())))
        }

        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    fn breaker(threshold: u32, cool_down_ms: u64) -> (CircuitBreaker, Arc<ManualClock>) {
        let clock = ManualClock::new();
        let config = CircuitBreakerConfig {
            failure_threshold: threshold,
            cool_down: Duration::from_millis(cool_down_ms),
        };
        (CircuitBreaker::new(config, clock.clone()), clock)
    }

    fn outage() -> Result<(), Error> {
        Err(Error::from(tonic::Status::unavailable(
            "connection refused",
        )))
    }

    fn fail(breaker: &CircuitBreaker) {
        breaker
            .try_acquire()
            .expect("breaker should let the call through")
            .record(&outage());
    }

    fn succeed(breaker: &CircuitBreaker) {
        breaker
            .try_acquire()
            .expect("breaker should let the call through")
            .record(&Ok(()));
    }

    #[test]
    fn breaker_opens_after_the_threshold_of_consecutive_outages() {
        let (breaker, _clock) = breaker(3, 1000);
        fail(&breaker);
        fail(&breaker);
        assert_eq!(breaker.state(), CircuitState::Closed);
        fail(&breaker);
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(matches!(breaker.try_acquire(), Err(Error::CircuitOpen)));
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        let (breaker, _clock) = breaker(3, 1000);
        fail(&breaker);
        fail(&breaker);
        succeed(&breaker);
        fail(&breaker);
        fail(&breaker);
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[test]
    fn an_error_status_from_a_live_server_is_not_an_outage() {
        let (breaker, _clock) = breaker(2, 1000);
        fail(&breaker);
        breaker
            .try_acquire()
            .unwrap()
            .record::<()>(&Err(Error::from(tonic::Status::invalid_argument("bad"))));
        fail(&breaker);
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[test]
    fn timeouts_count_as_outages() {
        let (breaker, _clock) = breaker(2, 1000);
        breaker
            .try_acquire()
            .unwrap()
            .record::<()>(&Err(Error::Timeout));
        breaker
            .try_acquire()
            .unwrap()
            .record::<()>(&Err(Error::Timeout));
        assert_eq!(breaker.state(), CircuitState::Open);
    }

    #[test]
    fn one_trial_call_is_let_through_after_the_cool_down() {
        let (breaker, clock) = breaker(1, 2000);
        fail(&breaker);
        clock.advance(Duration::from_millis(1999));
        assert!(matches!(breaker.try_acquire(), Err(Error::CircuitOpen)));

        clock.advance(Duration::from_millis(1));
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        let trial = breaker
            .try_acquire()
            .expect("the trial call is let through");
        assert!(
            matches!(breaker.try_acquire(), Err(Error::CircuitOpen)),
            "only one call is let through while the trial is in flight"
        );
        trial.record(&Ok(()));
        assert_eq!(breaker.state(), CircuitState::Closed);
        succeed(&breaker);
    }

    #[test]
    fn a_failed_trial_opens_the_breaker_for_another_cool_down() {
        let (breaker, clock) = breaker(5, 2000);
        for _ in 0..5 {
            fail(&breaker);
        }
        clock.advance(Duration::from_secs(2));
        fail(&breaker);
        assert_eq!(breaker.state(), CircuitState::Open);
        clock.advance(Duration::from_millis(1999));
        assert!(matches!(breaker.try_acquire(), Err(Error::CircuitOpen)));
        clock.advance(Duration::from_millis(1));
        succeed(&breaker);
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[test]
    fn a_cancelled_trial_frees_the_slot_for_the_next_call() {
        let (breaker, clock) = breaker(1, 100);
        fail(&breaker);
        clock.advance(Duration::from_millis(100));
        drop(breaker.try_acquire().unwrap());
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        succeed(&breaker);
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[test]
    fn a_late_failure_of_an_earlier_call_does_not_extend_the_open_period() {
        let (breaker, clock) = breaker(1, 100);
        let early = breaker.try_acquire().unwrap();
        fail(&breaker);
        clock.advance(Duration::from_millis(100));
        early.record(&outage());
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
    }

    #[test]
    fn a_zero_threshold_is_treated_as_one() {
        let (breaker, _clock) = breaker(0, 100);
        assert_eq!(breaker.state(), CircuitState::Closed);
        fail(&breaker);
        assert_eq!(breaker.state(), CircuitState::Open);
    }
}
