//! At-least-once across crashes (README.md, Crashes): an accepted event whose run did
//! not finish runs after the restart; a finished one never runs again.

use crate::helpers::*;
use crate::support::*;
use nix::sys::signal::Signal;
use serde_json::json;

/// An agent that notes `<event> <pid>` in `<out>/runs`, then waits at `gate`, then
/// answers.
pub fn home_with_gated_agent(
    max_concurrent: u32,
    target: &str,
) -> (Home, Gate, std::path::PathBuf) {
    let home = Home::new();
    let out = out_dir(&home);
    let gate = Gate::new(&home, "gate");
    let agent = home.script(
        "agent.sh",
        &format!(
            r#"echo "$LOWKEY_EVENT_ID $$" >> "{o}/runs"
cat >/dev/null
{wait}
echo "reply to $LOWKEY_EVENT_ID""#,
            o = out.display(),
            wait = gate.wait_sh()
        ),
    );
    let project = home.project("proj");
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": { "bot": { "command": [agent], "timeoutSec": 120, "maxConcurrent": max_concurrent } },
        "webhooks": { "hook": { "project": project, "agent": "bot", "target": target } }
    }));
    (home, gate, out)
}

/// `(event, pid)` for every run the agent started, in order.
pub fn runs(out: &std::path::Path) -> Vec<(String, i32)> {
    read_text(&out.join("runs"))
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(e, p)| (e.to_owned(), p.parse().unwrap()))
        .collect()
}

