//! `target` templates: events about one PR or ticket share a session named from the
//! payload. The rule (src/config/template.rs): a missing, null, object or array field starts a
//! new session; other values are inserted with every character outside
//! `A-Z a-z 0-9 . _ -` replaced by `-`, and a result that is still not a session id
//! starts a new session. A `message` template fills the agent's message by the same
//! rule, with values as text and the default message where the payload does not fit.

use crate::helpers::of_type;
use crate::senders::*;
use serde_json::{Value, json};

fn template_zoo() -> Zoo {
    Zoo::start_with(
        |config, home| {
            let project = home.project("proj");
            let mut gh = source_config(
                Scheme::Github,
                Auth::Signature,
                &project,
                json!(Scheme::Github.secret(1)),
            );
            gh["target"] = json!("gh-pr-{{pull_request.number}}");
            let sources = &mut config["webhooks"];
            sources["gh-prs"] = gh;
            sources["tickets"] = json!({ "project": project, "target": "t-{{ticket.key}}" });
            sources["named"] = json!({ "project": project, "target": "{{name}}" });
        },
        &[],
    )
}

/// A fresh session id lowkey made up: a ULID.
fn is_new_session(id: &str) -> bool {
    id.len() == 26
        && id
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
}

#[test]
fn events_about_one_pull_request_share_its_session() {
    let zoo = template_zoo();
    let github = |body: Value| {
        let id = unique_id("gh");
        let body = body.to_string();
        Delivery::signed(Scheme::Github, &Scheme::Github.secret(1), body, now(), &id)
    };
    let pr = |n: u64, action: &str| {
        github(
            json!({ "action": action, "number": n, "pull_request": { "number": n, "title": "Fix ☕" } }),
        )
    };
    let mut events = Vec::new();
    for (delivery, want) in [
        (pr(7, "opened"), Some("gh-pr-7")),
        (pr(8, "opened"), Some("gh-pr-8")),
        (pr(7, "synchronize"), Some("gh-pr-7")),
        // No pull request in these: each starts a session of its own.
        (
            github(json!({ "zen": "Keep it logically awesome.", "hook_id": 1 })),
            None,
        ),
        (
            github(json!({ "action": "created", "pull_request": null })),
            None,
        ),
        (
            github(json!({ "action": "created", "pull_request": { "title": "no number" } })),
            None,
        ),
    ] {
        let (session, event) = zoo.accept("gh-prs", &delivery);
        match want {
            Some(want) => assert_eq!(session, want),
            None => assert!(is_new_session(&session), "{session}"),
        }
        events.push((session, event));
    }
    zoo.daemon
        .wait_log_count("of runs finished", events.len(), |l| {
            l.contains("run finished")
        });
    let ev = |i: usize| events[i].1.as_str();
    assert_eq!(user_events(&zoo.home, "gh-pr-7"), [ev(0), ev(2)]);
    assert_eq!(user_events(&zoo.home, "gh-pr-8"), [ev(1)]);
    let fresh: Vec<&str> = events[3..].iter().map(|(s, _)| s.as_str()).collect();
    for (i, session) in fresh.iter().enumerate() {
        assert_eq!(user_events(&zoo.home, session), [ev(3 + i)]);
        assert_eq!(fresh.iter().filter(|s| *s == session).count(), 1);
    }
}

