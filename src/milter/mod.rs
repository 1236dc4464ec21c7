//! The milter: indymilter callbacks that adapt the protocol to [`Session`].
//!
//! Each callback only converts C strings, reads macros, calls one session
//! method inside a panic guard, and maps the result to a milter status. A
//! panic in one message's handling becomes that message's tempfail (or
//! accept, per `on_error`); the process and other sessions carry on.

mod carry;
#[cfg(any(test, feature = "fault-injection"))]
mod fault;
mod listener;
mod session;

pub use listener::{MilterListener, MilterStream};
pub use session::Session;
use session::{Eom, EomPlan, RcptBegin};

use crate::Shared;
use crate::policy::{Action, Stage};
use crate::record::Event;
use indymilter::{
    Actions, Callbacks, ContextActions, EomContext, MacroStage, NegotiateContext, ProtoOpts,
    SetErrorReply, SocketInfo, Status,
};
use std::ffi::{CStr, CString};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

/// Which socket a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// `milter.listen`: any client; every stage that can refuse is
    /// answered.
    Any,
    /// `milter.trusted_listen`: the list server's own clients, picked by
    /// Postfix (`smtpd_milter_maps`, `non_smtpd_milters`). MAIL and RCPT
    /// are not answered; their answers are carried to end of message
    /// (see `carry`). It grants no trust.
    ListServer,
}

/// Runs the milter on `milter.listen` until `shutdown` completes.
pub async fn run(
    listener: MilterListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    run_door(listener, shared, Door::Any, shutdown).await
}

/// Runs the milter on one socket until `shutdown` completes.
pub async fn run_door(
    mut listener: MilterListener,
    shared: Arc<Shared>,
    door: Door,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let settings = shared.config.load().milter.clone();
    let config = indymilter::Config {
        max_connections: settings.max_connections,
        connection_timeout: settings.timeout,
        ..Default::default()
    };
    listener.set_negotiate_timeout(settings.negotiate_timeout);
    indymilter::run(listener, callbacks_for(shared, door), config, shutdown).await
}

/// The callbacks listwarden registers. Stages no capability needs (HELO,
/// DATA, UNKNOWN) are left out, so Postfix never sends them; the body is
/// skipped unless a bounce needs a trace check.
pub fn callbacks(shared: Arc<Shared>) -> Callbacks<Session> {
    callbacks_for(shared, Door::Any)
}

/// The callbacks for connections on `door`.
pub fn callbacks_for(shared: Arc<Shared>, door: Door) -> Callbacks<Session> {
    let s1 = shared.clone();
    Callbacks::new()
        .on_negotiate(move |cx, actions, opts| {
            Box::pin(negotiate(s1.clone(), door, cx, actions, opts))
        })
        .on_connect(|cx, _host, socket| Box::pin(connect(cx, socket)))
        .on_mail(|cx, args| Box::pin(mail(cx, args)))
        .on_rcpt(|cx, args| Box::pin(rcpt(cx, args)))
        .on_header(|cx, name, value| Box::pin(header(cx, name, value)))
        .on_body(|cx, chunk| Box::pin(body(cx, chunk)))
        .on_eoh(|cx| Box::pin(eoh(cx)))
        .on_eom(|cx| Box::pin(eom(cx)))
        .on_abort(|cx| Box::pin(abort(cx)))
}

/// Actions the config needs from the MTA.
fn needed_actions(config: &crate::config::Config) -> Actions {
    // Removing forged X-Listwarden-* headers needs CHANGE_HEADER.
    let mut actions = Actions::CHANGE_HEADER | Actions::ADD_HEADER;
    if config
        .rules
        .rules()
        .iter()
        .any(|r| r.action() == crate::dsn::RuleAction::Quarantine)
    {
        actions |= Actions::QUARANTINE;
    }
    if config.signing.is_some() {
        // Signing outbound senders, and delivering valid bounces to the
        // plain address.
        actions |= Actions::CHANGE_SENDER | Actions::ADD_RCPT | Actions::DELETE_RCPT;
    }
    actions
}

