//! Hands a post's envelopes to Postfix: a minimal SMTP client for a
//! reinjection port (one connection, one transaction per envelope,
//! PIPELINING when offered), or `sendmail -i -f SENDER -- RCPT` per envelope.
//!
//! Every reply is classified, because the answer decides between "retry the
//! post later" (exit 75) and "this member is done":
//!
//! | where | reply | meaning |
//! |---|---|---|
//! | any | 4xx, I/O error, timeout | [`InjectError::Transient`]: stop, exit 75, retry |
//! | MAIL, DATA command | 5xx | transient too: a refusal not about the post (a misconfigured port) must not bounce it |
//! | RCPT | 5xx with `5.1.x` | that member's address is bad: [`Injected::Rejected`], never retried |
//! | RCPT | other 5xx (`5.7.1` relaying denied) | transient: a configuration problem, not the member's |
//! | end of DATA | 5xx | [`InjectError::Permanent`]: the content is refused (size); the post bounces |

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::address::Address;
use crate::progress::ProgressError;

/// One envelope: a signed VERP sender and its recipient(s), with the header
/// fields that differ per recipient, to be sent before the common message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub envelope_sender: Address,
    pub recipients: Vec<Address>,
    pub headers: Vec<u8>,
}

/// Longest reply line read.
const MAX_REPLY_LINE: usize = 4096;
/// Most lines of one multi-line reply.
const MAX_REPLY_LINES: usize = 100;
/// How long one `sendmail` run may take.
const SENDMAIL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct SmtpOptions {
    /// Our name in EHLO.
    pub helo: String,
    pub connect_timeout: Duration,
    /// Each read and write of a command and its reply.
    pub command_timeout: Duration,
    /// Waiting for the reply to the final `.`: Postfix runs its
    /// non-SMTP-time checks (milters) then.
    pub data_timeout: Duration,
    /// Transactions before reconnecting.
    pub max_per_connection: usize,
}

impl Default for SmtpOptions {
    fn default() -> SmtpOptions {
        SmtpOptions {
            helo: "localhost".into(),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(30),
            data_timeout: Duration::from_secs(120),
            max_per_connection: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("SMTP I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("SMTP {stage} refused: {reply}")]
    Transient { stage: &'static str, reply: String },
    #[error("message refused after DATA: {reply}")]
    Permanent { reply: String },
    #[error("SMTP protocol error: {0}")]
    Protocol(String),
    #[error("sendmail: {0}")]
    Sendmail(String),
    #[error("cannot record progress: {0}")]
    Record(ProgressError),
}

impl InjectError {
    /// True only for a refusal of the post's content: it will never pass.
    pub fn is_permanent(&self) -> bool {
        matches!(self, InjectError::Permanent { .. })
    }
}

/// How one recipient's copy ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injected {
    Sent,
    /// Refused for good (bad address); the reply text.
    Rejected(String),
}

/// Totals of one injection run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InjectReport {
    pub sent: usize,
    pub rejected: Vec<(Address, String)>,
}

/// Called once per recipient as soon as its outcome is final; an error
/// stops the run (the progress log could not be written).
pub type OnDone<'a> = dyn FnMut(&Address, &Injected) -> Result<(), ProgressError> + 'a;

/// The post converted once to SMTP wire form (CRLF, dot-stuffed, final
/// CRLF), and whether it needs 8BITMIME.
struct Wire {
    body: Vec<u8>,
    eight_bit: bool,
}

/// Injects every batch over one SMTP connection (reconnecting after
/// [`SmtpOptions::max_per_connection`] transactions). Each batch's own
/// headers go first, then `message`.
pub fn inject_smtp<'b>(
    addr: SocketAddr,
    options: &SmtpOptions,
    batches: impl IntoIterator<Item = &'b Batch>,
    message: &[u8],
    on_done: &mut OnDone<'_>,
) -> Result<InjectReport, InjectError> {
    let wire = Wire {
        body: to_wire(message, true),
        eight_bit: !message.is_ascii(),
    };
    let mut report = InjectReport::default();
    let mut session: Option<SmtpClient> = None;
    let mut in_session = 0;
    for batch in batches {
        if in_session >= options.max_per_connection.max(1) {
            if let Some(s) = session.take() {
                s.quit();
            }
            in_session = 0;
        }
        let s = match &mut session {
            Some(s) => s,
            None => session.insert(SmtpClient::open(addr, options)?),
        };
        in_session += 1;
        for (rcpt, delivery) in s.transaction(batch, &wire, options)? {
            match &delivery {
                Injected::Sent => report.sent += 1,
                Injected::Rejected(reply) => report.rejected.push((rcpt.clone(), reply.clone())),
            }
            on_done(&rcpt, &delivery).map_err(InjectError::Record)?;
        }
    }
    if let Some(s) = session {
        s.quit();
    }
    Ok(report)
}

/// One SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SmtpReply {
    code: u16,
    /// Each line's text after the code and separator.
    lines: Vec<String>,
    /// All lines, joined with " | ", sanitized: for logs and errors.
    text: String,
}

