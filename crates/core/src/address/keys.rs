//! The signing key ring for prvs and signed VERP.
//!
//! One key signs; every listed key verifies. Rotation without a bounce gap: add the new
//! key, switch `signing` to it, and remove the old one only after the validity window
//! (plus queue lifetime) has passed. A tag naming a key that is no longer listed
//! verifies as `UnknownKey`.
//!
//! Key files hold the secret itself: the file's bytes with surrounding ASCII whitespace
//! trimmed, used as raw HMAC key material (so `head -c 32 /dev/urandom | base64` and a
//! binary file both work). At least [`MIN_SECRET_LEN`] bytes. Errors name the file,
//! never its content, and `Debug` never prints a secret.

use std::fmt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

/// Shortest accepted secret, in bytes after trimming.
pub const MIN_SECRET_LEN: usize = 16;
/// Largest key file read; anything bigger is a configuration mistake.
pub const MAX_KEY_FILE_LEN: usize = 4096;
/// Key ids are one decimal digit, as in the prvs `K` field.
pub const MAX_KEY_ID: u8 = 9;
/// Longest validity window. Must stay below half of the prvs day counter (1000) so
/// that expired and future-dated tags remain distinguishable.
pub const MAX_VALIDITY_DAYS: u32 = 365;

const KEY_SLOTS: usize = MAX_KEY_ID as usize + 1;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} is larger than {MAX_KEY_FILE_LEN} bytes")]
    FileTooLarge { path: PathBuf },
    #[error("key file {path} holds fewer than {MIN_SECRET_LEN} bytes after trimming")]
    FileTooShort { path: PathBuf },
    #[error("key {id}: secret is shorter than {MIN_SECRET_LEN} bytes")]
    SecretTooShort { id: u8 },
    #[error("key id {id} is out of range 0-{MAX_KEY_ID}")]
    IdOutOfRange { id: u8 },
    #[error("key id {id} is listed twice")]
    DuplicateId { id: u8 },
    #[error("signing key id {id} is not among the listed keys")]
    SigningKeyMissing { id: u8 },
    #[error("validity of {days} days is outside 1-{MAX_VALIDITY_DAYS}")]
    BadValidity { days: u32 },
}

/// One secret, held only as ready-keyed HMAC states (cloning one is cheaper than
/// re-keying per message).
#[derive(Clone)]
pub struct Key {
    id: u8,
    prvs: Hmac<Sha1>,
    verp: Hmac<Sha256>,
}