async fn negotiate(
    shared: Arc<Shared>,
    door: Door,
    cx: &mut NegotiateContext<Session>,
    actions: Actions,
    opts: ProtoOpts,
) -> Status {
    let needed = needed_actions(&shared.config.load());
    if !actions.contains(needed) {
        tracing::error!(
            "the MTA does not offer the milter actions listwarden needs ({:?}); \
             refusing the connection (check milter_protocol = 6)",
            needed.difference(actions)
        );
        return Status::Reject;
    }
    let mut session = Session::new(shared);
    cx.requested_actions = needed;
    // Older protocol versions (milter_protocol = 2 or 3) cannot skip some
    // stages; indymilter answers those with Continue, so ask only for what
    // is offered instead of failing the negotiation.
    let unoffered = cx.requested_opts.difference(opts);
    if !unoffered.is_empty() {
        tracing::warn!(
            "the MTA cannot skip {unoffered:?} (old milter_protocol?); continuing without"
        );
        cx.requested_opts &= opts;
    }
    // Headers never get a refusal of their own (the From: check runs at
    // end of headers), so Postfix need not wait for a reply to each one.
    if opts.contains(ProtoOpts::NOREPLY_HEADER) {
        cx.requested_opts |= ProtoOpts::NOREPLY_HEADER;
        session.header_noreply = true;
    }
    // Connect only records the client's address (every verdict waits for
    // MAIL): one round trip less per SMTP session.
    if opts.contains(ProtoOpts::NOREPLY_CONNECT) {
        cx.requested_opts |= ProtoOpts::NOREPLY_CONNECT;
        session.connect_noreply = true;
    }
    // The list server's socket: MAIL and RCPT answers wait for end of
    // message, so a post to 500 members costs no round trip per member.
    // Both or neither: an MTA that offers only one keeps every answer.
    let envelope = ProtoOpts::NOREPLY_MAIL | ProtoOpts::NOREPLY_RCPT;
    if door == Door::ListServer {
        if opts.contains(envelope) {
            cx.requested_opts |= envelope;
            session.envelope_noreply = true;
        } else {
            tracing::warn!(
                "milter.trusted_listen: the MTA cannot leave MAIL and RCPT unanswered \
                 (old milter_protocol?); answering them as on milter.listen"
            );
        }
    }
    session.skip_ok = cx.requested_opts.contains(ProtoOpts::SKIP);
    let macros = [
        // Postfix's own reading of the MAIL and RCPT arguments: listwarden
        // decides on the address Postfix will deliver to, not on the raw
        // text (comments, spaces, source routes read differently).
        (MacroStage::Mail, "i {auth_authen} {mail_addr}"),
        (MacroStage::Rcpt, "i {rcpt_addr}"),
        (MacroStage::Eoh, "i"),
        (MacroStage::Eom, "i"),
    ];
    for (stage, names) in macros {
        if let Ok(names) = CString::new(names) {
            cx.requested_macros.insert(stage, names);
        }
    }
    cx.data = Some(session);
    Status::Continue
}

/// Runs a session method, turning a panic into an internal-error answer,
/// then hands what the session observed, and the time taken, to the
/// recorder.
fn guarded<T>(
    session: &mut Session,
    stage: Stage,
    on_panic: impl FnOnce(Action) -> T,
    f: impl FnOnce(&mut Session) -> T,
) -> T {
    let started = Instant::now();
    let out = match catch_unwind(AssertUnwindSafe(|| {
        #[cfg(any(test, feature = "fault-injection"))]
        fault::Fault::panic_at(session.fault, stage);
        f(session)
    })) {
        Ok(out) => out,
        Err(_) => on_panic(session.internal_error(stage)),
    };
    session.flush();
    session
        .shared()
        .recorder()
        .stage_time(stage, started.elapsed());
    out
}

/// Holds the reply of `stage` when a test planned a pause there.
#[cfg(any(test, feature = "fault-injection"))]
async fn pause(session: &Session, stage: Stage) {
    if let Some(d) = fault::Fault::sleep_at(session.fault, stage) {
        tracing::warn!("injected pause of {d:?} at {}", stage.as_str());
        tokio::time::sleep(d).await;
    }
}

#[cfg(not(any(test, feature = "fault-injection")))]
async fn pause(_session: &Session, _stage: Stage) {}

