//! The feedback-report corpus (tests/feedback/corpus, see its README):
//! Yahoo CFL, AOL, Microsoft JMRP, Comcast-style and pasted reports about
//! Mailman 3, Sympa and expander list mail, plus forged and foreign ones.
//! Each file's `X-Fixture-Expect:` line says what attribution must find;
//! `{{prvs:ADDR}}`, `{{verp:LIST-BOUNCE:MEMBER}}` (and their `forged-`
//! forms, signed with a key that is not ours) are signed at test time so
//! the signatures are inside today's window.
//!
//! Prints the accuracy; asserts ≥ 99% and no action from a report whose
//! signature does not verify.

use listwarden::address::{Address, Key, KeyRing, prvs, verp};
use listwarden::config::Config;
use listwarden::feedback::{Action, MemberSource, assess};
use std::collections::BTreeMap;
use std::path::Path;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const OTHER: &[u8] = b"fedcba9876543210fedcba9876543210";

fn config(dir: &Path) -> Config {
    std::fs::write(dir.join("1.key"), SECRET).unwrap();
    std::fs::write(dir.join("mm.pass"), "restpass\n").unwrap();
    let yaml = "milter:\n  listen: inet:127.0.0.1:1\n\
        signing:\n  keys: [{id: 1, file: 1.key}]\n  sign_with: 1\n\
        trace:\n  message_id_domains: [lists.example.org]\n\
        lists:\n  - {address: members@lists.example.org, preset: mailman3}\n\
        \x20 - {address: talk@lists.example.org, preset: sympa}\n\
        \x20 - {address: news@lists.example.org, preset: listwarden}\n\
        feedback:\n  addresses: [fbl@lists.example.org]\n  queue: queue\n\
        \x20 mailman3: {url: \"http://127.0.0.1:8001/3.1\", user: restadmin, password_file: mm.pass}\n";
    Config::parse(yaml, &dir.join("listwarden.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

fn ring(secret: &[u8]) -> KeyRing {
    KeyRing::new(
        vec![Key::new(1, secret).unwrap()],
        1,
        listwarden::config::DEFAULT_VALIDITY_DAYS,
    )
    .unwrap()
}

/// Replaces the `{{...}}` placeholders with addresses signed today.
fn sign_placeholders(text: &str, today: u64) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").unwrap() + start;
        let spec = &rest[start + 2..end];
        let (kind, arg) = spec.split_once(':').unwrap();
        let keys = if kind.starts_with("forged-") {
            ring(OTHER)
        } else {
            ring(SECRET)
        };
        let signed = match kind.trim_start_matches("forged-") {
            "prvs" => prvs::sign(&Address::parse(arg).unwrap(), &keys, today),
            "verp" => {
                let (bounce, member) = arg.split_once(':').unwrap();
                verp::sign_verp(
                    &Address::parse(bounce).unwrap(),
                    &Address::parse(member).unwrap(),
                    &keys,
                    today,
                )
                .unwrap()
            }
            other => panic!("unknown placeholder {other}"),
        };
        out.push_str(&signed.to_string());
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

#[derive(Default, Debug)]
struct Tally {
    reports: usize,
    list_right: usize,
    member_expected: usize,
    member_right: usize,
    reported_expected: usize,
    reported_right: usize,
    acted: usize,
    forged: usize,
    forged_acted: usize,
    forged_attributed: usize,
}

#[test]
fn corpus_attribution_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let today = listwarden::policy::day_of(listwarden::unix_now());
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/feedback/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    assert!(files.len() >= 50, "corpus has {} reports", files.len());
    let mut by_form: BTreeMap<String, Tally> = BTreeMap::new();
    let mut total = Tally::default();
    let mut wrong = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let (expect_line, body) = text.split_once("\r\n").unwrap();
        let expect: BTreeMap<&str, &str> = expect_line
            .trim_start_matches("X-Fixture-Expect:")
            .split(';')
            .filter_map(|kv| kv.trim().split_once('='))
            .collect();
        let raw = sign_placeholders(body, today);
        let a = assess(raw.as_bytes(), &config, today).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let form = name.split("--").next().unwrap().to_string();
        let acts = matches!(a.action, Action::Unsubscribe | Action::Suspend);
        let got_list = a.attribution.list.as_deref().unwrap_or("none");
        let got_member = a
            .attribution
            .member
            .as_ref()
            .map(|m| m.to_string().to_ascii_lowercase());
        for t in [by_form.entry(form).or_default(), &mut total] {
            t.reports += 1;
            let list_ok = got_list == expect["list"];
            t.list_right += usize::from(list_ok);
            t.acted += usize::from(acts);
            if expect["signature"] == "invalid" {
                t.forged += 1;
                t.forged_acted += usize::from(acts);
                t.forged_attributed += usize::from(a.attribution.list.is_some());
            }
            match expect["member"] {
                "none" => {}
                "reported" => {
                    t.reported_expected += 1;
                    // Right when the reporter named the real member (the
                    // fixture names it userN@ in the message's Received).
                    let right = got_member.as_deref().is_some_and(|m| {
                        a.attribution.member_from == MemberSource::Reported && m.starts_with("user")
                    });
                    t.reported_right += usize::from(right);
                }
                member => {
                    t.member_expected += 1;
                    let ok = got_member.as_deref() == Some(member)
                        && a.attribution.member_from == MemberSource::Signed;
                    t.member_right += usize::from(ok);
                }
            }
        }
        let member_ok = match expect["member"] {
            "none" | "reported" => true,
            m => got_member.as_deref() == Some(m),
        };
        if got_list != expect["list"]
            || !member_ok
            || acts != (expect["acts"] == "yes")
            || a.attribution.signature.as_str() != expect["signature"]
        {
            wrong.push(format!("{name}: got {a:?}"));
        }
    }
    println!(
        "| form | reports | list right | signed member right | reporter's member right | unsubscribes | forged | forged acted on |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (form, t) in by_form.iter().chain([(&"ALL".to_string(), &total)]) {
        println!(
            "| {form} | {} | {} | {}/{} | {}/{} | {} | {} | {} |",
            t.reports,
            t.list_right,
            t.member_right,
            t.member_expected,
            t.reported_right,
            t.reported_expected,
            t.acted,
            t.forged,
            t.forged_acted
        );
    }
    let list_accuracy = total.list_right as f64 / total.reports as f64;
    let member_accuracy = total.member_right as f64 / total.member_expected as f64;
    println!(
        "feedback-corpus: reports={} list_accuracy={list_accuracy:.4} signed_member_accuracy={member_accuracy:.4} forged={} forged_acted={} forged_attributed={}",
        total.reports, total.forged, total.forged_acted, total.forged_attributed
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(list_accuracy >= 0.99 && member_accuracy >= 0.99);
    assert_eq!(total.forged_acted, 0, "a forged report acted on a member");
    assert_eq!(total.forged_attributed, 0);
}

/// Through the milter: a Yahoo report to the feedback address is tagged,
/// counted, and its unsubscribe queued once; a forged one is tagged
/// unattributed and queues nothing.
#[tokio::test]
async fn the_milter_tags_counts_and_queues_a_report() {
    use listwarden_test_support::{Milter, frames};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("1.key"), SECRET).unwrap();
    std::fs::write(dir.path().join("mm.pass"), "restpass\n").unwrap();
    let queue = dir.path().join("queue");
    let yaml = format!(
        "milter:\n  listen: inet:127.0.0.1:8890\nratelimit:\n  max_keys: 1024\n\
         signing:\n  keys: [{{id: 1, file: \"{}\"}}]\n  sign_with: 1\n\
         lists:\n  - {{address: members@lists.example.org, preset: mailman3}}\n\
         feedback:\n  addresses: [fbl@lists.example.org]\n  queue: \"{}\"\n\
         \x20 mailman3: {{url: \"http://127.0.0.1:1/3.1\", user: u, password_file: \"{}\"}}\n",
        dir.path().join("1.key").display(),
        queue.display(),
        dir.path().join("mm.pass").display()
    );
    let m = Milter::start(&yaml).await;
    let today = listwarden::policy::day_of(listwarden::unix_now());
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/feedback/corpus");
    let send = |file: &str| {
        let text = std::fs::read_to_string(corpus.join(file)).unwrap();
        let (_, body) = text.split_once("\r\n").unwrap();
        sign_placeholders(body, today)
    };
    let mut tags = Vec::new();
    for file in [
        "yahoo-cfl--mailman3.eml",
        "yahoo-cfl--mailman3.eml",
        "forged--yahoo-cfl--mailman3.eml",
    ] {
        let raw = send(file);
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let mut c = m.session("198.51.100.7").await;
        let mut script = frames::mail(&[b"<feedback@arf.mail.yahoo.com>"]);
        script.extend(frames::rcpt(&[b"<fbl@lists.example.org>"]));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            match (line.starts_with([' ', '\t']), headers.last_mut()) {
                (true, Some(last)) => last.1.push_str(&format!("\r\n{line}")),
                _ => {
                    let (n, v) = line.split_once(':').unwrap();
                    headers.push((n.to_string(), v.trim_start().to_string()));
                }
            }
        }
        for (n, v) in &headers {
            script.extend(frames::header(n.as_bytes(), v.as_bytes()));
        }
        script.extend(frames::eoh());
        let r = c.pipeline(&script, 3).await.unwrap();
        assert!(r.iter().all(|r| r.cmd == b'c'), "{r:?}");
        let mut script = frames::body(body.as_bytes());
        script.extend(frames::eom());
        c.send(&script).await;
        let _ = c.reply().await.unwrap();
        let (actions, last) = c.final_reply().await.unwrap();
        assert_eq!(last.cmd, b'c', "{last:?}");
        for a in actions.iter().filter(|a| a.cmd == b'h') {
            let s = a.strings();
            if s.first() == Some(&&b"X-Listwarden-Feedback"[..]) {
                tags.push(String::from_utf8_lossy(s[1]).to_string());
            }
        }
        c.close().await;
    }
    assert_eq!(tags.len(), 3, "{tags:?}");
    assert!(
        tags[0]
            .contains("list=members; member=user1@yahoo.com; member_from=signed; signature=valid"),
        "{}",
        tags[0]
    );
    assert!(tags[0].contains("action=unsubscribe"));
    assert!(
        tags[2].contains("list=unattributed")
            && tags[2].contains("signature=invalid")
            && tags[2].contains("action=count_only"),
        "{}",
        tags[2]
    );
    let jobs = listwarden::feedback::queue::Queue::new(&queue)
        .pending()
        .unwrap();
    assert_eq!(jobs.len(), 1, "the same report twice is one job");
    assert_eq!(jobs[0].1.member, "user1@yahoo.com");
    let metrics = m.shared.metrics.render();
    assert!(metrics.contains("listwarden_feedback_reports_total{list=\"members\",provider=\"yahoo\",result=\"attributed\"} 2"), "{metrics}");
    assert!(metrics.contains("result=\"signature_invalid\"} 1"));
    m.stop().await;
}

