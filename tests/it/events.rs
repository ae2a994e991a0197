//! `lowkey events` (recent events and what became of them) and `lowkey rerun` (an
//! event's agent run again, as a new event of the same session), against the real
//! daemon.

use crate::helpers::*;
use crate::support::*;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// Sources `alpha` (agent `bot`: notes its stdin, answers), `beta` (agent `grumpy`:
/// exits 3) and `gamma` (agent `gated`: one at a time, each waiting at `gate`). The
/// agents write what they read on stdin to `<out>/<event>.stdin` and note each run in
/// `<out>/runs`.
fn three_sources() -> (Home, Gate, std::path::PathBuf) {
    let home = Home::new();
    let out = out_dir(&home);
    let gate = Gate::new(&home, "gate");
    let note = format!(
        r#"cat > "{o}/$LOWKEY_EVENT_ID.stdin"; echo "$LOWKEY_EVENT_ID" >> "{o}/runs""#,
        o = out.display()
    );
    let bot = home.script("bot.sh", &format!("{note}\necho answered"));
    let grumpy = home.script("grumpy.sh", &format!("{note}\necho no; exit 3"));
    let gated = home.script(
        "gated.sh",
        &format!("{note}\n{}\necho let go", gate.wait_sh()),
    );
    let project = home.project("proj");
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": {
            "bot": { "command": [bot], "timeoutSec": 30 },
            "grumpy": { "command": [grumpy], "timeoutSec": 30 },
            "gated": { "command": [gated], "timeoutSec": 120, "maxConcurrent": 1 }
        },
        "webhooks": {
            "alpha": { "project": project, "agent": "bot" },
            "beta": { "project": project, "agent": "grumpy" },
            "gamma": { "project": project, "agent": "gated" }
        }
    }));
    (home, gate, out)
}