fn to_status(action: Action, reply: &mut impl SetErrorReply) -> Status {
    match action {
        Action::Continue => Status::Continue,
        Action::Accept => Status::Accept,
        Action::Reject(r) => match reply.set_error_reply(r.code, Some(r.status), [r.text.as_str()])
        {
            Ok(()) => Status::Reject,
            // A reply we cannot send is an internal error: never a bare 5xx.
            Err(_) => Status::Tempfail,
        },
        Action::Tempfail(r) => {
            let _ = reply.set_error_reply(r.code, Some(r.status), [r.text.as_str()]);
            Status::Tempfail
        }
    }
}

fn macro_str<'a>(macros: &'a indymilter::Macros, name: &CStr) -> Option<std::borrow::Cow<'a, str>> {
    macros.get(name).map(|v| v.to_string_lossy())
}

async fn connect(cx: &mut indymilter::Context<Session>, socket: SocketInfo) -> Status {
    let Some(session) = cx.data.as_mut() else {
        // Not reached (negotiate sets it). Under NOREPLY_CONNECT
        // indymilter sends nothing, and MAIL tempfails.
        return Status::Tempfail;
    };
    let ip = match socket {
        SocketInfo::Inet(addr) => Some(addr.ip()),
        _ => None,
    };
    session.connect(ip);
    if session.connect_noreply {
        Status::Noreply
    } else {
        Status::Continue
    }
}

async fn mail(cx: &mut indymilter::Context<Session>, args: Vec<CString>) -> Status {
    let Some(session) = cx.data.as_mut() else {
        return Status::Tempfail;
    };
    let sender = args
        .first()
        .map(|a| a.to_string_lossy())
        .unwrap_or_default();
    let auth = macro_str(&cx.macros, c"{auth_authen}");
    let queue_id = macro_str(&cx.macros, c"i");
    let mail_addr = macro_str(&cx.macros, c"{mail_addr}");
    // A test plans the new message's fault by its sender.
    #[cfg(any(test, feature = "fault-injection"))]
    {
        session.fault = fault::Fault::parse(&sender);
    }
    let action = guarded(
        session,
        Stage::Mail,
        |a| a,
        |s| {
            s.mail(
                &sender,
                mail_addr.as_deref(),
                auth.as_deref(),
                queue_id.as_deref(),
            )
        },
    );
    pause(session, Stage::Mail).await;
    if session.envelope_noreply {
        let in_place = session.trusted_network();
        session.carried.mail(action, in_place);
        return Status::Noreply;
    }
    to_status(action, &mut cx.reply)
}

async fn rcpt(cx: &mut indymilter::Context<Session>, args: Vec<CString>) -> Status {
    let Some(session) = cx.data.as_mut() else {
        // Under NOREPLY_RCPT indymilter sends nothing (not reached:
        // negotiate sets the session).
        return Status::Tempfail;
    };
    if session.envelope_noreply && session.carried.is_settled() {
        // MAIL (or an earlier recipient's internal error) already decided
        // the message; Postfix would not have asked about this recipient.
        return Status::Noreply;
    }
    let rcpt = args
        .first()
        .map(|a| a.to_string_lossy())
        .unwrap_or_default();
    let rcpt_addr = macro_str(&cx.macros, c"{rcpt_addr}");
    let begin = guarded(session, Stage::Rcpt, RcptBegin::Done, |s| {
        s.rcpt_begin(&rcpt, rcpt_addr.as_deref())
    });
    pause(session, Stage::Rcpt).await;
    let (rcpt, as_sent, verdict) = match begin {
        RcptBegin::Done(action) => return rcpt_answer(session, action, &mut cx.reply),
        RcptBegin::Check {
            rcpt,
            as_sent,
            verdict,
        } => (rcpt, as_sent, verdict),
    };
    let exhausted = charge(session, &verdict.charges).await;
    let action = guarded(
        session,
        Stage::Rcpt,
        |a| a,
        |s| s.rcpt_finish(rcpt, as_sent, *verdict, exhausted),
    );
    rcpt_answer(session, action, &mut cx.reply)
}

/// A recipient's answer: given now, or on the list server's socket
/// carried to end of message.
fn rcpt_answer(session: &mut Session, action: Action, reply: &mut impl SetErrorReply) -> Status {
    if session.envelope_noreply {
        let ended = !session.has_message();
        session.carried.rcpt(action, ended);
        return Status::Noreply;
    }
    to_status(action, reply)
}

