//! Per-connection state and the handling of each milter stage. Methods
//! here are synchronous and free of protocol details: they turn what
//! Postfix sent into policy facts, and a verdict into an [`Action`] (or an
//! [`EomPlan`]) that the callbacks translate back. They log and count
//! nothing themselves: what they observe is queued as [`Event`]s, which
//! the callbacks hand to the recorder. State lives in the indymilter
//! context, never in a global map.

use crate::Shared;
use crate::address::{Address, AddressError, parse_macro_addr, parse_path, visit_mailboxes};
use crate::config::{Config, OnError};
use crate::dsn::{self, RuleAction};
use crate::policy::{
    self, Action, BounceVerdict, Budget, Cause, Client, Effect, Facts, Reply, Stage, Verdict,
};
use crate::ratelimit::Quota;
use crate::record::{Event, NO_LIST, NO_QUEUE};
use std::sync::Arc;

/// Header names we remove from inbound mail so that nobody can forge our tags.
const OWN_HEADER_PREFIX: &str = "x-listwarden-";

/// Most distinct inbound `X-Listwarden-*` header names tracked for removal;
/// a message with more is refused.
const MAX_SPOOFED_NAMES: usize = 64;
/// Most inbound `X-Listwarden-*` headers removed one by one. Each removal is
/// one milter action, and Postfix's cleanup slows down faster than
/// quadratically with many of them; no real message carries more than a
/// few, so one with more is refused as forged. listwarden itself writes up
/// to 21 (20 bounce tags and a feedback tag), which a message relayed from
/// another listwarden host carries: those must pass.
const MAX_SPOOFED_HEADERS: i32 = 32;
/// Most `From:` mailboxes kept per message: protected ones (what the check
/// needs), and others for context.
const MAX_FROM_KEPT: usize = 64;
/// Headers that name a message's recipient. List managers read a bounce's
/// member from them (Mailman's VERP detection reads the first four), so on
/// a signed bounce they are the sender's text and are replaced.
const RECIPIENT_HEADERS: [&str; 5] = [
    "to",
    "delivered-to",
    "envelope-to",
    "apparently-to",
    "x-original-to",
];
/// Most recipient headers a signed bounce may carry (a DSN has one `To:`);
/// each is one removal at end of message.
const MAX_RECIPIENT_HEADERS: i32 = 16;
const MAX_FROM_CONTEXT: usize = 8;
/// Bytes of `Content-Type:` text kept for the report checks.
const MAX_CONTENT_TYPE: usize = 4096;

/// The first half of RCPT handling.
#[derive(Debug)]
pub(crate) enum RcptBegin {
    /// Decided; nothing to charge.
    Done(Action),
    /// Charge `verdict.charges` against the budgets, then finish.
    Check {
        rcpt: Address,
        /// The RCPT argument as the client wrote it.
        as_sent: String,
        verdict: Box<Verdict>,
    },
}

/// A validly signed recipient, to be replaced by its plain address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rewrite {
    /// The recipient as the client wrote it: Postfix's cleanup deletes a
    /// recipient by exact comparison with that form (case included), not
    /// with its own canonical reading (`{rcpt_addr}` is lowercased).
    pub as_sent: String,
    pub signed: Address,
    pub plain: Address,
}

/// What end of message answers.
#[derive(Debug)]
pub(crate) enum Eom {
    /// A final answer instead of the changes (a failed trace check, a
    /// rule's deferral).
    Answer(Action),
    /// Make these changes, then continue.
    Apply(EomPlan),
}

/// The changes to make at end of message.
#[derive(Debug, Default)]
pub(crate) struct EomPlan {
    /// Inbound `X-Listwarden-*` headers to delete: (name, index), highest
    /// index first so earlier deletions do not shift later ones.
    pub delete_headers: Vec<(String, i32)>,
    /// The signed envelope sender for outbound list mail.
    pub sign_as: Option<Address>,
    /// Tagged bounce recipients to replace by their plain address.
    pub rewrite_recipients: Vec<Rewrite>,
    /// The one `To:` of a signed bounce (its recipient headers are in
    /// `delete_headers`): the plain addresses its signatures vouch for.
    pub set_to: Option<String>,
    /// The list concerned, for metrics.
    pub list: Option<String>,
    /// `X-Listwarden-Bounce` values to add.
    pub tags: Vec<String>,
    /// Hold the message (a classification rule asked for quarantine).
    pub quarantine: Option<String>,
    /// The `X-Listwarden-Feedback` value of a feedback-loop report.
    pub feedback_tag: Option<String>,
    /// Headers to add last (one-click unsubscribe of a list manager's
    /// per-member copy); the ones they replace are in `delete_headers`.
    pub add_headers: Vec<(String, String)>,
}

/// What classification adds at end of message.
#[derive(Debug, Default)]
struct Tags {
    /// `X-Listwarden-Bounce` values.
    bounce: Vec<String>,
    /// The `X-Listwarden-Feedback` value of a feedback-loop report.
    feedback: Option<String>,
    /// Why to hold the message, when a rule asked for quarantine.
    quarantine: Option<String>,
}

/// One milter connection (one SMTP session in Postfix): the connection's
/// state, and the message in progress, passed explicitly to the
/// connection's handlers. Opaque outside the crate: it is only named as
/// the type of [`super::callbacks`].
pub struct Session {
    conn: Connection,
    msg: Option<Message>,
    /// Whether Postfix agreed not to wait for replies to headers.
    pub(crate) header_noreply: bool,
    /// Whether Postfix agreed not to wait for a reply to connect.
    pub(crate) connect_noreply: bool,
    /// Whether Postfix accepts a Skip reply to body chunks.
    pub(crate) skip_ok: bool,
    /// The list server's socket: Postfix agreed not to wait for replies
    /// to MAIL and RCPT, whose answers are carried to end of message.
    pub(crate) envelope_noreply: bool,
    pub(crate) carried: super::carry::Carried,
    /// A failure in a stage that cannot answer (headers under NOREPLY),
    /// to be given at end of headers.
    pending_failure: Option<Action>,
    /// The test-only fault planned by the current message's sender.
    #[cfg(any(test, feature = "fault-injection"))]
    pub(crate) fault: Option<super::fault::Fault>,
}

