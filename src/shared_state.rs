//! Cross-host state in Redis besides the budgets: shields, complaint windows and peer
//! fingerprints, kept in step by one background task a few times a second.
//!
//! Every call goes through the rate-limit store's connection, deadline and circuit breaker
//! (`RedisStore::invoke`): while Redis is away each host goes on with its own view (local
//! shields, local rates) and sends what it kept once Redis is back. Each script touches one
//! hash tag only, so it is slot-local in a Cluster. The key layout (with the default prefix
//! `lw:`) is in listwarden.yaml(5):
//!
//! - `lw:shields:{_lw_shields}`: sorted set, list label → time (server ms) its shield drops;
//! - `lw:shield-src:{_lw_shields}:LIST`: sorted set, source network → last invalid bounce
//!   (server ms), trimmed to `trigger + 1` members, expiring after `within`;
//! - `lw:rates:{LIST}`: hash, `s:HOUR` / `c:HOUR` → deliveries / complaints in that hour
//!   (Unix hours), fields older than 24 hours deleted, key expiring after 25 hours;
//!   `lw:rates:{LIST}:p:PROVIDER` the same for the list's mail to one provider;
//!   `...:once:MARK` (after either): a complaint counted in that hash, set only if absent,
//!   expiring after 25 hours;
//! - `lw:peers:{_lw_peers}`: hash, instance → `UNIX_TIME RING LISTS` fingerprints, entries
//!   older than 10 minutes deleted;
//! - `lw:throttle:{_lw_throttle}:slow` and `...:hold`: sorted sets, provider → time (server
//!   ms) its throttle step lasts until, the latest any host announced.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use sha2::{Digest, Sha256};

use crate::Shared;
use crate::config::{Config, Shield};
use crate::ratelimit::{RedisStore, Store};
use crate::rates::{HourCounts, Mark};
use crate::record::Event;

/// How often shields are exchanged: a shield raised on one host is up on every other within
/// this plus one round trip.
pub(crate) const SHIELD_SYNC: Duration = Duration::from_millis(250);
/// How often complaint windows and peer fingerprints are exchanged.
const SLOW_SYNC: Duration = Duration::from_secs(5);
/// Peers not heard from for this long are forgotten.
const PEER_STALE_SECS: u64 = 600;
/// Most shields read back at once (labels come from the config; a backstop).
const MAX_SHIELDS: usize = 100_000;

/// Sends this host's first invalid bounces per (list, source) and its local raises, counts
/// distinct sources over every host, raises a list whose count passes `trigger`, and returns
/// every shield still up with the milliseconds it has left.
///
/// `KEYS[1]`: the shields set; `KEYS[1+i]`: list i's source set. `ARGV`: hold ms, within ms,
/// trigger, n lists, n labels, n local-raise flags, then (list index, source) pairs.
const SHIELD_SCRIPT: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hold, within, trigger, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function raise(label)
  local untilms = now + hold
  local cur = tonumber(redis.call('ZSCORE', KEYS[1], label) or '0')
  if untilms > cur then redis.call('ZADD', KEYS[1], untilms, label) end
end
for i = 1, n do
  if ARGV[4 + n + i] == '1' then raise(ARGV[4 + i]) end
end
local touched = {}
for j = 4 + 2 * n + 1, #ARGV, 2 do
  local i = tonumber(ARGV[j])
  local key = KEYS[1 + i]
  redis.call('ZADD', key, now, ARGV[j + 1])
  touched[i] = true
end
for i, _ in pairs(touched) do
  local key = KEYS[1 + i]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - within)
  redis.call('ZREMRANGEBYRANK', key, 0, -(trigger + 2))
  redis.call('PEXPIRE', key, within)
  if redis.call('ZCARD', key) > trigger then raise(ARGV[4 + i]) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local up = redis.call('ZRANGEBYSCORE', KEYS[1], now + 1, '+inf', 'WITHSCORES', 'LIMIT', 0, 100000)
local out = {}
for k = 1, #up, 2 do
  out[#out + 1] = up[k]
  out[#out + 1] = tonumber(up[k + 1]) - now
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], tonumber(last[2])) end
return out
"#;

