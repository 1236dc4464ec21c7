//! The `listwarden` command: a thin CLI over the library.

use clap::{Parser, Subcommand};
use listwarden::address::{Address, KeyRing};
use listwarden::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

use listwarden::daemon::EX_CONFIG;
/// sysexits(3) EX_TEMPFAIL: try again later.
const EX_TEMPFAIL: u8 = 75;

const DEFAULT_CONFIG: &str = "/etc/listwarden/listwarden.yaml";

/// listwarden protects a mailing-list server behind Postfix: it refuses
/// mail forged in a list's name, signs outbound list mail (BATV) and
/// refuses bounces the list never caused, limits bounce floods, and tags
/// bounces for the list manager. Postfix talks to it as a milter:
///
///   smtpd_milters = inet:127.0.0.1:8890
///
/// Check a config before reloading: `listwarden check-config FILE`, then
/// `systemctl reload listwarden` (SIGHUP). An invalid file is refused and
/// the running config stays.
#[derive(Parser)]
#[command(name = "listwarden", version, about, long_about, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the milter and the metrics endpoint until SIGTERM or SIGINT.
    ///
    /// Logs go to stderr (journald picks them up). SIGHUP reloads the
    /// config; so does saving the file. Listen sockets need a restart.
    Run {
        /// The YAML config file.
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Log filter, e.g. `info`, `debug`, `listwarden=debug`.
        #[arg(long, env = "LISTWARDEN_LOG", default_value = "info")]
        log: String,
    },
    /// Check a config file and print every problem as FILE:LINE:COLUMN: key: message.
    ///
    /// Exits 0 when the file is valid and 78 (EX_CONFIG) when it is not,
    /// so it can guard `ExecStartPre=` and `ExecReload=` in systemd.
    CheckConfig {
        /// The YAML config file.
        #[arg(value_name = "FILE", default_value = DEFAULT_CONFIG)]
        file: PathBuf,
        /// Also compare this file's signing key ring and list set with every instance sharing
        /// its Redis (fingerprints, never secrets); exits 78 when one differs.
        #[arg(long)]
        peers: bool,
    },
    /// Print ADDRESS signed with the current BATV key (prvs=KDDDSSSSSS=...).
    ///
    /// This is the envelope sender listwarden gives list mail today.
    Sign {
        /// The YAML config file (for the keys).
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// A list address, e.g. members-bounces@lists.example.org.
        address: String,
    },
    /// Classify bounces and feedback reports: one JSON line per recipient.
    ///
    /// Keys: file, kind, recipient, action, status, class, reason, provider,
    /// rule. Answers "why was this tagged so?"; fast enough for a mail archive.
    Classify {
        /// Use this config's rules (built-in plus classification.rules);
        /// without it, the built-in rules.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Messages to classify, one per file; `-` reads standard input.
        #[arg(required = true, value_name = "MESSAGE")]
        files: Vec<PathBuf>,
    },
    /// Follow Postfix's log and classify outbound deferrals and bounces.
    ///
    /// Prints one JSON line per delivery result (deferred, bounced, expired;
    /// with --all also sent): queue_id, recipient, status, relay, dsn,
    /// class, reason, provider, rule, list. Example:
    ///   journalctl -f -o cat -u postfix | listwarden logwatch -
    /// To count into Prometheus instead, set `logwatch.file` in the config.
    Logwatch {
        /// Use this config's rules and lists; without it, the built-in rules.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Read a file from its start (default: follow it from its end).
        #[arg(long)]
        from_start: bool,
        /// Print sent deliveries too.
        #[arg(long)]
        all: bool,
        /// Postfix's log file, followed across rotation; `-` reads standard input.
        #[arg(value_name = "LOG", default_value = "-")]
        source: PathBuf,
    },
    /// Carry out queued complaint actions through each list manager.
    ///
    /// The milter queues one job per complaint whose member was named
    /// inside a signature of ours (`feedback.queue`); this worker removes
    /// or suspends the member through Mailman 3's REST API, Sympa's
    /// `sympa.pl del`, or the expander's members file, or notifies the
    /// list's owner, and retries every `feedback.retry` while the list
    /// manager is down. Each job is logged with the member and the
    /// report's Message-ID. A changed config file is read again. One
    /// worker per queue: a second waits for the first (with --once, exits
    /// 75, EX_TEMPFAIL).
    FeedbackWorker {
        /// The YAML config file.
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// One pass over the queue, then exit.
        #[arg(long)]
        once: bool,
        /// Log filter, e.g. `info`, `debug`.
        #[arg(long, env = "LISTWARDEN_LOG", default_value = "info")]
        log: String,
    },
    /// Send a probe through the MX to the canary list address and confirm it reached
    /// the list server.
    ///
    /// The probe carries a token signed with the key ring; listwarden records it at
    /// its first sighting (the MX) and records and discards it at its second (the list
    /// server's smtpd), so no member receives it. Prints each leg's time. Exits 0 when
    /// both legs saw it within `canary.wait`, 1 when it was sent but not seen in time,
    /// 69 when it could not be sent (no connection, or refused), 78 on a config error.
    /// Run it from a timer (packaging/systemd/listwarden-canary.timer).
    Canary {
        /// The YAML config file (its `canary:` section and keys).
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Empty the throttle's transport table: every domain takes Postfix's normal route.
    ///
    /// The daemon does this itself at a clean stop; the systemd unit runs
    /// it as ExecStopPost= so a crash or kill -9 leaves no domain slowed or
    /// held. Does nothing without a `throttle:` block.
    ThrottleReset {
        /// The YAML config file.
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Write the man pages (roff): listwarden.8 and listwarden-COMMAND.8.
    #[command(hide = true)]
    Man {
        /// Directory to write them into.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Check the signature of a bounce address: valid, invalid, expired or unsigned.
    ///
    /// Exits 0 only when the signature is valid (1 otherwise, 78 on a bad config).
    Verify {
        /// The YAML config file (for the keys).
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// A bounce recipient, e.g. prvs=1234abcdef=members-bounces@lists.example.org.
        address: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file, peers } => {
            let code = check_config(&file);
            if peers && code == ExitCode::SUCCESS {
                check_peers(&file)
            } else {
                code
            }
        }
        Command::Sign { config, address } => sign(&config, &address),
        Command::Canary { config } => match load(&config) {
            Ok(c) => ExitCode::from(listwarden::canary::command::run(&c)),
            Err(code) => code,
        },
        Command::Verify { config, address } => verify(&config, &address),
        Command::Classify { config, files } => classify(config.as_deref(), &files),
        Command::Logwatch {
            config,
            from_start,
            all,
            source,
        } => logwatch(config.as_deref(), from_start, all, source),
        Command::Man { dir } => match write_man_pages(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "listwarden: cannot write the man pages into {}: {e}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        },
        Command::ThrottleReset { config } => throttle_reset(&config),
        Command::FeedbackWorker { config, once, log } => {
            init_logging(&log);
            feedback_worker(&config, once)
        }
        Command::Run { config, log } => {
            init_logging(&log);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("listwarden: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(listwarden::daemon::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{}", chain(&e));
                    ExitCode::from(e.exit_code())
                }
            }
        }
    }
}

