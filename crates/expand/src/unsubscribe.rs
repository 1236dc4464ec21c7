//! Signed unsubscribe: by mail to `LIST-unsubscribe+TOKEN@`, and RFC 8058
//! one-click over HTTPS.
//!
//! The token is listwarden's signed VERP tag (HMAC-SHA256, 80 bits, base32;
//! see [`crate::address::verp`]) minted for the list's `-unsubscribe` role
//! address, so no new key material or MAC code is needed and the token is
//! bound to the list, its domain and the member:
//!
//! ```text
//! mailto:members-unsubscribe+lw-12000abcdefghijklmnop=alice=example.com@lists.example.org?subject=unsubscribe
//! https://lists.example.org/unsubscribe?list=members&m=alice%40example.com&t=lw-12000abcdefghijklmnop
//! ```
//!
//! The token also signs the member's subscription number (kept in the
//! list's state, raised each time the member leaves): it is mixed into the
//! signed role, `LIST-unsubscribe.N`, while the address mailed to stays
//! `LIST-unsubscribe+…`. So a token stops working once its member has left,
//! even after they join again. Number 0 (never raised) signs the plain role,
//! so tokens minted before numbers existed keep working until then.
//!
//! Because the signed role differs, a member's bounce address
//! (`-bounces+lw-…`) is no unsubscribe token, and the reverse. A token stays
//! good for as long as its key is in the ring: a correct HMAC that is past
//! the VERP validity window still unsubscribes (the stamp only says when it
//! was minted). Mail without a valid token unsubscribes nobody: its sender
//! may be forged, and a reply to it would be backscatter.
//!
//! Lists run by Sympa or Mailman 3 have no subscription numbers, so
//! nothing would end their tokens ([`verify_plain`]): theirs are good for
//! [`PLAIN_TOKEN_DAYS`] after minting, then refused (403).

use std::time::Duration;

use super::state::BounceState;
use super::{ListFiles, members, state};
use crate::address::keys::MAX_VALIDITY_DAYS;
use crate::address::verp::{self, VerpError, VerpResult, sign_verp, verify_verp};
use crate::address::{Address, KeyRing};

/// The role address that receives unsubscribe mail.
pub(crate) const ROLE: &str = "unsubscribe";
/// `lw-` K DDDD and 16 base32 characters.
pub(crate) const TOKEN_LEN: usize = 24;
/// Longest one-click request body looked at.
pub(crate) const MAX_BODY_BYTES: usize = 4096;
/// Longest query string accepted.
pub(crate) const MAX_QUERY_BYTES: usize = 4096;
/// Bytes of an unsubscribe mail searched for a token address.
pub(crate) const MAX_SCAN_BYTES: usize = 64 * 1024;
/// Token addresses tried per mail.
const MAX_CANDIDATES: usize = 10;
/// How long a token without a subscription number (Sympa, Mailman 3
/// lists) stays good: long enough for a member to click in an old
/// message and for a mailbox provider to retry for days, short enough
/// that a leaked copy does not unsubscribe its member again after each
/// re-subscription for ever.
pub const PLAIN_TOKEN_DAYS: u32 = 60;

