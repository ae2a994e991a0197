//! Run scheduling (`dispatch.rs` in ARCHITECTURE.md): the events of one session run in order, one
//! at a time, and `maxConcurrent` caps each agent.

use crate::helpers::*;
use crate::support::*;
use serde_json::json;
use std::collections::HashSet;
use std::path::PathBuf;

/// `start <event>` / `end <event>` lines an agent appended (each `>>` of one line is a
/// single atomic write), in the order they happened.
fn journal(path: &std::path::Path) -> Vec<(String, String)> {
    read_text(path)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(what, event)| (what.to_owned(), event.to_owned()))
        .collect()
}

/// An agent that appends `start <event>` to `<out>/journal`, runs `during`, appends
/// `end <event>`, then runs `reply`. Returns its path and the journal's.
fn journaling_agent(home: &Home, during: &str, reply: &str) -> (String, PathBuf) {
    let log = out_dir(home).join("journal");
    let agent = home.script(
        "agent.sh",
        &format!(
            r#"cat >/dev/null
echo "start $LOWKEY_EVENT_ID" >> "{l}"
{during}
echo "end $LOWKEY_EVENT_ID" >> "{l}"
{reply}"#,
            l = log.display()
        ),
    );
    (agent, log)
}

/// The most runs in flight at once according to a journal.
fn max_in_flight(journal: &[(String, String)]) -> usize {
    let mut running = HashSet::new();
    let mut max = 0;
    for (what, event) in journal {
        if what == "start" {
            assert!(
                running.insert(event.clone()),
                "{event} started twice: {journal:?}"
            );
            max = max.max(running.len());
        } else {
            assert!(
                running.remove(event),
                "{event} ended without a start: {journal:?}"
            );
        }
    }
    max
}

