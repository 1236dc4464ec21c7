//! The durable queue between the milter and the worker: one small JSON
//! file per job in `feedback.queue`, written to a temporary name, synced
//! and renamed, so a job is either whole or absent. A job's file name is
//! a hash of (list, member, report Message-ID): the same report delivered
//! twice makes one job (idempotent). Done jobs move to `done/` (a record,
//! and a second guard against doing a job twice).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Jobs read per pass; the rest wait for the next.
const MAX_BATCH: usize = 1000;

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
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.to_path_buf(),
        source,
    }
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
    /// The job's stable id: same list, member and report, same id.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(
            format!(
                "{}\0{}\0{}",
                self.list,
                self.member.to_ascii_lowercase(),
                self.report_id
            )
            .as_bytes(),
        );
        digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
    }
}

/// The queue directory.
#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
}

impl Queue {
    pub fn new(dir: &Path) -> Queue {
        Queue {
            dir: dir.to_path_buf(),
        }
    }

    fn done_dir(&self) -> PathBuf {
        self.dir.join("done")
    }

    /// Writes a job durably; true when it was new (not queued or done yet).
    pub fn push(&self, job: &Job) -> Result<bool, QueueError> {
        let name = format!("{}.json", job.id());
        let path = self.dir.join(&name);
        if path.exists() || self.done_dir().join(&name).exists() {
            return Ok(false);
        }
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        self.write(&path, job)?;
        Ok(true)
    }

    fn write(&self, path: &Path, job: &Job) -> Result<(), QueueError> {
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            path.file_name().and_then(|n| n.to_str()).unwrap_or("job")
        ));
        let text = serde_json::to_vec_pretty(job).map_err(|source| QueueError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&text).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))?;
        // The rename is durable once the directory is synced.
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The queued jobs, oldest file first, with their paths. Files that do
    /// not read as jobs are moved aside to `bad/` (never lost, never
    /// retried forever).
    pub fn pending(&self) -> Result<Vec<(PathBuf, Job)>, QueueError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".json")))
            .filter_map(|e| {
                let modified = e.metadata().ok()?.modified().ok()?;
                Some((modified, e.path()))
            })
            .collect();
        files.sort();
        let mut jobs = Vec::new();
        for (_, path) in files.into_iter().take(MAX_BATCH) {
            let parsed = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Job>(&b).ok());
            match parsed {
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

    /// Records a failed attempt (the job stays queued).
    pub fn failed(&self, path: &Path, job: &mut Job, error: &str) -> Result<(), QueueError> {
        job.attempts = job.attempts.saturating_add(1);
        job.last_error = Some(error.chars().take(500).collect());
        self.write(path, job)
    }

    /// Moves a job to `done/`.
    pub fn done(&self, path: &Path) -> Result<(), QueueError> {
        let done = self.done_dir();
        fs::create_dir_all(&done).map_err(io(&done))?;
        let name = path.file_name().unwrap_or_default();
        fs::rename(path, done.join(name)).map_err(io(path))
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        fs::read_dir(&self.dir)
            .map(|e| {
                e.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".json")))
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

    fn job(report: &str) -> Job {
        Job {
            list: "members".into(),
            member: "Ann@example.com".into(),
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
        assert!(q.push(&job("<r2@x>")).unwrap());
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
        std::fs::write(dir.path().join("junk.json"), "{").unwrap();
        assert!(q.pending().unwrap().is_empty());
        assert!(dir.path().join("bad/junk.json").exists());
    }
}
