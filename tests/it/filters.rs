//! Filters (README.md, Filters): a source's `events` and `match` decide which
//! deliveries start work. One they leave out is authenticated, answered
//! `200 {"ignored": true, "reason": ...}`, logged with its reason, counted in the
//! status line, and dropped: no queue record, no session, no run, no dedup entry.
//! `lowkey check` refuses filters that can never match.

use crate::senders::*;
use crate::support::*;
use crate::systemd::Notify;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// Asserts the answer is the ignored one, with `reason`.
#[track_caller]
fn assert_ignored(answer: &Answer, reason: &str) {
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.json(),
        json!({ "ignored": true, "reason": reason }),
        "{answer:?}"
    );
}

/// The session files lowkey has written.
fn session_files(home: &Home) -> Vec<String> {
    match std::fs::read_dir(home.sessions()) {
        Ok(dir) => dir
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A GitHub delivery of `event` with `body`, signed by Octokit, as delivery `id`.
fn github(event: &str, body: &Value, id: &str) -> Delivery {
    let secret = Scheme::Github.secret(1);
    Delivery::signed(Scheme::Github, &secret, body.to_string(), now(), id)
        .with("X-GitHub-Event", event)
}

#[test]
fn github_deliveries_the_filters_leave_out_are_answered_ignored_and_leave_nothing() {
    let home = Zoo::home(|config, home| {
        let project = home.project("proj");
        let mut gh = source_config(
            Scheme::Github,
            Auth::Signature,
            &project,
            json!(Scheme::Github.secret(1)),
        );
        gh["events"] = json!(["pull_request", "issues"]);
        gh["match"] = json!({ "action": ["opened", "reopened"] });
        config["webhooks"] = json!({ "gh": gh });
    });
    let notify = Notify::new(&home);
    let (k, v) = notify.env();
    let daemon = serve_with_env(&home, &[(k, &v)]);

    let push_id = unique_id("gh");
    let push = github("push", &json!({ "ref": "refs/heads/main" }), &push_id);
    let reason = "event \"push\" is not in webhooks.gh.events";
    assert_ignored(&deliver(&daemon, "gh", &push), reason);
    // A redelivery of an ignored event is ignored again, not a duplicate.
    assert_ignored(&deliver(&daemon, "gh", &push), reason);
    let closed = github(
        "pull_request",
        &json!({ "action": "closed", "pull_request": { "number": 7 } }),
        &unique_id("gh"),
    );
    assert_ignored(
        &deliver(&daemon, "gh", &closed),
        "action is \"closed\", not one of [\"opened\",\"reopened\"] (webhooks.gh.match.action)",
    );
    // Filters apply only once the signature has passed.
    let forged = closed
        .clone()
        .with("X-Hub-Signature-256", &format!("sha256={}", "0".repeat(64)));
    assert_eq!(deliver(&daemon, "gh", &forged).status, 401);

    // A matching delivery, with the ignored push's delivery id: nothing remembered it.
    let opened = github(
        "pull_request",
        &json!({ "action": "opened", "pull_request": { "number": 7 } }),
        &push_id,
    );
    let answer = deliver(&daemon, "gh", &opened);
    assert_eq!(answer.status, 202, "{answer:?}");
    let session = answer.json()["session"].as_str().unwrap().to_owned();
    let event = answer.json()["event"].as_str().unwrap().to_owned();
    daemon.wait_run_end(&event);
    // Sessions are filed in the order events are stored, so had an ignored delivery
    // been stored, its session would be there by now.
    assert_eq!(session_files(&home), [format!("{session}.jsonl")]);
    assert_eq!(user_events(&home, &session), [event]);
    assert_eq!(daemon.count_log(|l| l.contains("run started")), 1);

    let ignored: Vec<String> = daemon
        .log_text()
        .lines()
        .filter(|l| l.contains("webhook ignored"))
        .map(str::to_owned)
        .collect();
    assert_eq!(ignored.len(), 3, "{}", daemon.log_text());
    for line in &ignored {
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.contains("webhook_source=gh"), "{line}");
        assert!(line.contains("http_status=200"), "{line}");
        assert!(line.contains("remote_addr="), "{line}");
    }
    // Each says why (the log's order of lines from different workers is not theirs).
    let with = |text: &str| ignored.iter().filter(|l| l.contains(text)).count();
    assert_eq!(with(&format!("reason={reason}")), 2, "{ignored:#?}");
    assert_eq!(with("(webhooks.gh.match.action)"), 1, "{ignored:#?}");
    notify.wait("a STATUS counting the ignored deliveries", 1, |m| {
        m.lines()
            .any(|l| l.starts_with("STATUS=") && l.contains(" · 3 ignored"))
    });
}

#[test]
fn stripe_events_are_taken_by_type_and_by_prefix() {
    let zoo = Zoo::start_with(
        |config, _| {
            config["webhooks"]["stripe-sig"]["events"] =
                json!(["customer.subscription.*", "invoice.paid"]);
        },
        &[],
    );
    let stripe = |kind: &str| {
        let id = unique_id("evt");
        let body = json!({ "id": id, "object": "event", "type": kind, "data": { "object": {} } });
        let secret = Scheme::Stripe.secret(1);
        Delivery::signed(Scheme::Stripe, &secret, body.to_string(), now(), &id)
    };
    for taken in ["customer.subscription.updated", "invoice.paid"] {
        let (_, event) = zoo.accept("stripe-sig", &stripe(taken));
        zoo.daemon.wait_run_end(&event);
    }
    for left_out in [
        "charge.failed",
        "customer.subscription",
        "invoice.paid.late",
    ] {
        assert_ignored(
            &zoo.post("stripe-sig", &stripe(left_out)),
            &format!("event \"{left_out}\" is not in webhooks.stripe-sig.events"),
        );
    }
    // Another source's filters are its own.
    zoo.accept("stripe-key", &stripe("charge.failed").with_key());
}

#[test]
fn slack_events_are_read_inside_the_callback_and_its_url_check_is_still_answered() {
    let zoo = Zoo::start_with(
        |config, _| config["webhooks"]["slack-sig"]["events"] = json!(["app_mention"]),
        &[],
    );
    let slack = |body: Value| {
        let id = unique_id("Ev");
        let secret = Scheme::Slack.secret(1);
        Delivery::signed(Scheme::Slack, &secret, body.to_string(), now(), &id)
    };
    let callback = |inner: &str| json!({ "type": "event_callback", "event_id": unique_id("Ev"), "event": { "type": inner } });
    let (_, event) = zoo.accept("slack-sig", &slack(callback("app_mention")));
    zoo.daemon.wait_run_end(&event);
    assert_ignored(
        &zoo.post("slack-sig", &slack(callback("message"))),
        "event \"message\" is not in webhooks.slack-sig.events",
    );
    // Slack's check that the URL is its own is no event; it is answered before filters.
    let check = zoo.post(
        "slack-sig",
        &slack(json!({ "type": "url_verification", "challenge": "3eZbrw1aB" })),
    );
    assert_eq!(check.status, 200, "{check:?}");
    assert_eq!(check.json(), json!({ "challenge": "3eZbrw1aB" }));
}

#[test]
fn match_takes_one_of_prefix_and_presence_and_an_event_header() {
    let zoo = Zoo::start_with(
        |config, home| {
            let project = home.project("proj");
            let with = |filters: Value| {
                let mut source = json!({ "project": project });
                source
                    .as_object_mut()
                    .unwrap()
                    .extend(filters.as_object().unwrap().clone());
                source
            };
            let sources = &mut config["webhooks"];
            sources["status"] = with(json!({ "match": { "status": ["down", "degraded", 5] } }));
            sources["tags"] = with(json!({ "match": { "ref": { "prefix": "refs/tags/v" } } }));
            sources["alerts"] = with(json!({
                "match": { "alert.id": { "present": true }, "alert.resolved_at": { "present": false } }
            }));
            sources["gitlab"] = with(json!({
                "eventHeader": "X-Gitlab-Event",
                "events": ["Push Hook", "Merge Request*"],
                // One token a day: a delivery that used it would leave none for the next.
                "rateLimit": { "perSecond": 0.00001, "burst": 1 }
            }));
        },
        &[],
    );
    // (source, body, X-Gitlab-Event, the reason it is ignored or None if taken)
    let cases: Vec<(&str, Value, Option<&str>, Option<String>)> = vec![
        ("status", json!({ "status": "down" }), None, None),
        ("status", json!({ "status": 5.0 }), None, None),
        (
            "status",
            json!({ "status": "up" }),
            None,
            Some("status is \"up\", not one of [\"down\",\"degraded\",5] (webhooks.status.match.status)".into()),
        ),
        (
            "status",
            json!({ "status": "x".repeat(5000) }),
            None,
            Some(format!(
                "status is \"{}\"…, not one of [\"down\",\"degraded\",5] (webhooks.status.match.status)",
                "x".repeat(64)
            )),
        ),
        ("tags", json!({ "ref": "refs/tags/v1.4.0" }), None, None),
        (
            "tags",
            json!({ "ref": "refs/heads/main" }),
            None,
            Some("ref is \"refs/heads/main\", not a string starting with \"refs/tags/v\" (webhooks.tags.match.ref)".into()),
        ),
        ("alerts", json!({ "alert": { "id": 3, "resolved_at": null } }), None, None),
        (
            "alerts",
            json!({ "alert": { "id": 3, "resolved_at": "2026-01-01" } }),
            None,
            Some("alert.resolved_at is \"2026-01-01\", not absent (webhooks.alerts.match.alert.resolved_at)".into()),
        ),
        (
            "alerts",
            json!({ "alert": {} }),
            None,
            Some("alert.id is absent, not present (webhooks.alerts.match.alert.id)".into()),
        ),
        (
            "gitlab",
            json!({}),
            Some("Pipeline Hook"),
            Some("event \"Pipeline Hook\" is not in webhooks.gitlab.events".into()),
        ),
        (
            "gitlab",
            json!({}),
            None,
            Some("the delivery names no event in the x-gitlab-event header (webhooks.gitlab.events)".into()),
        ),
        (
            "gitlab",
            json!({}),
            Some("Pipeline Hook"),
            Some("event \"Pipeline Hook\" is not in webhooks.gitlab.events".into()),
        ),
        // The deliveries left out above used none of the source's rate.
        ("gitlab", json!({}), Some("Merge Request Hook"), None),
    ];
    for (source, body, event, reason) in cases {
        let mut delivery = Delivery::unsigned(body.to_string()).with_key();
        if let Some(event) = event {
            delivery = delivery.with("X-Gitlab-Event", event);
        }
        match reason {
            None => {
                let (_, event) = zoo.accept(source, &delivery);
                zoo.daemon.wait_run_end(&event);
            }
            Some(reason) => assert_ignored(&zoo.post(source, &delivery), &reason),
        }
    }
    // The one token is gone now: rate limiting still applies to what passes.
    let push = Delivery::unsigned("{}")
        .with_key()
        .with("X-Gitlab-Event", "Push Hook");
    assert_eq!(zoo.post("gitlab", &push).status, 429);
}

#[test]
fn check_refuses_filters_that_can_never_match_naming_the_key() {
    let home = Zoo::home(|config, _| {
        let sources = &mut config["webhooks"];
        sources["github-sig"]["events"] = json!(["pull_requests"]);
        sources["stripe-sig"]["events"] = json!([]);
        sources["plain"]["match"] = json!({
            "pull_request": { "present": false },
            "pull_request.merged": true,
            "action": [],
        });
        sources["hmac-sha256-key"]["events"] = json!(["push"]);
    });
    let out = home.run(&["check"]);
    assert_eq!(out.code, 78, "{out:?}");
    for said in [
        // GitHub adds events: a name it is not known to send is only a warning.
        "warning: webhooks.github-sig.events[0]: \"pull_requests\" is not a GitHub webhook event; did you mean \"pull_request\"?",
        "error: webhooks.stripe-sig.events: an empty list lets no event through",
        "error: webhooks.plain.match.pull_request.merged: can never match",
        "error: webhooks.plain.match.action: an empty list matches nothing",
        "error: webhooks.hmac-sha256-key.events: lowkey cannot tell which event a delivery is",
    ] {
        assert!(out.stdout.contains(said), "{said}:\n{}", out.stdout);
    }
}

#[test]
fn a_reload_changes_the_filters_at_once_and_one_that_never_matches_keeps_the_old() {
    let mut config = Value::Null;
    let home = Zoo::home(|c, _| {
        c["webhooks"]["plain"]["match"] = json!({ "action": "opened" });
        config = c.clone();
    });
    let daemon = home.serve();
    let closed = Delivery::unsigned(r#"{"action":"closed"}"#).with_key();
    let reason = "action is \"closed\", not \"opened\" (webhooks.plain.match.action)";
    assert_ignored(&deliver(&daemon, PLAIN, &closed), reason);

    config["webhooks"]["plain"]["match"] = json!({ "action": ["opened", "closed"] });
    home.write_config(&config);
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("config reloaded", |l| l.contains("config reloaded"));
    assert_eq!(deliver(&daemon, PLAIN, &closed).status, 202);

    config["webhooks"]["plain"]["match"] = json!({ "action": [] });
    home.write_config(&config);
    daemon.signal(Signal::SIGHUP);
    let failed = daemon.wait_log("reload failed", |l| l.contains("config reload failed"));
    assert!(failed.contains("webhooks.plain.match.action"), "{failed}");
    assert_eq!(deliver(&daemon, PLAIN, &closed).status, 202);
    let labelled = Delivery::unsigned(r#"{"action":"labeled"}"#).with_key();
    assert_ignored(
        &deliver(&daemon, PLAIN, &labelled),
        "action is \"labeled\", not one of [\"opened\",\"closed\"] (webhooks.plain.match.action)",
    );
}