/// What lives as long as the connection.
struct Connection {
    shared: Arc<Shared>,
    /// Config snapshot for the current message; refreshed at each MAIL so a
    /// reload applies to the next message, never to one in flight.
    config: Arc<Config>,
    client: Client,
    /// What the handlers observed, for the recorder.
    observed: Vec<Event>,
}

/// State of the message in progress; dropped at MAIL, abort and end.
#[derive(Debug, Default)]
struct Message {
    sender: Option<Address>,
    queue_id: Option<String>,
    today: u64,
    recipients: usize,
    from: Vec<Address>,
    /// A kept `From:` mailbox is a forgery of a list that enforces: one
    /// such is kept beyond the cap, so copies of observed or allowed list
    /// addresses cannot crowd it out.
    from_enforced: bool,
    /// Inbound `X-Listwarden-*` headers: (name as first sent, how many).
    spoofed: Vec<(String, i32)>,
    /// All inbound `X-Listwarden-*` headers seen.
    spoofed_total: i32,
    /// More distinct forged names than tracked.
    too_many_spoofed: bool,
    sign_as: Option<Address>,
    /// The list concerned (outbound signing, or a bounce), for metrics.
    list: Option<String>,
    rewrites: Vec<Rewrite>,
    /// Recipient headers ([`RECIPIENT_HEADERS`]): (name as first sent,
    /// how many), and how many in all.
    recipient_headers: Vec<(String, i32)>,
    recipient_headers_total: i32,
    /// The bounce recipient whose returned original must show our mail.
    trace_recipient: Option<Address>,
    /// The first `max_body_bytes` of the body, kept only for a trace check
    /// or classification.
    body: Vec<u8>,
    /// A bounce that reached a list: classify and tag it at end of message.
    classify: bool,
    /// What its signature check found (valid, trace_ok), for the tag.
    signature: Option<BounceVerdict>,
    /// The first recipient whose signature was valid ([`Address::key`]):
    /// the one address of a bounce an outsider cannot choose, so the
    /// storm detector counts it, never the addresses the body names.
    signed_rcpt: Option<String>,
    /// Mail from an ordinary sender to a list address that may be a
    /// feedback report (ARF): its list and signature check; it is
    /// classified if its Content-Type says so.
    report_candidate: Option<(String, Option<BounceVerdict>)>,
    /// For a recipient that takes bounces and people's mail alike: its
    /// verdict as a bounce, applied if the message turns out to be a report.
    /// Every such recipient counts: the strictest one decides.
    report_as_bounce: Vec<(Address, String, Verdict)>,
    /// Headers kept (bounded) to rebuild a bounce for classification.
    headers: Vec<(String, String)>,
    header_bytes: usize,
    /// Every `Content-Type:` value (bounded), comments and whitespace
    /// removed, lower case: kept apart from `headers` so that padding
    /// cannot push it out, and read as MIME parsers read it.
    content_type: String,
    /// Set once the message has been counted in `messages_total`.
    counted: bool,
    /// Sent to a `feedback.addresses` address: a feedback-loop report.
    feedback: bool,
    /// The list whose posting address this message goes to (inbound
    /// list traffic, for the flow alarms).
    posted_to: Option<String>,
    /// The first `X-Listwarden-Canary` value (bounded), and how many there are.
    canary_token: Option<String>,
    canary_headers: u32,
    /// A recipient is the canary address.
    to_canary: bool,
    /// Our own canary probe, found at end of headers, to be recorded.
    probe: Option<crate::canary::Probe>,
    /// A list manager's per-member copy that may get one-click
    /// unsubscribe, and its first recipient.
    one_click: Option<crate::unsubscribe::Candidate>,
    first_rcpt: Option<Address>,
}

impl Message {
    /// True when end of message has work to do.
    fn needs_eom(&self) -> bool {
        !self.spoofed.is_empty()
            || self.sign_as.is_some()
            || !self.rewrites.is_empty()
            || self.trace_recipient.is_some()
            || self.classify
            || self.feedback
    }
}

