//! A posting to `LIST@DOMAIN`: who may post, what is added, who gets it.
//!
//! The message is passed on byte for byte: DKIM signatures cover the
//! original header fields and body, and a list that keeps them intact keeps
//! its posters' DMARC passing. The expander only *prepends* fields:
//!
//! ```text
//! List-Unsubscribe: <mailto:LIST-unsubscribe+TOKEN=m=d@DOMAIN?subject=unsubscribe>,
//!  <https://BASE?list=LIST&m=MEMBER&t=TOKEN>          (per member)
//! List-Unsubscribe-Post: List-Unsubscribe=One-Click   (per member, only with the https URI)
//! List-Id: <LIST.DOMAIN>
//! List-Post: <mailto:LIST@DOMAIN>                     (NO for announce lists)
//! List-Help: <mailto:LIST-request@DOMAIN?subject=help>
//! Feedback-ID: LIST.DOMAIN:DOMAIN:listwarden
//! Precedence: list                                    (unless the post has one)
//! ```
//!
//! `Feedback-ID` is Gmail's feedback-loop key, `a:b:c:SenderId` read from
//! the right: `listwarden` is the SenderId (5-15 characters, the same on all
//! mail), then the list domain, then the `List-Id` value, so Postmaster
//! Tools reports a spam rate per list and per list domain. Gmail trusts it
//! only under a DKIM signature of the sender's domain (see README, DKIM).
//!
//! A post that already carries our `List-Id` has been through this list
//! before: it is a mail loop (a member's forwarder pointing back at the
//! list) and is dropped, never redistributed and never given a second
//! `List-Id`. The poster's own `List-*` fields (a post forwarded from
//! another list, or a forged `List-Unsubscribe`) are renamed
//! `X-Original-List-*` in place, so a copy carries only the list's: mail
//! clients act on the first `List-Unsubscribe` they find, or refuse two.
//! That is the one change to the original header block; a DKIM signature
//! that covered a `List-*` field will no longer verify.
//!
//! Each member gets their own envelope, `LIST-bounces+lw-…=member@DOMAIN`
//! (signed VERP), so a bounce names its member even when the bounce does not.

use listwarden_core::bounded::{ReadError, read_at_most};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::headers::{self, HeaderBlock};
use super::inject::{Batch, Injected, Injector};
use super::progress::{self, Mark, Progress};
use super::unsubscribe::{TOKEN_LEN, unsubscribe_address, unsubscribe_mailto, unsubscribe_url};
use super::{
    ExpandError, ListFiles, ListSpec, PostingPolicy, RefuseAction, RunContext, fsutil, members,
    state, sysexits,
};
use crate::address::verp::{self, sign_verp};
use crate::address::{Address, AddressError, KeyRing, mailboxes_in_header, parse_path};

/// Longest header line we write; RFC 5322 allows 998 characters.
const MAX_LINE: usize = 998;
/// Most messages kept in a list's `held/` directory. A refused post that
/// does not fit (by count or [`MAX_HELD_BYTES`]) is dropped with a log
/// line: never answered, because a full queue means a flood, and a flood's
/// senders are forged (a reply would be backscatter). Not a tempfail
/// either: Postfix would keep the flood queued and, at
/// `maximal_queue_lifetime`, bounce it to the same forged senders.
pub const MAX_HELD: usize = 1000;
/// Most bytes of held posts per list (256 MiB).
pub const MAX_HELD_BYTES: u64 = 256 * 1024 * 1024;
/// Held posts older than this are deleted when the next one is held.
pub const MAX_HELD_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("message is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("cannot read the message: {0}")]
    Read(std::io::Error),
    #[error("list role address is invalid: {0}")]
    Role(#[from] AddressError),
}

/// Why a post is not distributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotAMember,
    NotAnAnnouncer,
    /// `<>` sender: an autoresponder or a misdirected bounce.
    NullSender,
    /// Already carries this list's `List-Id`.
    Loop,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAMember => "not_a_member",
            Refusal::NotAnAnnouncer => "not_an_announcer",
            Refusal::NullSender => "null_sender",
            Refusal::Loop => "loop",
        }
    }

    /// Dropped (exit 0, logged) whatever `refused_post` says: a reply would
    /// go nowhere or feed the loop, and holding loop copies fills the disk.
    pub fn is_silent(self) -> bool {
        matches!(self, Refusal::NullSender | Refusal::Loop)
    }
}

/// What [`prepare_post`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    Refused {
        reason: Refusal,
        /// One printable ASCII line for the poster.
        reply_text: String,
    },
    Deliver {
        /// The common fields, then the original message unchanged.
        message: Vec<u8>,
        /// One per active member, in members-file order.
        batches: Vec<Batch>,
        /// Members no VERP address can be made for (address too long).
        skipped: Vec<(Address, String)>,
    },
}

/// Reads the message from the pipe, refusing more than `limit` bytes.
pub fn read_message(reader: impl Read, limit: usize) -> Result<Vec<u8>, PostError> {
    read_at_most(reader, limit).map_err(|e| match e {
        ReadError::TooLarge { .. } => PostError::TooLarge { limit },
        ReadError::Io(e) => PostError::Read(e),
    })
}

/// `LIST.DOMAIN`, the RFC 2919 list identifier (without the brackets).
pub fn list_id(list: &Address) -> String {
    format!("{}.{}", id_chars(&list.local), id_chars(&list.domain))
}

