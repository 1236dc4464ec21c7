//! Test-only faults, planned by the envelope sender of a message, so a
//! test can make one message's handling fail at a chosen stage through a
//! real MTA:
//!
//! - `listwarden-fault-panic-STAGE` panics in that stage's handler (the
//!   bare `listwarden-fault-panic` means MAIL);
//! - `listwarden-fault-sleep-STAGE-SECS` makes that stage's reply wait
//!   SECS seconds (at most [`MAX_SLEEP_SECS`]), to outlast the MTA's
//!   milter timeouts.
//!
//! STAGE is `mail`, `rcpt`, `header`, `eoh`, `body` or `eom`. Compiled
//! only for unit tests and the `fault-injection` feature, which
//! `integration/run` builds; release builds carry none of it.

use crate::policy::Stage;
use std::time::Duration;

const PREFIX: &str = "listwarden-fault-";

/// Longest injected pause: beyond any MTA timeout a test needs.
pub(crate) const MAX_SLEEP_SECS: u64 = 120;

/// A fault planned for the current message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Panic(Stage),
    Sleep(Stage, Duration),
}

impl Fault {
    /// The fault named in `sender`, if any.
    pub fn parse(sender: &str) -> Option<Fault> {
        let start = sender.find(PREFIX)?;
        let rest = &sender[start + PREFIX.len()..];
        let word_end = |s: &str| {
            s.find(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                .unwrap_or(s.len())
        };
        let rest = &rest[..word_end(rest)];
        let mut parts = rest.split('-');
        let kind = parts.next()?;
        let stage = match parts.next() {
            Some(name) => Stage::from_name(name)?,
            None if kind == "panic" => Stage::Mail,
            None => return None,
        };
        match kind {
            "panic" => Some(Fault::Panic(stage)),
            "sleep" => {
                let secs: u64 = parts.next()?.parse().ok()?;
                Some(Fault::Sleep(
                    stage,
                    Duration::from_secs(secs.min(MAX_SLEEP_SECS)),
                ))
            }
            _ => None,
        }
    }

    /// Panics when this is a panic planned for `stage`.
    pub(crate) fn panic_at(fault: Option<Fault>, stage: Stage) {
        if fault == Some(Fault::Panic(stage)) {
            panic!("injected fault at {}", stage.as_str());
        }
    }

    /// How long to hold the reply of `stage`.
    pub(crate) fn sleep_at(fault: Option<Fault>, stage: Stage) -> Option<Duration> {
        match fault {
            Some(Fault::Sleep(s, d)) if s == stage => Some(d),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_planned_fault() {
        let table = [
            (
                "<listwarden-fault-panic@x.example>",
                Some(Fault::Panic(Stage::Mail)),
            ),
            (
                "listwarden-fault-panic-eom@x",
                Some(Fault::Panic(Stage::EndOfMessage)),
            ),
            (
                "<listwarden-fault-sleep-rcpt-12@x>",
                Some(Fault::Sleep(Stage::Rcpt, Duration::from_secs(12))),
            ),
            (
                "listwarden-fault-sleep-eom-99999@x",
                Some(Fault::Sleep(
                    Stage::EndOfMessage,
                    Duration::from_secs(MAX_SLEEP_SECS),
                )),
            ),
            ("listwarden-fault-sleep-eom@x", None),
            ("listwarden-fault-panic-helo@x", None),
            ("listwarden-fault-melt-mail@x", None),
            ("someone@example.org", None),
        ];
        for (sender, want) in table {
            assert_eq!(Fault::parse(sender), want, "{sender}");
        }
    }

    #[test]
    #[should_panic(expected = "injected fault at rcpt")]
    fn panics_only_at_its_stage() {
        let fault = Fault::parse("listwarden-fault-panic-rcpt@x");
        Fault::panic_at(fault, Stage::Mail);
        Fault::panic_at(fault, Stage::Rcpt);
    }
}
