//! `listwarden feedback-worker`: carries out the queued complaint actions
//! through each list manager's own interface, and retries a job (it stays
//! in the queue) while its list manager is down.
//!
//! - Mailman 3: its core REST API (`DELETE /lists/LIST-ID/member/ADDR`;
//!   suspend: `GET .../member/ADDR` for its member_id, then `PATCH
//!   /members/ID/preferences delivery_status=by_moderator`).
//! - Sympa 6.2.67+: `sympa.pl del --force --quiet LIST@DOMAIN`, the address
//!   on standard input.
//! - The expander: its members file, as its own unsubscribe does.
//! - `notify_owner`: a short notice to the list's owner through sendmail.
//!
//! Every job is idempotent: a member already gone is done, not an error.

use super::queue::{Job, Queue};
use super::{Action, Settings};
use crate::address::Address;
use crate::config::{Config, List, Preset};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for one list-manager call.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Bytes of a REST answer read.
const MAX_ANSWER: u64 = 64 * 1024;
/// How often the queue is looked at for new jobs.
const POLL: Duration = Duration::from_secs(1);

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Carried out (or nothing left to do): the detail for the log.
    Done(String),
    /// Not now (list manager down, a failure): try again later.
    Retry(String),
}

/// Carries out one job with the current config.
pub fn apply(job: &Job, config: &Config) -> Outcome {
    let Some(settings) = config.feedback.as_ref() else {
        return Outcome::Retry("no feedback section in the config".into());
    };
    let Some(list) = config.lists.iter().find(|l| l.name == job.list) else {
        return Outcome::Done("the list is no longer configured; dropped".into());
    };
    let Ok(member) = Address::parse(&job.member) else {
        return Outcome::Done("unreadable member; dropped".into());
    };
    let action: Action = match job.action.parse() {
        Ok(a) => a,
        Err(e) => return Outcome::Done(format!("{e}; dropped")),
    };
    match (action, list.preset) {
        (Action::CountOnly, _) => Outcome::Done("counted only".into()),
        (Action::NotifyOwner, _) => notify_owner(job, list, settings),
        (_, Preset::Mailman3) => match &settings.mailman3 {
            Some(m) => mailman3(m, list, &member, action),
            None => Outcome::Retry("feedback.mailman3 is not configured".into()),
        },
        (Action::Unsubscribe, Preset::Sympa) => sympa_del(&settings.sympa_command, list, &member),
        (Action::Unsubscribe, Preset::Listwarden) => expander_remove(config, list, &member),
        // The config refuses `suspend` for these lists; a job queued
        // before a reload changed the list would otherwise retry forever.
        (Action::Suspend, _) => {
            Outcome::Done("suspend is not offered for this list (Mailman 3 only); dropped".into())
        }
    }
}

fn mailman3(m: &super::Mailman3, list: &List, member: &Address, action: Action) -> Outcome {
    let list_id = format!("{}.{}", list.address.local, list.address.domain);
    let path = format!("lists/{list_id}/member/{}", percent(&member.to_string()));
    let answer = match action {
        // A list's member URL takes no children (Mailman 3.3 answers 404 to
        // .../member/ADDR/preferences): the preferences are the member's,
        // under /members/ID.
        Action::Suspend => match http(m, "GET", &path, None) {
            Ok((200, body)) => match member_id(&body) {
                Some(id) => http(
                    m,
                    "PATCH",
                    &format!("members/{id}/preferences"),
                    Some("delivery_status=by_moderator"),
                ),
                None => Err("Mailman's member answer has no member_id".into()),
            },
            other => other,
        },
        _ => http(m, "DELETE", &path, None),
    };
    match answer {
        Ok((code @ 200..=299, _)) => Outcome::Done(format!("mailman3 answered {code}")),
        // Mailman answers 404 for an unknown list (or a wrong base URL)
        // too: only a list that is there makes it "already gone".
        Ok((404, _)) => match http(m, "GET", &format!("lists/{list_id}"), None) {
            Ok((200, _)) => Outcome::Done("mailman3: not a member (already gone)".into()),
            Ok((code, _)) => Outcome::Retry(format!(
                "mailman3 answered {code} for the list {list_id} (check feedback.mailman3.url and the list's address)"
            )),
            Err(e) => Outcome::Retry(format!("mailman3: {e}")),
        },
        Ok((code, body)) => Outcome::Retry(format!(
            "mailman3 answered {code}: {}",
            one_line(&body, 200)
        )),
        Err(e) => Outcome::Retry(format!("mailman3: {e}")),
    }
}

/// The `member_id` of Mailman's member resource: a hex string (API 3.1)
/// or a number (3.0).
fn member_id(body: &str) -> Option<String> {
    let rest = body.split_once("\"member_id\"")?.1.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    let id: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (!id.is_empty()).then_some(id)
}

