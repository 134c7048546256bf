//! A circuit breaker for the judge endpoint: after `failures` consecutive failures (errors,
//! timeouts, malformed replies) it opens and no call is made for `cooldown`; then one trial call
//! is let through (half-open): success closes it, failure opens it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is out.
    HalfOpen,
}

/// What the breaker says about a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Call.
    Call,
    /// Call: the one trial after a cooldown.
    Trial,
    /// Do not call.
    Refused,
}

/// The breaker; clocks are passed in so tests need not sleep.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    failures: u32,
    cooldown: Duration,
}

impl Breaker {
    /// Opens after `failures` (at least 1) failures in a row, for `cooldown`.
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            failures: failures.max(1),
            cooldown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May a call go out at `now`?
    pub fn permit(&self, now: Instant) -> Permit {
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => Permit::Call,
            State::Open { until } if now >= until => {
                *s = State::HalfOpen;
                Permit::Trial
            }
            State::Open { .. } | State::HalfOpen => Permit::Refused,
        }
    }

    /// A call succeeded.
    pub fn success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    /// A call failed at `now`.
    pub fn failure(&self, now: Instant) {
        let mut s = self.lock();
        *s = match *s {
            State::Closed { failures } if failures + 1 < self.failures => State::Closed {
                failures: failures + 1,
            },
            _ => State::Open {
                until: now + self.cooldown,
            },
        };
    }

    /// `closed`, `open` or `half_open` (for logs and metrics).
    pub fn state_name(&self) -> &'static str {
        match *self.lock() {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_and_closes_after_a_good_trial() {
        let b = Breaker::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(b.permit(t0), Permit::Call);
            b.failure(t0);
        }
        assert_eq!(b.state_name(), "closed");
        // A success in between resets the count.
        b.success();
        for _ in 0..2 {
            b.failure(t0);
        }
        assert_eq!(b.state_name(), "closed");
        b.failure(t0);
        assert_eq!(b.state_name(), "open");
        assert_eq!(b.permit(t0 + Duration::from_secs(9)), Permit::Refused);
        // After the cooldown exactly one trial goes out.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.permit(t1), Permit::Trial);
        assert_eq!(b.permit(t1), Permit::Refused);
        // A failed trial opens it again for a full cooldown from then.
        b.failure(t1);
        assert_eq!(b.permit(t1 + Duration::from_secs(9)), Permit::Refused);
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(b.permit(t2), Permit::Trial);
        b.success();
        assert_eq!(b.state_name(), "closed");
        assert_eq!(b.permit(t2), Permit::Call);
    }
}
