//! Which members already have a post, so a retried delivery sends no copy
//! twice.
//!
//! Per-recipient VERP means one SMTP transaction per member. If injection
//! fails half way (Postfix's reinjection port goes away, a 4xx), the pipe
//! exits 75 and Postfix hands the *whole* message to the pipe again later.
//! Without a record the first half of the list would get a second copy.
//!
//! So each post has an append-only log, `STATE_DIR/LIST/progress/KEY.log`,
//! KEY being a hash of the list name and the message bytes (Postfix's own
//! `Received:` line carries the queue id, so two submissions never share
//! it). After Postfix accepts a member's copy (`250` after DATA) one line
//! `sent MEMBER` is appended with a single `write`; a permanent refusal
//! appends `rejected MEMBER`; full success appends `complete`. The log is
//! fsynced at the end and before any error exit. A retry skips every member
//! in the log, and a `complete` log makes a retry a no-op (Postfix may
//! retry after we finished if our exit status got lost).
//!
//! What can still duplicate: a crash between Postfix's `250` and our
//! `write` (one member), and a power failure before the fsync (the lines
//! the page cache lost). Logs are locked while in use (a second delivery
//! of the same message waits, then exits 75) and removed by [`gc`] after
//! [`KEEP_SECONDS`], longer than Postfix keeps a message queued.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::fsutil::{self, FsError};
use crate::address::Address;
use listwarden_core::bounded::{ReadError, read_at_most};

/// Age after which [`gc`] removes a log: Postfix's `maximal_queue_lifetime`
/// is 5 days by default; twice that leaves room for an operator's longer one.
pub const KEEP_SECONDS: u64 = 10 * 86_400;
/// Largest log read (a million members at ~60 bytes a line).
pub const MAX_LOG_BYTES: usize = 64 * 1024 * 1024;
/// Directory entries [`gc`] looks at per run.
pub const MAX_GC_SCAN: usize = 10_000;

const COMPLETE: &str = "complete";
const SENT: &str = "sent ";
const REJECTED: &str = "rejected ";

#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("write progress log {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How one member's copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Sent,
    Rejected,
}

/// An open, locked progress log.
#[derive(Debug)]
pub struct Progress {
    file: File,
    path: PathBuf,
    done: HashSet<String>,
    complete: bool,
}

