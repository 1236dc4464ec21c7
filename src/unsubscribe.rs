//! RFC 8058 one-click unsubscribe for lists run by Sympa or Mailman 3.
//!
//! Neither can offer it (Sympa 6.2.70 predates its own, Mailman 3.3.8 has
//! none), but both send one copy per member from a per-member VERP sender
//! that listwarden signs at MAIL. Such a copy, from a client that may name
//! a member, with exactly that member as its one recipient, gets at end
//! of message:
//!
//! ```text
//! List-Unsubscribe: <https://BASE?list=LIST&m=MEMBER&t=TOKEN>, <the list manager's mailto URIs>
//! List-Unsubscribe-Post: List-Unsubscribe=One-Click
//! Feedback-ID: LIST.DOMAIN:DOMAIN:listwarden
//! ```
//!
//! replacing every `List-Unsubscribe`, `List-Unsubscribe-Post` and
//! `Feedback-ID` (a poster's too, when the list manager passed them on;
//! only the mailto URIs on the list's own domain are kept). The token is
//! the expander's (a signed VERP tag for the list's `-unsubscribe` role,
//! subscription number 0: the list manager keeps no numbers), good for
//! [`unsub::PLAIN_TOKEN_DAYS`]. A POST of the URL queues a feedback job
//! (list, member, unsubscribe) that `listwarden feedback-worker` carries
//! out through the list manager. Lists are named by their local part;
//! validation makes those names unique wherever one-click or `feedback:`
//! is used.
//!
//! Deciding and rewriting are pure; the endpoint's only I/O is the queue.

use crate::address::{Address, KeyRing};
use crate::config::{Config, List};
use crate::feedback::queue::{Job, Queue};
use listwarden_expand::unsubscribe::{self as unsub, UnsubError};

/// The header names replaced.
const LIST_UNSUBSCRIBE: &str = "List-Unsubscribe";
const LIST_UNSUBSCRIBE_POST: &str = "List-Unsubscribe-Post";
const FEEDBACK_ID: &str = "Feedback-ID";
/// The list manager's mailto URIs kept, and how long one may be.
const MAX_MAILTOS: usize = 4;
const MAX_URI: usize = 512;
/// Bytes of one `List-Unsubscribe` value looked at.
const MAX_SCAN: usize = 2048;
/// Longest header value written on one line (RFC 5322 allows 998 with
/// the name).
const MAX_VALUE: usize = 900;

/// A copy that may get one-click: a list-manager list with
/// `unsubscribe_url`, signed at MAIL for the member its VERP names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// The list's name (its label).
    pub list: String,
    /// The list's address: what the rewrite looks the list up by.
    pub address: Address,
    pub member: Address,
    /// What the headers held, collected as they arrive.
    pub seen: Seen,
}

/// The replaced headers as they arrived: (name as first sent, how many),
/// their size, and the mailto URIs on the list's domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The list's domain: only mailto URIs to it are kept, so a poster's
    /// own List-Unsubscribe passed on by the list manager is never
    /// promoted into the header written.
    domain: String,
    names: Vec<(String, i32)>,
    total: i32,
    /// Bytes of their names and values: bounds the removals.
    bytes: usize,
    mailtos: Vec<String>,
}

impl Seen {
    /// One header of the message.
    pub(crate) fn header(&mut self, name: &str, value: &str) {
        let Some(wanted) = [LIST_UNSUBSCRIBE, LIST_UNSUBSCRIBE_POST, FEEDBACK_ID]
            .into_iter()
            .find(|w| w.eq_ignore_ascii_case(name))
        else {
            return;
        };
        self.total = self.total.saturating_add(1);
        self.bytes = self.bytes.saturating_add(name.len() + value.len());
        match self
            .names
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, count)) => *count = count.saturating_add(1),
            None => self.names.push((name.to_string(), 1)),
        }
        if wanted == LIST_UNSUBSCRIBE {
            for uri in mailtos(value, &self.domain) {
                if self.mailtos.len() < MAX_MAILTOS && !self.mailtos.contains(&uri) {
                    self.mailtos.push(uri);
                }
            }
        }
    }
}

/// The changes to a copy: headers to delete (name, index; highest index
/// first) and headers to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rewrite {
    pub delete: Vec<(String, i32)>,
    pub add: Vec<(String, String)>,
}

/// At MAIL, for a sender listwarden signs (which it does only for a
/// client that may name a member): a candidate when `sender`, as the list
/// manager wrote it, is a per-member VERP address of a list-manager list
/// with one-click configured.
pub(crate) fn candidate(config: &Config, sender: &Address) -> Option<Candidate> {
    let list = list_of(config, sender)?;
    list.unsubscribe_url.as_ref()?;
    let member = crate::feedback::attribute::list_manager_member(sender)?;
    Some(Candidate {
        list: list.name.clone(),
        address: list.address.clone(),
        member,
        seen: Seen {
            domain: list.address.domain.clone(),
            ..Seen::default()
        },
    })
}