impl SmtpReply {
    fn class(&self) -> u16 {
        self.code / 100
    }

    /// A `5.1.x` refusal: the address itself is bad.
    fn is_bad_address(&self) -> bool {
        self.class() == 5
            && self
                .lines
                .first()
                .and_then(|l| l.split_whitespace().next())
                .is_some_and(|code| code.starts_with("5.1."))
    }
}

struct SmtpClient {
    reader: BufReader<TcpStream>,
    /// Buffered: a command burst, or an envelope's data, leaves in as few
    /// segments as possible; flushed before every read of a reply.
    writer: BufWriter<TcpStream>,
    pipelining: bool,
    eight_bit_mime: bool,
    smtputf8: bool,
}

impl SmtpClient {
    fn open(addr: SocketAddr, options: &SmtpOptions) -> Result<SmtpClient, InjectError> {
        let stream = TcpStream::connect_timeout(&addr, options.connect_timeout)
            .map_err(|source| InjectError::Connect { addr, source })?;
        stream.set_read_timeout(Some(options.command_timeout))?;
        stream.set_write_timeout(Some(options.command_timeout))?;
        stream.set_nodelay(true)?;
        let writer = BufWriter::with_capacity(64 * 1024, stream.try_clone()?);
        let mut session = SmtpClient {
            reader: BufReader::new(stream),
            writer,
            pipelining: false,
            eight_bit_mime: false,
            smtputf8: false,
        };
        let greeting = session.read_reply()?;
        require(&greeting, 2, "greeting")?;
        let helo = sanitize_helo(&options.helo);
        session.send(format!("EHLO {helo}\r\n").as_bytes())?;
        let ehlo = session.read_reply()?;
        if ehlo.class() == 2 {
            for keyword in ehlo.lines.iter().skip(1) {
                let word = keyword.split_whitespace().next().unwrap_or_default();
                match word.to_ascii_uppercase().as_str() {
                    "PIPELINING" => session.pipelining = true,
                    "8BITMIME" => session.eight_bit_mime = true,
                    "SMTPUTF8" => session.smtputf8 = true,
                    _ => {}
                }
            }
        } else {
            session.send(format!("HELO {helo}\r\n").as_bytes())?;
            let reply = session.read_reply()?;
            require(&reply, 2, "HELO")?;
        }
        Ok(session)
    }

