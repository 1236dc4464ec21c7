use super::*;
use crate::address::{Key, KeyRing};
use crate::config::protected::Index;
use crate::config::{DEFAULT_VALIDITY_DAYS, List, ListDomain, Preset, Sender};
use ipnet::IpNet;

const TODAY: u64 = 20_000;
const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// What the decision reads, built in code: no YAML, no key files.
struct Site {
    lists: Vec<List>,
    domains: Vec<ListDomain>,
    index: Index,
    keys: KeyRing,
    trusted: Vec<IpNet>,
    observe: bool,
}

impl View for Site {
    fn protected(&self, addr: &Address) -> Option<Protected<'_>> {
        self.index.find(&self.lists, &self.domains, addr)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    fn signing(&self) -> Option<&KeyRing> {
        Some(&self.keys)
    }

    fn observe(&self) -> bool {
        self.observe
    }

    /// The default shield: it refuses with 550.
    fn shield_tempfail(&self) -> Option<bool> {
        Some(false)
    }

    fn network_prefix(&self, ip: IpAddr) -> u8 {
        match ip {
            IpAddr::V4(_) => crate::config::defaults::IPV4_PREFIX,
            IpAddr::V6(_) => crate::config::defaults::IPV6_PREFIX,
        }
    }
}

fn list(address: &str, preset: Preset, bounces: BounceCheck) -> List {
    let address = addr(address);
    List {
        name: address.local.clone(),
        address,
        preset,
        roles: preset.roles().iter().map(|r| r.to_string()).collect(),
        bounces,
        observe: false,
        senders: None,
        expand: None,
        unsubscribe_url: None,
    }
}

