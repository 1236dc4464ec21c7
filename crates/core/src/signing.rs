//! The `signing:` section: the BATV/VERP key ring both programs load.

use crate::address::{Key, KeyError, KeyRing};
use crate::diag::{Checker, Seg, read_bounded};
use serde::Deserialize;
use std::path::Path;

/// How long a signature stays valid unless `signing.validity_days` says.
pub const DEFAULT_VALIDITY_DAYS: u32 = 7;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigning {
    pub keys: Vec<RawKey>,
    pub sign_with: u8,
    #[serde(default)]
    pub validity_days: Option<u32>,
    /// Allows the public example key (a demo or test setup only).
    #[serde(default)]
    pub demo: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub id: u8,
    pub file: String,
}

/// Loads the key ring, reporting each bad key at its place.
pub fn key_ring(check: &mut Checker<'_>, raw: Option<&RawSigning>) -> Option<KeyRing> {
    let raw = raw?;
    let mut keys = Vec::new();
    let mut ok = true;
    for (i, k) in raw.keys.iter().enumerate() {
        let at = |key| {
            [
                Seg::Key("signing"),
                Seg::Key("keys"),
                Seg::Index(i),
                Seg::Key(key),
            ]
        };
        let path = check.file(&k.file);
        match Key::from_file(k.id, &path) {
            Ok(key) => {
                if secret_is_public_example(&path) {
                    let message = format!(
                        "{} is the public example key shipped with listwarden: anyone can forge \
                         signatures with it. Make your own: head -c 32 /dev/urandom | base64 > /etc/listwarden/keys/1.key",
                        path.display()
                    );
                    if raw.demo {
                        check.warn(&at("file"), message);
                    } else {
                        check.error(
                            &at("file"),
                            format!("{message} (for a demo only, set signing.demo: true)"),
                        );
                    }
                } else if let Some(problem) = key_file_exposure(&path) {
                    check.warn(&at("file"), problem);
                }
                keys.push(key);
            }
            Err(e) => {
                ok = false;
                let key_path = match e {
                    KeyError::IdOutOfRange { .. } => at("id"),
                    _ => at("file"),
                };
                check.error(&key_path, e.to_string());
            }
        }
    }
    if !ok {
        return None;
    }
    let validity = raw.validity_days.unwrap_or(DEFAULT_VALIDITY_DAYS);
    match KeyRing::new(keys, raw.sign_with, validity) {
        Ok(ring) => Some(ring),
        Err(e) => {
            let key = match e {
                KeyError::BadValidity { .. } => "validity_days",
                KeyError::DuplicateId { .. } => "keys",
                _ => "sign_with",
            };
            check.error(&[Seg::Key("signing"), Seg::Key(key)], e.to_string());
            None
        }
    }
}

/// Why a key file is readable by more than this service, if it is: by
/// everyone, or by a group that is not the one this process runs with
/// (packages give the key to root and the service's group, mode 0640).
fn key_file_exposure(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.mode() & 0o777;
    // SAFETY: getegid has no preconditions and cannot fail.
    let our_group = unsafe { libc::getegid() };
    let fix = "chmod 600 (or 640 with the service's group)";
    if mode & 0o007 != 0 {
        Some(format!(
            "{} is readable by others (mode {mode:04o}): anyone who can read it can forge signatures; {fix}",
            path.display()
        ))
    } else if mode & 0o070 != 0 && meta.gid() != our_group {
        Some(format!(
            "{} is readable by its group (gid {}, mode {mode:04o}), which is not this service's; {fix}",
            path.display(),
            meta.gid()
        ))
    } else {
        None
    }
}

/// The example key in `config/` is public; running with it is an error
/// unless the config says it is a demo (`signing.demo: true`, as the
/// example config does).
fn secret_is_public_example(path: &Path) -> bool {
    const EXAMPLE: &[u8] = include_bytes!("../../../config/keys/EXAMPLE-PUBLIC-KEY.key");
    let trim = |b: &[u8]| b.trim_ascii().to_vec();
    read_bounded(path, 4096)
        .map(|b| trim(&b) == trim(EXAMPLE))
        .unwrap_or(false)
}
