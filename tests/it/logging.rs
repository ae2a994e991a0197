//! What lowkey's own log lines are made of when text from outside reaches them, and how
//! often it logs while it cannot accept connections.

use crate::helpers::*;
use crate::support::*;
use std::net::TcpStream;
use std::time::Instant;

/// Characters that end a line or rewrite the screen in some viewer: a log line that
/// holds one can be made to show a line lowkey never wrote.
fn breaks_a_line(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Every line lowkey wrote is one whole line: it starts with its timestamp and holds
/// nothing that would end it early in a terminal, a pager or a log viewer.
fn assert_every_line_whole(daemon: &Daemon) {
    let log = daemon.log_text();
    for line in log.lines() {
        assert!(
            line.len() > 20 && line[..4].bytes().all(|b| b.is_ascii_digit()) && &line[4..5] == "-",
            "a line that does not start with a timestamp: {line:?}"
        );
        assert!(!line.contains(breaks_a_line), "a raw control in {line:?}");
    }
}

#[test]
fn a_source_name_sent_without_a_key_cannot_forge_a_log_line() {
    let home = Home::with_agent("cat >/dev/null; echo ok");
    let daemon = home.serve();
    let addr = daemon.addr.clone().unwrap();
    // Sent as raw bytes in the request line (not percent-encoded), without a key, to no
    // such source. The HTTP parser refuses ASCII controls (400) but takes the rest as
    // they are: NEL, the line and paragraph separators, an 8-bit CSI, a bidi override.
    let forged = [
        ("q\rFORGED", None),
        ("q\u{1b}[2KFORGED", None),
        ("q\u{0}FORGED", None),
        ("q\u{7f}FORGED", None),
        ("q\u{85}FORGED", Some("q\\u{85}FORGED")),
        ("q\u{2028}FORGED", Some("q\\u{2028}FORGED")),
        ("q\u{2029}FORGED", Some("q\\u{2029}FORGED")),
        ("q\u{9b}2KFORGED", Some("q\\u{9b}2KFORGED")),
        ("q\u{202e}DEGROF", Some("q\\u{202e}DEGROF")),
    ];
    for (name, escaped) in forged {
        let head = format!(
            "POST /api/webhook/{name} HTTP/1.1\r\nHost: lowkey\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
        let (status, answer) = raw_exchange(&addr, head, b"{}".to_vec()).unwrap();
        let Some(escaped) = escaped else {
            assert_eq!(status, 400, "{name:?}: {answer}");
            continue;
        };
        assert_eq!(status, 401, "{name:?}: {answer}");
        let field = format!("webhook_source={escaped} ");
        daemon.wait_log(&format!("with {field}"), |l| {
            l.contains("webhook rejected") && l.contains(&field)
        });
    }
    assert_every_line_whole(&daemon);
}

#[test]
fn an_agent_cannot_forge_a_log_line_through_its_stderr() {
    let home = Home::with_agent(
        r#"cat >/dev/null
printf 'a\rFORGED1 \033[1Ab\302\205FORGED2 \342\200\250FORGED3 \342\200\251FORGED4 \302\233FORGED5 \342\200\256FORGED6 \\back \000\007\177end\n' >&2
echo ok"#,
    );
    let daemon = home.serve();
    let (session, event) = accept(&daemon, "hook", "{}");
    daemon.wait_run_end(&event);
    let tag = format!("session_id={session}");
    let line = daemon.wait_log("with the agent's stderr", |l| {
        l.contains("agent stderr:") && l.contains(&tag)
    });
    // Escaped once, at the source: a backslash the agent wrote shows doubled, so no
    // escape in the line can have been typed by the agent.
    let expected = "agent stderr: a\\rFORGED1 \\u{1b}[1Ab\\u{85}FORGED2 \\u{2028}FORGED3 \
                    \\u{2029}FORGED4 \\u{9b}FORGED5 \\u{202e}FORGED6 \\\\back \\u{0}\\u{7}\\u{7f}end ";
    assert!(line.contains(expected), "{line}");
    assert_every_line_whole(&daemon);
}

#[test]
fn accept_failures_are_logged_sparingly_and_serving_resumes() {
    let home = Home::with_agent("cat >/dev/null; echo ok");
    let daemon = home.serve();
    let addr = daemon.addr.clone().unwrap();
    // lowkey may have 64 files open from now on; it has fewer than half that open idle.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid))
        .unwrap()
        .count();
    assert!(fds < 32, "lowkey has {fds} files open while idle");
    let limit = std::process::Command::new("prlimit")
        .args(["--pid", &daemon.pid.to_string(), "--nofile=64:64"])
        .status()
        .unwrap();
    assert!(limit.success());
    // The kernel completes every connection; lowkey can take only some of them.
    let held: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let failed = |l: &str| l.contains("accept failed");
    let first = daemon.wait_log("about the first failed accept", failed);
    assert!(first.contains("Too many open files"), "{first}");
    assert!(first.contains("LimitNOFILE="), "{first}");
    let since = Instant::now();
    // lowkey retries ten times a second; the next line comes only after five seconds,
    // with the count of the failures meanwhile.
    let again = daemon.wait_log("about accept failing still", |l| {
        l.contains("accept failed") && l.contains("more times in the last")
    });
    assert!(since.elapsed().as_millis() >= 4500, "{:?}", since.elapsed());
    assert_eq!(daemon.count_log(failed), 2, "{}", daemon.log_text());
    let retries: u64 = again
        .split("failures=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no failures= in {again}"));
    assert!((10..=60).contains(&retries), "{again}");

    drop(held);
    daemon.wait_log("about accepting again", |l| {
        l.contains("accepting connections again")
    });
    let (_, event) = accept(&daemon, "hook", "{}");
    let end = daemon.wait_run_end(&event);
    assert!(end.contains("run finished"), "{end}");
}
