//! The members file: one address per line, `#` comments, blank lines.
//!
//! ```text
//! # members@lists.example.org
//! alice@example.com
//! <bob@example.net>        # angle brackets and trailing comments are fine
//! ```
//!
//! A `#` starts a comment at the beginning of a line or after whitespace
//! (`#` is a legal address character, so `a#b@x` is an address). Editing
//! ([`update`]) keeps every comment and blank line and the text of every
//! member line it does not touch. A duplicate is not an error (the first
//! line wins, [`MembersFile::duplicates`] reports the others). A line that
//! is not an address is skipped, never guessed at (that would send list
//! mail to the wrong place), and reported with its line number by
//! [`MembersFile::invalid`]: one typo must not stop a whole list.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fsutil::{self, FsError};
use crate::address::{Address, AddressError, parse_path};

/// Largest members file read.
pub const MAX_FILE_BYTES: usize = 64 * 1024 * 1024;
/// Most members in one file.
pub const MAX_MEMBERS: usize = 1_000_000;
/// Longest line (an address plus a comment).
pub const MAX_LINE_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum MembersError {
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: more than {MAX_MEMBERS} members")]
    TooMany { path: PathBuf },
    #[error("{path}: members file does not exist")]
    Missing { path: PathBuf },
    #[error(transparent)]
    Fs(#[from] FsError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// A member, with the line's text as read (comment included).
    Member { address: Address, text: String },
    /// A comment, a blank line, or a duplicate member kept as written.
    Other(String),
}

/// A parsed members file that can be edited and written back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembersFile {
    lines: Vec<Line>,
    /// [`Address::key`] → index into `lines`.
    index: HashMap<String, usize>,
    /// (line number, address) of repeated members.
    duplicates: Vec<(usize, String)>,
    /// (line number, why) of lines skipped as not an address.
    invalid: Vec<(usize, String)>,
}

impl MembersFile {
    /// Parses the file's text; `path` only names the file in errors. Lines
    /// that are not addresses are skipped (see [`MembersFile::invalid`]).
    pub fn parse(text: &str, path: &Path) -> Result<MembersFile, MembersError> {
        let mut file = MembersFile::default();
        for (i, raw) in text.lines().enumerate() {
            let number = i + 1;
            let problem = if raw.len() > MAX_LINE_BYTES {
                Some(Err(format!("line longer than {MAX_LINE_BYTES} bytes")))
            } else {
                address_part(raw).map(|spec| match parse_path(spec) {
                    Ok(Some(a)) => Ok(a),
                    Ok(None) => Err("`<>` is not a member address".to_string()),
                    Err(e) => Err(describe(spec, &e)),
                })
            };
            let address = match problem {
                None => {
                    file.lines.push(Line::Other(raw.to_owned()));
                    continue;
                }
                Some(Ok(a)) => a,
                Some(Err(message)) => {
                    // Kept as written (an edit must not lose it), never delivered to.
                    file.invalid.push((number, message));
                    file.lines.push(Line::Other(raw.to_owned()));
                    continue;
                }
            };
            let key = address.key();
            if file.index.contains_key(&key) {
                file.duplicates.push((number, address.to_string()));
                file.lines.push(Line::Other(raw.to_owned()));
                continue;
            }
            if file.index.len() >= MAX_MEMBERS {
                return Err(MembersError::TooMany {
                    path: path.to_path_buf(),
                });
            }
            file.index.insert(key, file.lines.len());
            file.lines.push(Line::Member {
                address,
                text: raw.to_owned(),
            });
        }
        Ok(file)
    }

    /// Lines skipped as not an address: (line number, why).
    #[cfg(test)]
    pub fn invalid(&self) -> &[(usize, String)] {
        &self.invalid
    }

    /// Warnings for the log: skipped lines and repeated members.
    pub fn warnings(&self, path: &Path) -> Vec<String> {
        let shown = path.display();
        let skipped = self
            .invalid
            .iter()
            .map(|(line, why)| format!("{shown}:{line}: skipped: {why}"));
        let twice = self
            .duplicates
            .iter()
            .map(|(line, a)| format!("{shown}:{line}: {a} is listed twice"));
        skipped.chain(twice).collect()
    }

