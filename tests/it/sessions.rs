//! `lowkey sessions list|show`, and sessions that stay readable after a torn write.

use crate::helpers::*;
use crate::support::*;
use serde_json::json;
use std::io::Write;

/// Sources `alpha` (agent `bot`, answers) and `beta` (agent `grumpy`, exits 3).
fn two_source_daemon() -> (Home, Daemon) {
    let home = Home::new();
    let bot = home.script(
        "bot.sh",
        r#"cat >/dev/null; echo "bot says hi to $LOWKEY_SOURCE""#,
    );
    let grumpy = home.script("grumpy.sh", "cat >/dev/null; echo 'no.'; exit 3");
    let project = home.project("proj");
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": {
            "bot": { "command": [bot], "timeoutSec": 30 },
            "grumpy": { "command": [grumpy], "timeoutSec": 30 }
        },
        "webhooks": {
            "alpha": { "project": project, "agent": "bot" },
            "beta": { "project": project, "agent": "grumpy" }
        }
    }));
    let daemon = home.serve();
    (home, daemon)
}

#[test]
fn sessions_list_shows_full_ids_newest_first_with_source_agent_and_status() {
    let (home, daemon) = two_source_daemon();
    let mut sessions = Vec::new();
    for source in ["alpha", "beta", "alpha"] {
        let (session, event) = accept(&daemon, source, r#"{"x":1}"#);
        daemon.wait_run_end(&event);
        sessions.push(session);
    }
    let newest_first: Vec<&str> = sessions.iter().rev().map(String::as_str).collect();

    let out = home.run(&["sessions", "list"]);
    assert_eq!(out.code, 0, "{out:?}");
    let mut rows = out.stdout.lines();
    let header = rows.next().unwrap();
    for column in ["ID", "SOURCE", "AGENT", "STATUS"] {
        assert!(header.contains(column), "no {column} column: {header}");
    }
    let rows: Vec<Vec<&str>> = rows.map(|r| r.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 3, "{}", out.stdout);
    let ids: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(ids, newest_first, "full ids, newest first:\n{}", out.stdout);
    assert_eq!(
        &rows[0][1..4],
        ["alpha", "bot", "answered"],
        "{}",
        out.stdout
    );
    assert_eq!(
        &rows[1][1..4],
        ["beta", "grumpy", "failed"],
        "{}",
        out.stdout
    );
    assert_eq!(
        &rows[2][1..4],
        ["alpha", "bot", "answered"],
        "{}",
        out.stdout
    );

    let out = home.run(&["sessions", "list", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let list = v.as_array().unwrap();
    let ids: Vec<&str> = list.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, newest_first);
    assert_eq!(list[1]["source"], "beta");
    assert_eq!(list[1]["agent"], "grumpy");
    assert_eq!(list[1]["status"], "failed");
    assert_eq!(list[0]["status"], "answered");

    // Every listed id is one `show` takes.
    for id in ids {
        assert_eq!(home.run(&["sessions", "show", id]).code, 0, "{id}");
    }
}

#[test]
fn sessions_list_and_show_latest_with_no_sessions_say_so() {
    let home = Home::with_agent("echo hi");
    let out = home.run(&["sessions", "list"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("no sessions"), "{out:?}");
    let out = home.run(&["sessions", "list", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap(),
        json!([])
    );
    let out = home.run(&["sessions", "show", "latest"]);
    assert_eq!(out.code, 66, "{out:?}");
    assert!(out.stderr.contains("no sessions yet"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

/// The shortest start of `id` that starts no other of `ids`, in any case.
fn unique_prefix(id: &str, ids: &[String]) -> String {
    (1..=id.len())
        .map(|n| &id[..n])
        .find(|start| {
            ids.iter()
                .filter(|other| other.to_lowercase().starts_with(&start.to_lowercase()))
                .count()
                == 1
        })
        .unwrap()
        .to_owned()
}

#[test]
fn sessions_show_takes_a_unique_prefix_in_any_case_and_lists_the_candidates_of_an_ambiguous_one() {
    let (home, daemon) = two_source_daemon();
    let mut ids = Vec::new();
    for source in ["alpha", "beta", "alpha"] {
        let (session, event) = accept(&daemon, source, r#"{"x":1}"#);
        daemon.wait_run_end(&event);
        ids.push(session);
    }
    for id in &ids {
        let whole = home.run(&["sessions", "show", id]);
        assert_eq!(whole.code, 0, "{whole:?}");
        let prefix = unique_prefix(id, &ids);
        assert!(prefix.len() < id.len(), "{prefix} of {ids:?}");
        for typed in [prefix.clone(), prefix.to_lowercase()] {
            let out = home.run(&["sessions", "show", &typed]);
            assert_eq!(out.code, 0, "{typed} of {id}: {out:?}");
            assert_eq!(out.stdout, whole.stdout, "{typed} shows {id}");
        }
        let out = home.run(&["sessions", "show", &prefix.to_lowercase(), "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        let lines: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(lines, home.session(id), "--json of {prefix}");
    }

    // Ids made within the same second share their start: it names all three.
    let shared: String = ids[0]
        .chars()
        .zip(ids[1].chars())
        .zip(ids[2].chars())
        .take_while(|((a, b), c)| a == b && b == c)
        .map(|((a, _), _)| a)
        .collect();
    assert!(!shared.is_empty(), "{ids:?}");
    let out = home.run(&["sessions", "show", &shared]);
    assert_eq!(out.code, 66, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        out.stderr.contains("3 sessions"),
        "says how many: {}",
        out.stderr
    );
    for id in &ids {
        assert!(
            out.stderr.contains(id.as_str()),
            "lists {id}: {}",
            out.stderr
        );
    }
}

#[test]
fn sessions_show_latest_is_the_most_recently_active_session() {
    let home = Home::with_agent(r#"cat >/dev/null; echo "seen $LOWKEY_EVENT_ID""#);
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.config_path()).unwrap()).unwrap();
    let project = config["webhooks"]["hook"]["project"].clone();
    config["webhooks"]["thread"] =
        json!({ "project": project, "agent": "bot", "target": "ops-thread" });
    home.write_config(&config);
    let daemon = home.serve();

    let (thread, first) = accept(&daemon, "thread", r#"{"n":1}"#);
    daemon.wait_run_end(&first);
    let (fresh, event) = accept(&daemon, "hook", r#"{"n":2}"#);
    daemon.wait_run_end(&event);
    let out = home.run(&["sessions", "show", "latest"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!("session {fresh}")),
        "{}",
        out.stdout
    );

    // A new event in the older session makes it the latest, though it was made first.
    let (_, last) = accept(&daemon, "thread", r#"{"n":3}"#);
    daemon.wait_run_end(&last);
    let out = home.run(&["sessions", "show", "latest", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(lines, home.session(&thread), "latest is {thread}");
    let list = home.run(&["sessions", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows[0]["id"], thread.as_str(), "the first row of the list");
}

#[test]
fn a_session_named_exactly_as_asked_wins_over_a_prefix_and_over_latest() {
    let home = Home::with_agent("cat >/dev/null; echo ok");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.config_path()).unwrap()).unwrap();
    let project = config["webhooks"]["hook"]["project"].clone();
    for (source, target) in [
        ("named", "latest"),
        ("short", "ops"),
        ("long", "ops-thread"),
    ] {
        config["webhooks"][source] =
            json!({ "project": project, "agent": "bot", "target": target });
    }
    home.write_config(&config);
    let daemon = home.serve();
    for source in ["named", "short", "long"] {
        let (_, event) = accept(&daemon, source, "{}");
        daemon.wait_run_end(&event);
    }

    for (typed, shown) in [
        ("ops", "ops"),
        ("ops-", "ops-thread"),
        ("OPS-T", "ops-thread"),
        ("latest", "latest"),
    ] {
        let out = home.run(&["sessions", "show", typed]);
        assert_eq!(out.code, 0, "{typed}: {out:?}");
        assert!(
            out.stdout.starts_with(&format!("session {shown}\n")),
            "{typed} shows {shown}: {}",
            out.stdout
        );
    }
    let out = home.run(&["sessions", "show", "op"]);
    assert_eq!(out.code, 66, "{out:?}");
    assert!(
        out.stderr.contains("ops-thread") && out.stderr.contains("ops "),
        "{}",
        out.stderr
    );
}

#[test]
fn sessions_show_prints_a_readable_transcript_and_json() {
    let (home, daemon) = two_source_daemon();
    let (session, event) = accept(&daemon, "alpha", r#"{"order":"A-17"}"#);
    daemon.wait_run_end(&event);
    let (failed, failed_event) = accept(&daemon, "beta", r#"{"order":"B-2"}"#);
    daemon.wait_run_end(&failed_event);

    let out = home.run(&["sessions", "show", &session]);
    assert_eq!(out.code, 0, "{out:?}");
    let text = &out.stdout;
    assert!(text.contains(&session), "{text}");
    assert!(
        text.contains(r#"Webhook from alpha: {"order":"A-17"}"#),
        "the webhook message: {text}"
    );
    assert!(
        text.contains("bot says hi to alpha"),
        "the agent's reply: {text}"
    );
    assert!(text.contains("finished"), "the run's end: {text}");
    assert!(
        !text.contains(r#"{"type""#),
        "readable, not raw JSON lines: {text}"
    );

    let out = home.run(&["sessions", "show", &failed]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("failed") && out.stdout.contains("exit 3"),
        "{}",
        out.stdout
    );

    let out = home.run(&["sessions", "show", &session, "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let lines = v.as_array().unwrap().clone();
    assert_eq!(
        lines,
        home.session(&session),
        "--json is the transcript's lines"
    );
    assert_eq!(lines[0]["type"], "session");
}

#[test]
fn sessions_show_of_an_unknown_id_exits_66_and_points_at_the_list() {
    let (home, daemon) = two_source_daemon();
    let (_, event) = accept(&daemon, "alpha", "{}");
    daemon.wait_run_end(&event);
    for id in ["01NOSUCHSESSION0000000000", "../config", "a/b"] {
        let out = home.run(&["sessions", "show", id]);
        assert_eq!(out.code, 66, "{id}: {out:?}");
        assert!(
            out.stderr.contains("sessions list"),
            "{id}: a helpful message: {out:?}"
        );
        assert!(out.stdout.is_empty(), "{id}: {out:?}");
    }
}

#[test]
fn a_torn_last_line_leaves_the_session_readable_and_appendable() {
    let home = Home::with_agent(r#"cat >/dev/null; echo "seen $LOWKEY_EVENT_ID""#);
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.config_path()).unwrap()).unwrap();
    config["webhooks"]["hook"]["target"] = json!("support-inbox");
    home.write_config(&config);
    let daemon = home.serve();
    let (session, e1) = accept(&daemon, "hook", r#"{"n":1}"#);
    assert_eq!(session, "support-inbox");
    daemon.wait_run_end(&e1);

    // A crash mid-write leaves half a line, without its newline.
    let file = home.sessions().join("support-inbox.jsonl");
    let torn = r#"{"type":"message","role":"agent","text":"half a rep"#;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(torn.as_bytes())
        .unwrap();

    // Readable as it is.
    let out = home.run(&["sessions", "show", "support-inbox"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(&format!("seen {e1}")), "{}", out.stdout);
    assert_eq!(home.run(&["sessions", "list"]).code, 0);

    // And the next event lands in it, intact.
    let (_, e2) = accept(&daemon, "hook", r#"{"n":2}"#);
    assert!(daemon.wait_run_end(&e2).contains("run finished"));
    let text = std::fs::read_to_string(&file).unwrap();
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
        .collect();
    assert_eq!(
        bad,
        vec![torn],
        "only the torn line is unreadable, alone on its line:\n{text}"
    );
    let lines = home.session("support-inbox");
    assert_eq!(
        shape(&lines),
        vec![
            "session".to_owned(),
            format!("user {e1}"),
            format!("run started {e1}"),
            format!("agent {e1}"),
            format!("run finished {e1}"),
            format!("user {e2}"),
            format!("run started {e2}"),
            format!("agent {e2}"),
            format!("run finished {e2}"),
        ],
        "{text}"
    );

    let out = home.run(&["sessions", "show", "support-inbox"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(r#"Webhook from hook: {"n":2}"#),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(&format!("seen {e2}")), "{}", out.stdout);
    let out = home.run(&["sessions", "show", "support-inbox", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let json_lines: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json_lines.len(), 9);
}

#[test]
fn a_torn_line_cut_inside_a_character_keeps_the_session_readable() {
    // A crash can cut a line anywhere, also between the bytes of one character: the
    // file then is not even valid UTF-8 any more.
    let home = Home::with_agent(r#"cat >/dev/null; echo "réponse à $LOWKEY_EVENT_ID""#);
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.config_path()).unwrap()).unwrap();
    config["webhooks"]["hook"]["target"] = json!("euro-desk");
    home.write_config(&config);
    let daemon = home.serve();
    let (_, e1) = accept(&daemon, "hook", r#"{"price":"10€"}"#);
    daemon.wait_run_end(&e1);

    let file = home.sessions().join("euro-desk.jsonl");
    let mut torn = br#"{"type":"message","role":"agent","text":"co"#.to_vec();
    torn.extend_from_slice(&"€".as_bytes()[..2]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(&torn)
        .unwrap();

    let (_, e2) = accept(&daemon, "hook", r#"{"price":"20€"}"#);
    assert!(daemon.wait_run_end(&e2).contains("run finished"));

    let bytes = std::fs::read(&file).unwrap();
    let good: Vec<serde_json::Value> = bytes
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    assert_eq!(good.len(), 9, "every whole line still parses");
    assert_eq!(
        good.last().unwrap()["status"],
        "finished",
        "the new run is recorded after the torn line"
    );
    let out = home.run(&["sessions", "show", "euro-desk"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!("réponse à {e2}")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(r#"{"price":"20€"}"#), "{}", out.stdout);
    let list = home.run(&["sessions", "list", "--json"]);
    assert_eq!(list.code, 0, "{list:?}");
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows[0]["id"], "euro-desk");
    assert_eq!(rows[0]["status"], "answered");
    assert_eq!(rows[0]["events"], 2);
}
