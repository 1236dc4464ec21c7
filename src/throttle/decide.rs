//! The pure decision core: per provider, matching deferrals and attempts
//! over a sliding window decide between normal, slow and hold; each step
//! lasts at least its `for`, then decays one level by itself once the
//! pushback has stopped. Time is a plain argument (Unix seconds).

use crate::config::{ThrottlePolicy, ThrottleStep};
use crate::logwatch::SlidingCounter;
use std::collections::HashMap;

/// Buckets of a provider's window: fine enough to decay smoothly.
const WINDOW_BUCKETS: u64 = 12;

/// What listwarden asks Postfix to do with a provider's mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Normal,
    Slow,
    Hold,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Normal, Level::Slow, Level::Hold];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Slow => "slow",
            Level::Hold => "hold",
        }
    }
}

/// One delivery result from the log, as the core needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Reached the provider (sent, or refused with a reply no rule counts).
    Attempt,
    /// Refused with a reply one of the provider's rules counts.
    Pushback,
}

/// A level change, for the log and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub provider: String,
    pub from: Level,
    pub to: Level,
    /// Matching deferrals per minute and their share of attempts, when decided.
    pub per_minute: u64,
    pub share_permille: u64,
}

#[derive(Debug)]
struct ProviderState {
    level: Level,
    /// The level holds at least until then.
    until: u64,
    attempts: SlidingCounter,
    pushbacks: SlidingCounter,
}

/// Every provider's state.
#[derive(Debug, Default)]
pub struct Engine {
    providers: HashMap<String, ProviderState>,
}

fn counter(window_secs: u64) -> Option<SlidingCounter> {
    let width = (window_secs / WINDOW_BUCKETS).max(1);
    let buckets = window_secs.div_ceil(width).max(1);
    SlidingCounter::new(usize::try_from(buckets).ok()?, width).ok()
}

fn tripped(step: &ThrottleStep, per_minute: u64, share_permille: u64) -> bool {
    per_minute >= u64::from(step.per_minute) && share_permille >= u64::from(step.share_permille)
}

impl ProviderState {
    fn new(policy: &ThrottlePolicy, now: u64) -> Option<ProviderState> {
        let w = policy.window.as_secs().max(1);
        Some(ProviderState {
            level: Level::Normal,
            until: now,
            attempts: counter(w)?,
            pushbacks: counter(w)?,
        })
    }

    /// (pushbacks per minute, pushbacks per mille of attempts) over the window.
    fn rates(&self, now: u64) -> (u64, u64) {
        let window = self.attempts.window_secs().max(1);
        let pushbacks = self.pushbacks.sum(now);
        let attempts = self.attempts.sum(now).max(pushbacks);
        let per_minute = pushbacks.saturating_mul(60) / window;
        let share = pushbacks
            .saturating_mul(1000)
            .checked_div(attempts)
            .unwrap_or(0);
        (per_minute, share)
    }

    /// The level the window calls for now (never lower than the current
    /// one while its time lasts), and the decay one level down after it.
    fn decide(&mut self, policy: &ThrottlePolicy, now: u64) -> Option<(Level, u64, u64)> {
        let (per_minute, share) = self.rates(now);
        let wanted = if policy
            .hold
            .as_ref()
            .is_some_and(|h| tripped(h, per_minute, share))
        {
            Level::Hold
        } else if tripped(&policy.slow, per_minute, share) {
            Level::Slow
        } else {
            Level::Normal
        };
        let step_for = |level: Level| match level {
            Level::Hold => policy
                .hold
                .as_ref()
                .map(|h| h.hold_for.as_secs())
                .unwrap_or(0),
            Level::Slow => policy.slow.hold_for.as_secs(),
            Level::Normal => 0,
        };
        let next = if wanted >= self.level {
            // Stay or go up; a fresh trip extends the time at this level.
            if wanted > Level::Normal {
                self.until = self.until.max(now.saturating_add(step_for(wanted)));
            }
            wanted
        } else if now >= self.until {
            // Decay one level; the lower level lasts its own `for`.
            let down = match self.level {
                Level::Hold => Level::Slow,
                _ => Level::Normal,
            };
            self.until = now.saturating_add(step_for(down));
            down
        } else {
            self.level
        };
        if next == self.level {
            return None;
        }
        self.level = next;
        Some((next, per_minute, share))
    }
}

