//! The durable queue between the milter and the worker: one small JSON
//! file per job in `feedback.queue`, written to a temporary name, synced
//! and renamed, so a job is either whole or absent.
//!
//! The queue is bounded by what an outsider cannot choose. A job's file
//! name is a hash of (list, member, action), never of the report's
//! Message-ID, which the reporter writes: more reports about one member
//! while a job waits make no new job, and a job done less than
//! [`REPEAT_AFTER`] ago is not made again (its record in `done/` is
//! overwritten, so `done/` holds one file per member and action). Only
//! members named inside our own signature get a job of their own, so the
//! number of names is at most the number of real members, plus one owner
//! notice per list; [`MAX_PENDING`] is the last guard.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Jobs read per pass; the rest wait for the next.
const MAX_BATCH: usize = 1000;
/// A temporary file older than this was left by a writer that died.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(3600);
/// Jobs waiting at most; a report beyond it is refused for now (the
/// provider sends it again).
pub const MAX_PENDING: usize = 10_000;
/// A member acted on this recently is not acted on again for the same
/// action: a report copied many times makes one unsubscribe, one notice.
pub const REPEAT_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The same for a member's own one-click request: long enough for a
/// provider's retried POST, short against joining again.
pub const REQUEST_REPEAT_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {max} jobs are waiting already (is the feedback worker running?)")]
    Full { path: PathBuf, max: usize },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A job's file, not a write in progress (`.tmp-…`).
fn is_job_file(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
}

/// One action to carry out on one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The list's label (its name in the config).
    pub list: String,
    pub member: String,
    /// `unsubscribe`, `suspend` or `notify_owner`.
    pub action: String,
    /// The report's Message-ID, for the log line of record.
    pub report_id: String,
    pub feedback_type: String,
    pub provider: String,
    /// Unix time the report arrived.
    pub received: u64,
    /// Attempts so far, and the last error.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
}

impl Job {
    /// The job's stable id: same list, member and action, same id,
    /// whatever report asked for it. An owner notice names a member only
    /// the reporter vouches for (any name they like), so its id is the
    /// list's: one notice waiting per list, one a day.
    pub fn id(&self) -> String {
        let member = if self.action == "notify_owner" {
            String::new()
        } else {
            self.member.to_ascii_lowercase()
        };
        let digest =
            Sha256::digest(format!("{}\0{}\0{}", self.list, member, self.action).as_bytes());
        digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
    }
}

/// The queue directory.
#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
    max_pending: usize,
}

impl Queue {
    pub fn new(dir: &Path) -> Queue {
        Queue {
            dir: dir.to_path_buf(),
            max_pending: MAX_PENDING,
        }
    }

    fn done_dir(&self) -> PathBuf {
        self.dir.join("done")
    }

    /// Writes a complaint's job durably; true when it was new: not
    /// waiting already, and not done within [`REPEAT_AFTER`] (copies of one
    /// complaint make one job).
    pub fn push(&self, job: &Job) -> Result<bool, QueueError> {
        self.push_unless_done_within(job, REPEAT_AFTER)
    }

    /// Writes a member's own request (one-click) durably, the same way
    /// but with [`REQUEST_REPEAT_AFTER`]: a retried POST makes no second
    /// job, a member who joined again and asks again is heard.
    pub fn push_request(&self, job: &Job) -> Result<bool, QueueError> {
        self.push_unless_done_within(job, REQUEST_REPEAT_AFTER)
    }

