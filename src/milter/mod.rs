//! The milter: indymilter callbacks that adapt the protocol to [`Session`].
//!
//! Each callback only converts C strings, reads macros, calls one session
//! method inside a panic guard, and maps the result to a milter status. A
//! panic in one message's handling becomes that message's tempfail (or
//! accept, per `on_error`); the process and other sessions carry on.

mod listener;
mod session;

pub use listener::{MilterListener, MilterStream};
pub use session::{OWN_HEADER_PREFIX, Session, Step};

use crate::Shared;
use indymilter::{
    Actions, Callbacks, ContextActions, EomContext, MacroStage, NegotiateContext, ProtoOpts,
    SetErrorReply, SocketInfo, Status,
};
use std::ffi::{CStr, CString};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

/// Runs the milter until `shutdown` completes.
pub async fn run(
    listener: MilterListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let max_connections = shared.config.load().milter.max_connections;
    let config = indymilter::Config {
        max_connections,
        ..Default::default()
    };
    indymilter::run(listener, callbacks(shared), config, shutdown).await
}

/// The callbacks listwarden registers. Stages no capability needs (HELO,
/// RCPT, DATA, BODY) are left out, so Postfix never sends them.
pub fn callbacks(shared: Arc<Shared>) -> Callbacks<Session> {
    let s1 = shared.clone();
    Callbacks::new()
        .on_negotiate(move |cx, actions, opts| Box::pin(negotiate(s1.clone(), cx, actions, opts)))
        .on_connect(|cx, _host, socket| Box::pin(connect(cx, socket)))
        .on_mail(|cx, args| Box::pin(mail(cx, args)))
        .on_header(|cx, name, value| Box::pin(header(cx, name, value)))
        .on_eoh(|cx| Box::pin(eoh(cx)))
        .on_eom(|cx| Box::pin(eom(cx)))
        .on_abort(|cx| Box::pin(abort(cx)))
}

/// Actions the config needs from the MTA.
fn needed_actions() -> Actions {
    // Removing forged X-Listwarden-* headers needs CHANGE_HEADER.
    Actions::CHANGE_HEADER
}

async fn negotiate(
    shared: Arc<Shared>,
    cx: &mut NegotiateContext<Session>,
    actions: Actions,
    opts: ProtoOpts,
) -> Status {
    let needed = needed_actions();
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
    // Headers never get a refusal of their own (the From: check runs at
    // end of headers), so Postfix need not wait for a reply to each one.
    if opts.contains(ProtoOpts::NOREPLY_HEADER) {
        cx.requested_opts |= ProtoOpts::NOREPLY_HEADER;
        session.header_noreply = true;
    }
    let macros = [
        (MacroStage::Mail, "i {auth_authen}"),
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

/// Runs a session method, turning a panic into an internal-error step.
fn guarded(session: &mut Session, stage: &str, f: impl FnOnce(&mut Session) -> Step) -> Step {
    let started = Instant::now();
    let step = match catch_unwind(AssertUnwindSafe(|| f(session))) {
        Ok(step) => step,
        Err(_) => session.internal_error(stage),
    };
    session.observe_time(stage, started);
    step
}

fn to_status(step: Step, reply: &mut impl SetErrorReply) -> Status {
    match step {
        Step::Continue => Status::Continue,
        Step::Accept => Status::Accept,
        Step::Reject(r) => match reply.set_error_reply(r.code, Some(r.status), [r.text.as_str()]) {
            Ok(()) => Status::Reject,
            // A reply we cannot send is an internal error: never a bare 5xx.
            Err(_) => Status::Tempfail,
        },
        Step::Tempfail(r) => {
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
        return Status::Tempfail;
    };
    let ip = match socket {
        SocketInfo::Inet(addr) => Some(addr.ip()),
        _ => None,
    };
    session.connect(ip);
    Status::Continue
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
    let step = guarded(session, "mail", |s| {
        s.mail(&sender, auth.as_deref(), queue_id.as_deref())
    });
    to_status(step, &mut cx.reply)
}

async fn header(cx: &mut indymilter::Context<Session>, name: CString, value: CString) -> Status {
    let Some(session) = cx.data.as_mut() else {
        return Status::Continue;
    };
    let noreply = session.header_noreply;
    let name = name.to_string_lossy();
    let value = value.to_string_lossy();
    let step = guarded(session, "header", |s| {
        s.header(&name, &value);
        Step::Continue
    });
    match step {
        // The failure is remembered (the message state is gone) and
        // answered at end of headers.
        _ if noreply => Status::Noreply,
        step => to_status(step, &mut cx.reply),
    }
}

async fn eoh(cx: &mut indymilter::Context<Session>) -> Status {
    let Some(session) = cx.data.as_mut() else {
        return Status::Tempfail;
    };
    let queue_id = macro_str(&cx.macros, c"i");
    let step = guarded(session, "eoh", |s| s.end_of_headers(queue_id.as_deref()));
    to_status(step, &mut cx.reply)
}

async fn eom(cx: &mut EomContext<Session>) -> Status {
    let Some(session) = cx.data.as_mut() else {
        return Status::Tempfail;
    };
    let queue_id = macro_str(&cx.macros, c"i").map(|q| q.into_owned());
    let mut deletions = Vec::new();
    let step = guarded(session, "eom", |s| {
        deletions = s.end_of_message(queue_id.as_deref());
        Step::Continue
    });
    if step != Step::Continue {
        return to_status(step, &mut cx.reply);
    }
    for (name, index) in deletions {
        if let Err(e) = cx
            .actions
            .change_header(name.as_str(), index, None::<&str>)
            .await
        {
            tracing::warn!("could not remove header {name}[{index}]: {e}");
            return match session.config().on_error {
                crate::config::OnError::Tempfail => Status::Tempfail,
                crate::config::OnError::Accept => Status::Continue,
            };
        }
    }
    Status::Continue
}

async fn abort(cx: &mut indymilter::Context<Session>) -> Status {
    if let Some(session) = cx.data.as_mut() {
        session.reset();
    }
    Status::Continue
}

#[cfg(test)]
mod tests;
