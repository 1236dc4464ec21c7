//! The running daemon: binds the sockets, serves metrics, reloads the
//! config on SIGHUP or when the file changes, and stops on SIGTERM/SIGINT.

use crate::Shared;
use crate::config::{Config, ConfigError, Socket, reload};
use crate::milter::{self, MilterListener};
use crate::record::Event;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, UnixListener};

/// sysexits(3) EX_CONFIG: the configuration is invalid.
pub const EX_CONFIG: u8 = 78;

/// Why the daemon could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {socket}")]
    Listen {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove stale socket {}", path.display())]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    #[error("{} is a live socket (something answers on it); refusing to replace it", .0.display())]
    SocketInUse(PathBuf),
    #[error("cannot set mode {mode:o} on {}", path.display())]
    SocketMode {
        path: PathBuf,
        mode: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve {what} on {addr}")]
    Http {
        what: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("milter stopped with an error")]
    Milter(#[source] std::io::Error),
}

impl DaemonError {
    /// The process exit code: sysexits(3) EX_CONFIG for a config error
    /// (also at start), 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_) => EX_CONFIG,
            _ => 1,
        }
    }
}

/// How often the config file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Runs listwarden with the config at `path` until SIGTERM or SIGINT.
pub async fn run(path: PathBuf) -> Result<(), DaemonError> {
    let config = Config::load(&path)?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let shared = Shared::new(config);
    let reloader = Arc::new(Reloader {
        path: path.clone(),
        shared: shared.clone(),
    });
    let current = shared.config.load_full();

    let listener = bind(&current.milter.listen, current.milter.socket_mode).await?;
    let trusted = match &current.milter.trusted_listen {
        Some(socket) => Some(bind(socket, current.milter.socket_mode).await?),
        None => None,
    };
    if let Some(addr) = current.metrics_listen {
        let bound = crate::metrics::spawn_http(addr, shared.metrics.clone()).map_err(|source| {
            DaemonError::Http {
                what: "metrics",
                addr,
                source,
            }
        })?;
        tracing::info!("metrics on http://{bound}/metrics");
    }
    if let Some(addr) = current.unsubscribe_listen {
        let bound = crate::metrics::spawn_unsubscribe_http(addr, unsubscribe_handler(&shared))
            .map_err(|source| DaemonError::Http {
                what: "one-click unsubscribe",
                addr,
                source,
            })?;
        tracing::info!("one-click unsubscribe on http://{bound}/unsubscribe");
    }
    if let Some(socket) = &current.milter.trusted_listen {
        tracing::info!(%socket, "list server's milter socket: MAIL and RCPT answered at end of message");
    }
    tracing::info!(
        milter = %current.milter.listen,
        lists = current.lists.len(),
        observe = current.observe,
        "listwarden {} started",
        env!("CARGO_PKG_VERSION")
    );

    if let Some(t) = &current.throttle {
        tracing::info!(map = %t.map, observe = t.observe, "throttle: writing Postfix's transport table");
    }
    // Always running: a throttle added by a reload starts writing, one
    // removed is emptied.
    tokio::spawn(crate::throttle::maintain_map(shared.clone()));
    tokio::spawn(housekeeping(shared.clone()));
    #[cfg(feature = "redis")]
    tokio::spawn(crate::shared_state::run(shared.clone()));
    if let Some(file) = &current.logwatch_file {
        tracing::info!(file = %file.display(), "following Postfix's log for outbound results");
        let source = crate::logwatch::Source::File(file.clone());
        tokio::spawn(crate::watch::count_into(shared.clone(), source));
    }
    tokio::spawn(watch_signals(reloader.clone()));
    tokio::spawn(watch_file(reloader.clone()));

    let result = match trusted {
        None => milter::run(listener, shared.clone(), shutdown_signal()).await,
        Some(trusted) => {
            // One signal stops both sockets; so does either one ending.
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let stop = Arc::new(stop);
            let on_signal = stop.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = on_signal.send(true);
            });
            let (a, b) = tokio::join!(
                then_stop(
                    milter::run(listener, shared.clone(), until(stopped.clone())),
                    stop.clone()
                ),
                then_stop(
                    milter::run_door(
                        trusted,
                        shared.clone(),
                        milter::Door::ListServer,
                        until(stopped)
                    ),
                    stop
                ),
            );
            a.and(b)
        }
    };
    // Fail open: with listwarden gone, every domain takes the normal route.
    let map = shared
        .config
        .load()
        .throttle
        .as_ref()
        .map(|t| t.map.clone());
    if let Some(map) = map {
        let shown = map.to_string();
        match tokio::task::spawn_blocking(move || crate::throttle::reset(&map)).await {
            Ok(Ok(_)) => tracing::info!(map = %shown, "throttle: transport table emptied"),
            Ok(Err(e)) => tracing::error!("throttle: cannot empty the transport table: {e}"),
            Err(e) => tracing::error!("throttle: cannot empty the transport table: {e}"),
        }
    }
    for socket in std::iter::once(&current.milter.listen).chain(&current.milter.trusted_listen) {
        if let Socket::Unix(p) = socket {
            let _ = std::fs::remove_file(p);
        }
    }
    tracing::info!("listwarden stopped");
    result.map_err(DaemonError::Milter)
}