/// The worker against a stand-in for Mailman's REST API (a loopback
/// socket): while it answers 503 the job stays queued; once it answers
/// 204 the member is removed and the job moves to done/.
#[test]
fn the_worker_retries_until_the_list_manager_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (port, server) = stand_in(&["503 Service Unavailable", "204 No Content"]);
    std::fs::write(dir.path().join("mm.pass"), "restpass\n").unwrap();
    let yaml = format!(
        "milter:\n  listen: inet:127.0.0.1:1\n\
         lists:\n  - {{address: members@lists.example.org, preset: mailman3}}\n\
         feedback:\n  addresses: [fbl@lists.example.org]\n  queue: queue\n  retry: 1s\n\
         \x20 mailman3: {{url: \"http://127.0.0.1:{port}/3.1\", user: restadmin, password_file: mm.pass}}\n"
    );
    let config = std::sync::Arc::new(
        Config::parse(&yaml, &dir.path().join("c.yaml")).unwrap_or_else(|e| panic!("{e}")),
    );
    let queue = listwarden::feedback::queue::Queue::new(&dir.path().join("queue"));
    queue
        .push(&listwarden::feedback::queue::Job {
            list: "members".into(),
            member: "ann+x@yahoo.com".into(),
            action: "unsubscribe".into(),
            report_id: "<r1@yahoo.example>".into(),
            feedback_type: "abuse".into(),
            provider: "yahoo".into(),
            received: 0,
            attempts: 0,
            last_error: None,
        })
        .unwrap();
    // The worker's log lines, as the daemon writes them.
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || Capture(sink.clone()))
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let cfg = config.clone();
        listwarden::feedback::worker::run(move || cfg.clone(), true, || false);
        assert_eq!(queue.len(), 1, "kept while the manager is down");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let cfg = config.clone();
        listwarden::feedback::worker::run(move || cfg.clone(), true, || false);
    });
    assert_eq!(queue.len(), 0, "done once it is back");
    // Each line names the list and the member once, as fields.
    let log = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains("will retry: mailman3 answered 503"),
        "{log}"
    );
    assert!(
        lines[1].contains("complaint handled: mailman3 answered 204"),
        "{log}"
    );
    for line in lines {
        assert_eq!(line.matches("ann+x@yahoo.com").count(), 1, "{line}");
        assert_eq!(line.matches("member=").count(), 1, "{line}");
        assert_eq!(line.matches("list=").count(), 1, "{line}");
        assert!(line.contains("list=\"members\""), "{line}");
    }
    let requests = server.join().unwrap();
    assert!(
        requests[1].starts_with(
            "DELETE /3.1/lists/members.lists.example.org/member/ann%2Bx%40yahoo.com HTTP/1.1"
        ),
        "{}",
        requests[1]
    );
    assert!(requests[1].contains("Authorization: Basic cmVzdGFkbWluOnJlc3RwYXNz"));
}