/// The list-manager list (no `expand:`) an address belongs to. Sympa's
/// shared `bounce+m==a==d==LIST@` counts only when LIST is a list we know
/// (the lookup's `unnamed`): otherwise its member would get a token for
/// the list that claims the shared address.
fn list_of<'a>(config: &'a Config, addr: &Address) -> Option<&'a List> {
    let found = config.protected(addr)?;
    let crate::config::Owner::List(l) = found.owner else {
        return None;
    };
    if l.expand.is_some() || found.unnamed {
        return None;
    }
    match found.role {
        crate::config::Role::Shared(_) => (l.preset == crate::config::Preset::Sympa).then_some(l),
        _ => Some(l),
    }
}

/// At end of message: the rewrite, when the copy has exactly one
/// recipient and it is the member the VERP names. `None` leaves the copy
/// as the list manager wrote it.
pub(crate) fn rewrite(
    config: &Config,
    c: &Candidate,
    recipients: usize,
    first: Option<&Address>,
    keys: &KeyRing,
    today: u64,
) -> Option<Rewrite> {
    if recipients != 1 || !first.is_some_and(|r| r.same_mailbox(&c.member)) {
        return None;
    }
    // Every such header goes, however many a poster added (each is one
    // removal, so their size is bounded by `limits.max_header_bytes`).
    if c.seen.bytes > config.limits.max_header_bytes {
        tracing::warn!(
            list = %c.list,
            count = c.seen.total,
            "one-click: too many List-Unsubscribe/Feedback-ID headers to remove; copy left as written"
        );
        return None;
    }
    let list = config
        .lists
        .iter()
        .find(|l| l.address.same_mailbox(&c.address))?;
    let base = list.unsubscribe_url.as_deref()?;
    let token = unsub::unsubscribe_token(&list.address, &c.member, 0, keys, today).ok()?;
    let url = format!(
        "<{}>",
        unsub::unsubscribe_url(base, &list.name, &c.member, &token)
    );
    if url.len() > MAX_VALUE {
        return None;
    }
    let mut value = url;
    for m in &c.seen.mailtos {
        if value.len() + m.len() + 4 > MAX_VALUE {
            break;
        }
        value.push_str(&format!(", <{m}>"));
    }
    let delete = c
        .seen
        .names
        .iter()
        .flat_map(|(name, count)| (1..=*count).rev().map(move |i| (name.clone(), i)))
        .collect();
    Some(Rewrite {
        delete,
        add: vec![
            (LIST_UNSUBSCRIBE.to_string(), value),
            (
                LIST_UNSUBSCRIBE_POST.to_string(),
                "List-Unsubscribe=One-Click".to_string(),
            ),
            (
                FEEDBACK_ID.to_string(),
                listwarden_expand::feedback_id(&list.address),
            ),
        ],
    })
}

/// The well-formed `mailto:` URIs of a `List-Unsubscribe` value to an
/// address on `domain`, in order: each `<...>` whose content starts with
/// `mailto:`, names one plain address (no percent-encoding) on `domain`,
/// asks for no other recipient (only `subject` and `body` fields) and
/// holds only printable ASCII with nothing that would break the header.
fn mailtos(value: &str, domain: &str) -> Vec<String> {
    let mut end = value.len().min(MAX_SCAN);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let mut rest = value.get(..end).unwrap_or_default();
    let mut out = Vec::new();
    while let Some(open) = rest.find('<') {
        let after = rest.get(open + 1..).unwrap_or_default();
        let Some(close) = after.find('>') else {
            break;
        };
        let uri = after.get(..close).unwrap_or_default().trim();
        rest = after.get(close + 1..).unwrap_or_default();
        let well_formed = uri.len() <= MAX_URI
            && uri
                .get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case("mailto:"))
            && uri.len() > 7
            && uri.contains('@')
            && uri
                .chars()
                .all(|c| c.is_ascii_graphic() && !"<>\"\\,".contains(c));
        if well_formed && to_domain(uri, domain) && out.len() < MAX_MAILTOS {
            out.push(uri.to_string());
        }
    }
    out
}

/// True when the mailto URI `uri` (well formed) writes to one address on
/// `domain` and nobody else.
fn to_domain(uri: &str, domain: &str) -> bool {
    let rest = uri.get(7..).unwrap_or_default();
    let (to, query) = rest.split_once('?').unwrap_or((rest, ""));
    let one_address = !to.contains('%')
        && to.matches('@').count() == 1
        && to
            .rsplit_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.eq_ignore_ascii_case(domain));
    let fields_ok = query.split('&').filter(|f| !f.is_empty()).all(|f| {
        let name = f.split_once('=').map_or(f, |(n, _)| n);
        name.eq_ignore_ascii_case("subject") || name.eq_ignore_ascii_case("body")
    });
    one_address && fields_ok
}

