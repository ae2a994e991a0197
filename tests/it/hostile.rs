//! The network side of the fault campaign: requests framed to smuggle a second webhook
//! past a proxy (the desync matrix), and clients that hold connections open by
//! sending slowly (slowloris). Raw TCP, because a well-behaved client cannot send them.

use crate::campaign::*;
use crate::helpers::proc_status_kib;
use crate::support::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// In the body of the smuggled webhook only: it must never reach a session.
const MARKER: &str = "smuggled-c0ffee";

/// A complete, valid webhook request that a desync would make lowkey read as a
/// second request.
fn smuggled() -> String {
    let body = format!(r#"{{"marker":"{MARKER}"}}"#);
    format!(
        "{}{body}",
        head(&format!("Content-Length: {}\r\n", body.len()))
    )
}

/// The head of a webhook request with the key, up to the framing headers, which
/// each case adds (`headers`, each ending in CRLF unless the case says otherwise).
fn head(headers: &str) -> String {
    format!(
        "POST /api/webhook/hook HTTP/1.1\r\nHost: lowkey\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\n{headers}\r\n"
    )
}

/// The matrix: a name and the bytes sent on one keep-alive connection.
fn desync_cases() -> Vec<(&'static str, String)> {
    let smuggled = smuggled();
    let chunked_then_smuggled = format!("0\r\n\r\n{smuggled}");
    let smuggled_in_a_chunk = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
    let cl = |body: &str| body.len();
    vec![
        // A proxy that frames by Content-Length forwards it all; one that frames by
        // chunks sees a second request after the empty chunked body.
        (
            "CL.TE",
            format!(
                "{}{chunked_then_smuggled}",
                head(&format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                    cl(&chunked_then_smuggled)
                ))
            ),
        ),
        // The other way round: Content-Length ends the body inside the chunk.
        (
            "TE.CL",
            format!(
                "{}{smuggled_in_a_chunk}",
                head("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n")
            ),
        ),
        (
            "two Content-Lengths",
            format!(
                "{}{chunked_then_smuggled}",
                head(&format!(
                    "Content-Length: 5\r\nContent-Length: {}\r\n",
                    cl(&chunked_then_smuggled)
                ))
            ),
        ),
        (
            "Content-Length list",
            format!(
                "{}{chunked_then_smuggled}",
                head(&format!(
                    "Content-Length: 5, {}\r\n",
                    cl(&chunked_then_smuggled)
                ))
            ),
        ),
        (
            "Content-Length with a sign",
            format!(
                "{}{chunked_then_smuggled}",
                head(&format!(
                    "Content-Length: +{}\r\n",
                    cl(&chunked_then_smuggled)
                ))
            ),
        ),
        (
            "TE chunked, identity",
            format!(
                "{}{chunked_then_smuggled}",
                head(&format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked, identity\r\n",
                    cl(&chunked_then_smuggled)
                ))
            ),
        ),
        (
            "TE identity, chunked",
            format!(
                "{}{chunked_then_smuggled}",
                head(&format!(
                    "Content-Length: {}\r\nTransfer-Encoding: identity, chunked\r\n",
                    cl(&chunked_then_smuggled)
                ))
            ),
        ),
        (
            "two TE headers",
            format!(
                "{}{chunked_then_smuggled}",
                head(&format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                    cl(&chunked_then_smuggled)
                ))
            ),
        ),
        (
            "TE obs-fold",
            format!(
                "{}{chunked_then_smuggled}",
                head(&format!(
                    "Content-Length: {}\r\nTransfer-Encoding:\r\n chunked\r\n",
                    cl(&chunked_then_smuggled)
                ))
            ),
        ),
        (
            "TE with a space before the colon",
            format!(
                "{}{chunked_then_smuggled}",
                head(&format!(
                    "Content-Length: {}\r\nTransfer-Encoding : chunked\r\n",
                    cl(&chunked_then_smuggled)
                ))
            ),
        ),
        (
            "TE xchunked",
            format!(
                "{}{chunked_then_smuggled}",
                head(&format!(
                    "Content-Length: {}\r\nTransfer-Encoding: xchunked\r\n",
                    cl(&chunked_then_smuggled)
                ))
            ),
        ),
        (
            "chunk extension",
            format!(
                "{}0;ext=\"x\r\n\r\n{smuggled}\"\r\n\r\n",
                head("Transfer-Encoding: chunked\r\n")
            ),
        ),
        (
            "chunk size overflow",
            format!(
                "{}10000000000000000{:x}\r\n{smuggled}\r\n0\r\n\r\n",
                head("Transfer-Encoding: chunked\r\n"),
                smuggled.len()
            ),
        ),
        (
            "chunk size with a bare LF",
            format!(
                "{}{:x}\n{smuggled}\r\n0\r\n\r\n",
                head("Transfer-Encoding: chunked\r\n"),
                smuggled.len()
            ),
        ),
        (
            "bare LF line endings",
            format!(
                "{}{chunked_then_smuggled}",
                head(&format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                    cl(&chunked_then_smuggled)
                ))
                .replace("\r\n", "\n")
            ),
        ),
        (
            "a request in the body",
            format!(
                "{}{smuggled}",
                head(&format!("Content-Length: {}\r\n", cl(&smuggled)))
            ),
        ),
    ]
}

