//! A milter that does nothing: registers every callback and answers
//! `Continue`. The baseline "Postfix + a milter" in `benches/postfix-e2e`.
//!
//! Usage: noop-milter inet:HOST:PORT | unix:/PATH [SOCKET_MODE_OCTAL]

use std::os::unix::fs::PermissionsExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: noop-milter inet:HOST:PORT | unix:/PATH [MODE]"))?;
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
