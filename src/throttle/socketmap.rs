//! Postfix's socketmap protocol (socketmap_table(5)): one netstring
//! request `NAME KEY`, one netstring reply `OK value`, `NOTFOUND `,
//! `TEMP reason`, `TIMEOUT reason` or `PERM reason`. Postfix keeps the
//! connection open for many lookups.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Postfix's own limit on a reply; requests are far shorter (an address).
pub const MAX_REQUEST: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum SocketmapError {
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a netstring: {0}")]
    Frame(&'static str),
}

/// Encodes one netstring: `LEN:DATA,`.
pub fn netstring(data: &str) -> Vec<u8> {
    let mut out = format!("{}:", data.len()).into_bytes();
    out.extend_from_slice(data.as_bytes());
    out.push(b',');
    out
}

/// Reads one netstring; `Ok(None)` at a clean end of stream.
pub async fn read_netstring<R: AsyncBufRead + Unpin>(
    r: &mut R,
) -> Result<Option<Vec<u8>>, SocketmapError> {
    let mut len_text = Vec::with_capacity(8);
    // The length: at most 6 digits (MAX_REQUEST), then `:`.
    let n = (&mut *r).take(8).read_until(b':', &mut len_text).await?;
    if n == 0 {
        return Ok(None);
    }
    if len_text.pop() != Some(b':') || len_text.is_empty() {
        return Err(SocketmapError::Frame("bad length"));
    }
    let len: usize = std::str::from_utf8(&len_text)
        .ok()
        .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or(SocketmapError::Frame("bad length"))?;
    if len > MAX_REQUEST {
        return Err(SocketmapError::Frame("too long"));
    }
    let mut data = vec![0; len + 1];
    r.read_exact(&mut data).await?;
    if data.pop() != Some(b',') {
        return Err(SocketmapError::Frame("no trailing comma"));
    }
    Ok(Some(data))
}

/// Splits a request into (name, key).
pub fn parse_request(data: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(data).ok()?;
    text.split_once(' ')
}

/// Serves lookups on one connection until it closes; `answer` maps
/// (name, key) to the reply text (`OK ...`, `NOTFOUND `, ...).
pub async fn serve<S>(
    stream: S,
    answer: impl Fn(&str, &str) -> String,
) -> Result<(), SocketmapError>
where
    S: tokio::io::AsyncRead + AsyncWrite + Unpin,
{
    let (read, mut write) = tokio::io::split(stream);
    let mut read = tokio::io::BufReader::new(read);
    while let Some(request) = read_netstring(&mut read).await? {
        let reply = match parse_request(&request) {
            Some((name, key)) => answer(name, key),
            None => "PERM bad request".to_string(),
        };
        write.write_all(&netstring(&reply)).await?;
        write.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_and_replies_round_trip() {
        let (client, server) = tokio::io::duplex(1024);
        let task = tokio::spawn(serve(server, |name, key| {
            if name == "transport" && key == "yahoo.com" {
                "OK slow:".into()
            } else {
                "NOTFOUND ".into()
            }
        }));
        let (r, mut w) = tokio::io::split(client);
        let mut r = tokio::io::BufReader::new(r);
        w.write_all(b"19:transport yahoo.com,21:transport a@yahoo.com,")
            .await
            .unwrap();
        assert_eq!(read_netstring(&mut r).await.unwrap().unwrap(), b"OK slow:");
        assert_eq!(read_netstring(&mut r).await.unwrap().unwrap(), b"NOTFOUND ");
        drop(w);
        drop(r);
        assert!(task.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_broken_frame_ends_the_connection_with_an_error() {
        for bad in [&b"x:abc,"[..], b"3:abc;", b"99999999999:", b"1000001:"] {
            let mut r = tokio::io::BufReader::new(bad);
            assert!(read_netstring(&mut r).await.is_err(), "{bad:?}");
        }
        let mut empty = tokio::io::BufReader::new(&b""[..]);
        assert!(read_netstring(&mut empty).await.unwrap().is_none());
    }
}
