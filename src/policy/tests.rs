use super::*;
use std::path::Path;

fn config(extra: &str) -> Config {
    let src = format!(
        "milter:\n  listen: inet:127.0.0.1:8890\ntrusted_networks: [127.0.0.1/32, \"::1/128\", 192.0.2.0/24]\n{extra}lists:\n  - address: members@lists.example.org\n  - address: quiet@lists.example.org\n    observe: true\n"
    );
    Config::parse(&src, Path::new("test.yaml")).expect("test config")
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

/// (verdict label, reason, list)
fn run(
    cfg: &Config,
    stage: Stage,
    client: &Client,
    sender: Option<&str>,
    from: &[&str],
) -> (String, &'static str, Option<String>) {
    let sender = sender.map(addr);
    let from: Vec<Address> = from.iter().map(|a| addr(a)).collect();
    let v = decide(
        &Facts {
            stage,
            client,
            sender: sender.as_ref(),
            from: &from,
        },
        cfg,
    );
    (v.label().to_string(), v.reason.as_str(), v.list)
}

/// (name, stage, client, envelope sender, From: mailboxes, expected)
type Case<'a> = (
    &'a str,
    Stage,
    &'a Client,
    Option<&'a str>,
    Vec<&'a str>,
    (&'a str, &'a str, Option<String>),
);

#[test]
fn forged_sender_table() {
    let cfg = config("");
    let stranger = client("203.0.113.7", None);
    let v6_stranger = client("2001:db8::7", None);
    let trusted = client("127.0.0.1", None);
    let trusted_net = client("192.0.2.99", None);
    let authed = client("203.0.113.7", Some("alice"));
    let unknown = Client::default();
    let list = Some("members".to_string());
    use Stage::*;
    let cases: Vec<Case> = vec![
        (
            "list as envelope sender",
            Mail,
            &stranger,
            Some("members@lists.example.org"),
            vec![],
            ("reject", "forged_envelope_sender", list.clone()),
        ),
        (
            "role address, other case",
            Mail,
            &stranger,
            Some("Members-Bounces@LISTS.example.org"),
            vec![],
            ("reject", "forged_envelope_sender", list.clone()),
        ),
        (
            "VERP detail of a role",
            Mail,
            &v6_stranger,
            Some("members-bounces+x=y.example@lists.example.org"),
            vec![],
            ("reject", "forged_envelope_sender", list.clone()),
        ),
        (
            "unknown client is no exception",
            Mail,
            &unknown,
            Some("members-owner@lists.example.org"),
            vec![],
            ("reject", "forged_envelope_sender", list.clone()),
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
            "trusted host",
            Mail,
            &trusted,
            Some("members@lists.example.org"),
            vec![],
            ("accept", "trusted_client", None),
        ),
        (
            "trusted network",
            Mail,
            &trusted_net,
            Some("members@lists.example.org"),
            vec![],
            ("accept", "trusted_client", None),
        ),
        (
            "authenticated",
            Mail,
            &authed,
            Some("members@lists.example.org"),
            vec![],
            ("accept", "trusted_client", None),
        ),
        (
            "list in From:",
            EndOfHeaders,
            &stranger,
            Some("alice@example.net"),
            vec!["members@lists.example.org"],
            ("reject", "forged_from_header", list.clone()),
        ),
        (
            "list among several authors",
            EndOfHeaders,
            &stranger,
            Some("alice@example.net"),
            vec!["alice@example.net", "members@lists.example.org"],
            ("reject", "forged_from_header", list.clone()),
        ),
        (
            "clean From:",
            EndOfHeaders,
            &stranger,
            Some("alice@example.net"),
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
            &trusted,
            Some("members@lists.example.org"),
            vec!["members@lists.example.org"],
            ("accept", "trusted_client", None),
        ),
        (
            "per-list observe",
            Mail,
            &stranger,
            Some("quiet@lists.example.org"),
            vec![],
            (
                "observe_reject",
                "forged_envelope_sender",
                Some("quiet".to_string()),
            ),
        ),
    ];
    for (name, stage, c, sender, from, want) in cases {
        let got = run(&cfg, stage, c, sender, &from);
        assert_eq!((got.0.as_str(), got.1, got.2), want, "{name}");
    }
}

#[test]
fn global_observe_marks_every_rejection() {
    let cfg = config("observe: true\n");
    let got = run(
        &cfg,
        Stage::Mail,
        &client("203.0.113.7", None),
        Some("members@lists.example.org"),
        &[],
    );
    assert_eq!(got.0, "observe_reject");
}

#[test]
fn rejection_reply_says_why() {
    let cfg = config("");
    let sender = addr("members@lists.example.org");
    let c = client("203.0.113.7", None);
    let v = decide(
        &Facts {
            stage: Stage::Mail,
            client: &c,
            sender: Some(&sender),
            from: &[],
        },
        &cfg,
    );
    let Action::Reject(reply) = v.action else {
        panic!("expected a rejection, got {v:?}")
    };
    assert_eq!(reply.code, "550");
    assert_eq!(reply.status, "5.7.1");
    assert!(
        reply
            .text
            .contains("<members@lists.example.org> is a mailing list address"),
        "{}",
        reply.text
    );
}
