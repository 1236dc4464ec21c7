use super::*;
use crate::address::{Address, prvs};
use std::path::Path;

fn config(dir: &Path, extra: &str) -> Config {
    std::fs::write(dir.join("1.key"), "0123456789abcdef0123456789abcdef").unwrap();
    let yaml = format!(
        "milter:\n  listen: inet:127.0.0.1:1\nsigning:\n  keys: [{{id: 1, file: 1.key}}]\n  sign_with: 1\n\
         lists:\n  - {{address: talk@lists.example.org, preset: sympa}}\n\
         feedback:\n  addresses: [fbl@lists.example.org]\n{extra}"
    );
    Config::parse(&yaml, &dir.join("c.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

/// A job about a member of `talk`, as the milter queues it.
fn job(member: &str, action: &str) -> queue::Job {
    queue::Job {
        list: "talk".into(),
        member: member.into(),
        action: action.into(),
        report_id: "<r@x>".into(),
        feedback_type: "abuse".into(),
        provider: "other".into(),
        received: 1,
        attempts: 0,
        last_error: None,
    }
}

/// An executable shell script at `path` (a stand-in list manager).
fn script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn report(return_path: &str, rcpt_to: &str) -> String {
    format!(
        "From: fbl@example.net\r\nMessage-ID: <r@example.net>\r\nContent-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nOriginal-Rcpt-To: {rcpt_to}\r\n\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nReturn-Path: <{return_path}>\r\nList-Id: <talk.lists.example.org>\r\n\r\n--b--\r\n"
    )
}

#[test]
fn only_a_member_named_inside_a_valid_signature_is_acted_on() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "");
    let today = 20_500;
    let keys = c.signing.as_ref().unwrap();
    let verp = Address::parse("bounce+ann==a==example.com==talk@lists.example.org").unwrap();
    let signed = prvs::sign(&verp, keys, today).to_string();
    let a = assess(report(&signed, "<bob@example.com>").as_bytes(), &c, today).unwrap();
    assert_eq!(a.action, Action::Unsubscribe);
    assert_eq!(
        a.attribution.member.as_ref().unwrap().to_string(),
        "ann@example.com"
    );
    assert!(
        a.tag().contains("member_from=signed; signature=valid"),
        "{}",
        a.tag()
    );

    // The owner only hears of a member the reporter names.
    let owner = prvs::sign(
        &Address::parse("talk-owner@lists.example.org").unwrap(),
        keys,
        today,
    );
    let a = assess(
        report(&owner.to_string(), "<bob@example.com>").as_bytes(),
        &c,
        today,
    )
    .unwrap();
    assert_eq!(
        (a.action, a.why),
        (Action::NotifyOwner, "member_not_signed")
    );

    // A broken signature: unattributed, whatever the List-Id says.
    // One hex digit of the tag changed (prvs=KDDD then the MAC).
    let mut forged = signed.clone().into_bytes();
    forged[10] = if forged[10] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    let a = assess(report(&forged, "<bob@example.com>").as_bytes(), &c, today).unwrap();
    assert_eq!(a.attribution.list, None);
    assert_eq!(
        (a.action, a.result()),
        (Action::CountOnly, "signature_invalid")
    );
    assert!(a.tag().contains("list=unattributed"));
}

#[test]
fn per_list_actions_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "  lists: [{list: talk, action: count_only}]\n");
    let s = c.feedback.as_ref().unwrap();
    assert_eq!(s.action_for("talk"), Action::CountOnly);
    assert!(s.acts_on("ABUSE") && !s.acts_on("not-spam"));
    let err = Config::parse(
        "milter:\n  listen: inet:127.0.0.1:1\nlists:\n  - {address: talk@lists.example.org, preset: sympa}\nfeedback:\n  addresses: [fbl@lists.example.org]\n  action: suspend\n  lists: [{list: nope, action: unsubscribe}]\n",
        Path::new("c.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("feedback.lists[0].list"), "{err}");
    assert!(err.contains("`suspend` needs Mailman 3"), "{err}");
}

/// A report anyone can write (the list named only by `List-Id:`, the
/// member only by `Original-Rcpt-To:`, a new Message-ID each time) is
/// counted as a report but makes no job, no owner notice and no
/// complaint in the rate; so a flood of them cannot fill the queue or
/// make the queue refuse the real ones.
#[test]
fn reports_anyone_can_write_are_counted_but_never_queued() {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue");
    let c = config(
        dir.path(),
        &format!("  action: notify_owner\n  queue: {}\n", queue.display()),
    );
    let today = 20_500;
    for i in 0..50 {
        let forged = report("someone@elsewhere.example", &format!("<m{i}@example.com>"))
            .replace("<r@example.net>", &format!("<r{i}@example.net>"));
        let a = assess(forged.as_bytes(), &c, today).unwrap();
        assert_eq!(a.attribution.list.as_deref(), Some("talk"), "via List-Id");
        assert_eq!((a.action, a.why), (Action::CountOnly, "not_signed"));
        let mut observed = Vec::new();
        let tag = record::record(&mut observed, &c, forged.as_bytes(), today, "Q1")
            .unwrap()
            .unwrap();
        assert!(tag.contains("action=count_only"), "{tag}");
        assert!(
            !observed
                .iter()
                .any(|e| matches!(e, crate::record::Event::Complaint { .. })),
            "{observed:?}"
        );
    }
    assert!(queue::Queue::new(&queue).is_empty());

    // The same with our signature on the list (the owner's address, no
    // member in it): one owner notice, however many reports and whatever
    // members they name.
    let keys = c.signing.as_ref().unwrap();
    let owner = prvs::sign(
        &Address::parse("talk-owner@lists.example.org").unwrap(),
        keys,
        today,
    )
    .to_string();
    for i in 0..5 {
        let signed = report(&owner, &format!("<victim{i}@example.com>"))
            .replace("<r@example.net>", &format!("<s{i}@example.net>"));
        let mut observed = Vec::new();
        record::record(&mut observed, &c, signed.as_bytes(), today, "Q2")
            .unwrap()
            .unwrap();
        assert!(
            observed
                .iter()
                .any(|e| matches!(e, crate::record::Event::Complaint { .. })),
            "{observed:?}"
        );
    }
    assert_eq!(queue::Queue::new(&queue).len(), 1);
}

/// One member's valid signed copy reported ten times (the report resent,
/// or wrapped in new reports: another report Message-ID, another
/// Original-Rcpt-To), and reports naming other originals under the same
/// signed address (the original's Message-ID is the reporter's text)
/// move the complaint rate once. Another signed address (another
/// member, or another signing day) is another complaint.
#[test]
fn one_signed_address_counts_once_in_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue");
    let c = config(dir.path(), &format!("  queue: {}\n", queue.display()));
    let today = crate::today();
    let keys = c.signing.as_ref().unwrap();
    let sign = |a: &str, day: u64| prvs::sign(&Address::parse(a).unwrap(), keys, day).to_string();
    let ann = sign("bounce+ann==a==example.com==talk@lists.example.org", today);
    let copy = |rp: &str, original: &str, i: usize| {
        report(rp, &format!("<r{i}@example.com>"))
            .replace("<r@example.net>", &format!("<report{i}@example.net>"))
            .replace(
                "List-Id: <talk.lists.example.org>\r\n",
                &format!("List-Id: <talk.lists.example.org>\r\nMessage-ID: <{original}>\r\n"),
            )
    };
    let shared = crate::Shared::new(c.clone());
    let now = crate::unix_now();
    for _ in 0..1000 {
        shared.rates.lock().unwrap().sent("talk", now);
    }
    let complaints = std::cell::Cell::new(0);
    let send = |text: String| {
        let mut observed = Vec::new();
        record::record(&mut observed, &c, text.as_bytes(), today, "Q")
            .unwrap()
            .unwrap();
        complaints.set(
            complaints.get()
                + observed
                    .iter()
                    .filter(|e| matches!(e, crate::record::Event::Complaint { .. }))
                    .count(),
        );
        shared.recorder().record_all(observed);
        shared.rates.lock().unwrap().rates(crate::unix_now())[0].1
    };
    for i in 0..10 {
        assert_eq!(send(copy(&ann, "m1@lists.example.org", i)), 0.001);
    }
    for i in 10..20 {
        let original = format!("m{i}@lists.example.org");
        assert_eq!(send(copy(&ann, &original, i)), 0.001, "{original}");
    }
    assert_eq!(
        complaints.get(),
        20,
        "each report is still a complaint event"
    );
    assert_eq!(queue::Queue::new(&queue).len(), 1, "one job");
    let bob = sign("bounce+bob==a==example.com==talk@lists.example.org", today);
    assert_eq!(
        send(copy(&bob, "m1@lists.example.org", 30)),
        0.002,
        "another member"
    );
    let ann_before = sign(
        "bounce+ann==a==example.com==talk@lists.example.org",
        today - 1,
    );
    assert_eq!(
        send(copy(&ann_before, "m0@lists.example.org", 31)),
        0.003,
        "another day"
    );
    // The list's shared address: once, however many members complain.
    let list = sign("talk-owner@lists.example.org", today);
    for i in 40..45 {
        assert_eq!(send(copy(&list, "m1@lists.example.org", i)), 0.004);
    }
}

