//! GCRA (generic cell rate algorithm): the pure decision, shared by every store.
//!
//! # Definitions
//!
//! A [`Quota`] is "`count` requests per `period`, with bursts of up to `burst`". All arithmetic is
//! on unsigned integers in one time unit (nanoseconds in the memory store, microseconds in the
//! Redis script, whose numbers are doubles and stay exact only below 2^53):
//!
//! - emission interval `T = ceil(period / count)`: the steady spacing of admitted requests.
//!   Rounding up means the sustained rate never exceeds `count` per `period`.
//! - tolerance `τ = T · (burst − 1)`: how far ahead of schedule a key may run.
//! - per key, a theoretical arrival time `TAT`; a key that is absent behaves as `TAT = now`.
//!
//! A request at `now`: let `tat = max(TAT, now)`.
//! - If `tat − now > τ` it is **denied** with `retry_after = tat − now − τ`; the key is unchanged.
//! - Otherwise it is **allowed** and `TAT := tat + T`.
//!
//! # What "burst" means, exactly
//!
//! From an idle key, requests `k = 1..=burst` arriving at the same instant see
//! `tat − now = (k − 1)·T ≤ τ` and pass; request `burst + 1` sees `burst·T > τ` and is denied
//! with `retry_after = T`; exactly one more passes once `T` has elapsed. In any window of length
//! `W` at most `burst + floor(W / T)` requests pass. A key whose `TAT ≤ now` is in the same state
//! as an absent key, which is why stores may forget it then (the Redis key's TTL is `TAT − now`).

use std::time::Duration;

/// Longest period, and longest tolerance, a quota may have (about ten years).
///
/// Keeps every `now + τ + T` far from overflow, in nanoseconds (`u64`) and in the Redis script's
/// microseconds (exact doubles below 2^53 ≈ 285 years of microseconds since 1970).
pub(crate) const MAX_HORIZON: Duration = Duration::from_secs(3650 * 24 * 3600);

const NANOS_PER_MICRO: u64 = 1_000;

/// Why a quota was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error("rate limit count must be at least 1")]
    ZeroCount,
    #[error("rate limit burst must be at least 1")]
    ZeroBurst,
    #[error("rate limit period must be longer than zero")]
    ZeroPeriod,
    #[error("rate limit period {period:?} is longer than the maximum {max:?}")]
    PeriodTooLong { period: Duration, max: Duration },
    #[error("rate limit burst {burst} at this rate spans more than {max:?}")]
    BurstTooLong { burst: u32, max: Duration },
}

/// `count` requests per `period`, with bursts of up to `burst` (see the module doc).
///
/// Validated on construction, so `T` and `τ` are computed once and every decision is O(1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    count: u32,
    period: Duration,
    burst: u32,
    /// `T` in nanoseconds, at least 1.
    interval_ns: u64,
    /// `τ = T · (burst − 1)` in nanoseconds.
    tolerance_ns: u64,
}

/// `T` and `τ` in one time unit, as the algorithm consumes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Params {
    pub(super) interval: u64,
    pub(super) tolerance: u64,
}