    /// One envelope: MAIL, RCPT per recipient, DATA. Returns the outcome per
    /// recipient; an error for anything that must stop the run.
    fn transaction(
        &mut self,
        batch: &Batch,
        wire: &Wire,
        options: &SmtpOptions,
    ) -> Result<Vec<(Address, Injected)>, InjectError> {
        let utf8 = !batch.envelope_sender.to_string().is_ascii()
            || batch.recipients.iter().any(|r| !r.to_string().is_ascii());
        if utf8 && !self.smtputf8 {
            let reply = "not sent: the reinjection server does not offer SMTPUTF8".to_string();
            return Ok(batch
                .recipients
                .iter()
                .map(|r| (r.clone(), Injected::Rejected(reply.clone())))
                .collect());
        }
        let mut mail = format!("MAIL FROM:<{}>", batch.envelope_sender);
        if wire.eight_bit && self.eight_bit_mime {
            mail.push_str(" BODY=8BITMIME");
        }
        if utf8 {
            mail.push_str(" SMTPUTF8");
        }
        mail.push_str("\r\n");
        let rcpts: Vec<String> = batch
            .recipients
            .iter()
            .map(|r| format!("RCPT TO:<{r}>\r\n"))
            .collect();

        let (mail_reply, rcpt_replies, data_reply) = if self.pipelining {
            let mut burst = mail.into_bytes();
            for r in &rcpts {
                burst.extend_from_slice(r.as_bytes());
            }
            burst.extend_from_slice(b"DATA\r\n");
            self.send(&burst)?;
            let mail_reply = self.read_reply()?;
            let mut rcpt_replies = Vec::with_capacity(rcpts.len());
            for _ in &rcpts {
                rcpt_replies.push(self.read_reply()?);
            }
            (mail_reply, rcpt_replies, Some(self.read_reply()?))
        } else {
            self.send(mail.as_bytes())?;
            let mail_reply = self.read_reply()?;
            let mut rcpt_replies = Vec::new();
            if mail_reply.class() == 2 {
                for r in &rcpts {
                    self.send(r.as_bytes())?;
                    rcpt_replies.push(self.read_reply()?);
                }
            }
            (mail_reply, rcpt_replies, None)
        };

        if mail_reply.class() != 2 {
            return Err(self.abort("MAIL FROM", &mail_reply));
        }
        let mut outcomes = Vec::with_capacity(batch.recipients.len());
        let mut accepted = Vec::new();
        for (rcpt, reply) in batch.recipients.iter().zip(&rcpt_replies) {
            if reply.class() == 2 {
                accepted.push(rcpt.clone());
            } else if reply.is_bad_address() {
                outcomes.push((rcpt.clone(), Injected::Rejected(reply.text.clone())));
            } else {
                return Err(self.abort("RCPT TO", reply));
            }
        }
        if accepted.is_empty() {
            // Pipelined DATA got 554 "no valid recipients"; end the transaction.
            self.rset()?;
            return Ok(outcomes);
        }
        let data_reply = match data_reply {
            Some(r) => r,
            None => {
                self.send(b"DATA\r\n")?;
                self.read_reply()?
            }
        };
        if data_reply.code != 354 {
            return Err(self.abort("DATA", &data_reply));
        }
        self.send(&batch_wire(batch))?;
        self.send(&wire.body)?;
        self.send(b".\r\n")?;
        self.reader
            .get_ref()
            .set_read_timeout(Some(options.data_timeout))?;
        let final_reply = self.read_reply();
        self.reader
            .get_ref()
            .set_read_timeout(Some(options.command_timeout))?;
        let final_reply = final_reply?;
        match final_reply.class() {
            2 => {
                outcomes.extend(accepted.into_iter().map(|r| (r, Injected::Sent)));
                Ok(outcomes)
            }
            5 => Err(InjectError::Permanent {
                reply: final_reply.text,
            }),
            _ => Err(InjectError::Transient {
                stage: "end of DATA",
                reply: final_reply.text,
            }),
        }
    }

    /// Resets after a refusal (best effort) and turns it into an error.
    fn abort(&mut self, stage: &'static str, reply: &SmtpReply) -> InjectError {
        let _ = self.rset();
        InjectError::Transient {
            stage,
            reply: reply.text.clone(),
        }
    }

    fn rset(&mut self) -> Result<(), InjectError> {
        self.send(b"RSET\r\n")?;
        let reply = self.read_reply()?;
        require(&reply, 2, "RSET")
    }

    fn quit(mut self) {
        if self.send(b"QUIT\r\n").is_ok() {
            let _ = self.read_reply();
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), InjectError> {
        self.writer.write_all(bytes)?;
        Ok(())
    }

    /// Reads one (possibly multi-line) reply; lines are joined with " | "
    /// so EHLO keywords stay apart.
    fn read_reply(&mut self) -> Result<SmtpReply, InjectError> {
        self.writer.flush()?;
        let mut lines: Vec<String> = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        let mut code = None;
        loop {
            let mut raw = Vec::new();
            let n = (&mut self.reader)
                .take(MAX_REPLY_LINE as u64)
                .read_until(b'\n', &mut raw)?;
            if n == 0 {
                return Err(InjectError::Protocol("connection closed".into()));
            }
            if raw.last() != Some(&b'\n') {
                return Err(InjectError::Protocol("reply line too long".into()));
            }
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            let this_code = line
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| InjectError::Protocol(format!("bad reply {:?}", line)))?;
            if *code.get_or_insert(this_code) != this_code {
                return Err(InjectError::Protocol("reply code changed mid-reply".into()));
            }
            let last = line.get(3..4).is_none_or(|sep| sep != "-");
            lines.push(super::reply_line(line.get(4..).unwrap_or_default()));
            texts.push(super::reply_line(line));
            if last {
                break;
            }
            if lines.len() >= MAX_REPLY_LINES {
                return Err(InjectError::Protocol("reply has too many lines".into()));
            }
        }
        Ok(SmtpReply {
            code: code.unwrap_or(0),
            text: texts.join(" | "),
            lines,
        })
    }
}

