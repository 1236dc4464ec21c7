//! The shared store: GCRA in Redis (or Valkey), one round trip per decision, with a local
//! fallback behind a circuit breaker so that Redis being slow or down never blocks mail.
//!
//! # One decision
//!
//! A decision at RCPT charges up to three budgets (network, list, address) in order and stops
//! at the first that denies. [`GCRA_SCRIPT`] takes all of them and runs by `EVALSHA`
//! (`redis::Script` sends `SCRIPT LOAD` and retries when the server answers `NOSCRIPT`, e.g.
//! after `SCRIPT FLUSH` or a restart), so on one node or a Sentinel primary a decision is one
//! round trip and atomic: several MX hosts on one key can never admit more than the quota. The
//! script reads the server's `TIME`, so hosts with skewed clocks agree (fault R4), and computes
//! in microseconds because Lua numbers are doubles. Every allowed request rewrites the key with
//! `PX` = time until its TAT, after which the key equals an absent one; denials write nothing.
//!
//! The key is `{prefix}{{{key}}}`: the braces make it a Redis Cluster hash tag (a `}` inside
//! `key` only shortens the tag). A decision's budgets are therefore in different slots of a
//! Cluster, where a script may not touch them together: there each budget is one single-key
//! call, all sent at once over the multiplexed connection (one round trip of wall time), and
//! budgets charged after the first denial are refunded in the background ([`REFUND_SCRIPT`];
//! see [`RedisStore::check_all`] for what that costs). Only `TIME`, `GET`, `SET … PX` and `DEL`
//! are used, all of which Valkey and Redis ≥ 2.6.12 have.
//!
//! # When Redis fails
//!
//! Each call has a deadline (default 50 ms, `tokio::time::timeout`). Any error (timeout,
//! connection refused or reset, `OOM command not allowed`, `READONLY` after a failover, a
//! script error) counts as a failure for the [`breaker`](super::breaker): after a few in a row
//! it opens and decisions go to a local [`MemoryStore`] without touching Redis, whose quotas are
//! the shared ones divided by `node_count` ([`Quota::divided`]). So a caller always has an
//! answer within the deadline plus a local decision.
//!
//! Connections are made by a background task: [`RedisStore::new`] returns at once and the
//! store starts in fallback until the first connection is up (fault R1, Redis down at start).
//! Whenever the breaker opens, the task also builds a fresh `ConnectionManager` (the old one
//! keeps serving probes meanwhile): the manager reconnects by itself after I/O errors, but not
//! after timeouts on a connection that stays open (a blackholed or frozen server) nor after
//! `READONLY` from a demoted primary, where only a new connection reaches the new primary.
//!
//! Entering and leaving fallback are logged once each (`warn!`/`info!`), not per request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use redis::{FromRedisValue, RedisError, Script, ScriptInvocation};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::LimitError;
use super::TlsFiles;
use super::backend::{BackendErrorKind, BackendStats, MAX_KEY_LEN};
use super::breaker::{Breaker, BreakerConfig, Change, Route};
use super::clock::{Clock, MonotonicClock};
use super::gcra::{Decision, Quota};
use super::memory::MemoryStore;
use super::target::{Connection, Target, TargetError};

/// The decision script; a transcription of `gcra::step` on the server's clock, applied to the
/// budgets of one decision in order and stopping at the first denial, exactly as calling
/// `step` once per budget would (earlier budgets stay charged, the denying one and those after
/// it are untouched).
///
/// `KEYS[i]`: the i-th bucket. `ARGV[2i-1]`: its `T` and `ARGV[2i]`: its `τ`, in microseconds.
/// Returns `{0, 0}` when every budget allowed, else `{i, retry_after_us}` for the first denial.
pub(crate) const GCRA_SCRIPT: &str = r#"
-- listwarden GCRA (see gcra.rs): budgets in order, server time, microseconds.
if redis.replicate_commands then pcall(redis.replicate_commands) end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = now
  local stored = tonumber(redis.call('GET', key) or '')
  if stored and stored > now then tat = stored end
  local ahead = tat - now
  if ahead > tolerance then
    return {i, ahead - tolerance}
  end
  local next_tat = tat + interval
  redis.call('SET', key, string.format('%.0f', next_tat),
    'PX', math.ceil((next_tat - now) / 1000))
end
return {0, 0}
"#;

