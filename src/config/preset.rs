//! Address conventions of the list managers listwarden protects. A preset
//! names a list's role addresses and which of them carry bounces (the
//! envelope senders listwarden signs, and where bounces come back).

/// A list manager's address conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// listwarden's own expander: `LIST-bounces+member=domain@` VERP.
    Listwarden,
    /// Sympa 6.2: `LIST-owner@` is the return path; VERP senders are
    /// `bounce+member==a==domain==LIST@` on the list domain.
    Sympa,
    /// Mailman 3: `LIST-bounces@`, VERP `LIST-bounces+member=domain@`.
    Mailman3,
}

impl Preset {
    pub fn parse(name: &str) -> Option<Preset> {
        match name {
            "listwarden" => Some(Preset::Listwarden),
            "sympa" => Some(Preset::Sympa),
            "mailman3" => Some(Preset::Mailman3),
            _ => None,
        }
    }

    /// Role suffixes: `owner` stands for `LIST-owner@DOMAIN`.
    pub fn roles(self) -> &'static [&'static str] {
        match self {
            Preset::Listwarden => &["owner", "request", "bounces", "unsubscribe"],
            Preset::Sympa => &["owner", "request", "editor", "subscribe", "unsubscribe"],
            Preset::Mailman3 => &[
                "bounces",
                "confirm",
                "join",
                "leave",
                "owner",
                "request",
                "subscribe",
                "unsubscribe",
            ],
        }
    }

    /// Local parts shared by every list of a domain that carry bounces,
    /// such as Sympa's `bounce+…@`. The list is named after the last `==`.
    pub fn shared_bounce_locals(self) -> &'static [&'static str] {
        match self {
            Preset::Sympa => &["bounce"],
            Preset::Listwarden | Preset::Mailman3 => &[],
        }
    }
}

/// How bounces to a list's bounce addresses are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BounceCheck {
    /// The recipient must carry a valid BATV signature; decided at RCPT.
    Signed,
    /// The returned original must show our Received: or Message-ID.
    Trace,
    /// A valid signature passes at RCPT; otherwise the trace decides.
    Either,
    /// No check.
    Off,
}

impl BounceCheck {
    pub fn parse(name: &str) -> Option<BounceCheck> {
        match name {
            "signed" => Some(BounceCheck::Signed),
            "trace" => Some(BounceCheck::Trace),
            "either" => Some(BounceCheck::Either),
            "off" => Some(BounceCheck::Off),
            _ => None,
        }
    }
}
