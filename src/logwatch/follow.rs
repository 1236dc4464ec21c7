//! Follow a log file like `tail -F`, or read a stream to its end, sending whole lines.
//!
//! Files are polled rather than watched with inotify: one `stat` per interval is cheap,
//! works on every filesystem, and survives both logrotate styles. `create` (rename,
//! new file) shows as a new inode; `copytruncate` shows as a size below our offset.

use std::io::{self, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::MAX_LINE_BYTES;

pub(crate) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Bytes read per system call.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("reading the log stream failed")]
    Read(#[source] io::Error),
}

/// Where log lines come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Followed forever, across rotation; a missing file is waited for.
    File(PathBuf),
    /// Read until end of file, e.g. `journalctl -f -o cat -u postfix | listwarden ...`.
    /// tokio reads stdin on a blocking thread that cannot be cancelled, so a runtime
    /// shutdown may wait for the next input line (use `shutdown_timeout`).
    Stdin,
}

/// Where following a file starts. A file created later is always read from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Only new lines, like `tail -F`: a restart does not recount old deliveries.
    End,
    /// The whole file; for replay and tests.
    Beginning,
}

#[derive(Debug, Clone)]
pub struct FollowOptions {
    pub poll_interval: Duration,
    pub start_at: StartAt,
}

impl Default for FollowOptions {
    fn default() -> Self {
        Self {
            poll_interval: DEFAULT_POLL_INTERVAL,
            start_at: StartAt::End,
        }
    }
}

/// Sends each line (without its newline, at most `MAX_LINE_BYTES`) to `tx`.
/// Returns `Ok` when the receiver is dropped or stdin ends; a file is followed until then.
pub async fn follow(
    source: Source,
    options: FollowOptions,
    tx: mpsc::Sender<Vec<u8>>,
) -> Result<(), FollowError> {
    match source {
        Source::File(path) => {
            follow_file(&path, &options, &tx).await;
            Ok(())
        }
        Source::Stdin => follow_reader(tokio::io::stdin(), tx).await,
    }
}

/// Reads `reader` to its end; a last line without a newline is sent too.
pub(crate) async fn follow_reader<R: AsyncRead + Unpin>(
    mut reader: R,
    tx: mpsc::Sender<Vec<u8>>,
) -> Result<(), FollowError> {
    let mut splitter = LineSplitter::new(MAX_LINE_BYTES);
    let mut buf = vec![0; READ_CHUNK];
    let mut lines = Vec::new();
    loop {
        let read = tokio::select! {
            read = reader.read(&mut buf) => read,
            () = tx.closed() => return Ok(()),
        };
        match read {
            Ok(0) => {
                lines.extend(splitter.finish());
                send_all(&mut lines, &tx).await;
                return Ok(());
            }
            Ok(n) => splitter.push(buf.get(..n).unwrap_or_default(), &mut lines),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FollowError::Read(e)),
        }
        if !send_all(&mut lines, &tx).await {
            return Ok(());
        }
    }
}

/// An open log file and how far we have read it.
struct Tail {
    file: File,
    /// (device, inode): a different pair at the path means the file was rotated.
    id: (u64, u64),
    offset: u64,
}

/// What the path shows compared with the file we hold open.
enum PathState {
    Same,
    Rotated,
    Truncated,
    /// Renamed away and not yet recreated: keep reading the old file.
    Missing,
}

