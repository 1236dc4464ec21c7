//! `listwarden canary`: one probe, sent over SMTP to `canary.smtp` (the public MX),
//! then the sighting book read until the list manager's side has seen it or
//! `canary.wait` has passed. Exit codes, for monitoring:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | seen at the MX and at the list manager's side |
//! | 1 | sent, but not seen at both in time (or the book could not be read) |
//! | 69 | could not send: no connection, or the MX refused the probe |
//! | 78 | config error (invalid file, no `canary:` section, no signing keys) |

use std::io::Read;
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use listwarden_expand::inject::{Batch, SmtpOptions, inject_smtp};

use super::{Arrivals, Sightings, now_ms};
use crate::config::{Canary, Config};

pub const EXIT_OK: u8 = 0;
pub const EXIT_NOT_SEEN: u8 = 1;
/// EX_UNAVAILABLE.
pub const EXIT_NOT_SENT: u8 = 69;
/// EX_CONFIG.
pub const EXIT_CONFIG: u8 = 78;

/// How often the book is read while waiting.
const POLL: Duration = Duration::from_millis(100);

/// A new probe id: 16 hex digits from the system's random source.
fn probe_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The probe message (headers and body, LF line ends).
fn message(canary: &Canary, id: &str, token: &str) -> Vec<u8> {
    let date = format!("Date: {}\n", rfc5322_date(now_ms() / 1000));
    format!(
        "From: <{sender}>\nTo: <{to}>\nSubject: listwarden canary {id}\n{date}\
         Message-ID: <{id}.canary@{helo}>\n{header}: {token}\n\n\
         A probe of the path from the MX to the list server, sent by `listwarden canary`.\n\
         listwarden discards it at the list server: no member receives it.\n",
        sender = canary.sender,
        to = canary.address,
        helo = canary.helo,
        header = super::HEADER,
    )
    .into_bytes()
}