/// One HTTP/1.1 request to Mailman's REST API on loopback (`Connection:
/// close`); returns the status and the start of the body.
fn http(
    m: &super::Mailman3,
    method: &str,
    path: &str,
    form: Option<&str>,
) -> Result<(u16, String), String> {
    let rest = m
        .url
        .strip_prefix("http://")
        .ok_or("the URL is not http://")?;
    let (hostport, base) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .map_err(|e| format!("{hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport}: no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, CALL_TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(CALL_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(CALL_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let body = form.unwrap_or("");
    let base = base.trim_matches('/');
    let target = if base.is_empty() {
        format!("/{path}")
    } else {
        format!("/{base}/{path}")
    };
    let auth = base64(format!("{}:{}", m.user, m.password).as_bytes());
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Basic {auth}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.take(MAX_ANSWER)
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "not an HTTP answer".to_string())?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

fn sympa_del(command: &[String], list: &List, member: &Address) -> Outcome {
    let Some((program, before)) = command.split_first() else {
        return Outcome::Retry("feedback.sympa_command is empty".into());
    };
    let child = Command::new(program)
        .args(before)
        .args(["del", "--force", "--quiet"])
        .arg(list.address.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Outcome::Retry(format!("{program}: {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{member}");
    }
    match wait(child) {
        Ok((true, _)) => Outcome::Done(format!("sympa: deleted from {}", list.address)),
        Ok((false, text)) if sympa_not_member(&text) => Outcome::Done(format!(
            "sympa: not a member (already gone): {}",
            one_line(&text, 200)
        )),
        Ok((false, text)) => Outcome::Retry(format!("sympa del failed: {}", one_line(&text, 300))),
        Err(e) => Outcome::Retry(e),
    }
}

/// Whether `sympa del` failed because the address is no member. Sympa
/// 6.2.70 exits 1 and reports it as a user error, `del [user] E-mail
/// address A was not found in list L.` (the sentence follows Sympa's `lang`,
/// the `[user]` tag does not; without its template Sympa prints the entry
/// `user_not_subscriber`). A user error is not cured by retrying; a
/// database that is down is reported differently and is retried.
fn sympa_not_member(text: &str) -> bool {
    text.contains("del [user]") || text.contains("not_subscriber")
}

/// Waits for a child with [`CALL_TIMEOUT`]; (success, its output).
fn wait(mut child: std::process::Child) -> Result<(bool, String), String> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut text = String::new();
                if let Some(mut o) = child.stdout.take() {
                    let _ = o.read_to_string(&mut text);
                }
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut text);
                }
                return Ok((status.success(), text));
            }
            Ok(None) if started.elapsed() > CALL_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("timed out".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn expander_remove(config: &Config, list: &List, member: &Address) -> Outcome {
    let Some((files, _)) = config.expander_list(&list.name) else {
        return Outcome::Done("not an expander list; dropped".into());
    };
    match listwarden_expand::unsubscribe::remove_member(&files, member, CALL_TIMEOUT) {
        Ok(true) => Outcome::Done("expander: removed".into()),
        Ok(false) => Outcome::Done("expander: not a member (already gone)".into()),
        Err(e) => Outcome::Retry(format!("expander: {e}")),
    }
}

fn notify_owner(job: &Job, list: &List, settings: &Settings) -> Outcome {
    let role = match list.preset {
        Preset::Sympa => "request",
        _ => "owner",
    };
    let owner = format!("{}-{role}@{}", list.address.local, list.address.domain);
    let text = format!(
        "From: listwarden <{owner}>\r\nTo: <{owner}>\r\nSubject: spam complaint about {}\r\nAuto-Submitted: auto-generated\r\n\r\n\
         A feedback loop ({}) reported list mail as spam ({}).\r\n\
         The member named by the report: {}\r\n\
         It was not named inside a signature of ours, so listwarden did not\r\n\
         remove it. Report: {}\r\n",
        list.address,
        printable(&job.provider),
        printable(&job.feedback_type),
        printable(&job.member),
        printable(&job.report_id)
    );
    let child = Command::new(&settings.sendmail)
        .args(["-i", "-f", "", "--", &owner])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Outcome::Retry(format!("{}: {e}", settings.sendmail.display())),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(text.as_bytes());
    }
    match wait(child) {
        Ok((true, _)) => Outcome::Done(format!("notified {owner}")),
        Ok((false, text)) => Outcome::Retry(format!("sendmail failed: {}", one_line(&text, 300))),
        Err(e) => Outcome::Retry(e),
    }
}

/// A reporter's text for the owner's notice: no control characters, and
/// not much of it.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// One log line about a job: the job's fields once (list, member, action,
/// report, attempts), then the rest; an outcome's text names neither the
/// list nor the member again.
macro_rules! job_event {
    ($level:ident, $job:expr, $($rest:tt)+) => {
        tracing::$level!(
            list = $job.list,
            member = $job.member,
            action = $job.action,
            report = $job.report_id,
            attempts = $job.attempts + 1,
            $($rest)+
        )
    };
}

/// How [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Stopped (or one pass done, or nothing to do).
    Stopped,
    /// `once`, and another worker holds the queue.
    Busy,
}

