//! Per-connection state and the handling of each milter stage. Methods
//! here are synchronous and free of protocol details: they turn what
//! Postfix sent into policy facts, and a verdict into a [`Step`] (or an
//! [`EomPlan`]) that the callbacks translate back. State lives in the
//! indymilter context, never in a global map.

use crate::Shared;
use crate::address::{Address, AddressError, parse_macro_addr, parse_path, visit_mailboxes};
use crate::config::{Config, OnError};
use crate::dsn::{self, RuleAction};
use crate::policy::{
    self, Action, BounceVerdict, Budget, Client, Effect, Facts, Reason, Reply, Stage, Verdict,
};
use crate::ratelimit::Quota;
use crate::shield::Change;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Header names we remove from inbound mail so that nobody can forge our tags.
pub const OWN_HEADER_PREFIX: &str = "x-listwarden-";

/// Most distinct inbound `X-Listwarden-*` header names tracked for removal;
/// a message with more is refused.
const MAX_SPOOFED_NAMES: usize = 64;
/// Most inbound `X-Listwarden-*` headers removed one by one. Each removal is
/// one milter action, and Postfix's cleanup slows down faster than
/// quadratically with many of them; no real message carries more than a
/// few, so one with more is refused as forged.
const MAX_SPOOFED_HEADERS: i32 = 16;
/// Most `From:` mailboxes kept per message: protected ones (what the check
/// needs), and others for context.
const MAX_FROM_KEPT: usize = 64;
/// `To:` headers rewritten per message (a DSN has one).
const MAX_TO_REWRITES: usize = 8;
const MAX_FROM_CONTEXT: usize = 8;
/// Bytes of `Content-Type:` text kept for the report checks.
const MAX_CONTENT_TYPE: usize = 4096;

/// What the callback layer should answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Continue,
    Accept,
    /// Stop sending this stage (body): nothing more is needed from it.
    Skip,
    Reject(Reply),
    Tempfail(Reply),
}

