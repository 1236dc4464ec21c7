//! Milter protocol frames as an MTA writes them, and the milter's replies
//! read back. Shared by the fuzz targets, the seed generator and the raw
//! fault tests in `tests/faults_*.rs` (included there with `#[path]`), so
//! every one of them speaks exactly the same bytes.
//!
//! A frame is a big-endian `u32` length (command byte + payload), the
//! command byte, then the payload. Strings in payloads end with NUL.

/// Everything Postfix 3.x offers at option negotiation (actions).
pub const ALL_ACTIONS: u32 = 0x1ff;
/// Everything Postfix 3.x offers at option negotiation (protocol steps):
/// `MILTER8_V6_PROTO_MASK` of Postfix's milter8.c.
pub const ALL_PROTOCOL: u32 = 0x1f_ffff;
/// What Postfix offers with `milter_protocol = 2`: the NO_* flags for
/// connect, helo, mail, rcpt, body, headers, end of headers.
pub const POSTFIX_V2_PROTOCOL: u32 = 0x7f;
/// `milter_protocol = 3`: version 2 plus NO_UNKNOWN.
pub const POSTFIX_V3_PROTOCOL: u32 = POSTFIX_V2_PROTOCOL | 0x100;
/// `milter_protocol = 4`: version 3 plus NO_DATA.
pub const POSTFIX_V4_PROTOCOL: u32 = POSTFIX_V3_PROTOCOL | 0x200;
/// The milter protocol version Postfix speaks by default.
pub const VERSION: u32 = 6;

/// One frame: length, command, payload. The length field is computed.
pub fn frame(cmd: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len() + 1).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(cmd);
    out.extend_from_slice(payload);
    out
}

/// A frame header claiming `len` bytes, with no payload behind it.
pub fn bare_header(len: u32, cmd: u8) -> Vec<u8> {
    let mut out = len.to_be_bytes().to_vec();
    out.push(cmd);
    out
}

/// `SMFIC_OPTNEG`: version, actions, protocol flags.
pub fn optneg(version: u32, actions: u32, protocol: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&version.to_be_bytes());
    p.extend_from_slice(&actions.to_be_bytes());
    p.extend_from_slice(&protocol.to_be_bytes());
    frame(b'O', &p)
}

/// Option negotiation as Postfix does it by default.
pub fn postfix_optneg() -> Vec<u8> {
    optneg(VERSION, ALL_ACTIONS, ALL_PROTOCOL)
}

/// `SMFIC_CONNECT` with an address: `host\0 family port address\0`.
/// `family` is `b'4'`, `b'6'` or `b'L'`.
pub fn connect(host: &[u8], family: u8, port: u16, addr: &[u8]) -> Vec<u8> {
    let mut p = nul(host);
    p.push(family);
    p.extend_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&nul(addr));
    frame(b'C', &p)
}

/// `SMFIC_CONNECT` for an unknown family: only the host name and `U`.
pub fn connect_unknown(host: &[u8]) -> Vec<u8> {
    let mut p = nul(host);
    p.push(b'U');
    frame(b'C', &p)
}

/// `SMFIC_MACRO` for the stage of command `stage` (`b'C'`, `b'M'`, ...).
pub fn macros(stage: u8, pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut p = vec![stage];
    for (name, value) in pairs {
        p.extend_from_slice(&nul(name));
        p.extend_from_slice(&nul(value));
    }
    frame(b'D', &p)
}

/// `SMFIC_MAIL` with its arguments (the path first).
pub fn mail(args: &[&[u8]]) -> Vec<u8> {
    frame(b'M', &args.iter().flat_map(|a| nul(a)).collect::<Vec<_>>())
}

/// `SMFIC_RCPT` with its arguments (the path first).
pub fn rcpt(args: &[&[u8]]) -> Vec<u8> {
    frame(b'R', &args.iter().flat_map(|a| nul(a)).collect::<Vec<_>>())
}

/// `SMFIC_HEADER`: `name\0value\0`.
pub fn header(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut p = nul(name);
    p.extend_from_slice(&nul(value));
    frame(b'L', &p)
}

