//! Faults C1–C3 and M1–M2 (TESTING.md, Faults): bad reloads keep the running config,
//! reloads under load and with rotated keys, the metrics endpoint under
//! abuse, and metric labels that never carry an IP or a mail address.

use listwarden_test_support as support;

use listwarden::address::{Address, prvs};
use listwarden::daemon::Reloader;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};
use support::frames::{self, Reply};
use support::{Milter, RawConn, finish_news_message_then_refused, hold_news_message, is_550};

const STRANGER: &str = "203.0.113.7";

const V1: &str = "milter:\n  listen: inet:127.0.0.1:8890\nratelimit:\n  max_keys: 1024\nlists:\n  - address: members@lists.example.org\n";

fn with_news(base: &str) -> String {
    format!("{base}  - address: news@lists.example.org\n")
}

async fn mail_is_rejected(m: &Milter, sender: &str) -> bool {
    let mut c = m.session(STRANGER).await;
    c.send(&frames::mail(&[sender.as_bytes()])).await;
    let r = c.reply().await.unwrap();
    c.close().await;
    is_550(&r)
}

// ---------------------------------------------------------------- C1

#[tokio::test]
async fn c1_invalid_reloads_are_refused_quickly_and_the_old_config_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("listwarden.yaml");
    std::fs::write(&path, V1).unwrap();
    let m = Milter::start(V1).await;
    let reloader = Reloader {
        path: path.clone(),
        shared: m.shared.clone(),
    };
    let bad_rules = dir.path().join("bad-rules.yaml");
    std::fs::write(
        &bad_rules,
        "version: 1\nrules:\n  - name: broken\n    match: { diagnostic: '([unclosed' }\n    result: { class: hard, reason: unknown }\n",
    )
    .unwrap();
    let huge_rules = dir.path().join("huge-rules.yaml");
    std::fs::File::create(&huge_rules)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    let laughs = {
        let mut y = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (name, prev) in [
            ("b", "a"),
            ("c", "b"),
            ("d", "c"),
            ("e", "d"),
            ("f", "e"),
            ("g", "f"),
            ("h", "g"),
            ("i", "h"),
        ] {
            y.push_str(&format!("{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        }
        with_news(&format!("{y}{V1}"))
    };
    // (Deeper nesting is slow to refuse: see the next test.)
    let deep = format!(
        "{}trusted_networks: {}{}\n",
        with_news(V1),
        "[".repeat(2_000),
        "]".repeat(2_000)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "invalid YAML",
            with_news(V1).replace("lists:", "lists: [").into_bytes(),
        ),
        (
            "unknown field",
            (with_news(V1) + "obsreve: true\n").into_bytes(),
        ),
        (
            "invalid value",
            with_news(V1)
                .replace("news@lists.example.org", "news-at-nowhere")
                .into_bytes(),
        ),
        (
            "bad regex",
            (with_news(V1) + &format!("classification:\n  rules: [{}]\n", bad_rules.display()))
                .into_bytes(),
        ),
        (
            "100 MB rules file",
            (with_news(V1) + &format!("classification:\n  rules: [{}]\n", huge_rules.display()))
                .into_bytes(),
        ),
        ("billion laughs", laughs.into_bytes()),
        ("deep nesting", deep.into_bytes()),
        (
            "not UTF-8",
            [with_news(V1).as_bytes(), b"observe: \xff\xfe\n"].concat(),
        ),
    ];
    for (failures, (what, text)) in (1..).zip(&cases) {
        std::fs::write(&path, text).unwrap();
        let started = Instant::now();
        assert!(reloader.reload_now().is_err(), "{what} must be refused");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what}: {:?}",
            started.elapsed()
        );
        assert_eq!(
            m.shared
                .metrics
                .config_reloads
                .with_label_values(&["failure"])
                .get(),
            failures
        );
        // The old config runs: members protected, news (only in the bad file) not.
        assert!(
            mail_is_rejected(&m, "<members@lists.example.org>").await,
            "{what}"
        );
        assert!(
            !mail_is_rejected(&m, "<news@lists.example.org>").await,
            "{what}"
        );
    }
    // A 100 MB config file is refused unread, as is a rules file.
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(100 << 20).unwrap();
    let started = Instant::now();
    assert!(reloader.reload_now().is_err());
    assert!(started.elapsed() < Duration::from_secs(1));
    // And a good file still loads afterwards.
    std::fs::write(&path, with_news(V1)).unwrap();
    reloader.reload_now().expect("valid");
    assert!(mail_is_rejected(&m, "<news@lists.example.org>").await);
    m.stop().await;
}

