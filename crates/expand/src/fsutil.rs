//! File locks and crash-safe writes for the members file and state files.
//!
//! A writer takes an exclusive lock on a separate `.NAME.lock` file (never
//! on the data file itself: the rename replaces that inode, and a lock on
//! the old one would protect nothing), writes a fresh `.NAME.RANDOM.tmp` in
//! the same directory, fsyncs it, renames it over `NAME` and fsyncs the
//! directory. Readers need no lock: they see the old file or the new one,
//! never a mix. A crash before the rename leaves the old file intact and a
//! stale temporary file, which is harmless and may be deleted.
//!
//! The directories may be writable by a user other than the one running
//! the command (the expander's user, when an operator edits as root), so
//! nothing here follows a symlink it did not expect: temporary files are
//! created `O_CREAT|O_EXCL|O_NOFOLLOW` under a random name with mode 0600,
//! lock files are opened `O_NOFOLLOW`, and owner and mode are set on the
//! open descriptor (fchown, fchmod), never by path.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use listwarden_core::bounded::{ReadError, read_at_most};

/// How often a waiting writer retries a held lock.
const LOCK_POLL: Duration = Duration::from_millis(20);
/// Mode of a new data or lock file (no old file to copy it from): member
/// addresses are personal data, so not world-readable.
pub(crate) const NEW_FILE_MODE: u32 = 0o640;
/// Fresh temporary names tried before giving up (each is random, so a
/// clash means someone is planting names).
const TEMP_TRIES: u32 = 16;

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
    #[error(
        "{path} belongs to uid {owner}, not root: run this command as that user (e.g. sudo -u USER), not as root"
    )]
    NotRootOwned { path: PathBuf, owner: u32 },
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

/// Locks `lock_file` (created if missing), waiting up to `timeout`. A
/// symlink at that path is an error, not followed.
pub fn lock_exclusive(lock_file: &Path, timeout: Duration) -> Result<FileLock, FsError> {
    let file = open_nofollow(lock_file, false)?;
    wait_for_lock(&file, lock_file, timeout)?;
    Ok(FileLock { _file: file })
}

/// Opens (creating with [`NEW_FILE_MODE`]) a lock or log file for reading
/// and writing (appending if `append`), refusing a symlink.
pub(crate) fn open_nofollow(path: &Path, append: bool) -> Result<File, FsError> {
    let mut options = OpenOptions::new();
    options.read(true).create(true);
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(false);
    }
    options
        .mode(NEW_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_error(path, "open"))
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
    match read_at_most(file, limit) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(ReadError::TooLarge { .. }) => Err(FsError::TooLarge {
            path: path.to_path_buf(),
            limit,
        }),
        Err(ReadError::Io(e)) => Err(io_error(path, "read")(e)),
    }
}

/// Replaces `path` with `bytes` atomically (see the module doc). The caller
/// holds the lock. An existing regular file's permission bits are kept, and
/// its owner too where we may set it; a new file gets `NEW_FILE_MODE`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    write_atomic_with(path, bytes, || Ok(()))
}

/// [`write_atomic`] with a hook run after the temporary file is complete and
/// before the rename; an error from it stops there (the temporary file is
/// removed).
pub fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce() -> std::io::Result<()>,
) -> Result<(), FsError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (mut file, temp) = create_temp(path)?;
    let result = (|| {
        // The old file itself, not what a symlink there points at: the
        // rename replaces the link, so a victim's owner and mode stay out.
        let old = std::fs::symlink_metadata(path)
            .ok()
            .filter(|m| m.file_type().is_file());
        if let Some(meta) = &old {
            // Only root may give a file away; anyone else keeps their own.
            let _ = std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()));
        }
        let mode = old.map_or(NEW_FILE_MODE, |m| m.mode() & 0o777);
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io_error(&temp, "set permissions of"))?;
        file.write_all(bytes).map_err(io_error(&temp, "write"))?;
        file.sync_all().map_err(io_error(&temp, "fsync"))?;
        before_rename().map_err(io_error(&temp, "prepare rename of"))?;
        std::fs::rename(&temp, path).map_err(io_error(path, "rename onto"))
    })();
    drop(file);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Creates `DIR/.NAME.RANDOM.tmp` exclusively (mode 0600, no symlink).
