//! The list server's socket (`milter.trusted_listen`): MAIL and RCPT are
//! not answered there, and every message gets the same outcome as on
//! `milter.listen` or a stricter one, never a weaker one and never a
//! silently dropped recipient (src/milter/carry.rs says why). Each
//! scenario is played on both sockets, the way Postfix plays it: a refused
//! MAIL ends the transaction, refused recipients are not sent on, an
//! accept ends the milter's part.

use listwarden_test_support as support;

use indymilter_test::{MacroStage, ProtoOpts, Status, TestConnection};
use listwarden::milter::Door;
use listwarden_core::address::{Address, prvs};
use support::Milter;

const STRANGER: [u8; 4] = [203, 0, 113, 7];
const LIST_SERVER: [u8; 4] = [127, 0, 0, 1];

fn config(extra: &str) -> String {
    let signing = support::signing_block();
    format!(
        "milter:\n  listen: inet:127.0.0.1:8890\n  trusted_listen: inet:127.0.0.1:8891\n\
         trusted_networks: [127.0.0.1/32]\n\
         {signing}{extra}\
         lists:\n  - address: members@lists.example.org\n"
    )
}

/// Both sockets over the same config.
async fn both(yaml: &str) -> (Milter, Milter) {
    let any = Milter::start_door(Milter::shared(yaml), Door::Any).await;
    let list = Milter::start_door(Milter::shared(yaml), Door::ListServer).await;
    (any, list)
}

struct Msg<'a> {
    ip: [u8; 4],
    auth: Option<&'a str>,
    sender: &'a str,
    rcpts: Vec<String>,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a str,
}

