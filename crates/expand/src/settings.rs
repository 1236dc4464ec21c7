//! The expander's part of `listwarden.yaml`: the top-level `expander:`
//! block and each list's `expand:` block. The milter's `check-config`
//! checks these blocks with the functions here; a pipe run reads only these
//! blocks, the list addresses and the signing keys ([`Settings::load`]).

use crate::address::{Address, KeyRing};
use crate::inject::Injector;
use crate::state::Scoring;
use crate::{ComplaintAction, ListFiles, PostingPolicy, RefuseAction, safe_list_name, unsubscribe};
use listwarden_core::diag::{self, Checker, ConfigError, Seg};
use listwarden_core::signing::{self, RawSigning};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Largest post accepted unless `expander.max_message_bytes` says.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 10_240_000;

/// The `expander:` block as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpander {
    pub state_dir: String,
    #[serde(default)]
    pub inject: Option<String>,
    #[serde(default)]
    pub helo: Option<String>,
    #[serde(default)]
    pub max_message_bytes: Option<usize>,
    /// `IP:PORT` of the one-click unsubscribe listener; absent or `off`:
    /// no one-click.
    #[serde(default)]
    pub unsubscribe_listen: Option<String>,
}

/// A list's `expand:` block as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListExpand {
    pub members_file: String,
    #[serde(default)]
    pub posting: Option<String>,
    #[serde(default)]
    pub announcers: Vec<String>,
    #[serde(default)]
    pub refused_post: Option<String>,
    #[serde(default)]
    pub unsubscribe_url: Option<String>,
    #[serde(default)]
    pub bounce_threshold: Option<f64>,
    #[serde(default)]
    pub bounce_stale_days: Option<u64>,
    #[serde(default)]
    pub on_complaint: Option<String>,
}

/// The expander's global settings.
#[derive(Debug, Clone)]
pub struct Expander {
    /// Bounce scores, progress logs and held posts: `STATE_DIR/LIST/`.
    pub state_dir: PathBuf,
    /// Where the per-member envelopes go.
    pub injector: Injector,
    /// Larger posts bounce back to the poster.
    pub max_message_bytes: usize,
    /// The one-click unsubscribe listener (its own, never the metrics
    /// one); `None`: one-click is off.
    pub unsubscribe_listen: Option<SocketAddr>,
}

/// One expander list's settings.
#[derive(Debug, Clone)]
pub struct ListExpand {
    pub members_file: PathBuf,
    pub policy: PostingPolicy,
    pub refuse: RefuseAction,
    pub unsubscribe_url: Option<String>,
    pub scoring: Scoring,
    pub on_complaint: ComplaintAction,
}

/// Checks the `expander:` block.
pub fn expander(check: &mut Checker<'_>, raw: &RawExpander) -> Option<Expander> {
    let at = |k| [Seg::Key("expander"), Seg::Key(k)];
    let mut injector = match Injector::parse(raw.inject.as_deref().unwrap_or("sendmail")) {
        Ok(i) => i,
        Err(m) => {
            check.error(&at("inject"), m);
            return None;
        }
    };
    if let (Injector::Smtp { options, .. }, Some(helo)) = (&mut injector, &raw.helo) {
        options.helo = helo.clone();
    }
    let max_message_bytes = match raw.max_message_bytes {
        None => DEFAULT_MAX_MESSAGE_BYTES,
        Some(0) => {
            check.error(&at("max_message_bytes"), "must be at least 1");
            DEFAULT_MAX_MESSAGE_BYTES
        }
        Some(n) => n,
    };
    let unsubscribe_listen = check.listen_address(
        raw.unsubscribe_listen.as_deref(),
        &at("unsubscribe_listen"),
        "127.0.0.1:8081",
    );
    Some(Expander {
        state_dir: check.file(&raw.state_dir),
        injector,
        max_message_bytes,
        unsubscribe_listen,
    })
}

/// Checks list `i`'s `expand:` block.
pub fn list_expand(check: &mut Checker<'_>, raw: &RawListExpand, i: usize) -> Option<ListExpand> {
    let at = |k| {
        [
            Seg::Key("lists"),
            Seg::Index(i),
            Seg::Key("expand"),
            Seg::Key(k),
        ]
    };
    let mut announcers = Vec::new();
    for (j, a) in raw.announcers.iter().enumerate() {
        match Address::parse(a) {
            Ok(a) => announcers.push(a),
            Err(e) => check.error(
                &[
                    Seg::Key("lists"),
                    Seg::Index(i),
                    Seg::Key("expand"),
                    Seg::Key("announcers"),
                    Seg::Index(j),
                ],
                format!("`{a}` is not a mail address: {e}"),
            ),
        }
    }
    let policy = match raw.posting.as_deref() {
        None | Some("members") => PostingPolicy::Members,
        Some("open") => PostingPolicy::Open,
        Some("announce") => {
            if announcers.is_empty() {
                check.error(&at("posting"), "posting: announce needs expand.announcers");
            }
            PostingPolicy::Announce(announcers)
        }
        Some(other) => {
            check.error(
                &at("posting"),
                format!("`{other}` is not one of: members, open, announce"),
            );
            PostingPolicy::Members
        }
    };
    let refuse = check.choice(
        raw.refused_post.as_deref(),
        RefuseAction::Hold,
        &at("refused_post"),
    );
    if let Some(url) = &raw.unsubscribe_url
        && let Err(m) = unsubscribe::check_base_url(url)
    {
        check.error(&at("unsubscribe_url"), m);
    }
    let mut scoring = Scoring::default();
    if let Some(t) = raw.bounce_threshold {
        if t.is_finite() && t > 0.0 {
            scoring.threshold = t;
        } else {
            check.error(&at("bounce_threshold"), "must be a number above 0");
        }
    }
    if let Some(d) = raw.bounce_stale_days {
        scoring.stale_after_days = d;
    }
    let on_complaint = check.choice(
        raw.on_complaint.as_deref(),
        ComplaintAction::Unsubscribe,
        &at("on_complaint"),
    );
    Some(ListExpand {
        members_file: check.file(&raw.members_file),
        policy,
        refuse,
        unsubscribe_url: raw.unsubscribe_url.clone(),
        scoring,
        on_complaint,
    })
}