fn create_temp(path: &Path) -> Result<(File, PathBuf), FsError> {
    use std::hash::{BuildHasher, Hasher};
    let base = sibling(path, "tmp")?;
    let mut last = None;
    for attempt in 0..TEMP_TRIES {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u32(attempt);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let mut name = base
            .file_stem()
            .map(|s| s.to_os_string())
            .unwrap_or_default();
        name.push(format!(".{:016x}.tmp", h.finish()));
        let temp = base.with_file_name(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
        {
            Ok(file) => return Ok((file, temp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(io_error(&temp, "create")(e)),
        }
    }
    Err(io_error(&base, "create")(last.unwrap_or_else(|| {
        std::io::ErrorKind::AlreadyExists.into()
    })))
}

/// Makes a rename or a new directory entry durable.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "fsync directory"))
}

/// The effective user id of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Refuses an edit by root (`euid` 0) of a file, or in a directory, that
/// root does not own: that owner could swap names under root's feet, and
/// files root created there would lock the owner out. Operators run the
/// editing commands as the files' owner instead.
pub(crate) fn check_editor(path: &Path, euid: u32) -> Result<(), FsError> {
    if euid != 0 {
        return Ok(());
    }
    // The file, then its directory or the nearest one that exists (it
    // would be created there).
    for p in path.ancestors().filter(|p| !p.as_os_str().is_empty()) {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.uid() != 0 => {
                return Err(FsError::NotRootOwned {
                    path: p.to_path_buf(),
                    owner: m.uid(),
                });
            }
            Ok(_) if p != path => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(p, "inspect")(e)),
        }
    }
    Ok(())
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
        assert_eq!(temp_files(dir.path()), 0);
    }

    #[test]
    fn crash_between_write_and_rename_keeps_the_original() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("members.txt");
        std::fs::write(&path, b"alice@example.org\n").expect("write");
        let crash = || Err(std::io::Error::other("simulated crash"));
        let err = write_atomic_with(&path, b"half-written garbage", crash).expect_err("crash");
        assert!(err.to_string().contains("simulated crash"), "{err}");
        // The original is intact; the temporary file is gone.
        assert_eq!(std::fs::read(&path).expect("read"), b"alice@example.org\n");
        assert_eq!(temp_files(dir.path()), 0);
        // A real crash's leftover is ignored by the next write.
        std::fs::write(dir.path().join(".members.txt.0123456789abcdef.tmp"), b"x").expect("write");
        write_atomic(&path, b"bob@example.org\n").expect("next write");
        assert_eq!(std::fs::read(&path).expect("read"), b"bob@example.org\n");
        assert_eq!(temp_files(dir.path()), 1);
    }

    fn temp_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .expect("read dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            })
            .count()
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

    /// 10: a symlink planted at the old fixed temp name, or at the lock
    /// path, must not lead a write or a lock to another file.
    #[test]
    fn planted_symlinks_leave_the_victim_untouched() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious\n").expect("write");
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let path = dir.path().join("members.txt");
        std::os::unix::fs::symlink(&victim, dir.path().join(".members.txt.tmp")).expect("symlink");
        write_atomic(&path, b"alice@example.org\n").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"alice@example.org\n");

        let lock = lock_path_for(&path).expect("lock path");
        std::os::unix::fs::symlink(&victim, &lock).expect("symlink");
        assert!(lock_exclusive(&lock, Duration::from_millis(10)).is_err());
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious\n");
        let mode = std::fs::metadata(&victim)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // A data file that is a symlink is replaced, not followed: the
        // victim's mode and owner are not copied either.
        let linked = dir.path().join("linked.txt");
        std::os::unix::fs::symlink(&victim, &linked).expect("symlink");
        write_atomic(&linked, b"new\n").expect("write");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious\n");
        assert!(
            !std::fs::symlink_metadata(&linked)
                .expect("meta")
                .is_symlink()
        );
    }

    #[test]
    fn new_files_get_an_explicit_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        write_atomic(&path, b"{}").expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o7777, NEW_FILE_MODE);
    }

    #[test]
    fn root_edits_only_root_owned_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("members.txt");
        std::fs::write(&path, b"").expect("write");
        let owner = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&path).expect("meta").uid()
        };
        // Not root: nothing to check.
        check_editor(&path, 1000).expect("not root");
        // Root, on a file it owns (uid 0) or someone else's.
        let as_root = check_editor(&path, 0);
        assert_eq!(as_root.is_ok(), owner == 0, "{as_root:?}");
        if owner == 0 {
            std::os::unix::fs::chown(&path, Some(4242), None).expect("chown");
            let err = check_editor(&path, 0).expect_err("someone else's file");
            assert!(err.to_string().contains("4242"), "{err}");
        }
        // A missing file: the directory it would be created in decides.
        let missing = dir.path().join("new.txt");
        std::os::unix::fs::chown(dir.path(), Some(4242), None).ok();
        let dir_owner = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(dir.path()).expect("meta").uid()
        };
        assert_eq!(check_editor(&missing, 0).is_ok(), dir_owner == 0);
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
