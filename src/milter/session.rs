//! Per-connection state and the handling of each milter stage. Methods
//! here are synchronous and free of protocol details: they turn what
//! Postfix sent into policy facts, and a verdict into a [`Step`] that the
//! callbacks translate back. State lives in the indymilter context, never
//! in a global map.

use crate::Shared;
use crate::address::{Address, mailboxes_in_header};
use crate::config::{Config, OnError};
use crate::policy::{self, Action, Client, Facts, Reason, Reply, Stage, Verdict};
use std::sync::Arc;

/// Header names we remove from inbound mail so that nobody can forge our tags.
pub const OWN_HEADER_PREFIX: &str = "x-listwarden-";

/// What the callback layer should answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Continue,
    Accept,
    Reject(Reply),
    Tempfail(Reply),
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
    msg: Option<Message>,
    /// A failure in a stage that cannot answer (headers under NOREPLY),
    /// to be given at end of headers.
    pending_failure: Option<Step>,
}

/// State of the message in progress; dropped at MAIL, abort and end.
#[derive(Debug, Default)]
struct Message {
    sender: Option<Address>,
    queue_id: Option<String>,
    from: Vec<Address>,
    /// Bytes of `From:` values kept so far (bounded by `max_header_bytes`).
    from_bytes: usize,
    /// Inbound `X-Listwarden-*` headers: (name as sent, 1-based index per name).
    spoofed: Vec<(String, i32)>,
    /// Set once the message has been counted in `messages_total`.
    counted: bool,
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
            msg: None,
            pending_failure: None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn connect(&mut self, ip: Option<std::net::IpAddr>) {
        self.client = Client {
            ip: ip.map(|ip| ip.to_canonical()),
            authenticated_as: None,
        };
    }

    /// MAIL FROM: a new message begins.
    pub fn mail(&mut self, sender_arg: &str, auth: Option<&str>, queue_id: Option<&str>) -> Step {
        self.config = self.shared.config.load_full();
        self.pending_failure = None;
        self.client.authenticated_as = auth.filter(|a| !a.is_empty()).map(str::to_string);
        #[cfg(any(test, feature = "fault-injection"))]
        if sender_arg.contains("listwarden-fault-panic") {
            panic!("injected fault at MAIL");
        }
        let sender = match Address::parse_path(sender_arg) {
            Ok(s) => s,
            Err(e) => {
                // Postfix has already checked the syntax; what it accepted
                // and we cannot read is simply not a list address.
                tracing::debug!("unreadable sender {sender_arg:?}: {e}");
                None
            }
        };
        self.msg = Some(Message {
            sender,
            queue_id: nonempty(queue_id),
            ..Message::default()
        });
        let verdict = {
            let msg = self.msg.as_ref();
            let facts = Facts {
                stage: Stage::Mail,
                client: &self.client,
                sender: msg.and_then(|m| m.sender.as_ref()),
                from: &[],
            };
            policy::decide(&facts, &self.config)
        };
        self.apply(Stage::Mail, verdict)
    }

    /// One header; only the ones the policy needs are kept, bounded.
    pub fn header(&mut self, name: &str, value: &str) {
        let max = self.config.limits.max_header_bytes;
        let Some(msg) = self.msg.as_mut() else { return };
        if name.eq_ignore_ascii_case("from") {
            if msg.from_bytes + value.len() <= max {
                msg.from_bytes += value.len();
                msg.from.extend(mailboxes_in_header(value));
            } else {
                tracing::debug!("From: header over {max} bytes ignored");
            }
        } else if name.len() > OWN_HEADER_PREFIX.len()
            && name.is_char_boundary(OWN_HEADER_PREFIX.len())
            && name[..OWN_HEADER_PREFIX.len()].eq_ignore_ascii_case(OWN_HEADER_PREFIX)
            && msg.spoofed.len() < 1000
        {
            let index = msg
                .spoofed
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .count() as i32
                + 1;
            msg.spoofed.push((name.to_string(), index));
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
        let msg = &*msg;
        let facts = Facts {
            stage: Stage::EndOfHeaders,
            client: &self.client,
            sender: msg.sender.as_ref(),
            from: &msg.from,
        };
        let verdict = policy::decide(&facts, &self.config);
        let spoofed = !msg.spoofed.is_empty();
        match self.apply(Stage::EndOfHeaders, verdict) {
            // Forged tags still have to be removed at end of message.
            Step::Accept if spoofed => Step::Continue,
            step => step,
        }
    }

    /// End of message: which inbound `X-Listwarden-*` headers to delete,
    /// highest index first so earlier deletions do not shift later ones.
    pub fn end_of_message(&mut self, queue_id: Option<&str>) -> Vec<(String, i32)> {
        let Some(mut msg) = self.msg.take() else {
            return Vec::new();
        };
        if let Some(q) = nonempty(queue_id) {
            msg.queue_id = Some(q);
        }
        let mut deletions = std::mem::take(&mut msg.spoofed);
        deletions.sort_by_key(|d| std::cmp::Reverse(d.1));
        if !deletions.is_empty() {
            tracing::info!(
                queue_id = msg.queue_id.as_deref().unwrap_or("NOQUEUE"),
                count = deletions.len(),
                "removing inbound X-Listwarden-* headers"
            );
            self.shared
                .metrics
                .spoofed_headers_removed
                .inc_by(deletions.len() as u64);
        }
        if !msg.counted {
            self.count(&Verdict::accept(Reason::Clean));
        }
        deletions
    }

    /// Forgets the message in progress (abort, or after a final verdict).
    pub fn reset(&mut self) {
        self.msg = None;
        self.pending_failure = None;
    }

    /// The answer to an internal error (a panic in a handler).
    pub fn internal_error(&mut self, stage: &str) -> Step {
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
            list: None,
            observe: false,
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
            .stage_timer(stage)
            .observe(started.elapsed().as_secs_f64());
    }

    /// Logs, counts and translates a verdict.
    fn apply(&mut self, stage: Stage, verdict: Verdict) -> Step {
        if verdict.action == Action::Continue {
            return Step::Continue;
        }
        let counted = self.msg.as_ref().is_some_and(|m| m.counted);
        if !counted {
            self.log(stage, &verdict);
            self.count(&verdict);
        }
        if verdict.observe {
            // Nothing is left to inspect after the headers.
            return match stage {
                Stage::Mail => Step::Continue,
                Stage::EndOfHeaders => Step::Accept,
            };
        }
        if !matches!(verdict.action, Action::Continue) && !matches!(verdict.action, Action::Accept)
        {
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
        }
    }

    fn log(&self, stage: Stage, verdict: &Verdict) {
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
            client,
            sender = format!("<{sender}>"),
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

fn to_step(action: Action) -> Step {
    match action {
        Action::Continue => Step::Continue,
        Action::Accept => Step::Accept,
        Action::Reject(r) => Step::Reject(r),
        Action::Tempfail(r) => Step::Tempfail(r),
    }
}

fn nonempty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_string)
}