/// A list's files; `None` for a name unsafe as a directory name (the
/// checks refuse such names; never build a path from one).
pub fn list_files(
    expander: &Expander,
    address: &Address,
    settings: &ListExpand,
) -> Option<ListFiles> {
    let name = &address.local;
    if !safe_list_name(name) {
        return None;
    }
    Some(ListFiles {
        name: name.clone(),
        address: address.clone(),
        members_file: settings.members_file.clone(),
        state_dir: expander.state_dir.join(name),
    })
}

/// The part of the file a pipe run reads; every other key is ignored here
/// (the milter's `check-config` checks the whole file).
#[derive(Debug, Deserialize)]
struct View {
    #[serde(default)]
    signing: Option<RawSigning>,
    #[serde(default)]
    lists: Vec<ViewList>,
    #[serde(default)]
    expander: Option<RawExpander>,
}

#[derive(Debug, Deserialize)]
struct ViewList {
    address: String,
    #[serde(default)]
    expand: Option<RawListExpand>,
}

/// Everything the expander's commands need, read from the config file.
#[derive(Debug)]
pub struct Settings {
    pub expander: Expander,
    pub lists: Vec<(ListFiles, ListExpand)>,
    pub keys: KeyRing,
    /// Config warnings, one rendered line each.
    pub warnings: Vec<String>,
}

impl Settings {
    /// Reads the expander's part of the config file at `path`.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let source = diag::read_config(path)?;
        Settings::parse(&source, path)
    }

    /// As [`Settings::load`], from YAML source; `origin` names the file.
    pub fn parse(source: &str, origin: &Path) -> Result<Settings, ConfigError> {
        let view: View = diag::parse_yaml(source, origin)?;
        let mut check = Checker::new(source, origin);
        let keys = signing::key_ring(&mut check, view.signing.as_ref());
        let expander = match &view.expander {
            Some(raw) => expander(&mut check, raw),
            None => {
                check.error(&[Seg::Key("expander")], "no expander: block in the config");
                None
            }
        };
        if keys.is_none() && view.signing.is_none() {
            check.error(
                &[Seg::Key("signing")],
                "the expander needs signing keys (signing.keys)",
            );
        }
        let mut lists = Vec::new();
        for (i, raw) in view.lists.iter().enumerate() {
            let Some(raw_expand) = &raw.expand else {
                continue;
            };
            let at = [Seg::Key("lists"), Seg::Index(i), Seg::Key("address")];
            let address = match Address::parse(&raw.address) {
                Ok(a) => a,
                Err(e) => {
                    check.error(&at, format!("`{}` is not a mail address: {e}", raw.address));
                    continue;
                }
            };
            if !safe_list_name(&address.local) {
                check.error(&at, UNSAFE_NAME);
                continue;
            }
            let settings = list_expand(&mut check, raw_expand, i);
            if let (Some(expander), Some(settings)) = (&expander, settings)
                && let Some(files) = list_files(expander, &address, &settings)
            {
                lists.push((files, settings));
            }
        }
        let warnings = check.finish()?;
        match (expander, keys) {
            (Some(expander), Some(keys)) => Ok(Settings {
                expander,
                lists,
                keys,
                warnings,
            }),
            // Unreachable: a missing block or key ring is an error above.
            _ => Err(ConfigError::single(
                origin,
                "incomplete expander settings".into(),
            )),
        }
    }

    /// A list's files and settings, by name (case-insensitive).
    pub fn list(&self, name: &str) -> Option<(&ListFiles, &ListExpand)> {
        self.lists
            .iter()
            .find(|(f, _)| f.name.eq_ignore_ascii_case(name))
            .map(|(f, s)| (f, s))
    }
}

/// The error for an expand list whose name cannot be a directory name.
pub const UNSAFE_NAME: &str = "an expand: list's local part names its state directory: letters, digits, '.', '_' and '-' only, no leading '.' and no '..'";
