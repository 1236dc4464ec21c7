//! The decision core. Pure: it takes the facts of a message known so far
//! and what it reads of the config ([`View`], which [`Config`](crate::config::Config)
//! implements), and returns a [`Verdict`]. No I/O, no clock, no
//! globals, so unit tests, `listwarden verify`, the benchmarks and the
//! milter all call the same functions.

mod stage;
mod trace;
mod verdict;
mod view;

pub use stage::Stage;
pub(crate) use trace::trace_matches;
pub use verdict::{Action, BounceVerdict, Budget, Cause, Charge, Effect, Reply, Verdict};
pub use view::View;

use crate::address::{Address, PrvsResult, VerpResult, prvs, verp};
use crate::config::{BounceCheck, Protected};
use std::net::IpAddr;

/// The SMTP client, as Postfix described it.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// `None` when Postfix knew no address (unix socket, unknown family).
    pub ip: Option<IpAddr>,
    /// SASL login name (`{auth_authen}`), if the client authenticated.
    pub authenticated_as: Option<String>,
}

/// What is known about a message at some stage.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub stage: Stage,
    pub client: &'a Client,
    /// Envelope sender; `None` is the null sender `<>`.
    pub sender: Option<&'a Address>,
    /// The recipient being decided (RCPT stage only).
    pub recipient: Option<&'a Address>,
    /// Every mailbox of every `From:` header (from end of headers on).
    pub from: &'a [Address],
    /// Days since the Unix epoch, for signature expiry.
    pub today: u64,
    /// At end of message, for a bounce that needs a trace check: whether
    /// the returned original shows our mail (see `trace_matches`).
    pub trace_found: Option<bool>,
    /// Labels of the lists whose shield is up right now.
    pub shielded: &'a [String],
}

