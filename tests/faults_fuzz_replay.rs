//! Replays the fuzz corpora on stable Rust, in `cargo test`: every stored
//! input of `fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/` goes
//! through the same code as its fuzz target (`fuzz/src/`, included here),
//! so a crash once found stays fixed.
//!
//! By default only the seeds kept in git (`seed-*`) and every artifact
//! (crash reproducers) are replayed; `LISTWARDEN_REPLAY_ALL=1` replays the
//! whole local corpus a fuzzing run has grown.
//!
//! The milter inputs run through the real milter over a unix socket pair,
//! on a one-thread runtime, and must end within a bound with no panic
//! anywhere (even one the panic guard would catch), no leaked connection
//! and well-formed replies.

use listwarden_test_support as support;
#[allow(dead_code)]
#[path = "../fuzz/src/milter.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../fuzz/src/inputs.rs"]
mod inputs;

use listwarden::Shared;
use listwarden::config::Config;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};
use support::frames;

/// Longest one stored session may take (they take milliseconds).
const SESSION_BOUND: Duration = Duration::from_secs(5);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The stored inputs of one target, sorted by path.
fn inputs_of(target: &str) -> Vec<PathBuf> {
    let all = std::env::var_os("LISTWARDEN_REPLAY_ALL").is_some_and(|v| v == "1");
    let mut out = Vec::new();
    for (kind, keep_all) in [("corpus", all), ("artifacts", true)] {
        let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
            continue;
        };
        for entry in dir.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_file() && !name.starts_with('.') && (keep_all || name.starts_with("seed-")) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

thread_local! {
    /// Panics on this thread since the hook was installed (caught or not).
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

/// Counts every panic per thread, then lets the default hook report it.
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            default(info);
        }));
    });
}

/// Runs `f` on every input of `target`; returns how many there were.
fn replay(target: &str, mut f: impl FnMut(&Path, &[u8])) -> usize {
    let files = inputs_of(target);
    for path in &files {
        // A running fuzzer replaces corpus files as it shrinks them.
        let Ok(data) = std::fs::read(path) else {
            continue;
        };
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(path, &data))) {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{target}: {} failed: {why}", path.display());
        }
    }
    files.len()
}

#[test]
fn replay_milter_session() {
    count_panics();
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/keys/EXAMPLE-PUBLIC-KEY.key"
    );
    let config = Config::parse(&harness::fuzz_config_yaml(key), Path::new("f.yaml")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let count = replay("milter_session", |path, data| {
        let (plan, payload) = harness::split_plan(data);
        let shared = Shared::new(config.clone());
        let before = PANICS.with(Cell::get);
        let outcome = runtime.block_on(async {
            let (client, server) = tokio::net::UnixStream::pair().unwrap();
            harness::run_session(shared, client, server, &plan, payload, SESSION_BOUND).await
        });
        let outcome = outcome
            .unwrap_or_else(|_| panic!("{}: no end within {SESSION_BOUND:?}", path.display()));
        // The fuzzer's in-memory path must decide exactly as the socket does.
        let scripted = runtime
            .block_on(harness::run_scripted(
                Shared::new(config.clone()),
                &plan,
                payload,
                SESSION_BOUND,
            ))
            .unwrap_or_else(|_| panic!("{}: scripted, no end", path.display()));
        assert_eq!(
            scripted.replies,
            outcome.replies,
            "{}: scripted stream and socket pair differ",
            path.display()
        );
        assert_eq!(PANICS.with(Cell::get), before, "a panic inside the session");
        assert_eq!(outcome.internal_errors, 0, "the panic guard fired");
        assert_eq!(outcome.connections_after, 0, "connection gauge leaked");
        assert_eq!(outcome.trailing, 0, "a partial reply frame");
        harness::check_replies(&outcome.replies).unwrap();
        // Seeds are real conversations: each must have been answered.
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        {
            assert!(
                outcome.replies.iter().any(|r| r.cmd == b'O'),
                "seed not negotiated"
            );
        }
    });
    assert!(count >= 20, "the seed corpus is missing ({count} inputs)");
    eprintln!("milter_session: {count} inputs in {:?}", started.elapsed());
}

#[test]
fn replay_dsn() {
    // Panics mail-parser raises in debug builds (debug assertions, overflow
    // checks) are caught by `dsn::parse` and reported as unparsed; list
    // them, they are not failures (fuzz/FINDINGS.md).
    let mut contained = Vec::new();
    let count = replay("dsn", |path, data| {
        inputs::dsn(data);
        let report = listwarden::dsn::parse(data, &listwarden::dsn::Limits::default());
        if report.unparsed_reason == Some(listwarden::dsn::UnparsedReason::ParserPanic) {
            contained.push(path.display().to_string());
        }
    });
    assert!(count >= 20, "{count} inputs");
    if !contained.is_empty() {
        eprintln!("dsn: parser panics contained for {contained:?}");
    }
}

#[test]
fn replay_address() {
    let count = replay("address", |_, data| inputs::address(data));
    assert!(count >= 5, "{count} inputs");
}

#[test]
fn replay_config() {
    let origin = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/listwarden.yaml");
    let count = replay("config", |_, data| inputs::config(data, &origin));
    assert!(count >= 5, "{count} inputs");
}

#[test]
fn seeds_are_valid_conversations_for_their_chunk_plans() {
    // The seed generator's plans: whole, byte by byte, and ragged. Each
    // seed must cut into chunks that add up to its payload.
    let seeds = inputs_of("milter_session").into_iter().filter(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
    });
    for path in seeds {
        let data = std::fs::read(&path).unwrap();
        let (plan, payload) = harness::split_plan(&data);
        assert_eq!(
            plan.iter().sum::<usize>(),
            payload.len(),
            "{}",
            path.display()
        );
        let (first, _) = frames::parse_replies(payload);
        // A conversation starts with option negotiation (read as a frame).
        assert_eq!(
            first.first().map(|f| f.cmd),
            Some(b'O'),
            "{}",
            path.display()
        );
    }
}
