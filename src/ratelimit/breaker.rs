//! Circuit breaker in front of the shared store, pure: the caller supplies the time.
//!
//! - **Closed**: every request goes to the backend. `failure_threshold` consecutive failures
//!   open the breaker for `initial_cooldown`.
//! - **Open**: requests go straight to the local fallback, the backend is not touched.
//! - **Half-open** (the cool-down has passed): exactly one request probes the backend, the
//!   others keep using the fallback. Success closes the breaker and resets the cool-down;
//!   failure re-opens it with the cool-down doubled, up to `max_cooldown`.
//!
//! A probe whose caller vanished (its future dropped mid-call) would hold the breaker
//! half-open forever, so a probe older than `probe_timeout` is given up and the next request
//! probes instead.
//!
//! Results of requests that started under an earlier state (a slow call completing after the
//! breaker opened) are ignored: only the state they were routed under may move it.

use std::time::Duration;

/// Tuning of the circuit breaker in front of the shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker (at least 1).
    pub failure_threshold: u32,
    /// First open period.
    pub initial_cooldown: Duration,
    /// Longest open period; each failed probe doubles the previous one up to this.
    pub max_cooldown: Duration,
    /// How long a half-open probe may be outstanding before another request may probe.
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            initial_cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(1),
        }
    }
}

/// Where one request should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Backend,
    Probe,
    Fallback,
}

/// What a reported result did to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    Unchanged,
    /// Closed → open.
    Opened,
    /// Half-open → open after a failed probe.
    Reopened,
    /// Half-open → closed after a successful probe.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: u64 },
    HalfOpen { probe_since: u64 },
}

#[derive(Debug, Clone)]
pub(super) struct Breaker {
    config: BreakerConfig,
    state: State,
    /// The open period used the next time the breaker opens from half-open, in nanoseconds.
    cooldown: u64,
}

impl Breaker {
    pub(super) fn new(config: BreakerConfig) -> Self {
        let config = BreakerConfig {
            failure_threshold: config.failure_threshold.max(1),
            max_cooldown: config.max_cooldown.max(config.initial_cooldown),
            ..config
        };
        Self {
            config,
            state: State::Closed { failures: 0 },
            cooldown: nanos(config.initial_cooldown),
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed { .. })
    }

    /// Routes one request arriving at `now` (monotonic nanoseconds).
    pub(super) fn route(&mut self, now: u64) -> Route {
        match self.state {
            State::Closed { .. } => Route::Backend,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen { probe_since: now };
                Route::Probe
            }
            State::Open { .. } => Route::Fallback,
            State::HalfOpen { probe_since }
                if now.saturating_sub(probe_since) > nanos(self.config.probe_timeout) =>
            {
                self.state = State::HalfOpen { probe_since: now };
                Route::Probe
            }
            State::HalfOpen { .. } => Route::Fallback,
        }
    }

    /// Reports the result of a request that was routed as `route`.
    pub(super) fn record(&mut self, route: Route, success: bool, now: u64) -> Change {
        match (route, self.state, success) {
            (Route::Backend, State::Closed { .. }, true) => {
                self.state = State::Closed { failures: 0 };
                Change::Unchanged
            }
            (Route::Backend, State::Closed { failures }, false) => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    self.cooldown = nanos(self.config.initial_cooldown);
                    self.state = State::Open {
                        until: now.saturating_add(self.cooldown),
                    };
                    Change::Opened
                } else {
                    self.state = State::Closed { failures };
                    Change::Unchanged
                }
            }
            (Route::Probe, State::HalfOpen { .. }, true) => {
                self.state = State::Closed { failures: 0 };
                self.cooldown = nanos(self.config.initial_cooldown);
                Change::Closed
            }
            (Route::Probe, State::HalfOpen { .. }, false) => {
                self.cooldown = self
                    .cooldown
                    .saturating_mul(2)
                    .min(nanos(self.config.max_cooldown));
                self.state = State::Open {
                    until: now.saturating_add(self.cooldown),
                };
                Change::Reopened
            }
            _ => Change::Unchanged,
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig::default())
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let mut b = breaker();
        assert_eq!(b.route(0), Route::Backend);
        assert_eq!(b.record(Route::Backend, false, 0), Change::Unchanged);
        assert_eq!(b.record(Route::Backend, false, 0), Change::Unchanged);
        // A success in between resets the count.
        assert_eq!(b.record(Route::Backend, true, 0), Change::Unchanged);
        assert_eq!(b.record(Route::Backend, false, 0), Change::Unchanged);
        assert_eq!(b.record(Route::Backend, false, 0), Change::Unchanged);
        assert_eq!(b.record(Route::Backend, false, 10), Change::Opened);
        assert!(!b.is_closed());
        assert_eq!(b.route(10), Route::Fallback);
        assert_eq!(b.route(10 + SEC - 1), Route::Fallback);
    }

    #[test]
    fn half_open_admits_one_probe_and_backs_off() {
        let mut b = breaker();
        for _ in 0..3 {
            b.record(Route::Backend, false, 0);
        }
        // Cool-downs after each failed probe: 2 s, 4 s, ... capped at 30 s.
        let mut now = SEC;
        for expected in [2, 4, 8, 16, 30, 30] {
            assert_eq!(b.route(now), Route::Probe);
            assert_eq!(b.route(now), Route::Fallback, "only one probe at a time");
            assert_eq!(b.record(Route::Probe, false, now), Change::Reopened);
            assert_eq!(b.route(now + expected * SEC - 1), Route::Fallback);
            now += expected * SEC;
        }
        assert_eq!(b.route(now), Route::Probe);
        assert_eq!(b.record(Route::Probe, true, now), Change::Closed);
        assert!(b.is_closed());
        assert_eq!(b.route(now), Route::Backend);
        // Closing reset the cool-down: the next opening lasts 1 s again.
        for _ in 0..3 {
            b.record(Route::Backend, false, now);
        }
        assert_eq!(b.route(now + SEC), Route::Probe);
    }

    #[test]
    fn abandoned_probe_is_replaced() {
        let mut b = breaker();
        for _ in 0..3 {
            b.record(Route::Backend, false, 0);
        }
        assert_eq!(b.route(SEC), Route::Probe);
        // The probe's caller went away without reporting.
        assert_eq!(b.route(2 * SEC), Route::Fallback);
        assert_eq!(b.route(2 * SEC + 1), Route::Probe);
    }

    #[test]
    fn stale_results_are_ignored() {
        let mut b = breaker();
        for _ in 0..3 {
            b.record(Route::Backend, false, 0);
        }
        // A slow request admitted while closed succeeds after the breaker opened.
        assert_eq!(b.record(Route::Backend, true, 5), Change::Unchanged);
        assert!(!b.is_closed());
        assert_eq!(b.record(Route::Backend, false, 5), Change::Unchanged);
        assert_eq!(b.route(SEC), Route::Probe);
        // A stale probe report while closed changes nothing either.
        assert_eq!(b.record(Route::Probe, true, SEC), Change::Closed);
        assert_eq!(b.record(Route::Probe, false, SEC), Change::Unchanged);
        assert!(b.is_closed());
    }

    #[test]
    fn config_is_sanitised() {
        let mut b = Breaker::new(BreakerConfig {
            failure_threshold: 0,
            initial_cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(1),
        });
        assert_eq!(b.record(Route::Backend, false, 0), Change::Opened);
        assert_eq!(b.route(5 * SEC), Route::Probe);
        b.record(Route::Probe, false, 5 * SEC);
        // max_cooldown was raised to initial_cooldown.
        assert_eq!(b.route(10 * SEC), Route::Probe);
    }
}
