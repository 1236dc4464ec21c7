//! The list server's socket (`milter.trusted_listen`): Postfix does not
//! wait for the answers to MAIL and RCPT there (`SMFIP_NR_MAIL`,
//! `SMFIP_NR_RCPT`), so a 500-recipient list post costs no round trip per
//! recipient. The checks still run exactly as on the other socket; what
//! they would have answered is carried here and given at end of message,
//! for the whole message. The socket grants no trust.
//!
//! What MAIL and RCPT can answer other than continue (all carried alike,
//! whatever the cause): at MAIL, a forged list sender (550), an unreadable
//! sender that may name a list domain (451), an internal error
//! (`on_error`); at RCPT, too many recipients (452, not for trusted
//! networks or SASL), an unreadable recipient that may name a list domain
//! (451, not for trusted networks), a bounce to a list that is not ours
//! (550), a shielded list (451 or 550), an exhausted budget (451), an
//! internal error. A trusted network's recipients are never refused
//! (`policy::decide_rcpt`), so for the clients this socket serves only an
//! internal error, which passes, can refuse one.
//!
//! Only `trusted_networks` clients are served here. A SASL login is not
//! enough: its bounce recipients are checked, and one that is always
//! refused (a bad signature) would make the whole message 451 on every
//! retry, holding its good recipients until the client gives up; on the
//! other socket only that recipient is refused. So a SASL-only client is
//! misrouted like any stranger.
//!
//! `limits.max_recipients`: trusted networks are exempt on both sockets
//! (`Session::rcpt_begin`), so a list post over the limit is not held
//! forever here; a misrouted client gets 451 anyway. Memory stays bounded
//! without the limit: `Carried` only counts recipients (never stores
//! them), and Postfix bounds a message's recipients itself
//! (`smtpd_recipient_limit`; a sendmail(1) submission is already queued).
//!
//! Why the outcome is never weaker and never loses mail:
//!
//! - A MAIL refusal (a forged list sender) refused every recipient: the
//!   same reply, for the whole message.
//! - One recipient cannot be refused alone any more, and deleting it at
//!   end of message would drop it silently. So any refused recipient
//!   refuses the whole message: with 5xx only when every recipient
//!   listwarden saw was refused with 5xx (none would have been accepted;
//!   Postfix never hands the milter a recipient it refused itself), else
//!   with 451, so that the client retries and nothing is lost.
//! - An internal error at MAIL or RCPT ends the message's checks as on the
//!   other socket; its `on_error` answer is carried for the whole message.
//! - A client not in `trusted_networks` has no business here: Postfix's
//!   `smtpd_milter_maps` routes it wrongly. Its checks run, but it gets
//!   451 unless they found a whole-message 5xx: never an accept that
//!   skipped a check whose answer could not be given.
//! - An internal error answered `accept` counts as an accepted recipient:
//!   earlier 5xx recipients then give 451, never a 5xx for mail the other
//!   socket would have accepted.
//! - The carried answer is decided before end of message does anything
//!   (`mod.rs` `eom`): a refused message writes no feedback job and is not
//!   logged or counted as signed or accepted. The cost: a stricter answer
//!   end of message might have found is only given on the retry.
//! - A later stage's refusal still counts: the stronger of the two wins
//!   (5xx over 4xx over accept), so end of headers or message can only
//!   make the answer stricter.

use crate::policy::{Action, Reply};

/// What MAIL and RCPT answered on the no-reply socket, for one message.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    /// A message-level answer: MAIL refused, or an internal error's.
    settled: Option<Action>,
    /// Recipients let through.
    accepted: usize,
    /// Recipients refused with 5xx, and the first reply.
    refused_perm: usize,
    first_perm: Option<Reply>,
    /// Recipients refused with 4xx, and the first reply.
    refused_temp: usize,
    first_temp: Option<Reply>,
    /// The client is not in `trusted_networks`: misrouted.
    untrusted: bool,
}

/// Why the carried answer is what it is, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// A stage answered a refusal (or an accept) that could not be given.
    Carried,
    /// An untrusted client on the trusted socket: fix smtpd_milter_maps.
    Misrouted,
}

impl Carried {
    /// MAIL's answer; `in_place` is true for a client in
    /// `trusted_networks` (never taken from the socket).
    pub(crate) fn mail(&mut self, action: Action, in_place: bool) {
        *self = Carried {
            untrusted: !in_place,
            ..Carried::default()
        };
        if action != Action::Continue {
            self.settled = Some(action);
        }
    }

    /// True once the message has a message-level answer: later recipients
    /// are not looked at (Postfix would not have sent them).
    pub(crate) fn is_settled(&self) -> bool {
        self.settled.is_some()
    }

    /// A recipient's answer. `message_ended` is true when the stage dropped
    /// the message (an internal error): its answer is the message's.
    pub(crate) fn rcpt(&mut self, action: Action, message_ended: bool) {
        match action {
            Action::Continue => self.accepted += 1,
            // An accept (an internal error's) lets this recipient through.
            Action::Accept => {
                self.accepted += 1;
                self.settled = Some(Action::Accept);
            }
            action if message_ended => self.settled = Some(action),
            Action::Reject(r) => {
                self.refused_perm += 1;
                self.first_perm.get_or_insert(r);
            }
            Action::Tempfail(r) => {
                self.refused_temp += 1;
                self.first_temp.get_or_insert(r);
            }
        }
    }

    /// Whether there is an answer to give: end of headers must then not
    /// accept or discard over it.
    pub(crate) fn has_answer(&self) -> bool {
        self.answer().is_some()
    }