    fn push_unless_done_within(
        &self,
        job: &Job,
        window: std::time::Duration,
    ) -> Result<bool, QueueError> {
        let name = format!("{}.json", job.id());
        let path = self.dir.join(&name);
        if path.exists() {
            return Ok(false);
        }
        let recently_done = fs::metadata(self.done_dir().join(&name))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < window);
        if recently_done {
            return Ok(false);
        }
        if self.len() >= self.max_pending {
            return Err(QueueError::Full {
                path: self.dir.clone(),
                max: self.max_pending,
            });
        }
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        self.write(&path, job)?;
        Ok(true)
    }

    fn write(&self, path: &Path, job: &Job) -> Result<(), QueueError> {
        // Unique per write (two sessions may push one job at once), and
        // not a job's name, so the worker never reads a half-written file.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}-{}",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed),
            path.file_stem().and_then(|n| n.to_str()).unwrap_or("job")
        ));
        let text = serde_json::to_vec_pretty(job).map_err(|source| QueueError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let written = fs::File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(&text)?;
                f.sync_all()
            })
            .map_err(io(&tmp))
            .and_then(|()| fs::rename(&tmp, path).map_err(io(path)));
        if let Err(e) = written {
            // A full disk must not also fill up with leftovers.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // The rename is durable once the directory is synced.
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The queued jobs, oldest file first, with their paths. Files that do
    /// not parse as jobs are moved aside to `bad/` (never lost, never
    /// retried forever); one that cannot be read now is left for the next
    /// pass.
    pub fn pending(&self) -> Result<Vec<(PathBuf, Job)>, QueueError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let entries: Vec<fs::DirEntry> = entries.filter_map(Result::ok).collect();
        // What a writer killed between create and rename left behind.
        for e in &entries {
            let stale = e
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(".tmp-"))
                && e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_TMP);
            if stale {
                let _ = fs::remove_file(e.path());
            }
        }
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .into_iter()
            .filter(|e| is_job_file(&e.file_name()))
            .filter_map(|e| {
                let modified = e.metadata().ok()?.modified().ok()?;
                Some((modified, e.path()))
            })
            .collect();
        files.sort();
        let mut jobs = Vec::new();
        for (_, path) in files.into_iter().take(MAX_BATCH) {
            let Ok(bytes) = fs::read(&path) else {
                continue;
            };
            match serde_json::from_slice::<Job>(&bytes).ok() {
                Some(job) => jobs.push((path, job)),
                None => {
                    let bad = self.dir.join("bad");
                    fs::create_dir_all(&bad).map_err(io(&bad))?;
                    if let Some(name) = path.file_name() {
                        fs::rename(&path, bad.join(name)).map_err(io(&path))?;
                    }
                }
            }
        }
        Ok(jobs)
    }

    /// Records a failed attempt (the job stays queued), unless the job has
    /// left the queue meanwhile.
    pub fn failed(&self, path: &Path, job: &mut Job, error: &str) -> Result<(), QueueError> {
        if !path.exists() {
            return Ok(());
        }
        job.attempts = job.attempts.saturating_add(1);
        job.last_error = Some(error.chars().take(500).collect());
        self.write(path, job)
    }

    /// Holds the queue for one worker: `None` when another holds it. The
    /// lock ends with the returned file (and with the process). The file
    /// is only read: one left by a worker run as another user still does.
    pub fn lock(&self) -> Result<Option<fs::File>, QueueError> {
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let path = self.dir.join(".worker.lock");
        let file = match fs::File::open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::File::options().create(true).append(true).open(&path)
            }
            other => other,
        }
        .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(io(&path)(e)),
        }
    }

    /// Moves a job to `done/`, replacing the record of the last time (its
    /// modification time is when the job was done).
    pub fn done(&self, path: &Path) -> Result<(), QueueError> {
        let done = self.done_dir();
        fs::create_dir_all(&done).map_err(io(&done))?;
        let name = path.file_name().unwrap_or_default();
        let target = done.join(name);
        // The window counts from now, and a rename keeps the file's time:
        // set it first, so no push sees an old record in between.
        if let Ok(f) = fs::File::options().append(true).open(path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        fs::rename(path, &target).map_err(io(path))?;
        Ok(())
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        fs::read_dir(&self.dir)
            .map(|e| {
                e.filter_map(Result::ok)
                    .filter(|e| is_job_file(&e.file_name()))
                    .count()
            })
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets a file's modification time (an old record, an old job).
    fn set_time(path: &Path, time: std::time::SystemTime) {
        std::fs::File::options()
            .append(true)
            .open(path)
            .unwrap()
            .set_modified(time)
            .unwrap();
    }

    fn job(report: &str) -> Job {
        job_for("Ann@example.com", report)
    }

    fn job_for(member: &str, report: &str) -> Job {
        Job {
            list: "members".into(),
            member: member.into(),
            action: "unsubscribe".into(),
            report_id: report.into(),
            feedback_type: "abuse".into(),
            provider: "yahoo".into(),
            received: 1,
            attempts: 0,
            last_error: None,
        }
    }

    #[test]
    fn a_job_is_queued_once_and_survives_failures_until_done() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        assert!(q.push(&job("<r1@x>")).unwrap());
        assert!(!q.push(&job("<r1@x>")).unwrap(), "same report: one job");
        assert!(
            !q.push(&job("<r2@x>")).unwrap(),
            "another report about the same member: still one job"
        );
        assert!(q.push(&job_for("bob@example.com", "<r2@x>")).unwrap());
        let mut pending = q.pending().unwrap();
        assert_eq!(pending.len(), 2);
        let (path, j) = &mut pending[0];
        q.failed(path, j, "connection refused").unwrap();
        let again = q.pending().unwrap();
        assert_eq!(again.iter().map(|(_, j)| j.attempts).sum::<u32>(), 1);
        for (path, _) in again {
            q.done(&path).unwrap();
        }
        assert!(q.is_empty());
        assert!(!q.push(&job("<r1@x>")).unwrap(), "done jobs are not redone");
        assert!(
            !q.push(&job("<r9@x>")).unwrap(),
            "nor asked again by a new report within the window"
        );
        // Once the window has passed, a new complaint acts again (the member
        // may have subscribed again).
        let record = dir
            .path()
            .join("done")
            .join(format!("{}.json", job("").id()));
        let old = std::time::SystemTime::now() - REPEAT_AFTER - std::time::Duration::from_secs(60);
        set_time(&record, old);
        assert!(q.push(&job("<r9@x>")).unwrap());
        std::fs::write(dir.path().join("junk.json"), "{").unwrap();
        assert_eq!(q.pending().unwrap().len(), 1, "the junk is moved aside");
        assert!(dir.path().join("bad/junk.json").exists());
    }

    /// CI saw this: the worker took a write in progress for a broken job
    /// and moved it aside, and the milter's rename then failed (451).
    #[test]
    fn a_write_in_progress_is_not_a_job() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        let half = dir.path().join(".tmp-1-0-0123abcd");
        std::fs::write(&half, "{").unwrap();
        std::fs::write(dir.path().join(".tmp-1-1-0123abcd.json"), "{").unwrap();
        assert!(q.pending().unwrap().is_empty());
        assert!(q.is_empty());
        assert!(half.exists(), "left where its writer will rename it");
        assert!(
            dir.path().join(".tmp-1-1-0123abcd.json").exists(),
            "even one whose name ends in .json"
        );
        assert!(!dir.path().join("bad").exists());
        assert!(q.push(&job("<r1@x>")).unwrap());
        assert_eq!(q.pending().unwrap().len(), 1);
    }

    /// Two workers (by mistake): one's failed attempt, after the other
    /// filed the job as done, does not bring it back.
    #[test]
    fn a_failed_attempt_after_the_job_was_done_is_not_queued_again() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        assert!(q.push(&job("<r1@x>")).unwrap());
        let a = q.pending().unwrap();
        let b = q.pending().unwrap();
        q.done(&b[0].0).unwrap();
        let (path, mut j) = a.into_iter().next().unwrap();
        q.failed(&path, &mut j, "connection reset").unwrap();
        assert!(q.is_empty());
    }

    #[test]
    fn one_worker_holds_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        let held = q.lock().unwrap();
        assert!(held.is_some());
        assert!(q.lock().unwrap().is_none(), "a second worker is refused");
        drop(held);
        assert!(q.lock().unwrap().is_some(), "free once the first is gone");
        assert!(q.is_empty(), "the lock file is no job");
    }

    /// A write that fails (here its rename, onto a directory) leaves no
    /// temporary file: on a full disk each retried report would add one.
    /// One a dead writer left is removed after an hour.
    #[test]
    fn failed_writes_leave_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        assert!(q.push(&job("<r1@x>")).unwrap());
        let (path, mut j) = q.pending().unwrap().into_iter().next().unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("x"), "").unwrap();
        assert!(q.failed(&path, &mut j, "x").is_err());
        let temporary = || {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
                .count()
        };
        assert_eq!(temporary(), 0);
        let dead = dir.path().join(".tmp-1-2-abc");
        std::fs::write(&dead, "{").unwrap();
        q.pending().unwrap();
        assert_eq!(temporary(), 1, "a fresh one may be a write in progress");
        let old = std::time::SystemTime::now() - STALE_TMP - std::time::Duration::from_secs(60);
        set_time(&dead, old);
        q.pending().unwrap();
        assert_eq!(temporary(), 0);
    }

    /// A job file that cannot be read now (here: a directory by that name)
    /// is left for the next pass, not moved aside for good.
    #[test]
    fn an_unreadable_job_is_not_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        std::fs::create_dir(dir.path().join("0123.json")).unwrap();
        assert!(q.pending().unwrap().is_empty());
        assert!(dir.path().join("0123.json").exists());
        assert!(!dir.path().join("bad").exists());
    }

    /// A job that waited more than a day is filed as done with a fresh
    /// time: the window counts from now. (`done` sets the time before the
    /// rename, so no push in between sees an old record.)
    #[test]
    fn a_job_filed_as_done_is_recent_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        let j = job("<r1@x>");
        assert!(q.push(&j).unwrap());
        let path = dir.path().join(format!("{}.json", j.id()));
        let old =
            std::time::SystemTime::now() - REPEAT_AFTER - std::time::Duration::from_secs(3600);
        set_time(&path, old);
        q.done(&path).unwrap();
        let record = dir.path().join("done").join(path.file_name().unwrap());
        let age = std::fs::metadata(record)
            .unwrap()
            .modified()
            .unwrap()
            .elapsed()
            .unwrap();
        assert!(age < std::time::Duration::from_secs(60), "{age:?}");
        assert!(!q.push(&j).unwrap());
    }

    /// A member's own request is heard again soon after the last was
    /// done (they may have joined again), but a retried POST is not a
    /// second job.
    #[test]
    fn a_request_is_heard_again_after_a_short_while() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        let j = job("one-click");
        assert!(q.push_request(&j).unwrap());
        assert!(!q.push_request(&j).unwrap(), "waiting already");
        for (path, _) in q.pending().unwrap() {
            q.done(&path).unwrap();
        }
        assert!(!q.push_request(&j).unwrap(), "a retried POST");
        let record = dir.path().join("done").join(format!("{}.json", j.id()));
        let old = std::time::SystemTime::now()
            - REQUEST_REPEAT_AFTER
            - std::time::Duration::from_secs(60);
        set_time(&record, old);
        assert!(
            !q.push(&j).unwrap(),
            "a complaint's copy is still the same complaint"
        );
        assert!(q.push_request(&j).unwrap(), "the member asks again");
    }

    #[test]
    fn the_queue_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue {
            max_pending: 3,
            ..Queue::new(dir.path())
        };
        for member in ["a@example.com", "b@example.com", "c@example.com"] {
            assert!(q.push(&job_for(member, "<r@x>")).unwrap());
        }
        let err = q.push(&job("<r1@x>")).unwrap_err();
        assert!(matches!(err, QueueError::Full { .. }), "{err}");
    }
}
