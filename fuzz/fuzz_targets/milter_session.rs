//! Raw milter frames, cut at arbitrary byte boundaries, fed to a real
//! listwarden session (production callbacks under indymilter) over an
//! in-memory stream that hands over one chunk per read. Fails on a panic (libfuzzer-sys aborts even on panics
//! listwarden's guard would catch), a session that does not end within the
//! bound, a leaked connection, or a malformed reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use listwarden::Shared;
use listwarden::config::Config;
use listwarden_fuzz::milter::{check_replies, fuzz_config_yaml, run_scripted, split_plan};
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

/// Longer than any honest session of one input takes, short enough to
/// report a hang well before libFuzzer's own timeout.
const BOUND: Duration = Duration::from_secs(5);

static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/keys/EXAMPLE-PUBLIC-KEY.key"
    );
    Config::parse(&fuzz_config_yaml(key), Path::new("fuzz.yaml")).expect("fuzz config is valid")
});

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
});

fuzz_target!(|data: &[u8]| {
    let (plan, payload) = split_plan(data);
    // Fresh state per input (metrics, budgets, shields): runs are repeatable.
    let shared = Shared::new(CONFIG.clone());
    let outcome = RUNTIME.block_on(run_scripted(shared, &plan, payload, BOUND));
    let outcome = outcome.expect("session did not end within the bound");
    assert_eq!(outcome.connections_after, 0, "connection gauge leaked");
    assert_eq!(outcome.trailing, 0, "a partial reply frame");
    if let Err(problem) = check_replies(&outcome.replies) {
        panic!("{problem}");
    }
});