/// Gives back one allowed request: `TAT −= T` (the key is deleted once that is not in the
/// future). Used in a Cluster, where a decision's budgets live in different slots and are
/// charged at once: the budgets after the first denial that were charged anyway are refunded.
///
/// `KEYS[1]`: the bucket. `ARGV[1]`: `T` in microseconds.
pub(crate) const REFUND_SCRIPT: &str = r#"
-- listwarden GCRA refund (see redis_store.rs): undo one allowed request.
if redis.replicate_commands then pcall(redis.replicate_commands) end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local stored = tonumber(redis.call('GET', KEYS[1]) or '')
if not stored then return 0 end
local tat = stored - tonumber(ARGV[1])
if tat <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
end
return 1
"#;

/// Settings of a [`RedisStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// One node, a Sentinel service or a Cluster (read by `ratelimit::target`).
    pub url: String,
    /// CA and client certificate for `rediss` URLs.
    pub tls: TlsFiles,
    /// Prepended to every key; default `lw:`.
    pub prefix: String,
    /// Longest a decision may wait for Redis; default 50 ms.
    pub deadline: Duration,
    /// Longest one connection attempt may take; default 1 s.
    pub connect_timeout: Duration,
    pub breaker: BreakerConfig,
    /// MX hosts sharing the quotas; the fallback gives each `1/node_count` of a quota.
    pub node_count: u32,
    /// Bound of the fallback memory store.
    pub fallback_max_keys: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".to_owned(),
            tls: TlsFiles::default(),
            prefix: "lw:".to_owned(),
            deadline: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            breaker: BreakerConfig::default(),
            node_count: 1,
            fallback_max_keys: 100_000,
        }
    }
}

/// Why a [`RedisStore`] could not be built (once built, backend trouble is never an error).
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(#[source] TargetError),
    #[error("the Redis rate-limit store must be created inside a Tokio runtime")]
    NoRuntime,
}

/// The kind of a failed Redis call.
fn error_kind(error: &RedisError) -> BackendErrorKind {
    if error.is_timeout() {
        return BackendErrorKind::Timeout;
    }
    if error.is_io_error() || error.is_connection_refusal() || error.is_connection_dropped() {
        return BackendErrorKind::Connection;
    }
    // Errors raised inside the script come back wrapped ("ERR Error running script ...")
    // on some versions, so look at the text as well as the code.
    let text = error.to_string();
    if error.code() == Some("OOM") || text.contains("OOM command not allowed") {
        BackendErrorKind::OutOfMemory
    } else if error.code() == Some("READONLY") || text.contains("READONLY") {
        BackendErrorKind::ReadOnly
    } else {
        BackendErrorKind::Other
    }
}

/// GCRA in Redis with a local fallback. Cheap to clone; clones share everything.
///
/// Dropping the last clone stops the background connection task.
#[derive(Debug, Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    prefix: String,
    deadline: Duration,
    connect_timeout: Duration,
    node_count: u32,
    target: Target,
    script: Script,
    refund: Script,
    clock: Arc<dyn Clock>,
    fallback: MemoryStore,
    state: Mutex<State>,
    /// Mirrors `State::fallback_active` for lock-free reads by the metrics exporter.
    fallback_active: AtomicBool,
    /// Wakes the connection task (a reconnect was requested, or the store is being dropped).
    wake: Arc<Notify>,
    errors: [AtomicU64; 5],
    fallback_decisions: AtomicU64,
    backend_decisions: AtomicU64,
    round_trips: AtomicU64,
    refunds: AtomicU64,
}

struct State {
    connection: Option<Connection>,
    breaker: Breaker,
    /// The breaker opened since the current connection was made: build a new one.
    reconnect_requested: bool,
    fallback_active: bool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("connected", &self.connection.is_some())
            .field("breaker", &self.breaker)
            .field("reconnect_requested", &self.reconnect_requested)
            .field("fallback_active", &self.fallback_active)
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the connection task notice that the store is gone.
        self.wake.notify_one();
    }
}

impl RedisStore {
    /// Starts a store; connects in the background and decides locally until connected.
    ///
    /// Fails only on an unparsable URL or outside a Tokio runtime.
    pub fn new(config: RedisConfig) -> Result<Self, RedisStoreError> {
        Self::with_clock(config, Arc::new(MonotonicClock::new()))
    }

