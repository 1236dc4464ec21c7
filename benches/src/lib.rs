//! Shared pieces of the listwarden benchmarks: a no-op milter (the cost of
//! the milter protocol alone, to compare listwarden against) and message
//! fixtures split the way an MTA hands them to a milter.

use indymilter::{Callbacks, Status};
use std::path::PathBuf;

/// The repository root (this project lives in `benches/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A milter that registers every callback and answers `Continue` to each,
/// so the MTA sends it every stage, every header and the whole body. It
/// measures what the protocol costs before any policy runs.
pub fn noop_callbacks() -> Callbacks<()> {
    Callbacks::new()
        .on_connect(|_, _, _| Box::pin(async { Status::Continue }))
        .on_helo(|_, _| Box::pin(async { Status::Continue }))
        .on_mail(|_, _| Box::pin(async { Status::Continue }))
        .on_rcpt(|_, _| Box::pin(async { Status::Continue }))
        .on_data(|_| Box::pin(async { Status::Continue }))
        .on_header(|_, _, _| Box::pin(async { Status::Continue }))
        .on_eoh(|_| Box::pin(async { Status::Continue }))
        .on_body(|_, _| Box::pin(async { Status::Continue }))
        .on_eom(|_| Box::pin(async { Status::Continue }))
        .on_abort(|_| Box::pin(async { Status::Continue }))
        .on_close(|_| Box::pin(async { Status::Continue }))
        .on_unknown(|_, _| Box::pin(async { Status::Continue }))
}

/// A milter that answers `Continue` to one stage only and opts out of every
/// other (Postfix then skips them): `none` takes nothing after the
/// negotiation. Against each other, `none` and one stage give the cost of
/// that stage's round trip. `None` for a stage name it does not know.
pub fn one_stage_callbacks(stage: &str) -> Option<Callbacks<()>> {
    let cb = Callbacks::new();
    Some(match stage {
        "none" => cb,
        "connect" => cb.on_connect(|_, _, _| Box::pin(async { Status::Continue })),
        "helo" => cb.on_helo(|_, _| Box::pin(async { Status::Continue })),
        "mail" => cb.on_mail(|_, _| Box::pin(async { Status::Continue })),
        "rcpt" => cb.on_rcpt(|_, _| Box::pin(async { Status::Continue })),
        "data" => cb.on_data(|_| Box::pin(async { Status::Continue })),
        "eoh" => cb.on_eoh(|_| Box::pin(async { Status::Continue })),
        "eom" => cb.on_eom(|_| Box::pin(async { Status::Continue })),
        _ => return None,
    })
}

/// Largest body chunk one milter BODY packet may carry (Postfix sends at
/// most 65535 bytes per chunk).
pub const MAX_BODY_CHUNK: usize = 65_535;

/// Headers at most kept from one fixture (a bound for odd input).
pub const MAX_FIXTURE_HEADERS: usize = 1_000;

/// A message as an MTA hands it to a milter: unfolded header fields
/// (name, value with folding kept as CRLF + whitespace) and the body with
/// CRLF line ends.
#[derive(Debug, Clone)]
pub struct SplitMessage {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Splits raw message text at the first empty line. Lines that do not
/// look like a header field end the header section (as a lenient MTA
/// would treat them as body).
pub fn split_message(raw: &[u8]) -> SplitMessage {
    let text = String::from_utf8_lossy(raw);
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut lines = text.split('\n');
    let mut body_lines: Vec<&str> = Vec::new();
    for line in lines.by_ref() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push_str("\r\n");
                value.push_str(line);
            }
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) if !name.is_empty() && !name.contains(' ') => {
                if headers.len() < MAX_FIXTURE_HEADERS {
                    headers.push((name.to_string(), value.trim_start().to_string()));
                }
            }
            _ => {
                body_lines.push(line);
                break;
            }
        }
    }
    body_lines.extend(lines.map(|l| l.strip_suffix('\r').unwrap_or(l)));
    let mut body = Vec::with_capacity(raw.len());
    for line in body_lines {
        body.extend_from_slice(line.as_bytes());
        body.extend_from_slice(b"\r\n");
    }
    SplitMessage { headers, body }
}

/// Reads `tests/fixtures/dsn/NAME.eml`.
pub fn dsn_fixture(name: &str) -> std::io::Result<Vec<u8>> {
    std::fs::read(
        repo_root()
            .join("tests/fixtures/dsn")
            .join(format!("{name}.eml")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_stage_knows_its_stages() {
        for s in [
            "none", "connect", "helo", "mail", "rcpt", "data", "eoh", "eom",
        ] {
            assert!(one_stage_callbacks(s).is_some(), "{s}");
        }
        assert!(one_stage_callbacks("body").is_none());
    }

    #[test]
    fn split_keeps_folding_and_crlf_body() {
        let m = split_message(b"From: a@b\nSubject: one\n two\n\nline1\nline2\n");
        assert_eq!(
            m.headers,
            vec![
                ("From".to_string(), "a@b".to_string()),
                ("Subject".to_string(), "one\r\n two".to_string())
            ]
        );
        assert_eq!(m.body, b"line1\r\nline2\r\n\r\n");
    }

    #[test]
    fn every_dsn_fixture_splits_into_headers_and_body() {
        let dir = repo_root().join("tests/fixtures/dsn");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "eml") {
                let m = split_message(&std::fs::read(&path).unwrap());
                assert!(!m.headers.is_empty(), "{}", path.display());
                n += 1;
            }
        }
        assert!(n > 10);
    }
}
