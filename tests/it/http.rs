//! The HTTP table of README.md, row by row, against the real daemon.

use crate::helpers::*;
use crate::support::*;
use serde_json::json;

/// A body far over the limit (1000 bytes in these tests).
const BIG: usize = 1_000_000;

/// How a streaming sender paces its body in the 413 tests: ten pieces of 500 bytes, so
/// the limit is crossed at the third and the rest is still to come when a server that
/// does not read it would already have answered and closed.
const PACE: std::time::Duration = std::time::Duration::from_millis(40);

/// A daemon whose one source `hook` runs an agent held at `gate`, with `maxBodyBytes`
/// 1000 so size limits are cheap to cross.
fn gated_daemon() -> (Home, Gate, Daemon) {
    let home = Home::new();
    let gate = Gate::new(&home, "gate");
    let agent = home.script(
        "agent.sh",
        &format!("cat >/dev/null\n{}\necho ok", gate.wait_sh()),
    );
    let project = home.project("proj");
    home.write_config(&json!({
        "apiKey": KEY,
        "maxBodyBytes": 1000,
        "agents": { "bot": { "command": [agent], "timeoutSec": 120, "maxConcurrent": 4 } },
        "webhooks": { "hook": { "project": project, "agent": "bot" } }
    }));
    let daemon = home.serve();
    (home, gate, daemon)
}

#[test]
fn the_202_comes_only_once_the_event_is_in_the_queue_and_the_session_shows_it() {
    let (home, _gate, daemon) = gated_daemon();
    let body = r#"{"order": 4711}"#;
    let answer = post(&daemon, "hook", body);
    // Read the queue before anything else: what the sender was promised must already be
    // there when the promise arrives.
    let queue_text: String = std::fs::read_dir(home.root().join("queue"))
        .unwrap()
        .map(|e| read_text(&e.unwrap().path()))
        .collect();

    assert_eq!(answer.status, 202, "{answer:?}");
    let v = answer.json();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 2, "202 body is exactly {{session, event}}: {v}");
    assert!(v["session"].is_string(), "{v}");
    let event = v["event"].as_str().unwrap();
    assert!(
        queue_text.contains(event),
        "queue does not hold event {event}: {queue_text}"
    );
    assert!(
        queue_text.contains(&serde_json::to_string(body).unwrap()),
        "queue does not hold the body: {queue_text}"
    );

    // The session shows the event at once, whether or not its run has started.
    let lines = home.session(v["session"].as_str().unwrap());
    assert_eq!(lines[0]["type"], "session", "{lines:#?}");
    let user: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["type"] == "message" && l["role"] == "user")
        .collect();
    assert_eq!(user.len(), 1, "{lines:#?}");
    assert_eq!(user[0]["event"], event);
    assert_eq!(user[0]["body"], body);
}

#[test]
fn a_missing_wrong_or_non_bearer_key_gets_the_same_401_for_every_source() {
    let (_home, _gate, daemon) = gated_daemon();
    let body = br#"{"a":1}"#;
    let cases: [(&str, Option<String>); 5] = [
        ("no Authorization", None),
        (
            "wrong key",
            Some("Bearer lk_not_the_key_0000000000".to_owned()),
        ),
        ("key with a Basic scheme", Some(format!("Basic {KEY}"))),
        ("key with no scheme", Some(KEY.to_owned())),
        ("Bearer without a key", Some("Bearer".to_owned())),
    ];
    let mut seen = Vec::new();
    for (what, auth) in &cases {
        for source in ["hook", "no-such-source"] {
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            let answer = request(
                "POST",
                &daemon.url(&format!("/api/webhook/{source}")),
                &headers,
                body,
            );
            assert_eq!(answer.status, 401, "{what} to {source}: {answer:?}");
            let challenge = answer
                .header("www-authenticate")
                .unwrap_or_default()
                .to_owned();
            assert!(
                challenge.starts_with("Bearer"),
                "{what} to {source}: {answer:?}"
            );
            let text = error_text(&answer);
            seen.push((
                format!("{what} to {source}"),
                challenge,
                answer.body.clone(),
                text,
            ));
        }
    }
    let (first_what, first_challenge, first_body, _) = &seen[0];
    for (what, challenge, body, _) in &seen {
        assert_eq!(
            body, first_body,
            "401 body of {what} differs from {first_what}"
        );
        assert_eq!(
            challenge, first_challenge,
            "WWW-Authenticate of {what} differs from {first_what}"
        );
    }
    assert!(
        !first_body.contains("hook"),
        "401 names a source: {first_body}"
    );
    assert_eq!(daemon.count_log(|l| l.contains("webhook accepted")), 0);
}