/// Sympa's shared `bounce@` VERP names its list; one naming a list we do
/// not know is not about `talk` (which only claims the shared address),
/// however valid our signature: no list, no member, nothing done.
#[test]
fn a_sympa_verp_naming_an_unknown_list_is_about_no_list() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "");
    let today = 20_500;
    let keys = c.signing.as_ref().unwrap();
    let verp = Address::parse("bounce+ann==a==example.com==other@lists.example.org").unwrap();
    let signed = prvs::sign(&verp, keys, today).to_string();
    let a = assess(report(&signed, "<ann@example.com>").as_bytes(), &c, today).unwrap();
    assert_eq!(a.action, Action::CountOnly, "{}", a.tag());
    assert_ne!(a.attribution.list_from, "signature");
    assert_ne!(a.attribution.member_from, MemberSource::Signed);
}

/// A job carried out whose done record cannot be written stays queued,
/// and is not carried out again before the retry time: one owner notice,
/// not one a second.
#[test]
fn a_done_record_that_cannot_be_written_does_not_repeat_the_job() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue");
    let count = dir.path().join("count");
    let sendmail = dir.path().join("sendmail");
    script(
        &sendmail,
        &format!(
            "#!/bin/sh\ncat >/dev/null\necho sent >> {}\n",
            count.display()
        ),
    );
    let c = config(
        dir.path(),
        &format!(
            "  action: notify_owner\n  queue: {}\n  sendmail: {}\n",
            queue.display(),
            sendmail.display()
        ),
    );
    let job = job("bob@example.com", "notify_owner");
    assert!(queue::Queue::new(&queue).push(&job).unwrap());
    // done/ cannot be made: a file is in its place.
    std::fs::write(queue.join("done"), "").unwrap();
    let passes = AtomicUsize::new(0);
    let c = std::sync::Arc::new(c);
    super::worker::run(
        || c.clone(),
        false,
        || passes.fetch_add(1, Ordering::SeqCst) >= 4,
    );
    let sent = std::fs::read_to_string(&count).unwrap_or_default();
    assert_eq!(sent.lines().count(), 1, "notices sent in 3 passes");
    assert_eq!(queue::Queue::new(&queue).len(), 1, "still queued");
}

