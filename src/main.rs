//! The `listwarden` command: a thin CLI over the library.

use clap::{Parser, Subcommand};
use listwarden::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// sysexits(3) EX_CONFIG: the configuration is invalid.
const EX_CONFIG: u8 = 78;

const DEFAULT_CONFIG: &str = "/etc/listwarden/listwarden.yaml";

/// listwarden protects a mailing-list server behind Postfix: it refuses
/// mail forged in a list's name, and (as its config grows) backscatter and
/// bounce floods. Postfix talks to it as a milter:
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
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
                    tracing::error!("{e:#}");
                    // A config error is a config error, also at start.
                    if e.downcast_ref::<listwarden::config::ConfigError>()
                        .is_some()
                    {
                        ExitCode::from(EX_CONFIG)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            println!(
                "{}: OK ({} list{}, milter on {})",
                file.display(),
                config.lists.len(),
                if config.lists.len() == 1 { "" } else { "s" },
                config.milter.listen
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            let n = e.diagnostics.len();
            eprintln!(
                "{}: {n} error{}",
                file.display(),
                if n == 1 { "" } else { "s" }
            );
            ExitCode::from(EX_CONFIG)
        }
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