/// Gmail's `Feedback-ID` value: `LIST.DOMAIN:DOMAIN:listwarden` (see the
/// module comment). Neither identifier can hold a `:`.
pub fn feedback_id(list: &Address) -> String {
    format!(
        "{}:{}:{FEEDBACK_SENDER_ID}",
        list_id(list),
        id_chars(&list.domain)
    )
}

/// The `SenderId` of [`feedback_id`].
const FEEDBACK_SENDER_ID: &str = "listwarden";

/// `s` with every character but letters, digits, `-`, `_` and `.` as `-`.
fn id_chars(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Decides what happens to a post (pure: no I/O). `sender` is the envelope
/// sender, `None` for `<>`; `now_day` stamps the signatures.
pub fn prepare_post(
    raw: &[u8],
    list: &ListSpec,
    sender: Option<&Address>,
    now_day: u64,
    keys: &KeyRing,
) -> Result<Prepared, PostError> {
    let block = headers::parse(raw);
    let id = list_id(&list.address);
    if carries_list_id(&block, &id) {
        return Ok(refused(
            Refusal::Loop,
            format!(
                "this message was already distributed by {} (mail loop)",
                list.address
            ),
        ));
    }
    let Some(sender) = sender else {
        return Ok(refused(
            Refusal::NullSender,
            "posts with a null envelope sender are not distributed".into(),
        ));
    };
    if let Some(refusal) = check_poster(&block, list, sender) {
        return Ok(refusal);
    }

    let nl = block.newline.as_str();
    let mut message = common_fields(list, &block, &id, nl)?.into_bytes();
    append_renaming_list_fields(&mut message, raw, &block);

    let bounces = list.role("bounces")?;
    let mut batches = Vec::with_capacity(list.members.len());
    let mut skipped = Vec::new();
    for member in &list.members {
        if list.disabled.contains(&member.key()) {
            continue;
        }
        match sign_verp(&bounces, member, keys, now_day) {
            Ok(envelope_sender) => batches.push(Batch {
                envelope_sender,
                recipients: vec![member.clone()],
                headers: member_fields(list, member, keys, now_day, nl).into_bytes(),
            }),
            Err(e) => skipped.push((member.clone(), e.to_string())),
        }
    }
    Ok(Prepared::Deliver {
        message,
        batches,
        skipped,
    })
}

/// Prefix of the names of a poster's list-owned fields in the copies.
const ORIGINAL_PREFIX: &[u8] = b"X-Original-";

/// True for the fields the list writes and a poster may not: `List-*` and
/// `Feedback-ID`.
fn is_list_owned(name: &[u8]) -> bool {
    name.get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"List-"))
        || name.eq_ignore_ascii_case(b"Feedback-ID")
}

/// Appends `raw` with `X-Original-` before the name of every field the
/// list owns ([`is_list_owned`]); every other byte as received.
fn append_renaming_list_fields(out: &mut Vec<u8>, raw: &[u8], block: &HeaderBlock<'_>) {
    let mut copied = 0;
    for field in &block.fields {
        if is_list_owned(field.name)
            && let Some(before) = raw.get(copied..field.offset)
        {
            out.extend_from_slice(before);
            out.extend_from_slice(ORIGINAL_PREFIX);
            copied = field.offset;
        }
    }
    out.extend_from_slice(raw.get(copied..).unwrap_or_default());
}

fn refused(reason: Refusal, text: String) -> Prepared {
    Prepared::Refused {
        reason,
        reply_text: super::reply_line(&text),
    }
}

fn carries_list_id(block: &HeaderBlock<'_>, id: &str) -> bool {
    let ours = format!("<{}>", id.to_ascii_lowercase());
    block
        .named("List-Id")
        .any(|f| f.text().to_ascii_lowercase().contains(&ours))
}

/// `Some(refusal)` when the poster may not post. The envelope sender and
/// every `From:` mailbox are looked at; any one allowed address suffices.
/// Both can be forged: an announce list that must be safe against that
/// needs authenticated submission in front of it.
fn check_poster(block: &HeaderBlock<'_>, list: &ListSpec, sender: &Address) -> Option<Prepared> {
    let mut posters = vec![sender.clone()];
    for from in block.named("From") {
        posters.extend(mailboxes_in_header(&from.text()));
    }
    let allowed = |set: &[Address]| {
        posters
            .iter()
            .any(|p| set.iter().any(|a| a.same_mailbox(p)))
    };
    match &list.policy {
        PostingPolicy::Open => None,
        PostingPolicy::Members if allowed(&list.members) => None,
        PostingPolicy::Members => Some(refused(
            Refusal::NotAMember,
            format!(
                "{} accepts posts from its members only; {sender} is not a member",
                list.address
            ),
        )),
        PostingPolicy::Announce(announcers) if allowed(announcers) => None,
        PostingPolicy::Announce(_) => Some(refused(
            Refusal::NotAnAnnouncer,
            format!(
                "{} is an announcement list; only its announcers may post",
                list.address
            ),
        )),
    }
}

/// The fields every copy gets.
fn common_fields(
    list: &ListSpec,
    block: &HeaderBlock<'_>,
    id: &str,
    nl: &str,
) -> Result<String, PostError> {
    let post = match list.policy {
        PostingPolicy::Announce(_) => "NO".to_string(),
        _ => format!("<mailto:{}>", mailto_address(&list.address)),
    };
    let help = mailto_address(&list.role("request")?);
    let feedback = feedback_id(&list.address);
    let mut out = format!(
        "List-Id: <{id}>{nl}List-Post: {post}{nl}List-Help: <mailto:{help}?subject=help>{nl}\
         Feedback-ID: {feedback}{nl}"
    );
    if block.named("Precedence").next().is_none() {
        out.push_str(&format!("Precedence: list{nl}"));
    }
    Ok(out)
}