/// True for an answer that ends the message (or refuses a recipient).
fn refuses(action: &Action) -> bool {
    matches!(action, Action::Reject(_) | Action::Tempfail(_))
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>) -> Session {
        shared.recorder().record(Event::ConnectionOpened);
        let config = shared.config.load_full();
        Session {
            conn: Connection {
                shared,
                config,
                client: Client::default(),
                observed: Vec::new(),
            },
            msg: None,
            header_noreply: false,
            connect_noreply: false,
            skip_ok: false,
            envelope_noreply: false,
            carried: super::carry::Carried::default(),
            pending_failure: None,
            #[cfg(any(test, feature = "fault-injection"))]
            fault: None,
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.conn.config
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.conn.shared
    }

    /// A client in `trusted_networks`: the only ones the list server's
    /// socket serves.
    pub(crate) fn trusted_network(&self) -> bool {
        policy::is_trusted_network(&self.conn.client, &*self.conn.config)
    }

    /// The client's address, for the log.
    pub(crate) fn client_ip(&self) -> Option<std::net::IpAddr> {
        self.conn.client.ip
    }

    /// Whether a message is in progress (a refusal or an internal error
    /// drops it).
    pub(crate) fn has_message(&self) -> bool {
        self.msg.is_some()
    }

    /// Hands what the handlers observed to the recorder.
    pub(crate) fn flush(&mut self) {
        let events = std::mem::take(&mut self.conn.observed);
        self.conn.shared.recorder().record_all(events);
    }

    pub(crate) fn connect(&mut self, ip: Option<std::net::IpAddr>) {
        self.conn.client = Client {
            ip: ip.map(|ip| ip.to_canonical()),
            authenticated_as: None,
        };
    }

    /// MAIL FROM: a new message begins. `sender_macro` is Postfix's own
    /// reading of the argument (`{mail_addr}`), preferred when present.
    pub(crate) fn mail(
        &mut self,
        sender_arg: &str,
        sender_macro: Option<&str>,
        auth: Option<&str>,
        queue_id: Option<&str>,
    ) -> Action {
        self.msg = None;
        self.pending_failure = None;
        let conn = &mut self.conn;
        conn.config = conn.shared.config.load_full();
        conn.client.authenticated_as = auth.filter(|a| !a.is_empty()).map(str::to_string);
        let sender = match read_envelope(sender_arg, sender_macro) {
            Ok(s) => s,
            Err(e) => {
                // Never taken for the null sender. One that may name a list
                // domain fails closed; any other is simply not a list's.
                tracing::debug!("unreadable sender {sender_arg:?}: {e}");
                if conn.config.mentions_protected_domain(sender_arg) {
                    return conn.unreadable(None, Stage::Mail, "sender");
                }
                Some(Address::unreadable())
            }
        };
        let mut msg = Message {
            sender,
            queue_id: nonempty(queue_id),
            today: crate::today(),
            ..Message::default()
        };
        let verdict = conn.decide_mail(&mut msg);
        let action = conn.conclude(&mut msg, Stage::Mail, verdict);
        if !refuses(&action) {
            self.msg = Some(msg);
        }
        action
    }

    /// RCPT TO, first half: the policy verdict, with the budgets it
    /// charges. Bounces to a list are checked here, before any data.
    /// `rcpt_macro` is Postfix's own reading (`{rcpt_addr}`).
    pub(crate) fn rcpt_begin(&mut self, rcpt_arg: &str, rcpt_macro: Option<&str>) -> RcptBegin {
        match self.msg.as_mut() {
            Some(msg) => self.conn.rcpt_begin(msg, rcpt_arg, rcpt_macro),
            None => RcptBegin::Done(Action::Continue),
        }
    }

    /// The quota of a budget in the current config.
    pub(crate) fn quota(&self, budget: Budget) -> Option<Quota> {
        let r = &self.conn.config.ratelimit;
        match budget {
            Budget::Network => r.network,
            Budget::ListValid => r.list_valid,
            Budget::ListInvalid => r.list_invalid,
            Budget::Address => r.address,
        }
    }

    /// RCPT TO, second half: the budgets' answer applied. `exhausted` is
    /// the first budget that said no. A refused recipient ends nothing
    /// else: the message goes on for its other recipients.
    pub(crate) fn rcpt_finish(
        &mut self,
        rcpt: Address,
        as_sent: String,
        verdict: Verdict,
        exhausted: Option<Budget>,
    ) -> Action {
        match self.msg.as_mut() {
            Some(msg) => self
                .conn
                .rcpt_finish(msg, rcpt, as_sent, verdict, exhausted),
            None => Action::Continue,
        }
    }

    /// One header; only the ones the policy needs are kept, bounded.
    pub(crate) fn header(&mut self, name: &str, value: &str) {
        if let Some(msg) = self.msg.as_mut() {
            self.conn.header(msg, name, value);
        }
    }

    /// End of headers: the `From:` check.
    pub(crate) fn end_of_headers(&mut self, queue_id: Option<&str>) -> Action {
        if let Some(action) = self.pending_failure.take() {
            return action;
        }
        let Some(msg) = self.msg.as_mut() else {
            return Action::Continue;
        };
        if let Some(q) = nonempty(queue_id) {
            msg.queue_id = Some(q);
        }
        let action = self.conn.end_of_headers(msg);
        if refuses(&action) {
            self.msg = None;
        }
        action
    }

    /// The canary probe end of headers found, if any (to be recorded).
    pub(crate) fn take_probe(&mut self) -> Option<crate::canary::Probe> {
        self.msg.as_mut().and_then(|m| m.probe.take())
    }

    /// Where the recorded probe was seen: true when it is to be discarded
    /// (the list manager's side). The MX leg keeps its token header for the
    /// next hop; a replay (`None`) stays ordinary mail, its header removed.
    pub(crate) fn canary_seen(
        &mut self,
        probe: crate::canary::Probe,
        leg: Option<crate::canary::Leg>,
    ) -> bool {
        let Some(msg) = self.msg.as_mut() else {
            return false;
        };
        let Some(leg) = leg else {
            return false;
        };
        if leg == crate::canary::Leg::Mx {
            // recognise() saw exactly one such header.
            msg.spoofed
                .retain(|(n, _)| !n.eq_ignore_ascii_case(crate::canary::HEADER));
            msg.spoofed_total = msg.spoofed_total.saturating_sub(1);
        }
        self.conn.observed.push(Event::Canary {
            leg,
            id: probe.id,
            sent_ms: probe.sent_ms,
            queue_id: msg.queue_id.clone(),
        });
        if leg == crate::canary::Leg::List {
            self.msg = None;
            return true;
        }
        false
    }

    /// A body chunk: kept (bounded) only for a trace check or
    /// classification. Returns whether more of the body is wanted.
    pub(crate) fn body(&mut self, chunk: &[u8]) -> bool {
        let max = self.conn.config.limits.max_body_bytes;
        let Some(msg) = self.msg.as_mut() else {
            return false;
        };
        if (msg.trace_recipient.is_none() && !msg.classify && !msg.feedback)
            || msg.body.len() >= max
        {
            return false;
        }
        let take = chunk.len().min(max - msg.body.len());
        msg.body.extend_from_slice(&chunk[..take]);
        msg.body.len() < max
    }

    /// End of message: the trace check, the classification, then the
    /// changes to make. The message ends here whatever the answer.
    pub(crate) fn end_of_message(&mut self, queue_id: Option<&str>) -> Eom {
        let Some(mut msg) = self.msg.take() else {
            return Eom::Apply(EomPlan::default());
        };
        if let Some(q) = nonempty(queue_id) {
            msg.queue_id = Some(q);
        }
        let conn = &mut self.conn;
        if let Some(answer) = conn.check_trace(&mut msg) {
            return Eom::Answer(answer);
        }
        let tags = match conn.classify_and_tag(&mut msg) {
            Ok(tags) => tags,
            Err(answer) => return Eom::Answer(answer),
        };
        let plan = conn.plan(&mut msg, tags);
        conn.count_accepted(&mut msg);
        Eom::Apply(plan)
    }

    /// Forgets the message in progress (abort, or after a final verdict).
    pub(crate) fn reset(&mut self) {
        self.msg = None;
        self.pending_failure = None;
        self.carried = super::carry::Carried::default();
    }

    /// The answer to an internal error (a panic in a handler).
    pub(crate) fn internal_error(&mut self, stage: Stage) -> Action {
        // A message whose headers already failed is counted and logged once.
        if stage == Stage::Header
            && let Some(action) = &self.pending_failure
        {
            return action.clone();
        }
        let answer = self.conn.config.on_error;
        let verdict = Verdict {
            action: match answer {
                OnError::Tempfail => Action::Tempfail(Reply::transient(
                    "451",
                    "4.3.0",
                    "listwarden: temporary local problem, please try again later".into(),
                )),
                OnError::Accept => Action::Accept,
            },
            reason: Cause::InternalError,
            ..Verdict::cont()
        };
        let action = verdict.action.clone();
        let queue_id = self.msg.take().and_then(|m| m.queue_id);
        self.conn.observed.push(Event::InternalError {
            stage,
            queue_id,
            answer,
            verdict,
        });
        if stage == Stage::Header {
            self.pending_failure = Some(action.clone());
        }
        action
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.flush();
        self.conn.shared.recorder().record(Event::ConnectionClosed);
    }
}

