//! A milter that does nothing: registers every callback and answers
//! `Continue`. The baseline "Postfix + a milter" in `benches/postfix-e2e`.
//! With `--only STAGE` it takes that one stage only (`none`: nothing after
//! the negotiation) and listens through listwarden's own listener (TCP
//! QUICKACK, so the stages it opts out of cannot stall on Nagle): the
//! difference between `--only none` and `--only rcpt` is the cost of one
//! RCPT round trip.
//!
//! Usage: noop-milter [--only STAGE] inet:HOST:PORT | unix:/PATH [SOCKET_MODE_OCTAL]

use std::os::unix::fs::PermissionsExt;

const USAGE: &str = "usage: noop-milter [--only none|connect|helo|mail|rcpt|data|eoh|eom] inet:HOST:PORT | unix:/PATH [MODE]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    let only = if args.peek().map(String::as_str) == Some("--only") {
        args.next();
        Some(args.next().ok_or_else(|| anyhow::anyhow!(USAGE))?)
    } else {
        None
    };
    let listen = args.next().ok_or_else(|| anyhow::anyhow!(USAGE))?;
    let mode = match args.next() {
        Some(m) => u32::from_str_radix(&m, 8)?,
        None => 0o660,
    };
    let config = indymilter::Config {
        max_connections: 500,
        ..Default::default()
    };
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    if let Some(stage) = only {
        let callbacks = listwarden_benches::one_stage_callbacks(&stage)
            .ok_or_else(|| anyhow::anyhow!("unknown stage {stage}; {USAGE}"))?;
        let listener = match listen.strip_prefix("inet:") {
            Some(addr) => {
                listwarden::milter::MilterListener::tcp(tokio::net::TcpListener::bind(addr).await?)
            }
            None => anyhow::bail!("--only listens on inet:HOST:PORT only"),
        };
        indymilter::run(listener, callbacks, config, shutdown).await?;
        return Ok(());
    }
    let callbacks = listwarden_benches::noop_callbacks();
    if let Some(addr) = listen.strip_prefix("inet:") {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        indymilter::run(listener, callbacks, config, shutdown).await?;
    } else if let Some(path) = listen.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        indymilter::run(listener, callbacks, config, shutdown).await?;
        let _ = std::fs::remove_file(path);
    } else {
        anyhow::bail!("listen must be inet:HOST:PORT or unix:/PATH, not {listen}");
    }
    Ok(())
}