#[test]
fn an_unknown_source_with_a_valid_key_is_404() {
    let (_home, _gate, daemon) = gated_daemon();
    let answer = post(&daemon, "nope", r#"{"a":1}"#);
    assert_eq!(answer.status, 404, "{answer:?}");
    let text = error_text(&answer);
    assert!(
        text.contains("nope"),
        "404 should name the source it did not find: {text}"
    );
}

fn head(framing: &str) -> String {
    format!(
        "POST /api/webhook/hook HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n"
    )
}

/// Checks a raw answer is a 413 with a JSON `{"error"}` body.
fn assert_413(what: &str, answer: std::io::Result<(u16, String)>) {
    let (status, text) =
        answer.unwrap_or_else(|e| panic!("{what}: the client got no answer, only: {e}"));
    assert_eq!(status, 413, "{what}: {text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
    assert!(v["error"].is_string(), "{what}: {text}");
}

#[test]
fn a_declared_content_length_over_max_body_bytes_is_413_and_the_limit_itself_passes() {
    let (_home, _gate, daemon) = gated_daemon();
    let addr = daemon.addr.clone().unwrap();
    // Exactly maxBodyBytes (1000) is accepted ...
    let at_limit = format!(r#"{{"p":"{}"}}"#, "x".repeat(1000 - 8));
    assert_eq!(at_limit.len(), 1000);
    let answer = post(&daemon, "hook", &at_limit);
    assert_eq!(
        answer.status, 202,
        "a body of exactly maxBodyBytes: {answer:?}"
    );
    // ... one byte more is not.
    let over = format!(r#"{{"p":"{}"}}"#, "x".repeat(1000 - 7));
    let answer = post(&daemon, "hook", &over);
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(
        error_text(&answer).contains("1000"),
        "413 should name the limit: {}",
        answer.body
    );

    // Far over, sent at once: the client writes all of it, then reads the 413.
    let big = format!(r#"{{"p":"{}"}}"#, "x".repeat(BIG - 8)).into_bytes();
    let framing = format!("Content-Length: {}", big.len());
    assert_413(
        "a 1 MB declared body",
        raw_exchange(&addr, head(&framing), big),
    );

    // Streamed: the length is declared up front, the body follows in pieces.
    let pieces: Vec<Vec<u8>> = vec![vec![b' '; 500]; 10];
    assert_413(
        "a 5000-byte declared body sent in pieces",
        raw_exchange_paced(&addr, head("Content-Length: 5000"), pieces, PACE),
    );
    assert_eq!(daemon.count_log(|l| l.contains("webhook accepted")), 1);
}

#[test]
fn a_chunked_body_over_max_body_bytes_is_413_not_a_reset() {
    let (_home, _gate, daemon) = gated_daemon();
    let addr = daemon.addr.clone().unwrap();
    let chunked_head = head("Transfer-Encoding: chunked");

    // Under the limit, chunked works like any body.
    let small = br#"{"chunked": true, "n": [1, 2, 3]}"#;
    let (status, text) = raw_exchange(&addr, chunked_head.clone(), chunked(small, 7)).unwrap();
    assert_eq!(status, 202, "{text}");

    // Just over the limit, and far over it, sent at once.
    for size in [1001, BIG] {
        let body = format!(r#"{{"p":"{}"}}"#, "y".repeat(size - 8));
        assert_eq!(body.len(), size);
        assert_413(
            &format!("a chunked body of {size} bytes"),
            raw_exchange(&addr, chunked_head.clone(), chunked(body.as_bytes(), 500)),
        );
    }

    // Streamed chunk by chunk: the limit is crossed while more is still coming.
    let body = vec![b' '; 5000];
    assert_413(
        "a chunked body of 5000 bytes sent chunk by chunk",
        raw_exchange_paced(&addr, chunked_head, chunked_pieces(&body, 500), PACE),
    );
    assert_eq!(daemon.count_log(|l| l.contains("webhook accepted")), 1);
}

#[test]
fn a_body_that_is_not_utf8_is_400_naming_the_byte_offset() {
    let (_home, _gate, daemon) = gated_daemon();
    let body = b"{\"a\":\"caf\xe9\"}";
    let answer = post_with(
        &daemon,
        "hook",
        &[("Content-Type", "application/json")],
        body,
    );
    assert_eq!(answer.status, 400, "{answer:?}");
    let text = error_text(&answer);
    assert!(text.contains("UTF-8"), "{text}");
    assert!(
        text.contains("offset 9"),
        "400 should name the byte offset 9: {text}"
    );
}

#[test]
fn a_body_that_is_not_json_is_400_with_the_parsers_line_and_column() {
    let (_home, _gate, daemon) = gated_daemon();
    let body = "{\n  \"a\": 1,\n  \"b\": ,\n}";
    let answer = post(&daemon, "hook", body);
    assert_eq!(answer.status, 400, "{answer:?}");
    let text = error_text(&answer);
    assert!(text.contains("JSON"), "{text}");
    assert!(
        text.contains("line 3 column 8"),
        "400 should say where: {text}"
    );

    for bad in ["", "not json", "{\"a\":1} trailing"] {
        let answer = post(&daemon, "hook", bad);
        assert_eq!(answer.status, 400, "{bad:?}: {answer:?}");
        error_text(&answer);
    }
    assert_eq!(daemon.count_log(|l| l.contains("webhook accepted")), 0);
}

#[test]
fn the_body_is_judged_by_its_bytes_not_its_content_type() {
    let (_home, _gate, daemon) = gated_daemon();
    let body = br#"{"via":"curl -d"}"#;
    for headers in [
        vec![("Content-Type", "text/plain")],
        vec![("Content-Type", "application/x-www-form-urlencoded")],
        vec![],
    ] {
        let answer = post_with(&daemon, "hook", &headers, body);
        assert_eq!(answer.status, 202, "{headers:?}: {answer:?}");
    }
    // A form labelled JSON is still a form; and a JSON label does not make a body that
    // is neither acceptable.
    let json = [("Content-Type", "application/json")];
    let answer = post_with(&daemon, "hook", &json, b"a=1&b=2");
    assert_eq!(answer.status, 202, "{answer:?}");
    let answer = post_with(&daemon, "hook", &json, b"a=1 b=2");
    assert_eq!(answer.status, 400, "{answer:?}");
}

#[test]
fn other_methods_on_a_webhook_path_are_405_with_allow_post() {
    let (_home, _gate, daemon) = gated_daemon();
    let auth = format!("Bearer {KEY}");
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        for source in ["hook", "no-such-source"] {
            let body: &[u8] = if method == "GET" { b"" } else { br#"{"a":1}"# };
            let answer = request(
                method,
                &daemon.url(&format!("/api/webhook/{source}")),
                &[("Authorization", &auth)],
                body,
            );
            assert_eq!(answer.status, 405, "{method} {source}: {answer:?}");
            assert_eq!(
                answer.header("allow"),
                Some("POST"),
                "{method} {source}: {answer:?}"
            );
            error_text(&answer);
        }
    }
    assert_eq!(daemon.count_log(|l| l.contains("webhook accepted")), 0);
}

#[test]
fn health_answers_200_without_auth_and_other_paths_answer_json_errors() {
    let (_home, _gate, daemon) = gated_daemon();
    let answer = request("GET", &daemon.url("/api/health"), &[], b"");
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json();

    let answer = request("GET", &daemon.url("/nowhere"), &[], b"");
    assert_eq!(answer.status, 404, "{answer:?}");
    error_text(&answer);
}

#[test]
fn a_burst_of_webhooks_logs_each_accepted_one_once_on_a_whole_line() {
    // Under load each worker collects its stderr lines and writes them out together:
    // none may be lost, repeated or torn, including any still collected at the stop.
    let home = Home::with_agent("#!/bin/sh\ncat >/dev/null\n");
    let daemon = home.serve();
    let events: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|sender| {
                let daemon = &daemon;
                s.spawn(move || {
                    (0..25)
                        .map(|n| accept(daemon, "hook", &format!(r#"{{"s":{sender},"n":{n}}}"#)).1)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(), Some(0));
    daemon.wait_log_end();
    for event in &events {
        let lines = daemon.count_log(|l| {
            l.contains("webhook accepted") && l.contains(&format!("event_id={event} "))
        });
        assert_eq!(lines, 1, "{event}: {}", daemon.log_text());
    }
    let log = daemon.log_text();
    for line in log.lines() {
        assert!(
            line.starts_with("20")
                && line.matches(" INFO ").count() + line.matches(" WARN ").count() <= 1,
            "a line not whole: {line}"
        );
    }
}

/// A wrong key a sender might send; it must never reach the log.
const SENT_WRONG_KEY: &str = "lk_sent_by_mistake_never_logged_42";

/// Waits for the "webhook rejected" line of `source` with `status` and a reason that
/// starts with `reason`, in the message and in the `reason` field.
#[track_caller]
fn assert_rejected(
    daemon: &Daemon,
    what: &str,
    answer: u16,
    status: u16,
    source: &str,
    reason: &str,
) {
    assert_eq!(answer, status, "{what}");
    daemon.wait_log(&format!("{what}: the reason {reason:?}"), |line| {
        line.contains(&format!("webhook rejected: {reason}"))
            && line.contains(&format!("webhook_source={source} "))
            && line.contains(&format!("http_status={status} "))
            && line.contains(&format!("reason={reason}"))
    });
}

#[test]
fn every_rejection_is_logged_with_its_reason_and_never_the_key_sent() {
    use crate::senders::{Delivery, Zoo, assert_same_401};
    let zoo = Zoo::start_with(
        |config, _| {
            config["maxBodyBytes"] = json!(1000);
            config["webhooks"]["limited"] = json!({
                "project": config["webhooks"]["plain"]["project"],
                "rateLimit": { "perSecond": 0.001, "burst": 1 }
            });
        },
        &[],
    );
    let daemon = &zoo.daemon;
    let addr = daemon.addr.clone().unwrap();
    let unsigned = || Delivery::unsigned(r#"{"a":1}"#);
    // Zoo::post sends each request from a fresh client address, so no failure here is
    // held back by the failed-login throttle; every 401 still looks like this one.
    let reference = zoo.no_key_401();
    let no_key = "no Authorization header";
    assert_rejected(daemon, "no key", 401, 401, "plain", no_key);

    for (what, source, delivery, reason) in [
        (
            "a Basic key",
            "plain",
            unsigned().with("Authorization", &format!("Basic {KEY}")),
            "Authorization is not a Bearer token",
        ),
        (
            "a wrong key",
            "plain",
            unsigned().with("Authorization", &format!("Bearer {SENT_WRONG_KEY}")),
            "wrong API key",
        ),
        (
            "an unknown source without a key",
            "nosuch",
            unsigned(),
            "unknown source, and no Authorization header",
        ),
        (
            "a bad GitHub signature",
            "github-sig",
            unsigned().with("X-Hub-Signature-256", &format!("sha256={}", "0".repeat(64))),
            "signature: no signature in header `x-hub-signature-256` matches any configured secret",
        ),
        (
            "no GitHub signature",
            "github-sig",
            unsigned(),
            "signature: missing header `x-hub-signature-256`",
        ),
    ] {
        let answer = zoo.post(source, &delivery);
        assert_same_401(&answer, &reference, what);
        assert_rejected(daemon, what, answer.status, 401, source, reason);
    }

    let answer = zoo.post("nosuch", &unsigned().with_key());
    assert_rejected(
        daemon,
        "the key to an unknown source",
        answer.status,
        404,
        "nosuch",
        "unknown source",
    );
    let answer = zoo.post("plain", &unsigned().with_key().with_body("nope"));
    assert_rejected(
        daemon,
        "not JSON",
        answer.status,
        400,
        "plain",
        "body is neither JSON nor a form: as JSON, expected ident at line 1 column 2; as a form (application/x-www-form-urlencoded), field 1 (at offset 0) has no `=`",
    );
    let answer = post_with(daemon, "plain", &[], b"{\"a\":\"caf\xe9\"}");
    assert_rejected(
        daemon,
        "not UTF-8",
        answer.status,
        400,
        "plain",
        "body is not UTF-8: invalid byte at offset 9",
    );
    let answer = post_with(daemon, "plain", &[], &[b' '; 5000]);
    assert_rejected(
        daemon,
        "a declared length over the limit",
        answer.status,
        413,
        "plain",
        "Content-Length 5000 is over maxBodyBytes (1000)",
    );
    let head = format!(
        "POST /api/webhook/plain HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let (status, _) = raw_exchange(&addr, head, chunked(&[b' '; 5000], 500)).unwrap();
    assert_rejected(
        daemon,
        "a chunked body over the limit",
        status,
        413,
        "plain",
        "body is over maxBodyBytes (1000)",
    );
    zoo.accept("limited", &unsigned().with_key());
    let answer = zoo.post("limited", &unsigned().with_key());
    assert_rejected(
        daemon,
        "over the rate limit",
        answer.status,
        429,
        "limited",
        "rate limit: over rateLimit (0.001/s, burst 1)",
    );

    let log = daemon.log_text();
    for secret in [SENT_WRONG_KEY, KEY] {
        assert!(!log.contains(secret), "{secret} reached the log:\n{log}");
    }
}

/// A source with `enabled: false` answers 410 to a caller with the key (Standard
/// Webhooks senders stop on 410), 401 to one without it (as any source), stores
/// nothing, and takes webhooks again once a reload enables it.
#[test]
fn a_disabled_source_answers_410_stores_nothing_and_a_reload_enables_it() {
    let home = Home::with_agent("cat >/dev/null; echo ok");
    let text = std::fs::read_to_string(home.config_path()).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["webhooks"]["hook"]["enabled"] = json!(false);
    home.write_config(&config);
    let daemon = home.serve();

    let answer = post(&daemon, "hook", r#"{"n":1}"#);
    assert_eq!(answer.status, 410, "{answer:?}");
    assert!(
        answer.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("webhooks.hook.enabled")),
        "{answer:?}"
    );
    let anonymous = request(
        "POST",
        &daemon.url("/api/webhook/hook"),
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    daemon.wait_log("the refusal logged with its reason", |l| {
        l.contains("source disabled")
    });
    let listed = home.run(&["sessions", "list", "--json"]);
    assert_eq!(listed.code, 0, "{listed:?}");
    assert_eq!(listed.stdout.trim(), "[]", "nothing stored: {listed:?}");

    config["webhooks"]["hook"]["enabled"] = json!(true);
    home.write_config(&config);
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_log("config reloaded", |l| l.contains("config reloaded"));
    let (_, event) = accept(&daemon, "hook", r#"{"n":2}"#);
    daemon.wait_run_end(&event);
}
