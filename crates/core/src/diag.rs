//! Reading a YAML config file and reporting what is wrong with it as
//! `FILE:LINE:COLUMN: key.path: message`, every problem at once.
//!
//! serde_yaml_ng only reports positions for errors it raises itself, so
//! [`locate`] walks the document again and raises a marker error at the
//! wanted value; serde_yaml_ng stamps it with that value's position.

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess,
    Visitor,
};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Implements `FromStr` for an enum from the words the config file uses
/// for it; a word it does not know is refused with the list of those it
/// does ([`UnknownWord`]), the same message for every such key.
#[macro_export]
macro_rules! config_words {
    ($ty:ty { $($word:literal => $value:expr),+ $(,)? }) => {
        impl ::std::str::FromStr for $ty {
            type Err = $crate::diag::UnknownWord;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($word => Ok($value),)+
                    _ => Err($crate::diag::UnknownWord {
                        word: text.to_string(),
                        known: &[$($word),+],
                    }),
                }
            }
        }
    };
}

/// A word that a key naming one of a few choices does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{word}` is not one of: {}", .known.join(", "))]
pub struct UnknownWord {
    pub word: String,
    /// The words the key knows.
    pub known: &'static [&'static str],
}

/// Largest config or rules file read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(&'static str),
    /// A key known only at run time (from another file's own checks).
    Name(String),
    Index(usize),
}