/// A one-click POST for a list-manager list: `None` when the request is
/// for some other list (the expander's endpoint answers it). Otherwise
/// the HTTP status and body: 200 once the job is queued (durably), 403 for
/// a bad token (as for expander lists), 503 when the queue cannot be
/// written.
pub(crate) fn one_click(
    config: &Config,
    query: &str,
    body: &[u8],
    client: std::net::IpAddr,
    today: u64,
) -> Option<(u16, String)> {
    let request = unsub::read_request(query, body).ok()?;
    let list = config
        .lists
        .iter()
        .find(|l| l.name == request.list && l.expand.is_none() && l.unsubscribe_url.is_some())?;
    let refuse = |e: UnsubError| {
        log_refusal(client, Some(&list.name), &e);
        let (status, text) = e.public_reply();
        Some((status, text.to_string()))
    };
    let (Some(keys), Some(feedback)) = (config.signing.as_ref(), config.feedback.as_ref()) else {
        tracing::error!(list = %list.name, "one-click unsubscribe needs signing keys and feedback:");
        return Some((503, "try again later\n".into()));
    };
    let member =
        match unsub::verify_plain(&list.address, &request.member, &request.token, keys, today) {
            Ok(m) => m,
            Err(e) => return refuse(e),
        };
    let job = Job {
        list: list.name.clone(),
        member: member.to_string(),
        action: crate::feedback::Action::Unsubscribe.as_str().to_string(),
        report_id: "one-click".to_string(),
        feedback_type: "one-click".to_string(),
        provider: crate::feedback::provider_of(&member.domain)
            .unwrap_or("other")
            .to_string(),
        received: crate::unix_now(),
        attempts: 0,
        last_error: None,
    };
    match Queue::new(&feedback.queue).push_request(&job) {
        Ok(new) => {
            tracing::info!(
                "one-click unsubscribe list={} member={member} queued={new} client={client}",
                list.name
            );
            Some((200, "unsubscribed\n".into()))
        }
        Err(e) => {
            tracing::error!(%client, list = %list.name, %member, "one-click unsubscribe: cannot queue the job: {e}");
            Some((503, "try again later\n".into()))
        }
    }
}

/// Refusal log lines per client per minute; more are counted and
/// summed up in one line when the minute is over.
const REFUSALS_LOGGED: u32 = 5;
/// Clients tracked per minute; the others share the count of suppressed
/// lines (memory stays bounded under a flood from many addresses).
const REFUSAL_CLIENTS: usize = 1024;

/// Who got a refusal logged this minute: a flood of bad POSTs costs at
/// most [`REFUSALS_LOGGED`] lines per client per minute.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    minute: u64,
    logged: std::collections::HashMap<std::net::IpAddr, u32>,
    suppressed: u64,
}

impl RefusalLog {
    /// For a refusal to `client` in `minute`: whether to log it, and the
    /// lines suppressed in the minute before, to log once.
    pub(crate) fn admit(&mut self, client: std::net::IpAddr, minute: u64) -> (bool, u64) {
        let mut earlier = 0;
        if minute != self.minute {
            earlier = std::mem::take(&mut self.suppressed);
            self.logged.clear();
            self.minute = minute;
        }
        let room = self.logged.len() < REFUSAL_CLIENTS || self.logged.contains_key(&client);
        let log = room && {
            let count = self.logged.entry(client).or_default();
            *count = count.saturating_add(1);
            *count <= REFUSALS_LOGGED
        };
        if !log {
            self.suppressed = self.suppressed.saturating_add(1);
        }
        (log, earlier)
    }
}

/// Logs a one-click refusal (an expander list's too), bounded per client.
pub(crate) fn log_refusal(client: std::net::IpAddr, list: Option<&str>, e: &UnsubError) {
    static LOG: std::sync::LazyLock<std::sync::Mutex<RefusalLog>> =
        std::sync::LazyLock::new(Default::default);
    let minute = crate::unix_now() / 60;
    let (log, earlier) = LOG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .admit(client, minute);
    if earlier > 0 {
        tracing::warn!(
            "one-click unsubscribe: {earlier} more refusals not logged (more than {REFUSALS_LOGGED} per client per minute)"
        );
    }
    match (log, list) {
        (true, Some(list)) => tracing::info!(%client, list, "one-click unsubscribe refused: {e}"),
        (true, None) => tracing::info!(%client, "one-click unsubscribe refused: {e}"),
        (false, _) => {}
    }
}

#[cfg(test)]
mod tests;
