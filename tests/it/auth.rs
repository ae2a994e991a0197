//! What a caller without valid auth can learn: nothing about which sources exist. An
//! unknown source, a source that wants the key, and a source on `"auth": "signature"`
//! must answer such a caller exactly alike, whatever its body looks like and however
//! slowly it comes.

use crate::helpers::*;
use crate::senders::*;
use crate::support::*;
use serde_json::json;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The three kinds of path, by a source name on each.
const PATHS: [&str; 3] = ["nosuch", PLAIN, "github-sig"];

/// Longer than lowkey's old drain of an unread body (2 s), after which a path that did
/// not read bodies answered while one that did was still waiting.
const STILL_WAITING: Duration = Duration::from_millis(2500);

/// The zoo, with `maxBodyBytes` 1000 so size limits are cheap to cross.
fn zoo() -> Zoo {
    Zoo::start_with(|config, _| config["maxBodyBytes"] = json!(1000), &[])
}

/// The same request head whatever the path: no key and a GitHub signature that does
/// not match, from a client address of its own so no test trips the failure throttle.
fn head(source: &str, framing: &str) -> String {
    format!(
        "POST /api/webhook/{source} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nX-Hub-Signature-256: sha256={}\r\nX-Forwarded-For: {}\r\n{framing}\r\nConnection: close\r\n\r\n",
        "0".repeat(64),
        fresh_client()
    )
}

/// The whole answer but its `Date`, which is the one header allowed to differ.
fn without_date(text: &str) -> String {
    text.split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("date:"))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Asserts every path answered the same, and with `status`; `answers` are by path.
#[track_caller]
fn assert_alike(what: &str, status: u16, answers: &[String]) {
    for (path, answer) in PATHS.iter().zip(answers) {
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what} to {path}: {answer}"
        );
        assert_eq!(
            answer, &answers[0],
            "{what}: {path} answers unlike {}",
            PATHS[0]
        );
    }
}

fn exchange(addr: &str, head: String, body: Vec<u8>) -> String {
    let (_, text) = raw_exchange(addr, head, body).expect("an answer");
    without_date(&text)
}

#[test]
fn every_path_answers_a_small_body_without_auth_alike() {
    let zoo = zoo();
    let addr = zoo.daemon.addr.clone().unwrap();
    let body = br#"{"a":1}"#;
    let answers: Vec<String> = PATHS
        .iter()
        .map(|path| {
            let framing = format!("Content-Length: {}", body.len());
            exchange(&addr, head(path, &framing), body.to_vec())
        })
        .collect();
    assert_alike("a small body", 401, &answers);
}

#[test]
fn every_path_answers_a_declared_length_over_the_limit_without_auth_alike() {
    let zoo = zoo();
    let addr = zoo.daemon.addr.clone().unwrap();
    let body = vec![b' '; 5000];
    let answers: Vec<String> = PATHS
        .iter()
        .map(|path| exchange(&addr, head(path, "Content-Length: 5000"), body.clone()))
        .collect();
    assert_alike("Content-Length 5000 over maxBodyBytes 1000", 413, &answers);
    assert!(answers[0].contains("maxBodyBytes"), "{}", answers[0]);
}

#[test]
fn every_path_answers_a_body_of_exactly_the_limit_without_auth_alike() {
    let zoo = zoo();
    let addr = zoo.daemon.addr.clone().unwrap();
    let body = format!(r#"{{"p":"{}"}}"#, "x".repeat(1000 - 8)).into_bytes();
    assert_eq!(body.len(), 1000);
    for (framing, sent) in [
        ("Content-Length: 1000", body.clone()),
        ("Transfer-Encoding: chunked", chunked(&body, 100)),
    ] {
        let answers: Vec<String> = PATHS
            .iter()
            .map(|path| exchange(&addr, head(path, framing), sent.clone()))
            .collect();
        // The limit itself is allowed, so what is refused is the missing auth.
        assert_alike(&format!("{framing}, maxBodyBytes exactly"), 401, &answers);
    }
}

#[test]
fn every_path_answers_a_chunked_body_over_the_limit_without_auth_alike() {
    let zoo = zoo();
    let addr = zoo.daemon.addr.clone().unwrap();
    let body = chunked(&[b' '; 5000], 500);
    let answers: Vec<String> = PATHS
        .iter()
        .map(|path| {
            exchange(
                &addr,
                head(path, "Transfer-Encoding: chunked"),
                body.clone(),
            )
        })
        .collect();
    assert_alike("a chunked body of 5000 bytes", 413, &answers);
}

#[test]
fn every_path_waits_for_a_slow_body_without_auth_alike() {
    let zoo = zoo();
    let addr = zoo.daemon.addr.clone().unwrap();
    let body = br#"{"half":1,"rest":2}"#;
    let (first, rest) = body.split_at(body.len() / 2);
    let framing = format!("Content-Length: {}", body.len());
    // All three at once, so the test waits STILL_WAITING once.
    let answers: Vec<String> = std::thread::scope(|s| {
        let senders: Vec<_> = PATHS
            .iter()
            .map(|path| {
                let (addr, framing) = (&addr, &framing);
                s.spawn(move || {
                    let mut stream = TcpStream::connect(addr).unwrap();
                    stream.write_all(head(path, framing).as_bytes()).unwrap();
                    stream.write_all(first).unwrap();
                    // Nothing may come back while the body is incomplete, on any path.
                    stream.set_read_timeout(Some(STILL_WAITING)).unwrap();
                    let mut byte = [0u8; 1];
                    match stream.read(&mut byte) {
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        other => panic!("{path} answered a half-sent body: {other:?}"),
                    }
                    stream.write_all(rest).unwrap();
                    stream.set_read_timeout(Some(PATIENCE)).unwrap();
                    let mut answer = Vec::new();
                    stream.read_to_end(&mut answer).unwrap();
                    without_date(&String::from_utf8_lossy(&answer))
                })
            })
            .collect();
        senders.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_alike("a body sent in two halves", 401, &answers);
}

/// However much a caller sends after its body was refused, lowkey reads a bounded part
/// of it (4 MiB) and then closes the connection, so a refused caller cannot keep it busy.
#[test]
fn a_refused_body_is_read_no_further_than_a_bound() {
    const SENT_AT_MOST: usize = 64 << 20;
    let zoo = zoo();
    let addr = zoo.daemon.addr.clone().unwrap();
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    let head = head("nosuch", "Content-Length: 1000000000");
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 64 << 10];
    let mut sent = 0;
    // The socket buffers on both ends take some megabytes more than lowkey reads.
    while sent <= SENT_AT_MOST {
        match stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) => {
                assert!(
                    matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
                    "after {sent} bytes: {e}"
                );
                return;
            }
        }
    }
    panic!("lowkey still read a refused body after {sent} bytes");
}