    /// As [`RedisStore::new`]; `clock` drives the breaker and the fallback.
    pub fn with_clock(config: RedisConfig, clock: Arc<dyn Clock>) -> Result<Self, RedisStoreError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| RedisStoreError::NoRuntime)?;
        let target =
            Target::parse(&config.url, &config.tls).map_err(RedisStoreError::InvalidUrl)?;
        let wake = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            prefix: config.prefix,
            deadline: config.deadline,
            connect_timeout: config.connect_timeout,
            node_count: config.node_count.max(1),
            target,
            script: Script::new(GCRA_SCRIPT),
            refund: Script::new(REFUND_SCRIPT),
            fallback: MemoryStore::with_clock(config.fallback_max_keys, clock.clone()),
            clock,
            state: Mutex::new(State {
                connection: None,
                breaker: Breaker::new(config.breaker),
                reconnect_requested: false,
                fallback_active: true,
            }),
            fallback_active: AtomicBool::new(true),
            wake: wake.clone(),
            errors: Default::default(),
            fallback_decisions: AtomicU64::new(0),
            backend_decisions: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
            refunds: AtomicU64::new(0),
        });
        runtime.spawn(connection_task(Arc::downgrade(&inner), wake));
        Ok(Self { inner })
    }

    /// Decides one request for `key` under `quota`: in Redis when it is healthy, otherwise
    /// locally with the quota divided by `node_count`. Returns within the deadline plus a local
    /// decision; the only error is a key longer than [`MAX_KEY_LEN`].
    pub async fn check(&self, key: &str, quota: &Quota) -> Result<Decision, LimitError> {
        if key.len() > MAX_KEY_LEN {
            return Err(LimitError::KeyTooLong {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        let decisions = self.check_all(&[(key, *quota)]).await;
        Ok(decisions.first().copied().unwrap_or(Decision::ALLOW))
    }

    /// Decides the budgets of one request in order, stopping at the first denial (see
    /// [`Store::check_all`](super::Store::check_all)), in one round trip to Redis.
    ///
    /// One node or Sentinel: one [`GCRA_SCRIPT`] call over all the keys, atomic. Cluster: the
    /// keys hash to different slots, so one single-key call per budget, all sent at once over
    /// the multiplexed connection (one round trip of wall time); should a budget deny, those
    /// after it that were charged anyway get their request back ([`REFUND_SCRIPT`], off the
    /// decision path). Between the charge and the refund another host may see those budgets
    /// one request fuller than sequential charging would leave them: a request may be refused
    /// a little early, never admitted beyond the quota.
    ///
    /// A budget Redis did not answer is decided by the local fallback (quota divided by
    /// `node_count`), still in order. An over-long key (a bug upstream, never a reason to
    /// refuse mail) is allowed uncharged.
    pub(crate) async fn check_all(&self, budgets: &[(&str, Quota)]) -> Vec<Decision> {
        let inner = &*self.inner;
        let sent: Vec<usize> = (0..budgets.len())
            .filter(|&i| {
                budgets
                    .get(i)
                    .is_some_and(|(key, _)| key.len() <= MAX_KEY_LEN)
            })
            .collect();
        // Redis's answer per budget; `None`: decide locally (or not reached).
        let mut answers: Vec<Option<Decision>> = vec![None; budgets.len()];
        let concurrent = sent.len() > 1 && self.mode() == "cluster";
        let mut charged_in_redis = vec![false; budgets.len()];
        if concurrent {
            let calls = sent.iter().map(|&i| {
                let (key, quota) = &budgets[i];
                let params = quota.params_micros();
                async move {
                    let mut invocation = inner.script.key(self.redis_key(key));
                    invocation.arg(params.interval).arg(params.tolerance);
                    (i, self.call::<(i64, i64)>(&invocation).await)
                }
            });
            let results = futures_util::future::join_all(calls).await;
            if results
                .iter()
                .any(|(_, call)| !matches!(call, Call::Skipped))
            {
                inner.round_trips.fetch_add(1, Ordering::Relaxed);
            }
            for (i, call) in results {
                if let Call::Done((denied, wait_us)) = call {
                    let decision = decision(denied == 0, wait_us);
                    charged_in_redis[i] = decision.allowed;
                    answers[i] = Some(decision);
                }
            }
        } else if !sent.is_empty() {
            let mut invocation = inner.script.prepare_invoke();
            for &i in &sent {
                let (key, quota) = &budgets[i];
                let params = quota.params_micros();
                invocation
                    .key(self.redis_key(key))
                    .arg(params.interval)
                    .arg(params.tolerance);
            }
            let call = self.call::<(i64, i64)>(&invocation).await;
            if !matches!(call, Call::Skipped) {
                inner.round_trips.fetch_add(1, Ordering::Relaxed);
            }
            if let Call::Done((denied, wait_us)) = call {
                // `denied` is the 1-based position among the keys sent; 0 when none denied.
                let denied = usize::try_from(denied).unwrap_or(0);
                for (position, &i) in sent.iter().enumerate() {
                    if position + 1 == denied {
                        answers[i] = Some(decision(false, wait_us));
                        break;
                    }
                    answers[i] = Some(Decision::ALLOW);
                }
            }
        }
        let mut decisions = Vec::with_capacity(budgets.len());
        for (i, (key, quota)) in budgets.iter().enumerate() {
            let decision = if key.len() > MAX_KEY_LEN {
                Decision::ALLOW
            } else if let Some(decision) = answers[i] {
                inner.backend_decisions.fetch_add(1, Ordering::Relaxed);
                decision
            } else {
                inner.fallback_decisions.fetch_add(1, Ordering::Relaxed);
                inner.fallback.check(key, &quota.divided(inner.node_count))
            };
            decisions.push(decision);
            if !decision.allowed {
                break;
            }
        }
        // Cluster only: budgets after the denial that Redis charged all the same.
        for i in decisions.len()..budgets.len() {
            if charged_in_redis[i] {
                self.refund(budgets[i].0, &budgets[i].1);
            }
        }
        decisions
    }

    /// Gives one request back to `key` in the background (see [`REFUND_SCRIPT`]).
    fn refund(&self, key: &str, quota: &Quota) {
        self.inner.refunds.fetch_add(1, Ordering::Relaxed);
        let store = self.clone();
        let key = self.redis_key(key);
        let interval = quota.params_micros().interval;
        tokio::spawn(async move {
            let mut invocation = store.inner.refund.key(key);
            invocation.arg(interval);
            store.invoke::<i64>(&invocation).await;
        });
    }

    /// `{prefix}{{{key}}}`: the braces make `key` the Cluster hash tag.
    fn redis_key(&self, key: &str) -> String {
        format!("{}{{{}}}", self.inner.prefix, key)
    }

    /// Runs one script on the shared connection within the deadline, routed by the breaker
    /// like a decision; `None` when Redis is not usable now (the caller decides locally).
    ///
    /// Every script listwarden runs touches keys of one hash tag only, so it is slot-local in
    /// a Cluster (the decision script's several keys are sent together only outside a Cluster).
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Option<T> {
        match self.call(invocation).await {
            Call::Done(value) => Some(value),
            Call::Failed | Call::Skipped => None,
        }
    }

    async fn call<T: FromRedisValue>(&self, invocation: &ScriptInvocation<'_>) -> Call<T> {
        let inner = &*self.inner;
        let (route, connection) = {
            let mut state = inner.lock_state();
            let now = inner.clock.now();
            if state.connection.is_none() {
                (Route::Fallback, None)
            } else {
                match state.breaker.route(now) {
                    Route::Fallback => (Route::Fallback, None),
                    route => (route, state.connection.clone()),
                }
            }
        };
        let Some(mut connection) = connection else {
            return Call::Skipped;
        };
        let outcome =
            tokio::time::timeout(inner.deadline, invocation.invoke_async(&mut connection)).await;
        let failure = match outcome {
            Ok(Ok(value)) => {
                inner.record(route, None);
                return Call::Done(value);
            }
            Ok(Err(error)) => {
                debug!(%error, "rate-limit backend call failed");
                error_kind(&error)
            }
            Err(_elapsed) => BackendErrorKind::Timeout,
        };
        inner.record(route, Some(failure));
        Call::Failed
    }

    /// The key prefix, for the other shared state (the shield, complaint windows, peers).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// `node`, `sentinel` or `cluster`.
    pub fn mode(&self) -> &'static str {
        self.inner.target.mode()
    }

    /// True while decisions are local: not connected yet, or the breaker is not closed.
    pub fn fallback_active(&self) -> bool {
        self.inner.fallback_active.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> BackendStats {
        let inner = &*self.inner;
        let mut errors = [0; 5];
        for (count, counter) in errors.iter_mut().zip(&inner.errors) {
            *count = counter.load(Ordering::Relaxed);
        }
        BackendStats {
            errors,
            fallback_decisions: inner.fallback_decisions.load(Ordering::Relaxed),
            backend_decisions: inner.backend_decisions.load(Ordering::Relaxed),
            round_trips: inner.round_trips.load(Ordering::Relaxed),
            refunds: inner.refunds.load(Ordering::Relaxed),
        }
    }

    /// Keys held by the local fallback (Redis keys are not counted: they expire there).
    pub(crate) fn fallback_len(&self) -> usize {
        self.inner.fallback.len()
    }

    /// Waits until a connection is established, at most `within`; true if it is.
    ///
    /// Never needed for correctness (the store decides locally until then); useful to log at
    /// startup and in tests.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        const POLL: Duration = Duration::from_millis(5);
        let give_up = tokio::time::Instant::now() + within;
        loop {
            if self.inner.lock_state().connection.is_some() {
                return true;
            }
            if tokio::time::Instant::now() >= give_up {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Inner {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every await-free step, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reports one backend call (`failure` = None for success) to the breaker.
    fn record(&self, route: Route, failure: Option<BackendErrorKind>) {
        if let Some(kind) = failure {
            self.count_error(kind);
        }
        let mut state = self.lock_state();
        let now = self.clock.now();
        match state.breaker.record(route, failure.is_none(), now) {
            Change::Opened | Change::Reopened => {
                state.reconnect_requested = true;
                self.wake.notify_one();
            }
            Change::Closed | Change::Unchanged => {}
        }
        self.publish(&mut state, failure);
    }

    fn count_error(&self, kind: BackendErrorKind) {
        if let Some(counter) = self.errors.get(kind.index()) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Recomputes whether decisions are local and logs when that flips.
    fn publish(&self, state: &mut State, cause: Option<BackendErrorKind>) {
        let active = state.connection.is_none() || !state.breaker.is_closed();
        if active == state.fallback_active {
            return;
        }
        state.fallback_active = active;
        self.fallback_active.store(active, Ordering::Relaxed);
        if active {
            warn!(
                cause = cause.map_or("disconnected", BackendErrorKind::as_str),
                node_count = self.node_count,
                "rate-limit backend unavailable: deciding locally with per-node quotas"
            );
        } else {
            info!("rate-limit backend available: deciding in Redis");
        }
    }

    /// Installs a fresh connection made by the connection task.
    fn install(&self, connection: Connection) {
        let mut state = self.lock_state();
        state.connection = Some(connection);
        state.reconnect_requested = false;
        self.publish(&mut state, None);
    }

    fn needs_connection(&self) -> bool {
        let state = self.lock_state();
        state.connection.is_none() || state.reconnect_requested
    }
}

/// What became of one backend call.
enum Call<T> {
    Done(T),
    /// Sent, and it failed or timed out (reported to the breaker).
    Failed,
    /// Not sent: not connected, or the breaker routes to the fallback.
    Skipped,
}

fn decision(allowed: bool, wait_us: i64) -> Decision {
    if allowed {
        Decision::ALLOW
    } else {
        Decision::deny(Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)))
    }
}

/// Backoff between failed connection attempts.
const RECONNECT_INITIAL: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Keeps a connection available: at start, and whenever the breaker asks for a new one.
///
/// Holds only a weak reference between steps, so dropping the store ends it.
async fn connection_task(store: Weak<Inner>, wake: Arc<Notify>) {
    let mut backoff = RECONNECT_INITIAL;
    let mut failures_logged = false;
    loop {
        let (target, timeout) = {
            let Some(inner) = store.upgrade() else { return };
            if !inner.needs_connection() {
                drop(inner);
                wake.notified().await;
                continue;
            }
            (inner.target.clone(), inner.connect_timeout)
        };
        let attempt = connect(&target, timeout).await;
        let Some(inner) = store.upgrade() else { return };
        match attempt {
            Ok(connection) => {
                inner.install(connection);
                if failures_logged {
                    info!("connected to the rate-limit backend");
                }
                backoff = RECONNECT_INITIAL;
                failures_logged = false;
            }
            Err(error) => {
                let kind = error.as_ref().map_or(BackendErrorKind::Timeout, error_kind);
                inner.count_error(kind);
                if !failures_logged {
                    match &error {
                        Some(error) => {
                            warn!(%error, "cannot connect to the rate-limit backend; retrying in the background")
                        }
                        None => warn!(
                            ?timeout,
                            "connecting to the rate-limit backend timed out; retrying in the background"
                        ),
                    }
                    failures_logged = true;
                }
                drop(inner);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = wake.notified() => {}
                }
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        }
    }
}

/// One connection attempt (for Sentinel, after asking the sentinels for the primary), then a
/// `PING` and `SCRIPT LOAD` so that the first decision does not pay for them. `Err(None)` is a
/// timeout.
async fn connect(target: &Target, timeout: Duration) -> Result<Connection, Option<RedisError>> {
    let attempt = async {
        let mut connection = target.connect(timeout).await?;
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await?;
        // Only a warm-up: EVALSHA reloads the script on NOSCRIPT anyway (in a Cluster, on the
        // node that answered NOSCRIPT).
        if let Err(error) = Script::new(GCRA_SCRIPT).load_async(&mut connection).await {
            debug!(%error, "SCRIPT LOAD failed");
        }
        Ok::<_, RedisError>(connection)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(Some(error)),
        Err(_elapsed) => Err(None),
    }
}