/// Reads a rendered key path back (`rules[3].match.status`).
pub fn parse_path(text: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in text.split('.') {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        if !name.is_empty() {
            out.push(Seg::Name(name.to_string()));
        }
        for index in rest.split('[') {
            if let Ok(i) = index.trim_end_matches(']').parse() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

/// Renders a path the way error messages show it: `lists[2].address`.
pub fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Name(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() { "(top)".into() } else { out }
}

const MARKER: &str = "\u{0}listwarden-locate";

/// Line and column (1-based) of the value at `path`, if it exists.
pub fn locate(source: &str, path: &[Seg]) -> Option<(usize, usize)> {
    let de = serde_yaml_ng::Deserializer::from_str(source);
    let err = Walk { path }.deserialize(de).err()?;
    if !err.to_string().contains(MARKER) {
        return None;
    }
    let loc = err.location()?;
    Some((loc.line(), loc.column()))
}

struct Walk<'p> {
    path: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.path.first() {
            None => d.deserialize_any(Hit),
            Some(_) => d.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let want = match self.path.first() {
            Some(Seg::Key(k)) => Some(*k),
            Some(Seg::Name(k)) => Some(k.as_str()),
            _ => None,
        };
        while let Some(key) = map.next_key::<String>()? {
            if Some(key.as_str()) == want {
                map.next_value_seed(Walk {
                    path: &self.path[1..],
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let want = match self.path.first() {
            Some(Seg::Index(i)) => Some(*i),
            _ => None,
        };
        let mut i = 0;
        loop {
            let found = if Some(i) == want {
                seq.next_element_seed(Walk {
                    path: &self.path[1..],
                })?
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| ())
            };
            if found.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Raises the marker error from inside the wanted value.
struct Hit;

impl<'de> Visitor<'de> for Hit {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(MARKER))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(MARKER))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
}

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, when it is not the config file itself (a rules file).
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Key path such as `lists[0].address`, or `(top)`.
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    fn from_yaml(e: &serde_yaml_ng::Error) -> Diagnostic {
        let (line, column) = match e.location() {
            Some(l) => (Some(l.line()), Some(l.column())),
            None => (None, None),
        };
        // serde_yaml_ng renders "path: message at line L column C".
        let mut text = e.to_string();
        if let Some(cut) = text.rfind(" at line ") {
            text.truncate(cut);
        }
        let (path, message) = match text.split_once(": ") {
            Some((p, m)) if !p.contains(' ') => (p.to_string(), m.to_string()),
            _ => ("(top)".to_string(), text),
        };
        Diagnostic {
            file: None,
            line,
            column,
            path,
            message,
        }
    }
}

/// Everything wrong with a config file, one diagnostic a line:
/// `FILE:LINE:COLUMN: key.path: message`.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    /// A problem with the file as a whole (unreadable, too large).
    pub fn single(file: &Path, message: String) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            diagnostics: vec![Diagnostic {
                file: None,
                line: None,
                column: None,
                path: "(file)".into(),
                message,
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}: {}",
                d.file.as_ref().unwrap_or(&self.file).display(),
                d.line.unwrap_or(1),
                d.column.unwrap_or(1),
                d.path,
                d.message
            )?;
        }
        Ok(())
    }
}

/// Reads a config file: regular, bounded, UTF-8, not too deeply nested.
pub fn read_config(path: &Path) -> Result<String, ConfigError> {
    read_text(path).map_err(|e| ConfigError::single(path, e.to_string()))
}

/// Deserialises YAML source; a syntax or type error comes with its place.
pub fn parse_yaml<T: DeserializeOwned>(source: &str, origin: &Path) -> Result<T, ConfigError> {
    check_nesting(source).map_err(|e| ConfigError::single(origin, e.to_string()))?;
    serde_yaml_ng::from_str(source).map_err(|e| ConfigError {
        file: origin.to_path_buf(),
        diagnostics: vec![Diagnostic::from_yaml(&e)],
    })
}

/// Collects every problem found while checking a deserialised file, each
/// placed by its key path.
pub struct Checker<'s> {
    source: &'s str,
    origin: &'s Path,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl<'s> Checker<'s> {
    pub fn new(source: &'s str, origin: &'s Path) -> Checker<'s> {
        Checker {
            source,
            origin,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// A file name from the config: relative names are relative to the
    /// config file's directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.origin.parent().unwrap_or(Path::new(".")).join(name)
    }

    fn diagnostic(&self, path: &[Seg], message: String) -> Diagnostic {
        let (line, column) = match locate(self.source, path) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        Diagnostic {
            file: None,
            line,
            column,
            path: render(path),
            message,
        }
    }

    pub fn error(&mut self, path: &[Seg], message: impl Into<String>) {
        let d = self.diagnostic(path, message.into());
        self.errors.push(d);
    }

    pub fn warn(&mut self, path: &[Seg], message: impl Into<String>) {
        let d = self.diagnostic(path, message.into());
        self.warnings.push(d);
    }

    /// An error in another file the config names (a rules file), placed
    /// by its own key path in its own source.
    pub fn error_in(&mut self, file: &Path, source: &str, path: &[Seg], message: String) {
        let (line, column) = locate(source, path).unzip();
        self.errors.push(Diagnostic {
            file: Some(file.to_path_buf()),
            line,
            column,
            path: render(path),
            message,
        });
    }

    /// An error at a known place in another file (a YAML syntax error).
    pub fn error_at(
        &mut self,
        file: &Path,
        place: (Option<usize>, Option<usize>),
        message: String,
    ) {
        self.errors.push(Diagnostic {
            file: Some(file.to_path_buf()),
            line: place.0,
            column: place.1,
            path: "(top)".into(),
            message,
        });
    }

    /// A key naming one value of an enum ([`config_words!`]); absent:
    /// `default`, unknown: an error at `path` and `default`.
    pub fn choice<T: std::str::FromStr<Err = UnknownWord>>(
        &mut self,
        raw: Option<&str>,
        default: T,
        path: &[Seg],
    ) -> T {
        match raw.map(str::parse) {
            None => default,
            Some(Ok(value)) => value,
            Some(Err(e)) => {
                self.error(path, e.to_string());
                default
            }
        }
    }

    /// An optional `IP:PORT` listener; absent or `off` is `None`.
    pub fn listen_address(
        &mut self,
        text: Option<&str>,
        path: &[Seg],
        example: &str,
    ) -> Option<SocketAddr> {
        let text = text.filter(|t| *t != "off")?;
        let parsed = text.parse::<SocketAddr>().ok();
        if parsed.is_none() {
            self.error(
                path,
                format!("`{text}` is not an IP:PORT address such as {example} (or `off`)"),
            );
        }
        parsed
    }

    /// The warnings, one rendered line each, or every error.
    pub fn finish(self) -> Result<Vec<String>, ConfigError> {
        let file = self.origin.to_path_buf();
        if self.errors.is_empty() {
            Ok(self
                .warnings
                .into_iter()
                .map(|w| {
                    ConfigError {
                        file: file.clone(),
                        diagnostics: vec![w],
                    }
                    .to_string()
                })
                .collect())
        } else {
            Err(ConfigError {
                file,
                diagnostics: self.errors,
            })
        }
    }
}

/// Why a file named by the config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read file: {0}")]
    Read(#[from] std::io::Error),
    #[error("not a regular file")]
    NotRegular,
    #[error("file is larger than {0} bytes")]
    TooLarge(u64),
    #[error("file is not UTF-8: {0}")]
    NotUtf8(#[from] std::string::FromUtf8Error),
    #[error("nested deeper than {MAX_NESTING} levels")]
    TooDeep,
}

/// Reads a regular file of at most `max` bytes. FIFOs, devices and /proc
/// files report a size of 0, so the bound is applied while reading.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    use crate::bounded::{ReadError, read_at_most};
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(FileError::NotRegular);
    }
    read_at_most(file, usize::try_from(max).unwrap_or(usize::MAX)).map_err(|e| match e {
        ReadError::TooLarge { .. } => FileError::TooLarge(max),
        ReadError::Io(e) => FileError::Read(e),
    })
}