/// SIGTERM ends the worker after the job in hand, not after the pass.
#[test]
fn the_worker_stops_after_the_job_in_hand() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("q");
    let sympa = dir.path().join("sympa.pl");
    script(&sympa, "#!/bin/sh\ncat >/dev/null\n");
    let c = config(
        dir.path(),
        &format!(
            "  queue: {}\n  sympa_command: [{}]\n",
            queue.display(),
            sympa.display()
        ),
    );
    let q = queue::Queue::new(&queue);
    for i in 0..3 {
        q.push(&job(&format!("m{i}@example.com"), "unsubscribe"))
            .unwrap();
    }
    let c = std::sync::Arc::new(c);
    // The signal comes while the first job is in hand.
    let asked = AtomicUsize::new(0);
    super::worker::run(
        || c.clone(),
        false,
        || asked.fetch_add(1, Ordering::SeqCst) >= 1,
    );
    assert_eq!(q.len(), 2, "one job done, two left for the next start");
}

/// One worker per queue, also after a reload names another queue: a
/// queue another worker holds is not worked, and `--once` says so.
#[test]
fn a_queue_another_worker_holds_is_left_to_it() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let (qa, qb) = (dir.path().join("a"), dir.path().join("b"));
    let sympa = dir.path().join("sympa.pl");
    script(&sympa, "#!/bin/sh\ncat >/dev/null\n");
    let with_queue = |q: &Path| {
        std::sync::Arc::new(config(
            dir.path(),
            &format!(
                "  queue: {}\n  sympa_command: [{}]\n",
                q.display(),
                sympa.display()
            ),
        ))
    };
    let (ca, cb) = (with_queue(&qa), with_queue(&qb));
    let job = job("m@example.com", "unsubscribe");
    for q in [&qa, &qb] {
        assert!(queue::Queue::new(q).push(&job).unwrap());
    }
    let other = queue::Queue::new(&qb).lock().unwrap().unwrap();
    // The first pass on a, then a reload names b.
    let passes = AtomicUsize::new(0);
    let end = super::worker::run(
        || {
            if passes.load(Ordering::SeqCst) == 0 {
                ca.clone()
            } else {
                cb.clone()
            }
        },
        false,
        || passes.fetch_add(1, Ordering::SeqCst) >= 3,
    );
    assert_eq!(end, super::worker::End::Stopped);
    assert_eq!(queue::Queue::new(&qa).len(), 0, "a was worked");
    assert_eq!(queue::Queue::new(&qb).len(), 1, "b is the other worker's");
    assert_eq!(
        super::worker::run(|| cb.clone(), true, || false),
        super::worker::End::Busy
    );
    drop(other);
    assert_eq!(
        super::worker::run(|| cb.clone(), true, || false),
        super::worker::End::Stopped
    );
    assert_eq!(queue::Queue::new(&qb).len(), 0);
}

/// A list manager that fails is tried once a pass: its other jobs wait
/// for the next pass instead of each costing a call (a hung manager costs
/// its timeout per call).
#[test]
fn a_failing_list_manager_is_tried_once_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("q");
    let calls = dir.path().join("calls");
    let sympa = dir.path().join("sympa.pl");
    script(
        &sympa,
        &format!(
            "#!/bin/sh\ncat >/dev/null\necho call >> {}\necho down >&2\nexit 2\n",
            calls.display()
        ),
    );
    let c = std::sync::Arc::new(config(
        dir.path(),
        &format!(
            "  queue: {}\n  sympa_command: [{}]\n",
            queue.display(),
            sympa.display()
        ),
    ));
    let q = queue::Queue::new(&queue);
    for i in 0..3 {
        q.push(&job(&format!("m{i}@example.com"), "unsubscribe"))
            .unwrap();
    }
    super::worker::run(|| c.clone(), true, || false);
    let calls = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(calls.lines().count(), 1, "calls in one pass");
    assert_eq!(q.len(), 3, "all kept for later");
}