impl Engine {
    /// Counts one delivery result for `provider` and re-decides its level.
    pub fn record(
        &mut self,
        policy: &ThrottlePolicy,
        outcome: Outcome,
        now: u64,
    ) -> Option<Change> {
        if !self.providers.contains_key(&policy.name) {
            let state = ProviderState::new(policy, now)?;
            self.providers.insert(policy.name.clone(), state);
        }
        let state = self.providers.get_mut(&policy.name)?;
        state.attempts.add(now, 1);
        if outcome == Outcome::Pushback {
            state.pushbacks.add(now, 1);
        }
        Self::change(&policy.name, state, policy, now)
    }

    /// Re-decides every provider (decay happens here when no mail flows).
    pub fn tick<'p>(
        &mut self,
        policies: impl Iterator<Item = &'p ThrottlePolicy>,
        now: u64,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        for policy in policies {
            if let Some(state) = self.providers.get_mut(&policy.name)
                && let Some(c) = Self::change(&policy.name, state, policy, now)
            {
                changes.push(c);
            }
        }
        changes
    }

    fn change(
        name: &str,
        state: &mut ProviderState,
        policy: &ThrottlePolicy,
        now: u64,
    ) -> Option<Change> {
        let from = state.level;
        let (to, per_minute, share_permille) = state.decide(policy, now)?;
        Some(Change {
            provider: name.to_string(),
            from,
            to,
            per_minute,
            share_permille,
        })
    }

    /// A provider's level (normal for one never seen).
    pub fn level(&self, provider: &str) -> Level {
        self.providers
            .get(provider)
            .map(|s| s.level)
            .unwrap_or(Level::Normal)
    }

    /// Providers above normal: (provider, level, seconds it still lasts
    /// at least), for sharing with other hosts.
    pub fn steps(&self, now: u64) -> Vec<(String, Level, u64)> {
        self.providers
            .iter()
            .filter(|(_, s)| s.level > Level::Normal && s.until > now)
            .map(|(p, s)| (p.clone(), s.level, s.until - now))
            .collect()
    }

    /// Forgets providers no longer configured (after a reload).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.providers.retain(|p, _| keep(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            name: "yahoo".into(),
            rules: vec!["yahoo-ts01".into()],
            window: Duration::from_secs(60),
            slow: ThrottleStep {
                per_minute: 3,
                share_permille: 100,
                hold_for: Duration::from_secs(300),
            },
            hold: Some(ThrottleStep {
                per_minute: 30,
                share_permille: 800,
                hold_for: Duration::from_secs(600),
            }),
        }
    }

    #[test]
    fn a_few_deferrals_among_many_deliveries_change_nothing() {
        let (p, mut e) = (policy(), Engine::default());
        for i in 0..100 {
            let o = if i % 40 == 0 {
                Outcome::Pushback
            } else {
                Outcome::Attempt
            };
            assert_eq!(e.record(&p, o, 1000), None);
        }
        assert_eq!(e.level("yahoo"), Level::Normal);
    }

    #[test]
    fn pushback_slows_then_decays_by_itself() {
        let (p, mut e) = (policy(), Engine::default());
        for _ in 0..10 {
            e.record(&p, Outcome::Attempt, 1000);
        }
        let mut changes = Vec::new();
        for _ in 0..5 {
            changes.extend(e.record(&p, Outcome::Pushback, 1000));
        }
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].from, changes[0].to),
            (Level::Normal, Level::Slow)
        );
        // Quiet, but the step lasts its `for`.
        assert!(e.tick([&p].into_iter(), 1200).is_empty());
        assert_eq!(e.level("yahoo"), Level::Slow);
        let decay = e.tick([&p].into_iter(), 1301);
        assert_eq!(decay[0].to, Level::Normal);
    }

    #[test]
    fn heavy_pushback_holds_and_hold_decays_to_slow_first() {
        let (p, mut e) = (policy(), Engine::default());
        for _ in 0..40 {
            e.record(&p, Outcome::Pushback, 1000);
        }
        assert_eq!(e.level("yahoo"), Level::Hold);
        assert!(e.tick([&p].into_iter(), 1599).is_empty());
        assert_eq!(e.tick([&p].into_iter(), 1600)[0].to, Level::Slow);
        assert_eq!(e.tick([&p].into_iter(), 1900)[0].to, Level::Normal);
    }

    #[test]
    fn renewed_pushback_extends_the_step() {
        let (p, mut e) = (policy(), Engine::default());
        for _ in 0..5 {
            e.record(&p, Outcome::Pushback, 1000);
        }
        for _ in 0..5 {
            e.record(&p, Outcome::Pushback, 1250);
        }
        // Still tripped at 1301: the step runs 300 s from there.
        assert!(e.tick([&p].into_iter(), 1301).is_empty());
        assert!(e.tick([&p].into_iter(), 1600).is_empty());
        assert_eq!(e.tick([&p].into_iter(), 1601)[0].to, Level::Normal);
    }
}