async fn follow_file(path: &Path, options: &FollowOptions, tx: &mpsc::Sender<Vec<u8>>) {
    let mut splitter = LineSplitter::new(MAX_LINE_BYTES);
    let mut buf = vec![0; READ_CHUNK];
    let mut tail: Option<Tail> = None;
    let mut seek_end = options.start_at == StartAt::End;
    let mut error_logged = false;
    loop {
        match tail.as_mut() {
            None => match open(path, seek_end).await {
                Ok(opened) => {
                    info!(path = %path.display(), offset = opened.offset, "following log file");
                    tail = Some(opened);
                    error_logged = false;
                    seek_end = false;
                    continue;
                }
                Err(e) => {
                    if !error_logged {
                        warn!(path = %path.display(), error = %e, "log file not readable, waiting for it");
                        error_logged = true;
                    }
                    seek_end = false; // a file that appears later is new: read all of it
                }
            },
            Some(current) => {
                match read_available(current, &mut splitter, &mut buf, tx).await {
                    Ok(true) => error_logged = false,
                    Ok(false) => return,
                    Err(e) if !error_logged => {
                        warn!(path = %path.display(), error = %e, "reading log file failed, retrying");
                        error_logged = true;
                    }
                    Err(_) => {}
                }
                match path_state(path, current).await {
                    PathState::Same | PathState::Missing => {}
                    PathState::Rotated => {
                        // Lines written to the old file since the last read come first.
                        if let Ok(false) =
                            read_available(current, &mut splitter, &mut buf, tx).await
                        {
                            return;
                        }
                        info!(path = %path.display(), "log file rotated, reopening");
                        drop_partial(&mut splitter);
                        tail = None;
                        continue;
                    }
                    PathState::Truncated => {
                        info!(path = %path.display(), "log file truncated, reading from its start");
                        drop_partial(&mut splitter);
                        match current.file.seek(SeekFrom::Start(0)).await {
                            Ok(_) => current.offset = 0,
                            Err(_) => tail = None,
                        }
                        continue;
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(options.poll_interval) => {}
            () = tx.closed() => return,
        }
    }
}

async fn open(path: &Path, seek_end: bool) -> io::Result<Tail> {
    let mut file = File::open(path).await?;
    let meta = file.metadata().await?;
    let offset = if seek_end {
        file.seek(SeekFrom::End(0)).await?
    } else {
        0
    };
    Ok(Tail {
        file,
        id: (meta.dev(), meta.ino()),
        offset,
    })
}

async fn path_state(path: &Path, tail: &Tail) -> PathState {
    match tokio::fs::metadata(path).await {
        Err(_) => PathState::Missing,
        Ok(meta) if (meta.dev(), meta.ino()) != tail.id => PathState::Rotated,
        Ok(meta) if meta.len() < tail.offset => PathState::Truncated,
        Ok(_) => PathState::Same,
    }
}

/// Reads to the current end of file and sends the complete lines.
/// `Ok(false)` means the receiver is gone.
async fn read_available(
    tail: &mut Tail,
    splitter: &mut LineSplitter,
    buf: &mut [u8],
    tx: &mpsc::Sender<Vec<u8>>,
) -> io::Result<bool> {
    let mut lines = Vec::new();
    loop {
        let n = tail.file.read(buf).await?;
        if n == 0 {
            return Ok(true);
        }
        tail.offset = tail.offset.saturating_add(n as u64);
        splitter.push(buf.get(..n).unwrap_or_default(), &mut lines);
        if !send_all(&mut lines, tx).await {
            return Ok(false);
        }
    }
}

/// A line cut by rotation or truncation will never be completed; parsing half of it
/// would only produce a wrong event.
fn drop_partial(splitter: &mut LineSplitter) {
    if splitter.finish().is_some() {
        debug!("dropped an unterminated line at rotation");
    }
}

/// Sends and empties `lines`; `false` when the receiver is gone.
async fn send_all(lines: &mut Vec<Vec<u8>>, tx: &mpsc::Sender<Vec<u8>>) -> bool {
    for line in lines.drain(..) {
        if tx.send(line).await.is_err() {
            return false;
        }
    }
    true
}

/// Splits a byte stream into lines, holding a partial last line, and cutting lines
/// longer than `max` (the rest up to the newline is skipped).
struct LineSplitter {
    pending: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    fn new(max: usize) -> Self {
        Self {
            pending: Vec::new(),
            max,
        }
    }

    fn push(&mut self, mut data: &[u8], out: &mut Vec<Vec<u8>>) {
        while let Some(newline) = data.iter().position(|&b| b == b'\n') {
            let (line, rest) = data.split_at(newline);
            self.keep(line);
            out.push(std::mem::take(&mut self.pending));
            data = rest.get(1..).unwrap_or_default();
        }
        self.keep(data);
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = self.max.saturating_sub(self.pending.len());
        self.pending
            .extend_from_slice(bytes.get(..room).unwrap_or(bytes));
    }

    /// Takes the unterminated remainder, if any.
    fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const WAIT: Duration = Duration::from_secs(2);

    fn fast(start_at: StartAt) -> FollowOptions {
        FollowOptions {
            poll_interval: Duration::from_millis(5),
            start_at,
        }
    }

    /// A log path in a fresh directory; keep the directory alive for the test.
    fn log_path() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mail.log");
        (dir, path)
    }

    fn spawn_follow(path: &Path, start_at: StartAt) -> mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(follow(Source::File(path.to_owned()), fast(start_at), tx));
        rx
    }

    async fn next(rx: &mut mpsc::Receiver<Vec<u8>>) -> String {
        let line = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("timed out")
            .expect("closed");
        String::from_utf8(line).expect("utf-8")
    }

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open");
        file.write_all(text.as_bytes()).expect("write");
    }

    #[test]
    fn splitter_holds_partials_and_cuts_long_lines() {
        let mut s = LineSplitter::new(4);
        let mut out = Vec::new();
        s.push(b"ab", &mut out);
        assert!(out.is_empty());
        s.push(b"c\n\nabcdefgh\nxy", &mut out);
        assert_eq!(out, [&b"abc"[..], b"", b"abcd"]);
        assert_eq!(s.finish(), Some(b"xy".to_vec()));
        assert_eq!(s.finish(), None);
    }

    #[tokio::test]
    async fn starts_at_end_and_sees_appended_lines() {
        let (_dir, path) = log_path();
        append(&path, "old\n");
        let mut rx = spawn_follow(&path, StartAt::End);
        // The follower may open the file after any of these; it must never see `old`.
        for i in 0.. {
            append(&path, &format!("new {i}\n"));
            if let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(20), rx.recv()).await
            {
                assert!(line.starts_with(b"new "), "{line:?}");
                break;
            }
            assert!(i < 100, "nothing arrived");
        }
    }

    #[tokio::test]
    async fn survives_rename_and_create() {
        let (dir, path) = log_path();
        append(&path, "a1\n");
        let mut rx = spawn_follow(&path, StartAt::Beginning);
        assert_eq!(next(&mut rx).await, "a1");
        let rotated = dir.path().join("mail.log.1");
        std::fs::rename(&path, &rotated).expect("rename");
        append(&rotated, "a2\n"); // the writer has not reopened yet
        append(&path, "b1\n");
        assert_eq!(next(&mut rx).await, "a2");
        assert_eq!(next(&mut rx).await, "b1");
        append(&path, "b2\n");
        assert_eq!(next(&mut rx).await, "b2");
    }

    #[tokio::test]
    async fn survives_copytruncate() {
        let (_dir, path) = log_path();
        append(&path, "first line\nsecond line\n");
        let mut rx = spawn_follow(&path, StartAt::Beginning);
        assert_eq!(next(&mut rx).await, "first line");
        assert_eq!(next(&mut rx).await, "second line");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(0))
            .expect("truncate");
        append(&path, "b1\n");
        assert_eq!(next(&mut rx).await, "b1");
    }

    #[tokio::test]
    async fn holds_a_partial_line_until_its_newline() {
        let (_dir, path) = log_path();
        append(&path, "hel");
        let mut rx = spawn_follow(&path, StartAt::Beginning);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), rx.recv())
                .await
                .is_err()
        );
        append(&path, "lo\n");
        assert_eq!(next(&mut rx).await, "hello");
    }

    #[tokio::test]
    async fn cuts_a_100_kib_line() {
        let (_dir, path) = log_path();
        append(&path, &format!("{}\nnext\n", "x".repeat(100 * 1024)));
        let mut rx = spawn_follow(&path, StartAt::Beginning);
        let long = next(&mut rx).await;
        assert_eq!(long.len(), MAX_LINE_BYTES);
        assert!(long.bytes().all(|b| b == b'x'));
        assert_eq!(next(&mut rx).await, "next");
    }

    #[tokio::test]
    async fn waits_for_a_missing_file_and_reads_it_whole() {
        let (_dir, path) = log_path();
        let mut rx = spawn_follow(&path, StartAt::End);
        tokio::time::sleep(Duration::from_millis(20)).await;
        append(&path, "born\n");
        assert_eq!(next(&mut rx).await, "born");
    }

    #[tokio::test]
    async fn ends_when_the_receiver_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, rx) = mpsc::channel(1);
        let options = FollowOptions {
            poll_interval: Duration::from_secs(3600),
            start_at: StartAt::End,
        };
        let task = tokio::spawn(follow(
            Source::File(dir.path().join("absent.log")),
            options,
            tx,
        ));
        drop(rx);
        let result = tokio::time::timeout(WAIT, task)
            .await
            .expect("still running")
            .expect("join");
        assert!(result.is_ok());
    }

    #[tokio::test]
    async fn reader_ends_at_eof_with_the_last_partial_line() {
        let (tx, mut rx) = mpsc::channel(16);
        follow_reader(&b"one\r\ntwo\nthree"[..], tx)
            .await
            .expect("follow");
        let mut got = Vec::new();
        while let Some(line) = rx.recv().await {
            got.push(line);
        }
        assert_eq!(got, [&b"one\r"[..], b"two", b"three"]);
    }
}