/// FINDINGS.md F6 (fixed in 1e7dfcb): serde_yaml (libyaml) takes time
/// quadratic in the depth of flow nesting before its recursion limit
/// applies (release build: 5,000 levels 0.09 s, 20,000 levels 2 s, 40,000
/// levels 11 s; the 1 MiB cap allows 500,000). The nesting must be refused
/// before that parse.
#[test]
fn c1_deep_nesting_is_refused_quickly() {
    let parse = |prefix: &str, depth: usize| {
        let text = format!(
            "milter:\n  listen: inet:127.0.0.1:8890\ntrusted_networks: {prefix}{}{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let started = Instant::now();
        let result = listwarden::config::Config::parse(&text, Path::new("t.yaml"));
        (result.is_err(), started.elapsed())
    };
    // Plain, and behind text that looks like the start of a quoted scalar
    // to a scanner but is part of a plain scalar to YAML (in flow context a
    // plain scalar ends at `[`, which then opens a sequence).
    for prefix in ["", "[x '", "{a: b \"", "[x, y #"] {
        let (small_refused, small) = parse(prefix, 5_000);
        let (refused, took) = parse(prefix, 20_000);
        assert!(small_refused && refused, "{prefix:?}");
        assert!(
            took < Duration::from_secs(1),
            "{prefix:?} then 20,000 levels (40 KB) took {took:?} to refuse (5,000 levels: {small:?})"
        );
    }
}

/// FINDINGS.md F4 (fixed in 1e7dfcb): the size checks used the file's
/// metadata length, which is 0 for a FIFO or a device (`/dev/zero`), and
/// then read to the end without a bound. A rules file that is a FIFO fed
/// 8 MiB must be refused after at most MAX_FILE_BYTES + 1 bytes (or not
/// read at all).
#[test]
fn c1_a_rules_file_that_is_not_a_regular_file_is_read_with_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("rules.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("mkfifo not available; skipped");
        return;
    }
    // The writer never blocks (non-blocking open and writes), so the test
    // ends whether or not listwarden opens the FIFO at all.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fed = {
        let (fifo, done) = (fifo.clone(), done.clone());
        std::thread::spawn(move || {
            use std::os::unix::fs::OpenOptionsExt;
            use std::sync::atomic::Ordering;
            const O_NONBLOCK: i32 = 0o4000;
            let chunk = vec![b'#'; 64 * 1024];
            let mut total = 0usize;
            let mut writer = None;
            while !done.load(Ordering::Relaxed) && total < 8 << 20 {
                let Some(w) = writer.as_mut() else {
                    // ENXIO until a reader has the FIFO open.
                    writer = std::fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(O_NONBLOCK)
                        .open(&fifo)
                        .ok();
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                };
                match w.write(&chunk) {
                    Ok(n) => total += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(_) => break, // the reader closed: EPIPE
                }
            }
            total
        })
    };
    let yaml = format!(
        "milter:\n  listen: inet:127.0.0.1:8890\nclassification:\n  rules: [{}]\nlists:\n  - address: members@lists.example.org\n",
        fifo.display()
    );
    let result = listwarden::config::Config::parse(&yaml, Path::new("t.yaml"));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = fed.join().unwrap();
    assert!(result.is_err(), "an 8 MiB rules file must be refused");
    assert!(
        written <= 2 << 20,
        "{written} bytes were read from a FIFO; the cap is {} bytes",
        listwarden::config::MAX_FILE_BYTES
    );
}

