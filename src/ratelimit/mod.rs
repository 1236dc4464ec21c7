//! Rate limiting with GCRA (see [`gcra`] for the exact algorithm and what "burst" means).
//!
//! Two stores decide the same way:
//! - [`MemoryStore`]: one node, bounded, least recently used keys evicted first;
//! - [`RedisStore`]: several MX hosts sharing quotas through Redis or Valkey with one atomic
//!   script per decision, and a local fallback behind a circuit breaker, so Redis trouble costs
//!   at most the call deadline and never blocks mail.
//!
//! Callers hold a [`Store`]. It is an enum rather than a trait object because the set of
//! stores is closed, and `async fn` in a trait is not object-safe: `Arc<dyn Trait>` would need
//! a boxed future (one allocation) per decision. The enum is cheap to clone (both variants are
//! an `Arc` inside) and its `check` future is `Send`.

mod backend;
mod breaker;
mod clock;
pub mod gcra;
mod lru;
mod memory;
#[cfg(feature = "redis")]
mod redis_store;
#[cfg(feature = "redis")]
mod target;

#[cfg(all(test, feature = "redis"))]
mod redis_it;

use std::path::PathBuf;

pub use backend::{BackendErrorKind, BackendStats, MAX_KEY_LEN};
pub use breaker::BreakerConfig;
pub use clock::{Clock, ManualClock, MonotonicClock};
pub use gcra::{Decision, Quota, QuotaError, decide};
pub use memory::{MAX_KEYS, MemoryStore};
#[cfg(feature = "redis")]
pub use redis_store::{RedisConfig, RedisStore, RedisStoreError};
#[cfg(feature = "redis")]
pub use target::TargetError;
#[cfg(feature = "redis")]
pub(crate) use target::check_target;

/// TLS files for `rediss` URLs (PEM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// Trust only this CA (else the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and its key, for servers that ask for one (`tls-auth-clients`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Why a decision could not be made. Backend trouble is never an error (it falls back).
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("rate-limit key is {len} bytes long, more than {max}")]
    KeyTooLong { len: usize, max: usize },
}

/// The rate limiter listwarden holds: a memory store or a Redis store.
#[derive(Debug, Clone)]
pub enum Store {
    Memory(MemoryStore),
    #[cfg(feature = "redis")]
    Redis(RedisStore),
}

impl Store {
    /// Decides one request for `key` under `quota` (and counts it if allowed).
    ///
    /// Keys longer than [`MAX_KEY_LEN`] are refused by both stores alike.
    pub async fn check(&self, key: &str, quota: &Quota) -> Result<Decision, LimitError> {
        if key.len() > MAX_KEY_LEN {
            return Err(LimitError::KeyTooLong {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        match self {
            Store::Memory(store) => Ok(store.check(key, quota)),
            #[cfg(feature = "redis")]
            Store::Redis(store) => store.check(key, quota).await,
        }
    }

    /// Decides the budgets of one request in order and stops at the first denial, as calling
    /// [`Store::check`] on each until one denies would: the budgets before it are charged, the
    /// denying one and those after it are not. Returns one decision per budget up to and
    /// including the first denial (all of them when none denies).
    ///
    /// The Redis store makes one round trip for the whole decision. An over-long key is never
    /// a reason to refuse mail: it is allowed and charges nothing.
    pub(crate) async fn check_all(&self, budgets: &[(&str, Quota)]) -> Vec<Decision> {
        match self {
            Store::Memory(store) => store.check_all(budgets),
            #[cfg(feature = "redis")]
            Store::Redis(store) => store.check_all(budgets).await,
        }
    }

    /// The `backend` label value: `memory` or `redis`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            #[cfg(feature = "redis")]
            Store::Redis(_) => "redis",
        }
    }

    /// Keys held in this process (`listwarden_ratelimit_keys`): the memory store's, or the
    /// Redis store's local fallback's.
    pub fn len(&self) -> usize {
        match self {
            Store::Memory(store) => store.len(),
            #[cfg(feature = "redis")]
            Store::Redis(store) => store.fallback_len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `listwarden_ratelimit_fallback_active`: always false for the memory store.
    pub fn fallback_active(&self) -> bool {
        match self {
            Store::Memory(_) => false,
            #[cfg(feature = "redis")]
            Store::Redis(store) => store.fallback_active(),
        }
    }

    /// Backend counters; all zero for the memory store.
    pub fn stats(&self) -> BackendStats {
        match self {
            Store::Memory(_) => BackendStats::default(),
            #[cfg(feature = "redis")]
            Store::Redis(store) => store.stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn assert_send<T: Send>(_: &T) {}

    #[tokio::test]
    async fn check_future_is_send_and_keys_are_bounded() {
        let clock = ManualClock::new(0);
        let store = Store::Memory(MemoryStore::with_clock(100, Arc::new(clock)));
        let quota = Quota::new(1, Duration::from_secs(1), 1).unwrap_or_else(|e| panic!("{e}"));
        let future = store.check("k", &quota);
        assert_send(&future);
        assert!(matches!(future.await, Ok(d) if d.allowed));
        let long = "x".repeat(MAX_KEY_LEN + 1);
        assert!(matches!(
            store.check(&long, &quota).await,
            Err(LimitError::KeyTooLong { len, .. }) if len == MAX_KEY_LEN + 1
        ));
        assert!(store.check(&long[..MAX_KEY_LEN], &quota).await.is_ok());
        assert_eq!(store.backend(), "memory");
        assert!(!store.fallback_active());
        assert_eq!(store.len(), 2);
    }

    #[tokio::test]
    #[cfg(feature = "redis")]
    async fn redis_future_is_send() {
        let config = RedisConfig {
            url: "redis://127.0.0.1:1/".to_owned(),
            ..RedisConfig::default()
        };
        let store = Store::Redis(RedisStore::new(config).unwrap_or_else(|e| panic!("{e}")));
        let quota = Quota::new(1, Duration::from_secs(1), 1).unwrap_or_else(|e| panic!("{e}"));
        let future = store.check("k", &quota);
        assert_send(&future);
        // Port 1 refuses: the store decides locally.
        assert!(matches!(future.await, Ok(d) if d.allowed));
        assert!(store.fallback_active());
    }
}