/// Adds one list's counts and returns its totals over the last 24 hours. A complaint comes
/// with its mark's key, set only if absent: a copy another host (or this one) counted already
/// is not counted again.
///
/// `KEYS[1]`: the list's hash; `KEYS[1+i]`: mark i. `ARGV[1]`: the current Unix hour,
/// `ARGV[2]`: n, then n (hour, sent, complaints) triples, then the hour of each mark.
const RATES_SCRIPT: &str = r#"
local hour, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local function add(kind, h, v)
  if h > hour - 24 and v > 0 then redis.call('HINCRBY', KEYS[1], kind .. ':' .. h, v) end
end
for j = 3, 2 + 3 * n, 3 do
  local h = tonumber(ARGV[j])
  add('s', h, tonumber(ARGV[j + 1]))
  add('c', h, tonumber(ARGV[j + 2]))
end
for i = 2, #KEYS do
  local h = tonumber(ARGV[1 + 3 * n + i])
  if h > hour - 24 and redis.call('SET', KEYS[i], h, 'NX', 'PX', 25 * 3600 * 1000) then
    add('c', h, 1)
  end
end
local all = redis.call('HGETALL', KEYS[1])
local sent, complaints, old = 0, 0, {}
for k = 1, #all, 2 do
  local kind, h = string.match(all[k], '^(%a):(%d+)$')
  h = tonumber(h)
  if not h or h <= hour - 24 then
    old[#old + 1] = all[k]
  elseif kind == 's' then
    sent = sent + tonumber(all[k + 1])
  else
    complaints = complaints + tonumber(all[k + 1])
  end
end
if #old > 0 then redis.call('HDEL', KEYS[1], unpack(old)) end
if #all > 2 * #old then redis.call('PEXPIRE', KEYS[1], 25 * 3600 * 1000) end
return {sent, complaints}
"#;

/// Records this host's fingerprints (unless the instance is empty) and returns every fresh
/// peer's.
///
/// `KEYS[1]`: the peers hash. `ARGV`: instance, `RING LISTS`, stale seconds.
const PEERS_SCRIPT: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local now = tonumber(redis.call('TIME')[1])
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], ARGV[1], now .. ' ' .. ARGV[2]) end
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for k = 1, #all, 2 do
  local at = tonumber(string.match(all[k + 1], '^(%d+) '))
  if not at or at < now - tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[1], all[k])
  else
    out[#out + 1] = all[k]
    out[#out + 1] = string.sub(all[k + 1], string.len(at) + 2)
  end
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return out
"#;

/// Announces this host's throttle steps and returns every host's still running.
///
/// `KEYS[1]`, `KEYS[2]`: the slow and hold sets. `ARGV`: (key index, provider, ms left)
/// triples. Returns `INDEX:PROVIDER`, ms left pairs.
const THROTTLE_SCRIPT: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for j = 1, #ARGV, 3 do
  local key = KEYS[tonumber(ARGV[j])]
  local untilms = now + tonumber(ARGV[j + 2])
  local cur = tonumber(redis.call('ZSCORE', key, ARGV[j + 1]) or '0')
  if untilms > cur then redis.call('ZADD', key, untilms, ARGV[j + 1]) end
end
local out = {}
for k = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
  local up = redis.call('ZRANGEBYSCORE', KEYS[k], now + 1, '+inf', 'WITHSCORES', 'LIMIT', 0, 1000)
  for i = 1, #up, 2 do
    out[#out + 1] = k .. ':' .. up[i]
    out[#out + 1] = tonumber(up[i + 1]) - now
  end
  local last = redis.call('ZRANGE', KEYS[k], -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', KEYS[k], tonumber(last[2])) end
end
return out
"#;

/// Shares throttle steps: this host's go up, every host's come back into the throttle
/// (a provider slowed anywhere is slowed in every host's table). While Redis is away each
/// host keeps its own levels and what it last read, which runs out by itself.
async fn sync_throttle(shared: &Shared, store: &RedisStore, t: &crate::config::Throttle) {
    use crate::throttle::Level;
    let now = crate::unix_now();
    let script = Script::new(THROTTLE_SCRIPT);
    let prefix = store.prefix();
    let mut call = script.key(format!("{prefix}throttle:{{_lw_throttle}}:slow"));
    call.key(format!("{prefix}throttle:{{_lw_throttle}}:hold"));
    for (provider, level, left) in shared.throttle.local_steps(t, now) {
        let index = if level == Level::Hold { 2 } else { 1 };
        call.arg(index).arg(provider).arg(left.saturating_mul(1000));
    }
    let Some(up) = store.invoke::<Vec<(String, i64)>>(&call).await else {
        return;
    };
    let steps = up
        .into_iter()
        .filter_map(|(member, ms)| {
            let (index, provider) = member.split_once(':')?;
            let level = if index == "2" {
                Level::Hold
            } else {
                Level::Slow
            };
            // Only configured providers: the set is shared by every host's config.
            t.providers.iter().any(|p| p.name == provider).then(|| {
                let secs = u64::try_from(ms).unwrap_or(0).div_ceil(1000);
                (provider.to_owned(), level, secs)
            })
        })
        .collect();
    shared.throttle.set_remote(steps, now);
}

/// This host's fingerprints, as peers compare them: the signing key ring (each key's
/// [`fingerprint`](crate::address::keys::Key::fingerprint), the signing id) and the set of
/// protected list addresses, each shortened to 16 hex digits of SHA-256.
pub fn fingerprints(config: &Config) -> (String, String) {
    let ring = match &config.signing {
        Some(ring) => {
            let keys: Vec<String> = ring
                .ids()
                .filter_map(|id| ring.get(id).map(|k| format!("{id}={}", k.fingerprint())))
                .collect();
            format!("sign={};{}", ring.signing_id(), keys.join(","))
        }
        None => "unsigned".to_owned(),
    };
    let mut lists: Vec<String> = config.lists.iter().map(|l| l.address.to_string()).collect();
    lists.sort();
    (short_hash(&ring), short_hash(&lists.join("\n")))
}

fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// This instance's name among its peers: the host name and the milter socket, so that two
/// instances on one machine differ.
pub(crate) fn instance_name(config: &Config) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL or the end.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let host = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown".to_owned()
    };
    format!("{host}/{}", config.milter.listen)
}

/// One peer's fingerprints, as Redis holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub instance: String,
    pub ring: String,
    pub lists: String,
}

/// Publishes this host's fingerprints and reads every fresh peer's; `None` when Redis is not
/// usable now.
pub(crate) async fn exchange_peers(store: &RedisStore, config: &Config) -> Option<Vec<Peer>> {
    let (ring, lists) = fingerprints(config);
    peers_call(store, &instance_name(config), &format!("{ring} {lists}")).await
}

/// Reads every fresh peer's fingerprints without publishing any (`check-config --peers`).
pub async fn read_peers(store: &RedisStore) -> Option<Vec<Peer>> {
    peers_call(store, "", "").await
}

async fn peers_call(store: &RedisStore, instance: &str, prints: &str) -> Option<Vec<Peer>> {
    let script = Script::new(PEERS_SCRIPT);
    let mut call = script.key(format!("{}peers:{{_lw_peers}}", store.prefix()));
    call.arg(instance).arg(prints).arg(PEER_STALE_SECS);
    let flat: Vec<String> = store.invoke(&call).await?;
    let mut peers: Vec<Peer> = flat
        .chunks(2)
        .filter_map(|pair| {
            let [instance, prints] = pair else {
                return None;
            };
            let (ring, lists) = prints.split_once(' ')?;
            Some(Peer {
                instance: instance.clone(),
                ring: ring.to_owned(),
                lists: lists.to_owned(),
            })
        })
        .collect();
    peers.sort_by(|a, b| a.instance.cmp(&b.instance));
    Some(peers)
}

/// Sends pending shield events and reads back every shield up; true if Redis answered.
async fn sync_shields(shared: &Shared, store: &RedisStore, shield: &Shield) -> bool {
    let pending = shared.shields.take_pending();
    let mut labels: Vec<&str> = pending
        .sources
        .iter()
        .map(|(list, _)| list.as_str())
        .chain(pending.raised.iter().map(String::as_str))
        .collect();
    labels.sort_unstable();
    labels.dedup();
    let script = Script::new(SHIELD_SCRIPT);
    let prefix = store.prefix();
    let mut call = script.key(format!("{prefix}shields:{{_lw_shields}}"));
    for label in &labels {
        call.key(format!("{prefix}shield-src:{{_lw_shields}}:{label}"));
    }
    call.arg(u64::try_from(shield.hold.as_millis()).unwrap_or(u64::MAX))
        .arg(u64::try_from(shield.within.as_millis()).unwrap_or(u64::MAX))
        .arg(shield.trigger)
        .arg(labels.len());
    for label in &labels {
        call.arg(*label);
    }
    for label in &labels {
        call.arg(if pending.raised.contains(*label) {
            "1"
        } else {
            "0"
        });
    }
    for (list, source) in &pending.sources {
        if let Ok(i) = labels.binary_search(&list.as_str()) {
            call.arg(i + 1).arg(source);
        }
    }
    match store.invoke::<Vec<(String, i64)>>(&call).await {
        Some(up) => {
            let up = up
                .into_iter()
                .take(MAX_SHIELDS)
                .map(|(list, ms)| (list, Duration::from_millis(u64::try_from(ms).unwrap_or(0))))
                .collect();
            shared.shields.set_remote(up);
            true
        }
        None => {
            drop(call);
            shared.shields.restore_pending(pending);
            false
        }
    }
}

/// Marks sent in one script call at most (each is a key of the call).
const MARKS_PER_CALL: usize = 500;

/// Sends each list's pending counts and records its totals over every host.
async fn sync_rates(shared: &Shared, store: &RedisStore) {
    let now = crate::unix_now();
    let keys = shared
        .rates
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take_pending();
    let script = Script::new(RATES_SCRIPT);
    for (key, hours) in keys {
        let list = &key.list;
        // One hash per list and one per (list, provider), in the list's slot; so are the
        // marks.
        let name = match &key.provider {
            None => format!("{}rates:{{{list}}}", store.prefix()),
            Some(p) => format!("{}rates:{{{list}}}:p:{p}", store.prefix()),
        };
        let counts: Vec<(u64, u64, u64)> = hours
            .iter()
            .filter(|h| h.sent > 0 || h.complaints > 0)
            .map(|h| (h.hour, h.sent, h.complaints))
            .collect();
        let marks: Vec<(u64, Mark)> = hours
            .iter()
            .flat_map(|h| h.marks.iter().map(|m| (h.hour, *m)))
            .collect();
        // The counts go with the first call; the marks a few hundred a call.
        let mut answer = None;
        let mut done = 0;
        loop {
            let chunk = &marks[done..marks.len().min(done + MARKS_PER_CALL)];
            let first = done == 0;
            let mut call = script.key(&name);
            for (_, m) in chunk {
                call.key(format!("{name}:once:{}", hex(m)));
            }
            let n = if first { counts.len() } else { 0 };
            call.arg(now / 3600).arg(n);
            for (hour, s, c) in counts.iter().take(n) {
                call.arg(*hour).arg(*s).arg(*c);
            }
            for (hour, _) in chunk {
                call.arg(*hour);
            }
            match store.invoke::<(u64, u64)>(&call).await {
                Some(totals) => answer = Some(totals),
                None => {
                    let mut unsent: Vec<HourCounts> = marks[done..]
                        .iter()
                        .map(|&(hour, m)| HourCounts {
                            hour,
                            marks: vec![m],
                            ..HourCounts::default()
                        })
                        .collect();
                    if first {
                        unsent.extend(counts.iter().map(|&(hour, sent, complaints)| HourCounts {
                            hour,
                            sent,
                            complaints,
                            ..HourCounts::default()
                        }));
                    }
                    let mut rates = shared.rates.lock().unwrap_or_else(|p| p.into_inner());
                    rates.restore_pending(&key, unsent, now);
                    break;
                }
            }
            done += chunk.len();
            if done >= marks.len() {
                break;
            }
        }
        if let Some((sent, complaints)) = answer {
            let mut rates = shared.rates.lock().unwrap_or_else(|p| p.into_inner());
            rates.set_shared(&key, sent, complaints, now);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Keeps shields, complaint windows and peer fingerprints in step through Redis; runs for the
/// daemon's life when the store is Redis.
pub async fn run(shared: Arc<Shared>) {
    let Store::Redis(store) = shared.store.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(SHIELD_SYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let slow_every = (SLOW_SYNC.as_millis() / SHIELD_SYNC.as_millis()).max(1);
    let mut n: u128 = 0;
    loop {
        tick.tick().await;
        let config = shared.config.load_full();
        if let Some(shield) = &config.shield {
            sync_shields(&shared, &store, shield).await;
            let (_, changes) = shared.shields.current();
            shared
                .recorder()
                .record_all(changes.into_iter().map(Event::Shield));
        }
        if n.is_multiple_of(slow_every) {
            sync_rates(&shared, &store).await;
            if let Some(t) = &config.throttle {
                sync_throttle(&shared, &store, t).await;
            }
            if let Some(peers) = exchange_peers(&store, &config).await {
                let mine = fingerprints(&config);
                let differ = peers
                    .iter()
                    .filter(|p| {
                        (p.ring.as_str(), p.lists.as_str()) != (mine.0.as_str(), mine.1.as_str())
                    })
                    .count();
                shared.recorder().record(Event::PeersMismatched(differ));
            }
        }
        n = n.wrapping_add(1);
    }
}

/// Against the Redis at `LISTWARDEN_IT_REDIS` (run by integration/run): two "hosts" (two
/// `Shared`) on one prefix.
#[cfg(test)]
mod redis_it {
    use super::*;
    use std::path::Path;

    fn host(url: &str, prefix: &str, list: &str) -> Arc<Shared> {
        let yaml = format!(
            "milter:\n  listen: inet:127.0.0.1:1\nlists:\n  - address: {list}\n\
             ratelimit:\n  state: \"{url}\"\n  redis_prefix: \"{prefix}\"\n  redis_deadline_ms: 1000\n\
             shield:\n  trigger: 5\n  within: 10m\n  hold: 1h\n"
        );
        let config = Config::parse(&yaml, Path::new("it.yaml")).unwrap_or_else(|e| panic!("{e}"));
        Shared::new(config)
    }

    async fn connected(shared: &Shared) -> RedisStore {
        let Store::Redis(store) = shared.store.clone() else {
            panic!("not a Redis store");
        };
        assert!(store.wait_connected(Duration::from_secs(5)).await);
        store
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Redis at LISTWARDEN_IT_REDIS"]
    async fn redis_it_shields_rates_and_peers_are_shared() {
        let url = std::env::var("LISTWARDEN_IT_REDIS")
            .unwrap_or_else(|_| panic!("LISTWARDEN_IT_REDIS is not set"));
        let prefix = format!(
            "it-shared-{}:",
            crate::unix_now() ^ u64::from(std::process::id())
        );
        let a = host(&url, &prefix, "members@lists.example.org");
        let b = host(&url, &prefix, "members@lists.example.org");
        let (sa, sb) = (connected(&a).await, connected(&b).await);
        let shield = a
            .config
            .load()
            .shield
            .clone()
            .unwrap_or_else(|| panic!("shield"));
        // Three sources through each host: 6 distinct > trigger 5, though neither saw more
        // than 3.
        for i in 0..3 {
            assert_eq!(
                a.shields
                    .record_invalid("members", &format!("a{i}"), &shield),
                None
            );
            assert_eq!(
                b.shields
                    .record_invalid("members", &format!("b{i}"), &shield),
                None
            );
        }
        assert!(sync_shields(&a, &sa, &shield).await);
        assert!(a.shields.current().0.is_empty(), "3 sources so far");
        assert!(sync_shields(&b, &sb, &shield).await);
        assert_eq!(b.shields.current().0, ["members"]);
        assert!(sync_shields(&a, &sa, &shield).await);
        assert_eq!(
            a.shields.current().0,
            ["members"],
            "raised through b, up on a"
        );

        // Deliveries seen by a, complaints by b: one rate on both.
        let now = crate::unix_now();
        {
            let mut rates = a.rates.lock().unwrap_or_else(|p| p.into_inner());
            for _ in 0..1000 {
                rates.sent("members", now);
            }
        }
        let original = |n: u32| {
            crate::rates::mark(
                "members",
                &format!("prvs=1234abcdef=members-bounces+m{n}=example.com@lists.example.org"),
            )
        };
        {
            let mut rates = b.rates.lock().unwrap_or_else(|p| p.into_inner());
            rates.complaint("members", None, original(1), now);
            rates.complaint("members", None, original(2), now);
        }
        sync_rates(&a, &sa).await;
        sync_rates(&b, &sb).await;
        sync_rates(&a, &sa).await;
        for host in [&a, &b] {
            let rates = host
                .rates
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .rates(now);
            assert_eq!(rates, vec![("members".to_string(), 0.002)]);
        }

        // Peers: same files agree; a host with another list set is found.
        let c = host(&url, &prefix, "other@lists.example.org");
        let sc = connected(&c).await;
        for (shared, store) in [(&a, &sa), (&b, &sb), (&c, &sc)] {
            let config = shared.config.load_full();
            let peers = exchange_peers(store, &config).await.unwrap_or_default();
            assert!(!peers.is_empty());
        }
        let peers = read_peers(&sa).await.unwrap_or_default();
        // a and b share a name (same host, same listen): one entry; c differs in lists.
        let mine = fingerprints(&a.config.load());
        let differ: Vec<_> = peers.iter().filter(|p| p.lists != mine.1).collect();
        assert_eq!(peers.len(), 1, "{peers:?}");
        assert_eq!(differ.len(), 1, "{peers:?}");
        assert_eq!(peers[0].ring, mine.0);
    }

    /// The same complained-of copy, reported to both hosts and again and again: one complaint
    /// over every host (the list's total and the provider's). Another original of the same
    /// member is another complaint.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Redis at LISTWARDEN_IT_REDIS"]
    async fn redis_it_one_copy_reported_to_two_hosts_counts_once() {
        let url = std::env::var("LISTWARDEN_IT_REDIS")
            .unwrap_or_else(|_| panic!("LISTWARDEN_IT_REDIS is not set"));
        let prefix = format!(
            "it-once-{}:",
            crate::unix_now() ^ u64::from(std::process::id())
        );
        let a = host(&url, &prefix, "members@lists.example.org");
        let b = host(&url, &prefix, "members@lists.example.org");
        let (sa, sb) = (connected(&a).await, connected(&b).await);
        // The copies to member n (each its own signed address).
        let copy = |n: u32| {
            crate::rates::mark(
                "members",
                &format!("prvs=1234abcdef=bounce+m{n}==a==yahoo.com==members@lists.example.org"),
            )
        };
        let now = crate::unix_now();
        {
            let mut rates = a.rates.lock().unwrap_or_else(|p| p.into_inner());
            for _ in 0..1000 {
                rates.sent_to("members", "yahoo", now);
            }
        }
        // Five reports of copy 1 to each host; each host counts it once itself.
        for host in [&a, &b] {
            let mut rates = host.rates.lock().unwrap_or_else(|p| p.into_inner());
            let counted = (0..5)
                .filter(|_| rates.complaint("members", Some("yahoo"), copy(1), now))
                .count();
            assert_eq!(counted, 1);
        }
        let read = |host: &Arc<Shared>| {
            let rates = host.rates.lock().unwrap_or_else(|p| p.into_inner());
            (rates.rates(now), rates.provider_rates(now))
        };
        let want = |rate: f64| {
            (
                vec![("members".to_string(), rate)],
                vec![("members".to_string(), "yahoo".to_string(), rate)],
            )
        };
        sync_rates(&a, &sa).await;
        sync_rates(&b, &sb).await;
        sync_rates(&a, &sa).await;
        assert_eq!(read(&a), want(0.001), "one complaint over both hosts");
        assert_eq!(read(&b), want(0.001));
        // Copy 1 again on b after the marks reached Redis (b forgot it: a restart), and
        // copy 2: one more.
        b.rates.lock().unwrap_or_else(|p| p.into_inner()).complaint(
            "members",
            Some("yahoo"),
            copy(2),
            now,
        );
        {
            let mut rates = b.rates.lock().unwrap_or_else(|p| p.into_inner());
            *rates = crate::rates::ComplaintRates::shared();
            rates.complaint("members", Some("yahoo"), copy(1), now);
            rates.complaint("members", Some("yahoo"), copy(2), now);
        }
        sync_rates(&b, &sb).await;
        sync_rates(&a, &sa).await;
        assert_eq!(read(&a), want(0.002), "copy 2 is another complaint");
        let keys = Script::new("return redis.call('KEYS', ARGV[1])");
        let mut call = keys.key(format!("{prefix}rates:{{members}}"));
        call.arg(format!("{prefix}rates:{{members}}*:once:*"));
        let marks: Vec<String> = sa.invoke(&call).await.unwrap_or_default();
        assert_eq!(marks.len(), 4, "two marks in each hash: {marks:?}");
        // More marks than one call carries, sent twice (as after a failed call).
        {
            let mut rates = a.rates.lock().unwrap_or_else(|p| p.into_inner());
            for n in 3..1203 {
                rates.complaint("members", None, copy(n), now);
            }
        }
        let pending = a
            .rates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_pending();
        for (key, hours) in &pending {
            let mut rates = a.rates.lock().unwrap_or_else(|p| p.into_inner());
            rates.restore_pending(key, hours.clone(), now);
            rates.restore_pending(key, hours.clone(), now);
        }
        sync_rates(&a, &sa).await;
        assert_eq!(read(&a).0, want(1.202).0, "1200 more, each once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Redis at LISTWARDEN_IT_REDIS"]
    async fn redis_it_a_provider_slowed_on_one_host_is_slowed_on_every_host() {
        let url = std::env::var("LISTWARDEN_IT_REDIS")
            .unwrap_or_else(|_| panic!("LISTWARDEN_IT_REDIS is not set"));
        let prefix = format!(
            "it-throttle-{}:",
            crate::unix_now() ^ u64::from(std::process::id())
        );
        let yaml = format!(
            "milter:\n  listen: inet:127.0.0.1:1\n\
             ratelimit:\n  state: \"{url}\"\n  redis_prefix: \"{prefix}\"\n  redis_deadline_ms: 1000\n\
             throttle:\n  domains: {{yahoo.example: yahoo}}\n  providers:\n    - name: yahoo\n      rules: [yahoo-ts01]\n      window: 1m\n      slow: {{per_minute: 1, share: 0.05, lasts: 10m}}\n"
        );
        let host = || {
            Shared::new(
                Config::parse(&yaml, Path::new("it.yaml")).unwrap_or_else(|e| panic!("{e}")),
            )
        };
        let (a, b) = (host(), host());
        let (sa, sb) = (connected(&a).await, connected(&b).await);
        let config = a.config.load_full();
        let t = config
            .throttle
            .as_ref()
            .unwrap_or_else(|| panic!("throttle"));
        let line = b"Nov 27 10:00:01 lists postfix/smtp[1]: 4ABCD123: to=<m1@yahoo.example>, relay=mta5.am0.yahoodns.net[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=4.7.0, status=deferred (host mta5.am0.yahoodns.net[192.0.2.1] said: 421 4.7.0 [TS01] Messages from 192.0.2.9 temporarily deferred due to user complaints (in reply to MAIL FROM command))";
        let crate::logwatch::LogEvent::Delivery(d) = crate::logwatch::parse_line(line) else {
            panic!("not a delivery")
        };
        let c = crate::logwatch::outbound::classify_delivery(
            &d,
            &crate::dsn::RuleSet::builtin().unwrap_or_else(|e| panic!("{e}")),
        );
        let now = crate::unix_now();
        a.throttle.on_delivery(t, &d, &c, now);
        a.throttle.on_delivery(t, &d, &c, now);
        assert!(!a.throttle.entries(t).is_empty(), "a slows yahoo");
        assert!(b.throttle.entries(t).is_empty());
        sync_throttle(&a, &sa, t).await;
        sync_throttle(&b, &sb, t).await;
        let want = [("yahoo.example".to_string(), "listwarden-slow:".to_string())];
        assert_eq!(b.throttle.entries(t).into_iter().collect::<Vec<_>>(), want);
        // b publishes nothing of its own; a's step still stands for both.
        sync_throttle(&a, &sa, t).await;
        assert_eq!(a.throttle.entries(t).into_iter().collect::<Vec<_>>(), want);
    }
}
