//! The transport table listwarden writes for Postfix's `transport_maps`:
//! one `domain transport:nexthop` line per recipient domain whose provider
//! is slowed or held, and nothing else. The source file is written under a
//! temporary name, indexed by postmap(1), and both are renamed into place,
//! so Postfix never sees a half-written table. Postfix daemons notice the
//! replaced file and restart ("table ... has changed -- restarting").
//!
//! Postfix reads the table itself: a listwarden that is down cannot make a
//! lookup fail. An empty table is Postfix's normal route for every domain.

use crate::config::MapSpec;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{postmap} {map}: {detail}")]
    Postmap {
        postmap: String,
        map: String,
        detail: String,
    },
}

/// The source text: sorted `domain transport` lines. Keys are plain
/// domains (checked where they are learned or configured) and values one
/// line (checked by the config).
pub fn render(entries: &BTreeMap<String, String>) -> String {
    let mut text = String::new();
    for (domain, transport) in entries {
        text.push_str(domain);
        text.push('\t');
        text.push_str(transport);
        text.push('\n');
    }
    text
}

/// Writes and indexes `text` as the table `map` with `postmap`, unless the
/// installed table already holds it. Returns whether it wrote.
pub fn install(map: &MapSpec, text: &str, postmap: &Path) -> Result<bool, MapError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MapError::Io { path, source }
    };
    let index = map.index();
    if index.exists() && std::fs::read_to_string(&map.path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let name = map.path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = map.path.with_file_name(format!(".{name}.listwarden-new"));
    let tmp_map = MapSpec {
        kind: map.kind,
        path: tmp.clone(),
    };
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        // postmap gives the index the source's group and other read bits:
        // Postfix (another user) must read it whatever the umask.
        f.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    let out = std::process::Command::new(postmap)
        .arg(tmp_map.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(io(postmap))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_file(tmp_map.index());
        let detail = String::from_utf8_lossy(&out.stderr);
        let detail = detail.trim();
        return Err(MapError::Postmap {
            postmap: postmap.display().to_string(),
            map: tmp_map.to_string(),
            detail: if detail.is_empty() {
                out.status.to_string()
            } else {
                detail.chars().take(500).collect()
            },
        });
    }
    // The index first: it is what Postfix reads.
    std::fs::rename(tmp_map.index(), &index).map_err(io(&index))?;
    std::fs::rename(&tmp, &map.path).map_err(io(&map.path))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_render_as_sorted_lines() {
        let mut e = BTreeMap::new();
        e.insert("yahoo.com".to_string(), "listwarden-slow:".to_string());
        e.insert("aol.com".to_string(), "retry:4.7.0 held".to_string());
        assert_eq!(
            render(&e),
            "aol.com\tretry:4.7.0 held\nyahoo.com\tlistwarden-slow:\n"
        );
        assert_eq!(render(&BTreeMap::new()), "");
    }

    /// A stand-in for postmap that copies the source to the index, so the
    /// rename dance is tested without Postfix.
    fn fake_postmap(dir: &Path) -> PathBuf {
        let p = dir.join("postmap");
        std::fs::write(&p, "#!/bin/sh\nf=${1#*:}\ncp \"$f\" \"$f.db\"\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn install_writes_once_and_renames_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let postmap = fake_postmap(dir.path());
        let map = MapSpec {
            kind: "hash",
            path: dir.path().join("transport"),
        };
        assert!(install(&map, "", &postmap).unwrap());
        assert!(
            !install(&map, "", &postmap).unwrap(),
            "unchanged: no rewrite"
        );
        assert!(install(&map, "yahoo.com\tslow:\n", &postmap).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("transport.db")).unwrap(),
            "yahoo.com\tslow:\n"
        );
        let mode = std::fs::metadata(&map.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("listwarden-new"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_failing_postmap_leaves_the_old_table() {
        let dir = tempfile::tempdir().unwrap();
        let map = MapSpec {
            kind: "hash",
            path: dir.path().join("transport"),
        };
        install(&map, "a.example\tslow:\n", &fake_postmap(dir.path())).unwrap();
        let broken = dir.path().join("broken");
        std::fs::write(
            &broken,
            "#!/bin/sh\necho 'postmap: fatal: nope' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = install(&map, "", &broken).unwrap_err();
        assert!(e.to_string().contains("fatal: nope"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("transport.db")).unwrap(),
            "a.example\tslow:\n"
        );
    }
}
