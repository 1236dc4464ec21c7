//! An SMTP client for the backscatter-storm path of `benches/postfix-e2e`:
//! smtp-source exits at the first refused recipient, and a storm is
//! nothing but refused recipients. Each message is one connection:
//! EHLO, MAIL FROM, one RCPT TO; DATA (the file, dot-stuffed) only when
//! the recipient is accepted; QUIT. Prints "accepted refused".
//!
//! Usage: storm-source -s SESSIONS -m MESSAGES -f FROM -t TO -F FILE HOST:PORT

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const USAGE: &str = "usage: storm-source -s SESSIONS -m MESSAGES -f FROM -t TO -F FILE HOST:PORT";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let (mut sessions, mut messages) = (1usize, 1usize);
    let (mut from, mut to, mut file, mut addr) = (String::new(), None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| anyhow::anyhow!(USAGE));
        match a.as_str() {
            "-s" => sessions = val()?.parse()?,
            "-m" => messages = val()?.parse()?,
            "-f" => from = val()?,
            "-t" => to = Some(val()?),
            "-F" => file = Some(val()?),
            _ if addr.is_none() && !a.starts_with('-') => addr = Some(a),
            _ => anyhow::bail!(USAGE),
        }
    }
    let (Some(to), Some(file), Some(addr)) = (to, file, addr) else {
        anyhow::bail!(USAGE)
    };
    let mut data = Vec::new();
    for line in std::fs::read_to_string(&file)?.lines() {
        if line.starts_with('.') {
            data.push(b'.');
        }
        data.extend_from_slice(line.as_bytes());
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    let script = Arc::new((
        format!("EHLO storm.example\r\nMAIL FROM:<{from}>\r\nRCPT TO:<{to}>\r\n"),
        data,
        addr,
    ));
    let next = Arc::new(AtomicUsize::new(0));
    let counts = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut tasks = Vec::new();
    for _ in 0..sessions.max(1) {
        let (script, next, counts) = (script.clone(), next.clone(), counts.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < messages {
                let accepted = one(&script.0, &script.1, &script.2).await?;
                counts[usize::from(!accepted)].fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "{} {}",
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed)
    );
    Ok(())
}

/// One message on its own connection; whether its recipient was accepted.
async fn one(envelope: &str, data: &[u8], addr: &str) -> anyhow::Result<bool> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    expect(&mut rd, '2').await?; // greeting
    // EHLO, MAIL and RCPT pipelined, as MTAs send them.
    wr.write_all(envelope.as_bytes()).await?;
    expect(&mut rd, '2').await?;
    expect(&mut rd, '2').await?;
    let accepted = reply(&mut rd).await?.starts_with('2');
    if accepted {
        wr.write_all(b"DATA\r\n").await?;
        expect(&mut rd, '3').await?;
        wr.write_all(data).await?;
        expect(&mut rd, '2').await?;
    }
    wr.write_all(b"QUIT\r\n").await?;
    let _ = reply(&mut rd).await;
    Ok(accepted)
}

/// The last line of the next (multi-line) reply.
async fn reply(rd: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> anyhow::Result<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if rd.read_line(&mut line).await? == 0 {
            anyhow::bail!("connection closed");
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line);
        }
    }
}

async fn expect(
    rd: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    class: char,
) -> anyhow::Result<()> {
    let r = reply(rd).await?;
    anyhow::ensure!(r.starts_with(class), "unexpected reply: {}", r.trim_end());
    Ok(())
}