impl Connection {
    /// The MAIL verdict; notes the signed sender of outbound list mail.
    fn decide_mail(&self, msg: &mut Message) -> Verdict {
        let facts = Facts {
            sender: msg.sender.as_ref(),
            ..Facts::new(Stage::Mail, &self.client, msg.today)
        };
        let verdict = policy::decide(&facts, &*self.config);
        if let Effect::SignSender(signed) = &verdict.effect {
            msg.sign_as = Some(signed.clone());
            msg.list = verdict.list.clone();
            msg.one_click = msg
                .sender
                .as_ref()
                .and_then(|s| crate::unsubscribe::candidate(&self.config, s));
        }
        verdict
    }

    /// A 451 for an address listwarden cannot read but that may name a
    /// protected domain: Postfix may read it as a list address.
    fn unreadable(&mut self, msg: Option<&mut Message>, stage: Stage, what: &str) -> Action {
        let reply = Reply::transient(
            "451",
            "4.1.7",
            format!("cannot read the {what} address; please write it plainly"),
        );
        let verdict = Verdict {
            action: Action::Tempfail(reply),
            reason: Cause::UnreadableAddress,
            ..Verdict::cont()
        };
        self.observe_verdict(stage, &verdict, msg, None);
        verdict.action
    }

    fn rcpt_begin(
        &mut self,
        msg: &mut Message,
        rcpt_arg: &str,
        rcpt_macro: Option<&str>,
    ) -> RcptBegin {
        let privileged = policy::is_privileged(&self.client, &*self.config);
        // Bounce checks are skipped for the list server's networks only
        // (see `policy::is_trusted_network`), not for any SASL login.
        let trusted = policy::is_trusted_network(&self.client, &*self.config);
        let max = self.config.limits.max_recipients;
        msg.recipients += 1;
        if msg.recipients > max && !privileged {
            let reply = Reply::transient(
                "452",
                "4.5.3",
                format!("too many recipients (at most {max} a message)"),
            );
            // Logged and counted once per message, not per excess recipient.
            if msg.recipients == max + 1 {
                let verdict = Verdict {
                    action: Action::Tempfail(reply),
                    reason: Cause::TooManyRecipients,
                    ..Verdict::cont()
                };
                self.observe_verdict(Stage::Rcpt, &verdict, Some(msg), None);
                return RcptBegin::Done(verdict.action);
            }
            return RcptBegin::Done(Action::Tempfail(reply));
        }
        let rcpt = match read_envelope(rcpt_arg, rcpt_macro) {
            Ok(Some(rcpt)) => rcpt,
            Ok(None) => return RcptBegin::Done(Action::Continue),
            Err(_) if !trusted && self.config.mentions_protected_domain(rcpt_arg) => {
                return RcptBegin::Done(self.unreadable(Some(msg), Stage::Rcpt, "recipient"));
            }
            Err(_) => return RcptBegin::Done(Action::Continue),
        };
        if msg.one_click.is_some() && msg.first_rcpt.is_none() {
            msg.first_rcpt = Some(rcpt.clone());
        }
        msg.to_canary |= crate::canary::is_canary(&self.config, &rcpt);
        if crate::feedback::is_report_address(&rcpt, &self.config) {
            msg.feedback = true;
            return RcptBegin::Done(Action::Continue);
        }
        if msg.posted_to.is_none()
            && let Some(p) = self.config.protected(&rcpt)
            && matches!(p.role, crate::config::Role::Posting)
            && let crate::config::Owner::List(list) = p.owner
        {
            msg.posted_to = Some(list.name.clone());
        }
        // Only bounces from strangers are shielded against; skip the lock
        // for everything else (most recipients).
        let shielded = if !trusted && policy::is_bounce_sender(msg.sender.as_ref()) {
            let (shielded, changes) = self.shared.shields.current();
            self.observed.extend(changes.into_iter().map(Event::Shield));
            shielded
        } else {
            Vec::new()
        };
        let facts = Facts {
            sender: msg.sender.as_ref(),
            recipient: Some(&rcpt),
            shielded: &shielded,
            ..Facts::new(Stage::Rcpt, &self.client, msg.today)
        };
        let verdict = policy::decide(&facts, &*self.config);
        if verdict.list.is_none() && verdict.charges.is_empty() {
            // Not a bounce to a list: nothing to count or check. Feedback
            // reports come from ordinary senders, though.
            if !trusted && msg.report_candidate.is_none() {
                msg.report_candidate = policy::report_target(&rcpt, &*self.config, msg.today);
            }
            if let Some(v) = policy::as_report(&facts, &*self.config) {
                msg.report_as_bounce.push((rcpt, rcpt_arg.to_string(), v));
            }
            return RcptBegin::Done(Action::Continue);
        }
        RcptBegin::Check {
            rcpt,
            as_sent: rcpt_arg.to_string(),
            verdict: Box::new(verdict),
        }
    }