impl<'a> Msg<'a> {
    fn new(ip: [u8; 4], sender: &'a str, rcpts: &[&str]) -> Msg<'a> {
        Msg {
            ip,
            auth: None,
            sender,
            rcpts: rcpts.iter().map(|r| r.to_string()).collect(),
            headers: vec![("From", "carol@example.org"), ("Subject", "hello")],
            body: "hello\r\n",
        }
    }
}

/// What the client saw.
#[derive(Debug, PartialEq)]
struct Seen {
    /// The answers to MAIL and each RCPT.
    envelope: Vec<String>,
    /// How the message ended: a reply (`550 5.7.1 ...`), `accept`,
    /// `continue` (end of message, changes applied), or `no recipients`
    /// (every one refused: Postfix answers DATA itself).
    end: String,
    /// The changes made at end of message.
    actions: Vec<String>,
}

fn show(s: &Status) -> String {
    match s {
        Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => {
            m.to_string_lossy().into_owned()
        }
        other => format!("{other:?}").to_lowercase(),
    }
}

fn refuses(s: &Status) -> bool {
    matches!(s, Status::Reject { .. } | Status::Tempfail { .. })
}

async fn play(m: &Milter, msg: &Msg<'_>) -> Seen {
    let mut conn = TestConnection::open(m.addr()).await.unwrap();
    conn.connect("client.example", (msg.ip, 40000))
        .await
        .unwrap();
    if let Some(auth) = msg.auth {
        conn.macros(MacroStage::Mail, [("{auth_authen}", auth)])
            .await
            .unwrap();
    }
    let mut seen = Seen {
        envelope: Vec::new(),
        end: String::new(),
        actions: Vec::new(),
    };
    let status = conn.mail([msg.sender]).await.unwrap();
    seen.envelope.push(show(&status));
    if refuses(&status) || status == Status::Accept {
        seen.end = show(&status);
        conn.close().await.unwrap();
        return seen;
    }
    let mut accepted = 0;
    for r in &msg.rcpts {
        let status = conn.rcpt([r.as_str()]).await.unwrap();
        seen.envelope.push(show(&status));
        if !refuses(&status) {
            accepted += 1;
        }
    }
    if accepted == 0 {
        seen.end = "no recipients".into();
        conn.close().await.unwrap();
        return seen;
    }
    for (name, value) in &msg.headers {
        conn.header(*name, *value).await.unwrap();
    }
    let status = conn.eoh().await.unwrap();
    if status != Status::Continue {
        seen.end = show(&status);
        conn.close().await.unwrap();
        return seen;
    }
    conn.body(msg.body.as_bytes().to_vec()).await.unwrap();
    let (actions, status) = conn.eom().await.unwrap();
    seen.end = show(&status);
    seen.actions = actions.actions.iter().map(|a| format!("{a:?}")).collect();
    conn.close().await.unwrap();
    seen
}

async fn stop(pair: (Milter, Milter)) {
    pair.0.stop().await;
    pair.1.stop().await;
}

#[tokio::test]
async fn the_trusted_socket_leaves_mail_and_rcpt_unanswered() {
    let pair = both(&config("")).await;
    let plain = TestConnection::open(pair.0.addr()).await.unwrap();
    let trusted = TestConnection::open(pair.1.addr()).await.unwrap();
    let nr = ProtoOpts::NOREPLY_MAIL | ProtoOpts::NOREPLY_RCPT;
    assert!(!plain.negotiated_opts().intersects(nr));
    assert!(trusted.negotiated_opts().contains(nr));
    // What the other socket leaves unanswered, this one does too.
    for opt in [ProtoOpts::NOREPLY_CONNECT, ProtoOpts::NOREPLY_HEADER] {
        assert!(trusted.negotiated_opts().contains(opt), "{opt:?}");
    }
    plain.close().await.unwrap();
    trusted.close().await.unwrap();
    // An MTA that cannot leave MAIL unanswered: both are answered.
    let mut old = TestConnection::configure()
        .available_opts(ProtoOpts::all() - ProtoOpts::NOREPLY_MAIL)
        .open_tcp(pair.1.addr())
        .await
        .unwrap();
    assert!(!old.negotiated_opts().intersects(nr));
    old.connect("c", (STRANGER, 1)).await.unwrap();
    assert!(refuses(
        &old.mail(["<members@lists.example.org>"]).await.unwrap()
    ));
    old.close().await.unwrap();
    stop(pair).await;
}

#[tokio::test]
async fn a_list_post_is_signed_alike_with_no_answer_per_recipient() {
    let pair = both(&config("")).await;
    let rcpts: Vec<String> = (0..500).map(|i| format!("<m{i}@example.net>")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let msg = Msg::new(LIST_SERVER, "<members-bounces@lists.example.org>", &rcpts);
    let plain = play(&pair.0, &msg).await;
    let trusted = play(&pair.1, &msg).await;
    assert!(plain.envelope.iter().all(|s| s == "continue"));
    assert!(trusted.envelope.iter().all(|s| s == "noreply"));
    assert_eq!(plain.end, "continue");
    assert_eq!(trusted.end, plain.end);
    assert!(
        plain.actions.iter().any(|a| a.contains("ChangeSender")),
        "{plain:?}"
    );
    assert_eq!(trusted.actions, plain.actions);
    stop(pair).await;
}

#[tokio::test]
async fn a_bounce_from_the_list_server_to_a_bounce_address_is_handled_alike() {
    let pair = both(&config("")).await;
    let mut msg = Msg::new(LIST_SERVER, "<>", &["<members-bounces@lists.example.org>"]);
    msg.headers = vec![
        ("From", "MAILER-DAEMON@lists.example.org"),
        ("X-Listwarden-Bounce", "forged"),
        (
            "Content-Type",
            "multipart/report; report-type=delivery-status; boundary=b",
        ),
    ];
    msg.body = "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; gone@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n";
    let plain = play(&pair.0, &msg).await;
    let trusted = play(&pair.1, &msg).await;
    assert_eq!(plain.envelope, ["continue", "continue"]);
    assert_eq!(plain.end, "continue");
    assert_eq!(trusted.end, plain.end);
    assert!(!plain.actions.is_empty(), "{plain:?}");
    assert_eq!(trusted.actions, plain.actions);
    stop(pair).await;
}

#[tokio::test]
async fn backscatter_is_refused_for_good_at_end_of_message() {
    // A misrouted stranger: every recipient is refused with 5xx, so is the
    // message (a 451 would make an innocent MTA retry it for days).
    let pair = both(&config("")).await;
    let msg = Msg::new(STRANGER, "<>", &["<members-bounces@lists.example.org>"]);
    let plain = play(&pair.0, &msg).await;
    let trusted = play(&pair.1, &msg).await;
    assert!(plain.envelope[1].starts_with("550 5.7.1"), "{plain:?}");
    assert_eq!(plain.end, "no recipients");
    assert_eq!(trusted.end, plain.envelope[1]);
    stop(pair).await;
}

#[tokio::test]
async fn an_untrusted_client_on_the_trusted_socket_gets_451_never_an_accept() {
    let pair = both(&config("")).await;
    let msg = Msg::new(
        STRANGER,
        "<alice@example.net>",
        &["<members@lists.example.org>"],
    );
    let plain = play(&pair.0, &msg).await;
    let trusted = play(&pair.1, &msg).await;
    assert_eq!(plain.end, "accept");
    assert!(trusted.end.starts_with("451 4.3.5"), "{trusted:?}");
    assert!(trusted.actions.is_empty());

    // Its forged list sender stays a refusal for good.
    let forged = Msg::new(
        STRANGER,
        "<members@lists.example.org>",
        &["<bob@example.com>"],
    );
    let plain = play(&pair.0, &forged).await;
    let trusted = play(&pair.1, &forged).await;
    assert!(plain.end.starts_with("550 5.7.1"), "{plain:?}");
    assert_eq!(trusted.end, plain.end);

    // A forged From: refused for good at end of headers stays so: the
    // stronger answer wins over the carried 451.
    let mut from = Msg::new(STRANGER, "<alice@example.net>", &["<bob@example.com>"]);
    from.headers = vec![("From", "members@lists.example.org")];
    let plain = play(&pair.0, &from).await;
    let trusted = play(&pair.1, &from).await;
    assert!(plain.end.starts_with("550 5.7.1"), "{plain:?}");
    assert_eq!(trusted.end, plain.end);
    stop(pair).await;
}

#[tokio::test]
async fn a_sasl_only_client_is_misrouted_not_held_forever() {
    // review2 M3: a SASL login is not enough here. Its bounces are checked,
    // and one recipient always refused (550) among good ones would make
    // the whole message 451 on every retry, holding the good ones until
    // the client gives up. So it is misrouted like any stranger: 451
    // 4.3.5 and the log line naming smtpd_milter_maps.
    let pair = both(&config("")).await;
    let mut msg = Msg::new(
        STRANGER,
        "<>",
        &["<members-bounces@lists.example.org>", "<bob@example.com>"],
    );
    msg.auth = Some("moderator");
    let plain = play(&pair.0, &msg).await;
    let trusted = play(&pair.1, &msg).await;
    assert!(plain.envelope[1].starts_with("550"), "{plain:?}");
    assert_eq!(plain.envelope[2], "continue");
    assert!(trusted.end.starts_with("451 4.3.5"), "{trusted:?}");
    assert!(trusted.actions.is_empty(), "nothing deleted: {trusted:?}");

    // Its clean message is misrouted too.
    let mut clean = Msg::new(STRANGER, "<alice@example.net>", &["<bob@example.com>"]);
    clean.auth = Some("moderator");
    assert_eq!(play(&pair.0, &clean).await.end, "accept");
    assert!(play(&pair.1, &clean).await.end.starts_with("451 4.3.5"));
    stop(pair).await;
}

/// The `listwarden_messages_total` samples counted `accept`, summed.
fn accepted(m: &Milter) -> u64 {
    m.shared
        .metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("listwarden_messages_total{") && l.contains("verdict=\"accept\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn a_carried_refusal_is_decided_before_end_of_message_acts() {
    // review2 L2: a misrouted stranger's DSN to a signed bounce address
    // reaches end of message; the carried 451 is given there before
    // anything is classified, tagged, written or counted as accepted.
    let pair = both(&config("")).await;
    let ring = pair.0.shared.config.load().signing.clone().unwrap();
    let bounce = format!(
        "<{}>",
        prvs::sign(
            &Address::parse("members-bounces@lists.example.org").unwrap(),
            &ring,
            support::today()
        )
    );
    let mut msg = Msg::new(STRANGER, "<>", &[bounce.as_str()]);
    msg.headers = vec![
        ("From", "MAILER-DAEMON@example.net"),
        (
            "Content-Type",
            "multipart/report; report-type=delivery-status; boundary=b",
        ),
    ];
    msg.body = "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; gone@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n";
    let plain = play(&pair.0, &msg).await;
    assert_eq!(accepted(&pair.0), 1, "{plain:?}");
    let trusted = play(&pair.1, &msg).await;
    assert!(trusted.end.starts_with("451 4.3.5"), "{trusted:?}");
    assert_eq!(accepted(&pair.1), 0, "{}", pair.1.shared.metrics.render());
    stop(pair).await;
}

#[tokio::test]
async fn too_many_recipients_tempfail_the_message() {
    let pair = both(&config("limits:\n  max_recipients: 2\n")).await;
    let msg = Msg::new(
        STRANGER,
        "<alice@example.net>",
        &["<a@example.com>", "<b@example.com>", "<c@example.com>"],
    );
    let plain = play(&pair.0, &msg).await;
    let trusted = play(&pair.1, &msg).await;
    assert!(plain.envelope[3].starts_with("452 4.5.3"), "{plain:?}");
    assert!(trusted.end.starts_with("451 "), "{trusted:?}");
    // The list server has no limit, on either socket.
    let mut post = msg;
    post.ip = LIST_SERVER;
    let plain = play(&pair.0, &post).await;
    let trusted = play(&pair.1, &post).await;
    assert_eq!(plain.end, "accept");
    assert_eq!(trusted.end, plain.end);
    stop(pair).await;
}

#[tokio::test]
async fn a_session_reset_forgets_the_carried_answer() {
    let pair = both(&config("")).await;
    let mut conn = TestConnection::open(pair.1.addr()).await.unwrap();
    conn.connect("c", (STRANGER, 1)).await.unwrap();
    conn.mail(["<members@lists.example.org>"]).await.unwrap();
    conn.abort().await.unwrap();
    // The next message is judged afresh: misrouted (451 4.3.5), not the
    // forged sender's 550.
    assert_eq!(
        conn.mail(["<alice@example.net>"]).await.unwrap(),
        Status::Noreply
    );
    conn.rcpt(["<bob@example.com>"]).await.unwrap();
    conn.header("From", "alice@example.net").await.unwrap();
    assert_eq!(conn.eoh().await.unwrap(), Status::Continue);
    conn.body(b"hi\r\n".to_vec()).await.unwrap();
    let (_, status) = conn.eom().await.unwrap();
    assert!(show(&status).starts_with("451 4.3.5"), "{status:?}");
    conn.close().await.unwrap();
    stop(pair).await;
}
