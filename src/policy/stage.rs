//! The milter stages: the one vocabulary of where in the SMTP transaction
//! something happens, for decisions, logs, the per-stage timing metric
//! and the test-only faults.

/// A milter stage listwarden handles. Decisions are taken at MAIL, RCPT,
/// end of headers and end of message; a single header or body chunk only
/// gathers facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Mail,
    Rcpt,
    Header,
    EndOfHeaders,
    Body,
    EndOfMessage,
}

impl Stage {
    /// Every stage, in protocol order (the order of the timing metric's
    /// label values).
    pub const ALL: [Stage; 6] = [
        Stage::Mail,
        Stage::Rcpt,
        Stage::Header,
        Stage::EndOfHeaders,
        Stage::Body,
        Stage::EndOfMessage,
    ];

    /// The stage's name in logs, metric labels and fault plans.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Header => "header",
            Stage::EndOfHeaders => "eoh",
            Stage::Body => "body",
            Stage::EndOfMessage => "eom",
        }
    }

    /// The stage named `name` (as [`Stage::as_str`] writes it).
    #[cfg(any(test, feature = "fault-injection"))]
    pub(crate) fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The stage's position in [`Stage::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}