fn mailto_address(addr: &Address) -> String {
    super::unsubscribe::percent_encode(&addr.to_string(), b"@+=")
}

/// `List-Unsubscribe` (and `List-Unsubscribe-Post`) for one member. A URI
/// that cannot be made, or would make an over-long line, is left out.
fn member_fields(
    list: &ListSpec,
    member: &Address,
    keys: &KeyRing,
    today: u64,
    nl: &str,
) -> String {
    let mut uris = Vec::new();
    let subscription = list.subscriptions.get(&member.key()).copied().unwrap_or(0);
    let token_address = unsubscribe_address(&list.address, member, subscription, keys, today).ok();
    if let Some(a) = &token_address {
        uris.push(format!("<{}>", unsubscribe_mailto(a)));
    }
    let token = token_address.as_ref().and_then(|a| {
        a.local
            .split_once(verp::DELIMITER)
            .and_then(|(_, ext)| ext.get(..TOKEN_LEN))
    });
    let mut one_click = false;
    if let (Some(base), Some(token)) = (&list.https_unsubscribe_base, token) {
        uris.push(format!(
            "<{}>",
            unsubscribe_url(base, &list.name, member, token)
        ));
        one_click = true;
    }
    let before = uris.len();
    uris.retain(|u| u.len() + " List-Unsubscribe: ,".len() <= MAX_LINE);
    if uris.len() < before {
        // Only the https URI can be so long that it goes; never claim
        // one-click without it.
        one_click = one_click && uris.iter().any(|u| u.starts_with("<https:"));
    }
    if uris.is_empty() {
        return String::new();
    }
    let mut out = format!("List-Unsubscribe: {}{nl}", uris.join(&format!(",{nl} ")));
    if one_click {
        out.push_str(&format!(
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click{nl}"
        ));
    }
    out
}

/// Builds a [`ListSpec`] from the list's files. An unreadable bounce state
/// does not stop the list (its members then all receive the post); it is
/// returned as a warning to log.
pub fn load_spec(
    files: &ListFiles,
    policy: PostingPolicy,
    https_unsubscribe_base: Option<String>,
    refuse: RefuseAction,
) -> Result<(ListSpec, Vec<String>), ExpandError> {
    let file = members::load(&files.members_file)?;
    let mut warnings = file.warnings(&files.members_file);
    let (disabled, subscriptions) = match state::load(&files.state_file()) {
        Ok(s) => (s.disabled(), s.subscriptions().clone()),
        Err(e) => {
            warnings.push(format!("bounce state ignored, nobody skipped: {e}"));
            Default::default()
        }
    };
    let spec = ListSpec {
        name: files.name.clone(),
        address: files.address.clone(),
        members: file.members().cloned().collect(),
        disabled,
        subscriptions,
        policy,
        https_unsubscribe_base,
        refuse,
    };
    Ok((spec, warnings))
}

/// What `listwarden expand --list NAME` did with one post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    Delivered {
        /// Copies handed to Postfix in this run.
        sent: usize,
        /// Members handed over by an earlier run of the same post.
        already: usize,
        rejected: Vec<(Address, String)>,
        skipped: Vec<(Address, String)>,
    },
    Held(PathBuf),
    /// Answered: exit 77 with `reply_text` on stderr.
    Refused {
        reason: Refusal,
        reply_text: String,
    },
    /// Dropped silently (exit 0): a loop or a null sender.
    Dropped {
        reason: Refusal,
    },
    /// Refused, and the hold queue is full: dropped with a log line (exit
    /// 0), never answered (see [`MAX_HELD`]).
    HoldQueueFull {
        reason: Refusal,
    },
}

impl PostOutcome {
    /// The exit code, and the line for stderr (Postfix puts it in the bounce).
    pub fn exit(&self) -> (u8, Option<&str>) {
        match self {
            PostOutcome::Refused { reply_text, .. } => (sysexits::EX_NOPERM, Some(reply_text)),
            _ => (sysexits::EX_OK, None),
        }
    }
}

/// The whole post pipe: decide, then refuse, hold or deliver with a
/// progress log so a retry skips members already served.
pub fn run(
    raw: &[u8],
    list: &ListSpec,
    files: &ListFiles,
    sender: Option<&Address>,
    keys: &KeyRing,
    ctx: &RunContext,
    injector: &Injector,
) -> Result<PostOutcome, ExpandError> {
    let (message, batches, skipped) = match prepare_post(raw, list, sender, ctx.today, keys)? {
        Prepared::Refused { reason, .. } if reason.is_silent() => {
            return Ok(PostOutcome::Dropped { reason });
        }
        Prepared::Refused { reason, reply_text } => {
            return refuse(raw, list, files, sender, ctx, reason, reply_text);
        }
        Prepared::Deliver {
            message,
            batches,
            skipped,
        } => (message, batches, skipped),
    };
    let progress_dir = files.progress_dir();
    // File times are wall-clock times, whatever day `ctx` says it is.
    progress::gc(&progress_dir, std::time::SystemTime::now());
    let key = progress::message_key(&list.name, raw);
    let mut log = Progress::open(&progress_dir, &key, ctx.lock_timeout)?;
    let already = log.done_count();
    if log.is_complete() {
        return Ok(PostOutcome::Delivered {
            sent: 0,
            already,
            rejected: Vec::new(),
            skipped,
        });
    }
    let pending: Vec<&Batch> = batches
        .iter()
        .filter(|b| b.recipients.iter().any(|r| !log.is_done(r)))
        .collect();
    let mut record = |rcpt: &Address, d: &Injected| {
        let mark = match d {
            Injected::Sent => Mark::Sent,
            Injected::Rejected(_) => Mark::Rejected,
        };
        log.record(rcpt, mark)
    };
    let result = injector.inject(pending, &message, &mut record);
    match result {
        Ok(report) => {
            log.finish()?;
            Ok(PostOutcome::Delivered {
                sent: report.sent,
                already,
                rejected: report.rejected,
                skipped,
            })
        }
        Err(e) => {
            // Keep what was delivered before exiting 75.
            log.sync()?;
            Err(e.into())
        }
    }
}