fn require(reply: &SmtpReply, class: u16, stage: &'static str) -> Result<(), InjectError> {
    if reply.class() == class {
        Ok(())
    } else {
        Err(InjectError::Transient {
            stage,
            reply: reply.text.clone(),
        })
    }
}

fn sanitize_helo(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(*c))
        .take(255)
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

fn batch_wire(batch: &Batch) -> Vec<u8> {
    to_wire(&batch.headers, false)
}

/// SMTP wire form: bare LF becomes CRLF, a line starting with `.` gets a
/// second one, and with `final_newline` the text ends in CRLF.
pub fn to_wire(data: &[u8], final_newline: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 50 + 2);
    let mut line_start = true;
    let mut prev = 0u8;
    for &b in data {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        line_start = b == b'\n';
        prev = b;
    }
    if final_newline && !data.is_empty() && !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Injects each batch with `PROGRAM -i -f SENDER -- RCPT...` (Postfix's
/// sendmail; the message goes through `non_smtpd_milters`). Any failure
/// stops the run as transient: sendmail gives no per-recipient verdicts.
pub fn inject_sendmail<'b>(
    program: &Path,
    batches: impl IntoIterator<Item = &'b Batch>,
    message: &[u8],
    on_done: &mut OnDone<'_>,
) -> Result<InjectReport, InjectError> {
    let mut report = InjectReport::default();
    for batch in batches {
        run_sendmail(program, batch, message)?;
        for rcpt in &batch.recipients {
            report.sent += 1;
            on_done(rcpt, &Injected::Sent).map_err(InjectError::Record)?;
        }
    }
    Ok(report)
}