/// The log's name for this post: 32 hex digits of SHA-256.
pub fn message_key(list_name: &str, raw: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(b"listwarden-progress-v1\0");
    hash.update(list_name.as_bytes());
    hash.update([0u8]);
    hash.update(raw);
    hash.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Progress {
    /// Opens (or creates) the log `DIR/KEY.log` and locks it.
    pub fn open(dir: &Path, key: &str, lock_timeout: Duration) -> Result<Progress, ProgressError> {
        super::ensure_dir(dir)?;
        let path = dir.join(format!("{key}.log"));
        // Never through a symlink someone planted in the state directory.
        let mut file = fsutil::open_nofollow(&path, true)?;
        fsutil::wait_for_lock(&file, &path, lock_timeout)?;
        let text = match read_at_most(&mut file, MAX_LOG_BYTES) {
            Ok(text) => text,
            Err(ReadError::TooLarge { .. }) => {
                return Err(FsError::TooLarge {
                    path,
                    limit: MAX_LOG_BYTES,
                }
                .into());
            }
            Err(ReadError::Io(source)) => {
                return Err(FsError::Io {
                    path,
                    op: "read",
                    source,
                }
                .into());
            }
        };
        let (done, complete) = parse(&text);
        Ok(Progress {
            file,
            path,
            done,
            complete,
        })
    }

    /// True when an earlier run delivered to everyone.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// True when `member` already has its copy (or was refused for good).
    pub fn is_done(&self, member: &Address) -> bool {
        self.complete || self.done.contains(&member.key())
    }

    /// Members recorded so far.
    pub fn done_count(&self) -> usize {
        self.done.len()
    }

    /// Appends one line (one `write`, so a crash never leaves half of it in
    /// the middle of the log; a torn last line is ignored on reading).
    pub fn record(&mut self, member: &Address, mark: Mark) -> Result<(), ProgressError> {
        let key = member.key();
        let prefix = match mark {
            Mark::Sent => SENT,
            Mark::Rejected => REJECTED,
        };
        self.write_line(&format!("{prefix}{key}\n"))?;
        self.done.insert(key);
        Ok(())
    }

    /// Marks the post delivered to everyone and syncs the log.
    pub fn finish(&mut self) -> Result<(), ProgressError> {
        self.write_line(&format!("{COMPLETE}\n"))?;
        self.complete = true;
        self.sync()
    }

    /// Makes what was recorded durable (before exiting with an error).
    pub fn sync(&mut self) -> Result<(), ProgressError> {
        self.file.sync_all().map_err(|source| ProgressError::Write {
            path: self.path.clone(),
            source,
        })
    }

    fn write_line(&mut self, line: &str) -> Result<(), ProgressError> {
        self.file
            .write_all(line.as_bytes())
            .map_err(|source| ProgressError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

/// (member keys, complete) from a log; lines without `\n` are ignored.
fn parse(text: &[u8]) -> (HashSet<String>, bool) {
    let mut done = HashSet::new();
    let mut complete = false;
    let whole_lines = text
        .iter()
        .rposition(|&b| b == b'\n')
        .and_then(|end| text.get(..end))
        .unwrap_or_default();
    for line in String::from_utf8_lossy(whole_lines).lines() {
        if line == COMPLETE {
            complete = true;
        } else if let Some(key) = line
            .strip_prefix(SENT)
            .or_else(|| line.strip_prefix(REJECTED))
        {
            done.insert(key.to_owned());
        }
    }
    (done, complete)
}

/// Removes logs older than [`KEEP_SECONDS`]; returns how many. Best effort:
/// a log in use (locked) is young and never old enough to be removed.
pub fn gc(dir: &Path, now: SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.take(MAX_GC_SCAN).flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age.as_secs() > KEEP_SECONDS);
        if old && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::addr;

    const WAIT: Duration = Duration::from_millis(100);

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = message_key("members", b"Subject: hi\n\nbody\n");
        assert_eq!(key.len(), 32);
        assert_ne!(key, message_key("other", b"Subject: hi\n\nbody\n"));
        let (a, b, c) = (addr("a@x.org"), addr("B@x.org"), addr("c@x.org"));
        {
            let mut log = Progress::open(dir.path(), &key, WAIT).expect("open");
            assert!(!log.is_done(&a));
            log.record(&a, Mark::Sent).expect("record");
            log.record(&b, Mark::Rejected).expect("record");
            log.sync().expect("sync");
        }
        let mut log = Progress::open(dir.path(), &key, WAIT).expect("reopen");
        assert!(log.is_done(&addr("A@x.org")) && log.is_done(&addr("b@x.org")));
        assert!(!log.is_done(&c) && !log.is_complete());
        assert_eq!(log.done_count(), 2);
        log.finish().expect("finish");
        drop(log);
        let log = Progress::open(dir.path(), &key, WAIT).expect("reopen");
        assert!(log.is_complete() && log.is_done(&c));
    }

    #[test]
    fn torn_lines_are_ignored_and_the_log_is_locked() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("k.log"), "sent a@x.org\nsent b@x.o").expect("write");
        let log = Progress::open(dir.path(), "k", WAIT).expect("open");
        assert!(log.is_done(&addr("a@x.org")));
        assert!(!log.is_done(&addr("b@x.org")));
        let busy = Progress::open(dir.path(), "k", Duration::from_millis(30));
        assert!(matches!(
            busy,
            Err(ProgressError::Fs(FsError::LockBusy { .. }))
        ));
        drop(log);
        Progress::open(dir.path(), "k", WAIT).expect("free again");
    }

    /// 10: a symlink planted at a progress log is refused, not appended to.
    #[test]
    fn a_planted_symlink_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").expect("write");
        std::os::unix::fs::symlink(&victim, dir.path().join("k.log")).expect("symlink");
        assert!(Progress::open(dir.path(), "k", WAIT).is_err());
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious\n");
    }

    #[test]
    fn gc_removes_only_old_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.log"), "complete\n").expect("write");
        std::fs::write(dir.path().join("keep.txt"), "x").expect("write");
        let now = SystemTime::now();
        assert_eq!(gc(dir.path(), now), 0);
        let later = now + Duration::from_secs(KEEP_SECONDS + 60);
        assert_eq!(gc(dir.path(), later), 1);
        assert!(dir.path().join("keep.txt").exists());
        assert_eq!(gc(&dir.path().join("missing"), later), 0);
    }
}
