//! RFC 8058 one-click on its own listener: a POST unsubscribes, a GET
//! never does (link scanners fetch every URL), and `/metrics` is not there.

use listwarden::metrics::{Metrics, UnsubscribeHandler, spawn_http, spawn_unsubscribe_http};
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
    let handler: UnsubscribeHandler = Arc::new(move |query: &str, body: &[u8], _| {
        log.lock().unwrap().push((query.to_string(), body.to_vec()));
        (200, "unsubscribed\n".into())
    });
    let addr = spawn_unsubscribe_http("127.0.0.1:0".parse().unwrap(), handler).unwrap();

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

/// 13: one-click is not served beside /metrics, nor /metrics beside it.
#[test]
fn one_click_and_metrics_are_separate_listeners() {
    let metrics = spawn_http("127.0.0.1:0".parse().unwrap(), Arc::new(Metrics::new())).unwrap();
    let post = "POST /unsubscribe?x HTTP/1.1\r\nHost: x\r\nContent-Length: 26\r\nConnection: close\r\n\r\nList-Unsubscribe=One-Click";
    let answer = request(metrics, post);
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let unsub = one_click_server();
    let get = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert!(request(unsub, get).starts_with("HTTP/1.1 404"));
}

fn one_click_server() -> std::net::SocketAddr {
    let handler: UnsubscribeHandler =
        Arc::new(|_: &str, _: &[u8], _| (200, "unsubscribed\n".into()));
    spawn_unsubscribe_http("127.0.0.1:0".parse().unwrap(), handler).unwrap()
}

/// 13: a client that announces a body and never sends it is answered
/// (408) after the body timeout, not held for the connection's lifetime.
#[test]
fn a_stalled_body_times_out() {
    let addr = one_click_server();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    s.write_all(b"POST /unsubscribe?x HTTP/1.1\r\nHost: x\r\nContent-Length: 26\r\n\r\nList-")
        .unwrap();
    let started = std::time::Instant::now();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(12));
}

/// 13: one address may hold only a few connections; the next is closed.
#[test]
fn connections_per_address_are_capped() {
    let addr = one_click_server();
    let idle: Vec<std::net::TcpStream> = (0..16)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let _ = s.write_all(b"POST /unsubscribe?x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.is_empty(), "served past the cap: {out:?}");
    drop(idle);
}