fn run_sendmail(program: &Path, batch: &Batch, message: &[u8]) -> Result<(), InjectError> {
    let mut child = Command::new(program)
        .arg("-i")
        .arg("-f")
        .arg(batch.envelope_sender.to_string())
        .arg("--")
        .args(batch.recipients.iter().map(|r| r.to_string()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| InjectError::Sendmail(format!("cannot run {}: {e}", program.display())))?;
    let written = child
        .stdin
        .take()
        .ok_or_else(|| InjectError::Sendmail("no stdin".into()))
        .and_then(|mut stdin| {
            stdin
                .write_all(&batch.headers)
                .and_then(|()| stdin.write_all(message))
                .map_err(|e| InjectError::Sendmail(format!("write: {e}")))
        });
    let status = wait_with_deadline(&mut child, SENDMAIL_TIMEOUT)?;
    written?;
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(err) = child.stderr.take() {
        let _ = err.take(1024).read_to_string(&mut stderr);
    }
    Err(InjectError::Sendmail(format!(
        "{} exited with {status}: {}",
        program.display(),
        super::reply_line(stderr.trim())
    )))
}

fn wait_with_deadline(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Result<std::process::ExitStatus, InjectError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| InjectError::Sendmail(format!("wait: {e}")))?
        {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(InjectError::Sendmail(format!(
                "no answer within {}s",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Where and how to inject: `inject: smtp:127.0.0.1:10026` or
/// `inject: sendmail[:/usr/sbin/sendmail]` in the proposed config.
#[derive(Debug, Clone)]
pub enum Injector {
    Smtp {
        addr: SocketAddr,
        options: SmtpOptions,
    },
    Sendmail {
        program: PathBuf,
    },
}

impl Injector {
    /// Parses the `inject` setting.
    pub fn parse(text: &str) -> Result<Injector, String> {
        if let Some(addr) = text.strip_prefix("smtp:") {
            let addr = addr
                .parse()
                .map_err(|_| format!("`{addr}` is not IP:PORT, e.g. 127.0.0.1:10026"))?;
            return Ok(Injector::Smtp {
                addr,
                options: SmtpOptions::default(),
            });
        }
        match text.strip_prefix("sendmail") {
            Some("") => Ok(Injector::Sendmail {
                program: PathBuf::from("/usr/sbin/sendmail"),
            }),
            Some(rest) => match rest.strip_prefix(':') {
                Some(path) if path.starts_with('/') => Ok(Injector::Sendmail {
                    program: PathBuf::from(path),
                }),
                _ => Err("expected sendmail or sendmail:/ABSOLUTE/PATH".into()),
            },
            None => Err("expected smtp:IP:PORT or sendmail[:/PATH]".into()),
        }
    }

    pub fn inject<'b>(
        &self,
        batches: impl IntoIterator<Item = &'b Batch>,
        message: &[u8],
        on_done: &mut OnDone<'_>,
    ) -> Result<InjectReport, InjectError> {
        match self {
            Injector::Smtp { addr, options } => {
                inject_smtp(*addr, options, batches, message, on_done)
            }
            Injector::Sendmail { program } => inject_sendmail(program, batches, message, on_done),
        }
    }
}

#[cfg(test)]
pub(crate) mod sink {
    //! A tiny SMTP server for tests: records envelopes, answers scripted
    //! replies for recipients whose address contains a marker.
    use std::io::{BufRead, BufReader, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Envelope {
        pub from: String,
        pub rcpts: Vec<String>,
        pub data: Vec<u8>,
    }

    #[derive(Clone, Default)]
    pub struct Sink {
        pub envelopes: Arc<Mutex<Vec<Envelope>>>,
        pub connections: Arc<Mutex<usize>>,
    }

    impl Sink {
        /// Starts a sink; `pipelining` controls the EHLO keyword. Markers in
        /// a recipient: `bad-` → 550 5.1.1, `relay-` → 554 5.7.1,
        /// `later-` → 451, `big-` → 552 after DATA.
        pub fn start(pipelining: bool) -> (SocketAddr, Sink) {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let sink = Sink::default();
            let shared = sink.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    if let Ok(mut n) = shared.connections.lock() {
                        *n += 1;
                    }
                    let s = shared.clone();
                    std::thread::spawn(move || s.serve(stream, pipelining));
                }
            });
            (addr, sink)
        }

        pub fn taken(&self) -> Vec<Envelope> {
            self.envelopes.lock().map(|e| e.clone()).unwrap_or_default()
        }

        fn serve(&self, stream: TcpStream, pipelining: bool) {
            let _ = stream.set_nodelay(true);
            let Ok(mut out) = stream.try_clone() else {
                return;
            };
            let mut input = BufReader::new(stream);
            let mut env = Envelope::default();
            let _ = out.write_all(b"220 sink ESMTP\r\n");
            let mut line = String::new();
            loop {
                line.clear();
                if input.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let cmd = line.trim_end().to_string();
                let upper = cmd.to_ascii_uppercase();
                let reply: String = if upper.starts_with("EHLO") {
                    let pipe = if pipelining { "250-PIPELINING\r\n" } else { "" };
                    format!("250-sink\r\n{pipe}250-8BITMIME\r\n250 SMTPUTF8\r\n")
                } else if upper.starts_with("MAIL FROM:") {
                    env = Envelope {
                        from: cmd.get(10..).unwrap_or_default().to_string(),
                        ..Envelope::default()
                    };
                    "250 2.1.0 Ok\r\n".into()
                } else if upper.starts_with("RCPT TO:") {
                    let rcpt = cmd.get(8..).unwrap_or_default().to_string();
                    if rcpt.contains("bad-") {
                        "550 5.1.1 <x>: Recipient address rejected: User unknown\r\n".into()
                    } else if rcpt.contains("relay-") {
                        "554 5.7.1 <x>: Relay access denied\r\n".into()
                    } else if rcpt.contains("later-") {
                        "451 4.3.0 try later\r\n".into()
                    } else {
                        env.rcpts.push(rcpt);
                        "250 2.1.5 Ok\r\n".into()
                    }
                } else if upper == "DATA" {
                    if env.rcpts.is_empty() {
                        "554 5.5.1 Error: no valid recipients\r\n".into()
                    } else {
                        let _ = out.write_all(b"354 go ahead\r\n");
                        let mut data = Vec::new();
                        loop {
                            let mut l = Vec::new();
                            if input.read_until(b'\n', &mut l).unwrap_or(0) == 0 {
                                return;
                            }
                            if l == b".\r\n" {
                                break;
                            }
                            data.extend_from_slice(&l);
                        }
                        env.data = data;
                        if env.rcpts.iter().any(|r| r.contains("big-")) {
                            "552 5.3.4 Message size exceeds fixed limit\r\n".into()
                        } else {
                            if let Ok(mut all) = self.envelopes.lock() {
                                all.push(std::mem::take(&mut env));
                            }
                            "250 2.0.0 Ok: queued\r\n".into()
                        }
                    }
                } else if upper == "RSET" {
                    env = Envelope::default();
                    "250 2.0.0 Ok\r\n".into()
                } else if upper == "QUIT" {
                    let _ = out.write_all(b"221 2.0.0 Bye\r\n");
                    return;
                } else {
                    "502 5.5.2 Error: command not recognized\r\n".into()
                };
                if out.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sink::Sink;
    use super::*;
    use crate::testutil::addr;

    fn batch(sender: &str, rcpt: &str, headers: &str) -> Batch {
        Batch {
            envelope_sender: addr(sender),
            recipients: vec![addr(rcpt)],
            headers: headers.as_bytes().to_vec(),
        }
    }

    fn run(
        addr: SocketAddr,
        batches: &[Batch],
        message: &[u8],
    ) -> (Result<InjectReport, InjectError>, Vec<(String, Injected)>) {
        let mut seen = Vec::new();
        let result = inject_smtp(
            addr,
            &SmtpOptions::default(),
            batches,
            message,
            &mut |rcpt: &Address, d: &Injected| {
                seen.push((rcpt.to_string(), d.clone()));
                Ok(())
            },
        );
        (result, seen)
    }

    #[test]
    fn wire_form_table() {
        let cases: &[(&[u8], bool, &[u8])] = &[
            (b"a\nb\n", true, b"a\r\nb\r\n"),
            (b"a\r\nb", true, b"a\r\nb\r\n"),
            (b".x\n..y\nz.\n.\n", true, b"..x\r\n...y\r\nz.\r\n..\r\n"),
            (b"", true, b""),
            (b"H: v\n", false, b"H: v\r\n"),
            (b"lone\rcr\n", true, b"lone\rcr\r\n"),
        ];
        for (input, final_nl, want) in cases {
            assert_eq!(
                to_wire(input, *final_nl),
                want.to_vec(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn delivers_with_and_without_pipelining() {
        for pipelining in [true, false] {
            let (addr, sink) = Sink::start(pipelining);
            let batches = [
                batch("l-bounces+1@l.org", "a@x.org", "X-A: 1\n"),
                batch("l-bounces+2@l.org", "bad-b@x.org", "X-B: 2\n"),
                batch("l-bounces+3@l.org", "c@x.org", "X-C: 3\n"),
            ];
            let (result, seen) = run(addr, &batches, b"Subject: t\n\n.dot\nend");
            let report = result.expect("inject");
            assert_eq!(report.sent, 2);
            assert_eq!(report.rejected.len(), 1);
            assert_eq!(seen.len(), 3);
            assert!(matches!(seen[1].1, Injected::Rejected(ref r) if r.contains("5.1.1")));
            let got = sink.taken();
            assert_eq!(got.len(), 2, "pipelining={pipelining}");
            assert_eq!(got[0].from, "<l-bounces+1@l.org>");
            assert_eq!(got[1].rcpts, ["<c@x.org>"]);
            assert_eq!(got[1].data, b"X-C: 3\r\nSubject: t\r\n\r\n..dot\r\nend\r\n");
            assert_eq!(sink.connections.lock().map(|n| *n).unwrap_or(0), 1);
        }
    }

    #[test]
    fn refusals_that_must_stop_the_run() {
        let (addr, sink) = Sink::start(true);
        for (rcpt, permanent) in [
            ("relay-x@x.org", false),
            ("later-x@x.org", false),
            ("big-x@x.org", true),
        ] {
            let batches = [batch("s@l.org", "ok@x.org", ""), batch("s@l.org", rcpt, "")];
            let (result, seen) = run(addr, &batches, b"Subject: t\n\nbody\n");
            let err = result.expect_err(rcpt);
            assert_eq!(err.is_permanent(), permanent, "{rcpt}: {err}");
            // The first member's copy was recorded before the failure.
            assert_eq!(seen.len(), 1, "{rcpt}");
        }
        assert_eq!(sink.taken().len(), 3);
        let closed: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let (result, _) = run(closed, &[batch("s@l.org", "a@x.org", "")], b"x\n");
        assert!(matches!(result, Err(InjectError::Connect { .. })));
    }

    /// SMTP cost alone: 1,000 single-recipient envelopes over one connection.
    #[test]
    fn thousand_envelopes_timing() {
        let message = format!("Subject: t\n\n{}\n", "body line\n".repeat(200));
        let batches: Vec<Batch> = (0..1000)
            .map(|i| {
                batch(
                    &format!("l-bounces+{i}@l.org"),
                    &format!("m{i}@x.org"),
                    "X-U: 1\n",
                )
            })
            .collect();
        for pipelining in [true, false] {
            let (addr, sink) = Sink::start(pipelining);
            let started = Instant::now();
            let (result, _) = run(addr, &batches, message.as_bytes());
            let elapsed = started.elapsed();
            assert_eq!(result.expect("inject").sent, 1000);
            assert_eq!(sink.taken().len(), 1000);
            eprintln!(
                "1,000 envelopes of {} bytes, pipelining={pipelining}: {elapsed:?}",
                message.len()
            );
        }
    }

    #[test]
    fn injector_setting() {
        assert!(matches!(
            Injector::parse("smtp:127.0.0.1:10026"),
            Ok(Injector::Smtp { .. })
        ));
        assert!(matches!(
            Injector::parse("sendmail"),
            Ok(Injector::Sendmail { ref program }) if program == Path::new("/usr/sbin/sendmail")
        ));
        assert!(Injector::parse("sendmail:/opt/sm").is_ok());
        for bad in ["smtp:localhost", "sendmail:relative", "lmtp:x", "sendmailx"] {
            assert!(Injector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sendmail_injection_passes_arguments_and_stops_on_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("calls");
        let script = dir.path().join("sendmail");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$@\" >> {log}\ncat >> {log}\ncase \"$*\" in *fail-*) exit 75;; esac\nexit 0\n",
                log = log.display()
            ),
        )
        .expect("write script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let batches = [
            batch("l-bounces+1@l.org", "a@x.org", "X-A: 1\n"),
            batch("l-bounces+2@l.org", "fail-b@x.org", "X-B: 2\n"),
            batch("l-bounces+3@l.org", "c@x.org", "X-C: 3\n"),
        ];
        let mut seen = Vec::new();
        let result = inject_sendmail(&script, &batches, b"Subject: t\n\nbody\n", &mut |r, _| {
            seen.push(r.to_string());
            Ok(())
        });
        assert!(
            matches!(result, Err(InjectError::Sendmail(ref m)) if m.contains("75")),
            "{result:?}"
        );
        assert_eq!(seen, ["a@x.org"]);
        let calls = std::fs::read_to_string(&log).expect("log");
        assert!(
            calls.starts_with("-i -f l-bounces+1@l.org -- a@x.org\nX-A: 1\nSubject: t\n\nbody\n"),
            "{calls}"
        );
        assert!(!calls.contains("c@x.org"));
    }

    /// Undoes the wire form: CRLF to LF, one leading dot removed.
    fn from_wire(wire: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(wire).replace("\r\n", "\n");
        text.split_inclusive('\n')
            .map(|l| l.strip_prefix('.').unwrap_or(l))
            .collect::<String>()
            .into_bytes()
    }

    proptest::proptest! {
        #[test]
        fn wire_form_round_trips(text in "([.a-z ]{0,5}\n){0,8}[.a-z]{0,3}") {
            let wire = to_wire(text.as_bytes(), true);
            // No line of the wire form is a lone "." (the end of DATA).
            proptest::prop_assert!(!wire.split(|&b| b == b'\n').any(|l| l == b".\r"));
            let mut want = text.clone().into_bytes();
            if !want.is_empty() && !want.ends_with(b"\n") {
                want.push(b'\n');
            }
            proptest::prop_assert_eq!(from_wire(&wire), want);
        }
    }
}
