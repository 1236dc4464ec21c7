//! The expander's log: `tracing` events, each sent to syslog (`/dev/log`)
//! as one datagram, where pipe(8)'s commands must log (Postfix discards
//! their output when they exit 0). Without syslog (a container, a test)
//! a line goes to stderr instead.

use std::io::Write;
use tracing_subscriber::fmt::MakeWriter;

/// Sends the expander's `tracing` events to syslog; call once in `main`.
/// Inside the milter the library's events go to the milter's own log.
pub fn init() {
    let _ = tracing_subscriber::fmt()
        .with_writer(Syslog)
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

/// Makes one [`Datagram`] per event.
struct Syslog;

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = Datagram;

    fn make_writer(&'a self) -> Datagram {
        Datagram(Vec::new())
    }
}

/// One formatted event, sent when the formatter is done with it.
struct Datagram(Vec<u8>);

impl Write for Datagram {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Datagram {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let line = text.trim_end_matches('\n');
        if !line.is_empty() {
            send(line);
        }
    }
}

/// Sends `line` to syslog as mail.info, printable and bounded.
fn send(line: &str) {
    use std::os::unix::net::UnixDatagram;
    let text = format!(
        "<22>listwarden-expand[{}]: {}",
        std::process::id(),
        crate::reply_line(line)
    );
    let sent = UnixDatagram::unbound().and_then(|s| s.send_to(text.as_bytes(), "/dev/log"));
    if sent.is_err() {
        eprintln!("{line}");
    }
}