/// `lowkey events --json` with `args`, parsed.
fn events_json(home: &Home, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events", "--json"];
    all.extend_from_slice(args);
    let out = home.run(&all);
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn ids(rows: &[Value]) -> Vec<&str> {
    rows.iter().map(|r| r["event"].as_str().unwrap()).collect()
}

/// The events each agent run noted, in order.
fn runs(out: &std::path::Path) -> Vec<String> {
    read_text(&out.join("runs"))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `lowkey rerun` against `daemon`; the new event's id from what it prints.
fn rerun(home: &Home, daemon: &Daemon, event: &str) -> Output {
    home.run(&["rerun", event, "--url", &daemon.url("")])
}

/// The new event's id in `lowkey rerun`'s output.
fn new_event(out: &Output) -> String {
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout
        .split_whitespace()
        .skip_while(|w| *w != "event")
        .nth(1)
        .unwrap_or_else(|| panic!("no new event in {out:?}"))
        .to_owned()
}

#[test]
fn events_lists_recent_events_newest_first_with_their_outcomes() {
    let (home, gate, _out) = three_sources();
    let daemon = home.serve();
    let (s_alpha, e_alpha) = accept(&daemon, "alpha", r#"{"n":1}"#);
    daemon.wait_run_end(&e_alpha);
    let (s_beta, e_beta) = accept(&daemon, "beta", r#"{"n":2}"#);
    daemon.wait_run_end(&e_beta);
    // The first gamma event runs and waits at the gate; the second waits behind it
    // (maxConcurrent 1).
    let (s_g1, e_g1) = accept(&daemon, "gamma", r#"{"n":3}"#);
    daemon.wait_log("for the gated run to start", |l| {
        l.contains("run started") && l.contains(&e_g1)
    });
    let (s_g2, e_g2) = accept(&daemon, "gamma", r#"{"n":4}"#);

    let rows = events_json(&home, &[]);
    assert_eq!(ids(&rows), [&e_g2, &e_g1, &e_beta, &e_alpha], "{rows:#?}");
    let by = |i: usize, key: &str| rows[i][key].clone();
    assert_eq!(
        [
            by(0, "outcome"),
            by(1, "outcome"),
            by(2, "outcome"),
            by(3, "outcome")
        ],
        [
            json!("queued"),
            json!("running"),
            json!("failed"),
            json!("ok")
        ]
    );
    assert_eq!(by(2, "exitCode"), json!(3), "{rows:#?}");
    assert_eq!(
        [
            by(0, "session"),
            by(1, "session"),
            by(2, "session"),
            by(3, "session")
        ],
        [json!(s_g2), json!(s_g1), json!(s_beta), json!(s_alpha)]
    );
    assert_eq!(
        [by(0, "source"), by(2, "source"), by(3, "source")],
        [json!("gamma"), json!("beta"), json!("alpha")]
    );
    assert!(
        rows.iter()
            .all(|r| r["at"].as_str().is_some_and(|at| at.ends_with('Z')))
    );
    assert!(rows.iter().all(|r| r.get("rerunOf").is_none()), "{rows:#?}");

    // The table: full ids, and the outcome in words.
    let out = home.run(&["events"]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    for column in ["EVENT", "SOURCE", "RECEIVED", "OUTCOME", "SESSION"] {
        assert!(
            lines[0].contains(column),
            "no {column} column: {}",
            lines[0]
        );
    }
    let firsts: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(firsts, [&e_g2, &e_g1, &e_beta, &e_alpha], "{}", out.stdout);
    assert!(lines[3].contains("failed (exit 3)"), "{}", out.stdout);
    assert!(lines[3].contains(&s_beta), "{}", out.stdout);
    assert!(lines[4].contains(" ok "), "{}", out.stdout);

    let rows = events_json(&home, &["--source", "beta"]);
    assert_eq!(ids(&rows), [&e_beta]);
    let rows = events_json(&home, &["--limit", "2"]);
    assert_eq!(ids(&rows), [&e_g2, &e_g1]);
    let out = home.run(&["events", "--source", "nosuch"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("no events"), "{out:?}");

    gate.open();
    daemon.wait_run_end(&e_g2);
    let rows = events_json(&home, &["--source", "gamma"]);
    assert_eq!(ids(&rows), [&e_g2, &e_g1]);
    assert!(rows.iter().all(|r| r["outcome"] == "ok"), "{rows:#?}");
}

/// With a `new_session` source, a file per event: `--limit` still gives the newest
/// events, and reads only the newest files.
#[test]
fn events_limit_gives_the_newest_events_of_many_sessions() {
    let (home, _gate, _out) = three_sources();
    let daemon = home.serve();
    let mut events = Vec::new();
    for n in 0..6 {
        let (_, event) = accept(&daemon, "alpha", &format!(r#"{{"n":{n}}}"#));
        daemon.wait_run_end(&event);
        events.push(event);
    }
    events.reverse();
    assert_eq!(ids(&events_json(&home, &["--limit", "3"])), events[..3]);
    assert_eq!(ids(&events_json(&home, &[])), events);

    // An old session that cannot be read (a folder in its file's place, last changed
    // an hour ago) is no obstacle to the newest three, which are certain without it;
    // listing all of them reads it, and says so.
    let oldest = home.sessions().join(format!(
        "{}.jsonl",
        events_json(&home, &[])[5]["session"].as_str().unwrap()
    ));
    std::fs::remove_file(&oldest).unwrap();
    std::fs::create_dir(&oldest).unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::open(&oldest)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    assert_eq!(ids(&events_json(&home, &["--limit", "3"])), events[..3]);
    let out = home.run(&["events"]);
    assert_eq!(out.code, 74, "{out:?}");
    assert!(out.stderr.contains("cannot read"), "{out:?}");
}

#[test]
fn rerun_runs_the_same_payload_again_in_the_same_session_as_a_new_event() {
    let (home, _gate, out) = three_sources();
    let daemon = home.serve();
    let payload = r#"{"type":"invoice.paid","id":"evt_1"}"#;
    let (session, original) = accept(&daemon, "alpha", payload);
    daemon.wait_run_end(&original);
    let (_, other) = accept(&daemon, "beta", r#"{"other":true}"#);
    daemon.wait_run_end(&other);

    let all = [original.clone(), other.clone()];
    let answer = rerun(
        &home,
        &daemon,
        &unique_prefix(&original, &all).to_lowercase(),
    );
    let again = new_event(&answer);
    assert!(answer.stdout.contains(&session), "{answer:?}");
    assert_ne!(again, original);
    let end = daemon.wait_run_end(&again);
    assert!(end.contains("run finished"), "{end}");
    daemon.wait_log("about the rerun", |l| {
        l.contains("rerun accepted") && l.contains(&again) && l.contains(&original)
    });

    // The agent got the same message on stdin, twice, in the same session.
    let stdin = |event: &str| read_text(&out.join(format!("{event}.stdin")));
    assert_eq!(stdin(&again), stdin(&original));
    assert_eq!(stdin(&again), format!("Webhook from alpha: {payload}"));
    let lines = home.session(&session);
    let users: Vec<&Value> = of_type(&lines, "message")
        .into_iter()
        .filter(|l| l["role"] == "user")
        .collect();
    assert_eq!(users.len(), 2, "{lines:#?}");
    assert_eq!(users[1]["event"], again.as_str());
    assert_eq!(users[1]["rerunOf"], original.as_str());
    assert_eq!(users[1]["body"], payload);
    assert_eq!(users[1]["source"], "alpha");
    assert!(users[0].get("rerunOf").is_none(), "{lines:#?}");
    assert!(
        shape(&lines).contains(&format!("run finished {again}")),
        "{lines:#?}"
    );

    // `lowkey events` shows the rerun as its own row, linked to the original.
    let rows = events_json(&home, &[]);
    assert_eq!(ids(&rows), [&again, &other, &original], "{rows:#?}");
    assert_eq!(rows[0]["rerunOf"], original.as_str());
    assert_eq!(rows[0]["session"], session.as_str());
    assert_eq!(rows[0]["outcome"], "ok");
    let table = home.run(&["events", "--limit", "1"]);
    assert!(
        table.stdout.lines().nth(1).unwrap().ends_with(&original),
        "{table:?}"
    );

    // A prefix both ids start with names neither: the candidates are listed.
    let common: String = original
        .chars()
        .zip(other.chars())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a)
        .collect();
    let out = rerun(&home, &daemon, &common);
    assert_eq!(out.code, 66, "{out:?}");
    assert!(
        out.stderr.contains(&original) && out.stderr.contains(&other),
        "{out:?}"
    );
    assert_eq!(runs(&out_dir(&home)).len(), 3, "nothing more ran");
}

/// The shortest start of `id` that starts no other of `ids`.
fn unique_prefix(id: &str, ids: &[String]) -> String {
    (1..=id.len())
        .map(|n| &id[..n])
        .find(|start| ids.iter().filter(|other| other.starts_with(start)).count() == 1)
        .unwrap()
        .to_owned()
}

#[test]
fn a_rerun_answered_202_runs_after_a_kill_9_once() {
    let (home, gate, out) = three_sources();
    gate.open();
    let daemon = home.serve();
    let (session, original) = accept(&daemon, "gamma", r#"{"n":1}"#);
    daemon.wait_run_end(&original);
    // A second event holds `gated` (maxConcurrent 1), so the rerun waits in the queue.
    gate.close();
    let (_, blocker) = accept(&daemon, "gamma", r#"{"n":2}"#);
    daemon.wait_log("for the blocker's run", |l| {
        l.contains("run started") && l.contains(&blocker)
    });
    wait_for("the blocker's agent", || {
        runs(&out).contains(&blocker).then_some(())
    });
    let again = new_event(&rerun(&home, &daemon, &original));
    daemon.signal(Signal::SIGKILL);
    assert_eq!(daemon.wait_exit(), None);
    drop(daemon);
    assert!(
        !runs(&out).contains(&again),
        "the rerun ran before the kill"
    );

    gate.open();
    let daemon = home.serve();
    let end = daemon.wait_run_end(&again);
    assert!(end.contains("run finished"), "{end}");
    daemon.wait_run_end(&blocker);
    let ran: Vec<String> = runs(&out).into_iter().filter(|e| *e == again).collect();
    assert_eq!(ran.len(), 1, "{:?}", runs(&out));
    let lines = home.session(&session);
    let messages: Vec<&Value> = of_type(&lines, "message")
        .into_iter()
        .filter(|l| l["event"] == again.as_str() && l["role"] == "user")
        .collect();
    assert_eq!(messages.len(), 1, "{lines:#?}");
    assert_eq!(messages[0]["rerunOf"], original.as_str());
}

#[test]
fn rerun_without_a_daemon_exits_69_and_of_an_unknown_event_66() {
    let (home, _gate, _out) = three_sources();
    let daemon = home.serve();
    let (_, event) = accept(&daemon, "alpha", "{}");
    daemon.wait_run_end(&event);
    let url = daemon.url("");
    daemon.signal(Signal::SIGTERM);
    daemon.wait_exit();

    let out = home.run(&["rerun", &event, "--url", &url]);
    assert_eq!(out.code, 69, "{out:?}");
    assert!(out.stderr.contains("cannot reach lowkey"), "{out:?}");

    let out = home.run(&["rerun", "01ZZZZZZZZ", "--url", &url]);
    assert_eq!(out.code, 66, "{out:?}");
    assert!(out.stderr.contains("no event \"01ZZZZZZZZ\""), "{out:?}");
}

#[test]
fn the_rerun_route_takes_only_the_key_and_says_what_is_wrong() {
    let (home, _gate, _out) = three_sources();
    let daemon = home.serve();
    let (session, event) = accept(&daemon, "alpha", "{}");
    daemon.wait_run_end(&event);
    let addr = daemon.addr.clone().unwrap();
    let body = json!({ "session": session }).to_string();

    // A wrong key gets the very 401 a webhook gets.
    let exchange = |path: &str, key: &str| {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let (status, text) = raw_exchange(&addr, head, body.clone().into_bytes()).unwrap();
        let text: Vec<&str> = text
            .split("\r\n")
            .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
            .collect();
        (status, text.join("\r\n"))
    };
    let rerun_path = format!("/api/events/{event}/rerun");
    let refused = exchange(&rerun_path, "lk_wrong");
    assert_eq!(refused.0, 401, "{refused:?}");
    assert_eq!(refused, exchange("/api/webhook/alpha", "lk_wrong"));
    daemon.wait_log("about the refused rerun", |l| {
        l.contains("rerun request rejected") && l.contains("wrong API key")
    });

    let post = |path: &str, body: &str| {
        request(
            "POST",
            &daemon.url(path),
            &[("Authorization", &format!("Bearer {KEY}"))],
            body.as_bytes(),
        )
    };
    let unknown = post("/api/events/01NOSUCH/rerun", &body);
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(
        error_text(&unknown).contains("no event \"01NOSUCH\""),
        "{unknown:?}"
    );
    let no_session = post(&rerun_path, r#"{"session":"nosuch"}"#);
    assert_eq!(no_session.status, 404, "{no_session:?}");
    assert!(error_text(&no_session).contains("no session \"nosuch\""));
    let bad = post(&rerun_path, r#"{"event":1}"#);
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(error_text(&bad).contains("\"session\""), "{bad:?}");
    let get = request("GET", &daemon.url(&rerun_path), &[], b"");
    assert_eq!(get.status, 405, "{get:?}");

    // Failed keys count towards the address's throttle like any other.
    let throttled = (0..12).any(|_| exchange(&rerun_path, "lk_wrong").0 == 429);
    assert!(throttled, "no 429 after repeated wrong keys");
    assert_eq!(post(&rerun_path, &body).status, 202, "the key still passes");
}

#[test]
fn a_rerun_whose_agent_left_the_config_is_refused_naming_it() {
    let (home, _gate, _out) = three_sources();
    let daemon = home.serve();
    let (_, event) = accept(&daemon, "beta", "{}");
    daemon.wait_run_end(&event);
    // `grumpy` goes; `beta` now runs `bot`.
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(home.config_path()).unwrap()).unwrap();
    config["agents"].as_object_mut().unwrap().remove("grumpy");
    config["webhooks"]["beta"]["agent"] = json!("bot");
    home.write_config(&config);
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("for the reload", |l| l.contains("reloaded"));

    let out = rerun(&home, &daemon, &event);
    assert_eq!(out.code, 69, "{out:?}");
    assert!(out.stderr.contains("409"), "{out:?}");
    assert!(out.stderr.contains("agent \"grumpy\""), "{out:?}");
    assert!(out.stderr.contains("add it back under `agents`"), "{out:?}");
}

/// A rerun is for an event whose run has finished: one still waiting would run anyway,
/// and a rerun of it could start first, so it is refused (409, exit 69) until then. It
/// runs in its own source's project, also when its session was made by another source.
#[test]
fn a_rerun_waits_for_the_run_to_finish_and_runs_in_its_sources_project() {
    let home = Home::new();
    let out = out_dir(&home);
    let gate = Gate::new(&home, "gate");
    let agent = home.script(
        "where.sh",
        &format!(
            "cat >/dev/null; pwd > \"{}/$LOWKEY_EVENT_ID.pwd\"\n{}\necho done",
            out.display(),
            gate.wait_sh()
        ),
    );
    let (first, second) = (home.project("first"), home.project("second"));
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": { "where": { "command": [agent], "timeoutSec": 120 } },
        "webhooks": {
            "one": { "project": first, "agent": "where", "target": "ops" },
            "two": { "project": second, "agent": "where", "target": "ops" }
        }
    }));
    let daemon = home.serve();
    let (session, held) = accept(&daemon, "one", r#"{"n":1}"#);
    let (_, waiting) = accept(&daemon, "two", r#"{"n":2}"#);
    wait_for("the waiting event's message in its session", || {
        let lines = home.session(&session);
        of_type(&lines, "message")
            .iter()
            .any(|l| l["event"] == waiting.as_str())
            .then_some(())
    });
    let refused = rerun(&home, &daemon, &waiting);
    assert_eq!(refused.code, 69, "{refused:?}");
    assert!(refused.stderr.contains("has not finished"), "{refused:?}");

    gate.open();
    daemon.wait_run_end(&held);
    daemon.wait_run_end(&waiting);
    let again = new_event(&rerun(&home, &daemon, &waiting));
    daemon.wait_run_end(&again);
    let pwd = |event: &str| read_text(&out.join(format!("{event}.pwd")));
    assert_eq!(pwd(&again), pwd(&waiting));
    assert_eq!(pwd(&again).trim_end(), second);
    assert_ne!(pwd(&held), pwd(&again));
}
