//! The thin list expander: `listwarden-expand pipe`, a Postfix pipe(8)
//! transport, and the operator's commands for its lists. It is a program of
//! its own: it shares with the milter only what `listwarden-core` holds
//! (addresses, signing keys, the `X-Listwarden-Bounce` tag) and reads only
//! its part of the config ([`settings`]).
//!
//! Postfix hands the expander one message on stdin for one of a list's
//! addresses; it answers with a sysexits code (see [`ExpandError::exit_code`]).
//!
//! * `post`: a posting to `LIST@DOMAIN`: who may post, the `List-*` headers
//!   (added at the top, the original header block kept byte for byte so DKIM
//!   signatures survive), one envelope per member with a signed VERP sender.
//! * `inject`: hands the envelopes to Postfix (SMTP to a reinjection port,
//!   or `sendmail`); `progress` records who already has the message so a
//!   retried delivery never sends a member a second copy.
//! * `bounce`: `LIST-bounces+…@`: acts only on `X-Listwarden-Bounce` tags
//!   the milter marked `valid`, for the member of a signed VERP recipient;
//!   [`state`] keeps the scores.
//! * [`unsubscribe`]: signed unsubscribe tokens, by mail and RFC 8058 one-click.
//! * `members`: the members file; `fsutil`: locks and atomic writes.
//!
//! Exit codes are the only thing Postfix sees. Postfix treats only 75
//! (EX_TEMPFAIL) and 71 (EX_OSERR) as temporary; every other non-zero code,
//! EX_CONFIG and a panic's 101 included, BOUNCES the message. So anything
//! that is not a positive finding about the message maps to 75.

mod bounce;
pub mod command;
mod fsutil;
mod headers;
pub mod held;
pub mod inject;
mod members;
mod post;
pub use post::feedback_id;
mod progress;
pub mod settings;
pub mod state;
pub mod syslog;
pub mod unsubscribe;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use address::{Address, AddressError};
pub(crate) use listwarden_core::address;

/// sysexits(3) codes the expander uses.
pub mod sysexits {
    pub const EX_OK: u8 = 0;
    /// Postfix: `5.3.0`, the message bounces (too large for the list).
    pub const EX_UNAVAILABLE: u8 = 69;
    /// Postfix: `4.3.0`, deferred and retried.
    pub const EX_TEMPFAIL: u8 = 75;
    /// Postfix: `5.7.0`, bounces with our stderr line as the reason.
    pub const EX_NOPERM: u8 = 77;
}

/// How long a command waits for a file lock before giving up (and exiting
/// 75, so Postfix retries). Well below Postfix's per-delivery time limit.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may post to a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostingPolicy {
    /// Members only (disabled members included: they still belong).
    Members,
    /// Anyone.
    Open,
    /// Only these addresses; `List-Post: NO`.
    Announce(Vec<Address>),
}

/// What happens to a post from someone who may not post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseAction {
    /// Exit 77 with a one-line reason: Postfix bounces the post to its
    /// envelope sender. Backscatter if that sender was forged.
    Reply,
    /// Keep the post in the list's `held/` directory and exit 0. When the
    /// hold queue is full the post is dropped with a log line, never
    /// answered (see `post::MAX_HELD`).
    Hold,
}

/// What a member's complaint (an ARF feedback report) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComplaintAction {
    Unsubscribe,
    Flag,
}

listwarden_core::config_words!(RefuseAction {
    "hold" => RefuseAction::Hold,
    "reply" => RefuseAction::Reply,
});

listwarden_core::config_words!(ComplaintAction {
    "unsubscribe" => ComplaintAction::Unsubscribe,
    "flag" => ComplaintAction::Flag,
});

/// Where a list's files live. `state_dir` is the list's own directory
/// (`STATE_DIR/LIST`), holding `bounces.json`, `progress/` and `held/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFiles {
    /// The list's name, as in the config and metric labels.
    pub name: String,
    /// The posting address; role addresses are `LOCAL-ROLE@DOMAIN`.
    pub address: Address,
    pub members_file: PathBuf,
    pub state_dir: PathBuf,
}

impl ListFiles {
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("bounces.json")
    }

    pub fn progress_dir(&self) -> PathBuf {
        self.state_dir.join("progress")
    }

    pub fn held_dir(&self) -> PathBuf {
        self.state_dir.join("held")
    }

    /// `LOCAL-ROLE@DOMAIN`, e.g. `members-bounces@lists.example.org`.
    pub fn role(&self, role: &str) -> Result<Address, AddressError> {
        role_address(&self.address, role)
    }
}

