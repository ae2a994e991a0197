//! Session files catch up at once (README.md, Files): an accepted event's message is in
//! its session shortly after the 202, whatever its run is doing, in the order the
//! session format promises; and the `filed` watermark in the queue, which spares
//! start-up from reading every session, moves only past messages that are synced.

use crate::campaign::{Acked, Tally};
use crate::helpers::*;
use crate::recovery::{home_with_gated_agent, runs};
use crate::support::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Child;

/// The session file's lines as JSON; a line that does not parse fails the test (no
/// crash happened, so every line must be whole).
fn file_lines(path: &Path) -> Vec<Value> {
    read_text(path)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a torn line {l:?}: {e}")))
        .collect()
}

/// The events whose user message is in the file.
fn messages_in(path: &Path) -> Vec<String> {
    read_text(path)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "message" && v["role"] == "user")
        .map(|v| v["event"].as_str().unwrap().to_owned())
        .collect()
}

/// Checks the order the README promises a reader: the header first; each event's user
/// message before any of its run records; each run's `started` before its reply and its
/// final record; every line naming its event.
fn assert_reader_order(lines: &[Value]) {
    assert_eq!(lines[0]["type"], "session", "the header comes first");
    let mut messaged = HashSet::new();
    let mut started = HashSet::new();
    for line in &lines[1..] {
        let event = line["event"]
            .as_str()
            .unwrap_or_else(|| panic!("a line without its event: {line}"));
        match (
            line["type"].as_str(),
            line["role"].as_str(),
            line["status"].as_str(),
        ) {
            (Some("message"), Some("user"), _) => {
                assert!(messaged.insert(event), "{event}'s message twice");
            }
            (Some("run"), _, Some("started")) => {
                assert!(
                    messaged.contains(event),
                    "{event} started before its message"
                );
                started.insert(event);
            }
            (Some("message"), Some("agent"), _) | (Some("run"), _, _) => {
                assert!(started.contains(event), "{event}'s {line} before its start");
            }
            _ => panic!("a line of no known kind: {line}"),
        }
    }
}

/// With one session, an agent that holds its first run open, and a backlog behind it,
/// every accepted event's message is in the session file while that run is still held:
/// the file does not lag by whole runs. Once the runs go through, the file reads in the
/// order the README promises, with messages of later events between a run's records.
#[test]
fn every_accepted_message_is_in_its_session_while_the_first_run_is_held() {
    let (home, gate, out) = home_with_gated_agent(1, "inbox");
    let daemon = home.serve();
    let acked: Vec<Acked> = (0..20)
        .map(|i| accept(&daemon, "hook", &format!(r#"{{"n":{i}}}"#)))
        .collect();
    let file = home.sessions().join("inbox.jsonl");
    let want: Vec<String> = acked.iter().map(|(_, e)| e.clone()).collect();
    wait_for("every accepted event's message in the session", || {
        (messages_in(&file) == want).then_some(())
    });
    let (first, _) = wait_for("the first run to start", || runs(&out).first().cloned());
    assert_eq!(first, want[0]);
    assert_eq!(runs(&out).len(), 1, "the first run is still held");

    gate.open();
    daemon.wait_run_end(&want[want.len() - 1]);
    let lines = file_lines(&file);
    assert_reader_order(&lines);
    let first_end = lines
        .iter()
        .position(|l| l["type"] == "run" && l["status"] == "finished")
        .unwrap();
    assert_eq!(
        lines[..first_end]
            .iter()
            .filter(|l| l["role"] == "user")
            .count(),
        want.len(),
        "the later events' messages came before the first run ended"
    );
    Tally::read(&home, &acked).check("messages filed while a run is held");
}

/// The furthest `filed` mark in the queue, as (segment, offset).
fn watermark(home: &Home) -> Option<(u64, u64)> {
    let mut furthest = None;
    for path in crate::campaign::segment_files(home) {
        for line in std::fs::read(&path).unwrap().split(|b| *b == b'\n') {
            let line: Vec<u8> = line.iter().copied().filter(|b| *b != 0).collect();
            if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                if let Some(f) = v.get("filed") {
                    let at = (f["seq"].as_u64().unwrap(), f["offset"].as_u64().unwrap());
                    furthest = furthest.max(Some(at));
                }
            }
        }
    }
    furthest
}

/// Where each event's `accepted` record starts in the queue, as (segment, offset).
fn positions(home: &Home) -> HashMap<String, (u64, u64)> {
    let mut at = HashMap::new();
    for path in crate::campaign::segment_files(home) {
        let name = path.file_stem().unwrap().to_str().unwrap();
        let seq: u64 = name.parse().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mut offset = 0;
        for raw in bytes.split(|b| *b == b'\n') {
            let start = offset + raw.iter().take_while(|b| **b == 0).count();
            offset += raw.len() + 1;
            if let Ok(v) = serde_json::from_slice::<Value>(&bytes[start..offset - 1]) {
                if let Some(id) = v["accepted"]["id"].as_str() {
                    at.insert(id.to_owned(), (seq, start as u64));
                }
            }
        }
    }
    at
}

/// `strace` attached to a running lowkey (every thread), making every `syncfs` fail
/// with EIO. Returns once it is attached.
fn fail_syncfs(pid: i32) -> Child {
    crate::disk::strace(
        pid,
        &["-e", "trace=syncfs", "-e", "inject=syncfs:error=EIO"],
    )
}

/// While the session files cannot be synced, their messages are still written, but the
/// watermark does not move past them; once syncs work again, what was written is
/// written again and synced, and the watermark passes it. A kill -9 then, and a
/// restart, lose no message and write none twice.
#[test]
fn a_failed_session_sync_holds_the_watermark_and_loses_nothing() {
    let (home, gate, _out) = home_with_gated_agent(1, "new_session");
    let daemon = home.serve();
    let mut acked = vec![accept(&daemon, "hook", r#"{"n":0}"#)];
    let first = positions(&home)[&acked[0].1];
    let before = wait_for("a watermark past the first event", || {
        watermark(&home).filter(|w| *w > first)
    });

    let mut strace = fail_syncfs(daemon.pid);
    acked.extend((1..6).map(|i| accept(&daemon, "hook", &format!(r#"{{"n":{i}}}"#))));
    for (session, event) in &acked {
        let file = home.sessions().join(format!("{session}.jsonl"));
        wait_for("the message written although syncs fail", || {
            messages_in(&file).contains(event).then_some(())
        });
    }
    daemon.wait_log_count("of failed syncs", 2, |l| {
        l.contains("cannot sync the session files")
    });
    assert_eq!(
        watermark(&home),
        Some(before),
        "the watermark stays while syncs fail"
    );

    // strace detaches on SIGTERM, leaving lowkey running.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(strace.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    strace.wait().unwrap();
    let last = positions(&home)[&acked[acked.len() - 1].1];
    wait_for("the watermark past the last event once syncs work", || {
        watermark(&home).filter(|w| *w > last)
    });
    daemon.signal(Signal::SIGKILL);
    daemon.wait_exit();
    drop(daemon);

    gate.open();
    let _daemon = home.serve();
    Tally::settle(&home, &acked, PATIENCE).check("failed session syncs");
}