// ---------------------------------------------------------------- C2

#[tokio::test]
async fn c2_reload_under_load_swaps_at_once_and_inflight_messages_keep_their_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("listwarden.yaml");
    let m = Milter::start(V1).await;
    // 100 messages in flight, each past MAIL (its config snapshot) with a
    // From: that only the new config protects.
    let mut inflight: Vec<RawConn> = Vec::new();
    for _ in 0..100 {
        inflight.push(hold_news_message(m.session(STRANGER).await).await);
    }
    std::fs::write(&path, with_news(V1)).unwrap();
    let started = Instant::now();
    Reloader {
        path,
        shared: m.shared.clone(),
    }
    .reload_now()
    .unwrap();
    // No waiting for sessions to drain.
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // New messages see the new config at once...
    assert!(mail_is_rejected(&m, "<news@lists.example.org>").await);
    // ...messages in flight finish on the one they started with.
    for c in inflight {
        finish_news_message_then_refused(c).await;
    }
    m.stop().await;
}

// ---------------------------------------------------------------- C3

/// The envelope sender listwarden signs outbound list mail with.
async fn signed_sender(m: &Milter) -> String {
    let mut c = m.session("127.0.0.1").await;
    let r = c
        .send_to_eoh(
            "<members-bounces@lists.example.org>",
            "<a@example.net>",
            &[(b"From", b"carol@example.org")],
        )
        .await;
    assert_eq!(r.iter().map(|r| r.cmd).collect::<Vec<_>>(), b"ccc");
    c.send(&frames::eom()).await;
    let (actions, last) = c.final_reply().await.unwrap();
    assert_eq!(last.cmd, b'c');
    c.close().await;
    let change = actions
        .iter()
        .find(|a| a.cmd == b'e')
        .expect("a change of sender");
    String::from_utf8_lossy(change.strings()[0]).into_owned()
}

/// The RCPT reply for a bounce to `rcpt`.
async fn bounce_reply(m: &Milter, rcpt: &str) -> Reply {
    let mut c = m.session("198.51.100.9").await;
    c.send(&frames::mail(&[b"<>"])).await;
    c.send(&frames::rcpt(&[rcpt.as_bytes()])).await;
    assert_eq!(c.reply().await.map(|r| r.cmd), Ok(b'c'));
    let r = c.reply().await.unwrap();
    c.close().await;
    r
}

#[tokio::test]
async fn c3_rotated_keys_sign_with_the_new_and_verify_the_old() {
    let dir = tempfile::tempdir().unwrap();
    for (id, secret) in [
        (1, "first-secret-0123456789abcdef"),
        (2, "second-secret-0123456789abcdef"),
    ] {
        std::fs::write(dir.path().join(format!("{id}.key")), format!("{secret}\n")).unwrap();
    }
    let config = |keys: &str, sign: u8| {
        format!(
            "milter:\n  listen: inet:127.0.0.1:8890\ntrusted_networks: [127.0.0.1/32]\nratelimit:\n  max_keys: 1024\n\
             signing:\n  keys: [{keys}]\n  sign_with: {sign}\n\
             lists:\n  - address: members@lists.example.org\n"
        )
    };
    let key = |id: u8| {
        format!(
            "{{id: {id}, file: {}}}",
            dir.path().join(format!("{id}.key")).display()
        )
    };
    let path = dir.path().join("listwarden.yaml");
    let v1 = config(&key(1), 1);
    std::fs::write(&path, &v1).unwrap();
    let m = Milter::start(&v1).await;
    let reloader = Reloader {
        path: path.clone(),
        shared: m.shared.clone(),
    };
    let old = signed_sender(&m).await;
    assert!(old.starts_with("<prvs=1"), "{old}");
    assert_eq!(bounce_reply(&m, &old).await.cmd, b'c');

    // Rotation: key 2 signs, key 1 still verifies.
    std::fs::write(&path, config(&format!("{}, {}", key(1), key(2)), 2)).unwrap();
    reloader.reload_now().unwrap();
    let new = signed_sender(&m).await;
    assert!(new.starts_with("<prvs=2"), "{new}");
    assert_eq!(bounce_reply(&m, &new).await.cmd, b'c', "new tag");
    assert_eq!(
        bounce_reply(&m, &old).await.cmd,
        b'c',
        "old tag in the overlap"
    );

    // Key 1 removed: its tags are refused, key 2's still pass.
    std::fs::write(&path, config(&key(2), 2)).unwrap();
    reloader.reload_now().unwrap();
    assert!(is_550(&bounce_reply(&m, &old).await), "removed key");
    assert_eq!(bounce_reply(&m, &new).await.cmd, b'c');
    // A key file that went missing: the reload is refused, keys unchanged.
    std::fs::write(
        &path,
        config(
            &format!(
                "{}, {{id: 3, file: {}}}",
                key(2),
                dir.path().join("gone.key").display()
            ),
            2,
        ),
    )
    .unwrap();
    assert!(reloader.reload_now().is_err());
    assert_eq!(bounce_reply(&m, &new).await.cmd, b'c');
    m.stop().await;
}