#[derive(Debug, thiserror::Error)]
pub enum UnsubError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("no such list")]
    UnknownList,
    #[error("the unsubscribe token is not valid")]
    BadToken,
    #[error("the unsubscribe token is older than its {0} days")]
    TooOld(u32),
    #[error("no unsubscribe token found")]
    NoToken,
    #[error("cannot sign an unsubscribe token: {0}")]
    Sign(#[from] VerpError),
    #[error("list role address is invalid: {0}")]
    Role(#[from] crate::address::AddressError),
    #[error(transparent)]
    Members(#[from] members::MembersError),
    #[error(transparent)]
    State(#[from] state::StateError),
}

impl UnsubError {
    /// The HTTP status and body for the one-click endpoint. "No such list"
    /// and "bad token" look alike (no probing for list names), and no body
    /// carries a path or other detail: the log has those. File trouble is
    /// 503, so the mailbox provider retries.
    pub fn public_reply(&self) -> (u16, &'static str) {
        match self {
            UnsubError::BadRequest(_) => (400, "bad request\n"),
            UnsubError::UnknownList
            | UnsubError::BadToken
            | UnsubError::TooOld(_)
            | UnsubError::NoToken => (403, "this unsubscribe link is not valid\n"),
            UnsubError::Sign(_)
            | UnsubError::Role(_)
            | UnsubError::Members(_)
            | UnsubError::State(_) => (503, "try again later\n"),
        }
    }
}

/// The result of a valid request. Unsubscribing a non-member is a success
/// (`was_member: false`): the request may be a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribed {
    pub list: String,
    pub member: Address,
    pub was_member: bool,
}

/// `LIST-unsubscribe+TOKEN=member=domain@DOMAIN` for `member`'s
/// `subscription`, minted today.
pub(crate) fn unsubscribe_address(
    list: &Address,
    member: &Address,
    subscription: u32,
    keys: &KeyRing,
    today: u64,
) -> Result<Address, UnsubError> {
    let role = role_of(list)?;
    let signing = signing_role(&role, subscription)?;
    let signed = sign_verp(&signing, member, keys, today)?;
    // The same extension under the role that receives the mail.
    let ext = signed
        .local
        .get(signing.local.len()..)
        .ok_or(UnsubError::BadToken)?;
    Ok(Address {
        local: format!("{}{ext}", role.local),
        domain: role.domain,
    })
}

/// The token alone (`lw-…`, 24 characters), for URLs.
pub fn unsubscribe_token(
    list: &Address,
    member: &Address,
    subscription: u32,
    keys: &KeyRing,
    today: u64,
) -> Result<String, UnsubError> {
    let signed = unsubscribe_address(list, member, subscription, keys, today)?;
    signed
        .local
        .split_once(verp::DELIMITER)
        .and_then(|(_, ext)| ext.get(..TOKEN_LEN))
        .map(str::to_owned)
        .ok_or(UnsubError::BadToken)
}

/// The role address the HMAC covers: `LIST-unsubscribe` for subscription
/// 0, `LIST-unsubscribe.N` after.
fn signing_role(role: &Address, subscription: u32) -> Result<Address, UnsubError> {
    if subscription == 0 {
        return Ok(role.clone());
    }
    Ok(Address::new(
        &format!("{}.{subscription}", role.local),
        &role.domain,
    )?)
}

/// Checks `token` for `member` of `list` and the member's current
/// subscription. Returns the member as signed (compare with
/// [`Address::same_mailbox`]). Constant-time HMAC comparison.
#[cfg(test)]
fn verify_token(
    list: &Address,
    member: &Address,
    token: &str,
    subscriptions: &BounceState,
    keys: &KeyRing,
    today: u64,
) -> Result<Address, UnsubError> {
    let subscription = subscriptions.subscription(&member.key());
    verify_token_at(list, member, token, subscription, keys, today, None)
}

/// `verify_token` for a given subscription number; `max_age` days, when
/// given, bounds the stamp's age (see [`verify_address_at`]).
fn verify_token_at(
    list: &Address,
    member: &Address,
    token: &str,
    subscription: u32,
    keys: &KeyRing,
    today: u64,
    max_age: Option<u32>,
) -> Result<Address, UnsubError> {
    if !token_shape_ok(token) {
        return Err(UnsubError::BadToken);
    }
    let role = role_of(list)?;
    let rebuilt = Address {
        local: format!(
            "{}{}{token}{}{}{}{}",
            role.local,
            verp::DELIMITER,
            verp::SEPARATOR,
            member.local,
            verp::SEPARATOR,
            member.domain
        ),
        domain: role.domain.clone(),
    };
    let signed = verify_address_at(&rebuilt, &role, subscription, keys, today, max_age)?;
    if signed.same_mailbox(member) {
        Ok(signed)
    } else {
        Err(UnsubError::BadToken)
    }
}

/// Verifies a whole token address against the list's unsubscribe role and
/// the current subscription of the member it names.
fn verify_address(
    addr: &Address,
    role: &Address,
    subscriptions: &BounceState,
    keys: &KeyRing,
    today: u64,
) -> Result<Address, UnsubError> {
    // The member as the address names it; the HMAC says whether it is right.
    let subscription = signed_member(addr).map_or(0, |m| subscriptions.subscription(&m.key()));
    verify_address_at(addr, role, subscription, keys, today, None)
}

/// Without `max_age` a stamp of any age is accepted (the subscription
/// number ends the token); with it, only a stamp at most that many days
/// old.
fn verify_address_at(
    addr: &Address,
    role: &Address,
    subscription: u32,
    keys: &KeyRing,
    today: u64,
    max_age: Option<u32>,
) -> Result<Address, UnsubError> {
    let ours = verp::base_address(addr).is_some_and(|base| base.same_mailbox(role));
    if !ours {
        return Err(UnsubError::BadToken);
    }
    let signing = signing_role(role, subscription)?;
    let ext = addr
        .local
        .get(role.local.len()..)
        .ok_or(UnsubError::BadToken)?;
    let rebuilt = Address {
        local: format!("{}{ext}", signing.local),
        domain: addr.domain.clone(),
    };
    match verify_verp(&rebuilt, keys, today, max_age.unwrap_or(MAX_VALIDITY_DAYS)) {
        VerpResult::Valid { member, .. } => Ok(member),
        VerpResult::Expired if let Some(days) = max_age => Err(UnsubError::TooOld(days)),
        // The HMAC is right; only the stamp is old. See the module doc.
        VerpResult::Expired => signed_member(addr).ok_or(UnsubError::BadToken),
        VerpResult::Unsigned => Err(UnsubError::NoToken),
        VerpResult::Invalid | VerpResult::UnknownKey => Err(UnsubError::BadToken),
    }
}

/// The member named in a signed VERP address whose HMAC was verified.
pub(crate) fn signed_member(addr: &Address) -> Option<Address> {
    let (_, ext) = addr.local.split_once(verp::DELIMITER)?;
    let member = ext.get(TOKEN_LEN..)?.strip_prefix(verp::SEPARATOR)?;
    let (local, domain) = member.rsplit_once(verp::SEPARATOR)?;
    Address::new(local, domain).ok()
}

/// `lw-` + 5 digits + 16 base32 characters, any case.
fn token_shape_ok(token: &str) -> bool {
    let bytes = token.as_bytes();
    bytes.len() == TOKEN_LEN
        && bytes
            .get(..3)
            .is_some_and(|m| m.eq_ignore_ascii_case(verp::SIGNED_MARKER.as_bytes()))
        && bytes
            .get(3..8)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
        && bytes.get(8..).is_some_and(|t| {
            t.iter()
                .all(|&c| c.is_ascii_alphabetic() || (b'2'..=b'7').contains(&c))
        })
}

fn role_of(list: &Address) -> Result<Address, UnsubError> {
    Ok(Address::new(
        &format!("{}-{ROLE}", list.local),
        &list.domain,
    )?)
}

/// The one-click URL for `member`: `BASE?list=NAME&m=MEMBER&t=TOKEN`.
pub fn unsubscribe_url(base: &str, list_name: &str, member: &Address, token: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!(
        "{base}{sep}list={}&m={}&t={}",
        percent_encode(list_name, b""),
        percent_encode(&member.to_string(), b"@"),
        percent_encode(token, b""),
    )
}

/// The mailto URI for [`unsubscribe_address`].
pub(crate) fn unsubscribe_mailto(address: &Address) -> String {
    format!(
        "mailto:{}?subject=unsubscribe",
        percent_encode(&address.to_string(), b"@+=")
    )
}

/// Checks a configured one-click base URL: `https://`, printable ASCII, no
/// characters that would need escaping inside `<...>` in a header.
pub fn check_base_url(url: &str) -> Result<(), String> {
    const MAX_BASE: usize = 512;
    if !url.starts_with("https://") {
        return Err("must start with https:// (RFC 8058 one-click needs HTTPS)".into());
    }
    if url.len() > MAX_BASE {
        return Err(format!("longer than {MAX_BASE} characters"));
    }
    if let Some(c) = url
        .chars()
        .find(|c| !c.is_ascii_graphic() || "<>\"\\^`{|}#".contains(*c))
    {
        return Err(format!("contains {c:?}, which a header URL cannot hold"));
    }
    Ok(())
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `keep`.
pub(crate) fn percent_encode(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes; `None` for a broken escape or non-UTF-8 result.
/// `+` stays `+` (member addresses contain it; we never encode space as it).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `key=value` pairs of a query string or form body, decoded.
fn form_pairs(text: &str) -> Option<Vec<(String, String)>> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

/// RFC 8058: the POST body must carry `List-Unsubscribe=One-Click`, as
/// `application/x-www-form-urlencoded` or `multipart/form-data`.
fn body_is_one_click(body: &[u8]) -> bool {
    let Some(text) = body
        .get(..body.len().min(MAX_BODY_BYTES))
        .and_then(|b| std::str::from_utf8(b).ok())
    else {
        return false;
    };
    let urlencoded = form_pairs(text.trim()).is_some_and(|pairs| {
        pairs
            .iter()
            .any(|(k, v)| k == "List-Unsubscribe" && v == "One-Click")
    });
    let multipart =
        text.contains("name=\"List-Unsubscribe\"") && text.lines().any(|l| l.trim() == "One-Click");
    urlencoded || multipart
}

/// A one-click request as read, nothing verified yet: the list's name,
/// the member and the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub list: String,
    pub member: Address,
    pub token: String,
}

/// Reads a one-click request: the body must be `List-Unsubscribe=One-Click`,
/// the query `list=..&m=..&t=..`, each once.
pub fn read_request(query: &str, body: &[u8]) -> Result<Request, UnsubError> {
    if body.len() > MAX_BODY_BYTES || !body_is_one_click(body) {
        return Err(UnsubError::BadRequest(
            "the body must be List-Unsubscribe=One-Click",
        ));
    }
    if query.len() > MAX_QUERY_BYTES {
        return Err(UnsubError::BadRequest("query too long"));
    }
    let query = query.strip_prefix('?').unwrap_or(query);
    let pairs = form_pairs(query).ok_or(UnsubError::BadRequest("bad escape in query"))?;
    let one = |name: &str| -> Result<&str, UnsubError> {
        let mut found = pairs.iter().filter(|(k, _)| k == name);
        match (found.next(), found.next()) {
            (Some((_, v)), None) => Ok(v.as_str()),
            (None, _) => Err(UnsubError::BadRequest("list, m and t are required")),
            (Some(_), Some(_)) => Err(UnsubError::BadRequest("a parameter is repeated")),
        }
    };
    let (list, member, token) = (one("list")?, one("m")?, one("t")?);
    let member =
        Address::parse(member).map_err(|_| UnsubError::BadRequest("m is not an address"))?;
    Ok(Request {
        list: list.to_string(),
        member,
        token: token.to_string(),
    })
}

/// Checks the token of a list whose list manager keeps no subscription
/// numbers (Sympa, Mailman 3: the plain role, number 0), minted at most
/// [`PLAIN_TOKEN_DAYS`] ago. Returns the member as signed. The shape is
/// checked first, as for expander lists.
pub fn verify_plain(
    list: &Address,
    member: &Address,
    token: &str,
    keys: &KeyRing,
    today: u64,
) -> Result<Address, UnsubError> {
    verify_token_at(list, member, token, 0, keys, today, Some(PLAIN_TOKEN_DAYS))
}

/// A verified one-click request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneClick {
    /// Index of the list in `lists`.
    pub index: usize,
    pub member: Address,
    /// The token is for the member's previous subscription (a retry after
    /// the unsubscribe): it removes nobody, it only answers "done".
    pub ended: bool,
}

/// Checks a one-click request (reads the list's state for the member's
/// subscription number; changes nothing).
pub(crate) fn check_one_click(
    query: &str,
    body: &[u8],
    lists: &[ListFiles],
    keys: &KeyRing,
    today: u64,
) -> Result<OneClick, UnsubError> {
    let Request {
        list: list_name,
        member,
        token,
    } = read_request(query, body)?;
    let (list_name, token) = (list_name.as_str(), token.as_str());
    let index = lists
        .iter()
        .position(|l| l.name == list_name)
        .ok_or(UnsubError::UnknownList)?;
    let list = lists.get(index).ok_or(UnsubError::UnknownList)?;
    // A malformed token costs nothing: the state file is read (it can be
    // large) only for a token that could be one of ours.
    if !token_shape_ok(token) {
        return Err(UnsubError::BadToken);
    }
    let subscription = state::load(&list.state_file())?.subscription(&member.key());
    match verify_token_at(
        &list.address,
        &member,
        token,
        subscription,
        keys,
        today,
        None,
    ) {
        Ok(signed) => Ok(OneClick {
            index,
            member: signed,
            ended: false,
        }),
        // The subscription this token was for has just ended: a retry of
        // the request that ended it, fine unless the member is back.
        Err(UnsubError::BadToken) if subscription > 0 => {
            let signed = verify_token_at(
                &list.address,
                &member,
                token,
                subscription - 1,
                keys,
                today,
                None,
            )?;
            Ok(OneClick {
                index,
                member: signed,
                ended: true,
            })
        }
        Err(e) => Err(e),
    }
}

/// `POST /unsubscribe?list=..&m=..&t=..` with body `List-Unsubscribe=One-Click`:
/// verifies and removes the member. The HTTP server maps errors with
/// [`UnsubError::public_reply`]; a GET must never reach this (RFC 8058: link
/// scanners fetch URLs).
pub fn one_click(
    query: &str,
    body: &[u8],
    lists: &[ListFiles],
    keys: &KeyRing,
    today: u64,
    lock_timeout: Duration,
) -> Result<Unsubscribed, UnsubError> {
    let OneClick {
        index,
        member,
        ended,
    } = check_one_click(query, body, lists, keys, today)?;
    let list = lists.get(index).ok_or(UnsubError::UnknownList)?;
    // A lock-free read first: a retry, or a flood of valid old links, for
    // someone already gone never queues on (or takes) the members lock.
    let is_member = members::load(&list.members_file)?.contains(&member);
    if ended && is_member {
        // Back with a new subscription: the old link is dead.
        return Err(UnsubError::BadToken);
    }
    if ended || !is_member {
        return Ok(Unsubscribed {
            list: list.name.clone(),
            member,
            was_member: false,
        });
    }
    let was_member = remove_member(list, &member, lock_timeout)?;
    Ok(Unsubscribed {
        list: list.name.clone(),
        member,
        was_member,
    })
}

/// The audit log line of a one-click unsubscribe: list, member, client.
pub fn audit_line(done: &Unsubscribed, client: std::net::IpAddr) -> String {
    format!(
        "one-click unsubscribe list={} member={} was_member={} client={client}",
        done.list, done.member, done.was_member
    )
}

/// Finds the member an unsubscribe mail is for: the recipient itself when
/// it is a token address (`${recipient}` of the pipe), else a token address
/// quoted in the Subject or the first [`MAX_SCAN_BYTES`] of the message
/// (mail to `LIST-request@` with subject `unsubscribe`, a forwarded link).
pub(crate) fn member_from_mail(
    recipient: Option<&Address>,
    raw: &[u8],
    list: &Address,
    subscriptions: &BounceState,
    keys: &KeyRing,
    today: u64,
) -> Result<Address, UnsubError> {
    let role = role_of(list)?;
    if let Some(rcpt) = recipient
        && rcpt.local.contains(verp::DELIMITER)
        && verp::base_address(rcpt).is_some_and(|b| b.same_mailbox(&role))
    {
        return verify_address(rcpt, &role, subscriptions, keys, today);
    }
    let text = String::from_utf8_lossy(raw.get(..raw.len().min(MAX_SCAN_BYTES)).unwrap_or(raw));
    let mut result = Err(UnsubError::NoToken);
    for candidate in token_candidates(&text, &role.local)
        .into_iter()
        .take(MAX_CANDIDATES)
    {
        let Ok(addr) = Address::parse(&candidate) else {
            continue;
        };
        match verify_address(&addr, &role, subscriptions, keys, today) {
            Ok(member) => return Ok(member),
            Err(e) => result = Err(e),
        }
    }
    result
}

/// Substrings that look like `ROLE+lw-…@domain`, percent-decoded.
fn token_candidates(text: &str, role_local: &str) -> Vec<String> {
    let needle =
        format!("{}{}{}", role_local, verp::DELIMITER, verp::SIGNED_MARKER).to_ascii_lowercase();
    let lower = text.to_ascii_lowercase();
    let stop = |c: char| c.is_whitespace() || "<>\"',;()?&[]".contains(c);
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = lower.get(from..).and_then(|rest| rest.find(&needle)) {
        let start = from + found;
        let end = text
            .get(start..)
            .and_then(|rest| rest.find(stop))
            .map_or(text.len(), |i| start + i);
        if let Some(raw) = text.get(start..end)
            && let Some(decoded) = percent_decode(raw)
        {
            out.push(decoded);
        }
        if out.len() >= MAX_CANDIDATES {
            break;
        }
        from = end.max(start + needle.len());
    }
    out
}

/// Removes `member` from the members file, forgets its bounce record and
/// ends its subscription (its tokens stop working). True if it was a
/// member. Safe to repeat.
pub fn remove_member(
    list: &ListFiles,
    member: &Address,
    lock_timeout: Duration,
) -> Result<bool, UnsubError> {
    let was_member = members::update(&list.members_file, lock_timeout, |f| f.remove(member))?;
    if was_member {
        state::update(&list.state_file(), lock_timeout, |s| {
            s.forget(&member.key())
        })?;
    }
    Ok(was_member)
}

/// What `listwarden expand --unsubscribe` did with one mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MailOutcome {
    Unsubscribed(Unsubscribed),
    /// No valid token: nothing done, exit 0 (never a reply; see module doc).
    Ignored(String),
}

/// The unsubscribe pipe: `recipient` is the pipe's `${recipient}`.
/// Only file trouble is an error (exit 75).
pub(crate) fn run_mail(
    raw: &[u8],
    recipient: Option<&Address>,
    list: &ListFiles,
    keys: &KeyRing,
    ctx: &super::RunContext,
) -> Result<MailOutcome, UnsubError> {
    let subscriptions = state::load(&list.state_file())?;
    let member = match member_from_mail(
        recipient,
        raw,
        &list.address,
        &subscriptions,
        keys,
        ctx.today,
    ) {
        Ok(m) => m,
        Err(e @ (UnsubError::NoToken | UnsubError::BadToken)) => {
            return Ok(MailOutcome::Ignored(e.to_string()));
        }
        Err(e) => return Err(e),
    };
    let was_member = remove_member(list, &member, ctx.lock_timeout)?;
    Ok(MailOutcome::Unsubscribed(Unsubscribed {
        list: list.name.clone(),
        member,
        was_member,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{addr, ctx, files, keys};
    use std::path::Path;

    fn none() -> BounceState {
        BounceState::default()
    }

    const DAY: u64 = 20_500;

    fn list() -> Address {
        addr("members@lists.example.org")
    }

    #[test]
    fn token_round_trip_and_shape() {
        let keys = keys();
        let member = addr("Alice+tag=x@Example.COM");
        let token = unsubscribe_token(&list(), &member, 0, &keys, DAY).expect("token");
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(token.starts_with("lw-10500"), "{token}");
        let signed = verify_token(&list(), &member, &token, &none(), &keys, DAY).expect("verify");
        assert!(signed.same_mailbox(&member));
        // Case-folded by some client: still good.
        let upper = token.to_ascii_uppercase();
        verify_token(&list(), &member, &upper, &none(), &keys, DAY).expect("upper case");
        // Years later (past any VERP window) the HMAC still counts.
        verify_token(&list(), &member, &token, &none(), &keys, DAY + 3000).expect("old token");
        let address = unsubscribe_address(&list(), &member, 0, &keys, DAY).expect("address");
        assert_eq!(
            address.to_string(),
            format!("members-unsubscribe+{token}=Alice+tag=x=example.com@lists.example.org")
        );
    }

    /// review2 M1: a token without a subscription number (Sympa, Mailman 3)
    /// is good for PLAIN_TOKEN_DAYS after minting, then refused.
    #[test]
    fn plain_tokens_expire() {
        let keys = keys();
        let member = addr("alice@example.com");
        let token = unsubscribe_token(&list(), &member, 0, &keys, DAY).expect("token");
        let days = u64::from(PLAIN_TOKEN_DAYS);
        for later in [0, 7, days] {
            verify_plain(&list(), &member, &token, &keys, DAY + later).expect("young token");
        }
        for later in [days + 1, 400, 3000] {
            let err =
                verify_plain(&list(), &member, &token, &keys, DAY + later).expect_err("old token");
            assert!(matches!(err, UnsubError::TooOld(_)), "{later}: {err:?}");
            assert_eq!(err.public_reply().0, 403);
        }
        // The expander's tokens still live as long as their subscription.
        verify_token(&list(), &member, &token, &none(), &keys, DAY + 400).expect("expander");
    }

    #[test]
    fn every_token_mutation_fails() {
        let keys = keys();
        let member = addr("alice@example.com");
        let token = unsubscribe_token(&list(), &member, 0, &keys, DAY).expect("token");
        let alphabet = "0123456789abcdefghijklmnopqrstuvwxyz=+-.@";
        for pos in 0..token.len() {
            for c in alphabet.chars() {
                let mut chars: Vec<char> = token.chars().collect();
                let Some(slot) = chars.get_mut(pos) else {
                    continue;
                };
                if slot.eq_ignore_ascii_case(&c) {
                    continue;
                }
                *slot = c;
                let mutated: String = chars.into_iter().collect();
                assert!(
                    verify_token(&list(), &member, &mutated, &none(), &keys, DAY).is_err(),
                    "{mutated} passed"
                );
            }
        }
        // Wrong member, wrong list, truncated, extended, field-shifting.
        let other = addr("mallory@example.com");
        assert!(verify_token(&list(), &other, &token, &none(), &keys, DAY).is_err());
        let other_list = addr("staff@lists.example.org");
        assert!(verify_token(&other_list, &member, &token, &none(), &keys, DAY).is_err());
        let short = token.get(..TOKEN_LEN - 1).expect("prefix");
        assert!(verify_token(&list(), &member, short, &none(), &keys, DAY).is_err());
        assert!(
            verify_token(&list(), &member, &format!("{token}=x"), &none(), &keys, DAY).is_err()
        );
        // A bounce tag for the same member is no unsubscribe token.
        let bounce = sign_verp(
            &addr("members-bounces@lists.example.org"),
            &member,
            &keys,
            DAY,
        )
        .expect("sign");
        let bounce_tag = bounce
            .local
            .split_once('+')
            .and_then(|(_, e)| e.get(..TOKEN_LEN));
        assert!(
            verify_token(
                &list(),
                &member,
                bounce_tag.expect("tag"),
                &none(),
                &keys,
                DAY
            )
            .is_err()
        );
    }

    #[test]
    fn urls_and_mailto() {
        let member = addr("a+b%c@example.com");
        let url = unsubscribe_url(
            "https://l.example.org/unsubscribe",
            "members",
            &member,
            "lw-1",
        );
        assert_eq!(
            url,
            "https://l.example.org/unsubscribe?list=members&m=a%2Bb%25c@example.com&t=lw-1"
        );
        let url = unsubscribe_url("https://l.example.org/u?x=1", "members", &member, "lw-1");
        assert!(
            url.starts_with("https://l.example.org/u?x=1&list="),
            "{url}"
        );
        let mailto = unsubscribe_mailto(&addr("m-unsubscribe+lw-1=a%b=example.com@l.org"));
        assert_eq!(
            mailto,
            "mailto:m-unsubscribe+lw-1=a%25b=example.com@l.org?subject=unsubscribe"
        );
        assert!(check_base_url("https://lists.example.org/unsubscribe").is_ok());
        for bad in [
            "http://x/u",
            "https://x/u v",
            "https://x/<u>",
            "https://x/u#f",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
    }

    fn setup(dir: &Path) -> ListFiles {
        let files = files(dir);
        std::fs::write(
            &files.members_file,
            "# list\nalice@example.com\nbob@example.net\n",
        )
        .expect("write");
        files
    }

    #[test]
    fn one_click_removes_the_member_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lists = [setup(dir.path())];
        let keys = keys();
        let member = addr("alice@example.com");
        let token = unsubscribe_token(&list(), &member, 0, &keys, DAY).expect("token");
        let url = unsubscribe_url("https://x/unsubscribe", "members", &member, &token);
        let query = url.split_once('?').map(|(_, q)| q).expect("query");
        let body = b"List-Unsubscribe=One-Click";
        let timeout = Duration::from_millis(200);
        let done = one_click(query, body, &lists, &keys, DAY + 1, timeout).expect("one click");
        assert!(done.was_member && done.member.same_mailbox(&member));
        let again = one_click(query, body, &lists, &keys, DAY + 1, timeout).expect("repeat");
        assert!(!again.was_member);
        let text = std::fs::read_to_string(&lists[0].members_file).expect("read");
        assert_eq!(text, "# list\nbob@example.net\n");

        let multipart = b"--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b--\r\n";
        check_one_click(query, multipart, &lists, &keys, DAY).expect("multipart body");
        let cases: [(&str, &[u8], u16); 6] = [
            (query, b"", 400),
            (query, b"List-Unsubscribe=Yes", 400),
            ("list=members&m=alice%40example.com", body, 400),
            (&format!("{query}&t=x"), body, 400),
            (&query.replace("list=members", "list=staff"), body, 403),
            (&query.replace("alice", "bob"), body, 403),
        ];
        for (q, b, status) in cases {
            let err = check_one_click(q, b, &lists, &keys, DAY).expect_err(q);
            assert_eq!(err.public_reply().0, status, "{q}: {err}");
        }
    }

    /// 13: a request for someone who is not a member is answered from a
    /// lock-free read: it never waits on (or takes) the members lock.
    #[test]
    fn membership_is_checked_before_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lists = [setup(dir.path())];
        let keys = keys();
        let carol = addr("carol@example.org");
        let token = unsubscribe_token(&list(), &carol, 0, &keys, DAY).expect("token");
        let url = unsubscribe_url("https://x/unsubscribe", "members", &carol, &token);
        let query = url.split_once('?').map(|(_, q)| q).expect("query");
        let lock = crate::fsutil::lock_path_for(&lists[0].members_file).expect("lock");
        let _held = crate::fsutil::lock_exclusive(&lock, Duration::from_millis(10)).expect("lock");
        let done = one_click(
            query,
            b"List-Unsubscribe=One-Click",
            &lists,
            &keys,
            DAY,
            Duration::from_millis(50),
        )
        .expect("no lock needed");
        assert!(!done.was_member);
    }

    /// 13: one status and body for "no such list" and "bad token"; no
    /// file paths in any body.
    #[test]
    fn public_replies_are_generic() {
        let unknown = UnsubError::UnknownList.public_reply();
        assert_eq!(unknown, UnsubError::BadToken.public_reply());
        assert_eq!(unknown, UnsubError::NoToken.public_reply());
        let fs = UnsubError::Members(members::MembersError::Missing {
            path: "/var/lib/listwarden/secret/members.txt".into(),
        });
        assert_eq!(fs.public_reply().0, 503);
        assert!(!fs.public_reply().1.contains('/'));
        let client: std::net::IpAddr = "192.0.2.7".parse().expect("ip");
        let line = audit_line(
            &Unsubscribed {
                list: "members".into(),
                member: addr("alice@example.com"),
                was_member: true,
            },
            client,
        );
        assert!(
            line.contains("alice@example.com") && line.contains("192.0.2.7"),
            "{line}"
        );
    }

    /// 16: a token from before an unsubscribe stops working once the
    /// member subscribes again (by mail and by one-click).
    #[test]
    fn old_tokens_die_with_their_subscription() {
        use crate::post::{Prepared, load_spec, prepare_post};
        use crate::{PostingPolicy, RefuseAction};
        let dir = tempfile::tempdir().expect("tempdir");
        let files = setup(dir.path());
        let lists = [files.clone()];
        let keys = keys();
        let alice = addr("alice@example.com");
        let links = || {
            let (spec, _) = load_spec(
                &files,
                PostingPolicy::Open,
                Some("https://x/unsubscribe".into()),
                RefuseAction::Hold,
            )
            .expect("spec");
            let Prepared::Deliver { batches, .. } =
                prepare_post(b"Subject: hi\n\nx\n", &spec, Some(&alice), DAY, &keys)
                    .expect("prepare")
            else {
                panic!("not delivered")
            };
            let headers = String::from_utf8(batches[0].headers.clone()).expect("utf-8");
            let query = headers
                .split("unsubscribe?")
                .nth(1)
                .and_then(|q| q.split('>').next())
                .expect("https link")
                .to_string();
            let mailto = headers
                .split("<mailto:")
                .nth(1)
                .and_then(|m| m.split('?').next())
                .and_then(percent_decode)
                .and_then(|a| Address::parse(&a).ok())
                .expect("mailto link");
            (query, mailto)
        };
        let body = b"List-Unsubscribe=One-Click";
        let timeout = Duration::from_millis(200);
        let (old_query, old_mailto) = links();
        let done = one_click(&old_query, body, &lists, &keys, DAY, timeout).expect("unsubscribe");
        assert!(done.was_member);
        members::update(&files.members_file, timeout, |f| f.add(&alice)).expect("re-add");
        let err = one_click(&old_query, body, &lists, &keys, DAY, timeout)
            .expect_err("an old one-click link");
        assert_eq!(err.public_reply().0, 403);
        let outcome = run_mail(b"\n", Some(&old_mailto), &files, &keys, &ctx(DAY)).expect("run");
        assert!(matches!(outcome, MailOutcome::Ignored(_)), "{outcome:?}");
        let text = std::fs::read_to_string(&files.members_file).expect("read");
        assert!(text.contains("alice@example.com"), "{text}");
        // The new subscription's links work.
        let (query, mailto) = links();
        assert_ne!(query, old_query);
        let outcome = run_mail(b"\n", Some(&mailto), &files, &keys, &ctx(DAY)).expect("run");
        assert!(
            matches!(outcome, MailOutcome::Unsubscribed(_)),
            "{outcome:?}"
        );
        let _ = query;
    }

    #[test]
    fn unsubscribe_by_mail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list_files = setup(dir.path());
        let keys = keys();
        let ctx = ctx(DAY);
        let bob = addr("bob@example.net");
        let rcpt = unsubscribe_address(&list(), &bob, 0, &keys, DAY).expect("address");
        let mail = b"From: bob@example.net\nSubject: unsubscribe\n\n";
        let outcome = run_mail(mail, Some(&rcpt), &list_files, &keys, &ctx).expect("run");
        assert!(
            matches!(outcome, MailOutcome::Unsubscribed(ref u) if u.was_member),
            "{outcome:?}"
        );

        // To -request@, with the token address quoted in the body.
        let alice = addr("alice@example.com");
        let token_addr = unsubscribe_address(&list(), &alice, 0, &keys, DAY).expect("address");
        let mail = format!(
            "Subject: unsubscribe\n\nPlease remove me: <mailto:{}>\n",
            unsubscribe_mailto(&token_addr)
        );
        let request = addr("members-request@lists.example.org");
        let outcome =
            run_mail(mail.as_bytes(), Some(&request), &list_files, &keys, &ctx).expect("run");
        assert!(
            matches!(outcome, MailOutcome::Unsubscribed(ref u) if u.member.same_mailbox(&alice))
        );
        assert_eq!(
            std::fs::read_to_string(&list_files.members_file).expect("read"),
            "# list\n"
        );

        // No token, a forged token, a token of another list: ignored.
        let plain = addr("members-unsubscribe@lists.example.org");
        let forged = Address {
            local: rcpt.local.replacen("lw-1", "lw-2", 1),
            domain: rcpt.domain.clone(),
        };
        for r in [&plain, &forged] {
            let outcome = run_mail(
                b"Subject: unsubscribe\n\n",
                Some(r),
                &list_files,
                &keys,
                &ctx,
            )
            .expect("run");
            assert!(
                matches!(outcome, MailOutcome::Ignored(_)),
                "{r}: {outcome:?}"
            );
        }
        let other = unsubscribe_address(&addr("staff@lists.example.org"), &bob, 0, &keys, DAY)
            .expect("address");
        let outcome = run_mail(b"\n", Some(&other), &list_files, &keys, &ctx).expect("run");
        assert!(matches!(outcome, MailOutcome::Ignored(_)));
    }
}