/// The first half of RCPT handling.
#[derive(Debug)]
pub enum RcptBegin {
    /// Decided; nothing to charge.
    Done(Step),
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
pub struct Rewrite {
    /// The recipient as the client wrote it: Postfix's cleanup deletes a
    /// recipient by exact comparison with that form (case included), not
    /// with its own canonical reading (`{rcpt_addr}` is lowercased).
    pub as_sent: String,
    pub signed: Address,
    pub plain: Address,
}

/// What to do at end of message.
#[derive(Debug, Default)]
pub struct EomPlan {
    /// A final answer instead of the actions (a failed trace check).
    pub refuse: Option<Step>,
    /// Inbound `X-Listwarden-*` headers to delete: (name, index), highest
    /// index first so earlier deletions do not shift later ones.
    pub delete_headers: Vec<(String, i32)>,
    /// The signed envelope sender for outbound list mail.
    pub sign_as: Option<Address>,
    /// Tagged bounce recipients to replace by their plain address.
    pub rewrite_recipients: Vec<Rewrite>,
    /// `To:` headers that named a signed recipient: (index among the
    /// `To:` headers, value with the plain address).
    pub restore_to: Vec<(i32, String)>,
    /// The list concerned, for metrics.
    pub list: Option<String>,
    /// `X-Listwarden-Bounce` values to add.
    pub tags: Vec<String>,
    /// Hold the message (a classification rule asked for quarantine).
    pub quarantine: Option<String>,
    /// The `X-Listwarden-Feedback` value of a feedback-loop report.
    pub feedback_tag: Option<String>,
}

/// One milter connection (one SMTP session in Postfix).
pub struct Session {
    shared: Arc<Shared>,
    /// Config snapshot for the current message; refreshed at each MAIL so a
    /// reload applies to the next message, never to one in flight.
    config: Arc<Config>,
    client: Client,
    /// Whether Postfix agreed not to wait for replies to headers.
    pub header_noreply: bool,
    /// Whether Postfix accepts a Skip reply to body chunks.
    pub skip_ok: bool,
    msg: Option<Message>,
    /// A failure in a stage that cannot answer (headers under NOREPLY),
    /// to be given at end of headers.
    pending_failure: Option<Step>,
    /// The test-only fault planned by the current message's sender.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fault: Option<super::fault::Fault>,
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
    /// `To:` headers seen, and the new values of those that named a
    /// rewritten (signed) recipient: (index, value).
    to_headers: i32,
    restore_to: Vec<(i32, String)>,
    /// The bounce recipient whose returned original must show our mail.
    trace_recipient: Option<Address>,
    /// The first `max_body_bytes` of the body, kept only for a trace check
    /// or classification.
    body: Vec<u8>,
    /// A bounce that reached a list: classify and tag it at end of message.
    classify: bool,
    /// What its signature check found (valid, trace_ok), for the tag.
    signature: Option<BounceVerdict>,
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

fn today() -> u64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    policy::day_of(secs)
}

impl Session {
    pub fn new(shared: Arc<Shared>) -> Session {
        shared.metrics.connections_active.inc();
        let config = shared.config.load_full();
        Session {
            shared,
            config,
            client: Client::default(),
            header_noreply: false,
            skip_ok: false,
            msg: None,
            pending_failure: None,
            #[cfg(any(test, feature = "fault-injection"))]
            fault: None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    pub fn connect(&mut self, ip: Option<std::net::IpAddr>) {
        self.client = Client {
            ip: ip.map(|ip| ip.to_canonical()),
            authenticated_as: None,
        };
    }

    /// MAIL FROM: a new message begins. `sender_macro` is Postfix's own
    /// reading of the argument (`{mail_addr}`), preferred when present.
    pub fn mail(
        &mut self,
        sender_arg: &str,
        sender_macro: Option<&str>,
        auth: Option<&str>,
        queue_id: Option<&str>,
    ) -> Step {
        self.config = self.shared.config.load_full();
        self.pending_failure = None;
        self.client.authenticated_as = auth.filter(|a| !a.is_empty()).map(str::to_string);
        let sender = match read_envelope(sender_arg, sender_macro) {
            Ok(s) => s,
            Err(e) => {
                // Never taken for the null sender. One that may name a list
                // domain fails closed; any other is simply not a list's.
                tracing::debug!("unreadable sender {sender_arg:?}: {e}");
                self.msg = None;
                if self.config.mentions_protected_domain(sender_arg) {
                    return self.unreadable(Stage::Mail, "sender");
                }
                Some(Address::unreadable())
            }
        };
        let msg = self.msg.insert(Message {
            sender,
            queue_id: nonempty(queue_id),
            today: today(),
            ..Message::default()
        });
        let facts = Facts {
            sender: msg.sender.as_ref(),
            ..Facts::new(Stage::Mail, &self.client, msg.today)
        };
        let verdict = policy::decide(&facts, &self.config);
        if let Effect::SignSender(signed) = &verdict.effect {
            msg.sign_as = Some(signed.clone());
            msg.list = verdict.list.clone();
        }
        self.apply(Stage::Mail, verdict)
    }

    /// A 451 for an address listwarden cannot read but that may name a
    /// protected domain: Postfix may read it as a list address.
    fn unreadable(&mut self, stage: Stage, what: &str) -> Step {
        let reply = Reply::transient(
            "451",
            "4.1.7",
            format!("cannot read the {what} address; please write it plainly"),
        );
        let verdict = Verdict {
            action: Action::Tempfail(reply),
            reason: Reason::UnreadableAddress,
            ..Verdict::cont()
        };
        self.log(stage, &verdict, None);
        self.count(&verdict);
        to_step(verdict.action)
    }

    /// RCPT TO, first half: the policy verdict, with the budgets it
    /// charges. Bounces to a list are checked here, before any data.
    /// `rcpt_macro` is Postfix's own reading (`{rcpt_addr}`).
    pub fn rcpt_begin(&mut self, rcpt_arg: &str, rcpt_macro: Option<&str>) -> RcptBegin {
        let privileged = policy::is_privileged(&self.client, &self.config);
        // Bounce checks are skipped for the list server's networks only
        // (see `policy::is_trusted_network`), not for any SASL login.
        let trusted = policy::is_trusted_network(&self.client, &self.config);
        let max = self.config.limits.max_recipients;
        let Some(msg) = self.msg.as_mut() else {
            return RcptBegin::Done(Step::Continue);
        };
        msg.recipients += 1;
        if msg.recipients > max && !privileged {
            let reply = Reply::transient(
                "452",
                "4.5.3",
                format!("too many recipients (at most {max} a message)"),
            );
            // Logged and counted once per message, not per excess recipient.
            if msg.recipients == max + 1 {
                return RcptBegin::Done(self.refuse_recipient(Reason::TooManyRecipients, reply));
            }
            return RcptBegin::Done(Step::Tempfail(reply));
        }
        let rcpt = match read_envelope(rcpt_arg, rcpt_macro) {
            Ok(Some(rcpt)) => rcpt,
            Ok(None) => return RcptBegin::Done(Step::Continue),
            Err(_) if !trusted && self.config.mentions_protected_domain(rcpt_arg) => {
                return RcptBegin::Done(self.unreadable(Stage::Rcpt, "recipient"));
            }
            Err(_) => return RcptBegin::Done(Step::Continue),
        };
        if crate::feedback::is_report_address(&rcpt, &self.config) {
            msg.feedback = true;
            return RcptBegin::Done(Step::Continue);
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
            report_shield_changes(&self.shared, changes);
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
        let verdict = policy::decide(&facts, &self.config);
        if verdict.list.is_none() && verdict.charges.is_empty() {
            // Not a bounce to a list: nothing to count or check. Feedback
            // reports come from ordinary senders, though.
            if !trusted && msg.report_candidate.is_none() {
                msg.report_candidate = policy::report_target(&rcpt, &self.config, msg.today);
            }
            if let Some(v) = policy::as_report(&facts, &self.config) {
                msg.report_as_bounce.push((rcpt, rcpt_arg.to_string(), v));
            }
            return RcptBegin::Done(Step::Continue);
        }
        RcptBegin::Check {
            rcpt,
            as_sent: rcpt_arg.to_string(),
            verdict: Box::new(verdict),
        }
    }

    /// The quota of a budget in the current config.
    pub fn quota(&self, budget: Budget) -> Option<Quota> {
        let r = &self.config.ratelimit;
        match budget {
            Budget::Network => r.network,
            Budget::ListValid => r.list_valid,
            Budget::ListInvalid => r.list_invalid,
            Budget::Address => r.address,
        }
    }

    /// RCPT TO, second half: the budgets' answer applied. `exhausted` is
    /// the first budget that said no.
    pub fn rcpt_finish(
        &mut self,
        rcpt: Address,
        as_sent: String,
        verdict: Verdict,
        exhausted: Option<Budget>,
    ) -> Step {
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
        if self.msg.is_none() {
            return Step::Continue;
        }
        if let Some(list) = verdict.list.as_deref() {
            if let Some(b) = verdict.bounce {
                self.shared
                    .metrics
                    .bounces
                    .with_label_values(&[list, b.as_str()])
                    .inc();
            }
            let invalid = matches!(
                verdict.bounce,
                Some(BounceVerdict::Invalid | BounceVerdict::Expired | BounceVerdict::Unsigned)
            );
            if invalid {
                self.record_invalid(list);
            }
        }
        let refused = matches!(verdict.action, Action::Reject(_) | Action::Tempfail(_));
        if !refused || verdict.observe {
            let msg = match self.msg.as_mut() {
                Some(m) => m,
                None => return Step::Continue,
            };
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
            }
        }
        if refused {
            // A refused recipient ends nothing else: the message goes on
            // for its other recipients.
            self.log(Stage::Rcpt, &verdict, Some(&rcpt));
            self.count(&verdict);
            if verdict.observe {
                return Step::Continue;
            }
            return to_step(verdict.action);
        }
        Step::Continue
    }

    /// Counts an invalid bounce toward the list's shield, by its source
    /// network: one client alone cannot raise it.
    fn record_invalid(&self, list: &str) {
        let Some(shield) = &self.config.shield else {
            return;
        };
        let source = self
            .client
            .ip
            .map(|ip| policy::network_key(ip, &self.config))
            .unwrap_or_else(|| "unknown".into());
        let change = self.shared.shields.record_invalid(list, &source, shield);
        report_shield_changes(&self.shared, change.into_iter().collect());
    }

    fn refuse_recipient(&mut self, reason: Reason, reply: Reply) -> Step {
        let verdict = Verdict {
            action: Action::Tempfail(reply),
            reason,
            ..Verdict::cont()
        };
        self.log(Stage::Rcpt, &verdict, None);
        self.count(&verdict);
        to_step(verdict.action)
    }

    /// One header; only the ones the policy needs are kept, bounded.
    pub fn header(&mut self, name: &str, value: &str) {
        let max = self.config.limits.max_header_bytes;
        let Some(msg) = self.msg.as_mut() else { return };
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
        } else if name.eq_ignore_ascii_case("to") {
            // A DSN names the signed address in To: as well; list managers
            // that read the VERP member from there (Sympa) need the plain one.
            msg.to_headers = msg.to_headers.saturating_add(1);
            if !msg.rewrites.is_empty()
                && msg.restore_to.len() < MAX_TO_REWRITES
                && let Some(value) = restore_addresses(value, &msg.rewrites)
            {
                msg.restore_to.push((msg.to_headers, value));
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
                            && !p.may_send(client, config)
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

    /// End of headers: the `From:` check.
    pub fn end_of_headers(&mut self, queue_id: Option<&str>) -> Step {
        if let Some(step) = self.pending_failure.take() {
            return step;
        }
        let Some(msg) = self.msg.as_mut() else {
            return Step::Continue;
        };
        if let Some(q) = nonempty(queue_id) {
            msg.queue_id = Some(q);
        }
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
                reason: Reason::ForgedTags,
                ..Verdict::cont()
            };
            return self.apply(Stage::EndOfHeaders, verdict);
        }
        let content_type = std::mem::take(&mut msg.content_type);
        let reports = std::mem::take(&mut msg.report_as_bounce);
        if !reports.is_empty() && content_type.contains("multipart/report") {
            // A report to addresses that also take people's mail: the
            // bounce checks apply after all (no budgets at this stage),
            // for every such recipient; an enforced refusal wins.
            let refused = |v: &Verdict| matches!(v.action, Action::Reject(_) | Action::Tempfail(_));
            let mut observed = None;
            let mut enforced = None;
            for (rcpt, as_sent, verdict) in reports {
                if refused(&verdict) {
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
                return self.apply(Stage::EndOfHeaders, verdict);
            }
            if let Some(verdict) = observed {
                let step = self.apply(Stage::EndOfHeaders, verdict);
                if !self.msg.as_ref().is_some_and(Message::needs_eom) {
                    return step;
                }
            }
        }
        let Some(msg) = self.msg.as_mut() else {
            return Step::Continue;
        };
        if let Some((list, signature)) = msg.report_candidate.take()
            && content_type.contains("feedback-report")
        {
            msg.classify = true;
            msg.list = Some(list);
            msg.signature = signature;
        }
        let msg = &*msg;
        let facts = Facts {
            sender: msg.sender.as_ref(),
            from: &msg.from,
            ..Facts::new(Stage::EndOfHeaders, &self.client, msg.today)
        };
        let verdict = policy::decide(&facts, &self.config);
        if verdict.action == Action::Accept && msg.needs_eom() {
            // Signing, tag removal, trace checks and tagging happen at end
            // of message; the final verdict is logged there.
            return Step::Continue;
        }
        self.apply(Stage::EndOfHeaders, verdict)
    }

    /// A body chunk: kept (bounded) only for a trace check.
    pub fn body(&mut self, chunk: &[u8]) -> Step {
        let max = self.config.limits.max_body_bytes;
        let Some(msg) = self.msg.as_mut() else {
            return Step::Skip;
        };
        if (msg.trace_recipient.is_none() && !msg.classify && !msg.feedback)
            || msg.body.len() >= max
        {
            return Step::Skip;
        }
        let take = chunk.len().min(max - msg.body.len());
        msg.body.extend_from_slice(&chunk[..take]);
        if msg.body.len() >= max {
            Step::Skip
        } else {
            Step::Continue
        }
    }

    /// End of message: the trace check, then the changes to make.
    pub fn end_of_message(&mut self, queue_id: Option<&str>) -> EomPlan {
        let Some(mut msg) = self.msg.take() else {
            return EomPlan::default();
        };
        if let Some(q) = nonempty(queue_id) {
            msg.queue_id = Some(q);
        }
        if let Some(rcpt) = msg.trace_recipient.take() {
            let found = policy::trace_matches(&msg.body, &self.config.trace);
            let facts = Facts {
                sender: msg.sender.as_ref(),
                recipient: Some(&rcpt),
                trace_found: Some(found),
                ..Facts::new(Stage::EndOfMessage, &self.client, msg.today)
            };
            let verdict = policy::decide(&facts, &self.config);
            if let (Some(b), Some(list)) = (verdict.bounce, verdict.list.as_deref()) {
                self.shared
                    .metrics
                    .bounces
                    .with_label_values(&[list, b.as_str()])
                    .inc();
                if b == BounceVerdict::TraceFail {
                    self.record_invalid(list);
                }
            }
            // `apply` logs with the message's context and drops it on a refusal.
            self.msg = Some(msg);
            let step = self.apply(Stage::EndOfMessage, verdict);
            if matches!(step, Step::Reject(_) | Step::Tempfail(_)) {
                return EomPlan {
                    refuse: Some(step),
                    ..EomPlan::default()
                };
            }
            msg = self.msg.take().unwrap_or_default();
            if found {
                msg.signature = Some(BounceVerdict::TraceOk);
            }
        }
        let (tags, rule_action) = if msg.classify {
            self.classify(&msg)
        } else {
            (Vec::new(), RuleAction::Accept)
        };
        let mut feedback_tag = None;
        if msg.feedback {
            let queue_id = msg.queue_id.as_deref().unwrap_or("NOQUEUE");
            match crate::feedback::record::record(
                &self.shared,
                &self.config,
                &raw_message(&msg),
                msg.today,
                queue_id,
            ) {
                Ok(tag) => feedback_tag = tag,
                // Not queued: the provider sends the report again.
                Err(_) => {
                    return EomPlan {
                        refuse: Some(Step::Tempfail(Reply::transient(
                            "451",
                            "4.3.0",
                            "cannot record the feedback report now; please try again later".into(),
                        ))),
                        ..EomPlan::default()
                    };
                }
            }
        }
        let mut quarantine = None;
        match rule_action {
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
                self.msg = Some(msg);
                let step = self.apply(Stage::EndOfMessage, verdict);
                self.msg = None;
                return EomPlan {
                    refuse: Some(step),
                    ..EomPlan::default()
                };
            }
            RuleAction::Quarantine => {
                quarantine = Some("listwarden: bounce held by a classification rule".to_string())
            }
            RuleAction::Accept => {}
        }
        // Highest index first, so earlier deletions do not shift later ones.
        let deletions: Vec<(String, i32)> = std::mem::take(&mut msg.spoofed)
            .into_iter()
            .flat_map(|(name, count)| (1..=count).rev().map(move |i| (name.clone(), i)))
            .collect();
        let queue_id = msg.queue_id.as_deref().unwrap_or("NOQUEUE");
        if !deletions.is_empty() {
            tracing::info!(
                queue_id,
                count = deletions.len(),
                "removing inbound X-Listwarden-* headers"
            );
            self.shared
                .metrics
                .spoofed_headers_removed
                .inc_by(deletions.len() as u64);
        }
        if let Some(signed) = &msg.sign_as {
            tracing::info!(queue_id, list = msg.list.as_deref().unwrap_or("-"), sender = %signed, "signing envelope sender");
        }
        if !msg.counted {
            let reason = match msg.signature {
                Some(BounceVerdict::Valid | BounceVerdict::TraceOk) => Reason::BounceValid,
                _ if msg.sign_as.is_some() => Reason::TrustedClient,
                _ => Reason::Clean,
            };
            let verdict = Verdict {
                list: msg.list.clone(),
                bounce: msg.signature,
                ..Verdict::accept(reason)
            };
            self.msg = Some(msg);
            self.log(Stage::EndOfMessage, &verdict, None);
            self.count(&verdict);
            msg = self.msg.take().unwrap_or_default();
        }
        EomPlan {
            refuse: None,
            delete_headers: deletions,
            sign_as: msg.sign_as.take(),
            rewrite_recipients: std::mem::take(&mut msg.rewrites),
            restore_to: std::mem::take(&mut msg.restore_to),
            list: msg.list.take(),
            tags,
            quarantine,
            feedback_tag,
        }
    }

    /// Parses and classifies a bounce; returns its tags and the strictest
    /// action its rules ask for.
    fn classify(&self, msg: &Message) -> (Vec<String>, RuleAction) {
        let raw = raw_message(msg);
        let limits = dsn::Limits {
            max_bytes: raw.len(),
            max_depth: self.config.limits.max_mime_depth,
            ..dsn::Limits::default()
        };
        let report = dsn::parse(&raw, &limits);
        let mut cls = dsn::classify(&report, &self.config.rules);
        self.mark_incidents(&mut cls, msg.signature);
        let list = msg.list.as_deref().unwrap_or("-");
        let signature = msg
            .signature
            .map(BounceVerdict::as_str)
            .unwrap_or("unchecked");
        // Anyone can send a feedback report: only one that came back to a
        // validly signed address moves the complaint rate that alerts read;
        // the others are counted under their own class.
        let signed = msg.signature == Some(BounceVerdict::Valid);
        for c in &cls {
            let arf_complaint = c.feedback_type.is_some() && c.class == dsn::Class::Complaint;
            let class = if arf_complaint && !signed {
                "complaint_unsigned"
            } else {
                c.class.as_str()
            };
            self.shared
                .metrics
                .bounces_classified
                .with_label_values(&[
                    list,
                    class,
                    c.reason.as_str(),
                    &c.provider,
                    c.fault.as_str(),
                ])
                .inc();
            if arf_complaint && signed {
                self.shared
                    .rates
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .complaint(list, crate::unix_now());
            }
        }
        let queue_id = msg.queue_id.as_deref().unwrap_or("NOQUEUE");
        for c in cls.iter().take(dsn::tag::MAX_TAGS) {
            tracing::info!(
                queue_id,
                list,
                class = c.class.as_str(),
                reason = c.reason.as_str(),
                provider = %c.provider,
                rule = %c.rule,
                fault = c.fault.as_str(),
                incident = c.incident,
                status = c.status.as_deref().unwrap_or("-"),
                "bounce classified"
            );
        }
        let action = cls.iter().map(|c| c.rule_action).max_by_key(|a| match a {
            RuleAction::Accept => 0,
            RuleAction::Quarantine => 1,
            RuleAction::Tempfail => 2,
        });
        (
            dsn::tag::bounce_tags(&report, &cls, list, signature),
            action.unwrap_or(RuleAction::Accept),
        )
    }

    /// Feeds the failures of a checked bounce to the storm detector; during
    /// an incident of their provider and rule they are our fault, whatever
    /// the rule says. Only bounces that came back to our own signed or
    /// traced mail count, so outsiders cannot stage a storm.
    fn mark_incidents(&self, cls: &mut [dsn::Classification], signature: Option<BounceVerdict>) {
        let Some(settings) = &self.config.incident else {
            return;
        };
        if !matches!(
            signature,
            Some(BounceVerdict::Valid | BounceVerdict::TraceOk)
        ) {
            return;
        }
        for c in cls.iter_mut().take(dsn::tag::MAX_TAGS) {
            if !matches!(
                c.class,
                dsn::Class::Hard | dsn::Class::Soft | dsn::Class::Deferral
            ) {
                continue;
            }
            let Some(recipient) = c.recipient.as_deref() else {
                continue;
            };
            // Without a named provider, the recipient's domain is the provider.
            let provider = if c.provider == "unknown" {
                let domain = recipient.rsplit_once('@').map_or("unknown", |(_, d)| d);
                listwarden_core::tag::clean(&domain.to_ascii_lowercase())
            } else {
                c.provider.clone()
            };
            let (up, change) = self
                .shared
                .incidents
                .record(&provider, &c.rule, recipient, settings);
            if up {
                c.fault = dsn::Fault::Us;
                c.incident = true;
            }
            report_incident_changes(&self.shared, change.into_iter().collect());
        }
    }

    /// Counts a signed outbound message (after Postfix took the change).
    pub fn signed(&self, list: Option<&str>) {
        self.shared
            .metrics
            .signed
            .with_label_values(&[list.unwrap_or("-")])
            .inc();
    }

    /// Forgets the message in progress (abort, or after a final verdict).
    pub fn reset(&mut self) {
        self.msg = None;
        self.pending_failure = None;
    }

    /// The answer to an internal error (a panic in a handler).
    pub fn internal_error(&mut self, stage: &str) -> Step {
        // A message whose headers already failed is counted and logged once.
        if stage == "header"
            && let Some(step) = &self.pending_failure
        {
            return step.clone();
        }
        let queue_id = self.msg.as_ref().and_then(|m| m.queue_id.clone());
        let action = self.config.on_error;
        tracing::error!(
            queue_id = queue_id.as_deref().unwrap_or("NOQUEUE"),
            stage,
            "internal error while handling the message; answering {action:?}"
        );
        let verdict = Verdict {
            action: match action {
                OnError::Tempfail => Action::Tempfail(Reply::transient(
                    "451",
                    "4.3.0",
                    "listwarden: temporary local problem, please try again later".into(),
                )),
                OnError::Accept => Action::Accept,
            },
            reason: Reason::InternalError,
            ..Verdict::cont()
        };
        self.count(&verdict);
        self.msg = None;
        let step = to_step(verdict.action);
        if stage == "header" {
            self.pending_failure = Some(step.clone());
        }
        step
    }

    /// Records how long one stage took.
    pub fn observe_time(&self, stage: &str, started: std::time::Instant) {
        self.shared
            .metrics
            .observe_stage(stage, started.elapsed().as_secs_f64());
    }

    /// Logs, counts and translates a message-level verdict.
    fn apply(&mut self, stage: Stage, verdict: Verdict) -> Step {
        if verdict.action == Action::Continue {
            return Step::Continue;
        }
        let counted = self.msg.as_ref().is_some_and(|m| m.counted);
        if !counted {
            self.log(stage, &verdict, None);
            self.count(&verdict);
        }
        if verdict.observe {
            // Observe changes the verdict, never the hygiene: a message whose
            // end still has work (tags to remove, a trace check, signing)
            // goes on to it.
            let needs_eom = self.msg.as_ref().is_some_and(Message::needs_eom);
            return match stage {
                Stage::Mail | Stage::Rcpt => Step::Continue,
                Stage::EndOfHeaders if needs_eom => Step::Continue,
                Stage::EndOfHeaders | Stage::EndOfMessage => Step::Accept,
            };
        }
        if !matches!(verdict.action, Action::Accept) {
            self.msg = None;
        }
        to_step(verdict.action)
    }

    fn count(&mut self, verdict: &Verdict) {
        self.shared
            .metrics
            .messages
            .with_label_values(&[verdict.label(), verdict.reason.as_str()])
            .inc();
        if let Some(m) = self.msg.as_mut() {
            m.counted = true;
            if verdict.action == Action::Accept
                && let Some(list) = m.posted_to.take()
            {
                let metrics = &self.shared.metrics;
                metrics.list_inbound.with_label_values(&[&list]).inc();
                metrics
                    .list_inbound_last
                    .with_label_values(&[&list])
                    .set(crate::unix_now() as f64);
            }
        }
    }

    fn log(&self, stage: Stage, verdict: &Verdict, rcpt: Option<&Address>) {
        let msg = self.msg.as_ref();
        let queue_id = msg.and_then(|m| m.queue_id.as_deref()).unwrap_or("NOQUEUE");
        let sender = msg
            .and_then(|m| m.sender.as_ref())
            .map(|a| a.to_string())
            .unwrap_or_default();
        let client = self
            .client
            .ip
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "unknown".into());
        let reply = match &verdict.action {
            Action::Reject(r) | Action::Tempfail(r) => r.to_string(),
            _ => String::new(),
        };
        tracing::info!(
            queue_id,
            stage = stage.as_str(),
            verdict = verdict.label(),
            reason = verdict.reason.as_str(),
            list = verdict.list.as_deref().unwrap_or("-"),
            bounce = verdict.bounce.map(BounceVerdict::as_str).unwrap_or("-"),
            client,
            sender = format!("<{sender}>"),
            rcpt = rcpt.map(|r| format!("<{r}>")).unwrap_or_default(),
            reply,
            "verdict"
        );
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.metrics.connections_active.dec();
    }
}

/// Logs and exports shield changes.
pub fn report_shield_changes(shared: &Shared, changes: Vec<Change>) {
    for change in changes {
        match change {
            Change::Raised(list) => {
                tracing::warn!(
                    list,
                    "shield raised: too many invalid bounces; only signed bounces get in"
                );
                shared
                    .metrics
                    .shield_active
                    .with_label_values(&[&list])
                    .set(1);
            }
            Change::Lowered(list) => {
                tracing::info!(list, "shield lowered");
                shared
                    .metrics
                    .shield_active
                    .with_label_values(&[&list])
                    .set(0);
            }
        }
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

/// Logs a bounce incident once when it starts and once when it ends, and
/// keeps its gauge (the series goes when the incident ends, so labels stay
/// bounded by the incidents in progress).
pub fn report_incident_changes(shared: &Shared, changes: Vec<crate::incident::Change>) {
    use crate::incident::Change;
    for change in changes {
        match change {
            Change::Raised((provider, rule)) => {
                tracing::warn!(
                    provider,
                    rule,
                    "bounce incident: many members at one provider fail with one rule; their bounces are tagged fault=us incident=1 and not scored"
                );
                shared
                    .metrics
                    .bounce_incident
                    .with_label_values(&[&provider, &rule])
                    .set(1);
            }
            Change::Lowered((provider, rule)) => {
                tracing::info!(provider, rule, "bounce incident over");
                let _ = shared
                    .metrics
                    .bounce_incident
                    .remove_label_values(&[&provider, &rule]);
            }
        }
    }
}

fn to_step(action: Action) -> Step {
    match action {
        Action::Continue => Step::Continue,
        Action::Accept => Step::Accept,
        Action::Reject(r) => Step::Reject(r),
        Action::Tempfail(r) => Step::Tempfail(r),
    }
}

/// `value` with every signed address of `rewrites` (in any case) replaced
/// by its plain form; `None` when it names none of them. Linear in the
/// value for each of at most [`MAX_TO_REWRITES`] distinct addresses.
fn restore_addresses(value: &str, rewrites: &[Rewrite]) -> Option<String> {
    // Unfolded: a header we change never carries a line break of its own.
    let value = value.replace(['\r', '\n'], "");
    let value = value.as_str();
    let lower = value.to_ascii_lowercase();
    let mut needles: Vec<(String, String)> = Vec::new();
    for Rewrite { signed, plain, .. } in rewrites {
        let needle = signed.to_string().to_ascii_lowercase();
        if needles.len() < MAX_TO_REWRITES && !needles.iter().any(|(n, _)| *n == needle) {
            needles.push((needle, plain.to_string()));
        }
    }
    // ASCII lowercasing keeps byte offsets, so matches in `lower` are
    // ranges of `value` on character boundaries.
    let mut hits: Vec<(usize, usize, &str)> = needles
        .iter()
        .flat_map(|(needle, plain)| {
            lower
                .match_indices(needle.as_str())
                .map(|(at, m)| (at, at + m.len(), plain.as_str()))
        })
        .collect();
    if hits.is_empty() {
        return None;
    }
    hits.sort_unstable_by_key(|h| h.0);
    let mut out = String::with_capacity(value.len());
    let mut done = 0;
    for (start, end, plain) in hits {
        if start < done {
            continue;
        }
        out.push_str(value.get(done..start)?);
        out.push_str(plain);
        done = end;
    }
    out.push_str(value.get(done..)?);
    Some(out)
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

    #[test]
    fn restore_addresses_replaces_every_signed_address_in_any_case() {
        let a = |s: &str| Address::parse(s).unwrap();
        let rewrite = || Rewrite {
            as_sent: "<prvs=1234abcdef=list-owner@lists.example.org>".into(),
            signed: a("prvs=1234abcdef=list-owner@lists.example.org"),
            plain: a("list-owner@lists.example.org"),
        };
        let rewrites = vec![rewrite(), rewrite()];
        let table = [
            (
                "PRVS=1234ABCDEF=List-Owner@Lists.Example.Org",
                Some("list-owner@lists.example.org"),
            ),
            (
                "\"x\" <prvs=1234abcdef=list-owner@lists.example.org>, prvs=1234abcdef=list-owner@lists.example.org",
                Some("\"x\" <list-owner@lists.example.org>, list-owner@lists.example.org"),
            ),
            ("list-owner@lists.example.org", None),
            ("prvs=1234abcdee=list-owner@lists.example.org", None),
            (
                "a@example.net,\r\n\tprvs=1234abcdef=list-owner@lists.example.org",
                Some("a@example.net,\tlist-owner@lists.example.org"),
            ),
            (
                "é <prvs=1234abcdef=list-owner@lists.example.org> ü",
                Some("é <list-owner@lists.example.org> ü"),
            ),
        ];
        for (value, want) in table {
            assert_eq!(
                restore_addresses(value, &rewrites).as_deref(),
                want,
                "{value}"
            );
        }
    }
}