impl Quota {
    /// A quota of `count` requests per `period` with bursts of up to `burst`.
    pub fn new(count: u32, period: Duration, burst: u32) -> Result<Self, QuotaError> {
        if count == 0 {
            return Err(QuotaError::ZeroCount);
        }
        if burst == 0 {
            return Err(QuotaError::ZeroBurst);
        }
        if period.is_zero() {
            return Err(QuotaError::ZeroPeriod);
        }
        let max_ns = duration_nanos(MAX_HORIZON);
        let period_ns = duration_nanos(period);
        if period_ns > max_ns {
            return Err(QuotaError::PeriodTooLong {
                period,
                max: MAX_HORIZON,
            });
        }
        let interval_ns = period_ns.div_ceil(u64::from(count));
        let tolerance_ns = interval_ns
            .checked_mul(u64::from(burst - 1))
            .filter(|tolerance| *tolerance <= max_ns)
            .ok_or(QuotaError::BurstTooLong {
                burst,
                max: MAX_HORIZON,
            })?;
        Ok(Self {
            count,
            period,
            burst,
            interval_ns,
            tolerance_ns,
        })
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// This quota's share on one of `nodes` hosts: count and burst divided, each at least 1.
    ///
    /// Used by the local fallback when the shared store is unavailable, so that the hosts
    /// together admit roughly what the shared quota would. Never fails: a share never needs a
    /// longer horizon than one request per `period` with the original burst, and the tolerance
    /// is clamped to [`MAX_HORIZON`] in any case.
    pub(crate) fn divided(&self, nodes: u32) -> Quota {
        let nodes = nodes.max(1);
        if nodes == 1 {
            return *self;
        }
        let count = (self.count / nodes).max(1);
        let burst = (self.burst / nodes).max(1);
        let interval_ns = duration_nanos(self.period).div_ceil(u64::from(count));
        let tolerance_ns = interval_ns
            .saturating_mul(u64::from(burst - 1))
            .min(duration_nanos(MAX_HORIZON));
        Quota {
            count,
            period: self.period,
            burst,
            interval_ns,
            tolerance_ns,
        }
    }

    pub(super) fn params_nanos(&self) -> Params {
        Params {
            interval: self.interval_ns,
            tolerance: self.tolerance_ns,
        }
    }

    /// `T` rounded up to whole microseconds (at least 1) and `τ` recomputed from it, so the
    /// burst stays exact in the coarser unit. Rates above 10^6 per second become 10^6 per second.
    pub(super) fn params_micros(&self) -> Params {
        let interval = self.interval_ns.div_ceil(NANOS_PER_MICRO).max(1);
        Params {
            interval,
            tolerance: interval.saturating_mul(u64::from(self.burst - 1)),
        }
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Zero when allowed; otherwise how long until one request would pass.
    pub retry_after: Duration,
}

impl Decision {
    pub(crate) const ALLOW: Decision = Decision {
        allowed: true,
        retry_after: Duration::ZERO,
    };

    pub(crate) fn deny(retry_after: Duration) -> Decision {
        Decision {
            allowed: false,
            retry_after,
        }
    }
}

/// One GCRA step in nanoseconds: the decision and the key's new `TAT`.
///
/// `tat` is the stored theoretical arrival time (`None` for an absent key), `now` the current
/// time on the same monotonic scale. On denial the returned `TAT` equals the stored one.
pub fn decide(tat: Option<u64>, now: u64, quota: &Quota) -> (Decision, u64) {
    let step = step(tat, now, quota.params_nanos());
    let decision = if step.allowed {
        Decision::ALLOW
    } else {
        Decision::deny(Duration::from_nanos(step.wait))
    };
    (decision, step.tat)
}

/// The result of [`step`], unit-free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Step {
    pub(super) allowed: bool,
    /// Time until a request would pass; 0 when allowed.
    pub(super) wait: u64,
    /// The key's new theoretical arrival time.
    pub(super) tat: u64,
}

/// The algorithm itself, in whatever unit `params` and the times share.
///
/// The Redis script (`redis.rs`) is a line-by-line transcription of this function.
pub(super) fn step(tat: Option<u64>, now: u64, params: Params) -> Step {
    let tat = tat.map_or(now, |stored| stored.max(now));
    let ahead = tat - now;
    if ahead > params.tolerance {
        Step {
            allowed: false,
            wait: ahead - params.tolerance,
            tat,
        }
    } else {
        Step {
            allowed: true,
            wait: 0,
            tat: tat.saturating_add(params.interval),
        }
    }
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn quota(count: u32, period_ms: u64, burst: u32) -> Quota {
        match Quota::new(count, Duration::from_millis(period_ms), burst) {
            Ok(quota) => quota,
            Err(error) => panic!("test quota rejected: {error}"),
        }
    }

    #[test]
    fn quota_validation() {
        let cases: &[(u32, Duration, u32, Option<QuotaError>)] = &[
            (10, Duration::from_secs(1), 5, None),
            (0, Duration::from_secs(1), 5, Some(QuotaError::ZeroCount)),
            (1, Duration::from_secs(1), 0, Some(QuotaError::ZeroBurst)),
            (1, Duration::ZERO, 1, Some(QuotaError::ZeroPeriod)),
            (
                1,
                MAX_HORIZON + Duration::from_secs(1),
                1,
                Some(QuotaError::PeriodTooLong {
                    period: MAX_HORIZON + Duration::from_secs(1),
                    max: MAX_HORIZON,
                }),
            ),
            (1, MAX_HORIZON, 1, None),
            (1, MAX_HORIZON, 2, None),
            (
                1,
                MAX_HORIZON,
                3,
                Some(QuotaError::BurstTooLong {
                    burst: 3,
                    max: MAX_HORIZON,
                }),
            ),
            (u32::MAX, Duration::from_nanos(1), u32::MAX, None),
        ];
        for (count, period, burst, expected) in cases {
            let got = Quota::new(*count, *period, *burst).err();
            assert_eq!(
                got, *expected,
                "count={count} period={period:?} burst={burst}"
            );
        }
    }

    #[test]
    fn interval_and_tolerance() {
        // (count, period ms, burst) -> (T ns, τ ns)
        let cases = [
            ((10, 1_000, 5), (100 * MS, 400 * MS)),
            ((1, 1_000, 1), (1_000 * MS, 0)),
            // 3 per second: T rounds up so the sustained rate never exceeds the quota.
            ((3, 1_000, 2), (333_333_334, 333_333_334)),
        ];
        for ((count, period, burst), (interval, tolerance)) in cases {
            let q = quota(count, period, burst);
            assert_eq!(
                q.params_nanos(),
                Params {
                    interval,
                    tolerance
                }
            );
        }
    }

    #[test]
    fn micros_keep_burst_exact() {
        let q = Quota::new(3, Duration::from_secs(1), 4).unwrap_or_else(|e| panic!("{e}"));
        let p = q.params_micros();
        assert_eq!(p.interval, 333_334);
        assert_eq!(p.tolerance, 3 * 333_334);
        let fast =
            Quota::new(u32::MAX, Duration::from_secs(1), 3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            fast.params_micros(),
            Params {
                interval: 1,
                tolerance: 2
            }
        );
    }

    #[test]
    fn divided_shares() {
        // (count, burst, nodes) -> (count, burst)
        let cases = [
            ((100, 10, 1), (100, 10)),
            ((100, 10, 3), (33, 3)),
            ((100, 10, 0), (100, 10)),
            ((2, 2, 5), (1, 1)),
        ];
        for ((count, burst, nodes), (want_count, want_burst)) in cases {
            let q = quota(count, 60_000, burst).divided(nodes);
            assert_eq!((q.count(), q.burst()), (want_count, want_burst));
            assert_eq!(q.period, Duration::from_secs(60));
            assert_eq!(
                q.params_nanos().tolerance,
                q.params_nanos().interval * u64::from(want_burst - 1)
            );
        }
    }

    /// The rspamd pattern: exactly-at-burst allowed, burst+1 denied, allowed again after T.
    #[test]
    fn burst_then_deny_then_one_after_interval() {
        for burst in [1, 2, 5, 100] {
            let q = quota(10, 1_000, burst);
            let t = q.params_nanos().interval;
            let now = 7 * MS;
            let mut tat = None;
            for k in 1..=burst {
                let (d, next) = decide(tat, now, &q);
                assert!(d.allowed, "burst={burst} request {k} must pass");
                assert_eq!(d.retry_after, Duration::ZERO);
                tat = Some(next);
            }
            let (d, next) = decide(tat, now, &q);
            assert!(!d.allowed, "burst={burst} request {} must fail", burst + 1);
            assert_eq!(d.retry_after, Duration::from_nanos(t));
            assert_eq!(Some(next), tat, "a denial leaves the key unchanged");
            // One nanosecond early is still too early.
            assert!(!decide(tat, now + t - 1, &q).0.allowed);
            let (d, next) = decide(tat, now + t, &q);
            assert!(d.allowed);
            assert!(
                !decide(Some(next), now + t, &q).0.allowed,
                "only one passes after T"
            );
        }
    }

    #[test]
    fn long_idle_resets_to_a_full_burst() {
        let q = quota(10, 1_000, 5);
        let mut tat = None;
        let mut now = 0;
        for _ in 0..5 {
            tat = Some(decide(tat, now, &q).1);
        }
        assert!(!decide(tat, now, &q).0.allowed);
        // An hour later the stored TAT is far in the past: a full burst again, no more.
        now += 3_600_000 * MS;
        for _ in 0..5 {
            let (d, next) = decide(tat, now, &q);
            assert!(d.allowed);
            tat = Some(next);
        }
        assert!(!decide(tat, now, &q).0.allowed);
    }

    #[test]
    fn clock_going_backwards_never_admits_more() {
        let q = quota(1, 1_000, 2);
        let (_, tat) = decide(None, 10_000 * MS, &q);
        let (_, tat) = decide(Some(tat), 10_000 * MS, &q);
        // Earlier `now` than the previous call: TAT is in the future, so it is a denial.
        assert!(!decide(Some(tat), 9_000 * MS, &q).0.allowed);
    }

    proptest! {
        /// In any window of length W starting from idle, at most burst + floor(W / T) pass,
        /// and a steady stream at exactly one request per T always passes.
        #[test]
        fn never_more_than_burst_plus_elapsed(
            count in 1u32..1_000,
            burst in 1u32..50,
            gaps in proptest::collection::vec(0u64..200 * MS, 1..300),
        ) {
            let q = quota(count, 1_000, burst);
            let t = q.params_nanos().interval;
            let start = 1_000 * MS;
            let mut now = start;
            let mut tat = None;
            let mut passed = 0u64;
            for gap in gaps {
                now += gap;
                let (d, next) = decide(tat, now, &q);
                tat = Some(next);
                if d.allowed {
                    passed += 1;
                } else {
                    prop_assert!(d.retry_after > Duration::ZERO);
                    // Waiting exactly retry_after must pass.
                    let wait = u64::try_from(d.retry_after.as_nanos()).unwrap_or(u64::MAX);
                    prop_assert!(decide(tat, now + wait, &q).0.allowed);
                }
            }
            prop_assert!(passed <= u64::from(burst) + (now - start) / t);
        }

        #[test]
        fn steady_rate_always_passes(count in 1u32..1_000, burst in 1u32..10, n in 1usize..200) {
            let q = quota(count, 1_000, burst);
            let t = q.params_nanos().interval;
            let mut tat = None;
            for i in 0..n as u64 {
                let (d, next) = decide(tat, 5 + i * t, &q);
                prop_assert!(d.allowed);
                tat = Some(next);
            }
        }
    }
}