// ---------------------------------------------------------------- M1

fn http_get(addr: SocketAddr, path: &str, limit: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, limit).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(limit)).unwrap();
    s.set_write_timeout(Some(limit)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Opens `n` connections that send half a request and then nothing.
fn slow_loris(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let mut s = TcpStream::connect(addr).ok()?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Slow: ")
                .ok()?;
            Some(s)
        })
        .collect()
}

/// FINDINGS.md F5 (fixed in 1e7dfcb): the endpoint took a permit before
/// accepting and held it until the request head arrived or 5 s passed
/// (32 permits); 200 slow clients kept /healthz waiting in the backlog for
/// rounds of 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m1_healthz_answers_within_a_second_under_200_slow_connections() {
    let m = Milter::start(V1).await;
    let addr =
        listwarden::metrics::spawn_http("127.0.0.1:0".parse().unwrap(), m.shared.metrics.clone())
            .unwrap();
    let slow = slow_loris(addr, 200);
    assert!(slow.len() >= 150, "opened {}", slow.len());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The milter itself is unaffected (its own runtime and threads).
    let started = Instant::now();
    assert!(mail_is_rejected(&m, "<members@lists.example.org>").await);
    let milter_took = started.elapsed();
    let started = Instant::now();
    let health =
        tokio::task::spawn_blocking(move || http_get(addr, "/healthz", Duration::from_secs(1)))
            .await
            .unwrap();
    let took = started.elapsed();
    drop(slow);
    assert!(
        milter_took < Duration::from_millis(500),
        "milter round trip {milter_took:?}"
    );
    let health =
        health.unwrap_or_else(|e| panic!("/healthz did not answer within 1 s ({took:?}): {e}"));
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m1_huge_headers_and_many_scrapes_are_bounded() {
    let m = Milter::start(V1).await;
    let addr =
        listwarden::metrics::spawn_http("127.0.0.1:0".parse().unwrap(), m.shared.metrics.clone())
            .unwrap();
    let answers = tokio::task::spawn_blocking(move || {
        // A 1 MiB request header: refused or cut off, promptly.
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
            "a".repeat(1 << 20)
        );
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(
            !reply.starts_with("HTTP/1.1 200"),
            "a 1 MiB header must not be served"
        );
        // 200 scrapes from 8 threads, all answered.
        let ok: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(move || {
                        (0..25)
                            .filter(|_| {
                                http_get(addr, "/metrics", Duration::from_secs(5))
                                    .is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
                            })
                            .count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        (reply, ok)
    })
    .await
    .unwrap();
    assert_eq!(answers.1, 200);
    m.stop().await;
}

// ---------------------------------------------------------------- M2

#[tokio::test]
async fn m2_no_ip_or_address_ever_becomes_a_label() {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/keys/EXAMPLE-PUBLIC-KEY.key"
    );
    let yaml = format!(
        "milter:\n  listen: inet:127.0.0.1:8890\ntrusted_networks: [127.0.0.1/32]\n\
         signing:\n  keys: [{{id: 1, file: {key}}}]\n  sign_with: 1\n  demo: true\n\
         ratelimit:\n  max_keys: 1024\n  budgets:\n    network: {{rate: 1, per: 1h, burst: 2}}\n\
         lists:\n  - address: members@lists.example.org\n  - address: quiet@lists.example.org\n    observe: true\n"
    );
    let m = Milter::start(&yaml).await;
    let ring = m.shared.config.load().signing.clone().unwrap();
    let today = listwarden::policy::day_of(listwarden::unix_now());
    let signed = prvs::sign(
        &Address::parse("members-bounces@lists.example.org").unwrap(),
        &ring,
        today,
    );
    let ips = [
        "203.0.113.7",
        "198.51.100.9",
        "2001:db8::1",
        "2001:db8:ffff::42",
        "192.0.2.200",
        "127.0.0.1",
    ];
    let dsn = b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.203.0.113.9.example\r\n\r\nFinal-Recipient: rfc822; victim@198.51.100.1.example\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; 192.0.2.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <victim@example.com> unknown from [192.0.2.55]\r\n\r\n--b--\r\n";
    for (i, ip) in ips.iter().enumerate() {
        for sender in [
            "<members@lists.example.org>",
            "<quiet@lists.example.org>",
            "<someone.else@example.net>",
            "<>",
        ] {
            let mut c = m.session(ip).await;
            let rcpts = [
                format!("<{signed}>"),
                "<members-bounces@lists.example.org>".to_string(),
                format!("<user{i}@example.com>"),
            ];
            c.send(&frames::mail(&[sender.as_bytes()])).await;
            let first = c.reply().await.unwrap();
            if first.cmd != b'c' {
                c.close().await;
                continue;
            }
            for rcpt in &rcpts {
                c.send(&frames::rcpt(&[rcpt.as_bytes()])).await;
                c.reply().await.unwrap();
            }
            c.send(&frames::header(
                b"From",
                format!("Someone <user{i}@[{ip}]>").as_bytes(),
            ))
            .await;
            c.send(&frames::header(
                b"Content-Type",
                b"multipart/report; report-type=delivery-status; boundary=\"b\"",
            ))
            .await;
            c.send(&frames::header(b"X-Listwarden-Bounce", b"forged"))
                .await;
            c.send(&frames::eoh()).await;
            if c.reply().await.unwrap().cmd == b'c' {
                c.send(&frames::body(dsn)).await;
                c.send(&frames::eom()).await;
                let _ = c.final_reply().await;
                let _ = c.final_reply().await;
            }
            c.close().await;
        }
    }
    let text = m.shared.metrics.render();
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, labels)) = line.split_once('{') else {
            continue;
        };
        let Some((labels, _)) = labels.rsplit_once('}') else {
            continue;
        };
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once("=\"").unwrap_or(("?", pair));
            let value = value.trim_end_matches('"');
            checked += 1;
            assert!(!value.contains('@'), "address in label {name}: {line}");
            assert!(
                value.parse::<IpAddr>().is_err(),
                "IP in label {name}: {line}"
            );
            let dotted = value
                .split('.')
                .filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
                .count();
            assert!(dotted < 4 || name == "le", "IP-like label {name}: {line}");
            if name == "list" {
                assert!(
                    ["members", "quiet", "-"].contains(&value),
                    "list label not from the config: {line}"
                );
            }
        }
    }
    assert!(
        checked > 50,
        "the traffic produced labelled samples ({checked})"
    );
    assert!(
        text.contains("listwarden_bounces_total{"),
        "bounces were counted"
    );
    m.stop().await;
}
