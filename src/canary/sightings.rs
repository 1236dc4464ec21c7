//! Where the milter notes a probe's arrivals and `listwarden canary` reads them.
//!
//! One record per probe id, at most two arrival times (Unix ms, the recording host's
//! clock): `mx` first, then `list`. Setting a time is "only if not set yet", atomic, so
//! two hops (or two hosts) never both think they saw the probe first:
//!
//! - Redis (`ratelimit.state` is Redis; several hosts): hash `PREFIX canary:{ID}` with
//!   fields `mx` and `list`, expiring after `canary.max_age`;
//! - files (one host): `canary.dir/ID.mx` and `ID.list`, each created exclusively and
//!   holding the time; `listwarden canary` removes its own and any older than twice
//!   `canary.max_age`.
//!
//! Only authenticated probes are recorded, so an outsider cannot fill either.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Leg;

/// The arrival times of one probe (Unix ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Arrivals {
    pub mx: Option<u64>,
    pub list: Option<u64>,
}

/// The sighting book.
#[derive(Clone)]
pub enum Sightings {
    Files(PathBuf),
    #[cfg(feature = "redis")]
    Redis(crate::ratelimit::RedisStore),
}

#[cfg(feature = "redis")]
const RECORD_SCRIPT: &str = r#"
if redis.call('HSETNX', KEYS[1], 'mx', ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('HSETNX', KEYS[1], 'list', ARGV[1]) == 1 then return 2 end
return 0
"#;

#[cfg(feature = "redis")]
const READ_SCRIPT: &str = "return redis.call('HMGET', KEYS[1], 'mx', 'list')";
#[cfg(feature = "redis")]
const FORGET_SCRIPT: &str = "return redis.call('DEL', KEYS[1])";

impl Sightings {
    /// The book of a config: its Redis store, else `canary.dir`.
    pub fn of(store: &crate::ratelimit::Store, dir: &Path) -> Sightings {
        match store {
            #[cfg(feature = "redis")]
            crate::ratelimit::Store::Redis(s) => Sightings::Redis(s.clone()),
            crate::ratelimit::Store::Memory(_) => Sightings::Files(dir.to_path_buf()),
        }
    }

    /// Notes that probe `id` (16 hex digits, checked by the token) arrived `at`: the leg
    /// it was, or `None` when both legs are already set (a replay) or it could not be
    /// noted.
    pub async fn record(&self, id: &str, at: u64, keep: Duration) -> Option<Leg> {
        match self {
            Sightings::Files(dir) => {
                // A few small files per probe, and only for authenticated probes: not worth
                // a blocking-pool hop.
                let made = |leg: &str| -> std::io::Result<bool> {
                    let path = dir.join(format!("{id}.{leg}"));
                    match std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                    {
                        Ok(mut f) => f.write_all(at.to_string().as_bytes()).map(|()| true),
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                        Err(e) => Err(e),
                    }
                };
                let first = std::fs::create_dir_all(dir).and_then(|()| made("mx"));
                let leg = match first {
                    Ok(true) => Ok(Some(Leg::Mx)),
                    Ok(false) => made("list").map(|second| second.then_some(Leg::List)),
                    Err(e) => Err(e),
                };
                leg.unwrap_or_else(|e| {
                    tracing::warn!("canary: cannot record a sighting in {}: {e}", dir.display());
                    None
                })
            }
            #[cfg(feature = "redis")]
            Sightings::Redis(store) => {
                let script = redis::Script::new(RECORD_SCRIPT);
                let mut call = script.key(key(store, id));
                call.arg(at)
                    .arg(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX));
                match store.invoke::<u8>(&call).await? {
                    1 => Some(Leg::Mx),
                    2 => Some(Leg::List),
                    _ => None,
                }
            }
        }
    }

    /// What is known of probe `id`; `None` when the book cannot be read.
    pub async fn read(&self, id: &str) -> Option<Arrivals> {
        match self {
            Sightings::Files(dir) => {
                let time = |leg: &str| -> Option<Option<u64>> {
                    match std::fs::read_to_string(dir.join(format!("{id}.{leg}"))) {
                        // Created, not yet written: seen in a moment.
                        Ok(text) => Some(text.trim().parse().ok()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(None),
                        Err(e) => {
                            tracing::warn!("canary: cannot read {}: {e}", dir.display());
                            None
                        }
                    }
                };
                Some(Arrivals {
                    mx: time("mx")?,
                    list: time("list")?,
                })
            }
            #[cfg(feature = "redis")]
            Sightings::Redis(store) => {
                let script = redis::Script::new(READ_SCRIPT);
                let call = script.key(key(store, id));
                let (mx, list): (Option<u64>, Option<u64>) = store.invoke(&call).await?;
                Some(Arrivals { mx, list })
            }
        }
    }

    /// Removes probe `id`'s record, and (files) any left over for longer than `stale`.
    pub async fn forget(&self, id: &str, stale: Duration) {
        match self {
            Sightings::Files(dir) => {
                for leg in ["mx", "list"] {
                    let _ = std::fs::remove_file(dir.join(format!("{id}.{leg}")));
                }
                let Ok(entries) = std::fs::read_dir(dir) else {
                    return;
                };
                for entry in entries.flatten() {
                    let old = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > stale);
                    let ours = entry
                        .file_name()
                        .to_str()
                        .is_some_and(|n| n.ends_with(".mx") || n.ends_with(".list"));
                    if old && ours {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
            #[cfg(feature = "redis")]
            Sightings::Redis(store) => {
                let script = redis::Script::new(FORGET_SCRIPT);
                let call = script.key(key(store, id));
                let _: Option<u64> = store.invoke(&call).await;
            }
        }
    }
}

#[cfg(feature = "redis")]
fn key(store: &crate::ratelimit::RedisStore, id: &str) -> String {
    format!("{}canary:{{{id}}}", store.prefix())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One probe seen three times: the MX leg, the list leg, then nothing.
    async fn first_mx_then_list(book: &Sightings) {
        let id = "00112233aabbccdd";
        let keep = Duration::from_secs(60);
        assert_eq!(book.read(id).await, Some(Arrivals::default()));
        assert_eq!(book.record(id, 10, keep).await, Some(Leg::Mx));
        assert_eq!(book.record(id, 20, keep).await, Some(Leg::List));
        assert_eq!(book.record(id, 30, keep).await, None);
        assert_eq!(
            book.read(id).await,
            Some(Arrivals {
                mx: Some(10),
                list: Some(20)
            })
        );
        book.forget(id, keep).await;
        assert_eq!(book.read(id).await, Some(Arrivals::default()));
    }

    #[tokio::test]
    async fn first_sighting_is_the_mx_leg_second_the_list_third_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let book = Sightings::Files(dir.path().join("canary"));
        first_mx_then_list(&book).await;
    }

    /// The same against the Redis at `LISTWARDEN_IT_REDIS` (integration/run).
    #[cfg(feature = "redis")]
    #[tokio::test]
    #[ignore = "needs Redis at LISTWARDEN_IT_REDIS"]
    async fn redis_it_sightings_are_first_mx_then_list() {
        use crate::ratelimit::{RedisConfig, RedisStore};
        let url = std::env::var("LISTWARDEN_IT_REDIS")
            .unwrap_or_else(|_| panic!("LISTWARDEN_IT_REDIS is not set"));
        let store = RedisStore::new(RedisConfig {
            url,
            prefix: format!("it-canary-{}:", std::process::id()),
            deadline: Duration::from_secs(1),
            ..RedisConfig::default()
        })
        .unwrap();
        assert!(store.wait_connected(Duration::from_secs(5)).await);
        let book = Sightings::Redis(store);
        first_mx_then_list(&book).await;
    }
}