/// On the list server's socket: the answer MAIL and RCPT could not give,
/// made no weaker by `own` (what this stage found), logged. `None`: nothing
/// was carried, `own` stands.
fn with_carried(
    session: &mut Session,
    stage: Stage,
    own: &Action,
    queue_id: Option<&str>,
) -> Option<Action> {
    if !session.envelope_noreply {
        return None;
    }
    let (carried, why) = session.carried.answer()?;
    let answer = carry::stronger(carried, own.clone());
    // The message ends with this answer.
    session.reset();
    let queue_id = queue_id.unwrap_or(crate::record::NO_QUEUE);
    let client = session
        .client_ip()
        .map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
    match why {
        carry::Why::Misrouted => tracing::warn!(
            queue_id,
            client,
            "client is not in trusted_networks (a SASL login is not enough) but Postfix \
             sent it to milter.trusted_listen: answered at {}: {}; fix Postfix's \
             smtpd_milter_maps (or listwarden's trusted_networks)",
            stage.as_str(),
            describe(&answer)
        ),
        carry::Why::Carried => tracing::info!(
            queue_id,
            client,
            "milter.trusted_listen: the MAIL/RCPT answer given at {}: {}",
            stage.as_str(),
            describe(&answer)
        ),
    }
    Some(answer)
}

fn describe(action: &Action) -> String {
    match action {
        Action::Continue => "continue".into(),
        Action::Accept => "accept".into(),
        Action::Reject(r) | Action::Tempfail(r) => format!("{} {} {}", r.code, r.status, r.text),
    }
}

/// Charges the budgets in order; returns the first one exhausted. One
/// store call (one Redis round trip) for all of them; the store always
/// answers within its deadline (Redis falls back locally).
async fn charge(
    session: &Session,
    charges: &[crate::policy::Charge],
) -> Option<crate::policy::Budget> {
    let mut budgets = Vec::with_capacity(charges.len());
    let mut requests = Vec::with_capacity(charges.len());
    for c in charges {
        if let Some(quota) = session.quota(c.budget) {
            budgets.push(c.budget);
            requests.push((c.key.as_str(), quota));
        }
    }
    if requests.is_empty() {
        return None;
    }
    let started = std::time::Instant::now();
    let decisions = session.shared().store.check_all(&requests).await;
    // The budgets up to the first that said no: the ones that decided.
    let mut results = Vec::with_capacity(budgets.len());
    for (budget, decision) in budgets.iter().zip(&decisions) {
        results.push((*budget, decision.allowed));
        if !decision.allowed {
            break;
        }
    }
    let exhausted = results
        .iter()
        .find(|(_, allowed)| !allowed)
        .map(|(b, _)| *b);
    session.shared().recorder().record(Event::Budgets {
        results,
        took: started.elapsed(),
    });
    exhausted
}

async fn body(cx: &mut indymilter::Context<Session>, chunk: bytes::Bytes) -> Status {
    let Some(session) = cx.data.as_mut() else {
        return Status::Continue;
    };
    let skip_ok = session.skip_ok;
    let more = guarded(session, Stage::Body, Err, |s| Ok(s.body(&chunk)));
    pause(session, Stage::Body).await;
    match more {
        Ok(true) => Status::Continue,
        Ok(false) if skip_ok => Status::Skip,
        Ok(false) => Status::Continue,
        Err(action) => to_status(action, &mut cx.reply),
    }
}

async fn header(cx: &mut indymilter::Context<Session>, name: CString, value: CString) -> Status {
    let Some(session) = cx.data.as_mut() else {
        return Status::Continue;
    };
    let noreply = session.header_noreply;
    let name = name.to_string_lossy();
    let value = value.to_string_lossy();
    let action = guarded(
        session,
        Stage::Header,
        |a| a,
        |s| {
            s.header(&name, &value);
            Action::Continue
        },
    );
    pause(session, Stage::Header).await;
    match action {
        // The failure is remembered (the message state is gone) and
        // answered at end of headers.
        _ if noreply => Status::Noreply,
        action => to_status(action, &mut cx.reply),
    }
}