fn refuse(
    raw: &[u8],
    list: &ListSpec,
    files: &ListFiles,
    sender: Option<&Address>,
    ctx: &RunContext,
    reason: Refusal,
    reply_text: String,
) -> Result<PostOutcome, ExpandError> {
    if list.refuse == RefuseAction::Hold
        && let Some(sender) = sender
    {
        return match hold(
            raw,
            sender,
            reason,
            &files.held_dir(),
            &list.name,
            ctx.now_unix,
        )? {
            Some(path) => Ok(PostOutcome::Held(path)),
            None => Ok(PostOutcome::HoldQueueFull { reason }),
        };
    }
    Ok(PostOutcome::Refused { reason, reply_text })
}

/// The first line of a held post, naming its envelope sender.
const RETURN_PATH: &str = "Return-Path:";

/// Writes the post to `DIR/UNIXTIME-REASON-HASH.eml`, behind a
/// `Return-Path:` line that keeps its envelope sender for [`read_held`].
/// Held posts older than [`MAX_HELD_AGE`] are deleted first. `None` when
/// the queue is full ([`MAX_HELD`] posts or [`MAX_HELD_BYTES`]).
pub fn hold(
    raw: &[u8],
    sender: &Address,
    reason: Refusal,
    dir: &Path,
    list_name: &str,
    now_unix: u64,
) -> Result<Option<PathBuf>, ExpandError> {
    super::ensure_dir(dir)?;
    let (count, bytes) = held_usage(dir, now_unix)?;
    if count >= MAX_HELD || bytes.saturating_add(raw.len() as u64) > MAX_HELD_BYTES {
        return Ok(None);
    }
    let key = progress::message_key(list_name, raw);
    let name = format!(
        "{now_unix}-{}-{}.eml",
        reason.as_str(),
        key.get(..16).unwrap_or(&key)
    );
    let path = dir.join(name);
    let nl = headers::parse(raw).newline.as_str();
    let mut content = format!("{RETURN_PATH} <{sender}>{nl}").into_bytes();
    content.extend_from_slice(raw);
    fsutil::write_atomic(&path, &content)?;
    Ok(Some(path))
}

/// Deletes expired held posts; returns (count, bytes) of those left. The
/// age is the name's `UNIXTIME-` prefix, which we wrote.
fn held_usage(dir: &Path, now_unix: u64) -> Result<(usize, u64), ExpandError> {
    let entries = std::fs::read_dir(dir).map_err(|source| fsutil::FsError::Io {
        path: dir.to_path_buf(),
        op: "list",
        source,
    })?;
    let oldest = now_unix.saturating_sub(MAX_HELD_AGE.as_secs());
    let (mut count, mut bytes) = (0, 0u64);
    // Bounded: past the limits the answer is "full" whatever else is there.
    for entry in entries.flatten().take(4 * MAX_HELD) {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "eml") {
            continue;
        }
        let stamp = entry
            .file_name()
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|t| t.parse::<u64>().ok());
        if stamp.is_some_and(|t| t < oldest) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        count += 1;
        bytes = bytes.saturating_add(entry.metadata().map_or(0, |m| m.len()));
    }
    Ok((count, bytes))
}

