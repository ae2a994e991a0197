//! The message an agent gets: `Webhook from <source>: <payload>`, the payload trimmed at
//! exactly 2000 Unicode characters with a visible note, and the full raw body kept.

use crate::helpers::*;
use crate::support::*;
use serde_json::json;
use std::path::PathBuf;

/// A daemon whose agent copies its stdin to `<out>/stdin-<event>`.
fn recording_daemon() -> (Home, PathBuf, Daemon) {
    let home = Home::new();
    let out = out_dir(&home);
    let agent = home.script(
        "agent.sh",
        &format!(
            r#"cat > "{}/stdin-$LOWKEY_EVENT_ID"; echo read"#,
            out.display()
        ),
    );
    let project = home.project("proj");
    home.write_config(&json!({
        "apiKey": KEY,
        "maxBodyBytes": 65536,
        "agents": { "bot": { "command": [agent], "timeoutSec": 30, "maxConcurrent": 4 } },
        "webhooks": { "hook": { "project": project, "agent": "bot" } }
    }));
    let daemon = home.serve();
    (home, out, daemon)
}

/// Sends `body`, waits for the run, and returns (the session's user message, the bytes
/// the agent read on stdin).
fn deliver(
    home: &Home,
    out: &std::path::Path,
    daemon: &Daemon,
    body: &str,
) -> (serde_json::Value, String) {
    let (session, event) = accept(daemon, "hook", body);
    let end = daemon.wait_run_end(&event);
    assert!(end.contains("run finished"), "{end}");
    let lines = home.session(&session);
    let user = of_type(&lines, "message")
        .into_iter()
        .find(|l| l["role"] == "user" && l["event"] == event.as_str())
        .unwrap_or_else(|| panic!("no user message for {event}: {lines:#?}"))
        .clone();
    let stdin =
        std::fs::read_to_string(out.join(format!("stdin-{event}"))).expect("agent wrote its stdin");
    (user, stdin)
}

#[test]
fn a_payload_of_exactly_2000_characters_is_passed_whole() {
    let (home, out, daemon) = recording_daemon();
    // 1 + 1996 + 1 + 1 + 1 = 2000 characters, the last two of them multi-byte before the quote.
    let body = format!("\"{}€🦀\"", "a".repeat(1996));
    assert_eq!(body.chars().count(), 2000);
    let (user, stdin) = deliver(&home, &out, &daemon, &body);
    let expected = format!("Webhook from hook: {body}");
    assert_eq!(user["text"], expected.as_str());
    assert_ne!(user["trimmed"], true, "{user}");
    assert_eq!(user["body"], body.as_str());
    assert_eq!(
        stdin, expected,
        "the agent's stdin is the session's message text"
    );
}

#[test]
fn a_payload_over_2000_characters_is_cut_after_2000_with_a_note_and_kept_whole() {
    let (home, out, daemon) = recording_daemon();
    let bodies = [
        // 2001 characters: 1999 ASCII, '€' as character 2000, then the closing quote.
        format!("\"{}€\"", "a".repeat(1998)),
        // 1999 ASCII, '€' as character 2000 and '🦀' as 2001: the cut falls between two
        // multi-byte characters.
        format!("\"{}€🦀\"", "a".repeat(1998)),
    ];
    assert_eq!(bodies[0].chars().count(), 2001);
    for body in bodies {
        let (user, stdin) = deliver(&home, &out, &daemon, &body);
        let text = user["text"].as_str().unwrap();
        let shown: String = body.chars().take(2000).collect();
        assert!(shown.ends_with('€'));
        let rest = text
            .strip_prefix(&format!("Webhook from hook: {shown}"))
            .unwrap_or_else(|| {
                panic!("message does not start with the first 2000 characters: {text:?}")
            });
        assert!(
            !rest.contains('🦀') && !rest.starts_with('"'),
            "more than 2000 characters shown: {rest:?}"
        );
        assert!(
            rest.contains("trimmed"),
            "no visible note after the cut: {rest:?}"
        );
        assert_eq!(user["trimmed"], true, "{user}");
        assert_eq!(user["body"], body.as_str(), "the full body is kept");
        assert_eq!(
            stdin, text,
            "the agent's stdin is the session's message text"
        );
    }
}

#[test]
fn a_long_payload_is_trimmed_but_the_raw_body_is_kept_byte_for_byte() {
    let (home, out, daemon) = recording_daemon();
    // Odd whitespace, key order that a re-serialiser would change, escapes, a duplicate
    // key, and multi-byte text spanning the cut.
    let filler = "ü".repeat(3000);
    let body = format!(
        "{{ \"zeta\" : 1,\n\t\"alpha\":[ 1 , 2.50 ,\"\\u00e9\" ],\r\n  \"dup\": 1, \"dup\": 2,\n  \"text\": \"{filler}\" }}\n"
    );
    let (user, stdin) = deliver(&home, &out, &daemon, &body);
    assert_eq!(
        user["body"],
        body.as_str(),
        "the session keeps the body as received"
    );
    let text = user["text"].as_str().unwrap();
    let shown: String = body.chars().take(2000).collect();
    assert!(
        text.starts_with(&format!("Webhook from hook: {shown}")),
        "{text:?}"
    );
    assert!(
        text.chars().count() < 2000 + 200,
        "trimmed message too long: {}",
        text.chars().count()
    );
    assert_eq!(user["trimmed"], true);
    assert_eq!(stdin, text);
}

#[test]
fn a_short_payload_reaches_the_agent_as_its_raw_text() {
    let (home, out, daemon) = recording_daemon();
    let body = "{\"b\":2,   \"a\" : [1,\n2]}";
    let (user, stdin) = deliver(&home, &out, &daemon, body);
    let expected = format!("Webhook from hook: {body}");
    assert_eq!(user["text"], expected.as_str());
    assert_eq!(user["body"], body);
    assert_eq!(user["source"], "hook");
    assert_eq!(stdin, expected);
}