    /// The whole message's answer for what MAIL and RCPT found, if any.
    pub(crate) fn answer(&self) -> Option<(Action, Why)> {
        if let Some(a @ (Action::Reject(_) | Action::Tempfail(_))) = &self.settled {
            return Some((a.clone(), Why::Carried));
        }
        if self.refused_perm > 0 && self.accepted == 0 && self.refused_temp == 0 {
            // Every recipient was refused for good: so is the message.
            return self
                .first_perm
                .clone()
                .map(|r| (Action::Reject(r), Why::Carried));
        }
        if self.untrusted {
            let reply = Reply::transient(
                "451",
                "4.3.5",
                "listwarden: this client reached the list server's milter socket; please try again later"
                    .into(),
            );
            return Some((Action::Tempfail(reply), Why::Misrouted));
        }
        if self.refused_perm + self.refused_temp > 0 {
            let first = self.first_perm.as_ref().or(self.first_temp.as_ref());
            let text = match first {
                Some(r) => format!(
                    "{} of {} recipients refused ({} {}); please try again later",
                    self.refused_perm + self.refused_temp,
                    self.refused_perm + self.refused_temp + self.accepted,
                    r.code,
                    r.text
                ),
                None => "recipients refused; please try again later".into(),
            };
            return Some((
                Action::Tempfail(Reply::transient("451", "4.7.1", text)),
                Why::Carried,
            ));
        }
        self.settled.clone().map(|a| (a, Why::Carried))
    }
}

/// The stronger of two answers: a refusal for good over a temporary one
/// over letting the message through.
pub(crate) fn stronger(a: Action, b: Action) -> Action {
    fn rank(a: &Action) -> u8 {
        match a {
            Action::Continue => 0,
            Action::Accept => 1,
            Action::Tempfail(_) => 2,
            Action::Reject(_) => 3,
        }
    }
    if rank(&b) > rank(&a) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm() -> Action {
        Action::Reject(Reply::permanent("550", "5.7.1", "no".into()))
    }
    fn temp() -> Action {
        Action::Tempfail(Reply::transient("451", "4.7.1", "later".into()))
    }
    fn code(a: &Action) -> &'static str {
        match a {
            Action::Reject(r) | Action::Tempfail(r) => r.code,
            Action::Accept => "accept",
            Action::Continue => "continue",
        }
    }

    #[test]
    fn a_clean_trusted_message_carries_nothing() {
        let mut c = Carried::default();
        c.mail(Action::Continue, true);
        for _ in 0..500 {
            c.rcpt(Action::Continue, false);
        }
        assert!(c.answer().is_none());
    }

    #[test]
    fn refusals_refuse_the_whole_message_5xx_only_when_all_were_5xx() {
        let mut all = Carried::default();
        all.mail(Action::Continue, true);
        all.rcpt(perm(), false);
        all.rcpt(perm(), false);
        assert_eq!(code(&all.answer().unwrap().0), "550");

        let mut mixed = Carried::default();
        mixed.mail(Action::Continue, true);
        mixed.rcpt(perm(), false);
        mixed.rcpt(Action::Continue, false);
        assert_eq!(code(&mixed.answer().unwrap().0), "451");

        let mut some_temp = Carried::default();
        some_temp.mail(Action::Continue, true);
        some_temp.rcpt(perm(), false);
        some_temp.rcpt(temp(), false);
        assert_eq!(code(&some_temp.answer().unwrap().0), "451");
    }

    #[test]
    fn a_mail_refusal_or_internal_error_settles_the_message() {
        let mut c = Carried::default();
        c.mail(perm(), true);
        assert!(c.is_settled());
        assert_eq!(code(&c.answer().unwrap().0), "550");

        let mut e = Carried::default();
        e.mail(Action::Continue, true);
        e.rcpt(Action::Accept, true);
        assert!(e.is_settled());
        assert_eq!(code(&e.answer().unwrap().0), "accept");
    }

    #[test]
    fn an_untrusted_client_gets_451_unless_a_5xx_was_due() {
        let mut c = Carried::default();
        c.mail(Action::Continue, false);
        c.rcpt(Action::Continue, false);
        let (a, why) = c.answer().unwrap();
        assert_eq!((code(&a), why), ("451", Why::Misrouted));

        let mut on_error_accept = Carried::default();
        on_error_accept.mail(Action::Accept, false);
        assert_eq!(code(&on_error_accept.answer().unwrap().0), "451");

        let mut refused = Carried::default();
        refused.mail(Action::Continue, false);
        refused.rcpt(perm(), false);
        assert_eq!(code(&refused.answer().unwrap().0), "550");
    }

    /// review2 L1: an internal error answered `accept` let its recipient
    /// through; an earlier 5xx recipient must not make the message 5xx.
    #[test]
    fn an_internal_errors_accept_counts_as_an_accepted_recipient() {
        let mut c = Carried::default();
        c.mail(Action::Continue, true);
        c.rcpt(perm(), false);
        c.rcpt(Action::Accept, true);
        let (a, _) = c.answer().unwrap();
        assert_eq!(code(&a), "451");
    }

    #[test]
    fn the_stronger_answer_wins() {
        assert_eq!(code(&stronger(temp(), perm())), "550");
        assert_eq!(code(&stronger(perm(), temp())), "550");
        assert_eq!(code(&stronger(Action::Accept, temp())), "451");
        assert_eq!(code(&stronger(Action::Continue, Action::Accept)), "accept");
    }
}
