//! The expander's commands as Postfix's pipe(8) runs them, and the
//! operator's. Each returns a sysexits code: Postfix retries only 75
//! (EX_TEMPFAIL) and 71, and bounces on every other non-zero code, so any
//! trouble that is not a finding about the message must be 75, a panic
//! included.

use super::{
    ExpandError, ListFiles, RunContext, bounce, fsutil, members, post, reply_line, state, sysexits,
    unsubscribe,
};
use crate::address::{Address, AddressError, KeyRing, parse_path};
use crate::settings::{ListExpand, Settings};
use listwarden_core::diag::ConfigError;
use std::path::{Path, PathBuf};

/// Why a command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no expander list `{list}` in {}", config.display())]
    NoSuchList { list: String, config: PathBuf },
    #[error("`{text}` is not an address: {source}")]
    NotAnAddress {
        text: String,
        #[source]
        source: AddressError,
    },
    #[error(
        "`{0}` cannot be written to a members file so that it reads back (a leading `#` or ` #` starts a comment)"
    )]
    WouldNotReadBack(String),
    #[error(transparent)]
    Expand(#[from] ExpandError),
}

impl From<fsutil::FsError> for CommandError {
    fn from(e: fsutil::FsError) -> Self {
        CommandError::Expand(e.into())
    }
}

impl From<members::MembersError> for CommandError {
    fn from(e: members::MembersError) -> Self {
        CommandError::Expand(e.into())
    }
}

impl From<state::StateError> for CommandError {
    fn from(e: state::StateError) -> Self {
        CommandError::Expand(e.into())
    }
}

/// An address given on the command line.
fn cli_address(text: &str) -> Result<Address, CommandError> {
    Address::parse(text).map_err(|source| CommandError::NotAnAddress {
        text: text.to_string(),
        source,
    })
}

/// What a pipe command was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    /// A post to the list: expand it to the members.
    Post,
    /// A bounce to the list's bounce address (tagged by the milter).
    Bounces,
    /// Mail to `LIST-unsubscribe@` or `LIST-request@`.
    Unsubscribe,
}

/// Runs a pipe command; never panics through: a panic is a 75.
pub fn run_pipe(config_path: &Path, list: &str, pipe: Pipe, address: &str) -> u8 {
    std::panic::catch_unwind(|| pipe_inner(config_path, list, pipe, address)).unwrap_or_else(|_| {
        tracing::error!("panic in the expander; Postfix will retry");
        sysexits::EX_TEMPFAIL
    })
}

fn pipe_inner(config_path: &Path, list: &str, pipe: Pipe, address: &str) -> u8 {
    let (config, files, settings, keys) = match load(config_path, list) {
        Ok(found) => found,
        Err(e) => return tempfail(&e.to_string()),
    };
    let expander = &config.expander;
    let raw = match post::read_message(std::io::stdin().lock(), expander.max_message_bytes) {
        Ok(raw) => raw,
        Err(e) => {
            let e = ExpandError::from(e);
            eprintln!("{}", reply_line(&e.to_string()));
            return e.exit_code();
        }
    };
    // `<>` is the null sender; anything unreadable is treated alike.
    let address = parse_path(address).ok().flatten();
    let ctx = RunContext::now();
    match pipe {
        Pipe::Post => {
            let spec = post::load_spec(
                &files,
                settings.policy.clone(),
                settings.unsubscribe_url.clone(),
                settings.refuse,
            );
            let result = spec.and_then(|(spec, warnings)| {
                for w in warnings {
                    tracing::warn!("list={list} warning: {w}");
                }
                post::run(
                    &raw,
                    &spec,
                    &files,
                    address.as_ref(),
                    &keys,
                    &ctx,
                    &expander.injector,
                )
            });
            match result {
                Ok(outcome) => {
                    tracing::info!("list={list} post: {outcome:?}");
                    let (code, line) = outcome.exit();
                    if let Some(line) = line {
                        eprintln!("{}", reply_line(line));
                    }
                    code
                }
                Err(e) => failed(list, &e),
            }
        }
        Pipe::Bounces => {
            let settings = bounce::BounceSettings {
                scoring: settings.scoring,
                on_complaint: settings.on_complaint,
            };
            match bounce::run(&raw, &files, address.as_ref(), &keys, &settings, &ctx) {
                Ok(outcome) => {
                    tracing::info!(
                        "list={list} bounce: applied {:?}, ignored {:?}",
                        outcome.applied,
                        outcome.ignored
                    );
                    sysexits::EX_OK
                }
                Err(e) => failed(list, &e),
            }
        }
        Pipe::Unsubscribe => {
            match unsubscribe::run_mail(&raw, address.as_ref(), &files, &keys, &ctx) {
                Ok(outcome) => {
                    tracing::info!("list={list} unsubscribe: {outcome:?}");
                    sysexits::EX_OK
                }
                Err(e) => tempfail(&format!("list={list} unsubscribe failed: {e}")),
            }
        }
    }
}

/// The expander's settings, one list's files and settings, and the keys.
fn load(
    config_path: &Path,
    list: &str,
) -> Result<(Settings, ListFiles, ListExpand, KeyRing), CommandError> {
    let config = Settings::load(config_path)?;
    let (files, settings) = config.list(list).ok_or_else(|| CommandError::NoSuchList {
        list: list.to_string(),
        config: config_path.to_path_buf(),
    })?;
    let (files, settings) = (files.clone(), settings.clone());
    let keys = config.keys.clone();
    Ok((config, files, settings, keys))
}