/// Runs passes over the queue until `stop` says so; `config` gives the
/// current config each pass (reloads apply). Returns after one pass when
/// `once`. One worker works a queue at a time: while another holds it,
/// this one waits (or, `once`, returns [`End::Busy`]).
pub fn run(
    config: impl Fn() -> std::sync::Arc<Config>,
    once: bool,
    stop: impl Fn() -> bool,
) -> End {
    let mut next_try: HashMap<String, Instant> = HashMap::new();
    // The queue this worker holds, and its lock; a reload may name
    // another queue, which must be held before it is worked.
    let mut held: Option<(std::path::PathBuf, std::fs::File)> = None;
    let mut waiting = false;
    'passes: loop {
        let cfg = config();
        let Some(settings) = cfg.feedback.as_ref() else {
            tracing::error!("the config has no feedback section; nothing to do");
            return End::Stopped;
        };
        let queue = Queue::new(&settings.queue);
        let holds = held.as_ref().is_some_and(|(q, _)| *q == settings.queue);
        let pending = if holds {
            queue.pending()
        } else {
            match queue.lock() {
                Ok(Some(lock)) => {
                    held = Some((settings.queue.clone(), lock));
                    waiting = false;
                    queue.pending()
                }
                Ok(None) if once => {
                    tracing::error!(
                        "{}: another feedback worker holds this queue",
                        settings.queue.display()
                    );
                    return End::Busy;
                }
                Ok(None) => {
                    if !waiting {
                        tracing::warn!(
                            "{}: another feedback worker holds this queue; waiting for it",
                            settings.queue.display()
                        );
                        waiting = true;
                    }
                    Ok(Vec::new())
                }
                Err(e) => Err(e),
            }
        };
        match pending {
            Ok(jobs) => {
                // A list whose manager failed once this pass waits for the
                // next: one hung list manager must not hold up the others.
                let mut failed_lists: Vec<String> = Vec::new();
                for (path, mut job) in jobs {
                    if stop() {
                        break 'passes End::Stopped;
                    }
                    let id = job.id();
                    if next_try.get(&id).is_some_and(|t| Instant::now() < *t)
                        || failed_lists.contains(&job.list)
                    {
                        continue;
                    }
                    match apply(&job, &cfg) {
                        Outcome::Done(detail) => {
                            job_event!(
                                info,
                                job,
                                waited_s = crate::unix_now().saturating_sub(job.received),
                                "complaint handled: {detail}"
                            );
                            next_try.remove(&id);
                            if let Err(e) = queue.done(&path) {
                                // Still queued: not again before the retry
                                // time (an owner notice a second otherwise).
                                tracing::error!("{e}");
                                next_try.insert(id, Instant::now() + settings.retry);
                            }
                        }
                        Outcome::Retry(why) => {
                            job_event!(warn, job, "complaint not handled yet, will retry: {why}");
                            next_try.insert(id, Instant::now() + settings.retry);
                            failed_lists.push(job.list.clone());
                            if let Err(e) = queue.failed(&path, &mut job, &why) {
                                tracing::error!("{e}");
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::error!("feedback queue: {e}"),
        }
        if once || stop() {
            return End::Stopped;
        }
        std::thread::sleep(POLL);
    }
}

/// At most `max` characters of another program's output on one line, so a
/// log line stays one line.
fn one_line(text: &str, max: usize) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(max)
        .collect()
}

/// `%`-encodes what is not safe in a URL path segment.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(base64(b"restadmin:restpass"), "cmVzdGFkbWluOnJlc3RwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(percent("a+b@example.com"), "a%2Bb%40example.com");
    }

    #[test]
    fn output_on_one_line() {
        assert_eq!(
            one_line("setlogsock(): failed\nDatabase is unreachable\n", 200),
            "setlogsock(): failed Database is unreachable"
        );
        assert_eq!(one_line("abcdef", 3), "abc");
    }

    #[test]
    fn sympa_answers() {
        // Sympa 6.2.70 (Debian 12), `sympa.pl del --force --quiet` of an
        // address that is no member, and with its SQLite database unreadable.
        assert!(sympa_not_member(
            "del [user] E-mail address gina@yahoo.example was not found in list .\n\
             Failed to delete email addresses from test@lists.example.org\n"
        ));
        assert!(!sympa_not_member(
            "Database /var/lib/sympa/sympa.sqlite defined in sympa.conf is unreachable. \
             verify db_xxx parameters in sympa.conf\n"
        ));
    }

    #[test]
    fn member_ids() {
        let body = r#"{"address": "http://127.0.0.1:8001/3.1/addresses/a@b", "member_id": "3c1e2f0a9b8d4e6f", "role": "member"}"#;
        assert_eq!(member_id(body).as_deref(), Some("3c1e2f0a9b8d4e6f"));
        assert_eq!(member_id(r#"{"member_id":17}"#).as_deref(), Some("17"));
        assert_eq!(member_id(r#"{"title": "404 Not Found"}"#), None);
    }
}
