//! File locks and crash-safe writes for the members file and state files.
//!
//! A writer takes an exclusive lock on a separate `.NAME.lock` file (never
//! on the data file itself: the rename replaces that inode, and a lock on
//! the old one would protect nothing), writes `.NAME.tmp` in the same
//! directory, fsyncs it, renames it over `NAME` and fsyncs the directory.
//! Readers need no lock: they see the old file or the new one, never a mix.
//! A crash before the rename leaves the old file intact and a stale
//! temporary file, which the next writer truncates and reuses.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a waiting writer retries a held lock.
const LOCK_POLL: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{op} {path}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("{path} is locked by another process")]
    LockBusy { path: PathBuf },
    #[error("{path} is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: usize },
    #[error("{path} has no file name or directory")]
    BadPath { path: PathBuf },
}

fn io_error<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> FsError + 'a {
    move |source| FsError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// An exclusive lock, released when dropped (the file is closed).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

/// `DIR/.NAME.lock` for `DIR/NAME`.
pub fn lock_path_for(path: &Path) -> Result<PathBuf, FsError> {
    sibling(path, "lock")
}

/// `DIR/.NAME.tmp` for `DIR/NAME`.
pub fn temp_path_for(path: &Path) -> Result<PathBuf, FsError> {
    sibling(path, "tmp")
}

fn sibling(path: &Path, suffix: &str) -> Result<PathBuf, FsError> {
    let name = path.file_name().ok_or_else(|| FsError::BadPath {
        path: path.to_path_buf(),
    })?;
    let mut hidden = std::ffi::OsString::from(".");
    hidden.push(name);
    hidden.push(".");
    hidden.push(suffix);
    Ok(path.with_file_name(hidden))
}

/// Locks `lock_file` (created if missing), waiting up to `timeout`.
pub fn lock_exclusive(lock_file: &Path, timeout: Duration) -> Result<FileLock, FsError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_file)
        .map_err(io_error(lock_file, "open lock file"))?;
    wait_for_lock(&file, lock_file, timeout)?;
    Ok(FileLock { _file: file })
}

/// Takes an exclusive lock on an open file, retrying up to `timeout`.
/// `path` only names the file in errors.
pub fn wait_for_lock(file: &File, path: &Path, timeout: Duration) -> Result<(), FsError> {
    let deadline = Instant::now() + timeout;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(LOCK_POLL);
            }
            Err(TryLockError::WouldBlock) => {
                return Err(FsError::LockBusy {
                    path: path.to_path_buf(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_error(path, "lock")(e)),
        }
    }
}

/// Reads at most `limit` bytes of `path`; `Ok(None)` if it does not exist.
pub fn read_bounded(path: &Path, limit: usize) -> Result<Option<Vec<u8>>, FsError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, "open")(e)),
    };
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error(path, "read"))?;
    if bytes.len() > limit {
        return Err(FsError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(Some(bytes))
}

/// Replaces `path` with `bytes` atomically (see the module doc). The caller
/// holds the lock. An existing file's permission bits are kept, and its
/// owner too where we may set it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    write_atomic_with(path, bytes, || Ok(()))
}

/// [`write_atomic`] with a hook run after the temporary file is complete and
/// before the rename; an error from it stops there, as a crash would.
pub fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce() -> std::io::Result<()>,
) -> Result<(), FsError> {
    let temp = temp_path_for(path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(io_error(&temp, "create"))?;
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::MetadataExt;
        file.set_permissions(meta.permissions())
            .map_err(io_error(&temp, "set permissions of"))?;
        // Only root may give a file away; anyone else keeps their own.
        let _ = std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()));
    }
    file.write_all(bytes).map_err(io_error(&temp, "write"))?;
    file.sync_all().map_err(io_error(&temp, "fsync"))?;
    drop(file);
    before_rename().map_err(io_error(&temp, "prepare rename of"))?;
    std::fs::rename(&temp, path).map_err(io_error(path, "rename onto"))?;
    sync_dir(dir)
}

/// Makes a rename or a new directory entry durable.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "fsync directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_keeps_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("members.txt");
        std::fs::write(&path, b"old\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        write_atomic(&path, b"new\n").expect("atomic write");
        assert_eq!(std::fs::read(&path).expect("read"), b"new\n");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        assert!(!temp_path_for(&path).expect("temp").exists());
    }

    #[test]
    fn crash_between_write_and_rename_keeps_the_original() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("members.txt");
        std::fs::write(&path, b"alice@example.org\n").expect("write");
        let crash = || Err(std::io::Error::other("simulated crash"));
        let err = write_atomic_with(&path, b"half-written garbage", crash).expect_err("crash");
        assert!(err.to_string().contains("simulated crash"), "{err}");
        // The original is intact; the temporary file is left behind.
        assert_eq!(std::fs::read(&path).expect("read"), b"alice@example.org\n");
        let temp = temp_path_for(&path).expect("temp");
        assert_eq!(std::fs::read(&temp).expect("temp"), b"half-written garbage");
        // The next write reuses (truncates) the stale temporary file.
        write_atomic(&path, b"bob@example.org\n").expect("next write");
        assert_eq!(std::fs::read(&path).expect("read"), b"bob@example.org\n");
        assert!(!temp.exists());
    }

    #[test]
    fn lock_is_exclusive_and_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = lock_path_for(&dir.path().join("state.json")).expect("lock path");
        assert!(lock.ends_with(".state.json.lock"));
        let held = lock_exclusive(&lock, Duration::from_millis(10)).expect("first lock");
        let started = Instant::now();
        let busy = lock_exclusive(&lock, Duration::from_millis(100));
        assert!(matches!(busy, Err(FsError::LockBusy { .. })), "{busy:?}");
        assert!(started.elapsed() >= Duration::from_millis(100));
        drop(held);
        lock_exclusive(&lock, Duration::from_millis(10)).expect("free again");
    }

    #[test]
    fn bounded_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        assert!(read_bounded(&path, 10).expect("missing").is_none());
        std::fs::write(&path, b"0123456789").expect("write");
        assert_eq!(
            read_bounded(&path, 10).expect("at limit").map(|b| b.len()),
            Some(10)
        );
        assert!(matches!(
            read_bounded(&path, 9),
            Err(FsError::TooLarge { limit: 9, .. })
        ));
    }
}
