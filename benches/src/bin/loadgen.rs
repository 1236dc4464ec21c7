//! Milter-protocol load generator: many concurrent milter sessions driving
//! listwarden directly (started in this process on 127.0.0.1:0 or a unix
//! socket, with a real config), against a no-op milter in the same run.
//!
//! Each message opens its own milter connection (as Postfix's smtpd does
//! per SMTP session), then sends what an MTA sends: connect, HELO and DATA
//! when the milter asked for them, MAIL, RCPT, headers, end of headers,
//! the body and end of message, stopping at the first final answer.
//! Reports messages decided per second and latency per stage.
//!
//! Usage: loadgen [--messages N] [--sessions C] [--rounds R] [--config FILE]
//!                [--shipped-budgets] [--unix]

use indymilter::MacroStage;
use indymilter::ProtoOpts;
use indymilter_test::{Status, TestConnection};
use listwarden::Shared;
use listwarden::address::{Address, prvs};
use listwarden::config::Config;
use listwarden::milter::{self, MilterListener};
use listwarden_benches::{MAX_BODY_CHUNK, SplitMessage, noop_callbacks, repo_root, split_message};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, oneshot};

/// Stages timed; the index is the position in the latency table.
const STAGES: [&str; 6] = ["conn", "mail", "rcpt", "eoh", "body", "eom"];
const ORDINARY_BODY_BYTES: usize = 512;
const DSN_FIXTURES: [&str; 6] = [
    "yahoo_ts01_delay",
    "yahoo_tss04_delay",
    "postfix_dsn",
    "gmail_dsn",
    "arf_abuse",
    "o365_dsn",
];

struct Args {
    messages: usize,
    sessions: usize,
    rounds: usize,
    config: PathBuf,
    shipped_budgets: bool,
    unix: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        messages: 20_000,
        sessions: 64,
        rounds: 3,
        config: repo_root().join("config/listwarden.yaml"),
        shipped_budgets: false,
        unix: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--messages" => a.messages = value()?.parse()?,
            "--sessions" => a.sessions = value()?.parse()?,
            "--rounds" => a.rounds = value()?.parse()?,
            "--config" => a.config = PathBuf::from(value()?),
            "--shipped-budgets" => a.shipped_budgets = true,
            "--unix" => a.unix = true,
            "-h" | "--help" => {
                println!(
                    "loadgen [--messages N] [--sessions C] [--rounds R] [--config FILE] [--shipped-budgets] [--unix]"
                );
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(
        a.messages > 0 && a.sessions > 0 && a.rounds > 0,
        "counts must be > 0"
    );
    Ok(a)
}

/// What kind of message, and its fixed parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Ordinary,
    ListPost,
    SignedBounce,
    ForgedBounce,
}

impl Kind {
    /// The mix: 30% ordinary mail from strangers, 20% list posts from the
    /// trusted list server, 20% validly signed DSNs, 30% forged bounces.
    fn of(i: usize) -> Kind {
        match i % 10 {
            0..=2 => Kind::Ordinary,
            3 | 4 => Kind::ListPost,
            5 | 6 => Kind::SignedBounce,
            _ => Kind::ForgedBounce,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Ordinary => "ordinary",
            Kind::ListPost => "list-post",
            Kind::SignedBounce => "signed-dsn",
            Kind::ForgedBounce => "forged-bounce",
        }
    }
}

/// One message to play.
struct Message {
    client: [u8; 4],
    sender: String,
    rcpt: String,
    split: Arc<SplitMessage>,
}

struct Corpus {
    ordinary: Arc<SplitMessage>,
    post: Arc<SplitMessage>,
    dsns: Vec<Arc<SplitMessage>>,
    signed_rcpt: String,
}

impl Corpus {
    fn load(config: &Config) -> anyhow::Result<Corpus> {
        let filler = "x".repeat(70);
        let mut body = String::new();
        while body.len() < ORDINARY_BODY_BYTES {
            body.push_str(&filler);
            body.push('\n');
        }
        let ordinary = format!(
            "From: Alice <alice@example.net>\nTo: bob@example.com\nSubject: hello\n\
             Message-ID: <bench@example.net>\nDate: Thu, 27 Nov 2025 10:00:00 +0000\n\n{body}"
        );
        let post = format!(
            "From: Members <members@lists.example.org>\nTo: members@lists.example.org\n\
             Subject: [members] news\nMessage-ID: <post@lists.example.org>\n\
             Date: Thu, 27 Nov 2025 10:00:00 +0000\n\n{body}"
        );
        let mut dsns = Vec::new();
        for name in DSN_FIXTURES {
            dsns.push(Arc::new(split_message(&listwarden_benches::dsn_fixture(
                name,
            )?)));
        }
        let ring = config
            .signing
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the config has no signing keys"))?;
        let plain = Address::parse("members-bounces@lists.example.org")?;
        let today = listwarden::policy::day_of(listwarden::unix_now());
        let signed_rcpt = format!("<{}>", prvs::sign(&plain, ring, today));
        Ok(Corpus {
            ordinary: Arc::new(split_message(ordinary.as_bytes())),
            post: Arc::new(split_message(post.as_bytes())),
            dsns,
            signed_rcpt,
        })
    }

