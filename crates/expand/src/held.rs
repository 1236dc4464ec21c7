//! Posts held for the list owner (`refused_post: hold`): list them, send
//! one to the list as if its sender could post, or delete it.
//! `listwarden-expand held LIST [--release ID | --delete ID]`.

use crate::post::{self, PostOutcome};
use crate::settings::Settings;
use crate::{ExpandError, PostingPolicy, RunContext, fsutil, headers};
use listwarden_core::diag::ConfigError;
use std::path::{Path, PathBuf};

/// Why a `held` command failed.
#[derive(Debug, thiserror::Error)]
pub enum HeldError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no expander list `{list}` in {}", config.display())]
    NoSuchList { list: String, config: PathBuf },
    #[error("`{0}` is not a held post's id")]
    BadId(String),
    #[error("no held post `{id}` in {}", dir.display())]
    NoSuchPost { id: String, dir: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Expand(#[from] ExpandError),
    #[error("{id} stays held: {source}")]
    NotSent { id: String, source: ExpandError },
    #[error("{id} stays held: {outcome:?}")]
    NotDelivered {
        id: String,
        outcome: Box<PostOutcome>,
    },
    #[error("sent, but {}: {source}", path.display())]
    SentNotDeleted {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<fsutil::FsError> for HeldError {
    fn from(e: fsutil::FsError) -> Self {
        HeldError::Expand(e.into())
    }
}

/// What to do with a list's held posts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldAction {
    Show,
    Release(String),
    Delete(String),
}

/// Runs one `held` command; the text to print, or why it failed.
pub fn held(config_path: &Path, list: &str, action: HeldAction) -> Result<String, HeldError> {
    let settings = Settings::load(config_path)?;
    let (files, list_settings) = settings.list(list).ok_or_else(|| HeldError::NoSuchList {
        list: list.to_string(),
        config: config_path.to_path_buf(),
    })?;
    let dir = files.held_dir();
    match action {
        HeldAction::Show => show(&dir),
        HeldAction::Delete(id) => {
            let path = held_path(&dir, &id)?;
            fsutil::check_editor(&path, fsutil::euid())?;
            std::fs::remove_file(&path).map_err(|source| HeldError::Io {
                path: path.clone(),
                source,
            })?;
            Ok(format!("deleted {id}\n"))
        }
        HeldAction::Release(id) => {
            let path = held_path(&dir, &id)?;
            fsutil::check_editor(&path, fsutil::euid())?;
            // The held copy has one line more than the post; allow for it.
            let limit = settings.expander.max_message_bytes.saturating_add(1024);
            let (sender, raw) = post::read_held(&path, limit)?;
            // Released: whoever sent it may post this once.
            let (spec, _warnings) = post::load_spec(
                files,
                PostingPolicy::Open,
                list_settings.unsubscribe_url.clone(),
                list_settings.refuse,
            )?;
            let outcome = post::run(
                &raw,
                &spec,
                files,
                sender.as_ref(),
                &settings.keys,
                &RunContext::now(),
                &settings.expander.injector,
            )
            .map_err(|source| HeldError::NotSent {
                id: id.clone(),
                source,
            })?;
            match outcome {
                PostOutcome::Delivered { sent, already, .. } => {
                    std::fs::remove_file(&path).map_err(|source| HeldError::SentNotDeleted {
                        path: path.clone(),
                        source,
                    })?;
                    Ok(format!(
                        "released {id}: {sent} copies sent ({already} sent before)\n"
                    ))
                }
                other => Err(HeldError::NotDelivered {
                    id,
                    outcome: Box::new(other),
                }),
            }
        }
    }
}

/// A held post's file from its id (the file name without `.eml`); an id
/// can never name a file outside the list's `held/` directory.
fn held_path(dir: &Path, id: &str) -> Result<PathBuf, HeldError> {
    let safe = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !safe {
        return Err(HeldError::BadId(id.to_string()));
    }
    let path = dir.join(format!("{id}.eml"));
    if !path.is_file() {
        return Err(HeldError::NoSuchPost {
            id: id.to_string(),
            dir: dir.to_path_buf(),
        });
    }
    Ok(path)
}

/// One line per held post, oldest first: id, age, reason, sender, subject.
fn show(dir: &Path) -> Result<String, HeldError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(source) => {
            return Err(HeldError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .take(4 * post::MAX_HELD)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter_map(|n| n.strip_suffix(".eml").map(str::to_owned))
        .collect();
    names.sort();
    let now = RunContext::now().now_unix;
    let mut out = String::new();
    for id in names {
        let mut parts = id.splitn(3, '-');
        let stamp = parts.next().and_then(|t| t.parse::<u64>().ok());
        let reason = parts.next().unwrap_or("?");
        let age = stamp.map_or("?".to_string(), |t| age(now.saturating_sub(t)));
        let (sender, subject) = match post::read_held(&dir.join(format!("{id}.eml")), 64 * 1024) {
            Ok((sender, raw)) => {
                let subject = headers::parse(&raw)
                    .named("Subject")
                    .next()
                    .map(|f| printable(&f.text(), 80))
                    .unwrap_or_default();
                // Addresses refuse control characters; this holds even if
                // that ever changes.
                let sender = sender.map_or("<>".to_string(), |s| printable(&s.to_string(), 256));
                (sender, subject)
            }
            // Larger than the preview bound, or unreadable: the id still shows.
            Err(_) => ("?".to_string(), String::new()),
        };
        out.push_str(&format!("{id}  {age}  {reason}  {sender}  {subject}\n"));
    }
    Ok(out)
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Printable, one line, at most `max` characters: the sender and subject
/// are the poster's text, shown on the admin's terminal.
fn printable(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::sink::Sink;

    /// A list with members-only posting that holds refused posts, its
    /// copies injected into a test SMTP sink.
    fn fixture(sink: std::net::SocketAddr) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("k.key"), "held-test-key-0123456789abcdef").expect("key");
        std::fs::write(
            dir.path().join("m.txt"),
            "alice@example.com\nbob@example.net\n",
        )
        .expect("members");
        let config = dir.path().join("listwarden.yaml");
        std::fs::write(
            &config,
            format!(
                "milter: {{listen: inet:127.0.0.1:8890}}\n\
                 signing: {{keys: [{{id: 1, file: k.key}}], sign_with: 1}}\n\
                 lists:\n  - address: news@lists.example.org\n    expand: {{members_file: m.txt, refused_post: hold}}\n\
                 expander: {{state_dir: state, inject: \"smtp:{sink}\"}}\n"
            ),
        )
        .expect("config");
        (dir, config)
    }

    /// Holds `raw`, sent by eve@example.org, on the fixture's list: the
    /// held file and its id.
    fn hold_from_eve(config: &Path, raw: &[u8]) -> (PathBuf, String) {
        let settings = Settings::load(config).expect("settings");
        let (files, _) = settings.list("news").expect("list");
        let eve = crate::address::Address::parse("eve@example.org").expect("addr");
        let now = RunContext::now().now_unix;
        let path = post::hold(
            raw,
            &eve,
            post::Refusal::NotAMember,
            &files.held_dir(),
            "news",
            now,
        )
        .expect("hold")
        .expect("room");
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("id")
            .to_string();
        (path, id)
    }

    #[test]
    fn a_held_post_is_listed_released_once_and_deleted() {
        let (addr, sink) = Sink::start(true);
        let (dir, config) = fixture(addr);
        let raw = b"From: eve@example.org\r\nSubject: hello\r\n\r\nbody\r\n";
        let (path, id) = hold_from_eve(&config, raw);

        let listing = held(&config, "news", HeldAction::Show).expect("show");
        assert!(listing.contains(&id), "{listing}");
        assert!(
            listing.contains("eve@example.org") && listing.contains("hello"),
            "{listing}"
        );

        for bad in ["../../k", "", "a/b", "x.eml"] {
            assert!(held(&config, "news", HeldAction::Release(bad.into())).is_err());
        }

        let done = held(&config, "news", HeldAction::Release(id.clone())).expect("release");
        assert!(done.contains("2 copies sent"), "{done}");
        assert_eq!(sink.taken().iter().map(|e| e.rcpts.len()).sum::<usize>(), 2);
        assert!(!path.exists());
        assert!(held(&config, "news", HeldAction::Release(id.clone())).is_err());

        let (path, id) = hold_from_eve(&config, raw);
        held(&config, "news", HeldAction::Delete(id)).expect("delete");
        assert!(!path.exists());
        assert_eq!(held(&config, "news", HeldAction::Show).expect("show"), "");
        drop(dir);
    }

    /// A sender can carry no terminal escape or line break into the
    /// listing: addresses refuse control characters, and the listing
    /// filters what a held file says, even one written by hand.
    #[test]
    fn the_listing_prints_no_control_characters_of_a_sender() {
        for sender in [
            "\"eve\x1b[2J\x1b]0;owned\x07\"@example.org",
            "\"eve\rbob\"@example.org",
            "\"eve\u{9b}31m\"@example.org",
        ] {
            assert!(
                crate::address::Address::parse(sender).is_err(),
                "{sender:?}"
            );
        }
        let (addr, _sink) = Sink::start(true);
        let (dir, config) = fixture(addr);
        let raw = b"From: eve@example.org\r\nSubject: s\x1b]0;t\x07\r\n\r\nbody\r\n";
        let (path, _) = hold_from_eve(&config, raw);
        let listing = held(&config, "news", HeldAction::Show).expect("show");
        assert!(listing.contains("eve@example.org"), "{listing:?}");
        let mut crafted = b"Return-Path: <\"e\x1b[2Jve\"@example.org>\r\n".to_vec();
        crafted.extend_from_slice(raw);
        std::fs::write(&path, crafted).expect("craft");
        let listing = held(&config, "news", HeldAction::Show).expect("show");
        let bad: Vec<char> = listing
            .chars()
            .filter(|c| c.is_control() && *c != '\n')
            .collect();
        assert!(bad.is_empty(), "{bad:?} in {listing:?}");
        assert_eq!(listing.lines().count(), 1, "{listing:?}");
        drop(dir);
    }
}