/// Five lists (the first one changed by `first`), a protected Mailman
/// domain, two keys signing with key 2, and trusted networks.
fn site_with(observe: bool, first: impl FnOnce(&mut List)) -> Site {
    let mut lists = vec![
        list(
            "members@lists.example.org",
            Preset::Listwarden,
            BounceCheck::Signed,
        ),
        List {
            observe: true,
            ..list(
                "quiet@lists.example.org",
                Preset::Listwarden,
                BounceCheck::Signed,
            )
        },
        list(
            "traced@lists.example.org",
            Preset::Listwarden,
            BounceCheck::Trace,
        ),
        list(
            "either@lists.example.org",
            Preset::Listwarden,
            BounceCheck::Either,
        ),
        list("sym@lists.example.org", Preset::Sympa, BounceCheck::Signed),
    ];
    first(&mut lists[0]);
    let keys = vec![
        Key::new(1, SECRET.as_bytes()).unwrap(),
        Key::new(2, b"fedcba9876543210fedcba9876543210").unwrap(),
    ];
    Site {
        index: Index::new(&lists),
        lists,
        domains: vec![ListDomain {
            domain: "big.example.org".into(),
            preset: Preset::Mailman3,
            bounces: BounceCheck::Signed,
            observe: false,
        }],
        keys: KeyRing::new(keys, 2, DEFAULT_VALIDITY_DAYS).unwrap(),
        trusted: ["127.0.0.1/32", "::1/128", "192.0.2.0/24"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect(),
        observe,
    }
}

fn site() -> Site {
    site_with(false, |_| {})
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn client(ip: &str, auth: Option<&str>) -> Client {
    Client {
        ip: Some(ip.parse().unwrap()),
        authenticated_as: auth.map(str::to_string),
    }
}

fn keys(site: &Site) -> &KeyRing {
    &site.keys
}

/// (verdict label, reason, list)
fn summary(v: &Verdict) -> (String, &'static str, Option<String>) {
    (v.label().to_string(), v.reason.as_str(), v.list.clone())
}

fn at_mail(cfg: &Site, c: &Client, sender: Option<&str>) -> Verdict {
    let sender = sender.map(addr);
    decide(
        &Facts {
            sender: sender.as_ref(),
            ..Facts::new(Stage::Mail, c, TODAY)
        },
        cfg,
    )
}

fn at_eoh(cfg: &Site, c: &Client, from: &[&str]) -> Verdict {
    let from: Vec<Address> = from.iter().map(|a| addr(a)).collect();
    decide(
        &Facts {
            from: &from,
            ..Facts::new(Stage::EndOfHeaders, c, TODAY)
        },
        cfg,
    )
}

fn at_rcpt(cfg: &Site, c: &Client, sender: Option<&str>, rcpt: &Address) -> Verdict {
    let sender = sender.map(addr);
    decide(
        &Facts {
            sender: sender.as_ref(),
            recipient: Some(rcpt),
            ..Facts::new(Stage::Rcpt, c, TODAY)
        },
        cfg,
    )
}

/// (name, stage, client, envelope sender, From: mailboxes, expected)
type Case<'a> = (
    &'a str,
    Stage,
    &'a Client,
    Option<&'a str>,
    Vec<&'a str>,
    (&'a str, &'a str, Option<&'a str>),
);

#[test]
fn forged_sender_table() {
    let cfg = site();
    let stranger = client("203.0.113.7", None);
    let v6_stranger = client("2001:db8::7", None);
    let trusted_net = client("192.0.2.99", None);
    let authed = client("203.0.113.7", Some("alice"));
    let unknown = Client::default();
    let m = Some("members");
    use Stage::*;
    let cases: Vec<Case> = vec![
        (
            "list as envelope sender",
            Mail,
            &stranger,
            Some("members@lists.example.org"),
            vec![],
            ("reject", "forged_envelope_sender", m),
        ),
        (
            "role address, other case",
            Mail,
            &stranger,
            Some("Members-Bounces@LISTS.example.org"),
            vec![],
            ("reject", "forged_envelope_sender", m),
        ),
        (
            "VERP detail of a role",
            Mail,
            &v6_stranger,
            Some("members-bounces+x=y.example@lists.example.org"),
            vec![],
            ("reject", "forged_envelope_sender", m),
        ),
        (
            "prvs-tagged role",
            Mail,
            &stranger,
            Some("prvs=1234abcdef=members-owner@lists.example.org"),
            vec![],
            ("reject", "forged_envelope_sender", m),
        ),
        (
            "unknown client is no exception",
            Mail,
            &unknown,
            Some("members-owner@lists.example.org"),
            vec![],
            ("reject", "forged_envelope_sender", m),
        ),
        (
            "domain-wide protection",
            Mail,
            &stranger,
            Some("anything-bounces@big.example.org"),
            vec![],
            ("reject", "forged_envelope_sender", Some("big.example.org")),
        ),
        (
            "sympa shared bounce address names its list",
            Mail,
            &stranger,
            Some("bounce+bob==a==example.net==sym@lists.example.org"),
            vec![],
            ("reject", "forged_envelope_sender", Some("sym")),
        ),
        (
            "ordinary sender",
            Mail,
            &stranger,
            Some("alice@example.net"),
            vec![],
            ("continue", "pending", None),
        ),
        (
            "null sender",
            Mail,
            &stranger,
            None,
            vec![],
            ("continue", "pending", None),
        ),
        (
            // Not accepted at MAIL: the headers must still be seen, so
            // that forged X-Listwarden-* tags are removed.
            "trusted network, not a list sender",
            Mail,
            &trusted_net,
            Some("alice@lists.example.org"),
            vec![],
            ("continue", "pending", None),
        ),
        (
            "authenticated, not a list sender",
            Mail,
            &authed,
            Some("alice@example.net"),
            vec![],
            ("continue", "pending", None),
        ),
        (
            "list in From:",
            EndOfHeaders,
            &stranger,
            None,
            vec!["members@lists.example.org"],
            ("reject", "forged_from_header", m),
        ),
        (
            "list among several authors",
            EndOfHeaders,
            &stranger,
            None,
            vec!["alice@example.net", "members@lists.example.org"],
            ("reject", "forged_from_header", m),
        ),
        (
            "clean From:",
            EndOfHeaders,
            &stranger,
            None,
            vec!["alice@example.net"],
            ("accept", "clean", None),
        ),
        (
            "no From:",
            EndOfHeaders,
            &stranger,
            None,
            vec![],
            ("accept", "clean", None),
        ),
        (
            "trusted From:",
            EndOfHeaders,
            &trusted_net,
            None,
            vec!["members@lists.example.org"],
            ("accept", "trusted_client", None),
        ),
        (
            "per-list observe",
            Mail,
            &stranger,
            Some("quiet@lists.example.org"),
            vec![],
            ("observe_reject", "forged_envelope_sender", Some("quiet")),
        ),
    ];
    for (name, stage, c, sender, from, want) in cases {
        let v = match stage {
            Mail => at_mail(&cfg, c, sender),
            _ => at_eoh(&cfg, c, &from),
        };
        let got = summary(&v);
        assert_eq!((got.0.as_str(), got.1, got.2.as_deref()), want, "{name}");
    }
}

#[test]
fn an_observed_list_in_from_does_not_cover_a_forgery_of_another() {
    let cfg = site();
    let stranger = client("203.0.113.7", None);
    for from in [
        vec!["quiet@lists.example.org", "members@lists.example.org"],
        vec!["members@lists.example.org", "quiet@lists.example.org"],
    ] {
        let v = at_eoh(&cfg, &stranger, &from);
        assert_eq!(
            summary(&v),
            (
                "reject".into(),
                "forged_from_header",
                Some("members".into())
            ),
            "{from:?}"
        );
    }
    let v = at_eoh(&cfg, &stranger, &["quiet@lists.example.org"]);
    assert_eq!(v.label(), "observe_reject");
}

#[test]
fn global_observe_marks_every_rejection() {
    let cfg = site_with(true, |_| {});
    let v = at_mail(
        &cfg,
        &client("203.0.113.7", None),
        Some("members@lists.example.org"),
    );
    assert_eq!(v.label(), "observe_reject");
}

#[test]
fn rejection_reply_says_why() {
    let v = at_mail(
        &site(),
        &client("203.0.113.7", None),
        Some("members@lists.example.org"),
    );
    let Action::Reject(reply) = v.action else {
        panic!("expected a rejection, got {v:?}")
    };
    assert_eq!((reply.code, reply.status), ("550", "5.7.1"));
    assert!(
        reply
            .text
            .contains("<members@lists.example.org> is a mailing list address"),
        "{}",
        reply.text
    );
}

#[test]
fn list_mail_from_the_list_server_is_signed() {
    let cfg = site();
    let v = at_mail(
        &cfg,
        &client("127.0.0.1", None),
        Some("members-bounces@lists.example.org"),
    );
    assert_eq!(v.action, Action::Continue, "signing needs end of message");
    let Effect::SignSender(signed) = &v.effect else {
        panic!("expected signing, got {v:?}")
    };
    assert!(
        signed.local.starts_with("prvs=2"),
        "signed with key 2: {signed}"
    );
    assert!(matches!(
        prvs::verify(signed, keys(&cfg), TODAY),
        PrvsResult::Valid { .. }
    ));
    // An already signed sender is not signed twice.
    let v = at_mail(&cfg, &client("127.0.0.1", None), Some(&signed.to_string()));
    assert_eq!(v.effect, Effect::None);
    // Mail from the list server that is not list mail goes on unchanged
    // (accepted at end of headers, once forged tags could be seen).
    let v = at_mail(
        &cfg,
        &client("127.0.0.1", None),
        Some("root@lists.example.org"),
    );
    assert_eq!((v.action, v.effect), (Action::Continue, Effect::None));
    // Only the address the list sends from is signed: the posting address
    // and other roles never carry a bounce, so no tag is minted for them.
    for other in [
        "members@lists.example.org",
        "members-owner@lists.example.org",
    ] {
        let v = at_mail(&cfg, &client("127.0.0.1", None), Some(other));
        assert_eq!(
            (v.action, v.effect),
            (Action::Continue, Effect::None),
            "{other}"
        );
    }
}

/// Any account holder may send as a list that names no senders; signing a
/// VERP form for them would hand out a signature naming any member.
#[test]
fn a_sasl_login_alone_gets_no_signed_address_that_names_a_member() {
    let cfg = site();
    let verp = Some("members-bounces+victim=example.com@lists.example.org");
    let v = at_mail(&cfg, &client("203.0.113.7", Some("alice")), verp);
    assert_eq!((v.action, v.effect), (Action::Continue, Effect::None));
    // The exact address is still signed for them; the list server signs
    // VERP forms too.
    let v = at_mail(
        &cfg,
        &client("203.0.113.7", Some("alice")),
        Some("members-bounces@lists.example.org"),
    );
    assert!(matches!(v.effect, Effect::SignSender(_)), "{v:?}");
    let v = at_mail(&cfg, &client("127.0.0.1", None), verp);
    assert!(matches!(v.effect, Effect::SignSender(_)), "{v:?}");
}

#[test]
fn senders_limit_who_may_send_as_a_list_and_get_it_signed() {
    let cfg = site_with(false, |members| {
        members.senders = Some(vec![
            Sender::Sasl("listbot".into()),
            Sender::Network("10.1.2.0/24".parse().unwrap()),
        ])
    });
    let bounces = Some("members-bounces@lists.example.org");
    // A trusted network that the list does not name is a forger for it.
    let v = at_mail(&cfg, &client("192.0.2.99", None), bounces);
    assert_eq!(summary(&v).1, "forged_envelope_sender");
    let v = at_eoh(
        &cfg,
        &client("192.0.2.99", None),
        &["members@lists.example.org"],
    );
    assert_eq!(summary(&v).1, "forged_from_header");
    // Another SASL login too.
    let v = at_mail(&cfg, &client("203.0.113.7", Some("alice")), bounces);
    assert_eq!(summary(&v).1, "forged_envelope_sender");
    // The named login and network are signed.
    for c in [
        client("203.0.113.7", Some("listbot")),
        client("10.1.2.3", None),
    ] {
        let v = at_mail(&cfg, &c, bounces);
        assert!(matches!(v.effect, Effect::SignSender(_)), "{c:?}: {v:?}");
    }
    // Other lists keep the default: any trusted client.
    let v = at_mail(
        &cfg,
        &client("192.0.2.99", None),
        Some("quiet@lists.example.org"),
    );
    assert_eq!(v.action, Action::Continue);
}

#[test]
fn prvs_counts_only_on_the_address_a_list_sends_from() {
    let cfg = site();
    let stranger = client("198.51.100.9", None);
    // Valid tags, but on addresses no list mail ever leaves from.
    for plain in [
        "members@lists.example.org",
        "members-owner@lists.example.org",
        "members-request@lists.example.org",
    ] {
        let tagged = prvs::sign(&addr(plain), keys(&cfg), TODAY);
        let v = at_rcpt(&cfg, &stranger, None, &tagged);
        assert_eq!(v.bounce, Some(BounceVerdict::Invalid), "{tagged}");
        assert!(matches!(v.action, Action::Reject(_)), "{tagged}");
    }
    // Sympa sends from LIST-owner@: a tag there is ours.
    let sym = prvs::sign(&addr("sym-owner@lists.example.org"), keys(&cfg), TODAY);
    let v = at_rcpt(&cfg, &stranger, None, &sym);
    assert_eq!(v.bounce, Some(BounceVerdict::Valid));
}

#[test]
fn bounce_addresses_are_checked_whatever_the_sender() {
    let cfg = site();
    let stranger = client("198.51.100.9", None);
    let good = prvs::sign(
        &addr("members-bounces@lists.example.org"),
        keys(&cfg),
        TODAY,
    );
    for sender in [
        "bounce-handler@evil.example",
        "mailer-daemon+x@evil.example",
        "double-bounce@evil.example",
        "alice@example.net",
    ] {
        for rcpt in [
            "members-bounces@lists.example.org",
            "members-bounces+bob=example.net@lists.example.org",
            "news-bounces@big.example.org",
        ] {
            let v = at_rcpt(&cfg, &stranger, Some(sender), &addr(rcpt));
            assert_eq!(
                v.bounce,
                Some(BounceVerdict::Unsigned),
                "{sender} -> {rcpt}"
            );
            assert!(matches!(v.action, Action::Reject(_)), "{sender} -> {rcpt}");
        }
        // A signed one passes, as from <>.
        let v = at_rcpt(&cfg, &stranger, Some(sender), &good);
        assert_eq!(v.bounce, Some(BounceVerdict::Valid), "{sender}");
    }
}

#[test]
fn a_shielded_list_defers_what_its_trace_would_have_decided() {
    let cfg = site();
    let stranger = client("198.51.100.9", None);
    let shielded = vec!["traced".to_string(), "members".to_string()];
    let at = |rcpt: &Address| {
        decide(
            &Facts {
                recipient: Some(rcpt),
                shielded: &shielded,
                ..Facts::new(Stage::Rcpt, &stranger, TODAY)
            },
            &cfg,
        )
    };
    // Trace mode: a genuine unsigned bounce is retried after the shield.
    let v = at(&addr("traced-bounces@lists.example.org"));
    assert!(
        matches!(&v.action, Action::Tempfail(r) if r.code == "451"),
        "{v:?}"
    );
    assert_eq!(v.reason, Cause::Shielded);
    // Signed mode: unsigned was never ours; refused as before.
    let v = at(&addr("members-bounces@lists.example.org"));
    assert!(matches!(v.action, Action::Reject(_)), "{v:?}");
}

#[test]
fn bounces_in_signed_mode() {
    let cfg = site();
    let stranger = client("198.51.100.9", None);
    let plain = addr("members-bounces@lists.example.org");
    let good = prvs::sign(&plain, keys(&cfg), TODAY - 3);
    let expired = prvs::sign(&plain, keys(&cfg), TODAY - 30);
    let mut forged = good.clone();
    forged.local.replace_range(
        9..10,
        if &forged.local[9..10] == "0" {
            "1"
        } else {
            "0"
        },
    );

    let v = at_rcpt(&cfg, &stranger, None, &good);
    assert_eq!(
        (v.action.clone(), v.bounce),
        (Action::Continue, Some(BounceVerdict::Valid))
    );
    assert_eq!(
        v.effect,
        Effect::RewriteRecipient {
            from: good.clone(),
            to: plain.clone()
        }
    );
    // MAILER-DAEMON counts as a bounce sender too, in any case.
    let v = at_rcpt(&cfg, &stranger, Some("MAILER-DAEMON@mx.example.net"), &good);
    assert_eq!(v.bounce, Some(BounceVerdict::Valid));

    for (rcpt, want, text) in [
        (&plain, BounceVerdict::Unsigned, "carries no signature"),
        (&expired, BounceVerdict::Expired, "has expired"),
        (&forged, BounceVerdict::Invalid, "is not valid"),
    ] {
        let v = at_rcpt(&cfg, &stranger, None, rcpt);
        assert_eq!(v.bounce, Some(want), "{rcpt}");
        let Action::Reject(reply) = &v.action else {
            panic!("{rcpt}: expected a rejection, got {v:?}")
        };
        assert_eq!((reply.code, reply.status), ("550", "5.7.1"));
        assert!(reply.text.contains(text), "{}", reply.text);
        assert_eq!(v.reason, Cause::BounceNotOurs);
    }
    // The posting address never sends list mail, so a bounce to it is
    // never ours either.
    let v = at_rcpt(&cfg, &stranger, None, &addr("members@lists.example.org"));
    assert!(matches!(v.action, Action::Reject(_)));
}

#[test]
fn what_is_not_a_list_bounce_passes_the_rcpt_check() {
    let cfg = site();
    let plain = addr("members-bounces@lists.example.org");
    // Not a bounce: an ordinary sender may write to a role address that
    // people write to (not a bounce address).
    let v = at_rcpt(
        &cfg,
        &client("198.51.100.9", None),
        Some("alice@example.net"),
        &addr("members-owner@lists.example.org"),
    );
    assert_eq!((v.action, v.bounce), (Action::Continue, None));
    // Not a list address.
    let v = at_rcpt(
        &cfg,
        &client("198.51.100.9", None),
        None,
        &addr("bob@example.net"),
    );
    assert_eq!((v.action, v.bounce), (Action::Continue, None));
    // The list server itself (non_smtpd path) is never refused a recipient.
    let v = at_rcpt(&cfg, &client("127.0.0.1", None), None, &plain);
    assert_eq!((v.action, v.bounce), (Action::Continue, None));
}

#[test]
fn trace_and_either_modes_defer_to_end_of_message() {
    let cfg = site();
    let stranger = client("198.51.100.9", None);
    let traced = addr("traced-bounces@lists.example.org");
    let v = at_rcpt(&cfg, &stranger, None, &traced);
    assert_eq!(
        (v.action.clone(), v.effect.clone()),
        (Action::Continue, Effect::NeedsTrace)
    );

    let either = addr("either-bounces@lists.example.org");
    let v = at_rcpt(&cfg, &stranger, None, &either);
    assert_eq!(v.effect, Effect::NeedsTrace, "unsigned: the trace decides");
    let signed = prvs::sign(&either, keys(&cfg), TODAY);
    let v = at_rcpt(&cfg, &stranger, None, &signed);
    assert_eq!(
        v.bounce,
        Some(BounceVerdict::Valid),
        "a valid signature is enough"
    );

    let eom = |found| {
        decide(
            &Facts {
                recipient: Some(&traced),
                trace_found: Some(found),
                ..Facts::new(Stage::EndOfMessage, &stranger, TODAY)
            },
            &cfg,
        )
    };
    let ok = eom(true);
    assert_eq!(
        (ok.action, ok.bounce, ok.list.as_deref()),
        (Action::Accept, Some(BounceVerdict::TraceOk), Some("traced"))
    );
    let bad = eom(false);
    assert!(matches!(bad.action, Action::Reject(_)));
    assert_eq!(bad.bounce, Some(BounceVerdict::TraceFail));
}

#[test]
fn signed_verp_of_our_expander_is_valid() {
    let cfg = site();
    let bounce = addr("members-bounces@lists.example.org");
    let member = addr("bob@example.net");
    let tagged = crate::address::verp::sign_verp(&bounce, &member, keys(&cfg), TODAY).unwrap();
    let v = at_rcpt(&cfg, &client("198.51.100.9", None), None, &tagged);
    assert_eq!(
        (v.bounce, v.effect),
        (Some(BounceVerdict::Valid), Effect::None)
    );
}

#[test]
fn key_rotation_keeps_old_signatures_valid() {
    let plain = addr("members-bounces@lists.example.org");
    // Signed under key 1 before the switch to key 2.
    let old_ring = KeyRing::new(
        vec![crate::address::Key::new(1, SECRET.as_bytes()).unwrap()],
        1,
        7,
    )
    .unwrap();
    let old = prvs::sign(&plain, &old_ring, TODAY - 1);
    let v = at_rcpt(&site(), &client("198.51.100.9", None), None, &old);
    assert_eq!(v.bounce, Some(BounceVerdict::Valid));
}

#[test]
fn a_long_budget_key_is_hashed_not_dropped() {
    // A valid signed address near the length limit made an `addr:` key the
    // stores refuse, and a refused key used to count as allowed.
    let long = format!("addr:{}@lists.example.org", "a".repeat(600));
    let c = Charge::new(Budget::Address, long.clone());
    assert!(c.key.len() <= crate::ratelimit::MAX_KEY_LEN, "{}", c.key);
    assert!(c.key.starts_with("sha256:"));
    assert_eq!(c, Charge::new(Budget::Address, long), "stable");
    let short = Charge::new(Budget::Address, "addr:a@b".into());
    assert_eq!(short.key, "addr:a@b");
}
