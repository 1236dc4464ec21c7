//! The `listwarden-expand` command: the thin list expander.

use clap::{Parser, Subcommand};
use listwarden_expand::command::{Pipe, bounces, edit_members, run_pipe, show};
use listwarden_expand::held::{HeldAction, held};
use std::path::PathBuf;
use std::process::ExitCode;

const DEFAULT_CONFIG: &str = "/etc/listwarden/listwarden.yaml";

/// listwarden-expand delivers small lists without a list manager: Postfix
/// hands it each post through a pipe(8) transport, and it sends one copy
/// per member with the member's own signed VERP sender, so every bounce
/// names its member and only real bounces come back. It reads the
/// `expander:` block and the lists' `expand:` blocks of listwarden.yaml;
/// check the whole file with `listwarden check-config`.
///
/// See listwarden.yaml(5) and packaging/postfix/master.cf for the wiring.
#[derive(Parser)]
#[command(
    name = "listwarden-expand",
    version,
    about,
    long_about,
    verbatim_doc_comment
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Deliver list mail (Postfix pipe transport); see packaging/postfix/master.cf.
    ///
    /// Reads one message on standard input. Without --bounces or
    /// --unsubscribe it is a post to the list: the posting policy is
    /// applied and one copy per member is injected into Postfix with its
    /// own signed VERP sender. --bounces takes a bounce the milter has
    /// checked and tagged, and scores the member; --unsubscribe takes mail
    /// to LIST-unsubscribe@ or LIST-request@. Exit codes follow sysexits:
    /// 75 (retry later) on any transient trouble, so nothing is lost.
    Pipe {
        /// The YAML config file.
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The list's name (its local part), e.g. `members`.
        #[arg(long, value_name = "NAME")]
        list: String,
        /// The message is a bounce to the list's bounce address.
        #[arg(long, conflicts_with = "unsubscribe")]
        bounces: bool,
        /// The message is an unsubscribe request.
        #[arg(long)]
        unsubscribe: bool,
        /// The envelope sender (pipe's <${sender}>); for posts.
        #[arg(long, value_name = "ADDR", default_value = "<>")]
        sender: String,
        /// The envelope recipient (pipe's <${recipient}>); for bounces and unsubscribes.
        #[arg(long, value_name = "ADDR", default_value = "<>")]
        recipient: String,
    },
    /// Show, add or remove the members of a list.
    ///
    /// Run --add and --remove as the user that owns the list's files (the
    /// expander's user, e.g. `sudo -u listwarden listwarden-expand members ...`).
    /// As root they refuse any members file, state file or directory that
    /// root does not own. --add refuses an address that would not read back
    /// from the file (one starting with `#`, or with ` #` in it). A line of
    /// the file that is not an address is skipped with a warning.
    Members {
        /// The YAML config file.
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The list's name.
        list: String,
        /// Addresses to add.
        #[arg(long, value_name = "ADDR", num_args = 1..)]
        add: Vec<String>,
        /// Addresses to remove (their bounce records go too).
        #[arg(long, value_name = "ADDR", num_args = 1.., conflicts_with = "add")]
        remove: Vec<String>,
    },
    /// Show the bounce scores of a list, or reset them.
    ///
    /// Run --reset as the owner of the list's state directory; as root it
    /// refuses files and directories root does not own.
    Bounces {
        /// The YAML config file.
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The list's name.
        list: String,
        /// Reset the scores (of --member only, if given) and re-enable.
        #[arg(long)]
        reset: bool,
        /// With --reset: only this member.
        #[arg(long, value_name = "ADDR", requires = "reset")]
        member: Option<String>,
    },
    /// List the posts held for the owner, or release or delete one.
    ///
    /// Without --release or --delete: one line per held post, oldest
    /// first: ID, age, reason, envelope sender, subject. --release sends the
    /// post to the members as if its sender could post, then deletes it;
    /// --delete deletes it unsent. Run them as the owner of the list's
    /// state directory. Held posts older than 30 days are deleted when the
    /// next post is held.
    Held {
        /// The YAML config file.
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The list's name.
        list: String,
        /// Send this held post to the list.
        #[arg(long, value_name = "ID", conflicts_with = "delete")]
        release: Option<String>,
        /// Delete this held post.
        #[arg(long, value_name = "ID")]
        delete: Option<String>,
    },
    /// Write the man pages (roff): listwarden-expand.8 and one per command.
    #[command(hide = true)]
    Man {
        /// Directory to write them into.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    listwarden_expand::syslog::init();
    match cli.command {
        Command::Pipe {
            config,
            list,
            bounces,
            unsubscribe,
            sender,
            recipient,
        } => {
            let (pipe, address) = match (bounces, unsubscribe) {
                (true, _) => (Pipe::Bounces, recipient),
                (_, true) => (Pipe::Unsubscribe, recipient),
                _ => (Pipe::Post, sender),
            };
            ExitCode::from(run_pipe(&config, &list, pipe, &address))
        }
        Command::Members {
            config,
            list,
            add,
            remove,
        } => {
            let result = if !add.is_empty() {
                edit_members(&config, &list, true, &add).map(|n| format!("{n} added\n"))
            } else if !remove.is_empty() {
                edit_members(&config, &list, false, &remove).map(|n| format!("{n} removed\n"))
            } else {
                show(&config, &list)
            };
            print_or_fail(result)
        }
        Command::Bounces {
            config,
            list,
            reset,
            member,
        } => print_or_fail(bounces(&config, &list, reset.then_some(member))),
        Command::Held {
            config,
            list,
            release,
            delete,
        } => {
            let action = match (release, delete) {
                (Some(id), _) => HeldAction::Release(id),
                (_, Some(id)) => HeldAction::Delete(id),
                _ => HeldAction::Show,
            };
            print_or_fail(held(&config, &list, action))
        }
        Command::Man { dir } => match write_man_pages(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "listwarden-expand: cannot write the man pages into {}: {e}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        },
    }
}

fn print_or_fail(result: Result<String, impl std::fmt::Display>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("listwarden-expand: {e}");
            ExitCode::FAILURE
        }
    }
}

/// listwarden-expand(8) and one page per command.
fn write_man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    listwarden_core::man::write_pages(Cli::command(), "listwarden-expand", dir)
}