/// Sends `bytes` on a fresh connection and reads what comes back until lowkey closes
/// the connection or is quiet for `quiet`. Returns the statuses of the answers, the
/// whole text, and whether lowkey closed.
fn exchange(addr: &str, bytes: &[u8], quiet: Duration) -> (Vec<u16>, String, bool) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(quiet)).unwrap();
    // lowkey may close before reading it all; what it answered is still to be read.
    let _ = stream.write_all(bytes);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false;
            }
            Err(_) => break true,
        }
    };
    let text = String::from_utf8_lossy(&got).into_owned();
    let statuses = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text[i + 9..].get(..3)?.parse().ok())
        .collect();
    (statuses, text, closed)
}

/// Every case is rejected (4xx) or read as one request, and the webhook hidden in it
/// is never accepted or run, whatever the framing trick.
#[test]
fn no_framing_trick_smuggles_a_second_webhook() {
    let home = Home::with_agent("cat >/dev/null; echo ok");
    let daemon = home.serve();
    let addr = daemon.addr.clone().unwrap();
    let cases = desync_cases();
    let answers: Vec<_> = std::thread::scope(|s| {
        let threads: Vec<_> = cases
            .iter()
            .map(|(_, bytes)| s.spawn(|| exchange(&addr, bytes.as_bytes(), Duration::from_secs(2))))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut acked = Vec::new();
    let mut wrong = Vec::new();
    for ((name, _), (statuses, text, closed)) in cases.iter().zip(&answers) {
        println!("desync {name}: answers {statuses:?}, closed {closed}");
        // One answer: lowkey read one request (a framing it refuses gets a 4xx and
        // the connection closed). No answer at all is a refusal only if it closed.
        if statuses.len() > 1 || (statuses.is_empty() && !closed) {
            wrong.push(format!(
                "{name}: answers {statuses:?}, closed {closed}: {text}"
            ));
        }
        for (i, _) in text.match_indices("HTTP/1.1 202") {
            let body = &text[i..];
            let json = &body[body.find("\r\n\r\n").unwrap() + 4..];
            let json = &json[..=json.find('}').unwrap()];
            acked.push(acked_ids(json));
        }
    }
    assert!(
        wrong.is_empty(),
        "read as more than one request: {wrong:#?}"
    );
    let tally = Tally::settle(&home, &acked, PATIENCE);
    let smuggled_runs = std::fs::read_dir(home.sessions())
        .unwrap()
        .filter(|e| {
            std::fs::read_to_string(e.as_ref().unwrap().path())
                .unwrap_or_default()
                .contains(MARKER)
        })
        .count();
    assert_eq!(smuggled_runs, 0, "the smuggled webhook reached a session");
    assert_eq!(
        daemon.count_log(|l| l.contains("webhook accepted")),
        acked.len(),
        "lowkey accepted a webhook it answered on no connection; log:\n{}",
        daemon.log_text()
    );
    tally.check("desync");
}

/// More slow connections than lowkey serves at once.
const SLOW_CONNECTIONS: usize = 1100;

/// Connections that send their request a byte at a time, a second apart: half stall
/// in the headers, half in the body of a webhook to a key source.
struct Slow {
    streams: Vec<TcpStream>,
}

impl Slow {
    fn open(addr: &str, n: usize) -> Slow {
        let streams = (0..n)
            .map(|i| {
                let mut stream = TcpStream::connect(addr).unwrap();
                let start = if i % 2 == 0 {
                    "POST /api/webhook/hook HTTP/1.1\r\nHost: lowkey\r\nX-Slow: ".to_owned()
                } else {
                    head("Content-Length: 1000\r\n")
                };
                stream.write_all(start.as_bytes()).unwrap();
                stream
            })
            .collect();
        Slow { streams }
    }

    /// One more byte on each connection still open; returns how many are.
    fn trickle(&mut self) -> usize {
        self.streams.retain_mut(|s| s.write_all(b"a").is_ok());
        self.streams.len()
    }
}

/// Slow connections, more of them than lowkey's cap on connections (1024), do not keep a
/// normal sender out (the quietest connection gives way to a new one), nor make
/// lowkey's memory grow without bound; in the long mode, lowkey cuts them all off once
/// its header and body timeouts have passed.
#[test]
fn slow_senders_do_not_keep_others_out() {
    let home = Home::with_agent("cat >/dev/null; echo ok");
    let daemon = home.serve();
    let addr = daemon.addr.clone().unwrap();
    let before = proc_status_kib(daemon.pid, "VmRSS");
    let mut slow = Slow::open(&addr, SLOW_CONNECTIONS);
    let mut acked = Vec::new();
    let mut slowest = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(rounds(3, 40) as u64);
    let mut open = slow.streams.len();
    while Instant::now() < deadline && open > 0 {
        let sent = Instant::now();
        let (status, body) = try_post(&addr, "hook", r#"{"n":1}"#).unwrap();
        slowest = slowest.max(sent.elapsed());
        assert_eq!(status, 202, "a normal webhook among slow senders: {body}");
        acked.push(acked_ids(&body));
        // The slow senders' pace, not a wait for lowkey.
        std::thread::sleep(Duration::from_secs(1));
        open = slow.trickle();
    }
    let grown = proc_status_kib(daemon.pid, "VmRSS").saturating_sub(before);
    println!(
        "slowloris: {} slow connections, slowest normal webhook {slowest:?}, RSS grew {grown} KiB, {open} still open",
        SLOW_CONNECTIONS
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a normal webhook waited {slowest:?}"
    );
    assert!(grown < 64 * 1024, "RSS grew {grown} KiB");
    if long_mode() {
        assert_eq!(
            open, 0,
            "slow connections outlived the header and body timeouts"
        );
    }
    Tally::settle(&home, &acked, PATIENCE).check("slowloris");
}