impl<'a> Facts<'a> {
    /// Facts with nothing known but the client and the stage.
    pub fn new(stage: Stage, client: &'a Client, today: u64) -> Facts<'a> {
        Facts {
            stage,
            client,
            sender: None,
            recipient: None,
            from: &[],
            today,
            trace_found: None,
            shielded: &[],
        }
    }
}

/// Days since the Unix epoch for a Unix time in seconds.
pub use listwarden_core::clock::day_of;

/// Decides what to do with a message at `facts.stage`.
pub fn decide(facts: &Facts<'_>, config: &impl View) -> Verdict {
    match facts.stage {
        Stage::Mail => decide_mail(facts, config),
        Stage::Rcpt => decide_rcpt(facts, config),
        Stage::EndOfHeaders => decide_from(facts, config),
        Stage::EndOfMessage => decide_trace(facts, config),
        // One header or body chunk decides nothing.
        Stage::Header | Stage::Body => Verdict::cont(),
    }
}

/// True for a client that may send as a list: trusted network or SASL.
pub(crate) fn is_privileged(client: &Client, config: &impl View) -> bool {
    client.authenticated_as.is_some() || client.ip.is_some_and(|ip| config.is_trusted(ip))
}

/// True for the list server's own networks (`trusted_networks`): the
/// clients whose bounce recipients are never refused, since Postfix's
/// non_smtpd path (sendmail, seen as 127.0.0.1) would keep a refused
/// recipient stuck in the queue. A SASL login alone is not enough: any
/// account holder can authenticate, and a list manager acts on whatever
/// bounce reaches it.
pub(crate) fn is_trusted_network(client: &Client, config: &impl View) -> bool {
    client.ip.is_some_and(|ip| config.is_trusted(ip))
}

/// A bounce: the null sender, or MAILER-DAEMON / postmaster.
pub(crate) fn is_bounce_sender(sender: Option<&Address>) -> bool {
    match sender {
        None => true,
        Some(a) => {
            let local = a.folded_local();
            local == "mailer-daemon" || local == "postmaster"
        }
    }
}

fn decide_mail(facts: &Facts<'_>, config: &impl View) -> Verdict {
    let Some((sender, p)) = facts
        .sender
        .and_then(|s| config.protected(s).map(|p| (s, p)))
    else {
        // Not a list address. A trusted client is not accepted here: its
        // headers must still be seen, so that forged tags are removed.
        return Verdict::cont();
    };
    if !p.may_send(
        facts.client.ip,
        facts.client.authenticated_as.as_deref(),
        is_trusted_network(facts.client, config),
    ) {
        return forged(config, &p, Cause::ForgedEnvelopeSender, sender);
    }
    // The list server sends as its list: sign the envelope sender so that
    // every real bounce comes back carrying a signature. Only the address
    // the list manager sends from is signed; one already signed (a prvs
    // tag, or our expander's signed VERP) is left alone.
    // A SASL login that only the default lets send as the list gets only
    // the exact address signed: a detail (`members-bounces+MEMBER@`) names
    // a member, and whoever holds a signed one can make bounces and
    // complaints about that member look like ours. The list server (a
    // trusted network, or a sender the list names) writes those.
    let names_a_member = sender.local.contains('+');
    let named_sender = matches!(p.owner, crate::config::Owner::List(l) if l.senders.is_some());
    if let Some(keys) = config.signing()
        && p.takes_prvs()
        && (!names_a_member || named_sender || is_trusted_network(facts.client, config))
        && prvs::strip(sender).is_none()
        && !matches!(
            verp::verify_verp(sender, keys, facts.today, keys.validity_days()),
            VerpResult::Valid { .. }
        )
    {
        let signed = prvs::sign(sender, keys, facts.today);
        return Verdict {
            effect: Effect::SignSender(signed),
            list: Some(p.owner.label().to_string()),
            ..Verdict::cont()
        };
    }
    Verdict::cont()
}

fn decide_rcpt(facts: &Facts<'_>, config: &impl View) -> Verdict {
    let Some(rcpt) = facts.recipient else {
        return Verdict::cont();
    };
    // Never refuse a recipient of the list server itself: on Postfix's
    // non_smtpd path that would leave the mail stuck in the queue.
    if is_trusted_network(facts.client, config) {
        return Verdict::cont();
    }
    let Some(p) = config.protected(rcpt) else {
        return Verdict::cont();
    };
    // A bounce address gets the checks whatever the sender: list managers
    // act on all that reaches it, not only on mail from <>.
    if !is_bounce_sender(facts.sender) && !p.is_bounce_role() {
        return Verdict::cont();
    }
    let label = p.owner.label().to_string();
    let shielded = facts.shielded.contains(&label);
    // A shielded list takes only validly signed bounces, whatever its mode;
    // a bounce that its mode would have let the trace decide is deferred
    // (451), not refused, so a genuine one is retried once the shield drops.
    let own_mode = p.owner.bounces();
    let mode = if shielded && config.signing().is_some() {
        BounceCheck::Signed
    } else {
        own_mode
    };
    let observe = config.observe() || p.owner.observe();
    let check = match (mode, config.signing()) {
        // No check, but the bounce still reaches a list: it gets classified.
        (BounceCheck::Off, _) => {
            return Verdict {
                list: Some(label),
                ..Verdict::cont()
            };
        }
        (BounceCheck::Trace, _) | (_, None) => None,
        (BounceCheck::Signed | BounceCheck::Either, Some(keys)) => {
            Some(check_signature(rcpt, &p, keys, facts.today))
        }
    };
    let mut charges = Vec::new();
    if let Some(net) = facts
        .client
        .ip
        .filter(|ip| !ip.is_loopback())
        .map(|ip| network_key(ip, config))
    {
        charges.push(Charge::new(Budget::Network, net));
    }
    let verdict = match check {
        Some(Ok(plain)) => {
            charges.push(Charge::new(
                Budget::ListValid,
                format!("list:{label}:valid"),
            ));
            charges.push(Charge::new(Budget::Address, format!("addr:{}", rcpt.key())));
            Verdict {
                reason: Cause::BounceValid,
                bounce: Some(BounceVerdict::Valid),
                effect: if plain == *rcpt {
                    Effect::None
                } else {
                    Effect::RewriteRecipient {
                        from: rcpt.clone(),
                        to: plain,
                    }
                },
                ..Verdict::cont()
            }
        }
        // A forged tag is never ours, whatever the mode; in `either` mode an
        // unsigned or expired bounce may still pass on its trace.
        Some(Err(bad)) if mode == BounceCheck::Signed || bad == BounceVerdict::Invalid => {
            charges.push(Charge::new(
                Budget::ListInvalid,
                format!("list:{label}:invalid"),
            ));
            let why = match bad {
                BounceVerdict::Expired => "its signature has expired",
                BounceVerdict::Unsigned => "it carries no signature",
                _ => "its signature is not valid",
            };
            let text = format!(
                "<{rcpt}>: bounce refused, {why}; this list sent no message it could answer (backscatter)"
            );
            let trace_eligible = matches!(own_mode, BounceCheck::Trace | BounceCheck::Either)
                && bad != BounceVerdict::Invalid;
            let (action, reason) = match config.shield_tempfail() {
                Some(tempfail) if shielded && (tempfail || trace_eligible) => (
                    Action::Tempfail(Reply::transient("451", "4.7.1", text)),
                    Cause::Shielded,
                ),
                _ if shielded => (
                    Action::Reject(Reply::permanent("550", "5.7.1", text)),
                    Cause::Shielded,
                ),
                _ => (
                    Action::Reject(Reply::permanent("550", "5.7.1", text)),
                    Cause::BounceNotOurs,
                ),
            };
            Verdict {
                action,
                reason,
                observe,
                bounce: Some(bad),
                ..Verdict::cont()
            }
        }
        // Trace mode, or `either` without a valid signature: the returned
        // original decides at end of message.
        _ => {
            charges.push(Charge::new(
                Budget::ListInvalid,
                format!("list:{label}:invalid"),
            ));
            Verdict {
                effect: Effect::NeedsTrace,
                ..Verdict::cont()
            }
        }
    };
    Verdict {
        list: Some(label),
        charges,
        ..verdict
    }
}

/// For mail from a non-null sender to an address that takes bounces and
/// people's mail alike (Sympa's `LIST-owner@`, where Sympa scores whatever
/// bounce arrives): the verdict it gets as a bounce, to apply at end of
/// headers if its Content-Type shows a report (DSN or ARF).
pub(crate) fn as_report(facts: &Facts<'_>, config: &impl View) -> Option<Verdict> {
    let rcpt = facts.recipient?;
    if is_bounce_sender(facts.sender) || is_trusted_network(facts.client, config) {
        return None;
    }
    let p = config.protected(rcpt)?;
    if !p.is_sender_role() || p.is_bounce_role() {
        return None;
    }
    let v = decide_rcpt(
        &Facts {
            sender: None,
            ..facts.clone()
        },
        config,
    );
    v.list.is_some().then_some(v)
}

/// The rate-limit key of a client's network: its address truncated to the
/// configured prefix, so one host cannot dodge the budget by changing
/// addresses within its /24 (IPv4) or /48 (IPv6).
pub(crate) fn network_key(ip: IpAddr, config: &impl View) -> String {
    match ipnet::IpNet::new(ip, config.network_prefix(ip)) {
        Ok(net) => format!("net:{}", net.trunc()),
        Err(_) => format!("net:{ip}"),
    }
}

/// The answer when a budget is exhausted: 451, so the sender retries.
pub(crate) fn over_budget(verdict: Verdict, budget: Budget, observe: bool) -> Verdict {
    let what = match budget {
        Budget::Network => "too many bounces from your network",
        Budget::ListValid | Budget::ListInvalid => "this list is receiving too many bounces",
        Budget::Address => "too many bounces to this address",
    };
    Verdict {
        action: Action::Tempfail(Reply::transient(
            "451",
            "4.7.1",
            format!("{what}; please try again later"),
        )),
        reason: Cause::RateLimited,
        observe,
        effect: Effect::None,
        ..verdict
    }
}

/// For a report (ARF) from an ordinary sender to a list address: the list
/// it concerns and whether its recipient carries a valid signature.
pub(crate) fn report_target(
    rcpt: &Address,
    config: &impl View,
    today: u64,
) -> Option<(String, Option<BounceVerdict>)> {
    let p = config.protected(rcpt)?;
    let signature = config
        .signing()
        .and_then(|keys| check_signature(rcpt, &p, keys, today).ok())
        .map(|_| BounceVerdict::Valid);
    Some((p.owner.label().to_string(), signature))
}

/// Verifies a bounce recipient's signature: prvs, or listwarden's signed
/// VERP. `Ok` holds the address the bounce should be delivered to. A prvs
/// tag counts only on an address the list really sends from (see
/// [`Protected::takes_prvs`]): anywhere else no real bounce carries one.
fn check_signature(
    rcpt: &Address,
    p: &Protected<'_>,
    keys: &crate::address::KeyRing,
    today: u64,
) -> Result<Address, BounceVerdict> {
    let result = prvs::verify(rcpt, keys, today);
    if !matches!(result, PrvsResult::Unsigned) && !p.takes_prvs() {
        return Err(BounceVerdict::Invalid);
    }
    match result {
        PrvsResult::Valid { original, .. } => return Ok(original),
        PrvsResult::Expired => return Err(BounceVerdict::Expired),
        PrvsResult::Invalid | PrvsResult::UnknownKey => return Err(BounceVerdict::Invalid),
        PrvsResult::Unsigned => {}
    }
    match verp::verify_verp(rcpt, keys, today, keys.validity_days()) {
        VerpResult::Valid { .. } => Ok(rcpt.clone()),
        VerpResult::Expired => Err(BounceVerdict::Expired),
        VerpResult::Invalid | VerpResult::UnknownKey => Err(BounceVerdict::Invalid),
        VerpResult::Unsigned => Err(BounceVerdict::Unsigned),
    }
}

fn decide_from(facts: &Facts<'_>, config: &impl View) -> Verdict {
    // Every forged mailbox is looked at, and an enforcing list wins over
    // one in observe mode: a From: that also names an observed list must
    // not carry a forgery of another list through.
    let mut found: Option<Verdict> = None;
    for author in facts.from {
        let Some(p) = config.protected(author).filter(|p| {
            !p.may_send(
                facts.client.ip,
                facts.client.authenticated_as.as_deref(),
                is_trusted_network(facts.client, config),
            )
        }) else {
            continue;
        };
        let v = forged(config, &p, Cause::ForgedFromHeader, author);
        if !v.observe {
            return v;
        }
        found.get_or_insert(v);
    }
    match found {
        Some(v) => v,
        None if is_privileged(facts.client, config) => Verdict::accept(Cause::TrustedClient),
        None => Verdict::accept(Cause::Clean),
    }
}

/// End of message for a bounce that needed a trace (`facts.recipient` is
/// its bounce recipient): it passes only if the returned original shows
/// our mail.
fn decide_trace(facts: &Facts<'_>, config: &impl View) -> Verdict {
    let p = facts.recipient.and_then(|r| config.protected(r));
    let list = p.as_ref().map(|p| p.owner.label().to_string());
    let observe = config.observe() || p.as_ref().is_some_and(|p| p.owner.observe());
    match facts.trace_found {
        None => Verdict::accept(Cause::Clean),
        Some(true) => Verdict {
            list,
            bounce: Some(BounceVerdict::TraceOk),
            ..Verdict::accept(Cause::BounceValid)
        },
        Some(false) => Verdict {
            action: Action::Reject(Reply::permanent(
                "550",
                "5.7.1",
                "bounce refused: the returned message was not sent by this list server (backscatter)".into(),
            )),
            reason: Cause::BounceNotOurs,
            list,
            observe,
            bounce: Some(BounceVerdict::TraceFail),
            effect: Effect::None,
            charges: Vec::new(),
        },
    }
}

fn forged(config: &impl View, p: &Protected<'_>, reason: Cause, addr: &Address) -> Verdict {
    let reply = Reply::permanent(
        "550",
        "5.7.1",
        format!(
            "<{addr}> is a mailing list address of this site; only the list server may send as it"
        ),
    );
    Verdict {
        action: Action::Reject(reply),
        reason,
        list: Some(p.owner.label().to_string()),
        observe: config.observe() || p.owner.observe(),
        bounce: None,
        effect: Effect::None,
        charges: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