async fn eoh(cx: &mut indymilter::Context<Session>) -> Status {
    let Some(session) = cx.data.as_mut() else {
        return Status::Tempfail;
    };
    let queue_id = macro_str(&cx.macros, c"i");
    let action = guarded(
        session,
        Stage::EndOfHeaders,
        |a| a,
        |s| s.end_of_headers(queue_id.as_deref()),
    );
    pause(session, Stage::EndOfHeaders).await;
    if session.envelope_noreply && session.carried.has_answer() {
        // A refusal here ends the message: give it with the carried one.
        // Anything else (an accept, a canary discard) must not end the
        // message before end of message gives the carried answer.
        if matches!(action, Action::Reject(_) | Action::Tempfail(_))
            && let Some(answer) =
                with_carried(session, Stage::EndOfHeaders, &action, queue_id.as_deref())
        {
            return to_status(answer, &mut cx.reply);
        }
        return Status::Continue;
    }
    if action == Action::Continue
        && let Some(probe) = session.take_probe()
    {
        let config = session.config();
        let leg = match &config.canary {
            Some(c) => {
                let book = crate::canary::Sightings::of(&session.shared().store, &c.dir);
                book.record(&probe.id, crate::canary::now_ms(), c.max_age)
                    .await
            }
            None => None,
        };
        let discard = session.canary_seen(probe, leg);
        session.flush();
        if discard {
            return Status::Discard;
        }
    }
    to_status(action, &mut cx.reply)
}

async fn eom(cx: &mut EomContext<Session>) -> Status {
    let Some(session) = cx.data.as_mut() else {
        return Status::Tempfail;
    };
    let queue_id = macro_str(&cx.macros, c"i").map(|q| q.into_owned());
    // A carried answer (a refusal, or an internal error's accept whose
    // message had nothing left to change) is decided first: end of
    // message's side effects (a feedback job, signing logged and counted)
    // must not happen for a message that is refused.
    if let Some(answer) = with_carried(
        session,
        Stage::EndOfMessage,
        &Action::Continue,
        queue_id.as_deref(),
    ) {
        return to_status(answer, &mut cx.reply);
    }
    let eom = guarded(session, Stage::EndOfMessage, Eom::Answer, |s| {
        s.end_of_message(queue_id.as_deref())
    });
    pause(session, Stage::EndOfMessage).await;
    let plan = match eom {
        Eom::Answer(action) => return to_status(action, &mut cx.reply),
        Eom::Apply(plan) => plan,
    };
    match apply_plan(&cx.actions, &plan).await {
        Ok(()) => {
            if plan.sign_as.is_some() {
                session
                    .shared()
                    .recorder()
                    .record(Event::Signed { list: plan.list });
            }
            Status::Continue
        }
        Err(e) => {
            tracing::warn!(
                queue_id = queue_id.as_deref().unwrap_or(crate::record::NO_QUEUE),
                "could not modify the message: {e}"
            );
            match session.config().on_error {
                crate::config::OnError::Tempfail => Status::Tempfail,
                crate::config::OnError::Accept => Status::Continue,
            }
        }
    }
}

/// Carries out the end-of-message changes.
async fn apply_plan(
    actions: &impl ContextActions,
    plan: &EomPlan,
) -> Result<(), indymilter::ActionError> {
    for (name, index) in &plan.delete_headers {
        actions
            .change_header(name.as_str(), *index, None::<&str>)
            .await?;
    }
    if let Some(signed) = &plan.sign_as {
        actions
            .change_sender(format!("<{signed}>"), None::<&str>)
            .await?;
    }
    for r in &plan.rewrite_recipients {
        actions.delete_recipient(r.as_sent.as_str()).await?;
        actions.add_recipient(format!("<{}>", r.plain)).await?;
    }
    if let Some(to) = &plan.set_to {
        actions.add_header("To", to.as_str()).await?;
    }
    for tag in &plan.tags {
        actions
            .add_header(crate::dsn::tag::HEADER, tag.as_str())
            .await?;
    }
    if let Some(tag) = &plan.feedback_tag {
        actions
            .add_header(crate::feedback::HEADER, tag.as_str())
            .await?;
    }
    for (name, value) in &plan.add_headers {
        actions.add_header(name.as_str(), value.as_str()).await?;
    }
    if let Some(reason) = &plan.quarantine {
        actions.quarantine(reason.as_str()).await?;
    }
    Ok(())
}

async fn abort(cx: &mut indymilter::Context<Session>) -> Status {
    if let Some(session) = cx.data.as_mut() {
        session.reset();
    }
    Status::Continue
}

#[cfg(test)]
mod tests;