    fn rcpt_finish(
        &mut self,
        msg: &mut Message,
        rcpt: Address,
        as_sent: String,
        verdict: Verdict,
        exhausted: Option<Budget>,
    ) -> Action {
        let observe = verdict.observe || self.config.observe;
        // Over budget, a wrong signature gets the same 451 as a right one:
        // a client guessing signatures learns nothing once its budget is
        // spent. Plain backscatter (no tag, or an expired one) stays a
        // final 550: a 451 would only make innocent MTAs retry it for days.
        let verdict = match exhausted {
            Some(budget)
                if !matches!(verdict.action, Action::Reject(_))
                    || verdict.bounce == Some(BounceVerdict::Invalid) =>
            {
                policy::over_budget(verdict, budget, observe)
            }
            _ => verdict,
        };
        if let Some(list) = verdict.list.as_deref() {
            if let Some(b) = verdict.bounce {
                self.observed.push(Event::BounceChecked {
                    list: list.to_string(),
                    result: b,
                });
            }
            let invalid = matches!(
                verdict.bounce,
                Some(BounceVerdict::Invalid | BounceVerdict::Expired | BounceVerdict::Unsigned)
            );
            if invalid {
                self.record_invalid(list);
            }
        }
        let refused = refuses(&verdict.action);
        if !refused || verdict.observe {
            match &verdict.effect {
                Effect::RewriteRecipient { from, to } => msg.rewrites.push(Rewrite {
                    as_sent,
                    signed: from.clone(),
                    plain: to.clone(),
                }),
                Effect::NeedsTrace => set_trace_recipient(msg, &self.config, &rcpt),
                _ => {}
            }
            if verdict.list.is_some() && msg.list.is_none() {
                msg.list = verdict.list.clone();
            }
            // A bounce to a list (whatever its sender, on a bounce address)
            // is classified and tagged.
            if verdict.list.is_some() {
                msg.classify = true;
                msg.signature = msg.signature.or(verdict.bounce);
                if verdict.bounce == Some(BounceVerdict::Valid) && msg.signed_rcpt.is_none() {
                    msg.signed_rcpt = Some(rcpt.key());
                }
            }
        }
        if refused {
            self.observe_verdict(Stage::Rcpt, &verdict, Some(msg), Some(&rcpt));
            if verdict.observe {
                return Action::Continue;
            }
            return verdict.action;
        }
        Action::Continue
    }

    /// Counts an invalid bounce toward the list's shield, by its source
    /// network: one client alone cannot raise it.
    fn record_invalid(&mut self, list: &str) {
        let Some(shield) = &self.config.shield else {
            return;
        };
        let source = self
            .client
            .ip
            .map(|ip| policy::network_key(ip, &*self.config))
            .unwrap_or_else(|| "unknown".into());
        let change = self.shared.shields.record_invalid(list, &source, shield);
        self.observed.extend(change.map(Event::Shield));
    }

