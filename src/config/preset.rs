//! Address conventions of the list managers listwarden protects. A preset
//! names a list's role addresses and which of them carry bounces (the
//! envelope senders listwarden signs, and where bounces come back).

/// A list manager's address conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// listwarden's own expander: `LIST-bounces+member=domain@` VERP.
    Listwarden,
    /// Sympa 6.2: `LIST-owner@` is the return path (`return_path_suffix`);
    /// with `verp_rate` the senders are `bounce+member==a==domain==LIST@`
    /// on the list domain (`bounce_email_prefix`). Checked against Sympa
    /// 6.2.70 (integration/lists/sympa): list mail leaves as
    /// `LIST-owner@` or that VERP form, and carries `LIST@` (`X-Loop`),
    /// `LIST-request@` (`Sender`, `List-Owner`) and the robot's `sympa@`
    /// (`List-Help`). Sympa's own notices leave as the robot's
    /// `sympa-request@`, which no list preset covers (a `domains:` entry
    /// does).
    Sympa,
    /// Mailman 3: `LIST-bounces@`, VERP `LIST-bounces+member=domain@`.
    /// Checked against Mailman 3.3.8 (integration/lists/mailman3): posts
    /// and notices leave as `LIST-bounces@` (over SMTP to `[mta]
    /// smtp_host`, so `smtpd_milters` signs them); mail for the owners
    /// (forwards from `LIST-owner@`, moderation notices) always as the
    /// VERP form `LIST-bounces+owner=domain@`, and so does a personalized
    /// list with `verp_personalized_deliveries`; its Postfix map
    /// (`postfix_lmtp`) names the list and exactly the eight roles below.
    Mailman3,
}

listwarden_core::config_words!(Preset {
    "listwarden" => Preset::Listwarden,
    "sympa" => Preset::Sympa,
    "mailman3" => Preset::Mailman3,
});

impl Preset {
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

    /// The role suffixes the list manager sends list mail from: the
    /// addresses listwarden signs, and where real bounces come back.
    pub(crate) fn sender_roles(self) -> &'static [&'static str] {
        match self {
            Preset::Listwarden | Preset::Mailman3 => &["bounces"],
            Preset::Sympa => &["owner"],
        }
    }

    /// Sender roles that receive only bounces. Sympa's `-owner@` also takes
    /// mail for the list owners from people, so it is not one of them.
    pub(crate) fn bounce_only_roles(self) -> &'static [&'static str] {
        match self {
            Preset::Listwarden | Preset::Mailman3 => &["bounces"],
            Preset::Sympa => &[],
        }
    }

    /// Local parts shared by every list of a domain that carry bounces,
    /// such as Sympa's `bounce+…@`. The list is named after the last `==`.
    pub(crate) fn shared_bounce_locals(self) -> &'static [&'static str] {
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

listwarden_core::config_words!(BounceCheck {
    "signed" => BounceCheck::Signed,
    "trace" => BounceCheck::Trace,
    "either" => BounceCheck::Either,
    "off" => BounceCheck::Off,
});

#[cfg(test)]
mod tests {
    use crate::address::Address;
    use crate::config::{Config, Role};
    use std::path::Path;

    /// The addresses Sympa 6.2.70 really used in integration/lists/sympa,
    /// with a second Sympa list on the same domain declared first.
    #[test]
    fn sympa_addresses_seen_in_the_real_program() {
        let src = "milter: {listen: inet:127.0.0.1:1}\n\
trace: {received_by: [lists.example.org]}\n\
lists:\n  - {address: other@lists.example.org, preset: sympa, bounces: trace}\n  - {address: test@lists.example.org, preset: sympa, bounces: trace}\n";
        let c = Config::parse(src, Path::new("t.yaml")).unwrap();
        let find = |a: &str| {
            c.protected(&Address::parse(a).unwrap())
                .map(|p| (p.owner.label().to_string(), p.role))
        };
        let suffix = |r: &str| Some(("test".to_string(), Role::Suffix(r.to_string())));
        // The return path, signed and plain, and the roles in Sympa's headers.
        assert_eq!(find("test-owner@lists.example.org"), suffix("owner"));
        assert_eq!(
            find("prvs=1791538797=test-owner@lists.example.org"),
            suffix("owner")
        );
        assert_eq!(find("test-request@lists.example.org"), suffix("request"));
        assert_eq!(find("test-editor@lists.example.org"), suffix("editor"));
        assert_eq!(
            find("test-unsubscribe@lists.example.org"),
            suffix("unsubscribe")
        );
        // VERP (verp_rate 100%), signed as it left, names its list last.
        let verp = Some(("test".to_string(), Role::Shared("bounce".to_string())));
        assert_eq!(
            find("prvs=17919dc781=bounce+bob==a==members.example==test@lists.example.org"),
            verp
        );
        assert_eq!(
            find("bounce+bob==a==members.example==test@lists.example.org"),
            verp
        );
        // The robot's addresses belong to no list.
        assert_eq!(find("sympa-request@lists.example.org"), None);
        assert_eq!(find("sympa@lists.example.org"), None);
    }

    /// The addresses Mailman 3.3.8 really used in integration/lists/mailman3:
    /// the nine entries of the `postfix_lmtp` map it generated for a list,
    /// the envelope senders its mail left with (signed as they left), and
    /// addresses of the site that belong to no list.
    #[test]
    fn mailman3_addresses_seen_in_the_real_program() {
        let src = "milter: {listen: inet:127.0.0.1:1}\n\
lists:\n  - {address: members@lists.example.org, preset: mailman3, bounces: off}\n  - {address: verp@lists.example.org, preset: mailman3, bounces: off}\n";
        let c = Config::parse(src, Path::new("t.yaml")).unwrap();
        let find = |a: &str| {
            c.protected(&Address::parse(a).unwrap())
                .map(|p| (p.owner.label().to_string(), p.role))
        };
        let suffix = |l: &str, r: &str| Some((l.to_string(), Role::Suffix(r.to_string())));
        assert_eq!(
            find("members@lists.example.org"),
            Some(("members".to_string(), Role::Posting))
        );
        for role in [
            "bounces",
            "confirm",
            "join",
            "leave",
            "owner",
            "request",
            "subscribe",
            "unsubscribe",
        ] {
            assert_eq!(
                find(&format!("members-{role}@lists.example.org")),
                suffix("members", role),
                "{role}"
            );
        }
        // Envelope senders as they reached the sink.
        assert_eq!(
            find("prvs=17919d397c=members-bounces@lists.example.org"),
            suffix("members", "bounces")
        );
        assert_eq!(
            find("prvs=1791677d82=verp-bounces+hank=example.com@lists.example.org"),
            suffix("verp", "bounces")
        );
        assert_eq!(
            find("prvs=1791486e80=members-bounces+owner=example.net@lists.example.org"),
            suffix("members", "bounces")
        );
        // Confirmation replies go to LIST-confirm+COOKIE@.
        assert_eq!(
            find("members-confirm+0123456789abcdef@lists.example.org"),
            suffix("members", "confirm")
        );
        // Mailman has no -editor address; noreply@ is the site's.
        assert_eq!(find("members-editor@lists.example.org"), None);
        assert_eq!(find("noreply@lists.example.org"), None);
    }
}