/// Mailman answers 404 for a member who is gone, and also for a list it
/// does not know: the worker asks for the list before it calls the job
/// done, and retries while the list is not there.
#[test]
fn a_404_is_already_gone_only_when_the_list_is_there() {
    let dir = tempfile::tempdir().unwrap();
    // DELETE member: 404; GET list: 404 (unknown), then the same with the
    // list there: 404, 200.
    let (port, server) = stand_in(&["404 Not Found", "404 Not Found", "404 Not Found", "200 OK"]);
    std::fs::write(dir.path().join("mm.pass"), "restpass\n").unwrap();
    let yaml = format!(
        "milter:\n  listen: inet:127.0.0.1:1\n\
         lists:\n  - {{address: members@lists.example.org, preset: mailman3}}\n\
         feedback:\n  addresses: [fbl@lists.example.org]\n  queue: queue\n\
         \x20 mailman3: {{url: \"http://127.0.0.1:{port}/3.1\", user: restadmin, password_file: mm.pass}}\n"
    );
    let config = Config::parse(&yaml, &dir.path().join("c.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let job = listwarden::feedback::queue::Job {
        list: "members".into(),
        member: "ann@yahoo.com".into(),
        action: "unsubscribe".into(),
        report_id: "<r1@yahoo.example>".into(),
        feedback_type: "abuse".into(),
        provider: "yahoo".into(),
        received: 0,
        attempts: 0,
        last_error: None,
    };
    use listwarden::feedback::worker::{Outcome, apply};
    let first = apply(&job, &config);
    assert!(
        matches!(&first, Outcome::Retry(why) if why.contains("404 for the list members.lists.example.org")),
        "{first:?}"
    );
    let second = apply(&job, &config);
    assert!(
        matches!(&second, Outcome::Done(why) if why.contains("already gone")),
        "{second:?}"
    );
    let requests = server.join().unwrap();
    assert_eq!(
        requests[1].lines().next(),
        Some("GET /3.1/lists/members.lists.example.org HTTP/1.1"),
        "{requests:?}"
    );
}

/// A stand-in for Mailman's REST API on loopback: its port, and the
/// requests it read, one per answer given (in order).
fn stand_in(answers: &'static [&'static str]) -> (u16, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for answer in answers {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            requests.push(String::from_utf8_lossy(&buf[..n]).to_string());
            write!(s, "HTTP/1.1 {answer}\r\nContent-Length: 0\r\n\r\n").unwrap();
        }
        requests
    });
    (port, server)
}

/// A log writer into memory.
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