/// A list as a posting needs it: identity, members and settings.
#[derive(Debug, Clone)]
pub(crate) struct ListSpec {
    pub name: String,
    pub address: Address,
    /// Everyone in the members file, disabled members included.
    pub members: Vec<Address>,
    /// [`Address::key`]s of members disabled by bounces: they may post but
    /// receive nothing.
    pub disabled: BTreeSet<String>,
    /// [`Address::key`] → subscription number, signed into unsubscribe
    /// tokens (see [`unsubscribe`]); absent: 0.
    pub subscriptions: BTreeMap<String, u32>,
    pub policy: PostingPolicy,
    /// The one-click endpoint, e.g. `https://lists.example.org/unsubscribe`;
    /// `None` gives a mailto-only `List-Unsubscribe`.
    pub https_unsubscribe_base: Option<String>,
    pub refuse: RefuseAction,
}

impl ListSpec {
    /// `LOCAL-ROLE@DOMAIN` for this list.
    pub fn role(&self, role: &str) -> Result<Address, AddressError> {
        role_address(&self.address, role)
    }
}

/// A list name safe as a directory name under `state_dir`: letters,
/// digits, `.`, `_` and `-`, no leading dot, no `..` (so no `/`, no NUL).
pub fn safe_list_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn role_address(list: &Address, role: &str) -> Result<Address, AddressError> {
    Address::new(&format!("{}-{role}", list.local), &list.domain)
}

/// The time of one command run, and how long it waits for a lock.
#[derive(Debug, Clone)]
pub(crate) struct RunContext {
    /// Days since the Unix epoch (signing stamps, one score per day).
    pub today: u64,
    /// Seconds since the Unix epoch (file names, expiry of progress logs).
    pub now_unix: u64,
    pub lock_timeout: Duration,
}

impl RunContext {
    /// The current time with the default lock timeout.
    pub fn now() -> RunContext {
        use listwarden_core::clock::{day_of, unix_now};
        let now_unix = unix_now();
        RunContext {
            today: day_of(now_unix),
            now_unix,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}

/// Any failure of an expander command, mapped to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    #[error(transparent)]
    Fs(#[from] fsutil::FsError),
    #[error(transparent)]
    Members(#[from] members::MembersError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Post(#[from] post::PostError),
    #[error(transparent)]
    Inject(#[from] inject::InjectError),
    #[error(transparent)]
    Progress(#[from] progress::ProgressError),
    #[error(transparent)]
    Unsubscribe(#[from] unsubscribe::UnsubError),
}

impl ExpandError {
    /// The sysexits code for Postfix. Only a positive finding about the
    /// message itself bounces it; everything else is retried (75).
    pub fn exit_code(&self) -> u8 {
        match self {
            ExpandError::Post(post::PostError::TooLarge { .. }) => sysexits::EX_UNAVAILABLE,
            ExpandError::Inject(e) if e.is_permanent() => sysexits::EX_UNAVAILABLE,
            _ => sysexits::EX_TEMPFAIL,
        }
    }
}

/// Text safe for a pipe(8) reply line: printable ASCII, one line, bounded.
pub(crate) fn reply_line(text: &str) -> String {
    const MAX_REPLY: usize = 200;
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_REPLY)
        .collect()
}

/// Creates `dir` (and parents) if missing; the state tree is ours to make.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), fsutil::FsError> {
    std::fs::create_dir_all(dir).map_err(|source| fsutil::FsError::Io {
        path: dir.to_path_buf(),
        op: "create directory",
        source,
    })
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use crate::address::{Key, KeyRing};

    pub fn addr(s: &str) -> Address {
        Address::parse(s).expect("test address")
    }

    pub fn keys() -> KeyRing {
        let key = Key::new(1, b"expander-test-key-0123456789").expect("key");
        KeyRing::new(vec![key], 1, 7).expect("ring")
    }

    pub fn list(members: &[&str]) -> ListSpec {
        ListSpec {
            name: "members".into(),
            address: addr("members@lists.example.org"),
            members: members.iter().map(|m| addr(m)).collect(),
            disabled: BTreeSet::new(),
            subscriptions: BTreeMap::new(),
            policy: PostingPolicy::Members,
            https_unsubscribe_base: Some("https://lists.example.org/unsubscribe".into()),
            refuse: RefuseAction::Reply,
        }
    }

    pub fn files(dir: &Path) -> ListFiles {
        ListFiles {
            name: "members".into(),
            address: addr("members@lists.example.org"),
            members_file: dir.join("members.txt"),
            state_dir: dir.join("state").join("members"),
        }
    }

    pub fn ctx(today: u64) -> RunContext {
        RunContext {
            today,
            now_unix: today * 86_400 + 3_600,
            lock_timeout: Duration::from_millis(500),
        }
    }
}