/// The one-click unsubscribe handler. Answers carry no detail (one status
/// and body for "no such list" and "bad token", no file paths); the log
/// gets the detail and an audit line per unsubscribe. A list-manager
/// list's request queues a feedback job (see `src/unsubscribe.rs`); an
/// expander list's removes the member here.
pub fn unsubscribe_handler(shared: &Arc<Shared>) -> crate::metrics::UnsubscribeHandler {
    let shared = shared.clone();
    Arc::new(move |query: &str, body: &[u8], client: std::net::IpAddr| {
        let config = shared.config.load_full();
        let today = crate::today();
        if let Some(answer) = crate::unsubscribe::one_click(&config, query, body, client, today) {
            return answer;
        }
        let Some(keys) = config.signing.as_ref() else {
            return (503, "try again later\n".into());
        };
        let lists = config.expander_lists();
        match listwarden_expand::unsubscribe::one_click(
            query,
            body,
            &lists,
            keys,
            today,
            Duration::from_secs(2),
        ) {
            Ok(done) => {
                tracing::info!(
                    "{}",
                    listwarden_expand::unsubscribe::audit_line(&done, client)
                );
                (200, "unsubscribed\n".into())
            }
            Err(e) => {
                crate::unsubscribe::log_refusal(client, None, &e);
                let (status, text) = e.public_reply();
                (status, text.to_string())
            }
        }
    })
}

/// Binds the milter socket. A stale unix socket file is removed, but only
/// if it is a socket: a typo must not delete someone's file.
pub async fn bind(socket: &Socket, mode: u32) -> Result<MilterListener, DaemonError> {
    let listen = |source| DaemonError::Listen {
        socket: socket.to_string(),
        source,
    };
    match socket {
        Socket::Inet { host, port } => {
            let l = TcpListener::bind((host.as_str(), *port))
                .await
                .map_err(listen)?;
            Ok(MilterListener::tcp(l))
        }
        Socket::Unix(path) => {
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if !meta.file_type().is_socket() {
                    return Err(DaemonError::NotASocket(path.clone()));
                }
                // Only a stale socket is removed: one that answers belongs
                // to a running process (or to our other socket).
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(DaemonError::SocketInUse(path.clone()));
                }
                std::fs::remove_file(path).map_err(|source| DaemonError::RemoveStale {
                    path: path.clone(),
                    source,
                })?;
            }
            let l = UnixListener::bind(path).map_err(listen)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(
                |source| DaemonError::SocketMode {
                    path: path.clone(),
                    mode,
                    source,
                },
            )?;
            Ok(MilterListener::unix(l))
        }
    }
}

/// Reloads the config file into the shared state.
pub struct Reloader {
    pub path: PathBuf,
    pub shared: Arc<Shared>,
}

impl Reloader {
    /// Loads the file; on success swaps it in, on failure keeps the old
    /// config. Either way the outcome is logged and counted.
    pub fn reload_now(&self) -> Result<(), ConfigError> {
        let recorder = self.shared.recorder();
        let current = self.shared.config.load_full();
        match reload::reload(&self.path, &current) {
            Ok(r) => {
                for warning in r.kept.iter().chain(&r.config.warnings) {
                    tracing::warn!("config reload: {warning}");
                }
                self.shared.config.store(Arc::new(r.config));
                recorder.record(Event::ConfigLoad { ok: true });
                tracing::info!(path = %self.path.display(), "config reloaded");
                Ok(())
            }
            Err(e) => {
                recorder.record(Event::ConfigLoad { ok: false });
                for line in e.to_string().lines() {
                    tracing::error!("config reload refused, keeping the running config: {line}");
                }
                Err(e)
            }
        }
    }
}

/// Every few seconds: lowers expired shields and bounce incidents (even
/// with no traffic) and copies the rate-limit store's state into the metrics.
async fn housekeeping(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut errors = 0;
    loop {
        tick.tick().await;
        let (_, changes) = shared.shields.current();
        let recorder = shared.recorder();
        recorder.record_all(changes.into_iter().map(Event::Shield));
        recorder.refresh(&mut errors);
        let (_, changes) = shared.incidents.current();
        recorder.record_all(changes.into_iter().map(Event::Incident));
        let config = shared.config.load();
        if let Some(t) = config.throttle.as_ref() {
            shared.throttle.tick(&shared, t, crate::unix_now());
        }
    }
}

async fn watch_signals(reloader: Arc<Reloader>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot listen for SIGHUP; reload by restart only");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading config");
        let r = reloader.clone();
        let _ = tokio::task::spawn_blocking(move || r.reload_now()).await;
    }
}

/// A file's identity for change detection.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reloads when the file changes, once it has been stable for one interval
/// (an editor's half-written save is not loaded).
async fn watch_file(reloader: Arc<Reloader>) {
    let mut loaded = stamp(&reloader.path);
    let mut seen = loaded;
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = stamp(&reloader.path);
        if now != seen {
            seen = now;
            continue;
        }
        if now != loaded && now.is_some() {
            loaded = now;
            tracing::info!("config file changed: reloading");
            let r = reloader.clone();
            let _ = tokio::task::spawn_blocking(move || r.reload_now()).await;
        }
    }
}

/// Completes once `stop` says so.
async fn until(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs one socket's milter; when it ends, so does the other.
async fn then_stop(
    run: impl std::future::Future<Output = std::io::Result<()>>,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
) -> std::io::Result<()> {
    let result = run.await;
    let _ = stop.send(true);
    result
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// review2 L3: binding never deletes a socket that something serves.
    #[tokio::test]
    async fn a_live_socket_is_not_replaced_a_stale_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("milter.sock");
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let socket = Socket::Unix(path.clone());
        let err = bind(&socket, 0o660).await.err().expect("refused");
        assert!(matches!(err, DaemonError::SocketInUse(_)), "{err}");
        // The first listener still owns the file.
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        drop(live);
        assert!(bind(&socket, 0o660).await.is_ok());
    }
}