    /// The members in file order.
    pub fn members(&self) -> impl Iterator<Item = &Address> {
        self.lines.iter().filter_map(|l| match l {
            Line::Member { address, .. } => Some(address),
            Line::Other(_) => None,
        })
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn contains(&self, addr: &Address) -> bool {
        self.index.contains_key(&addr.key())
    }

    /// Repeated members: (line number, address). The first occurrence counts.
    #[cfg(test)]
    pub fn duplicates(&self) -> &[(usize, String)] {
        &self.duplicates
    }

    /// Appends `addr`; false if it is already a member.
    pub fn add(&mut self, addr: &Address) -> bool {
        let key = addr.key();
        if self.index.contains_key(&key) {
            return false;
        }
        self.index.insert(key, self.lines.len());
        self.lines.push(Line::Member {
            address: addr.clone(),
            text: addr.to_string(),
        });
        true
    }

    /// Removes `addr` (and any duplicate lines of it); false if absent.
    /// Comments, including a trailing one on the removed line's neighbours,
    /// stay.
    pub fn remove(&mut self, addr: &Address) -> bool {
        let key = addr.key();
        if self.index.remove(&key).is_none() {
            return false;
        }
        self.lines.retain(|line| match line {
            Line::Member { address, .. } => address.key() != key,
            Line::Other(text) => address_part(text)
                .and_then(|spec| parse_path(spec).ok().flatten())
                .is_none_or(|a| a.key() != key),
        });
        self.duplicates
            .retain(|(_, a)| Address::parse(a).map(|a| a.key() != key).unwrap_or(true));
        self.reindex();
        true
    }

    /// The file's text: every line as read or added, `\n`-terminated.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Member { text, .. } | Line::Other(text) => out.push_str(text),
            }
            out.push('\n');
        }
        out
    }

    fn reindex(&mut self) {
        self.index.clear();
        for (i, line) in self.lines.iter().enumerate() {
            if let Line::Member { address, .. } = line {
                self.index.insert(address.key(), i);
            }
        }
    }
}

/// True when `addr`, written as [`MembersFile::add`] writes it, reads back
/// as that same member. `#x@y` (a comment) or `"a #b"@y` (cut at ` #`) do
/// not: `--add` refuses them rather than write a line that means nothing.
pub(crate) fn reads_back(addr: &Address) -> bool {
    MembersFile::parse(&addr.to_string(), Path::new("")).is_ok_and(|f| {
        f.invalid.is_empty() && f.len() == 1 && f.members().all(|m| m.key() == addr.key())
    })
}

/// The address text of a line, or `None` for a blank or comment line.
fn address_part(raw: &str) -> Option<&str> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let end = trimmed
        .char_indices()
        .find(|&(i, c)| {
            c == '#'
                && trimmed
                    .get(..i)
                    .and_then(|before| before.chars().next_back())
                    .is_some_and(char::is_whitespace)
        })
        .map_or(trimmed.len(), |(i, _)| i);
    trimmed.get(..end).map(str::trim_end)
}

fn describe(spec: &str, e: &AddressError) -> String {
    let shown: String = spec
        .chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    format!("`{shown}` is not a mail address: {e}")
}

/// Reads and parses a members file. A missing file is an error: a list
/// whose members file vanished must wait, not deliver to nobody.
pub fn load(path: &Path) -> Result<MembersFile, MembersError> {
    let bytes =
        fsutil::read_bounded(path, MAX_FILE_BYTES)?.ok_or_else(|| MembersError::Missing {
            path: path.to_path_buf(),
        })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = e
            .as_bytes()
            .get(..e.utf8_error().valid_up_to())
            .unwrap_or(&[]);
        MembersError::Line {
            path: path.to_path_buf(),
            line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
            message: "not valid UTF-8".into(),
        }
    })?;
    MembersFile::parse(&text, path)
}