/// `listwarden throttle-reset`.
fn throttle_reset(file: &std::path::Path) -> ExitCode {
    let config = match load(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(t) = config.throttle.as_ref() else {
        println!("no throttle: in {}; nothing to reset", file.display());
        return ExitCode::SUCCESS;
    };
    match listwarden::throttle::reset(&t.map) {
        Ok(true) => println!("{}: emptied", t.map),
        Ok(false) => println!("{}: already empty", t.map),
        Err(e) => {
            eprintln!("listwarden: cannot empty {}: {e}", t.map);
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// `listwarden feedback-worker`: the queue, until SIGTERM (or one pass).
fn feedback_worker(file: &std::path::Path, once: bool) -> ExitCode {
    use std::sync::{Arc, Mutex};
    let config = match load(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if config.feedback.is_none() {
        eprintln!("{}: no `feedback:` section; nothing to do", file.display());
        return ExitCode::from(EX_CONFIG);
    }
    let modified = |f: &std::path::Path| std::fs::metadata(f).and_then(|m| m.modified()).ok();
    let current = Mutex::new((Arc::new(config), modified(file)));
    let config = || {
        let mut cur = current.lock().unwrap_or_else(|p| p.into_inner());
        let now = modified(file);
        if now != cur.1 {
            match Config::load(file) {
                Ok(c) if c.feedback.is_some() => {
                    tracing::info!("config reloaded");
                    *cur = (Arc::new(c), now);
                }
                Ok(_) => tracing::error!("the new config has no feedback section; keeping the old"),
                Err(e) => tracing::error!("the new config is invalid; keeping the old: {e}"),
            }
        }
        cur.0.clone()
    };
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(signal, on_stop as *const () as libc::sighandler_t);
        }
    }
    let end = listwarden::feedback::worker::run(config, once, || {
        STOP.load(std::sync::atomic::Ordering::SeqCst)
    });
    match end {
        listwarden::feedback::worker::End::Stopped => ExitCode::SUCCESS,
        listwarden::feedback::worker::End::Busy => ExitCode::from(EX_TEMPFAIL),
    }
}

/// Set by SIGTERM or SIGINT: the worker ends after the job in hand.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Loads a config for a one-shot command, printing its problems.
fn load(file: &std::path::Path) -> Result<Config, ExitCode> {
    match Config::load(file) {
        Ok(config) => {
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            Ok(config)
        }
        Err(e) => {
            eprintln!("{e}");
            let n = e.diagnostics.len();
            eprintln!(
                "{}: {n} error{}",
                file.display(),
                if n == 1 { "" } else { "s" }
            );
            Err(ExitCode::from(EX_CONFIG))
        }
    }
}

/// An error and its sources, `outer: inner: ...`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Parses an address given on the command line, with or without `<>`.
fn cli_address(text: &str) -> Result<Address, ExitCode> {
    match listwarden::address::parse_path(text) {
        Ok(Some(a)) => Ok(a),
        Ok(None) => {
            eprintln!("listwarden: the null sender <> has no signature");
            Err(ExitCode::from(64))
        }
        Err(e) => {
            eprintln!("listwarden: `{text}` is not an address: {e}");
            Err(ExitCode::from(64))
        }
    }
}

/// The key ring of a config and an address from the command line.
fn keys_and_address(file: &std::path::Path, text: &str) -> Result<(KeyRing, Address), ExitCode> {
    let (config, addr) = match (load(file), cli_address(text)) {
        (Ok(c), Ok(a)) => (c, a),
        (Err(code), _) | (_, Err(code)) => return Err(code),
    };
    match config.signing {
        Some(keys) => Ok((keys, addr)),
        None => {
            eprintln!(
                "{}: no signing keys are configured (signing.keys)",
                file.display()
            );
            Err(ExitCode::from(EX_CONFIG))
        }
    }
}

fn sign(file: &std::path::Path, text: &str) -> ExitCode {
    let (keys, addr) = match keys_and_address(file, text) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let plain = listwarden::address::prvs::strip(&addr).unwrap_or(addr);
    println!(
        "{}",
        listwarden::address::prvs::sign(&plain, &keys, listwarden::today())
    );
    ExitCode::SUCCESS
}

fn verify(file: &std::path::Path, text: &str) -> ExitCode {
    use listwarden::address::{PrvsResult, VerpResult, prvs, verp};
    let (keys, addr) = match keys_and_address(file, text) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let keys = &keys;
    let day = listwarden::today();
    let (verdict, detail) = match prvs::verify(&addr, keys, day) {
        PrvsResult::Valid { original, key_id } => {
            ("valid", format!("prvs, key {key_id}, for {original}"))
        }
        PrvsResult::Expired => ("expired", "prvs".to_string()),
        PrvsResult::Invalid => ("invalid", "prvs".to_string()),
        PrvsResult::UnknownKey => ("invalid", "prvs, unknown key".to_string()),
        PrvsResult::Unsigned => match verp::verify_verp(&addr, keys, day, keys.validity_days()) {
            VerpResult::Valid { member, key_id } => (
                "valid",
                format!("signed VERP, key {key_id}, for member {member}"),
            ),
            VerpResult::Expired => ("expired", "signed VERP".to_string()),
            VerpResult::Invalid => ("invalid", "signed VERP".to_string()),
            VerpResult::UnknownKey => ("invalid", "signed VERP, unknown key".to_string()),
            VerpResult::Unsigned => ("unsigned", "no signature".to_string()),
        },
    };
    println!("{verdict} ({detail})");
    if verdict == "valid" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Most bytes read of one message; the parser looks at far fewer.
const MAX_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;

fn classify(config: Option<&std::path::Path>, files: &[PathBuf]) -> ExitCode {
    use listwarden::dsn;
    use std::io::{Read, Write};
    let rules = match config {
        Some(file) => match load(file) {
            Ok(c) => c.rules,
            Err(code) => return code,
        },
        None => match dsn::RuleSet::builtin() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("listwarden: built-in rules: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let limits = dsn::Limits::default();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = false;
    for file in files {
        let mut raw = Vec::new();
        let label = file.display().to_string();
        let read = if label == "-" {
            std::io::stdin()
                .lock()
                .take(MAX_MESSAGE_BYTES)
                .read_to_end(&mut raw)
        } else {
            std::fs::File::open(file).and_then(|f| f.take(MAX_MESSAGE_BYTES).read_to_end(&mut raw))
        };
        if let Err(e) = read {
            eprintln!("listwarden: {label}: {e}");
            failed = true;
            continue;
        }
        let report = dsn::parse(&raw, &limits);
        let cls = dsn::classify(&report, &rules);
        for line in dsn::json_lines(&label, &report, &cls) {
            if writeln!(out, "{line}").is_err() {
                return ExitCode::FAILURE;
            }
        }
    }
    if out.flush().is_err() || failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn logwatch(
    config: Option<&std::path::Path>,
    from_start: bool,
    all: bool,
    source: PathBuf,
) -> ExitCode {
    use listwarden::logwatch::{DeliveryStatus, FollowOptions, Source, StartAt};
    use std::io::Write;
    let config = match config {
        Some(file) => match load(file) {
            Ok(c) => c,
            Err(code) => return code,
        },
        None => match Config::parse(
            "milter: {listen: inet:127.0.0.1:1}\n",
            std::path::Path::new("(built-in)"),
        ) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("listwarden: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let config = std::sync::Arc::new(config);
    let source = if source.as_os_str() == "-" {
        Source::Stdin
    } else {
        Source::File(source)
    };
    let options = FollowOptions {
        start_at: if from_start {
            StartAt::Beginning
        } else {
            StartAt::End
        },
        ..FollowOptions::default()
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("listwarden: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let result = runtime.block_on(listwarden::watch::for_each_delivery(
        source,
        options,
        || config.clone(),
        |d, list, c| {
            if d.status == DeliveryStatus::Sent && !all {
                return;
            }
            let status = match d.status {
                DeliveryStatus::Sent => "sent",
                DeliveryStatus::Deferred => "deferred",
                DeliveryStatus::Bounced => "bounced",
                DeliveryStatus::Expired => "expired",
            };
            let line = serde_json::json!({
                "queue_id": d.queue_id, "recipient": d.recipient, "status": status,
                "relay": d.relay, "dsn": d.dsn, "class": c.class.as_str(), "reason": c.reason.as_str(),
                "provider": c.provider, "rule": c.rule, "list": list,
            });
            let _ = writeln!(out, "{line}");
        },
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("listwarden: {e}");
            ExitCode::FAILURE
        }
    }
}

/// listwarden(8) and one page per command.
fn write_man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    listwarden_core::man::write_pages(Cli::command(), "listwarden", dir)
}

fn check_config(file: &std::path::Path) -> ExitCode {
    let config = match load(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    println!(
        "{}: OK ({} list{}, {} domain{}, milter on {}{})",
        file.display(),
        config.lists.len(),
        if config.lists.len() == 1 { "" } else { "s" },
        config.domains.len(),
        if config.domains.len() == 1 { "" } else { "s" },
        config.milter.listen,
        if config.warnings.is_empty() {
            ""
        } else {
            "; see the warnings above"
        },
    );
    ExitCode::SUCCESS
}

/// `check-config --peers` in a build without Redis: there are no peers.
#[cfg(not(feature = "redis"))]
fn check_peers(_file: &std::path::Path) -> ExitCode {
    eprintln!("peers: this listwarden was built without Redis support");
    ExitCode::from(EX_CONFIG)
}

/// `check-config --peers`: reads the fingerprints the running instances publish in Redis
/// and compares them with this file's.
#[cfg(feature = "redis")]
fn check_peers(file: &std::path::Path) -> ExitCode {
    use listwarden::config::StateBackend;
    use listwarden::ratelimit::{RedisConfig, RedisStore};
    use listwarden::shared_state;
    let Ok(config) = Config::load(file) else {
        return ExitCode::from(EX_CONFIG);
    };
    let StateBackend::Redis {
        url, tls, prefix, ..
    } = &config.ratelimit.state
    else {
        println!("peers: none (ratelimit.state is memory)");
        return ExitCode::SUCCESS;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let peers = runtime.block_on(async {
        let store = RedisStore::new(RedisConfig {
            url: url.clone(),
            tls: tls.clone(),
            prefix: prefix.clone(),
            deadline: std::time::Duration::from_secs(2),
            ..RedisConfig::default()
        })
        .ok()?;
        if !store
            .wait_connected(std::time::Duration::from_secs(5))
            .await
        {
            return None;
        }
        shared_state::read_peers(&store).await
    });
    let Some(peers) = peers else {
        eprintln!("peers: Redis did not answer");
        return ExitCode::FAILURE;
    };
    let (ring, lists) = shared_state::fingerprints(&config);
    println!("this file: key ring {ring}, lists {lists}");
    let mut differ = 0;
    for p in &peers {
        let verdict = match (p.ring == ring, p.lists == lists) {
            (true, true) => "same",
            (false, true) => "DIFFERENT KEY RING",
            (true, false) => "DIFFERENT LISTS",
            (false, false) => "DIFFERENT KEY RING AND LISTS",
        };
        if verdict != "same" {
            differ += 1;
        }
        println!(
            "{}: key ring {}, lists {}: {verdict}",
            p.instance, p.ring, p.lists
        );
    }
    println!(
        "{} peer{}, {differ} different",
        peers.len(),
        if peers.len() == 1 { "" } else { "s" }
    );
    if differ == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EX_CONFIG)
    }
}

fn init_logging(filter: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let stderr = std::io::stderr();
    let ansi = stderr.is_terminal();
    // Under systemd, journald stamps each line itself.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false);
    if under_journald {
        builder.without_time().init();
    } else {
        builder.init();
    }
}