#[test]
fn events_of_one_session_run_in_acceptance_order_one_at_a_time() {
    let home = Home::new();
    // Slow enough that a second run of the session would overlap if one were started.
    let (agent, log) = journaling_agent(&home, "sleep 0.2", r#"echo "answered $LOWKEY_EVENT_ID""#);
    let project = home.project("proj");
    home.write_config(&json!({
        "apiKey": KEY,
        // The cap would allow overlap; only the session's order may prevent it.
        "agents": { "bot": { "command": [agent], "timeoutSec": 30, "maxConcurrent": 4 } },
        "webhooks": { "uptime": { "project": project, "agent": "bot", "target": "uptime-incidents" } }
    }));
    let daemon = home.serve();
    assert!(!home.sessions().join("uptime-incidents.jsonl").exists());

    let mut events = Vec::new();
    for n in 0..5 {
        let (session, event) = accept(&daemon, "uptime", &format!(r#"{{"n":{n}}}"#));
        assert_eq!(
            session, "uptime-incidents",
            "a fixed target is the session of every event"
        );
        events.push(event);
    }
    for event in &events {
        daemon.wait_run_end(event);
    }

    let expected = one_after_another(&events);
    assert_eq!(
        journal(&log),
        expected,
        "runs out of acceptance order or overlapping"
    );

    // One session, created by the first event, every later event appended to it.
    let lines = home.session("uptime-incidents");
    assert_eq!(of_type(&lines, "session").len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["type"], "session");
    assert_eq!(lines[0]["id"], "uptime-incidents");
    let users: Vec<&str> = of_type(&lines, "message")
        .into_iter()
        .filter(|l| l["role"] == "user")
        .map(|l| l["event"].as_str().unwrap())
        .collect();
    assert_eq!(users, events.iter().map(String::as_str).collect::<Vec<_>>());
    for (n, event) in events.iter().enumerate() {
        let user = lines
            .iter()
            .position(|l| l["role"] == "user" && l["event"] == event.as_str())
            .unwrap();
        let reply = lines
            .iter()
            .position(|l| l["role"] == "agent" && l["event"] == event.as_str())
            .unwrap_or_else(|| panic!("no reply to event {n}: {lines:#?}"));
        assert!(reply > user, "reply before its message: {lines:#?}");
        assert_eq!(lines[user]["body"], format!(r#"{{"n":{n}}}"#));
        assert_eq!(lines[reply]["text"], format!("answered {event}"));
    }
    let names: Vec<_> = std::fs::read_dir(home.sessions()).unwrap().collect();
    assert_eq!(names.len(), 1, "one session file");
}

#[test]
fn max_concurrent_caps_an_agent_and_is_used_when_there_is_a_backlog() {
    let home = Home::new();
    let out = out_dir(&home);
    // Each run waits for its own release file, so the test decides when it ends.
    let wait = wait_file_sh(&format!("{}/release-$LOWKEY_EVENT_ID", out.display()));
    let (agent, log) = journaling_agent(&home, &wait, "echo ok");
    let project = home.project("proj");
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": { "bot": { "command": [agent], "timeoutSec": 120, "maxConcurrent": 2 } },
        "webhooks": { "hook": { "project": project, "agent": "bot", "target": "new_session" } }
    }));
    let daemon = home.serve();
    let events: Vec<String> = (0..6)
        .map(|n| accept(&daemon, "hook", &format!(r#"{{"n":{n}}}"#)).1)
        .collect();
    let release = |event: &str| std::fs::write(out.join(format!("release-{event}")), b"").unwrap();
    // Whatever happens, let every run go at the end.
    struct ReleaseAll<'a>(&'a [String], &'a std::path::Path);
    impl Drop for ReleaseAll<'_> {
        fn drop(&mut self) {
            for e in self.0 {
                let _ = std::fs::write(self.1.join(format!("release-{e}")), b"");
            }
        }
    }
    let _release_all = ReleaseAll(&events, &out);

    let mut released = HashSet::new();
    loop {
        let j = journal(&log);
        let ended = j.iter().filter(|(w, _)| w == "end").count();
        if ended == events.len() {
            break;
        }
        // With a backlog, two runs must be going at once; at the tail, whatever is left.
        let left = events.len() - ended;
        let want = left.min(2);
        let j = wait_for(
            &format!("{want} runs in flight (after {ended} ended)"),
            || {
                let j = journal(&log);
                let started: HashSet<_> = j
                    .iter()
                    .filter(|(w, _)| w == "start")
                    .map(|(_, e)| e.clone())
                    .collect();
                let ended: HashSet<_> = j
                    .iter()
                    .filter(|(w, _)| w == "end")
                    .map(|(_, e)| e.clone())
                    .collect();
                (started.difference(&ended).count() >= want).then_some(j)
            },
        );
        // Let the oldest run in flight finish, and wait for it to.
        let next = j
            .iter()
            .find(|(w, e)| w == "start" && !released.contains(e))
            .map(|(_, e)| e.clone())
            .unwrap();
        released.insert(next.clone());
        release(&next);
        wait_for(&format!("run of {next} to end"), || {
            journal(&log)
                .iter()
                .any(|(w, e)| w == "end" && *e == next)
                .then_some(())
        });
    }
    for event in &events {
        daemon.wait_run_end(event);
    }
    let j = journal(&log);
    assert_eq!(j.len(), 2 * events.len(), "every event ran once: {j:?}");
    assert_eq!(max_in_flight(&j), 2, "maxConcurrent 2: {j:?}");
}

#[test]
fn a_concurrent_burst_to_one_session_runs_each_event_once_in_the_sessions_order() {
    let home = Home::new();
    let (agent, log) = journaling_agent(&home, "", "echo ok");
    let project = home.project("proj");
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": { "bot": { "command": [agent], "timeoutSec": 30, "maxConcurrent": 4 } },
        "webhooks": { "hook": { "project": project, "agent": "bot", "target": "burst" } }
    }));
    let daemon = home.serve();
    // Many senders at once, so several requests share one queue sync.
    let events: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..24)
            .map(|n| {
                let daemon = &daemon;
                s.spawn(move || accept(daemon, "hook", &format!(r#"{{"n":{n}}}"#)).1)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for event in &events {
        assert!(daemon.wait_run_end(event).contains("run finished"));
    }
    let lines = home.session("burst");
    let in_session: Vec<String> = of_type(&lines, "message")
        .into_iter()
        .filter(|l| l["role"] == "user")
        .map(|l| l["event"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted_session = in_session.clone();
    sorted_session.sort();
    let mut sorted_events = events.clone();
    sorted_events.sort();
    assert_eq!(
        sorted_session, sorted_events,
        "every accepted event is in the session once"
    );
    let expected = one_after_another(&in_session);
    assert_eq!(
        journal(&log),
        expected,
        "runs in the session's order, one at a time, each once"
    );
    assert_eq!(of_type(&lines, "session").len(), 1);
}

/// The journal of runs that happened one at a time, in this order: start, end, start, end.
fn one_after_another(events: &[String]) -> Vec<(String, String)> {
    events
        .iter()
        .flat_map(|e| {
            [
                ("start".to_owned(), e.clone()),
                ("end".to_owned(), e.clone()),
            ]
        })
        .collect()
}