/// Locks the file, reads it (missing = empty), applies `edit`, and writes
/// it back atomically if the text changed. Returns what `edit` returned.
pub fn update<R>(
    path: &Path,
    lock_timeout: Duration,
    edit: impl FnOnce(&mut MembersFile) -> R,
) -> Result<R, MembersError> {
    let _lock = fsutil::lock_exclusive(&fsutil::lock_path_for(path)?, lock_timeout)?;
    let mut file = match load(path) {
        Ok(f) => f,
        Err(MembersError::Missing { .. }) => MembersFile::default(),
        Err(e) => return Err(e),
    };
    let before = file.render();
    let result = edit(&mut file);
    let after = file.render();
    if after != before {
        fsutil::write_atomic(path, after.as_bytes())?;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::addr;

    const SAMPLE: &str = "# members@lists.example.org\n\nalice@example.com\n  <Bob@Example.NET>   # bob, since 2019\ncarol#1@example.org\n# dave left\nALICE@example.com\n";

    fn parse(text: &str) -> Result<MembersFile, MembersError> {
        MembersFile::parse(text, Path::new("members.txt"))
    }

    #[test]
    fn parses_comments_brackets_and_duplicates() {
        let file = parse(SAMPLE).expect("parse");
        let members: Vec<String> = file.members().map(|a| a.to_string()).collect();
        assert_eq!(
            members,
            [
                "alice@example.com",
                "Bob@example.net",
                "carol#1@example.org"
            ]
        );
        assert_eq!(file.len(), 3);
        assert!(file.contains(&addr("BOB@example.net")));
        assert_eq!(file.duplicates(), &[(7, "ALICE@example.com".to_string())]);
        // Nothing changes on a round trip.
        assert_eq!(file.render(), SAMPLE);
    }

    #[test]
    fn skipped_lines_carry_line_numbers() {
        let cases = [
            (
                "alice@example.com\nnot an address\n",
                2,
                "not a mail address",
            ),
            ("# x\n\n<>\n", 3, "`<>`"),
            ("a@b\nfoo@\n", 2, "domain is empty"),
            ("a@b\n<broken@x\n", 2, "brackets"),
        ];
        for (text, line, want) in cases {
            let file = parse(text).expect(text);
            let warnings = file.warnings(Path::new("members.txt"));
            let shown = warnings.first().expect("a warning");
            assert!(
                shown.starts_with(&format!("members.txt:{line}: skipped: ")),
                "{shown}"
            );
            assert!(shown.contains(want), "{shown}");
        }
        let long = format!("{}@x\n", "a".repeat(MAX_LINE_BYTES));
        assert_eq!(parse(&long).expect("long").invalid().len(), 1);
    }

    /// 18: one bad line is skipped with a warning; the list still works.
    #[test]
    fn a_bad_line_is_skipped_with_a_warning() {
        let text = "alice@example.com\nnot an address\n<>\nbob@example.net\n";
        let file = parse(text).expect("one bad line does not fail the list");
        assert_eq!(file.len(), 2);
        let lines: Vec<usize> = file.invalid().iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, [2, 3]);
        assert!(file.invalid()[0].1.contains("not a mail address"));
        // Kept as written, so an edit does not lose it.
        assert_eq!(file.render(), text);
    }

    /// 18: `--add` refuses what this reader would not read back as that member.
    #[test]
    fn only_addresses_that_read_back_are_addable() {
        assert!(reads_back(&addr("alice@example.com")));
        assert!(reads_back(&addr("\"a b\"@example.com")));
        for bad in ["#alice@example.com", "\"a #b\"@example.com"] {
            assert!(!reads_back(&addr(bad)), "{bad}");
        }
    }

    #[test]
    fn add_and_remove_keep_comments() {
        let mut file = parse(SAMPLE).expect("parse");
        assert!(!file.add(&addr("bob@EXAMPLE.net")));
        assert!(file.add(&addr("erin@example.org")));
        assert!(file.remove(&addr("Alice@example.com")));
        assert!(!file.remove(&addr("alice@example.com")));
        assert_eq!(
            file.render(),
            "# members@lists.example.org\n\n  <Bob@Example.NET>   # bob, since 2019\ncarol#1@example.org\n# dave left\nerin@example.org\n"
        );
        assert!(file.duplicates().is_empty());
        assert!(file.remove(&addr("bob@example.net")));
        assert!(file.contains(&addr("erin@example.org")));
        assert_eq!(file.len(), 2);
    }

    #[test]
    fn update_is_locked_atomic_and_survives_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("members.txt");
        std::fs::write(&path, "# list\nalice@example.com\n").expect("write");
        // A crashed writer left its temporary file behind.
        std::fs::write(
            dir.path().join(".members.txt.0011223344556677.tmp"),
            "garbage",
        )
        .expect("write");
        let added = update(&path, Duration::from_millis(100), |f| {
            f.add(&addr("bob@example.net"))
        })
        .expect("update");
        assert!(added);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "# list\nalice@example.com\nbob@example.net\n"
        );
        // A held lock makes the update wait, then give up.
        let lock = fsutil::lock_path_for(&path).expect("lock path");
        let _held = fsutil::lock_exclusive(&lock, Duration::from_millis(10)).expect("lock");
        let busy = update(&path, Duration::from_millis(50), |f| f.len());
        assert!(matches!(
            busy,
            Err(MembersError::Fs(FsError::LockBusy { .. }))
        ));
    }

    #[test]
    fn missing_and_non_utf8_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("members.txt");
        assert!(matches!(load(&path), Err(MembersError::Missing { .. })));
        std::fs::write(&path, b"a@b\nc\xff@d\n").expect("write");
        let err = load(&path).expect_err("bad utf-8").to_string();
        assert!(err.ends_with(":2: not valid UTF-8"), "{err}");
        // update() starts a missing file from empty.
        let fresh = dir.path().join("new.txt");
        update(&fresh, Duration::from_millis(50), |f| {
            f.add(&addr("a@b.org"))
        })
        .expect("update");
        assert_eq!(std::fs::read_to_string(&fresh).expect("read"), "a@b.org\n");
    }

    proptest::proptest! {
        #[test]
        fn render_parse_round_trip(
            lines in proptest::collection::vec(
                proptest::prop_oneof![
                    "[a-z0-9.+_-]{1,12}@[a-z0-9-]{1,10}\\.[a-z]{2,4}",
                    "# [ -~]{0,20}",
                    "",
                    "[a-z]{1,8}@[a-z]{1,8}\\.org +# [a-z ]{0,10}",
                ],
                0..30,
            )
        ) {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let file = parse(&text).expect("generated lines parse");
            proptest::prop_assert_eq!(file.render(), text.clone());
            let again = parse(&file.render()).expect("reparse");
            proptest::prop_assert_eq!(again, file);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }
    }
}