    fn header(&self, msg: &mut Message, name: &str, value: &str) {
        if let Some(c) = msg.one_click.as_mut() {
            c.seen.header(name, value);
        }
        let max = self.config.limits.max_header_bytes;
        let keep = msg.classify || msg.report_candidate.is_some() || msg.feedback;
        if keep && msg.header_bytes + name.len() + value.len() <= max {
            msg.header_bytes += name.len() + value.len();
            msg.headers.push((name.to_string(), value.to_string()));
        }
        if name.eq_ignore_ascii_case("content-type") {
            if msg.content_type.len() < MAX_CONTENT_TYPE {
                let room = MAX_CONTENT_TYPE - msg.content_type.len();
                let value = compact_mime_value(value);
                msg.content_type.push(' ');
                msg.content_type.extend(value.chars().take(room));
            }
        } else if RECIPIENT_HEADERS
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
        {
            // Counted to be replaced at end of message if this is a signed
            // bounce (at most five names, so the list stays small).
            msg.recipient_headers_total = msg.recipient_headers_total.saturating_add(1);
            match msg
                .recipient_headers
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                Some((_, count)) => *count = count.saturating_add(1),
                None => msg.recipient_headers.push((name.to_string(), 1)),
            }
        } else if name.eq_ignore_ascii_case("from") {
            // Every mailbox of every From: is looked at ("never first
            // wins"); only protected ones (and a few others, for context)
            // are kept, so memory stays bounded whatever the header holds.
            let config = &self.config;
            let client = &self.client;
            let from = &mut msg.from;
            let from_enforced = &mut msg.from_enforced;
            visit_mailboxes(value, |a| {
                let keep = match config.protected(&a) {
                    Some(p) => {
                        let enforced = !*from_enforced
                            && !p.may_send(
                                client.ip,
                                client.authenticated_as.as_deref(),
                                policy::is_trusted_network(client, &**config),
                            )
                            && !config.observe
                            && !p.owner.observe();
                        *from_enforced |= enforced;
                        enforced || from.len() < MAX_FROM_KEPT
                    }
                    None => from.len() < MAX_FROM_CONTEXT,
                };
                if keep {
                    from.push(a);
                }
            });
        } else if name.len() > OWN_HEADER_PREFIX.len()
            && name.is_char_boundary(OWN_HEADER_PREFIX.len())
            && name[..OWN_HEADER_PREFIX.len()].eq_ignore_ascii_case(OWN_HEADER_PREFIX)
        {
            if name.eq_ignore_ascii_case(crate::canary::HEADER) {
                msg.canary_headers = msg.canary_headers.saturating_add(1);
                if msg.canary_token.is_none() && self.config.canary.is_some() {
                    let max = listwarden_core::canary::MAX_TOKEN_LEN + 1;
                    msg.canary_token = Some(value.chars().take(max).collect());
                }
            }
            // Deleting needs only the count per name (delete count..1).
            msg.spoofed_total = msg.spoofed_total.saturating_add(1);
            let tracked = msg.spoofed.len();
            match msg
                .spoofed
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                Some((_, count)) => *count = count.saturating_add(1),
                None if tracked < MAX_SPOOFED_NAMES => msg.spoofed.push((name.to_string(), 1)),
                // More distinct forged names than we track: refuse the
                // message rather than let one through.
                None => msg.too_many_spoofed = true,
            }
        }
    }

    /// End of headers: forged tags, reports to addresses that also take
    /// people's mail, then the `From:` check.
    fn end_of_headers(&mut self, msg: &mut Message) -> Action {
        if msg.too_many_spoofed || msg.spoofed_total > MAX_SPOOFED_HEADERS {
            // Only this site's milter writes these headers, and it removes
            // every inbound one: a message with this many is forged.
            let reply = Reply::permanent(
                "550",
                "5.7.1",
                "message refused: it carries forged X-Listwarden-* headers".into(),
            );
            let verdict = Verdict {
                action: Action::Reject(reply),
                reason: Cause::ForgedTags,
                ..Verdict::cont()
            };
            return self.conclude(msg, Stage::EndOfHeaders, verdict);
        }
        if !msg.rewrites.is_empty() && msg.recipient_headers_total > MAX_RECIPIENT_HEADERS {
            // Not a real DSN; and each would be one removal. Not a proof of
            // forgery either: a temporary refusal.
            let reply = Reply::transient(
                "451",
                "4.7.1",
                "bounce not accepted: it names too many recipients in its headers".into(),
            );
            let verdict = Verdict {
                action: Action::Tempfail(reply),
                reason: Cause::ForgedTags,
                ..Verdict::cont()
            };
            return self.conclude(msg, Stage::EndOfHeaders, verdict);
        }
        let candidate = crate::canary::Candidate {
            token: msg.canary_token.as_deref(),
            headers: msg.canary_headers,
            recipients: msg.recipients,
            to_canary: msg.to_canary,
        };
        msg.probe = crate::canary::recognise(&self.config, &candidate, crate::canary::now_ms());
        let content_type = std::mem::take(&mut msg.content_type);
        let reports = std::mem::take(&mut msg.report_as_bounce);
        if !reports.is_empty()
            && content_type.contains("multipart/report")
            && let Some(action) = self.reports_as_bounces(msg, reports)
        {
            return action;
        }
        if let Some((list, signature)) = msg.report_candidate.take()
            && content_type.contains("feedback-report")
        {
            msg.classify = true;
            msg.list = Some(list);
            msg.signature = signature;
        }
        let facts = Facts {
            sender: msg.sender.as_ref(),
            from: &msg.from,
            ..Facts::new(Stage::EndOfHeaders, &self.client, msg.today)
        };
        let verdict = policy::decide(&facts, &*self.config);
        if verdict.action == Action::Accept && msg.needs_eom() {
            // Signing, tag removal, trace checks and tagging happen at end
            // of message; the final verdict is logged there.
            return Action::Continue;
        }
        self.conclude(msg, Stage::EndOfHeaders, verdict)
    }

    /// A report to addresses that also take people's mail: the bounce
    /// checks apply after all (no budgets at this stage), for every such
    /// recipient; an enforced refusal wins. `Some` is the final answer.
    fn reports_as_bounces(
        &mut self,
        msg: &mut Message,
        reports: Vec<(Address, String, Verdict)>,
    ) -> Option<Action> {
        let mut observed = None;
        let mut enforced = None;
        for (rcpt, as_sent, verdict) in reports {
            if refuses(&verdict.action) {
                let slot = if verdict.observe {
                    &mut observed
                } else {
                    &mut enforced
                };
                slot.get_or_insert(verdict);
                continue;
            }
            match verdict.effect {
                Effect::NeedsTrace => set_trace_recipient(msg, &self.config, &rcpt),
                Effect::RewriteRecipient { from, to } => msg.rewrites.push(Rewrite {
                    as_sent,
                    signed: from,
                    plain: to,
                }),
                _ => {}
            }
            msg.classify = true;
            if msg.list.is_none() {
                msg.list = verdict.list;
            }
            msg.signature = msg.signature.or(verdict.bounce);
            msg.report_candidate = None;
        }
        if let Some(verdict) = enforced {
            return Some(self.conclude(msg, Stage::EndOfHeaders, verdict));
        }
        if let Some(verdict) = observed {
            let action = self.conclude(msg, Stage::EndOfHeaders, verdict);
            if !msg.needs_eom() {
                return Some(action);
            }
        }
        None
    }

    /// The trace check of a bounce whose signature did not decide: `Some`
    /// is the final answer when the returned original does not show our
    /// mail.
    fn check_trace(&mut self, msg: &mut Message) -> Option<Action> {
        let rcpt = msg.trace_recipient.take()?;
        let found = policy::trace_matches(&msg.body, &self.config.trace);
        let facts = Facts {
            sender: msg.sender.as_ref(),
            recipient: Some(&rcpt),
            trace_found: Some(found),
            ..Facts::new(Stage::EndOfMessage, &self.client, msg.today)
        };
        let verdict = policy::decide(&facts, &*self.config);
        if let (Some(b), Some(list)) = (verdict.bounce, verdict.list.as_deref()) {
            self.observed.push(Event::BounceChecked {
                list: list.to_string(),
                result: b,
            });
            if b == BounceVerdict::TraceFail {
                self.record_invalid(list);
            }
        }
        let action = self.conclude(msg, Stage::EndOfMessage, verdict);
        if refuses(&action) {
            return Some(action);
        }
        if found {
            msg.signature = Some(BounceVerdict::TraceOk);
        }
        None
    }

    /// Classifies a bounce that reached a list and records a feedback
    /// report: the tags to add, and a quarantine reason if a rule asked
    /// for one. `Err` is the final answer when a rule defers the message
    /// or the report cannot be recorded.
    fn classify_and_tag(&mut self, msg: &mut Message) -> Result<Tags, Action> {
        let (bounce, rule_action) = if msg.classify {
            self.classify(msg)
        } else {
            (Vec::new(), RuleAction::Accept)
        };
        let feedback = self.record_feedback(msg)?;
        let quarantine = match rule_action {
            RuleAction::Tempfail => {
                let reply = Reply::transient(
                    "451",
                    "4.7.1",
                    "bounce deferred by a listwarden rule; please try again later".into(),
                );
                let verdict = Verdict {
                    action: Action::Tempfail(reply),
                    list: msg.list.clone(),
                    observe: self.config.observe,
                    ..Verdict::cont()
                };
                return Err(self.conclude(msg, Stage::EndOfMessage, verdict));
            }
            RuleAction::Quarantine => {
                Some("listwarden: bounce held by a classification rule".to_string())
            }
            RuleAction::Accept => None,
        };
        Ok(Tags {
            bounce,
            feedback,
            quarantine,
        })
    }

    /// Queues a feedback-loop report for its list; its tag, if any.
    fn record_feedback(&mut self, msg: &Message) -> Result<Option<String>, Action> {
        if !msg.feedback {
            return Ok(None);
        }
        let queue_id = msg.queue_id.as_deref().unwrap_or(NO_QUEUE);
        crate::feedback::record::record(
            &mut self.observed,
            &self.config,
            &raw_message(msg),
            msg.today,
            queue_id,
        )
        // Not queued: the provider sends the report again.
        .map_err(|_| {
            Action::Tempfail(Reply::transient(
                "451",
                "4.3.0",
                "cannot record the feedback report now; please try again later".into(),
            ))
        })
    }

    /// Parses and classifies a bounce; returns its tags and the strictest
    /// action its rules ask for.
    fn classify(&mut self, msg: &Message) -> (Vec<String>, RuleAction) {
        let raw = raw_message(msg);
        let limits = dsn::Limits {
            max_bytes: raw.len(),
            max_depth: self.config.limits.max_mime_depth,
            ..dsn::Limits::default()
        };
        let report = dsn::parse(&raw, &limits);
        let mut classes = dsn::classify(&report, &self.config.rules);
        self.mark_incidents(&mut classes, msg.signed_rcpt.as_deref());
        let list = msg.list.as_deref().unwrap_or(NO_LIST);
        let signature = msg
            .signature
            .map(BounceVerdict::as_str)
            .unwrap_or("unchecked");
        let action = classes
            .iter()
            .map(|c| c.rule_action)
            .max_by_key(|a| match a {
                RuleAction::Accept => 0,
                RuleAction::Quarantine => 1,
                RuleAction::Tempfail => 2,
            });
        let tags = dsn::tag::bounce_tags(&report, &classes, list, signature);
        self.observed.push(Event::Classified {
            queue_id: msg.queue_id.clone(),
            list: list.to_string(),
            // The signed address alone: the original's Message-ID in the
            // report is the sender's text (as in `feedback::record`).
            signed: (msg.signature == Some(BounceVerdict::Valid))
                .then(|| crate::rates::mark(list, msg.signed_rcpt.as_deref().unwrap_or(list))),
            classes,
        });
        (tags, action.unwrap_or(RuleAction::Accept))
    }

    /// Feeds a checked bounce to the storm detector; during an incident of
    /// its provider and rule its failures are our fault, whatever the rule
    /// says. Only a bounce that came back to a valid signature counts, once,
    /// as its signed recipient (`signed_rcpt`): the failed addresses in the
    /// body are the sender's text, and a trace mark anyone can write, so
    /// neither can stage or feed a storm.
    fn mark_incidents(&mut self, cls: &mut [dsn::Classification], signed_rcpt: Option<&str>) {
        let (Some(settings), Some(who)) = (&self.config.incident, signed_rcpt) else {
            return;
        };
        let failed = |c: &dsn::Classification| {
            matches!(
                c.class,
                dsn::Class::Hard | dsn::Class::Soft | dsn::Class::Deferral
            ) && c.recipient.is_some()
        };
        let Some(first) = cls.iter().find(|c| failed(c)) else {
            return;
        };
        // Without a named provider, the failed address's domain stands for it.
        let provider = if first.provider == "unknown" {
            let recipient = first.recipient.as_deref().unwrap_or_default();
            let domain = recipient.rsplit_once('@').map_or("unknown", |(_, d)| d);
            listwarden_core::tag::clean(&domain.to_ascii_lowercase())
        } else {
            first.provider.clone()
        };
        let rule = first.rule.clone();
        let (up, change) = self
            .shared
            .incidents
            .record(&provider, &rule, who, settings);
        self.observed.extend(change.map(Event::Incident));
        if up {
            for c in cls
                .iter_mut()
                .take(dsn::tag::MAX_TAGS)
                .filter(|c| c.rule == rule)
            {
                if failed(c) {
                    c.fault = dsn::Fault::Us;
                    c.incident = true;
                }
            }
        }
    }

    /// The final verdict of a message nothing refused, unless a stage
    /// already counted it.
    fn count_accepted(&mut self, msg: &mut Message) {
        if msg.counted {
            return;
        }
        let reason = match msg.signature {
            Some(BounceVerdict::Valid | BounceVerdict::TraceOk) => Cause::BounceValid,
            _ if msg.sign_as.is_some() => Cause::TrustedClient,
            _ => Cause::Clean,
        };
        let verdict = Verdict {
            list: msg.list.clone(),
            bounce: msg.signature,
            ..Verdict::accept(reason)
        };
        self.observe_verdict(Stage::EndOfMessage, &verdict, Some(msg), None);
    }

    /// The changes end of message makes.
    fn plan(&mut self, msg: &mut Message, tags: Tags) -> EomPlan {
        // Highest index first, so earlier deletions do not shift later ones.
        let mut deletions: Vec<(String, i32)> = std::mem::take(&mut msg.spoofed)
            .into_iter()
            .flat_map(|(name, count)| (1..=count).rev().map(move |i| (name.clone(), i)))
            .collect();
        if !deletions.is_empty() {
            self.observed.push(Event::SpoofedHeaders {
                queue_id: msg.queue_id.clone(),
                count: deletions.len(),
            });
        }
        // A signed bounce: the list manager reads the member from the
        // recipient headers, which the bounce's sender wrote (a victim's
        // VERP address in To: would get the victim scored). Only the
        // address the signature vouches for may be there.
        let set_to = (!msg.rewrites.is_empty()).then(|| {
            for (name, count) in std::mem::take(&mut msg.recipient_headers) {
                deletions.extend((1..=count).rev().map(|i| (name.clone(), i)));
            }
            let mut plain: Vec<String> = Vec::new();
            for r in &msg.rewrites {
                let p = r.plain.to_string();
                if !plain.contains(&p) {
                    plain.push(p);
                }
            }
            plain.join(", ")
        });
        let mut add_headers = Vec::new();
        if let (Some(c), Some(keys)) = (msg.one_click.take(), self.config.signing.as_ref())
            && let Some(r) = crate::unsubscribe::rewrite(
                &self.config,
                &c,
                msg.recipients,
                msg.first_rcpt.as_ref(),
                keys,
                msg.today,
            )
        {
            deletions.extend(r.delete);
            add_headers = r.add;
        }
        if let Some(signed) = &msg.sign_as {
            self.observed.push(Event::Signing {
                queue_id: msg.queue_id.clone(),
                list: msg.list.clone(),
                sender: signed.clone(),
            });
        }
        EomPlan {
            delete_headers: deletions,
            sign_as: msg.sign_as.clone(),
            rewrite_recipients: std::mem::take(&mut msg.rewrites),
            set_to,
            list: msg.list.clone(),
            tags: tags.bounce,
            quarantine: tags.quarantine,
            feedback_tag: tags.feedback,
            add_headers,
        }
    }

    /// A message-level verdict: recorded once per message, then answered.
    /// A refusal ends the message (the caller drops it); observe mode
    /// answers what lets the message go on.
    fn conclude(&mut self, msg: &mut Message, stage: Stage, verdict: Verdict) -> Action {
        if verdict.action == Action::Continue {
            return Action::Continue;
        }
        if !msg.counted {
            self.observe_verdict(stage, &verdict, Some(msg), None);
        }
        if verdict.observe {
            // Observe changes the verdict, never the hygiene: a message whose
            // end still has work (tags to remove, a trace check, signing)
            // goes on to it.
            return match stage {
                Stage::EndOfHeaders if msg.needs_eom() => Action::Continue,
                Stage::EndOfHeaders | Stage::EndOfMessage => Action::Accept,
                _ => Action::Continue,
            };
        }
        verdict.action
    }

    /// Queues a verdict for the recorder (one log line, one count); the
    /// message then counts as counted.
    fn observe_verdict(
        &mut self,
        stage: Stage,
        verdict: &Verdict,
        msg: Option<&mut Message>,
        rcpt: Option<&Address>,
    ) {
        let (queue_id, sender) = match msg {
            Some(m) => {
                m.counted = true;
                // An accepted post to a list's own address: the flow alarms
                // watch these per list.
                if verdict.action == Action::Accept
                    && let Some(list) = m.posted_to.take()
                {
                    self.observed.push(Event::Inbound { list });
                }
                (m.queue_id.clone(), m.sender.clone())
            }
            None => (None, None),
        };
        self.observed.push(Event::Verdict {
            stage,
            verdict: verdict.clone(),
            queue_id,
            sender,
            client: self.client.ip,
            rcpt: rcpt.cloned(),
        });
    }
}