fn tempfail(message: &str) -> u8 {
    tracing::warn!("{message}");
    eprintln!("{}", reply_line(message));
    sysexits::EX_TEMPFAIL
}

fn failed(list: &str, e: &ExpandError) -> u8 {
    tracing::warn!("list={list} failed: {e}");
    eprintln!("{}", reply_line(&e.to_string()));
    e.exit_code()
}

/// The operator's view of a list: members, disabled members and scores.
pub fn show(config_path: &Path, list: &str) -> Result<String, CommandError> {
    let (_, files, _, _) = load(config_path, list)?;
    let file = members::load(&files.members_file)?;
    let scores = state::load(&files.state_file())?;
    let mut out = String::new();
    for m in file.members() {
        let mark = if scores.is_disabled(&m.key()) {
            "  (disabled)"
        } else {
            ""
        };
        out.push_str(&format!("{m}{mark}\n"));
    }
    Ok(out)
}

/// Root may edit only root-owned list files (see [`fsutil::check_editor`]):
/// run the editing commands as the files' owner.
fn refuse_root(path: &Path) -> Result<(), CommandError> {
    Ok(fsutil::check_editor(path, fsutil::euid())?)
}

/// Adds or removes members; returns how many changed.
pub fn edit_members(
    config_path: &Path,
    list: &str,
    add: bool,
    who: &[String],
) -> Result<usize, CommandError> {
    let (_, files, _, _) = load(config_path, list)?;
    let mut parsed = Vec::new();
    for w in who {
        let a = cli_address(w)?;
        if add && !members::reads_back(&a) {
            return Err(CommandError::WouldNotReadBack(w.clone()));
        }
        parsed.push(a);
    }
    refuse_root(&files.members_file)?;
    refuse_root(&files.state_file())?;
    let ctx = RunContext::now();
    let changed: Vec<&Address> = members::update(&files.members_file, ctx.lock_timeout, |f| {
        parsed
            .iter()
            .filter(|a| if add { f.add(a) } else { f.remove(a) })
            .collect()
    })?;
    // Either way a subscription starts or ends: tokens minted before stop
    // working (a removal also clears the bounce record).
    if !changed.is_empty() {
        state::update(&files.state_file(), ctx.lock_timeout, |s| {
            for a in &changed {
                if add {
                    s.next_subscription(&a.key());
                } else {
                    s.forget(&a.key());
                }
            }
        })?;
    }
    Ok(changed.len())
}

/// Bounce scores, or a reset of one member's (or everyone's).
pub fn bounces(
    config_path: &Path,
    list: &str,
    reset: Option<Option<String>>,
) -> Result<String, CommandError> {
    let (_, files, _, _) = load(config_path, list)?;
    let ctx = RunContext::now();
    match reset {
        None => {
            let s = state::load(&files.state_file())?;
            Ok(state::scores_report(&s))
        }
        Some(member) => {
            refuse_root(&files.state_file())?;
            let member = member.as_deref().map(cli_address).transpose()?;
            let n = state::update(&files.state_file(), ctx.lock_timeout, |s| {
                s.reset(member.as_ref().map(Address::key).as_deref())
            })?;
            Ok(format!("{n:?} reset\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A config with one expander list `members` in a temp dir.
    fn fixture(members: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("k.key");
        std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").expect("key");
        std::fs::write(dir.path().join("members.txt"), members).expect("members");
        let config = dir.path().join("listwarden.yaml");
        std::fs::write(
            &config,
            "milter: {listen: inet:127.0.0.1:1}\n\
             signing: {keys: [{id: 1, file: k.key}], sign_with: 1}\n\
             expander: {state_dir: state}\n\
             lists:\n  - address: members@lists.example.org\n    expand: {members_file: members.txt}\n",
        )
        .expect("config");
        (dir, config)
    }

    /// 18: `--add` refuses an address the members reader would not read back.
    #[test]
    fn add_refuses_what_cannot_be_read_back() {
        let (dir, config) = fixture("alice@example.com\n");
        let err = edit_members(&config, "members", true, &["#bob@example.net".into()])
            .expect_err("a comment is no member");
        let err = err.to_string();
        assert!(err.contains("#bob@example.net"), "{err}");
        let text = std::fs::read_to_string(dir.path().join("members.txt")).expect("read");
        assert_eq!(text, "alice@example.com\n");
        let n = edit_members(&config, "members", true, &["bob@example.net".into()]).expect("add");
        assert_eq!(n, 1);
    }

    /// 10: run as root, the editing commands refuse files root does not own.
    #[test]
    fn root_does_not_edit_someone_elses_list() {
        if super::super::fsutil::euid() != 0 {
            return; // only root can be refused
        }
        let (dir, config) = fixture("alice@example.com\n");
        let members = dir.path().join("members.txt");
        std::os::unix::fs::chown(&members, Some(4242), Some(4242)).expect("chown");
        let err = edit_members(&config, "members", true, &["bob@example.net".into()])
            .expect_err("not root's file")
            .to_string();
        assert!(err.contains("uid 4242"), "{err}");
        let err = edit_members(&config, "members", false, &["alice@example.com".into()])
            .expect_err("not root's file")
            .to_string();
        assert!(err.contains("uid 4242"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&members).expect("read"),
            "alice@example.com\n"
        );
        std::fs::create_dir_all(dir.path().join("state/members")).expect("mkdir");
        std::os::unix::fs::chown(dir.path().join("state/members"), Some(4242), None)
            .expect("chown");
        let err = bounces(&config, "members", Some(None))
            .expect_err("not root's dir")
            .to_string();
        assert!(err.contains("uid 4242"), "{err}");
    }
}