/// A config or rules file: regular, at most [`MAX_FILE_BYTES`], UTF-8, and
/// not nested deeper than YAML needs (see [`check_nesting`]).
pub fn read_text(path: &Path) -> Result<String, FileError> {
    let text = String::from_utf8(read_bounded(path, MAX_FILE_BYTES)?)?;
    check_nesting(&text)?;
    Ok(text)
}

/// Deepest YAML nesting accepted. The parser refuses depth beyond 128 only
/// after a scan that is quadratic in the depth; this linear pre-check keeps
/// a hostile file from costing minutes.
const MAX_NESTING: usize = 64;

/// Refuses flow nesting (`[`/`{` outside quotes and comments) deeper than
/// `MAX_NESTING`. Block nesting is bounded by the line length anyway.
pub fn check_nesting(text: &str) -> Result<(), FileError> {
    let mut depth = 0usize;
    for line in text.lines() {
        let mut quote: Option<char> = None;
        // A quote opens a scalar only where a scalar can start.
        let mut prev = ' ';
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') if prev.is_whitespace() || "[{,:-".contains(prev) => {
                    quote = Some(c)
                }
                (None, '#') if prev.is_whitespace() => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Err(FileError::TooDeep);
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
            prev = c;
        }
    }
    Ok(())
}

/// Folds a multi-line message onto one line (one diagnostic, one line).
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str =
        "a: 1\nlists:\n  - address: x@y\n    roles: [owner, bounces]\n  - address: z@w\n";

    #[test]
    fn finds_nested_values() {
        assert_eq!(locate(DOC, &[Seg::Key("a")]), Some((1, 4)));
        let p = [Seg::Key("lists"), Seg::Index(1), Seg::Key("address")];
        assert_eq!(locate(DOC, &p), Some((5, 14)));
        let p = [
            Seg::Key("lists"),
            Seg::Index(0),
            Seg::Key("roles"),
            Seg::Index(1),
        ];
        assert_eq!(locate(DOC, &p), Some((4, 20)));
        assert_eq!(render(&p), "lists[0].roles[1]");
    }

    #[test]
    fn paths_read_back() {
        for text in [
            "rules[3].match.status",
            "a",
            "lists[0].roles[1]",
            "x[2][4].y",
        ] {
            assert_eq!(render(&parse_path(text)), text);
        }
        let p = parse_path("lists[1].address");
        assert_eq!(locate(DOC, &p), Some((5, 14)));
    }

    #[test]
    fn missing_path() {
        assert_eq!(locate(DOC, &[Seg::Key("nope")]), None);
    }
}
