//! RFC 8058 one-click over the metrics server: a POST unsubscribes, a GET
//! never does (link scanners fetch every URL).

use listwarden::metrics::{Metrics, UnsubscribeHandler, spawn_http_with};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

fn request(addr: std::net::SocketAddr, text: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(text.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// (query, body) of each request the handler saw.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

#[test]
fn post_reaches_the_handler_and_get_does_not() {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let handler: UnsubscribeHandler = Arc::new(move |query: &str, body: &[u8]| {
        log.lock().unwrap().push((query.to_string(), body.to_vec()));
        (200, "unsubscribed\n".into())
    });
    let addr = spawn_http_with(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(Metrics::new()),
        Some(handler),
    )
    .unwrap();

    let body = "List-Unsubscribe=One-Click";
    let post = format!(
        "POST /unsubscribe?list=members&m=bob%40example.net&t=lw-1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = request(addr, &post);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [(
            "list=members&m=bob%40example.net&t=lw-1".to_string(),
            body.as_bytes().to_vec()
        )]
    );

    let get = "GET /unsubscribe?list=members&m=bob%40example.net&t=lw-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert!(request(addr, get).starts_with("HTTP/1.1 405"));
    assert_eq!(seen.lock().unwrap().len(), 1, "a GET never unsubscribes");

    let big = format!(
        "POST /unsubscribe?x HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\nConnection: close\r\n\r\n{}",
        "a".repeat(10_000)
    );
    assert!(request(addr, &big).starts_with("HTTP/1.1 413"));
}

#[test]
fn without_a_handler_there_is_no_unsubscribe_endpoint() {
    let addr = spawn_http_with(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(Metrics::new()),
        None,
    )
    .unwrap();
    let post =
        "POST /unsubscribe?x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert!(request(addr, post).starts_with("HTTP/1.1 405"));
}