#[test]
fn a_run_cut_short_by_kill_9_runs_again_after_the_restart() {
    let (home, gate, out) = home_with_gated_agent(1, "new_session");
    let daemon = home.serve();
    // e1 runs and blocks; e2 waits behind maxConcurrent 1 and never starts.
    let (s1, e1) = accept(&daemon, "hook", r#"{"n":1}"#);
    let (s2, e2) = accept(&daemon, "hook", r#"{"n":2}"#);
    daemon.wait_log("with the start of the first run", |l| {
        l.contains("run started") && l.contains(&e1)
    });
    let first = wait_for("the agent to note its run", || runs(&out).first().cloned());
    assert_eq!(first.0, e1);
    let orphan = Reap(vec![first.1]);

    daemon.signal(Signal::SIGKILL);
    assert_eq!(daemon.wait_exit(), None, "killed by the signal");
    // Under systemd the agent's cgroup dies with lowkey; here the test ends it.
    orphan.kill();
    wait_for("the first agent to be gone", || {
        (!is_alive(first.1)).then_some(())
    });
    drop(daemon);

    let daemon = home.serve();
    let recovered = daemon.wait_log("about recovered runs", |l| l.contains("recovered"));
    assert!(recovered.contains("recovered 2"), "{recovered}");
    gate.open();
    let end1 = daemon.wait_run_end(&e1);
    let end2 = daemon.wait_run_end(&e2);
    assert!(end1.contains("run finished"), "{end1}");
    assert!(end2.contains("run finished"), "{end2}");

    let l1 = home.session(&s1);
    assert_eq!(
        shape(&l1),
        vec![
            "session".to_owned(),
            format!("user {e1}"),
            format!("run started {e1}"),
            format!("run interrupted {e1}"),
            format!("run started {e1}"),
            format!("agent {e1}"),
            format!("run finished {e1}"),
        ],
        "{l1:#?}"
    );
    assert_eq!(l1[5]["text"], format!("reply to {e1}"));
    let l2 = home.session(&s2);
    assert_eq!(
        shape(&l2),
        vec![
            "session".to_owned(),
            format!("user {e2}"),
            format!("run started {e2}"),
            format!("agent {e2}"),
            format!("run finished {e2}"),
        ],
        "an event that never started runs once after the restart: {l2:#?}"
    );
    let r: Vec<String> = runs(&out).into_iter().map(|(e, _)| e).collect();
    assert_eq!(r, vec![e1.clone(), e1.clone(), e2.clone()]);

    // `sessions show` reads it as a person would.
    let show = home.run(&["sessions", "show", &s1]);
    assert_eq!(show.code, 0, "{show:?}");
    assert!(show.stdout.contains("interrupted"), "{}", show.stdout);
    assert!(
        show.stdout.contains(&format!("reply to {e1}")),
        "{}",
        show.stdout
    );
}

#[test]
fn a_finished_event_never_runs_again_across_restarts() {
    let (home, gate, out) = home_with_gated_agent(2, "ops-thread");
    gate.open();
    let daemon = home.serve();
    let (_, e1) = accept(&daemon, "hook", r#"{"n":1}"#);
    assert!(daemon.wait_run_end(&e1).contains("run finished"));

    // A crash right after the run finished ...
    daemon.signal(Signal::SIGKILL);
    daemon.wait_exit();
    drop(daemon);
    let daemon = home.serve();
    assert_nothing_recovered(&daemon);
    // ... then another event for the same session: it runs after anything recovered for
    // that session, so once it has ended a second run of e1 would have happened.
    let (_, e2) = accept(&daemon, "hook", r#"{"n":2}"#);
    assert!(daemon.wait_run_end(&e2).contains("run finished"));

    // A clean stop (SIGTERM exits 0) and one more start.
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(), Some(0), "{}", daemon.log_text());
    drop(daemon);
    let daemon = home.serve();
    let (_, e3) = accept(&daemon, "hook", r#"{"n":3}"#);
    assert!(daemon.wait_run_end(&e3).contains("run finished"));
    assert_eq!(
        daemon.count_log(|l| l.contains("run started")),
        1,
        "{}",
        daemon.log_text()
    );

    let r: Vec<String> = runs(&out).into_iter().map(|(e, _)| e).collect();
    assert_eq!(
        r,
        vec![e1.clone(), e2.clone(), e3.clone()],
        "each event ran exactly once"
    );
    let lines = home.session("ops-thread");
    let finished: Vec<_> = of_type(&lines, "run")
        .into_iter()
        .filter(|l| l["status"] == "finished")
        .map(|l| l["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(finished, vec![e1, e2, e3], "{lines:#?}");
    assert_eq!(of_type(&lines, "session").len(), 1);
}

#[test]
fn a_run_cut_short_by_sigterm_is_handed_to_the_next_start() {
    let (home, gate, out) = home_with_gated_agent(1, "new_session");
    let daemon = home.serve();
    let (session, event) = accept(&daemon, "hook", r#"{"n":1}"#);
    daemon.wait_log("with the start of the run", |l| {
        l.contains("run started") && l.contains(&event)
    });
    let first = wait_for("the agent to note its run", || runs(&out).first().cloned());
    let _reap = Reap(vec![first.1]);

    // SIGTERM: lowkey ends the agent (TERM to its group), records the run as interrupted
    // and exits 0, leaving the event queued.
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(), Some(0), "{}", daemon.log_text());
    wait_for("the agent to be ended", || {
        (!is_alive(first.1)).then_some(())
    });
    let lines = home.session(&session);
    assert_eq!(
        shape(&lines).last().map(String::as_str),
        Some(format!("run interrupted {event}").as_str()),
        "{lines:#?}"
    );
    drop(daemon);

    gate.open();
    let daemon = home.serve();
    assert!(daemon.wait_run_end(&event).contains("run finished"));
    let lines = home.session(&session);
    assert_eq!(
        shape(&lines),
        vec![
            "session".to_owned(),
            format!("user {event}"),
            format!("run started {event}"),
            format!("run interrupted {event}"),
            format!("run started {event}"),
            format!("agent {event}"),
            format!("run finished {event}"),
        ],
        "{lines:#?}"
    );
    assert_eq!(runs(&out).len(), 2);
}

#[test]
fn a_finished_run_whose_queue_mark_was_lost_is_not_run_again() {
    // The crash window between a run's result reaching its session and the queue
    // learning the event is done: the session is the proof, and the event must not run
    // a second time.
    let (home, gate, out) = home_with_gated_agent(1, "billing-thread");
    gate.open();
    let daemon = home.serve();
    let marker = "only-in-the-accepted-record-7f3a";
    let (_, e1) = accept(&daemon, "hook", &format!(r#"{{"marker":"{marker}"}}"#));
    assert!(daemon.wait_run_end(&e1).contains("run finished"));
    daemon.signal(Signal::SIGKILL);
    daemon.wait_exit();
    drop(daemon);

    // Drop every queue line about e1 except the one holding its payload (the record
    // that it was accepted), whatever the queue's record format.
    let queue = home.root().join("queue");
    let mut kept_accepted = false;
    let mut dropped = 0;
    for entry in std::fs::read_dir(&queue).unwrap() {
        let path = entry.unwrap().path();
        let text = read_text(&path);
        let kept: String = text
            .split_inclusive('\n')
            .filter(|l| {
                let accepted = l.contains(&e1) && l.contains(marker);
                kept_accepted |= accepted;
                let drop = l.contains(&e1) && !accepted;
                dropped += usize::from(drop);
                !drop
            })
            .collect();
        std::fs::write(&path, kept).unwrap();
    }
    assert!(kept_accepted, "the queue held e1's accepted record");
    assert!(dropped > 0, "the queue held a mark that e1 is done");

    let daemon = home.serve();
    let (_, e2) = accept(&daemon, "hook", r#"{"n":2}"#);
    assert!(daemon.wait_run_end(&e2).contains("run finished"));
    let r: Vec<String> = runs(&out).into_iter().map(|(e, _)| e).collect();
    assert_eq!(r, vec![e1.clone(), e2.clone()], "e1 ran once");
    let lines = home.session("billing-thread");
    let e1_runs = of_type(&lines, "run")
        .into_iter()
        .filter(|l| l["event"] == e1.as_str())
        .count();
    assert_eq!(
        e1_runs, 2,
        "one started and one finished record: {lines:#?}"
    );

    // And the queue is clean again: a further restart has nothing to recover.
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(), Some(0));
    drop(daemon);
    let daemon = home.serve();
    assert_nothing_recovered(&daemon);
}

#[test]
fn a_queue_longer_than_one_segment_file_survives_kill_9() {
    // 20 bodies of about 1 MB fill more than one 16 MiB queue segment, so the later
    // events sit in a segment made ahead of time (zero-filled) and the reader has to
    // find the records in it.
    let (home, gate, out) = home_with_gated_agent(1, "new_session");
    let daemon = home.serve();
    let body = |n: usize| format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(1_000_000));
    let events: Vec<(String, String)> =
        (0..20).map(|n| accept(&daemon, "hook", &body(n))).collect();
    let first = wait_for("the first run to start", || runs(&out).first().cloned());
    let orphan = Reap(vec![first.1]);
    let listed = home.run(&["sessions", "list", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(
        rows.len(),
        20,
        "every accepted event is listed while queued"
    );

    daemon.signal(Signal::SIGKILL);
    assert_eq!(daemon.wait_exit(), None, "killed by the signal");
    orphan.kill();
    drop(daemon);

    let daemon = home.serve();
    let recovered = daemon.wait_log("about recovered runs", |l| l.contains("recovered"));
    assert!(recovered.contains("recovered 20"), "{recovered}");
    gate.open();
    for (n, (session, event)) in events.iter().enumerate() {
        let end = daemon.wait_run_end(event);
        assert!(end.contains("run finished"), "{end}");
        let lines = home.session(session);
        assert_eq!(lines[1]["body"], body(n), "the whole body, for event {n}");
    }
}