/// Reads a held post back: (envelope sender, the message as received). To
/// release it, the CLI runs [`run`] with the policy set to
/// [`PostingPolicy::Open`], then removes the file.
pub fn read_held(path: &Path, limit: usize) -> Result<(Option<Address>, Vec<u8>), ExpandError> {
    let content = fsutil::read_bounded(path, limit)?.ok_or_else(|| fsutil::FsError::Io {
        path: path.to_path_buf(),
        op: "open",
        source: std::io::ErrorKind::NotFound.into(),
    })?;
    let line_end = content
        .iter()
        .position(|&b| b == b'\n')
        .map_or(content.len(), |i| i + 1);
    let first = String::from_utf8_lossy(content.get(..line_end).unwrap_or_default()).into_owned();
    let sender = first
        .get(..RETURN_PATH.len())
        .filter(|p| p.eq_ignore_ascii_case(RETURN_PATH))
        .and_then(|_| first.get(RETURN_PATH.len()..))
        .and_then(|path| parse_path(path.trim()).ok().flatten());
    match sender {
        Some(sender) => Ok((
            Some(sender),
            content.get(line_end..).unwrap_or_default().to_vec(),
        )),
        None => Ok((None, content)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::verp::{VerpResult, verify_verp};
    use crate::inject::{SmtpOptions, sink::Sink};
    use crate::testutil::{addr, ctx, files, keys, list};

    const DAY: u64 = 20_600;
    const POST: &[u8] = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com;\r\n\th=from:subject; b=abc\r\nFrom: Alice <alice@example.com>\r\nSubject: Hello\r\n  folded subject\r\nList-Id: Other list <other.example.net>\r\n\r\nBody line\r\n.leading dot\r\n";

    fn deliver(p: Prepared) -> (Vec<u8>, Vec<Batch>, Vec<(Address, String)>) {
        match p {
            Prepared::Deliver {
                message,
                batches,
                skipped,
            } => (message, batches, skipped),
            other => panic!("expected delivery, got {other:?}"),
        }
    }

    #[test]
    fn original_bytes_kept_and_fields_prepended_once() {
        let spec = list(&["alice@example.com", "bob@example.net"]);
        let alice = addr("alice@example.com");
        let (message, batches, skipped) =
            deliver(prepare_post(POST, &spec, Some(&alice), DAY, &keys()).expect("prepare"));
        assert!(skipped.is_empty());
        // The original follows our fields byte for byte, but for the
        // poster's List-Id, renamed.
        let renamed =
            String::from_utf8_lossy(POST).replace("\r\nList-Id:", "\r\nX-Original-List-Id:");
        assert!(message.ends_with(renamed.as_bytes()));
        let added = message
            .get(..message.len() - renamed.len())
            .expect("prefix");
        assert_eq!(
            String::from_utf8_lossy(added),
            "List-Id: <members.lists.example.org>\r\n\
             List-Post: <mailto:members@lists.example.org>\r\n\
             List-Help: <mailto:members-request@lists.example.org?subject=help>\r\n\
             Feedback-ID: members.lists.example.org:lists.example.org:listwarden\r\n\
             Precedence: list\r\n"
        );
        assert_eq!(batches.len(), 2);
        let h = String::from_utf8(batches[1].headers.clone()).expect("utf-8");
        let token = unsubscribe_address(&spec.address, &addr("bob@example.net"), 0, &keys(), DAY)
            .expect("token address");
        assert_eq!(
            h,
            format!(
                "List-Unsubscribe: <{}>,\r\n <https://lists.example.org/unsubscribe?list=members&m=bob@example.net&t={}>\r\n\
                 List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
                unsubscribe_mailto(&token),
                token.local.get(20..44).expect("token")
            )
        );
        // Our List-Id appears once; the foreign one is kept under another name.
        let full = [batches[1].headers.clone(), message].concat();
        let block = headers::parse(&full);
        let ids: Vec<String> = block.named("list-id").map(|f| f.text()).collect();
        assert_eq!(ids, ["<members.lists.example.org>"]);
        let kept: Vec<String> = block
            .named("x-original-list-id")
            .map(|f| f.text())
            .collect();
        assert_eq!(kept, ["Other list <other.example.net>"]);
        assert_eq!(
            block.named("subject").next().map(|f| f.value),
            Some(&b" Hello\r\n  folded subject\r\n"[..])
        );
    }

    /// 19: a poster's own `List-*` fields are renamed `X-Original-List-*`,
    /// so each copy carries only the list's `List-Unsubscribe`.
    /// Delivers `raw` from alice; checks that the first copy carries one
    /// `List-Unsubscribe` (the list's, not the poster's "evil" one), one
    /// `List-Unsubscribe-Post` and one `List-Id`; returns the message text.
    fn only_the_lists_unsubscribe(raw: &[u8]) -> String {
        let spec = list(&["alice@example.com"]);
        let (message, batches, _) = deliver(
            prepare_post(raw, &spec, Some(&addr("alice@example.com")), DAY, &keys())
                .expect("prepare"),
        );
        let full = [batches[0].headers.clone(), message.clone()].concat();
        let block = headers::parse(&full);
        let unsub: Vec<String> = block.named("List-Unsubscribe").map(|f| f.text()).collect();
        assert_eq!(unsub.len(), 1, "{unsub:?}");
        assert!(!unsub[0].contains("evil"), "{unsub:?}");
        assert_eq!(block.named("List-Unsubscribe-Post").count(), 1);
        assert_eq!(block.named("List-Id").count(), 1);
        String::from_utf8_lossy(&message).into_owned()
    }

    #[test]
    fn poster_list_fields_are_renamed() {
        let text = only_the_lists_unsubscribe(b"From: alice@example.com\r\nList-Unsubscribe: <mailto:evil@example.net>\r\nlist-unsubscribe-post: List-Unsubscribe=One-Click\r\nList-Id: <other.example.net>\r\nSubject: List-Id: x\r\n\r\nList-Id: in the body\r\n");
        for kept in [
            "X-Original-List-Unsubscribe: <mailto:evil@example.net>\r\n",
            "X-Original-list-unsubscribe-post: List-Unsubscribe=One-Click\r\n",
            "X-Original-List-Id: <other.example.net>\r\n",
            "Subject: List-Id: x\r\n\r\nList-Id: in the body\r\n",
        ] {
            assert!(text.contains(kept), "{kept:?} in {text}");
        }
    }

    /// `Name :` (space before the colon) is still a header to Postfix and
    /// to mail clients: a poster must not hide fields from us with it.
    #[test]
    fn fields_written_with_a_space_before_the_colon_are_still_renamed() {
        let text = only_the_lists_unsubscribe(b"From: alice@example.com\r\nX-A : x\r\nList-Unsubscribe : <https://evil.example.net/u>\r\nList-Unsubscribe-Post\t: List-Unsubscribe=One-Click\r\n\r\nhi\r\n");
        assert!(
            text.contains("X-Original-List-Unsubscribe : <https://evil.example.net/u>"),
            "{text}"
        );
    }

    /// A post's own `Feedback-ID` (a forged one would file the list's
    /// Gmail complaints under someone else's identifiers, or skew ours) is
    /// renamed; every copy carries exactly the list's, however the
    /// poster's is spelt or folded.
    #[test]
    fn poster_feedback_id_is_renamed_and_ours_is_the_only_one() {
        let spec = list(&["alice@example.com", "bob@example.net"]);
        let raw = b"From: alice@example.com\r\nfeedback-id: evil:x:spammer\r\nFEEDBACK-ID:\r\n other:listwarden\r\nX-Feedback-ID: kept\r\n\r\nFeedback-ID: in the body\r\n";
        let (message, batches, _) = deliver(
            prepare_post(raw, &spec, Some(&addr("alice@example.com")), DAY, &keys())
                .expect("prepare"),
        );
        for batch in &batches {
            let full = [batch.headers.clone(), message.clone()].concat();
            let block = headers::parse(&full);
            let ids: Vec<String> = block.named("Feedback-ID").map(|f| f.text()).collect();
            assert_eq!(
                ids,
                ["members.lists.example.org:lists.example.org:listwarden"]
            );
            assert_eq!(block.named("X-Original-Feedback-ID").count(), 2);
        }
        let text = String::from_utf8_lossy(&message);
        for kept in [
            "X-Original-feedback-id: evil:x:spammer\r\n",
            "X-Original-FEEDBACK-ID:\r\n other:listwarden\r\n",
            "X-Feedback-ID: kept\r\n",
            "\r\n\r\nFeedback-ID: in the body\r\n",
        ] {
            assert!(text.contains(kept), "{kept:?} in {text}");
        }
    }

    /// Gmail's format: at most four `:`-separated fields, the SenderId
    /// (5-15 characters) last; no identifier holds a `:` or repeats.
    #[test]
    fn feedback_id_follows_gmails_format() {
        for (list, want) in [
            (
                "news@lists.example.org",
                "news.lists.example.org:lists.example.org:listwarden",
            ),
            (
                "\"odd:list\"@Lists.Example.org",
                "odd-list.lists.example.org:lists.example.org:listwarden",
            ),
        ] {
            let got = feedback_id(&addr(list));
            assert_eq!(got, want);
            let fields: Vec<&str> = got.split(':').collect();
            assert_eq!(fields.len(), 3, "{got}");
            assert!((5..=15).contains(&fields[2].len()));
            assert!(fields.iter().all(|f| !f.is_empty()));
            assert_ne!(fields[0], fields[1]);
        }
    }

    #[test]
    fn lf_messages_get_lf_fields_and_precedence_is_not_doubled() {
        let mut spec = list(&["alice@example.com"]);
        spec.https_unsubscribe_base = None;
        spec.policy = PostingPolicy::Announce(vec![addr("boss@example.com")]);
        let raw = b"From: boss@example.com\nPrecedence: bulk\n\nhi\n";
        let (message, batches, _) = deliver(
            prepare_post(raw, &spec, Some(&addr("x@y.org")), DAY, &keys()).expect("prepare"),
        );
        let text = String::from_utf8(message).expect("utf-8");
        assert!(
            text.starts_with("List-Id: <members.lists.example.org>\nList-Post: NO\nList-Help:")
        );
        assert_eq!(text.matches("Precedence:").count(), 1);
        let h = String::from_utf8(batches[0].headers.clone()).expect("utf-8");
        assert!(
            h.starts_with("List-Unsubscribe: <mailto:members-unsubscribe+lw-"),
            "{h}"
        );
        assert!(
            h.ends_with("?subject=unsubscribe>\n") && !h.contains("One-Click"),
            "{h}"
        );
    }

    #[test]
    fn verp_senders_verify_per_member() {
        let mut spec = list(&[
            "alice@example.com",
            "Bob+x=y@Example.NET",
            "carol@example.org",
        ]);
        spec.disabled.insert(addr("carol@example.org").key());
        let keys = keys();
        let (_, batches, _) = deliver(
            prepare_post(POST, &spec, Some(&addr("alice@example.com")), DAY, &keys)
                .expect("prepare"),
        );
        assert_eq!(batches.len(), 2, "disabled members get nothing");
        for (batch, member) in batches.iter().zip(&spec.members) {
            assert_eq!(batch.recipients, std::slice::from_ref(member));
            assert!(
                batch
                    .envelope_sender
                    .local
                    .starts_with("members-bounces+lw-1")
            );
            match verify_verp(&batch.envelope_sender, &keys, DAY + 3, 7) {
                VerpResult::Valid {
                    member: m,
                    key_id: 1,
                } => assert!(m.same_mailbox(member)),
                other => panic!("{other:?}"),
            }
        }
    }

    /// (message, envelope sender, policy, expected refusal).
    type Case<'a> = (
        &'a [u8],
        Option<&'a Address>,
        PostingPolicy,
        Option<Refusal>,
    );

    #[test]
    fn who_may_post() {
        let keys = keys();
        let mut spec = list(&["alice@example.com"]);
        let stranger = addr("eve@example.org");
        let from_member = b"From: \"A\" <ALICE@example.com>\n\nx\n";
        let from_stranger = b"From: eve@example.org\n\nx\n";
        let loop_post =
            b"List-Id: Members <Members.Lists.Example.Org>\nFrom: alice@example.com\n\nx\n";
        let cases: [Case<'_>; 8] = [
            (from_member, Some(&stranger), PostingPolicy::Members, None),
            (
                from_stranger,
                Some(&stranger),
                PostingPolicy::Members,
                Some(Refusal::NotAMember),
            ),
            (from_stranger, Some(&stranger), PostingPolicy::Open, None),
            (
                from_stranger,
                None,
                PostingPolicy::Open,
                Some(Refusal::NullSender),
            ),
            (
                loop_post,
                Some(&stranger),
                PostingPolicy::Open,
                Some(Refusal::Loop),
            ),
            (
                from_stranger,
                Some(&stranger),
                PostingPolicy::Announce(vec![addr("boss@x.org")]),
                Some(Refusal::NotAnAnnouncer),
            ),
            (
                from_stranger,
                Some(&addr("Boss@X.org")),
                PostingPolicy::Announce(vec![addr("boss@x.org")]),
                None,
            ),
            (
                from_member,
                Some(&stranger),
                PostingPolicy::Announce(vec![addr("boss@x.org")]),
                Some(Refusal::NotAnAnnouncer),
            ),
        ];
        for (i, (raw, sender, policy, want)) in cases.into_iter().enumerate() {
            spec.policy = policy;
            let got = match prepare_post(raw, &spec, sender, DAY, &keys).expect("prepare") {
                Prepared::Refused { reason, reply_text } => {
                    assert!(reply_text.is_ascii() && !reply_text.contains('\n'));
                    Some(reason)
                }
                Prepared::Deliver { .. } => None,
            };
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn members_that_cannot_be_signed_are_skipped_not_fatal() {
        let long = format!("{}@example.com", "a".repeat(480));
        let spec = list(&["alice@example.com", &long]);
        let (_, batches, skipped) = deliver(
            prepare_post(POST, &spec, Some(&addr("alice@example.com")), DAY, &keys())
                .expect("prepare"),
        );
        assert_eq!(batches.len(), 1);
        assert_eq!(skipped.len(), 1);
    }

    #[test]
    fn message_size_limit() {
        assert_eq!(read_message(&b"12345"[..], 5).expect("at limit"), b"12345");
        assert!(matches!(
            read_message(&b"123456"[..], 5),
            Err(PostError::TooLarge { limit: 5 })
        ));
    }

    fn setup(dir: &Path, members: &[String]) -> (ListFiles, ListSpec) {
        let files = files(dir);
        std::fs::write(&files.members_file, members.join("\n")).expect("write members");
        let (spec, warnings) = load_spec(
            &files,
            PostingPolicy::Members,
            Some("https://lists.example.org/unsubscribe".into()),
            RefuseAction::Hold,
        )
        .expect("load");
        assert!(warnings.is_empty(), "{warnings:?}");
        (files, spec)
    }

    #[test]
    fn refused_posts_are_held_or_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (files, mut spec) = setup(dir.path(), &["alice@example.com".into()]);
        // Never reached: nothing is delivered.
        let injector = Injector::parse("smtp:127.0.0.1:1").expect("injector");
        let raw = b"From: eve@example.org\n\nspam\n";
        let eve = addr("eve@example.org");
        let outcome = run(
            raw,
            &spec,
            &files,
            Some(&eve),
            &keys(),
            &ctx(DAY),
            &injector,
        )
        .expect("run");
        let PostOutcome::Held(path) = &outcome else {
            panic!("{outcome:?}")
        };
        assert!(
            path.to_string_lossy().contains("-not_a_member-"),
            "{path:?}"
        );
        let held = std::fs::read(path).expect("held");
        assert!(held.starts_with(b"Return-Path: <eve@example.org>\n"));
        let back = read_held(path, 1 << 20).expect("read held");
        assert_eq!(back, (Some(eve.clone()), raw.to_vec()));
        assert_eq!(outcome.exit(), (0, None));
        spec.refuse = RefuseAction::Reply;
        let outcome = run(
            raw,
            &spec,
            &files,
            Some(&eve),
            &keys(),
            &ctx(DAY),
            &injector,
        )
        .expect("run");
        assert_eq!(outcome.exit().0, sysexits::EX_NOPERM);
        let outcome = run(raw, &spec, &files, None, &keys(), &ctx(DAY), &injector).expect("run");
        assert_eq!(
            outcome,
            PostOutcome::Dropped {
                reason: Refusal::NullSender
            }
        );
    }

    /// 12: a full hold queue (by count or bytes) drops the post with a log
    /// line (exit 0), never answers it; old held posts expire.
    #[test]
    fn a_full_hold_queue_never_bounces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (files, spec) = setup(dir.path(), &["alice@example.com".into()]);
        let injector = Injector::parse("smtp:127.0.0.1:1").expect("injector");
        let eve = addr("eve@example.org");
        let held = files.held_dir();
        std::fs::create_dir_all(&held).expect("mkdir");
        let now = ctx(DAY).now_unix;
        for i in 0..MAX_HELD {
            std::fs::write(held.join(format!("{now}-not_a_member-{i:016}.eml")), "x")
                .expect("write");
        }
        let post = |raw: &[u8]| {
            run(
                raw,
                &spec,
                &files,
                Some(&eve),
                &keys(),
                &ctx(DAY),
                &injector,
            )
            .expect("run")
        };
        let outcome = post(b"From: eve@example.org\n\nspam 1\n");
        assert_eq!(outcome.exit(), (sysexits::EX_OK, None), "{outcome:?}");
        assert!(!matches!(outcome, PostOutcome::Held(_)), "{outcome:?}");

        // By bytes: one huge (sparse) held post fills the queue.
        std::fs::remove_dir_all(&held).expect("rm");
        std::fs::create_dir_all(&held).expect("mkdir");
        let big =
            std::fs::File::create(held.join(format!("{now}-not_a_member-big.eml"))).expect("big");
        big.set_len(MAX_HELD_BYTES).expect("set_len");
        let outcome = post(b"From: eve@example.org\n\nspam 2\n");
        assert_eq!(outcome.exit(), (sysexits::EX_OK, None), "{outcome:?}");
        assert!(!matches!(outcome, PostOutcome::Held(_)), "{outcome:?}");

        // By age: a held post older than MAX_HELD_AGE goes, making room.
        let old = now - MAX_HELD_AGE.as_secs() - 1;
        std::fs::rename(
            held.join(format!("{now}-not_a_member-big.eml")),
            held.join(format!("{old}-not_a_member-big.eml")),
        )
        .expect("rename");
        let outcome = post(b"From: eve@example.org\n\nspam 3\n");
        assert!(matches!(outcome, PostOutcome::Held(_)), "{outcome:?}");
        assert!(!held.join(format!("{old}-not_a_member-big.eml")).exists());
    }

    /// End to end against the in-test SMTP sink: 1,000 members, a failure
    /// half way, a retry that skips everyone already served, and a retry
    /// after completion that sends nothing.
    #[test]
    fn thousand_members_with_a_failure_and_retries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut members: Vec<String> = (0..1000)
            .map(|i| format!("member{i:04}@example.com"))
            .collect();
        members[500] = "later-member0500@example.com".into();
        members[700] = "bad-member0700@example.com".into();
        members.push("poster@example.org".into());
        let (files, spec) = setup(dir.path(), &members);
        let (addr_sink, sink) = Sink::start(true);
        let injector = Injector::Smtp {
            addr: addr_sink,
            options: SmtpOptions::default(),
        };
        let keys = keys();
        let poster = addr("poster@example.org");
        let raw = b"From: poster@example.org\nSubject: big list\nMessage-ID: <1@example.org>\n\nHello all.\n";

        let started = std::time::Instant::now();
        let first = run(
            raw,
            &spec,
            &files,
            Some(&poster),
            &keys,
            &ctx(DAY),
            &injector,
        );
        assert!(
            matches!(first, Err(ref e) if e.exit_code() == sysexits::EX_TEMPFAIL),
            "{first:?}"
        );
        assert_eq!(sink.taken().len(), 500);

        // The temporary refusal is gone on the retry.
        let (files2, mut spec2) = (files.clone(), spec.clone());
        spec2.members[500] = addr("member0500@example.com");
        std::fs::write(
            &files2.members_file,
            spec2
                .members
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .expect("write");
        let second = run(
            raw,
            &spec2,
            &files2,
            Some(&poster),
            &keys,
            &ctx(DAY),
            &injector,
        )
        .expect("retry");
        let elapsed = started.elapsed();
        let PostOutcome::Delivered {
            sent,
            already,
            rejected,
            skipped,
        } = second
        else {
            panic!("{second:?}")
        };
        assert_eq!(
            (sent, already, rejected.len(), skipped.len()),
            (500, 500, 1, 0)
        );
        let got = sink.taken();
        assert_eq!(got.len(), 1000);
        let mut rcpts: Vec<&str> = got
            .iter()
            .filter_map(|e| e.rcpts.first().map(String::as_str))
            .collect();
        rcpts.sort_unstable();
        rcpts.dedup();
        assert_eq!(rcpts.len(), 1000, "nobody got two copies");
        // Every copy carries the original message unchanged at its end.
        let wire_raw = crate::inject::to_wire(raw, true);
        assert!(got.iter().all(|e| e.data.ends_with(&wire_raw)));

        let third = run(
            raw,
            &spec2,
            &files2,
            Some(&poster),
            &keys,
            &ctx(DAY),
            &injector,
        )
        .expect("again");
        assert!(
            matches!(
                third,
                PostOutcome::Delivered {
                    sent: 0,
                    already: 1001,
                    ..
                }
            ),
            "{third:?}"
        );
        assert_eq!(sink.taken().len(), 1000);
        eprintln!("1,000-member post (two runs, one SMTP connection each): {elapsed:?}");
    }

    proptest::proptest! {
        /// Whatever the post looks like, what members get ends with it
        /// unchanged, and our fields come before it.
        #[test]
        fn any_post_is_passed_on_byte_for_byte(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let mut spec = list(&["alice@example.com"]);
            spec.policy = PostingPolicy::Open;
            let sender = addr("x@example.org");
            match prepare_post(&raw, &spec, Some(&sender), DAY, &keys()).expect("prepare") {
                Prepared::Deliver { message, batches, .. } => {
                    // Byte for byte but for `X-Original-` before List-* names.
                    let block = headers::parse(&raw);
                    let renamed = block.fields.iter().filter(|f| is_list_owned(f.name)).count();
                    let mut undone = message.clone();
                    let start = message.len() - raw.len() - renamed * ORIGINAL_PREFIX.len();
                    let mut tail = undone.split_off(start);
                    for f in block.fields.iter().rev().filter(|f| is_list_owned(f.name)) {
                        let at = f.offset + block.fields.iter().filter(|g| g.offset < f.offset && is_list_owned(g.name)).count() * ORIGINAL_PREFIX.len();
                        proptest::prop_assert_eq!(&tail[at..at + ORIGINAL_PREFIX.len()], ORIGINAL_PREFIX);
                        tail.drain(at..at + ORIGINAL_PREFIX.len());
                    }
                    proptest::prop_assert_eq!(&tail, &raw);
                    proptest::prop_assert!(message.starts_with(b"List-Id: <members.lists.example.org>"));
                    proptest::prop_assert_eq!(batches.len(), 1);
                }
                Prepared::Refused { reason, .. } => proptest::prop_assert_eq!(reason, Refusal::Loop),
            }
        }
    }
}