pub fn eoh() -> Vec<u8> {
    frame(b'N', &[])
}

pub fn body(chunk: &[u8]) -> Vec<u8> {
    frame(b'B', chunk)
}

pub fn eom() -> Vec<u8> {
    frame(b'E', &[])
}

pub fn abort() -> Vec<u8> {
    frame(b'A', &[])
}

pub fn quit() -> Vec<u8> {
    frame(b'Q', &[])
}

fn nul(s: &[u8]) -> Vec<u8> {
    let mut v = s.to_vec();
    v.push(0);
    v
}

/// One message of a Postfix-like SMTP transaction, after connect: MAIL,
/// RCPTs, headers, end of headers, body, end of message, with the macros
/// Postfix sends at each stage.
pub fn transaction(
    sender: &str,
    rcpts: &[&str],
    headers: &[(&str, &str)],
    body_text: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(macros(b'M', &[(b"i", b""), (b"{auth_authen}", b"")]));
    out.extend(mail(&[sender.as_bytes(), b"SIZE=1000"]));
    for r in rcpts {
        out.extend(macros(b'R', &[(b"i", b""), (b"{rcpt_addr}", r.as_bytes())]));
        out.extend(rcpt(&[r.as_bytes()]));
    }
    for (name, value) in headers {
        out.extend(header(name.as_bytes(), value.as_bytes()));
    }
    out.extend(macros(b'N', &[(b"i", b"4ABCDE1234")]));
    out.extend(eoh());
    if !body_text.is_empty() {
        out.extend(body(body_text));
    }
    out.extend(macros(b'E', &[(b"i", b"4ABCDE1234")]));
    out.extend(eom());
    out
}

/// Negotiation and connect as Postfix sends them for a client at `ip`.
pub fn session_start(ip: &str) -> Vec<u8> {
    let mut out = postfix_optneg();
    out.extend(macros(
        b'C',
        &[
            (b"j", b"mx.lists.example.org"),
            (b"{daemon_name}", b"smtpd"),
            (b"v", b"Postfix 3.7.11"),
        ],
    ));
    let family = if ip.contains(':') { b'6' } else { b'4' };
    out.extend(connect(b"client.example", family, 40000, ip.as_bytes()));
    out
}

/// A reply from the milter: command byte and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub cmd: u8,
    pub payload: Vec<u8>,
}

impl Reply {
    /// The NUL-separated strings of the payload (for `y`, `h`, `m`, `e`, `+`, `-`).
    pub fn strings(&self) -> Vec<&[u8]> {
        let body = match self.cmd {
            // change header: index (u32) first.
            b'm' => self.payload.get(4..).unwrap_or_default(),
            _ => &self.payload[..],
        };
        let mut parts: Vec<&[u8]> = body.split(|b| *b == 0).collect();
        if parts.last().is_some_and(|p| p.is_empty()) {
            parts.pop();
        }
        parts
    }

    /// Whether this reply ends the current command (a verdict or continue),
    /// as opposed to an end-of-message action that precedes the verdict.
    pub fn is_final(&self) -> bool {
        matches!(
            self.cmd,
            b'a' | b'c' | b'r' | b't' | b'y' | b'd' | b's' | b'O'
        )
    }

    /// A short form for comparing decisions: the command, plus the text of
    /// a `y` reply.
    pub fn decision(&self) -> String {
        match self.cmd {
            b'y' => format!("y:{}", String::from_utf8_lossy(&self.payload)),
            c => (c as char).to_string(),
        }
    }
}

/// Splits a byte stream of replies into frames; a trailing partial frame
/// is returned as the second value.
pub fn parse_replies(mut bytes: &[u8]) -> (Vec<Reply>, &[u8]) {
    let mut out = Vec::new();
    loop {
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            return (out, bytes);
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len == 0 || rest.len() < len {
            return (out, bytes);
        }
        let (body, rest) = rest.split_at(len);
        if let Some((&cmd, payload)) = body.split_first() {
            out.push(Reply {
                cmd,
                payload: payload.to_vec(),
            });
        }
        bytes = rest;
    }
}