    fn message(&self, i: usize) -> Message {
        // Bounces come from many /24s, so no single network's share matters.
        let net = [10, ((i >> 8) & 0xff) as u8, (i & 0xff) as u8, 9];
        match Kind::of(i) {
            Kind::Ordinary => Message {
                client: [203, 0, 113, (i % 250) as u8 + 1],
                sender: "<alice@example.net>".into(),
                rcpt: "<bob@example.com>".into(),
                split: self.ordinary.clone(),
            },
            Kind::ListPost => Message {
                client: [127, 0, 0, 1],
                sender: "<members-bounces@lists.example.org>".into(),
                rcpt: "<alice@example.net>".into(),
                split: self.post.clone(),
            },
            Kind::SignedBounce => Message {
                client: net,
                sender: "<>".into(),
                rcpt: self.signed_rcpt.clone(),
                split: self.dsns[(i / 10) % self.dsns.len()].clone(),
            },
            Kind::ForgedBounce => Message {
                client: net,
                sender: "<>".into(),
                rcpt: "<members-bounces@lists.example.org>".into(),
                split: self.dsns[2].clone(),
            },
        }
    }
}

#[derive(Clone)]
enum Target {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

/// Per-run results: latencies per stage (µs) and final answers.
#[derive(Default)]
struct Results {
    lat: [Vec<u32>; STAGES.len()],
    outcomes: BTreeMap<(Kind, &'static str, String), usize>,
    errors: usize,
}

fn status_name(s: &Status) -> String {
    match s {
        Status::Accept => "accept".into(),
        Status::Continue => "continue".into(),
        Status::Discard => "discard".into(),
        Status::Skip => "skip".into(),
        Status::Noreply => "noreply".into(),
        Status::Reject { .. } => "reject".into(),
        Status::Tempfail { .. } => "tempfail".into(),
    }
}

fn us(since: Instant) -> u32 {
    u32::try_from(since.elapsed().as_micros()).unwrap_or(u32::MAX)
}

/// Plays one message; records stage latencies into `lat` and returns
/// (stage of the final answer, answer).
async fn play(
    target: &Target,
    m: &Message,
    queue_id: &str,
    lat: &mut [Vec<u32>; STAGES.len()],
) -> anyhow::Result<(&'static str, String)> {
    let t = Instant::now();
    let mut conn = match target {
        Target::Tcp(addr) => TestConnection::open(addr).await?,
        Target::Unix(path) => TestConnection::configure().open_unix(path).await?,
    };
    let opts = conn.negotiated_opts();
    // Macros only for the stages the milter asked for: TestConnection
    // writes a macro packet and its command separately (Postfix writes them
    // together), and a milter that does not ACK at once (the no-op) would
    // then stall each step on Nagle against delayed ACK (~40 ms).
    let wants = conn.requested_macros().clone();
    let st = conn.connect("client.example", (m.client, 40000)).await?;
    lat[0].push(us(t));
    if !matches!(st, Status::Continue | Status::Noreply) {
        conn.close().await?;
        return Ok(("conn", status_name(&st)));
    }
    if !opts.contains(ProtoOpts::NO_HELO) {
        conn.helo("client.example").await?;
    }
    let qid = [("i", queue_id)];
    let t = Instant::now();
    if wants.contains_key(&MacroStage::Mail) {
        conn.macros(MacroStage::Mail, qid).await?;
    }
    let st = conn.mail([m.sender.as_str()]).await?;
    lat[1].push(us(t));
    if st != Status::Continue {
        conn.close().await?;
        return Ok(("mail", status_name(&st)));
    }
    let t = Instant::now();
    if wants.contains_key(&MacroStage::Rcpt) {
        conn.macros(MacroStage::Rcpt, qid).await?;
    }
    let st = conn.rcpt([m.rcpt.as_str()]).await?;
    lat[2].push(us(t));
    if st != Status::Continue {
        conn.close().await?;
        return Ok(("rcpt", status_name(&st)));
    }
    if !opts.contains(ProtoOpts::NO_DATA) {
        conn.data().await?;
    }
    let t = Instant::now();
    for (name, value) in &m.split.headers {
        let st = conn.header(name.as_str(), value.as_str()).await?;
        if st != Status::Continue && st != Status::Noreply {
            conn.close().await?;
            return Ok(("header", status_name(&st)));
        }
    }
    if wants.contains_key(&MacroStage::Eoh) {
        conn.macros(MacroStage::Eoh, qid).await?;
    }
    let st = conn.eoh().await?;
    lat[3].push(us(t));
    if st != Status::Continue {
        conn.close().await?;
        return Ok(("eoh", status_name(&st)));
    }
    if !opts.contains(ProtoOpts::NO_BODY) {
        let t = Instant::now();
        for chunk in m.split.body.chunks(MAX_BODY_CHUNK) {
            let st = conn.body(chunk.to_vec()).await?;
            if st == Status::Skip {
                break;
            }
            if st != Status::Continue && st != Status::Noreply {
                conn.close().await?;
                return Ok(("body", status_name(&st)));
            }
        }
        lat[4].push(us(t));
    }
    let t = Instant::now();
    if wants.contains_key(&MacroStage::Eom) {
        conn.macros(MacroStage::Eom, qid).await?;
    }
    let (_actions, st) = conn.eom().await?;
    lat[5].push(us(t));
    conn.close().await?;
    Ok(("eom", status_name(&st)))
}

async fn run_load(target: Target, corpus: Arc<Corpus>, args: &Args) -> (Duration, Results) {
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Results::default()));
    let total = args.messages;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.sessions {
        let (next, results, corpus, target) = (
            next.clone(),
            results.clone(),
            corpus.clone(),
            target.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut local = Results::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let m = corpus.message(i);
                let qid = format!("Q{i:09X}");
                match play(&target, &m, &qid, &mut local.lat).await {
                    Ok((stage, answer)) => {
                        *local
                            .outcomes
                            .entry((Kind::of(i), stage, answer))
                            .or_default() += 1
                    }
                    Err(_) => local.errors += 1,
                }
            }
            let mut r = results.lock().await;
            for (all, mine) in r.lat.iter_mut().zip(local.lat) {
                all.extend(mine);
            }
            for (k, v) in local.outcomes {
                *r.outcomes.entry(k).or_default() += v;
            }
            r.errors += local.errors;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let took = started.elapsed();
    let r = std::mem::take(&mut *results.lock().await);
    (took, r)
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied().unwrap_or(0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Starts a server on a fresh listener; returns where to reach it and the
/// handle that stops it.
async fn start(
    name: &str,
    shared: Option<Arc<Shared>>,
    unix_dir: Option<&Path>,
) -> anyhow::Result<(Target, oneshot::Sender<()>, tokio::task::JoinHandle<()>)> {
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let (target, task) = match unix_dir {
        Some(dir) => {
            let path = dir.join(format!("{name}.sock"));
            let _ = std::fs::remove_file(&path);
            let l = tokio::net::UnixListener::bind(&path)?;
            let task = match shared {
                Some(s) => tokio::spawn(async move {
                    let _ = milter::run(MilterListener::unix(l), s, shutdown).await;
                }),
                None => tokio::spawn(async move {
                    let config = indymilter::Config {
                        max_connections: 500,
                        ..Default::default()
                    };
                    let _ = indymilter::run(l, noop_callbacks(), config, shutdown).await;
                }),
            };
            (Target::Unix(path), task)
        }
        None => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = l.local_addr()?;
            let task = match shared {
                Some(s) => tokio::spawn(async move {
                    let _ = milter::run(MilterListener::tcp(l), s, shutdown).await;
                }),
                None => tokio::spawn(async move {
                    let config = indymilter::Config {
                        max_connections: 500,
                        ..Default::default()
                    };
                    let _ = indymilter::run(l, noop_callbacks(), config, shutdown).await;
                }),
            };
            (Target::Tcp(addr), task)
        }
    };
    Ok((target, stop, task))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut config = Config::load(&args.config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    if !args.shipped_budgets {
        // Budgets off: otherwise most bounces of a long run end as 451 at
        // RCPT and the DSN classification path is barely exercised.
        config.ratelimit.list_valid = None;
        config.ratelimit.list_invalid = None;
        config.ratelimit.network = None;
        config.ratelimit.address = None;
    }
    // The milter may not limit the load generator's concurrency.
    config.milter.max_connections = config.milter.max_connections.max(args.sessions * 2);
    let corpus = Arc::new(Corpus::load(&config)?);
    let shared = Shared::new(config);
    let dir = std::env::temp_dir().join(format!("lw-loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let unix_dir = args.unix.then_some(dir.as_path());
    let (lw_target, lw_stop, lw_task) = start("listwarden", Some(shared.clone()), unix_dir).await?;
    let (noop_target, noop_stop, noop_task) = start("noop", None, unix_dir).await?;

    println!(
        "loadgen: {} messages per run, {} concurrent sessions, {} rounds, {} , config {}{}",
        args.messages,
        args.sessions,
        args.rounds,
        if args.unix {
            "unix socket"
        } else {
            "TCP 127.0.0.1"
        },
        args.config.display(),
        if args.shipped_budgets {
            ""
        } else {
            " (budgets off)"
        }
    );
    // Warm-up: a few hundred messages each (connections, allocators, caches).
    let warm = Args {
        messages: 500.min(args.messages),
        ..clone_args(&args)
    };
    run_load(noop_target.clone(), corpus.clone(), &warm).await;
    run_load(lw_target.clone(), corpus.clone(), &warm).await;

    let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut pooled: BTreeMap<&str, Results> = BTreeMap::new();
    for round in 1..=args.rounds {
        for (name, target) in [("noop", &noop_target), ("listwarden", &lw_target)] {
            let (took, r) = run_load(target.clone(), corpus.clone(), &args).await;
            let rate = args.messages as f64 / took.as_secs_f64();
            println!(
                "round {round} {name:<10} {:>8.0} msg/s ({:.2} s, {} errors)",
                rate,
                took.as_secs_f64(),
                r.errors
            );
            rates.entry(name).or_default().push(rate);
            let p = pooled.entry(name).or_default();
            for (all, mine) in p.lat.iter_mut().zip(r.lat) {
                all.extend(mine);
            }
            for (k, v) in r.outcomes {
                *p.outcomes.entry(k).or_default() += v;
            }
            p.errors += r.errors;
        }
    }
    let noop_med = median(
        rates
            .get_mut("noop")
            .map(|v| v.as_mut_slice())
            .unwrap_or(&mut []),
    );
    println!("\n| milter | msg/s median | min | max | ratio to no-op |");
    println!("|---|---|---|---|---|");
    for (name, v) in rates.iter_mut() {
        let med = median(v);
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        println!(
            "| {name} | {med:.0} | {min:.0} | {max:.0} | {:.2} |",
            if noop_med > 0.0 { med / noop_med } else { 0.0 }
        );
    }
    println!(
        "\nLatency per stage, µs (all rounds pooled; conn = TCP/unix connect + negotiate + CONNECT):"
    );
    println!("| milter | stage | samples | p50 | p99 | p99.9 | max |");
    println!("|---|---|---|---|---|---|---|");
    for (name, r) in pooled.iter_mut() {
        for (i, stage) in STAGES.iter().enumerate() {
            let Some(v) = r.lat.get_mut(i) else { continue };
            if v.is_empty() {
                continue;
            }
            v.sort_unstable();
            println!(
                "| {name} | {stage} | {} | {} | {} | {} | {} |",
                v.len(),
                pct(v, 0.5),
                pct(v, 0.99),
                pct(v, 0.999),
                v.last().copied().unwrap_or(0)
            );
        }
    }
    println!("\nFinal answers (all rounds):");
    println!("| milter | message | stage | answer | count |");
    println!("|---|---|---|---|---|");
    for (name, r) in &pooled {
        for ((kind, stage, answer), n) in &r.outcomes {
            println!("| {name} | {} | {stage} | {answer} | {n} |", kind.name());
        }
        if r.errors > 0 {
            println!("| {name} | (protocol errors) | | | {} |", r.errors);
        }
    }
    let m = &shared.metrics;
    println!(
        "\nlistwarden counters: signed {}, bounces valid {}, unsigned {}",
        m.signed.with_label_values(&["members"]).get(),
        m.bounces.with_label_values(&["members", "valid"]).get(),
        m.bounces.with_label_values(&["members", "unsigned"]).get(),
    );
    let _ = lw_stop.send(());
    let _ = noop_stop.send(());
    let _ = lw_task.await;
    let _ = noop_task.await;
    let _ = std::fs::remove_dir_all(&dir);
    let errors: usize = pooled.values().map(|r| r.errors).sum();
    anyhow::ensure!(errors == 0, "{errors} protocol errors");
    Ok(())
}

fn clone_args(a: &Args) -> Args {
    Args {
        messages: a.messages,
        sessions: a.sessions,
        rounds: a.rounds,
        config: a.config.clone(),
        shipped_budgets: a.shipped_budgets,
        unix: a.unix,
    }
}
