//! A real listwarden milter on a loopback port, for protocol tests.
#![allow(dead_code)]

use listwarden::Shared;
use listwarden::config::Config;
use listwarden::milter::{self, MilterListener};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const CONFIG: &str = "\
milter:
  listen: inet:127.0.0.1:8890
trusted_networks: [127.0.0.1/32, \"::1/128\"]
lists:
  - address: members@lists.example.org
  - address: quiet@lists.example.org
    observe: true
";

pub struct TestMilter {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestMilter {
    pub async fn start(yaml: &str) -> TestMilter {
        let config = Config::parse(yaml, Path::new("test.yaml")).expect("test config is valid");
        TestMilter::start_shared(Shared::new(config)).await
    }

    /// Starts a milter over prepared shared state (e.g. with a manual clock).
    pub async fn start_shared(shared: Arc<Shared>) -> TestMilter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(milter::run(
            MilterListener::tcp(listener),
            shared.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        TestMilter {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The value of one sample of `listwarden_messages_total`.
    pub fn messages(&self, verdict: &str, reason: &str) -> u64 {
        self.shared
            .metrics
            .messages
            .with_label_values(&[verdict, reason])
            .get()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

/// The example key shipped in config/keys/, for tests that sign.
pub const EXAMPLE_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/keys/EXAMPLE-PUBLIC-KEY.key"
);

/// A `signing:` block using the example key, as YAML lines.
pub fn signing_block() -> String {
    format!("signing:\n  keys: [{{id: 1, file: {EXAMPLE_KEY}}}]\n  sign_with: 1\n  demo: true\n")
}

/// Days since the Unix epoch, now.
pub fn today() -> u64 {
    listwarden::policy::day_of(listwarden::unix_now())
}