#[test]
fn template_values_are_sanitised_or_start_a_new_session() {
    let zoo = template_zoo();
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        (
            "tickets",
            json!({ "ticket": { "key": "ABC-12" } }),
            Some("t-ABC-12"),
        ),
        (
            "tickets",
            json!({ "ticket": { "key": "ABC/12 ü" } }),
            Some("t-ABC-12--"),
        ),
        (
            "tickets",
            json!({ "ticket": { "key": "../../etc/passwd" } }),
            Some("t-..-..-etc-passwd"),
        ),
        (
            "tickets",
            json!({ "ticket": { "key": "a\nb\u{0}c" } }),
            Some("t-a-b-c"),
        ),
        ("tickets", json!({ "ticket": { "key": 42 } }), Some("t-42")),
        (
            "tickets",
            json!({ "ticket": { "key": true } }),
            Some("t-true"),
        ),
        (
            "tickets",
            json!({ "ticket": { "key": "x".repeat(200) } }),
            None,
        ),
        ("tickets", json!({ "ticket": { "key": null } }), None),
        ("tickets", json!({ "ticket": { "key": { "id": 1 } } }), None),
        ("tickets", json!({ "ticket": { "key": [1] } }), None),
        ("tickets", json!({ "ticket": "ABC-12" }), None),
        ("named", json!({ "name": "release.v2" }), Some("release.v2")),
        ("named", json!({ "name": "../x" }), None),
        ("named", json!({ "name": ".." }), None),
        ("named", json!({ "name": ".hidden" }), None),
        ("named", json!({ "name": "" }), None),
    ];
    let mut expected_files = Vec::new();
    for (source, body, want) in &cases {
        let delivery = Delivery::unsigned(body.to_string()).with_key();
        let (session, event) = zoo.accept(source, &delivery);
        match want {
            Some(want) => assert_eq!(&session, want, "{body}"),
            None => assert!(is_new_session(&session), "{body} made session {session}"),
        }
        zoo.daemon.wait_run_end(&event);
        assert!(user_events(&zoo.home, &session).contains(&event));
        expected_files.push(format!("{session}.jsonl"));
    }
    // Every session file is inside the sessions folder, named as answered; nothing
    // escaped it.
    let mut files: Vec<String> = std::fs::read_dir(zoo.home.sessions())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    expected_files.sort();
    assert_eq!(files, expected_files);
    assert!(!zoo.home.dir.path().join("etc").exists());
    assert!(!zoo.home.root().join("x.jsonl").exists());
}

/// A source's `message`: the agent reads the filled template on stdin, the session keeps
/// it as the message's text and the whole body beside it, and a payload that does not
/// fill the template gets the default message.
#[test]
fn a_message_template_is_what_the_agent_reads_and_the_body_stays_whole() {
    let zoo = Zoo::start_with(
        |config, home| {
            // The agent answers with what it read, so its reply shows its stdin.
            let echo = home.script("echo.sh", "cat");
            config["agents"]["echo"] = json!({ "command": [echo] });
            config["webhooks"]["billing"] = json!({
                "project": home.project("proj"),
                "agent": "echo",
                "message": "Stripe: {{type}} for {{data.object.amount}} {{data.object.currency}}",
            });
        },
        &[],
    );
    let filled = json!({
        "type": "invoice.paid",
        "data": { "object": { "amount": 1999, "currency": "eur", "lines": ["a"] } },
    })
    .to_string();
    let unfit = json!({ "type": "ping" }).to_string();
    // The event's session, once its run is over: its message line, and the reply.
    let deliver = |body: &str| {
        let (session, event) = zoo.accept("billing", &Delivery::unsigned(body).with_key());
        zoo.daemon.wait_run_end(&event);
        let lines = zoo.home.session(&session);
        let said = |role: &str| {
            of_type(&lines, "message")
                .into_iter()
                .find(|l| l["role"] == role)
                .unwrap()
                .clone()
        };
        (said("user"), said("agent"))
    };
    for (body, want) in [
        (&filled, "Stripe: invoice.paid for 1999 eur".to_owned()),
        (&unfit, format!("Webhook from billing: {unfit}")),
    ] {
        let (user, reply) = deliver(body);
        assert_eq!(user["text"], want.as_str());
        assert_eq!(
            user["body"],
            body.as_str(),
            "the full body stays in the session"
        );
        assert_eq!(reply["text"].as_str().unwrap().trim_end(), want);
    }
    zoo.daemon.wait_log("the fallback logged", |l| {
        l.contains("does not fill the message template")
    });

    // A filled message is cut as the default one is, with a note, and marked so.
    let long = "x".repeat(2100);
    let body = json!({ "type": long, "data": { "object": { "amount": 1, "currency": "eur" } } });
    let (user, _) = deliver(&body.to_string());
    let filled = format!("Stripe: {long} for 1 eur");
    assert_eq!(
        user["text"],
        format!(
            "{}\n[message trimmed: showing the first 2000 of {} characters; the full body is in the session file]",
            &filled[..2000],
            filled.len()
        )
        .as_str()
    );
    assert_eq!(user["trimmed"], true);
}