impl Key {
    pub fn new(id: u8, secret: &[u8]) -> Result<Key, KeyError> {
        if id > MAX_KEY_ID {
            return Err(KeyError::IdOutOfRange { id });
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::SecretTooShort { id });
        }
        // HMAC accepts keys of any length, so these cannot fail; map rather than unwrap.
        let prvs =
            Hmac::<Sha1>::new_from_slice(secret).map_err(|_| KeyError::SecretTooShort { id })?;
        let verp =
            Hmac::<Sha256>::new_from_slice(secret).map_err(|_| KeyError::SecretTooShort { id })?;
        Ok(Key { id, prvs, verp })
    }

    /// Reads a key file (see the module doc for its format).
    pub fn from_file(id: u8, path: &Path) -> Result<Key, KeyError> {
        let content = read_key_file(path)?;
        let secret = secret_from_file(&content).ok_or_else(|| KeyError::FileTooShort {
            path: path.to_path_buf(),
        })?;
        Key::new(id, secret)
    }

    pub fn id(&self) -> u8 {
        self.id
    }

    /// 16 hex digits naming the secret without revealing it: its HMAC-SHA256 of a fixed label.
    /// Hosts compare these to find a stale key ring (`check-config --peers`).
    pub fn fingerprint(&self) -> String {
        use hmac::Mac;
        let mut mac = self.verp.clone();
        mac.update(b"listwarden key fingerprint v1");
        mac.finalize()
            .into_bytes()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A fresh HMAC-SHA1 state keyed with this secret, for prvs.
    pub(super) fn prvs_mac(&self) -> Hmac<Sha1> {
        self.prvs.clone()
    }

    /// A fresh HMAC-SHA256 state keyed with this secret, for signed VERP.
    pub(crate) fn verp_mac(&self) -> Hmac<Sha256> {
        self.verp.clone()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The keys in force: one signing key, all keys verifying, and the prvs validity window.
#[derive(Clone, Debug)]
pub struct KeyRing {
    signing: Key,
    slots: [Option<Key>; KEY_SLOTS],
    validity_days: u32,
}

impl KeyRing {
    /// Builds a ring from keys already in memory. Duplicate ids, a signing id that is
    /// not listed and a validity outside 1..=[`MAX_VALIDITY_DAYS`] are errors.
    pub fn new(keys: Vec<Key>, signing_id: u8, validity_days: u32) -> Result<KeyRing, KeyError> {
        if validity_days == 0 || validity_days > MAX_VALIDITY_DAYS {
            return Err(KeyError::BadValidity {
                days: validity_days,
            });
        }
        let mut slots: [Option<Key>; KEY_SLOTS] = Default::default();
        for key in keys {
            let id = key.id;
            let slot = slots
                .get_mut(usize::from(id))
                .ok_or(KeyError::IdOutOfRange { id })?;
            if slot.is_some() {
                return Err(KeyError::DuplicateId { id });
            }
            *slot = Some(key);
        }
        let signing = slots
            .get(usize::from(signing_id))
            .and_then(Option::as_ref)
            .cloned()
            .ok_or(KeyError::SigningKeyMissing { id: signing_id })?;
        Ok(KeyRing {
            signing,
            slots,
            validity_days,
        })
    }

    /// Reads each `(id, path)` key file and builds the ring (see the module doc for the
    /// file format). Checks ids before touching the file system.
    pub fn load(
        entries: &[(u8, PathBuf)],
        signing_id: u8,
        validity_days: u32,
    ) -> Result<KeyRing, KeyError> {
        let mut seen = [false; KEY_SLOTS];
        for (id, _) in entries {
            let id = *id;
            let slot = seen
                .get_mut(usize::from(id))
                .ok_or(KeyError::IdOutOfRange { id })?;
            if *slot {
                return Err(KeyError::DuplicateId { id });
            }
            *slot = true;
        }
        let mut keys = Vec::with_capacity(entries.len());
        for (id, path) in entries {
            keys.push(Key::from_file(*id, path)?);
        }
        KeyRing::new(keys, signing_id, validity_days)
    }

    pub fn signing_id(&self) -> u8 {
        self.signing.id
    }

    pub fn signing_key(&self) -> &Key {
        &self.signing
    }

    /// The verifying key with this id, if listed.
    pub fn get(&self, id: u8) -> Option<&Key> {
        self.slots.get(usize::from(id)).and_then(Option::as_ref)
    }

    /// Ids of all verifying keys, ascending.
    pub fn ids(&self) -> impl Iterator<Item = u8> + '_ {
        self.slots.iter().flatten().map(|key| key.id)
    }

    /// prvs validity window in days.
    pub fn validity_days(&self) -> u32 {
        self.validity_days
    }
}

/// The secret inside a key file's content: trimmed of ASCII whitespace, or `None` if
/// what remains is too short.
fn secret_from_file(content: &[u8]) -> Option<&[u8]> {
    let secret = content.trim_ascii();
    (secret.len() >= MIN_SECRET_LEN).then_some(secret)
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    let io_error = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    crate::bounded::read_at_most(file, MAX_KEY_FILE_LEN).map_err(|e| match e {
        crate::bounded::ReadError::TooLarge { .. } => KeyError::FileTooLarge {
            path: path.to_owned(),
        },
        crate::bounded::ReadError::Io(e) => io_error(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef";

    /// A temporary directory, removed when the guard drops.
    fn temp_dir(_name: &str) -> tempfile::TempDir {
        tempfile::tempdir().expect("create temp dir")
    }

    #[test]
    fn load_trims_and_reads_each_file() {
        let dir_guard = temp_dir("load");
        let dir = dir_guard.path();
        let a = dir.join("a.key");
        let b = dir.join("b.key");
        std::fs::write(&a, b"  0123456789abcdef\n").expect("write");
        std::fs::write(&b, [0xffu8; 32]).expect("write");
        let ring = KeyRing::load(&[(0, a), (7, b)], 7, 7).expect("load");
        assert_eq!(ring.signing_id(), 7);
        assert_eq!(ring.ids().collect::<Vec<_>>(), vec![0, 7]);
        assert!(ring.get(0).is_some() && ring.get(1).is_none() && ring.get(200).is_none());
        assert_eq!(ring.validity_days(), 7);
    }

    #[test]
    fn load_errors_name_the_file_not_the_secret() {
        let dir_guard = temp_dir("errors");
        let dir = dir_guard.path();
        let short = dir.join("short.key");
        std::fs::write(&short, b"  sekrit-short \n").expect("write");
        let err = KeyRing::load(&[(0, short.clone())], 0, 7).expect_err("too short");
        let text = err.to_string();
        assert!(text.contains("short.key"), "{text}");
        assert!(!text.contains("sekrit"), "{text}");

        let big = dir.join("big.key");
        std::fs::write(&big, vec![b'x'; MAX_KEY_FILE_LEN + 1]).expect("write");
        assert!(matches!(
            KeyRing::load(&[(0, big)], 0, 7),
            Err(KeyError::FileTooLarge { .. })
        ));

        let at_limit = dir.join("limit.key");
        std::fs::write(&at_limit, vec![b'x'; MAX_KEY_FILE_LEN]).expect("write");
        assert!(KeyRing::load(&[(0, at_limit)], 0, 7).is_ok());

        let missing = dir.join("missing.key");
        let err = KeyRing::load(&[(0, missing)], 0, 7).expect_err("missing");
        assert!(matches!(err, KeyError::Io { .. }));
        assert!(err.to_string().contains("missing.key"));
    }

    #[test]
    fn ring_rejects_bad_sets() {
        let key = |id| Key::new(id, SECRET).expect("key");
        let cases: Vec<(Vec<Key>, u8, u32, &str)> = vec![
            (vec![key(1), key(1)], 1, 7, "DuplicateId"),
            (vec![key(1)], 2, 7, "SigningKeyMissing"),
            (vec![], 0, 7, "SigningKeyMissing"),
            (vec![key(1)], 1, 0, "BadValidity"),
            (vec![key(1)], 1, MAX_VALIDITY_DAYS + 1, "BadValidity"),
        ];
        for (keys, signing, days, want) in cases {
            let err = KeyRing::new(keys, signing, days).expect_err(want);
            assert!(format!("{err:?}").starts_with(want), "{err:?}");
        }
        assert!(matches!(
            Key::new(10, SECRET),
            Err(KeyError::IdOutOfRange { id: 10 })
        ));
        assert!(matches!(
            Key::new(0, &SECRET[..15]),
            Err(KeyError::SecretTooShort { id: 0 })
        ));
        // Ids are checked before any file is opened.
        let paths = [(12, PathBuf::from("/nonexistent"))];
        assert!(matches!(
            KeyRing::load(&paths, 12, 7),
            Err(KeyError::IdOutOfRange { id: 12 })
        ));
        let paths = [(1, PathBuf::from("/x")), (1, PathBuf::from("/y"))];
        assert!(matches!(
            KeyRing::load(&paths, 1, 7),
            Err(KeyError::DuplicateId { id: 1 })
        ));
    }

    #[test]
    fn debug_hides_the_secret() {
        let secret = b"super-secret-key-material";
        let ring = KeyRing::new(vec![Key::new(3, secret).expect("key")], 3, 7).expect("ring");
        let shown = format!("{ring:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("super-secret"));
        // The HMAC states must not leak key bytes either (hmac's own Debug is opaque).
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&hex[..8]));
    }

    #[test]
    fn secret_trimming() {
        assert_eq!(secret_from_file(b"\t 0123456789abcdef \r\n"), Some(SECRET));
        assert_eq!(secret_from_file(b" 0123456789abcde \n"), None);
        assert_eq!(secret_from_file(b""), None);
    }
}