/// `Sat, 05 Dec 2026 00:40:40 +0000` for Unix time `t`.
fn rfc5322_date(t: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, rem) = (t / 86_400, t % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm, proleptic Gregorian).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn secs(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

/// Runs one probe; prints what happened and returns the exit code.
pub fn run(config: &Config) -> u8 {
    let (Some(canary), Some(ring)) = (&config.canary, &config.signing) else {
        eprintln!("canary: the config has no `canary:` section (or no signing keys)");
        return EXIT_CONFIG;
    };
    let id = match probe_id() {
        Ok(id) => id,
        Err(e) => {
            eprintln!("canary: cannot read /dev/urandom: {e}");
            return EXIT_NOT_SENT;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("canary: cannot start a runtime: {e}");
            return EXIT_NOT_SENT;
        }
    };
    let Some(book) = runtime.block_on(open_book(config, canary)) else {
        // Nothing is sent that could not be confirmed.
        eprintln!("canary: Redis did not answer; cannot confirm a probe, none sent");
        return EXIT_NOT_SEEN;
    };
    let addr = match canary.smtp.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        Ok(None) | Err(_) => {
            eprintln!("canary: cannot resolve {}", canary.smtp);
            return EXIT_NOT_SENT;
        }
    };
    let sent_ms = now_ms();
    let started = Instant::now();
    let token = listwarden_core::canary::sign(ring, &canary.address.to_string(), &id, sent_ms);
    let batch = Batch {
        envelope_sender: canary.sender.clone(),
        recipients: vec![canary.address.clone()],
        headers: Vec::new(),
    };
    let options = SmtpOptions {
        helo: canary.helo.clone(),
        connect_timeout: Duration::from_secs(30),
        command_timeout: Duration::from_secs(30),
        data_timeout: Duration::from_secs(120),
        max_per_connection: 1,
    };
    let msg = message(canary, &id, &token);
    match inject_smtp(addr, &options, [&batch], &msg, &mut |_, _| Ok(())) {
        Ok(report) if report.rejected.is_empty() => {}
        Ok(report) => {
            let reply = report
                .rejected
                .first()
                .map(|(_, r)| r.as_str())
                .unwrap_or("");
            eprintln!(
                "canary {id}: {} refused {}: {reply}",
                canary.smtp, canary.address
            );
            return EXIT_NOT_SENT;
        }
        Err(e) => {
            eprintln!(
                "canary {id}: could not send to {} ({addr}): {e}",
                canary.smtp
            );
            return EXIT_NOT_SENT;
        }
    }
    let smtp_ms = elapsed_ms(started);
    let deadline = started + canary.wait;
    let seen = runtime.block_on(async {
        let mut last = None;
        loop {
            let read = book.read(&id).await;
            if let Some(a) = read {
                last = Some(a);
                if a.list.is_some() {
                    break;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        if last.is_some_and(|a| a.list.is_some()) {
            book.forget(&id, canary.max_age * 2).await;
        }
        last
    });
    report(&id, sent_ms, smtp_ms, seen, canary.wait)
}

/// The book the milter writes to: Redis when the config shares state through it.
async fn open_book(config: &Config, canary: &Canary) -> Option<Sightings> {
    match &config.ratelimit.state {
        #[cfg(feature = "redis")]
        crate::config::StateBackend::Redis {
            url, tls, prefix, ..
        } => {
            use crate::ratelimit::{RedisConfig, RedisStore};
            let store = RedisStore::new(RedisConfig {
                url: url.clone(),
                tls: tls.clone(),
                prefix: prefix.clone(),
                deadline: Duration::from_secs(2),
                ..RedisConfig::default()
            })
            .ok()?;
            store
                .wait_connected(Duration::from_secs(5))
                .await
                .then_some(Sightings::Redis(store))
        }
        _ => Some(Sightings::Files(canary.dir.clone())),
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Prints the leg times and picks the exit code.
fn report(id: &str, sent_ms: u64, smtp_ms: u64, seen: Option<Arrivals>, wait: Duration) -> u8 {
    let after = |t: u64| secs(t.saturating_sub(sent_ms));
    match seen {
        Some(Arrivals {
            mx: Some(mx),
            list: Some(list),
        }) => {
            println!(
                "canary {id}: ok: smtp {} (accepted by the MX), mx {} (first hop), list {} (mx to list server), total {}",
                secs(smtp_ms),
                after(mx),
                secs(list.saturating_sub(mx)),
                after(list)
            );
            EXIT_OK
        }
        Some(Arrivals { mx, list: None }) => {
            let mx = mx.map_or_else(
                || "not seen".to_owned(),
                |t| format!("seen after {}", after(t)),
            );
            println!(
                "canary {id}: NOT SEEN at the list server within {}: smtp {} (accepted by the MX), mx {mx}",
                secs(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
                secs(smtp_ms)
            );
            EXIT_NOT_SEEN
        }
        Some(Arrivals {
            mx: None,
            list: Some(_),
        }) => {
            println!("canary {id}: seen at the list server without an MX sighting (record lost?)");
            EXIT_NOT_SEEN
        }
        None => {
            println!(
                "canary {id}: sent (smtp {}), but the sighting book could not be read",
                secs(smtp_ms)
            );
            EXIT_NOT_SEEN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_764_895_240),
            "Fri, 05 Dec 2025 00:40:40 +0000"
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn exit_codes_say_how_far_the_probe_got() {
        let wait = Duration::from_secs(20);
        let seen = |mx, list| Some(Arrivals { mx, list });
        assert_eq!(
            report("id", 1000, 5, seen(Some(1010), Some(1200)), wait),
            EXIT_OK
        );
        assert_eq!(
            report("id", 1000, 5, seen(Some(1010), None), wait),
            EXIT_NOT_SEEN
        );
        assert_eq!(report("id", 1000, 5, seen(None, None), wait), EXIT_NOT_SEEN);
        assert_eq!(
            report("id", 1000, 5, seen(None, Some(1200)), wait),
            EXIT_NOT_SEEN
        );
        assert_eq!(report("id", 1000, 5, None, wait), EXIT_NOT_SEEN);
    }

    #[test]
    fn without_a_canary_section_it_is_a_config_error() {
        let yaml = "milter:\n  listen: inet:127.0.0.1:1\n";
        let config = Config::parse(yaml, std::path::Path::new("t.yaml")).unwrap();
        assert_eq!(run(&config), EXIT_CONFIG);
    }

    #[test]
    fn a_closed_port_is_could_not_send() {
        // A port nobody listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let key = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/keys/EXAMPLE-PUBLIC-KEY.key"
        );
        let yaml = format!(
            "milter:\n  listen: inet:127.0.0.1:1\n\
             signing:\n  keys: [{{id: 1, file: {key}}}]\n  sign_with: 1\n  demo: true\n\
             canary:\n  address: canary@lists.example.org\n  sender: probe@ops.example.net\n  \
             smtp: 127.0.0.1:{port}\n  dir: {}\n",
            dir.path().display()
        );
        let config = Config::parse(&yaml, std::path::Path::new("t.yaml")).unwrap();
        assert_eq!(run(&config), EXIT_NOT_SENT);
    }
}