/// The kept headers and body as one message, for the parsers.
fn raw_message(msg: &Message) -> Vec<u8> {
    let mut raw = Vec::with_capacity(msg.header_bytes + msg.body.len() + 64);
    for (name, value) in &msg.headers {
        raw.extend_from_slice(name.as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(value.as_bytes());
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(&msg.body);
    raw
}

/// A MIME header value as a MIME parser reads its tokens: comments
/// (nested, with quoted-pairs) and whitespace (folding included) gone,
/// ASCII lower case. `Multipart/\r\n (x) Report` is `multipart/report`.
fn compact_mime_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(MAX_CONTENT_TYPE));
    let mut depth = 0usize;
    let mut quoted = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if depth > 0 => {
                chars.next();
            }
            '"' if depth == 0 => quoted = !quoted,
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    out.push(next.to_ascii_lowercase());
                }
            }
            _ if quoted => out.push(c.to_ascii_lowercase()),
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth > 0 || c.is_whitespace() => {}
            c => out.push(c.to_ascii_lowercase()),
        }
    }
    out
}

/// Records the bounce recipient whose list decides the trace check: the
/// first one, unless a later one is enforced where it is only observed
/// (an observed list must not carry a failed trace to an enforced one).
fn set_trace_recipient(msg: &mut Message, config: &Config, rcpt: &Address) {
    let observed =
        |r: &Address| config.observe || config.protected(r).is_some_and(|p| p.owner.observe());
    if msg
        .trace_recipient
        .as_ref()
        .is_none_or(|old| observed(old) && !observed(rcpt))
    {
        msg.trace_recipient = Some(rcpt.clone());
    }
}

/// An envelope address as Postfix reads it: its macro when Postfix sent
/// one, else the raw argument read the way Postfix's parser reads it.
fn read_envelope(raw: &str, macro_value: Option<&str>) -> Result<Option<Address>, AddressError> {
    match macro_value {
        Some(m) => parse_macro_addr(m),
        None => parse_path(raw),
    }
}

fn nonempty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_values_are_read_as_mime_parsers_read_them() {
        for (value, want) in [
            ("Multipart/\r\n Report; x=y", "multipart/report;x=y"),
            (
                "multipart/(a (nested) \\) comment)report",
                "multipart/report",
            ),
            (
                "multipart/report; boundary=\"((\"; report-type=feedback-report",
                "multipart/report;boundary=((;report-type=feedback-report",
            ),
            ("multipart/report (unclosed", "multipart/report"),
        ] {
            assert_eq!(compact_mime_value(value), want, "{value:?}");
        }
    }
}
